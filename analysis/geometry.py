"""Bragg-ptychography geometry: one definition for sim, plans (metadata) and analysis.

Frames (``docs/geometry.md``). Lab/sample frame (x, y, z) at the
central rocking angle: z ∥ Q_hkl (foil normal, symmetric reflection), x in the
scattering plane, y ⟂ scattering plane (the rocking axis).

* k̂_i = (cosθ, 0, −sinθ), k̂_f = (cosθ, 0, sinθ), Q = 2k sinθ ẑ.
* Reconstruction frame (orthonormal, "detector-conjugated"): e3 = k̂_f,
  e2 = ŷ, e1 = e2 × e3 = (sinθ, 0, −cosθ).
* Detector rows run along +e1 (q1), columns along +e2 (q2); the rocking
  direction is û = (sinθ, 0, cosθ) in the e-frame, i.e. +x in the lab frame.

Sampling (seed Eq 2 and Eq 12, docs/geometry.md, Sampling): Δq1 = Δq2 = kp/D, Δq3 = 2k sinθ δθ,
Δr3 = λ / (2 N3 δθ sinθ cosθ), Δr1 = 2π/(N1' Δq1) with N1' ≥ N1 + N3 Δq3 u1/Δq1.
"""

# Why this module is long: the one Bragg geometry definition used by every room (docs/geometry.md); its frames,
# detector layout and sampling checks are one consistent set of conventions.

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.fft import next_fast_len

HC_KEV_M = 12.398419843320026e-10
"""Planck constant × speed of light, in keV·m (λ[m] = HC_KEV_M / E[keV])."""


def wavelength_m_from_kev(energy_kev: float) -> float:
    """X-ray wavelength in metres for a photon energy in keV."""
    if not energy_kev > 0:
        raise ValueError(f"energy_kev must be > 0, got {energy_kev!r}")
    return HC_KEV_M / energy_kev


def cubic_d_spacing_m(lattice_constant_m: float, hkl: tuple[int, int, int]) -> float:
    """Interplanar spacing d_hkl = a / sqrt(h² + k² + l²) of a cubic lattice, in metres."""
    h, k, l = hkl  # noqa: E741 - the Miller index is called l
    n2 = h * h + k * k + l * l
    if n2 == 0:
        raise ValueError("hkl: (0, 0, 0) is not a reflection")
    if not lattice_constant_m > 0:
        raise ValueError(f"lattice_constant_m must be > 0, got {lattice_constant_m!r}")
    return lattice_constant_m / math.sqrt(n2)


