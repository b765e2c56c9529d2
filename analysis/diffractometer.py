"""Any diffractometer geometry: angles → measured-q basis, reconstruction frame and sample-frame maps.

A :class:`Diffractometer` describes the instrument the way xrayutilities and BCDI codes do:
the energy, the incident-beam direction, the sample circles (outermost first) with their
angles and the rocking circle among them, the detector circles (δ, ν/γ) with their angles,
the detector distance, the pixel pitch and the directions of the pixel rows and columns
(docs/geometry.md). The angle → q conversion is xrayutilities' ``QConversion`` (no rotation
chain is written here); everything the engine needs follows from the derivatives of q:

* q per detector row, per detector column and per rocking step (:meth:`Diffractometer.q_basis_per_m`);
* the reconstruction frame e1 ∥ q-row, e2 ∥ q-column, e3 = ±e1 × e2 and the rocking direction û
  in it, packed as a :class:`~analysis.geometry.GeometryFrame` inside the engine's
  :class:`~analysis.geometry.BraggGeometry` (:meth:`Diffractometer.bragg_geometry`), which then
  gives the sheared transform (shear along e1 and e2), the probe extrusion, the sampling condition;
* the reflection frame (x', y', z' = Q̂) attached to the sample, in which :func:`strain_maps_sample_frame`
  returns ε = ∂u_Q/∂z', ω_x = arcsin ∂u_Q/∂y', ω_y = arcsin ∂u_Q/∂x' on an isotropic grid.

Frames. The lab frame is xrayutilities' (by default x outboard, y along the beam, z up). The
*sample frame* is the lab frame carried by the sample circles (all vectors below are expressed in
it, at the central angles, optionally re-labelled by ``sample_axes``); stage translations are given
in it. :func:`symmetric_coplanar` labels the axes so that the result is pxm's historical frame
(z ∥ Q, y the rocking axis) and reproduces the symmetric :class:`BraggGeometry`.
"""

# Why this module is long: diffractometer angles → q with xrayutilities: one geometry conversion and its checks.

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import xrayutilities as xu

from analysis.geometry import BraggGeometry, GeometryFrame, wavelength_m_from_kev
from analysis.strain import StrainMaps, StrainOptions, phase_gradient, remove_phase_ramp
from analysis.xp import Array, array_module, ndimage_module

__all__ = [
    "Diffractometer",
    "QBasis",
    "symmetric_coplanar",
    "asymmetric_in_plane",
    "asymmetric_out_of_plane",
    "GEOMETRY_PRESETS",
    "reflection_axes",
    "native_sample_coordinates_m",
    "strain_native",
    "map_to_reflection_frame",
    "strain_maps_sample_frame",
]

_AXES = {"x+", "x-", "y+", "y-", "z+", "z-"}
_ANGSTROM_M = 1e-10


def _axis_list(name: str, axes: tuple[str, ...]) -> None:
    if not isinstance(axes, tuple) or not all(isinstance(a, str) and a in _AXES for a in axes):
        raise ValueError(f"Diffractometer.{name} = {axes!r}: expected a tuple of xrayutilities axis strings "
                         f"such as ('x+', 'z-') from {sorted(_AXES)}")


@dataclass(frozen=True, kw_only=True)
class QBasis:
    """Measured-q basis at the central angles, sample frame, m⁻¹ (with the 2π)."""

    q_bragg_per_m: np.ndarray = field(repr=False)
    """(3,) Q at the Bragg-peak pixel and the central angles."""
    per_row_per_m: np.ndarray = field(repr=False)
    """(3,) ∂q/∂row (one detector row)."""
    per_col_per_m: np.ndarray = field(repr=False)
    """(3,) ∂q/∂column (one detector column)."""
    per_step_per_m: np.ndarray = field(repr=False)
    """(3,) ∂q per measured rocking step (``rocking_step_deg``)."""
    k_in: np.ndarray = field(repr=False)
    """(3,) unit incident-beam direction."""