@dataclass(frozen=True, kw_only=True)
class DetectorLayout:
    """Pixel layout of a tiled area detector (default: Maxipix 2×2, 516 × 516 px of 55 µm).

    Chips of ``chip_px`` pixels are separated by ``gap_px`` dead pixels; the
    gaps are masked (``mask()`` is False there).
    """

    n_rows_px: int = 516
    """Detector rows (along e1, in the scattering plane)."""
    n_cols_px: int = 516
    """Detector columns (along e2, the rocking axis)."""
    pixel_size_m: float = 55e-6
    """Pixel pitch in metres."""
    chip_px: int = 256
    """Pixels per chip along each axis."""
    gap_px: int = 4
    """Dead pixels between chips (masked)."""

    def __post_init__(self) -> None:
        for name in ("n_rows_px", "n_cols_px", "chip_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"DetectorLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.gap_px < 0:
            raise ValueError(f"DetectorLayout.gap_px must be >= 0, got {self.gap_px}")
        if not self.pixel_size_m > 0:
            raise ValueError(f"DetectorLayout.pixel_size_m must be > 0, got {self.pixel_size_m}")

    def _axis_valid(self, n: int) -> np.ndarray:
        period = self.chip_px + self.gap_px
        idx = np.arange(n)
        return (idx % period) < self.chip_px

    def mask(self) -> np.ndarray:
        """Boolean (n_rows_px, n_cols_px) array: True on live pixels, False in chip gaps."""
        return self._axis_valid(self.n_rows_px)[:, None] & self._axis_valid(self.n_cols_px)[None, :]


@dataclass(frozen=True, kw_only=True)
class Roi:
    """Rectangular region of interest on the detector, in pixels (half-open)."""

    row0_px: int
    col0_px: int
    n_rows_px: int
    n_cols_px: int

    def __post_init__(self) -> None:
        if self.n_rows_px < 1 or self.n_cols_px < 1:
            raise ValueError(f"Roi: size must be >= 1 px, got {self.n_rows_px} × {self.n_cols_px}")
        if self.row0_px < 0 or self.col0_px < 0:
            raise ValueError(f"Roi: origin must be >= 0, got ({self.row0_px}, {self.col0_px})")

    @classmethod
    def centred(cls, layout: DetectorLayout, n_rows_px: int, n_cols_px: int,
                centre_px: tuple[float, float] | None = None) -> Roi:
        """ROI of the given size centred on ``centre_px`` (default: detector centre)."""
        cr, cc = centre_px if centre_px is not None else (layout.n_rows_px / 2, layout.n_cols_px / 2)
        roi = cls(row0_px=int(round(cr - n_rows_px / 2)), col0_px=int(round(cc - n_cols_px / 2)),
                  n_rows_px=n_rows_px, n_cols_px=n_cols_px)
        roi.check_inside(layout)
        return roi

    def check_inside(self, layout: DetectorLayout) -> None:
        """Raise ValueError if the ROI does not lie on the detector."""
        if self.row0_px + self.n_rows_px > layout.n_rows_px or self.col0_px + self.n_cols_px > layout.n_cols_px:
            raise ValueError(
                f"Roi rows {self.row0_px}:{self.row0_px + self.n_rows_px}, cols "
                f"{self.col0_px}:{self.col0_px + self.n_cols_px} leave the "
                f"{layout.n_rows_px} × {layout.n_cols_px} detector; move or shrink the ROI"
            )

    @property
    def slices(self) -> tuple[slice, slice]:
        """(row slice, column slice) selecting the ROI from a full frame."""
        return (slice(self.row0_px, self.row0_px + self.n_rows_px),
                slice(self.col0_px, self.col0_px + self.n_cols_px))

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows_px, n_cols_px)."""
        return (self.n_rows_px, self.n_cols_px)


def _unit3(name: str, v: Any) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(a)) if a.shape == (3,) else 0.0
    if a.shape != (3,) or not np.all(np.isfinite(a)) or abs(n - 1.0) > 1e-6:
        raise ValueError(f"GeometryFrame.{name} must be a unit 3-vector, got {v!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True, kw_only=True)
class GeometryFrame:
    """Directions of a general diffractometer geometry in the sample frame (docs/geometry.md).

    Built by :meth:`analysis.diffractometer.Diffractometer.frame` from the angles through
    xrayutilities; :class:`BraggGeometry` without a frame is the symmetric coplanar case.
    Every vector is a unit vector in the sample frame (x, y, z) at the central rocking angle.
    (e1, e2, e3) is orthonormal with e1, e2 the q-directions of the detector rows and columns
    and e3 = ±e1 × e2, the sign chosen so that the rocking direction has u3 = û·e3 > 0.
    """

    k_in: tuple[float, float, float]
    """Incident beam direction k̂_i."""
    k_out: tuple[float, float, float]
    """Exit beam direction k̂_f (towards the Bragg peak pixel)."""
    e1: tuple[float, float, float]
    """q-direction of +1 detector row."""
    e2: tuple[float, float, float]
    """q-direction of +1 detector column."""
    e3: tuple[float, float, float]
    """Third axis of the reconstruction frame (±k̂_f for a detector normal to k̂_f)."""
    q_hat: tuple[float, float, float]
    """Direction of Q_hkl."""
    rocking_direction: tuple[float, float, float]
    """û in the e-frame: direction of the q step of one positive rocking step."""
    dq_rocking_per_rad_per_m: float
    """|dq/dα| of the rocking circle, m⁻¹ per radian (|Q| when the axis is ⟂ Q)."""
    surface_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Slab normal n used by the sampling condition."""

    def __post_init__(self) -> None:
        for name in ("k_in", "k_out", "e1", "e2", "e3", "q_hat", "rocking_direction", "surface_normal"):
            object.__setattr__(self, name, _unit3(name, getattr(self, name)))
        e = np.array([self.e1, self.e2, self.e3])
        if not np.allclose(e @ e.T, np.eye(3), atol=1e-6):
            raise ValueError("GeometryFrame: e1, e2, e3 must be orthonormal; the detector pixel axes must be "
                             "perpendicular (use Diffractometer to build the frame)")
        if not self.rocking_direction[2] > 1e-3:
            raise ValueError(f"GeometryFrame: the rocking direction has u3 = {self.rocking_direction[2]:.2e} along e3; "
                             "the rocking moves q inside the detector plane and samples nothing along e3: rock "
                             "another circle")
        if not (math.isfinite(self.dq_rocking_per_rad_per_m) and self.dq_rocking_per_rad_per_m > 0):
            raise ValueError(f"GeometryFrame.dq_rocking_per_rad_per_m must be > 0, "
                             f"got {self.dq_rocking_per_rad_per_m!r}; the rocking axis is parallel to Q "
                             "and moves nothing")

    @classmethod
    def from_dict(cls, md: dict[str, Any]) -> GeometryFrame:
        """Rebuild from ``dataclasses.asdict`` output (lists accepted for the vectors)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(md) - names)
        if unknown:
            raise ValueError(f"geometry frame metadata has unknown keys {unknown}; expected {sorted(names)}")
        kw = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else float(v))
              for k, v in md.items()}
        return cls(**kw)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class BraggGeometry:
    """Symmetric Bragg geometry and the reconstruction grid it implies.

    ``n_rows_px`` × ``n_cols_px`` is the detector crop used for the reconstruction
    (N1 in the scattering plane × N2 along the rocking axis); ``n_angles`` measured
    rocking angles of step ``rocking_step_deg``; ``upsampling`` U virtual planes per
    measured step (seed Eq 13). ``bragg_angle_deg`` defaults to Bragg's law.
    """

    energy_kev: float
    d_spacing_m: float
    detector_distance_m: float
    pixel_size_m: float = 55e-6
    n_rows_px: int
    n_cols_px: int
    n_angles: int
    rocking_step_deg: float
    upsampling: int = 1
    bragg_angle_deg: float | None = None
    """Measured Bragg angle; None computes it from ``d_spacing_m`` and the energy."""
    hkl: tuple[int, int, int] | None = None
    """Reflection (metadata only)."""
    frame: GeometryFrame | None = None
    """General diffractometer geometry (:mod:`analysis.diffractometer`); None: symmetric coplanar (module doc)."""
    diffractometer: dict[str, Any] | None = field(default=None, compare=False)
    """Circles and angles the frame came from (``Diffractometer.to_metadata()``; metadata only)."""

    def __post_init__(self) -> None:
        if self.frame is not None and not isinstance(self.frame, GeometryFrame):
            raise ValueError(f"BraggGeometry.frame must be a GeometryFrame or None, got {type(self.frame).__name__}")
        positive = ("energy_kev", "d_spacing_m", "detector_distance_m", "pixel_size_m")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"BraggGeometry.{name} must be a finite number > 0, got {v!r}")
        for name in ("n_rows_px", "n_cols_px", "n_angles", "upsampling"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"BraggGeometry.{name} must be an integer >= 1, got {v!r}")
        if not (math.isfinite(self.rocking_step_deg) and self.rocking_step_deg != 0):
            raise ValueError(
                f"BraggGeometry.rocking_step_deg must be finite and non-zero, got {self.rocking_step_deg!r}"
            )
        lam = wavelength_m_from_kev(self.energy_kev)
        if self.bragg_angle_deg is None and lam >= 2 * self.d_spacing_m:
            raise ValueError(
                f"no Bragg reflection: λ = {lam:.4e} m >= 2d = {2 * self.d_spacing_m:.4e} m; "
                "raise the energy or choose a reflection with a larger d-spacing"
            )
        if self.bragg_angle_deg is not None and not (0 < self.bragg_angle_deg < 90):
            raise ValueError(f"BraggGeometry.bragg_angle_deg must lie in (0, 90), got {self.bragg_angle_deg}")

    # --- basic quantities -------------------------------------------------
    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return wavelength_m_from_kev(self.energy_kev)

    @property
    def k_per_m(self) -> float:
        """k = 2π/λ in m⁻¹."""
        return 2 * math.pi / self.wavelength_m

    @property
    def theta_bragg_rad(self) -> float:
        """Bragg angle θ_B in radians."""
        if self.bragg_angle_deg is not None:
            return math.radians(self.bragg_angle_deg)
        return math.asin(self.wavelength_m / (2 * self.d_spacing_m))

    @property
    def theta_bragg_deg(self) -> float:
        """Bragg angle θ_B in degrees."""
        return math.degrees(self.theta_bragg_rad)

    @property
    def rocking_centre_deg(self) -> float:
        """Angle of the rocking circle at the centre of the rocking curve: θ_B, or the diffractometer's η/φ."""
        d = self.diffractometer
        if d is not None and "sample_angles_deg" in d and "rocking_circle" in d:
            return float(d["sample_angles_deg"][int(d["rocking_circle"])])
        return self.theta_bragg_deg

    @property
    def q_bragg_per_m(self) -> float:
        """|Q| = 2k sinθ_B in m⁻¹ (equals 2π/d when θ_B follows Bragg's law)."""
        return 2 * self.k_per_m * math.sin(self.theta_bragg_rad)

    @property
    def n_planes(self) -> int:
        """N3 = U · N_m planes along the rocking direction (measured + virtual)."""
        return self.upsampling * self.n_angles

    @property
    def fine_step_rad(self) -> float:
        """δθ = Δθ / U in radians (absolute value)."""
        return abs(math.radians(self.rocking_step_deg)) / self.upsampling

    @property
    def dq_detector_per_m(self) -> float:
        """Δq1 = Δq2 = k p / D in m⁻¹."""
        return self.k_per_m * self.pixel_size_m / self.detector_distance_m

    @property
    def dq_rocking_per_m(self) -> float:
        """Δq3 = 2k sinθ δθ per (up-sampled) plane, in m⁻¹ (Eq 12 sampling); |dq/dα| δθ in general."""
        if self.frame is not None:
            return self.frame.dq_rocking_per_rad_per_m * self.fine_step_rad
        return 2 * self.k_per_m * math.sin(self.theta_bragg_rad) * self.fine_step_rad

    @property
    def rocking_direction(self) -> tuple[float, float, float]:
        """û in the e-frame: (sinθ, 0, cosθ) (δq = |Q| δθ û); the frame's û in general."""
        if self.frame is not None:
            return self.frame.rocking_direction
        t = self.theta_bragg_rad
        return (math.sin(t), 0.0, math.cos(t))

    def measured_q_basis_per_m(self) -> np.ndarray:
        """(3, 3): row a is the step in q (cycles/m, e-frame components) of one index along axis a of the
        measured data (detector row, detector column, measured rocking angle, centred; docs/geometry.md, Sampling).

        Δq/2π along e1 and e2, and U·Δq3/2π along the rocking direction û = (sinθ, 0, cosθ), which is
        sheared against e3: the q-points of the transform (seed Eq 12), in the frequency units of the FSC.
        """
        d12 = self.dq_detector_per_m / (2 * math.pi)
        d3 = self.upsampling * self.dq_rocking_per_m / (2 * math.pi)
        return np.array([[d12, 0.0, 0.0], [0.0, d12, 0.0], d3 * np.asarray(self.rocking_direction)])

    # --- reconstruction grid ------------------------------------------------
    @property
    def n1_min(self) -> float:
        """Smallest N1' that holds the sheared band: N1 + N3 Δq3 u1 / Δq1 (docs/geometry.md, Sampling)."""
        u1 = self.rocking_direction[0]
        return self.n_rows_px + self.n_planes * self.dq_rocking_per_m * abs(u1) / self.dq_detector_per_m

    @property
    def n2_min(self) -> float:
        """Smallest N2' that holds the band sheared along e2: N2 + N3 Δq3 |u2| / Δq2 (= N2 when u2 = 0)."""
        u2 = self.rocking_direction[1]
        return self.n_cols_px + self.n_planes * self.dq_rocking_per_m * abs(u2) / self.dq_detector_per_m

    @property
    def recon_shape(self) -> tuple[int, int, int]:
        """(N1', N2', N3): FFT-friendly orthogonal grid of the reconstruction frame.

        N2' = N2 unless the rocking direction has a component u2 along the detector columns.
        """
        n1 = next_fast_len(int(math.ceil(self.n1_min - 1e-9)))
        n2 = self.n_cols_px
        if abs(self.rocking_direction[1]) > 1e-12:
            n2 = next_fast_len(int(math.ceil(self.n2_min - 1e-9)))
        return (n1, n2, self.n_planes)

    def _voxel(self, n1: float) -> tuple[float, float, float]:
        dq = self.dq_detector_per_m
        dr1 = 2 * math.pi / (n1 * dq)
        if self.frame is not None:
            dr2 = 2 * math.pi / (self.recon_shape[1] * dq)
            dr3 = 2 * math.pi / (self.n_planes * self.dq_rocking_per_m * self.rocking_direction[2])
            return (dr1, dr2, dr3)
        t = self.theta_bragg_rad
        dr2 = 2 * math.pi / (self.n_cols_px * dq)
        dr3 = self.wavelength_m / (2 * self.n_planes * self.fine_step_rad * math.sin(t) * math.cos(t))
        return (dr1, dr2, dr3)

    @property
    def voxel_size_m(self) -> tuple[float, float, float]:
        """(Δr1, Δr2, Δr3) of the grid ``recon_shape``, in metres."""
        return self._voxel(self.recon_shape[0])

    @property
    def voxel_size_nyquist_m(self) -> tuple[float, float, float]:
        """(Δr1, Δr2, Δr3) at the minimal N1' (the seed's 13.6 × 24.6 × 42.3 nm)."""
        return self._voxel(self.n1_min)

    @property
    def window_m(self) -> tuple[float, float, float]:
        """(R1, R2, R3): real-space window of the grid; R1 = R2 = λD/p, R3 = N3 Δr3."""
        lam_d_p = self.wavelength_m * self.detector_distance_m / self.pixel_size_m
        return (lam_d_p, lam_d_p, self.n_planes * self.voxel_size_m[2])

    # --- sampling condition (seed Eq 2, Eq 12) ------------------------------
    def _illuminated_edges_m(self, probe_width_m: float, thickness_m: float,
                             probe_width_p2_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Edges of the lit parallelepiped (band W along p1, W2 along p2, slab T along n) and e3."""
        ax = self.lab_axes()
        n = np.asarray(self.frame.surface_normal if self.frame is not None else ax["q_hat"])
        ki = ax["k_in"]
        p2 = ax["e2"] - (ax["e2"] @ ki) * ki
        p2 /= np.linalg.norm(p2)
        p1 = np.cross(p2, ki)
        d_b = np.cross(n, p2)
        d_b /= np.linalg.norm(d_b)
        d_c = np.cross(n, p1)
        d_c /= np.linalg.norm(d_c)
        v_a = thickness_m / abs(float(ki @ n)) * ki
        v_b = probe_width_m / abs(float(p1 @ d_b)) * d_b
        v_c = probe_width_p2_m / abs(float(p2 @ d_c)) * d_c
        return v_a, v_b, v_c, ax["e3"]

    def lit_extent_e3_m(self, probe_width_m: float, thickness_m: float, *, probe_width_p2_m: float = 0.0) -> float:
        """Extent along e3 of the volume a probe of widths (W, W2) lights in a slab of thickness T.

        The sampling condition (seed Eq 12 in general form) asks it to be ≤ 2π/(Δq3 u3) = N3 Δr3.
        Symmetric case: W/tanθ + T cos2θ/sinθ.
        """
        v_a, v_b, v_c, e3 = self._illuminated_edges_m(probe_width_m, thickness_m, probe_width_p2_m)
        return float(sum(abs(float(v @ e3)) for v in (v_a, v_b, v_c)))

    def probe_width_limit_m(self, thickness_m: float, *, probe_width_p2_m: float = 0.0) -> float:
        """Largest probe width W along p1 that the fine rocking step samples (Eq 2).

        W = λ / (2 δθ cos²θ) − T cos2θ / cosθ, with δθ = Δθ/U (symmetric case); in general the
        W at which :meth:`lit_extent_e3_m` reaches N3 Δr3 (``probe_width_p2_m``: width along p2).
        """
        if thickness_m < 0:
            raise ValueError(f"thickness_m must be >= 0, got {thickness_m}")
        if self.frame is not None:
            v_a, v_b, v_c, e3 = self._illuminated_edges_m(1.0, thickness_m, probe_width_p2_m)
            window = 2 * math.pi / (self.dq_rocking_per_m * self.rocking_direction[2])
            per_w = abs(float(v_b @ e3))
            rest = window - abs(float(v_a @ e3)) - abs(float(v_c @ e3))
            return rest / per_w if per_w > 0 else (math.inf if rest >= 0 else -math.inf)
        t = self.theta_bragg_rad
        return (self.wavelength_m / (2 * self.fine_step_rad * math.cos(t) ** 2)
                - thickness_m * math.cos(2 * t) / math.cos(t))

    def max_rocking_step_deg(self, probe_width_m: float, thickness_m: float, *,
                             probe_width_p2_m: float = 0.0) -> float:
        """Largest fine step δθ (deg) for a probe of width W across a slab of thickness T (Eq 12)."""
        if self.frame is not None:
            ext = self.lit_extent_e3_m(probe_width_m, thickness_m, probe_width_p2_m=probe_width_p2_m)
            if ext <= 0:
                raise ValueError("max_rocking_step_deg: probe width and thickness give a non-positive extent")
            return math.degrees(2 * math.pi / (self.frame.dq_rocking_per_rad_per_m * self.rocking_direction[2] * ext))
        t = self.theta_bragg_rad
        denom = 2 * math.cos(t) * (thickness_m * math.cos(2 * t) + probe_width_m * math.cos(t))
        if denom <= 0:
            raise ValueError("max_rocking_step_deg: probe width and thickness give a non-positive extent")
        return math.degrees(self.wavelength_m / denom)

    def footprint_x_m(self, probe_width_m: float, thickness_m: float) -> float:
        """Field of view along x of a band of width W through a slab: W/sinθ + T/tanθ.

        In general: the footprint along n × p2 (the surface direction that crosses the band).
        """
        if self.frame is not None:
            v_a, v_b, _, _ = self._illuminated_edges_m(probe_width_m, thickness_m, 0.0)
            d_b = v_b / np.linalg.norm(v_b) if probe_width_m > 0 else v_b
            return float(np.linalg.norm(v_b) + abs(float(v_a @ d_b)))
        t = self.theta_bragg_rad
        return probe_width_m / math.sin(t) + thickness_m / math.tan(t)

    def check_sampling(self, probe_width_m: float, thickness_m: float, *, probe_width_p2_m: float = 0.0) -> None:
        """Raise ValueError when the sampling condition (Eq 12) cannot hold."""
        w_max = self.probe_width_limit_m(thickness_m, probe_width_p2_m=probe_width_p2_m)
        if probe_width_m > w_max:
            step_max_deg = self.max_rocking_step_deg(probe_width_m, thickness_m, probe_width_p2_m=probe_width_p2_m)
            raise ValueError(
                f"sampling condition (seed Eq 12) fails: probe width {probe_width_m * 1e6:.3f} µm > "
                f"{w_max * 1e6:.3f} µm allowed by δθ = {math.degrees(self.fine_step_rad):.5f}° across "
                f"T = {thickness_m * 1e6:.3f} µm; raise the up-sampling (now {self.upsampling}) or "
                f"use a rocking step <= {step_max_deg * self.upsampling:.5f}°"
            )

    # --- frames ---------------------------------------------------------------
    def lab_axes(self) -> dict[str, np.ndarray]:
        """Unit vectors in lab (x, y, z): ``k_in``, ``k_out``, ``e1``, ``e2``, ``e3``, ``q_hat``.

        With a :class:`GeometryFrame` the lab frame is the diffractometer's sample frame.
        """
        if self.frame is not None:
            f = self.frame
            return {name: np.array(getattr(f, name)) for name in ("k_in", "k_out", "e1", "e2", "e3", "q_hat")}
        t = self.theta_bragg_rad
        c, s = math.cos(t), math.sin(t)
        return {
            "k_in": np.array([c, 0.0, -s]),
            "k_out": np.array([c, 0.0, s]),
            "e1": np.array([s, 0.0, -c]),
            "e2": np.array([0.0, 1.0, 0.0]),
            "e3": np.array([c, 0.0, s]),
            "q_hat": np.array([0.0, 0.0, 1.0]),
        }

    def detector_q_lab_per_m(self, row_px: np.ndarray, col_px: np.ndarray,
                             rocking_offset_rad: float = 0.0) -> np.ndarray:
        """Lab-frame q − Q (m⁻¹, shape (..., 3)) at detector offsets from the Bragg peak.

        ``row_px``/``col_px`` are offsets in pixels from the pixel where the Bragg
        peak lies at the central angle; flat-Ewald (paraxial) approximation.
        """
        ax = self.lab_axes()
        dq = self.dq_detector_per_m
        q = (np.asarray(row_px, float)[..., None] * dq * ax["e1"]
             + np.asarray(col_px, float)[..., None] * dq * ax["e2"])
        if self.frame is not None:
            u = np.asarray(self.rocking_direction) @ np.stack([ax["e1"], ax["e2"], ax["e3"]])
            return q + rocking_offset_rad * self.frame.dq_rocking_per_rad_per_m * u
        return q + rocking_offset_rad * self.q_bragg_per_m * np.array([1.0, 0.0, 0.0])

    # --- metadata ------------------------------------------------------------
    def to_metadata(self) -> dict[str, Any]:
        """Plain dict (JSON-safe) of the inputs plus derived numbers, for start documents."""
        md: dict[str, Any] = {k: v for k, v in dataclasses.asdict(self).items()}
        if md.get("diffractometer") is None:
            md.pop("diffractometer", None)
        if self.frame is None:
            md.pop("frame")
        else:
            md["frame"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in md["frame"].items()}
        if self.hkl is not None:
            md["hkl"] = list(self.hkl)
        md["derived"] = {
            "wavelength_m": self.wavelength_m,
            "bragg_angle_deg": self.theta_bragg_deg,
            "q_bragg_per_m": self.q_bragg_per_m,
            "recon_shape": list(self.recon_shape),
            "voxel_size_m": list(self.voxel_size_m),
            "window_m": list(self.window_m),
        }
        return md

    @classmethod
    def from_metadata(cls, md: dict[str, Any]) -> BraggGeometry:
        """Rebuild from :meth:`to_metadata` output; raises ValueError naming missing keys."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in md]
        if missing:
            raise ValueError(f"geometry metadata is missing {missing}; expected the keys of BraggGeometry")
        kw = {n: md[n] for n in names if n in md}
        if kw.get("hkl") is not None:
            kw["hkl"] = tuple(int(v) for v in kw["hkl"])
        if isinstance(kw.get("frame"), dict):
            kw["frame"] = GeometryFrame.from_dict(kw["frame"])
        return cls(**kw)


TUNGSTEN_LATTICE_M = 3.1652e-10
"""bcc tungsten lattice constant at room temperature, metres."""


def seed_geometry(*, upsampling: int = 3, n_angles: int = 42, rocking_step_deg: float = 0.005,
                  n_rows_px: int = 200, n_cols_px: int = 160) -> BraggGeometry:
    """Geometry of the seed's dataset: W(220) at 8 keV, θ_B = 43.9°, D = 1.4 m, 55 µm pixels."""
    return BraggGeometry(
        energy_kev=8.0,
        d_spacing_m=cubic_d_spacing_m(TUNGSTEN_LATTICE_M, (2, 2, 0)),
        detector_distance_m=1.4,
        pixel_size_m=55e-6,
        n_rows_px=n_rows_px,
        n_cols_px=n_cols_px,
        n_angles=n_angles,
        rocking_step_deg=rocking_step_deg,
        upsampling=upsampling,
        bragg_angle_deg=43.9,
        hkl=(2, 2, 0),
    )


@dataclass(frozen=True, kw_only=True)
class ScanPositions:
    """Per-frame stage positions and rocking angles of a scan (metres, degrees)."""

    stage_xyz_m: np.ndarray = field(repr=False)
    """(POS, 3) float64 sample translations (x, y, z) in metres."""
    rocking_offsets_deg: np.ndarray = field(repr=False)
    """(ANGLE,) float64 rocking-angle offsets from θ_B in degrees."""

    def __post_init__(self) -> None:
        s = np.asarray(self.stage_xyz_m, float)
        a = np.asarray(self.rocking_offsets_deg, float)
        if s.ndim != 2 or s.shape[1] != 3:
            raise ValueError(f"stage_xyz_m: shape {s.shape}, expected (n_positions, 3)")
        if a.ndim != 1 or a.size < 1:
            raise ValueError(f"rocking_offsets_deg: shape {a.shape}, expected (n_angles,) with n_angles >= 1")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(a))):
            raise ValueError("ScanPositions: positions or angles contain NaN or inf")