_SAMPLE_NAMES = {1: ("eta",), 2: ("eta", "phi"), 3: ("eta", "chi", "phi"), 4: ("mu", "eta", "chi", "phi")}
_DETECTOR_NAMES = {1: ("delta",), 2: ("nu", "delta")}


@dataclass(frozen=True, kw_only=True)
class Diffractometer:
    """A diffractometer and its setting at the centre of the rocking curve (xrayutilities conventions).

    Angles in degrees, outermost circle first, as for ``xrayutilities.QConversion``. The Bragg
    peak sits on the detector pixel that the arm points to (the crop is centred on it).
    """

    energy_kev: float
    beam_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    """Incident beam in the lab frame (xrayutilities r_i)."""
    sample_circles: tuple[str, ...]
    """Sample circle axes, outermost first, e.g. ('z-', 'x+') for (φ-like, η-like)."""
    sample_angles_deg: tuple[float, ...]
    """Sample circle angles at the centre of the rocking curve."""
    rocking_circle: int
    """Index in ``sample_circles`` of the circle that rocks (η or φ)."""
    rocking_step_deg: float
    """Measured rocking step (sign: direction of the scan)."""
    detector_circles: tuple[str, ...]
    """Detector arm axes, outermost first, e.g. ('z-', 'x+') for (ν/γ, δ)."""
    detector_angles_deg: tuple[float, ...]
    """Detector arm angles (e.g. ν/γ, δ)."""
    detector_distance_m: float
    pixel_size_m: float = 55e-6
    """Square pixel pitch, metres."""
    row_direction: str = "z-"
    """Lab direction of increasing row index at zero detector angles (xrayutilities detectorDir1)."""
    col_direction: str = "x-"
    """Lab direction of increasing column index at zero detector angles (xrayutilities detectorDir2)."""
    sample_axes: tuple[tuple[float, float, float], ...] | None = None
    """Rows: the sample frame's x, y, z written in xrayutilities' sample coordinates; None = identity."""
    surface_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Slab normal in the sample frame (after ``sample_axes``), for the sampling condition."""
    sample_circle_names: tuple[str, ...] | None = None
    """Motor names of the sample circles (the goniometer's axes the plans move); None: the defaults of
    :meth:`circle_names` (filled in at construction)."""
    detector_circle_names: tuple[str, ...] | None = None
    """Motor names of the detector circles; None: the defaults of :meth:`circle_names`."""

    def __post_init__(self) -> None:
        if not (isinstance(self.energy_kev, (int, float)) and math.isfinite(self.energy_kev) and self.energy_kev > 0):
            raise ValueError(f"Diffractometer.energy_kev must be a finite number > 0, got {self.energy_kev!r}")
        _axis_list("sample_circles", self.sample_circles)
        _axis_list("detector_circles", self.detector_circles)
        if len(self.sample_angles_deg) != len(self.sample_circles):
            raise ValueError(f"Diffractometer: {len(self.sample_circles)} sample circles but "
                             f"{len(self.sample_angles_deg)} sample angles; give one angle per circle")
        if len(self.detector_angles_deg) != len(self.detector_circles):
            raise ValueError(f"Diffractometer: {len(self.detector_circles)} detector circles but "
                             f"{len(self.detector_angles_deg)} detector angles; give one angle per circle")
        if not (isinstance(self.rocking_circle, int) and 0 <= self.rocking_circle < len(self.sample_circles)):
            raise ValueError(f"Diffractometer.rocking_circle = {self.rocking_circle!r}: expected an index "
                             f"0..{len(self.sample_circles) - 1} into sample_circles")
        if not (math.isfinite(self.rocking_step_deg) and self.rocking_step_deg != 0):
            raise ValueError(f"Diffractometer.rocking_step_deg must be finite and non-zero, "
                             f"got {self.rocking_step_deg!r}")
        for name in ("detector_distance_m", "pixel_size_m"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"Diffractometer.{name} must be a finite number > 0, got {v!r}")
        for name in ("row_direction", "col_direction"):
            if getattr(self, name) not in _AXES:
                raise ValueError(f"Diffractometer.{name} = {getattr(self, name)!r}: expected one of {sorted(_AXES)}")
        if self.row_direction[0] == self.col_direction[0]:
            raise ValueError("Diffractometer: row_direction and col_direction lie along the same axis; "
                             "the pixel rows and columns must be perpendicular")
        b = np.asarray(self.beam_direction, float)
        if b.shape != (3,) or not np.all(np.isfinite(b)) or np.linalg.norm(b) == 0:
            raise ValueError(f"Diffractometer.beam_direction = {self.beam_direction!r}: expected a non-zero 3-vector")
        for attr, circles, defaults in (("sample_circle_names", self.sample_circles, _SAMPLE_NAMES),
                                        ("detector_circle_names", self.detector_circles, _DETECTOR_NAMES)):
            given = getattr(self, attr)
            if given is None:
                if len(circles) not in defaults:
                    raise ValueError(f"Diffractometer: {len(circles)} circles in {attr.removesuffix('_names')}s "
                                     f"and no default names for that many; give {attr}")
                given = defaults[len(circles)]
                object.__setattr__(self, attr, given)
            if (len(given) != len(circles) or len(set(given)) != len(given)
                                      or not all(isinstance(n, str) and n.isidentifier() for n in given)):
                raise ValueError(f"Diffractometer.{attr} = {given!r}: expected {len(circles)} distinct motor "
                                 "names (Python identifiers such as 'eta', 'delta'), one per circle")
            object.__setattr__(self, attr, tuple(given))
        if self.sample_axes is not None:
            m = np.asarray(self.sample_axes, float)
            if m.shape != (3, 3) or not np.allclose(m @ m.T, np.eye(3), atol=1e-9):
                raise ValueError("Diffractometer.sample_axes must be 3 orthonormal rows (x, y, z of the sample frame)")

    def circle_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sample, detector) motor names, outermost first (``sample_circle_names``, ``detector_circle_names``).

        When not given they follow the 4S+2D six-circle convention (sample μ, η, χ, φ; detector ν, δ), keeping
        the innermost circles: one sample circle is ``eta`` (the rocking η of pxm's presets), two are
        ``eta, phi``, three ``eta, chi, phi``; one detector circle is ``delta``, two are ``nu, delta``. The
        rocking motor is ``sample[rocking_circle]``.
        """
        assert self.sample_circle_names is not None and self.detector_circle_names is not None   # __post_init__
        return self.sample_circle_names, self.detector_circle_names

    def motor_angles_deg(self) -> dict[str, float]:
        """Every circle's angle at the centre of the rocking curve, keyed by motor name."""
        sample, det = self.circle_names()
        return {**dict(zip(sample, (float(a) for a in self.sample_angles_deg), strict=True)),
                **dict(zip(det, (float(a) for a in self.detector_angles_deg), strict=True))}

    # --- xrayutilities ----------------------------------------------------------
    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return wavelength_m_from_kev(self.energy_kev)

    def _qconversion(self, n_rows_px: int, n_cols_px: int) -> xu.QConversion:
        qc = xu.QConversion(list(self.sample_circles), list(self.detector_circles), list(self.beam_direction),
                            en=self.energy_kev * 1e3)
        qc.init_area(self.row_direction, self.col_direction, cch1=n_rows_px // 2, cch2=n_cols_px // 2,
                     Nch1=n_rows_px, Nch2=n_cols_px, distance=self.detector_distance_m,
                     pwidth1=self.pixel_size_m, pwidth2=self.pixel_size_m)
        return qc

    def _to_sample_axes(self, v: np.ndarray) -> np.ndarray:
        """xrayutilities sample coordinates (..., 3) → the sample frame of ``sample_axes``."""
        return v if self.sample_axes is None else v @ np.asarray(self.sample_axes, float).T

    def q_exact_per_m(self, n_rows_px: int, n_cols_px: int, rocking_offsets_deg: Array | Sequence[float]) -> np.ndarray:
        """Exact q (sample frame, m⁻¹) of every pixel of an N1 × N2 crop centred on the peak, per angle.

        Returns (n_angles, n_rows_px, n_cols_px, 3); offsets are added to the rocking circle.
        """
        offs = np.atleast_1d(np.asarray(rocking_offsets_deg, float))
        qc = self._qconversion(n_rows_px, n_cols_px)
        out = np.empty((offs.size, n_rows_px, n_cols_px, 3))
        for i, d in enumerate(offs):
            angles = list(self.sample_angles_deg)
            angles[self.rocking_circle] += float(d)
            qx, qy, qz = qc.area(*angles, *self.detector_angles_deg)
            out[i] = self._to_sample_axes(np.stack([qx, qy, qz], axis=-1) / _ANGSTROM_M)
        return out

    def lab_to_sample(self, rocking_offset_deg: float = 0.0) -> np.ndarray:
        """(3, 3) matrix M: sample-frame components M @ v of a lab vector v at the central angles + offset."""
        angles = list(self.sample_angles_deg)
        angles[self.rocking_circle] += float(rocking_offset_deg)
        qc = xu.QConversion(list(self.sample_circles), list(self.detector_circles), list(self.beam_direction),
                            en=self.energy_kev * 1e3)
        rot = np.stack([qc.transformSample2Lab(e, *angles) for e in np.eye(3)], axis=1)   # sample → lab
        return rot.T if self.sample_axes is None else np.asarray(self.sample_axes, float) @ rot.T

    def q_basis_per_m(self) -> QBasis:
        """Q and ∂q per row, column and rocking step at the central angles (central differences)."""
        q = self.q_exact_per_m(3, 3, [-self.rocking_step_deg, 0.0, self.rocking_step_deg])
        ki_lab = np.asarray(self.beam_direction, float) / np.linalg.norm(self.beam_direction)
        ki = self.lab_to_sample() @ ki_lab
        return QBasis(q_bragg_per_m=q[1, 1, 1], per_row_per_m=(q[1, 2, 1] - q[1, 0, 1]) / 2,
                      per_col_per_m=(q[1, 1, 2] - q[1, 1, 0]) / 2, per_step_per_m=(q[2, 1, 1] - q[0, 1, 1]) / 2,
                      k_in=ki / np.linalg.norm(ki))

    # --- engine geometry ------------------------------------------------------------
    def frame(self) -> GeometryFrame:
        """Reconstruction frame, beams, Q̂ and rocking direction (:class:`GeometryFrame`)."""
        b = self.q_basis_per_m()
        e1 = b.per_row_per_m / np.linalg.norm(b.per_row_per_m)
        e2 = b.per_col_per_m / np.linalg.norm(b.per_col_per_m)
        if abs(float(e1 @ e2)) > 1e-6:
            raise ValueError(f"Diffractometer: the q-steps of rows and columns are not perpendicular "
                             f"(cos = {float(e1 @ e2):.2e}); the detector must be normal to the arm")
        e3 = np.cross(e1, e2)
        step = np.linalg.norm(b.per_step_per_m)
        u = b.per_step_per_m / step
        if float(u @ e3) < 0:
            e3 = -e3
        k = 2 * math.pi / self.wavelength_m
        ko = b.k_in * k + b.q_bragg_per_m
        qn = float(np.linalg.norm(b.q_bragg_per_m))
        return GeometryFrame(k_in=tuple(b.k_in), k_out=tuple(ko / np.linalg.norm(ko)), e1=tuple(e1), e2=tuple(e2),
                             e3=tuple(e3), q_hat=tuple(b.q_bragg_per_m / qn),
                             rocking_direction=(float(u @ e1), float(u @ e2), float(u @ e3)),
                             dq_rocking_per_rad_per_m=float(step / math.radians(abs(self.rocking_step_deg))),
                             surface_normal=tuple(np.asarray(self.surface_normal, float)
                                                  / np.linalg.norm(self.surface_normal)))

    def bragg_geometry(self, *, n_rows_px: int, n_cols_px: int, n_angles: int, upsampling: int = 1,
                       hkl: tuple[int, int, int] | None = None) -> BraggGeometry:
        """The engine's :class:`BraggGeometry` for an N1 × N2 crop and ``n_angles`` rocking steps."""
        f = self.frame()
        two_theta = math.acos(max(-1.0, min(1.0, float(np.dot(f.k_in, f.k_out)))))
        q = 2 * (2 * math.pi / self.wavelength_m) * math.sin(two_theta / 2)
        return BraggGeometry(energy_kev=self.energy_kev, d_spacing_m=2 * math.pi / q,
                             detector_distance_m=self.detector_distance_m, pixel_size_m=self.pixel_size_m,
                             n_rows_px=n_rows_px, n_cols_px=n_cols_px, n_angles=n_angles,
                             rocking_step_deg=abs(self.rocking_step_deg), upsampling=upsampling,
                             bragg_angle_deg=math.degrees(two_theta / 2), hkl=hkl, frame=f,
                             diffractometer=self.to_metadata())

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the diffractometer (start documents, dataset ``/geometry``)."""
        return {"energy_kev": self.energy_kev, "beam_direction": list(self.beam_direction),
                "sample_circles": list(self.sample_circles), "sample_angles_deg": list(self.sample_angles_deg),
                "rocking_circle": self.rocking_circle, "rocking_step_deg": self.rocking_step_deg,
                "detector_circles": list(self.detector_circles),
                "detector_angles_deg": list(self.detector_angles_deg),
                "detector_distance_m": self.detector_distance_m, "pixel_size_m": self.pixel_size_m,
                "row_direction": self.row_direction, "col_direction": self.col_direction,
                "sample_axes": None if self.sample_axes is None else [list(r) for r in self.sample_axes],
                "surface_normal": list(self.surface_normal),
                "sample_circle_names": list(self.circle_names()[0]),
                "detector_circle_names": list(self.circle_names()[1])}

    @classmethod
    def from_metadata(cls, md: dict[str, Any]) -> Diffractometer:
        """Rebuild from :meth:`to_metadata` output; ValueError names missing keys."""
        need = ("energy_kev", "sample_circles", "sample_angles_deg", "rocking_circle", "rocking_step_deg",
                "detector_circles", "detector_angles_deg", "detector_distance_m")
        missing = [k for k in need if k not in md]
        if missing:
            raise ValueError(f"diffractometer metadata is missing {missing}; expected the keys of Diffractometer")
        kw: dict[str, Any] = dict(md)
        for k in ("sample_circles", "detector_circles"):
            kw[k] = tuple(str(a) for a in kw[k])
        for k in ("sample_angles_deg", "detector_angles_deg", "beam_direction", "surface_normal"):
            if k in kw:
                kw[k] = tuple(float(a) for a in kw[k])
        if kw.get("sample_axes") is not None:
            kw["sample_axes"] = tuple(tuple(float(a) for a in r) for r in kw["sample_axes"])
        for k in ("sample_circle_names", "detector_circle_names"):
            if kw.get(k) is not None:
                kw[k] = tuple(str(a) for a in kw[k])
        kw["rocking_circle"] = int(kw["rocking_circle"])
        return cls(**kw)


# --- the three worked geometries (docs/geometry.md) -------------------------------------------
_PXM_AXES = ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
"""pxm's historical sample frame in xrayutilities coordinates: x along the beam, y = −x_xu, z up."""


def symmetric_coplanar(*, energy_kev: float = 8.0, bragg_angle_deg: float = 43.9, rocking_step_deg: float = 0.005,
                       detector_distance_m: float = 1.4, pixel_size_m: float = 55e-6) -> Diffractometer:
    """Vertical symmetric reflection: η (about x) rocks at θ_B, detector δ = 2θ_B; pxm's frame (z ∥ Q)."""
    return Diffractometer(energy_kev=energy_kev, sample_circles=("x+",), sample_angles_deg=(bragg_angle_deg,),
                          rocking_circle=0, rocking_step_deg=rocking_step_deg, detector_circles=("x+",),
                          detector_angles_deg=(2 * bragg_angle_deg,), detector_distance_m=detector_distance_m,
                          pixel_size_m=pixel_size_m, sample_axes=_PXM_AXES)


def asymmetric_in_plane(*, energy_kev: float = 8.0, two_theta_deg: float = 87.8, asymmetry_deg: float = 15.0,
                        rocking_step_deg: float = 0.005, detector_distance_m: float = 1.4,
                        pixel_size_m: float = 55e-6) -> Diffractometer:
    """Coplanar asymmetric reflection: η = θ_B − α (Q tilted by α from the surface normal in the scattering plane)."""
    return Diffractometer(energy_kev=energy_kev, sample_circles=("x+",),
                          sample_angles_deg=(two_theta_deg / 2 - asymmetry_deg,), rocking_circle=0,
                          rocking_step_deg=rocking_step_deg, detector_circles=("x+",),
                          detector_angles_deg=(two_theta_deg,), detector_distance_m=detector_distance_m,
                          pixel_size_m=pixel_size_m, sample_axes=_PXM_AXES)


def asymmetric_out_of_plane(*, energy_kev: float = 8.0, eta_deg: float = 30.0, phi_deg: float = 10.0,
                            nu_deg: float = 25.0, delta_deg: float = 80.0, rocking_step_deg: float = 0.005,
                            detector_distance_m: float = 1.4, pixel_size_m: float = 55e-6) -> Diffractometer:
    """Out-of-plane detector (ν/γ ≠ 0 and δ) with η rocking under a φ circle, ID01/P10-like circles."""
    return Diffractometer(energy_kev=energy_kev, sample_circles=("x+", "z+"), sample_angles_deg=(eta_deg, phi_deg),
                          rocking_circle=0, rocking_step_deg=rocking_step_deg, detector_circles=("z-", "x+"),
                          detector_angles_deg=(nu_deg, delta_deg), detector_distance_m=detector_distance_m,
                          pixel_size_m=pixel_size_m, sample_axes=_PXM_AXES)


GEOMETRY_PRESETS: dict[str, Callable[..., Diffractometer]] = {
    "symmetric": symmetric_coplanar,
    "asymmetric-in-plane": asymmetric_in_plane,
    "asymmetric-out-of-plane": asymmetric_out_of_plane,
}
"""Named diffractometers of docs/geometry.md (``pxm demo --geometry NAME``)."""


# --- sample-frame strain and tilt -------------------------------------------------------------
def reflection_axes(geometry: BraggGeometry) -> np.ndarray:
    """(3, 3) rows x', y', z' in the sample frame: z' = Q̂, x' = sample x made ⟂ Q̂, y' = z' × x'.

    Symmetric coplanar case: the identity (x, y, z).
    """
    zq = geometry.lab_axes()["q_hat"]
    x = np.array([1.0, 0.0, 0.0])
    if np.linalg.norm(np.cross(x, zq)) < 1e-3:
        x = np.array([0.0, 1.0, 0.0])
    xq = x - (x @ zq) * zq
    xq /= np.linalg.norm(xq)
    return np.stack([xq, np.cross(zq, xq), zq])


def _e_axes(geometry: BraggGeometry) -> np.ndarray:
    ax = geometry.lab_axes()
    return np.stack([ax["e1"], ax["e2"], ax["e3"]])


def native_sample_coordinates_m(geometry: BraggGeometry, shape: tuple[int, int, int],
                                voxel_size_m: tuple[float, float, float] | None = None) -> np.ndarray:
    """Sample-frame (x, y, z) in metres of every voxel of a native grid centred on voxel N//2: (N1, N2, N3, 3)."""
    vox = voxel_size_m or geometry.voxel_size_m
    grids = np.meshgrid(*[(np.arange(n) - n // 2) * d for n, d in zip(shape, vox, strict=True)], indexing="ij")
    return np.stack(grids, axis=-1) @ _e_axes(geometry)


def strain_native(rho: Array, geometry: BraggGeometry, *, options: StrainOptions | None = None,
                  support: Array | None = None,
                  voxel_size_m: tuple[float, float, float] | None = None,
                  amplitude_reference: Array | None = None) -> StrainMaps:
    """ε along Q and the tilts about the axes ⟂ Q on the native grid (``frame="reconstruction"``), any geometry.

    The wrap-free gradients (seed Eq 15) give ∇φ = Σ_a ∂_aφ e_a; with s = ``options.phase_sign`` and the
    reflection axes (x', y', z' = Q̂) of :func:`reflection_axes`: ε = s z'·∇φ/|Q|, ω_x = arcsin(s y'·∇φ/|Q|),
    ω_y = arcsin(s x'·∇φ/|Q|). Masking as :func:`analysis.strain.compute_strain` (amplitude threshold relative
    to the largest |ρ| on ``amplitude_reference``, else ``support``, else everywhere); in the symmetric case
    the numbers are those of ``compute_strain``. ``origin_m`` is the sample-frame position of voxel [0, 0, 0]
    relative to the grid centre (voxel N//2).
    """
    if not hasattr(rho, "ndim") or rho.ndim != 3 or not np.iscomplexobj(rho):
        raise ValueError("strain_native: rho must be a 3D complex array on the native grid")
    options = options or StrainOptions()
    xp = array_module(rho)
    vox = tuple(float(v) for v in (voxel_size_m or geometry.voxel_size_m))
    amp = xp.abs(rho)
    mask = xp.ones(rho.shape, dtype=bool) if support is None else xp.asarray(support, dtype=bool)
    if mask.shape != rho.shape:
        raise ValueError(f"strain_native: support shape {tuple(mask.shape)} != rho shape {tuple(rho.shape)}")
    ref = mask if amplitude_reference is None else xp.asarray(amplitude_reference, dtype=bool)
    if ref.shape != rho.shape or not bool(ref.any()):
        raise ValueError(f"strain_native: the amplitude reference (amplitude_reference, else the support) must be "
                         f"a non-empty mask of shape {tuple(rho.shape)}")
    mask = mask & (amp >= options.amplitude_threshold * xp.max(xp.where(ref, amp, 0)))
    if int(mask.sum()) == 0:
        raise ValueError("strain_native: no voxel passes the amplitude threshold; lower options.amplitude_threshold")
    work = remove_phase_ramp(rho, support=mask, voxel_size_m=vox).corrected if options.remove_ramp else rho
    grads, valid = phase_gradient(work, vox)
    inner = mask & valid
    for a in range(3):
        inner &= xp.roll(mask, 1, axis=a) & xp.roll(mask, -1, axis=a)
    e = _e_axes(geometry)
    c = (reflection_axes(geometry) @ e.T) * (options.phase_sign / geometry.q_bragg_per_m)   # (x'|y'|z') · e_a
    d: list[Any] = [sum(float(c[i, a]) * grads[a] for a in range(3)) for i in range(3)]
    nan = xp.asarray(np.nan, dtype=d[2].dtype)
    origin = -(np.array([n // 2 for n in rho.shape]) * np.asarray(vox)) @ e
    return StrainMaps(eps_zz=xp.where(inner, d[2], nan),
                      omega_x_rad=xp.where(inner, xp.arcsin(xp.clip(d[1], -1, 1)), nan),
                      omega_y_rad=xp.where(inner, xp.arcsin(xp.clip(d[0], -1, 1)), nan), amplitude=amp, mask=inner,
                      voxel_size_m=cast("tuple[float, float, float]", vox),
                      origin_m=cast("tuple[float, float, float]", tuple(float(v) for v in origin)),
                      frame="reconstruction")


def map_to_reflection_frame(maps: StrainMaps, geometry: BraggGeometry, *, target_voxel_m: float | None = None,
                            min_weight: float = 0.5, axes: Any = None) -> StrainMaps:
    """Native-grid maps (:func:`strain_native`) → an isotropic grid with axes x', y', z' (:func:`reflection_axes`).

    Normalised trilinear interpolation (Σw·f/Σw, w the validity mask, kept where Σw ≥ ``min_weight``) of
    the smooth fields, never of the phase; voxel ``target_voxel_m`` (default: the smallest native voxel).
    ``origin_m`` is the reflection-frame position of voxel [0, 0, 0] relative to the native grid centre.
    ``axes``: (3, 3) orthonormal rows of other output axes in the sample frame (``numpy.eye(3)``: the
    sample frame x, y, z itself, as the figures show it); the values stay ε along Q and the tilts about x', y'.
    """
    if maps.frame != "reconstruction":
        raise ValueError(f"map_to_reflection_frame: maps.frame is {maps.frame!r}, expected 'reconstruction'")
    xp = array_module(maps.eps_zz)
    ndi = ndimage_module(xp)
    vox = maps.voxel_size_m
    shape = tuple(int(n) for n in maps.eps_zz.shape)
    e = _e_axes(geometry)
    refl = reflection_axes(geometry) if axes is None else np.asarray(axes, float)
    if refl.shape != (3, 3) or not np.allclose(refl @ refl.T, np.eye(3), atol=1e-6):
        raise ValueError("map_to_reflection_frame: axes must be 3 orthonormal rows in the sample frame")
    target = float(target_voxel_m) if target_voxel_m is not None else min(vox)
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"map_to_reflection_frame: target_voxel_m must be > 0, got {target_voxel_m!r}")
    lo_i = [-(n // 2) * v for n, v in zip(shape, vox, strict=True)]
    hi_i = [(n - 1 - n // 2) * v for n, v in zip(shape, vox, strict=True)]
    corners = np.array([[a, b, g] for a in (lo_i[0], hi_i[0]) for b in (lo_i[1], hi_i[1]) for g in (lo_i[2], hi_i[2])])
    corners = corners @ e @ refl.T
    lo = np.floor(corners.min(0) / target) * target
    hi = np.ceil(corners.max(0) / target) * target
    n_out = tuple(int(round((b - a) / target)) + 1 for a, b in zip(lo, hi, strict=True))
    pts = np.stack(np.meshgrid(*[lo[i] + target * np.arange(n_out[i]) for i in range(3)], indexing="ij"), axis=-1)
    lab = pts @ refl                                   # reflection frame → sample frame
    coords = xp.asarray(np.stack([lab @ e[a] / vox[a] + shape[a] // 2 for a in range(3)], axis=0))
    inner = maps.mask
    w = inner.astype(float)
    wi = ndi.map_coordinates(w, coords, order=1, mode="constant", cval=0.0)
    keep = wi >= min_weight

    def interp(f: Array) -> Array:
        out = ndi.map_coordinates(xp.where(inner, f, 0.0) * w, coords, order=1, mode="constant", cval=0.0)
        return xp.where(keep, out / xp.where(keep, wi, 1.0), xp.asarray(np.nan))

    amp_s = ndi.map_coordinates(maps.amplitude.astype(float), coords, order=1, mode="constant", cval=0.0)
    return StrainMaps(eps_zz=interp(maps.eps_zz), omega_x_rad=interp(maps.omega_x_rad),
                      omega_y_rad=interp(maps.omega_y_rad), amplitude=amp_s, mask=keep,
                      voxel_size_m=(target, target, target),
                      origin_m=cast("tuple[float, float, float]", tuple(float(v) for v in lo)), frame="sample")


def strain_maps_sample_frame(rho: Array, geometry: BraggGeometry, *, options: StrainOptions | None = None,
                             support: Array | None = None, voxel_size_m: tuple[float, float, float] | None = None,
                             target_voxel_m: float | None = None, min_weight: float = 0.5) -> StrainMaps:
    """ε along Q and the two tilts about axes ⟂ Q, on an isotropic grid of the reflection frame (x', y', z').

    :func:`strain_native` (amplitude threshold relative to max|ρ| on ``support``) then
    :func:`map_to_reflection_frame`; in the symmetric case (x', y', z') = (x, y, z) and the native maps are
    exactly :func:`analysis.strain.compute_strain`'s.

    Parameters
    ----------
    rho : (N1, N2, N3) complex
        Object on the native reconstruction grid of ``geometry``.
    support : (N1, N2, N3) bool, optional
        Restriction of the mask (besides the amplitude threshold).
    """
    native = strain_native(rho, geometry, options=options, support=support, voxel_size_m=voxel_size_m)
    return map_to_reflection_frame(native, geometry, target_voxel_m=target_voxel_m, min_weight=min_weight)