def rocking_shift_steps(geometry: BraggGeometry, rocking_offsets_deg: np.ndarray) -> float:
    """Where the recorded rocking curve sits on the model's q3 grid, in measured steps along +û.

    The model puts the angle of increasing-angle index k at q3 = (k − N_m//2)·|Δθ|·|dq/dα| (centred
    indices, docs/geometry.md, Sampling). The recorded offsets α_k from θ_B (any order, step Δθ) put it at
    (k − N_m//2 + s)·|Δθ|·|dq/dα|; this returns s = mean(α)/|Δθ| − ((N_m − 1)/2 − N_m//2): 0 for an odd
    count centred on θ_B, +1/2 for an even count centred between two angles (``plans.rocking_angles_deg``).

    Parameters
    ----------
    geometry : the scan's BraggGeometry (``rocking_step_deg``, ``n_angles``).
    rocking_offsets_deg : (ANGLE,) offsets from the rocking centre in degrees.

    Returns
    -------
    float : the shift s in units of one measured rocking step.
    """
    offs = np.asarray(rocking_offsets_deg, float)
    nm = geometry.n_angles
    if offs.shape != (nm,) or not np.all(np.isfinite(offs)):
        raise ValueError(f"rocking_offsets_deg: shape {offs.shape}, expected ({nm},) finite values in degrees")
    return float(offs.mean() / abs(geometry.rocking_step_deg) - ((nm - 1) / 2 - nm // 2))


def rocking_shift_phase(geometry: BraggGeometry, object_shape: tuple[int, int, int], shift_steps: float) -> np.ndarray:
    """e^{−iδ û·r} on an object grid: the model-frame factor of a rocking curve shifted by ``shift_steps``.

    With the convention Ψ(q) = Σ ψ(r) e^{−iq·r} (seed Eq 1, sign flipped as in docs/geometry.md,
    Operators), data recorded at q + δû with δ = s·U·Δq3 equal the model's transform at q of
    ψ(r)·e^{−iδ û·r}, exactly on the grid. The engine fits ρ' = ρ·e^{−iδ û·r} and reports
    ρ = ρ'·e^{+iδ û·r}: a linear phase normal to Q (a rigid lattice tilt), so |ρ| is unchanged.

    Parameters
    ----------
    geometry : the BraggGeometry of the reconstruction (voxel, û, U).
    object_shape : (NO1, NO2, NO3) object grid on the voxels of ``geometry.recon_shape``.
    shift_steps : s from :func:`rocking_shift_steps`.

    Returns
    -------
    (NO1, NO2, NO3) complex128 unit-modulus phase, e^{−iδ û·r} with r from voxel index N//2.
    """
    if len(object_shape) != 3 or min(object_shape) < 1 or not math.isfinite(shift_steps):
        raise ValueError(f"rocking_shift_phase: object_shape {object_shape} and shift_steps {shift_steps!r}: "
                         "expected 3 positive sizes and a finite shift")
    delta = shift_steps * geometry.upsampling * geometry.dq_rocking_per_m
    u = geometry.rocking_direction
    phase = [np.exp(-1j * delta * u[a] * dr * (np.arange(n) - n // 2))
             for a, (n, dr) in enumerate(zip(object_shape, geometry.voxel_size_m, strict=True))]
    return phase[0][:, None, None] * phase[1][None, :, None] * phase[2][None, None, :]
