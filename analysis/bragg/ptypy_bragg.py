"""Bragg-ptychography data simulated by ptypy (``Bragg3dSimScan``) → pxm's dataset, probe and truth.

ptypy's 3D Bragg model (``ptypy/core/geometry_bragg.py``) works on a non-orthogonal "natural" lattice
(r3, r1, r2) = (x / cosθ, z − x tanθ, y) of its Cartesian frame (x, z, y), and a 3D pattern is
``fftshift(fftn(O_view · P))`` with axes (q3, q1, q2) = (rocking angle, detector row, detector column).
pxm's model (``docs/geometry.md``) is the same transform written on an orthogonal grid (e1, e2, e3):

* ptypy's (x, z) are pxm's lab (x, z): the exit beam k̂_f = (cosθ, 0, sinθ) is the r3 axis, the rocking
  direction is +x and Q ∥ z. ptypy's y is taken as pxm's y (the rocking axis); a common mirror of both
  spaces leaves the model unchanged, so the choice only has to be the same for frames, positions, probe
  and object.
* Reciprocal lattice: the dual of (a3, a1, a2) = (Δr3 k̂_f, Δr1 ẑ, Δr2 ŷ) has steps Δq3 x̂, Δq (−e1) and
  Δq ŷ: ptypy's frequency (f3, f1, f2) is pxm's (m3, m1, m2) = (f3, −f1, f2). So frame k of pxm is ptypy's
  q3 index k, with m3 = k − N3//2, and pxm's detector rows are ptypy's in reverse order. pxm row 0
  (m1 = −N1/2) has no partner (ptypy's row 0 is the same FFT bin as m1 = +N1/2, which pxm does not hold):
  that row is masked, so every pixel pxm fits is the one ptypy computed.
* Real space: pxm's P2 (the probe section on (e2, e3) through the box centre) is ptypy's probe at
  r1 = 0: ``P2[n2, n3] = probe3d[n3, N1//2, n2]`` on the same (Δr2, Δr3), valid at U = 1, where pxm's
  box period along e3 equals ptypy's view (both models are periodic there).
* Positions: ptypy rounds every view to whole voxels; the probe then sits at
  origin + round((pos − origin)/psize)·psize (natural frame). The dataset's stage positions are these
  effective positions, as s = −r (pxm's stage convention), in metres.

Everything here is plain conversion and comparison; nothing of ptypy is imported.
"""

# Why this module is long: one conversion, ptypy's non-orthogonal Bragg3d frame → pxm's dataset, probe and truth;
# the coordinate algebra and the file writing are checked together against ptypy's model.

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

from analysis.dataset import BraggDataset
from analysis.geometry import BraggGeometry

__all__ = ["PtypyBraggCase", "read_ptypy_bragg", "pxm_geometry", "pxm_dataset", "probe_p2", "perpendicular_probe",
           "smallest_upsampling", "probe_width_p1_m",
           "natural_to_lab_m", "lab_to_grid_vox", "LatticeTransfer", "lattice_transfer", "truth_on_grid",
           "TruthComparison", "compare_with_truth",
           "ptypy_model_intensities", "lattice_probe", "compare_lattice_with_truth"]


@dataclass(frozen=True, kw_only=True)
class PtypyBraggCase:
    """What a ptypy Bragg3dSimScan file holds, in ptypy's own conventions (arrays as stored)."""

    source: str
    intensities: np.ndarray = field(repr=False)
    """(POS, N3, N1, N2) float: 3D patterns with axes (q3, q1, q2), fftshifted."""
    angles_deg: np.ndarray = field(repr=False)
    """(N3,) relative rocking angles of the q3 planes, degrees."""
    positions_natural_m: np.ndarray = field(repr=False)
    """(POS, 3) effective probe positions (r3, r1, r2) after ptypy's rounding to whole voxels, metres."""
    probe3d: np.ndarray = field(repr=False)
    """(N3, N1, N2) complex probe on the natural lattice, view centred on index N//2."""
    energy_kev: float
    theta_bragg_deg: float
    distance_m: float
    pixel_size_m: tuple[float, float]
    rocking_step_deg: float
    voxel_natural_m: tuple[float, float, float]
    """(Δr3, Δr1, Δr2) of the natural lattice, metres."""
    truth: np.ndarray | None = field(default=None, repr=False)
    """(M3, M1, M2) complex true object on the natural lattice, or None."""
    truth_origin_m: np.ndarray | None = field(default=None, repr=False)
    """Natural coordinates (r3, r1, r2) of truth voxel [0, 0, 0], metres."""
    attributes: dict[str, Any] = field(default_factory=dict, repr=False)
    """Root attributes (generator, description, CLI arguments of the run)."""

    @property
    def n_positions(self) -> int:
        """Number of scan positions."""
        return int(self.intensities.shape[0])


def _need(f: h5py.File, path: str, source: str) -> Any:
    if path not in f:
        raise ValueError(f"{source}: {path}: missing; this is not a ptypy Bragg3dSimScan export "
                         "(expected /data3d, /geometry, /probe as in ../shared/data/README.md)")
    return f[path]


def _attr(obj: Any, name: str, source: str) -> Any:
    if name not in obj.attrs:
        raise ValueError(f"{source}: {obj.name}@{name}: attribute missing; the file must document this convention")
    return obj.attrs[name]


def read_ptypy_bragg(path: str | Path) -> PtypyBraggCase:
    """Read a ptypy Bragg3dSimScan export; raises ValueError naming the missing key or the bad value."""
    source = str(path)
    if not Path(path).is_file():
        raise ValueError(f"{source}: no such file; check the path")
    with h5py.File(path, "r") as f:
        geo = _need(f, "geometry", source)
        inten = np.asarray(_need(f, "data3d/intensities", source)[()], dtype=np.float32)
        angles = np.asarray(_need(f, "data3d/angles_deg", source)[()], dtype=float)
        pos = np.asarray(_need(f, "data3d/positions_r3r1r2", source)[()], dtype=float)
        probe = np.asarray(_need(f, "probe/probe3d", source)[()], dtype=np.complex128)
        vox = cast("tuple[float, float, float]", tuple(float(v) for v in _attr(geo, "voxel_size_r3r1r2_m", source)))
        psize = cast("tuple[float, float]",
                     tuple(float(v) for v in np.broadcast_to(_attr(geo, "detector_psize_m", source), (2,))))
        truth = origin = None
        if "truth/object" in f:
            truth = np.asarray(f["truth/object"][()], dtype=np.complex128)
            origin = np.asarray(_attr(f["truth"], "origin_m", source), dtype=float)
        case = PtypyBraggCase(
            source=source, intensities=inten, angles_deg=angles, positions_natural_m=pos, probe3d=probe,
            energy_kev=float(_attr(geo, "energy_keV", source)),
            theta_bragg_deg=float(_attr(geo, "theta_bragg_deg", source)),
            distance_m=float(_attr(geo, "distance_m", source)), pixel_size_m=psize,
            rocking_step_deg=float(_attr(geo, "rocking_step_deg", source)), voxel_natural_m=vox,
            truth=truth, truth_origin_m=origin,
            attributes={k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in f.attrs.items()})
    _validate(case)
    if case.truth_origin_m is not None:
        # ptypy's View rounding: the probe of position n sits at origin + round((pos − origin)/psize)·psize
        d = np.asarray(case.voxel_natural_m)
        eff = case.truth_origin_m + np.rint((case.positions_natural_m - case.truth_origin_m) / d) * d
        object.__setattr__(case, "positions_natural_m", eff)
    return case


def _validate(case: PtypyBraggCase) -> None:
    s = case.source
    if case.intensities.ndim != 4:
        raise ValueError(f"{s}: /data3d/intensities: shape {case.intensities.shape}, expected (POS, q3, q1, q2)")
    n_pos, n3, n1, n2 = case.intensities.shape
    if not np.all(np.isfinite(case.intensities)) or case.intensities.min() < 0:
        raise ValueError(f"{s}: /data3d/intensities: NaN, inf or negative values")
    if case.probe3d.shape != (n3, n1, n2):
        raise ValueError(f"{s}: /probe/probe3d: shape {case.probe3d.shape}, expected the pattern shape {(n3, n1, n2)}")
    if case.angles_deg.shape != (n3,):
        raise ValueError(f"{s}: /data3d/angles_deg: shape {case.angles_deg.shape}, expected ({n3},)")
    if case.positions_natural_m.shape != (n_pos, 3):
        raise ValueError(f"{s}: /data3d/positions_r3r1r2: shape {case.positions_natural_m.shape}, "
                         f"expected ({n_pos}, 3)")
    if abs(case.pixel_size_m[0] - case.pixel_size_m[1]) > 1e-9 * case.pixel_size_m[0]:
        raise ValueError(f"{s}: /geometry@detector_psize_m {case.pixel_size_m}: pxm's Bragg geometry needs "
                         "square detector pixels")
    if n1 % 2 or n2 % 2:
        raise ValueError(f"{s}: detector crop {n1} × {n2}: odd sizes are not supported by this importer")


def pxm_geometry(case: PtypyBraggCase, *, upsampling: int = 1) -> BraggGeometry:
    """pxm's BraggGeometry of the case (θ_B as measured; d from Bragg's law at that angle)."""
    lam = 12.398419843320026e-10 / case.energy_kev
    theta = math.radians(case.theta_bragg_deg)
    _, n3, n1, n2 = case.intensities.shape
    return BraggGeometry(energy_kev=case.energy_kev, d_spacing_m=lam / (2 * math.sin(theta)),
                         detector_distance_m=case.distance_m, pixel_size_m=case.pixel_size_m[0],
                         n_rows_px=n1, n_cols_px=n2, n_angles=n3, rocking_step_deg=case.rocking_step_deg,
                         upsampling=upsampling, bragg_angle_deg=case.theta_bragg_deg)


def _natural_basis_lab(theta_rad: float) -> np.ndarray:
    """(3, 3): rows are the unit natural axes r3, r1, r2 in pxm's lab (x, y, z)."""
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    return np.array([[c, 0.0, s], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def natural_to_lab_m(natural_m: np.ndarray, theta_bragg_deg: float) -> np.ndarray:
    """Natural coordinates (r3, r1, r2) → pxm lab (x, y, z), metres; shape (..., 3) → (..., 3).

    x = r3 cosθ, z = r1 + r3 sinθ (the inverse of r3 = x/cosθ, r1 = z − x tanθ), y = r2.
    """
    return np.asarray(natural_m, float) @ _natural_basis_lab(math.radians(theta_bragg_deg))


def pxm_dataset(case: PtypyBraggCase, *, upsampling: int = 1, sample: dict[str, Any] | None = None) -> BraggDataset:
    """The case as a pxm grid dataset (frames (POS, ANGLE, N1, N2), angles, stage positions, mask)."""
    geometry = pxm_geometry(case, upsampling=upsampling)
    n_pos, n3, n1, n2 = case.intensities.shape
    # pxm row r holds m1 = r − N1//2 = −f1, i.e. ptypy's row (N1 − r) mod N1; row 0 has no partner
    rows = np.mod(n1 - np.arange(n1), n1)
    frames = np.ascontiguousarray(case.intensities[:, :, rows, :])
    mask = np.ones((n1, n2), bool)
    mask[0, :] = False
    # pxm angle k ↔ m3 = k − N3//2 = ptypy's f3: offsets on pxm's grid of steps (ptypy's own angles sit
    # half a step off that grid for even N3; its model uses the FFT frequency, as this does)
    offsets = (np.arange(n3) - n3 // 2) * case.rocking_step_deg
    angles = np.broadcast_to(geometry.theta_bragg_deg + offsets, (n_pos, n3)).copy()
    probe_lab = natural_to_lab_m(case.positions_natural_m, case.theta_bragg_deg)
    stage = np.broadcast_to(-probe_lab[:, None, :], (n_pos, n3, 3)).copy()
    prov = {"source_format": "ptypy Bragg3dSimScan export", "source_file": case.source,
            "generator": str(case.attributes.get("generator", "ptypy")),
            "conversion": "analysis.bragg.ptypy_bragg (rows reversed, row 0 masked; effective rounded positions)"}
    return BraggDataset(frames=frames, rocking_angle_deg=angles, stage_position_m=stage, detector_mask=mask,
                        geometry=geometry, sample=dict(sample or {"name": "ptypy Bragg3dSimScan case"}),
                        provenance=prov)


def beam_plane_coordinates_m(case: PtypyBraggCase) -> tuple[np.ndarray, np.ndarray]:
    """(p1, p2) in metres of every voxel of ptypy's 3D probe, each (N3, N1, N2); view centre at 0.

    p3 = k̂_i, p2 = ŷ, p1 = p2 × p3 = (−sinθ, 0, −cosθ) (pxm's beam-plane axes, ``analysis.bragg.probe_init``);
    a voxel at natural (r3, r1, r2) has p1 = −(r1 cosθ + r3 sin2θ) and p2 = r2.
    """
    n3, n1, n2 = case.probe3d.shape
    d3, d1, d2 = case.voxel_natural_m
    th = math.radians(case.theta_bragg_deg)
    r3 = ((np.arange(n3) - n3 // 2) * d3)[:, None, None]
    r1 = ((np.arange(n1) - n1 // 2) * d1)[None, :, None]
    r2 = ((np.arange(n2) - n2 // 2) * d2)[None, None, :]
    p1 = -(r1 * math.cos(th) + r3 * math.sin(2 * th))
    return np.broadcast_to(p1, (n3, n1, n2)), np.broadcast_to(r2, (n3, n1, n2))


def perpendicular_probe(case: PtypyBraggCase, p1_m: np.ndarray, p2_m: np.ndarray) -> np.ndarray:
    """P⊥(p1, p2): ptypy's probe (extruded along k̂_i, so a function of the beam-plane point only) at any
    beam-plane points.

    Every voxel of the 3D probe is a sample of P⊥ at its (p1, p2); the samples of one r2 column are
    dense along p1 (spacing ≪ Δr3 sin2θ), so P⊥ is interpolated linearly along p1 within the column
    of the nearest p2 = r2. Zero outside the sampled p1 range.
    """
    n3, n1, n2 = case.probe3d.shape
    d2 = case.voxel_natural_m[2]
    p1_all, _ = beam_plane_coordinates_m(case)
    p1_flat = p1_all[:, :, 0].ravel()
    order = np.argsort(p1_flat, kind="stable")
    p1_sorted = p1_flat[order]
    p1_q, p2_q = np.broadcast_arrays(np.asarray(p1_m, float), np.asarray(p2_m, float))
    cols = np.rint(p2_q / d2).astype(int) + n2 // 2
    out = np.zeros(p1_q.shape, complex)
    for c in np.unique(cols):
        if not 0 <= c < n2:
            continue
        sel = cols == c
        v = case.probe3d[:, :, c].ravel()[order]
        out[sel] = (np.interp(p1_q[sel], p1_sorted, v.real, left=0.0, right=0.0)
                    + 1j * np.interp(p1_q[sel], p1_sorted, v.imag, left=0.0, right=0.0))
    return out


def probe_width_p1_m(case: PtypyBraggCase, energy_fraction: float = 0.99) -> float:
    """Width along p1 holding ``energy_fraction`` of |P⊥|² (from every voxel's sample), metres."""
    p1_all, _ = beam_plane_coordinates_m(case)
    w = (np.abs(case.probe3d) ** 2).sum(axis=2).ravel()
    p1 = p1_all[:, :, 0].ravel()
    o = np.argsort(p1)
    c = np.cumsum(w[o]) / w.sum()
    lo, hi = np.searchsorted(c, (1 - energy_fraction) / 2), np.searchsorted(c, 1 - (1 - energy_fraction) / 2)
    return float(p1[o][min(int(hi), len(c) - 1)] - p1[o][lo])


def smallest_upsampling(case: PtypyBraggCase, *, thickness_m: float = 0.0, max_upsampling: int = 8) -> int:
    """Smallest U for which P2 holds the whole probe: the sampling condition (seed Eq 12) with the probe's
    width along p1 and a slab of ``thickness_m``.
    """
    width = probe_width_p1_m(case)
    for u in range(1, max_upsampling + 1):
        if pxm_geometry(case, upsampling=u).probe_width_limit_m(thickness_m) >= width:
            return u
    raise ValueError(f"{case.source}: a probe {width * 1e6:.2f} µm wide along p1 needs U > {max_upsampling}")


def probe_p2(case: PtypyBraggCase, geometry: BraggGeometry) -> np.ndarray:
    """pxm's P2 (N2, N3) on ``geometry`` from ptypy's 3D probe (:func:`perpendicular_probe` at P2's points)."""
    from analysis.bragg.probe_init import p2_plane_coordinates_m

    return perpendicular_probe(case, *p2_plane_coordinates_m(geometry))


def lab_to_grid_vox(lab_m: np.ndarray, geometry: BraggGeometry, origin_vox: np.ndarray) -> np.ndarray:
    """Lab (x, y, z) → fractional pxm object-grid indices (n1, n2, n3); ``origin_vox`` from the ViewGrid."""
    ax = geometry.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    return np.asarray(lab_m, float) @ e.T / np.asarray(geometry.voxel_size_m) + np.asarray(origin_vox, float)


@dataclass(frozen=True, kw_only=True)
class LatticeTransfer:
    """Exact, band-consistent transfer between pxm's orthogonal object grid and ptypy's natural lattice.

    ptypy's lattice is the real-space lattice dual to the measured q-points, so a lattice object and a
    grid object are the same object when they give the same sheared transform on those points: on the
    box (N1', whole e2 range, N3) the transform is pxm's :class:`~analysis.bragg.operators.fourier.ShearedFourier3D`
    with (m3, m1, m2) = (f3, −f1, f2), and the lattice values are the inverse DFT over (f3, f1, f2)
    (centred). No interpolation: a lattice object → grid → lattice comes back to rounding.
    """

    geometry: BraggGeometry
    theta_bragg_deg: float
    box_start_vox: tuple[int, int]
    """Object-grid index of the box's first voxel along e1 and e3 (every view shares it)."""
    object_shape: tuple[int, int, int]
    origin_vox: np.ndarray = field(repr=False)
    """Object-grid coordinates of the lab origin (``ViewGrid.origin_vox``)."""

    def _op(self) -> Any:
        from analysis.bragg.operators.fourier import ShearedFourier3D, shear_per_index_rad

        n1p, _, n3 = self.geometry.recon_shape
        no2 = self.object_shape[1]
        return ShearedFourier3D((n1p, no2, n3), (self.geometry.n_rows_px, no2), shear_per_index_rad(self.geometry))

    def lattice_centre_lab_m(self) -> np.ndarray:
        """Lab position of lattice index (N3//2, N1//2, NO2//2): the box centre, metres."""
        n1p, _, n3 = self.geometry.recon_shape
        centre = np.array([self.box_start_vox[0] + n1p // 2, self.object_shape[1] // 2,
                           self.box_start_vox[1] + n3 // 2], float)
        ax = self.geometry.lab_axes()
        e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
        return ((centre - self.origin_vox) * np.asarray(self.geometry.voxel_size_m)) @ e

    def _box(self, obj: np.ndarray) -> np.ndarray:
        n1p, _, n3 = self.geometry.recon_shape
        a, c = self.box_start_vox
        return np.asarray(obj)[a:a + n1p, :, c:c + n3].astype(np.complex128)

    def grid_to_lattice(self, obj: np.ndarray, *, beam_shift_m: float = 0.0,
                        shift_lab_m: np.ndarray | None = None) -> np.ndarray:
        """ρ on the object grid → (N3, N1, NO2) lattice values (r3, r1, r2); optionally ρ(r + t k̂_i) first.

        ``shift_lab_m`` δ (lab, metres): the values of ρ(r + δ) instead (a phase ramp on the transform, the inverse
        of :meth:`lattice_to_grid`'s ``shift_lab_m``).
        """
        g = self.geometry
        psi = self._op().forward(self._box(obj))                       # (N1, NO2, N3), centred m
        if beam_shift_m:
            psi = psi * np.exp(1j * self._q_dot(beam_shift_m * g.lab_axes()["k_in"]))
        if shift_lab_m is not None:
            psi = psi * np.exp(1j * self._q_dot(np.asarray(shift_lab_m, float)))
        n1 = g.n_rows_px
        flip = np.mod(n1 - np.arange(n1), n1)                          # f1 = −m1 (index n1 − r)
        spec = np.moveaxis(psi[flip], 2, 0)                            # (f3, f1, f2)
        return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(spec), norm="ortho"))

    def lattice_to_grid(self, lattice: np.ndarray, *, shift_lab_m: np.ndarray | None = None) -> np.ndarray:
        """(N3, N1, NO2) lattice values → the minimum-norm object on the grid with the same transform.

        ``shift_lab_m`` δ (lab, metres): the grid object is ρ(r + δ) instead (a phase ramp on the transform, exact
        on the measured band), e.g. for lattice values that sit δ off the transfer's lattice points.
        """
        g = self.geometry
        n1 = g.n_rows_px
        spec = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(np.asarray(lattice, complex)), norm="ortho"))
        psi = np.moveaxis(spec, 0, 2)[np.mod(n1 - np.arange(n1), n1)]
        if shift_lab_m is not None:
            psi = psi * np.exp(1j * self._q_dot(np.asarray(shift_lab_m, float)))
        out = np.zeros(self.object_shape, complex)
        n1p, _, n3 = g.recon_shape
        a, c = self.box_start_vox
        out[a:a + n1p, :, c:c + n3] = self._op().adjoint(psi)
        return out

    def _q_dot(self, delta_lab_m: np.ndarray) -> np.ndarray:
        """q(m)·δ on the (N1, NO2, N3) centred q-grid for a lab displacement δ."""
        g = self.geometry
        ax = g.lab_axes()
        n1, no2, n3 = g.n_rows_px, self.object_shape[1], g.recon_shape[2]
        m1 = (np.arange(n1) - n1 // 2)[:, None, None]
        m2 = (np.arange(no2) - no2 // 2)[None, :, None]
        m3 = (np.arange(n3) - n3 // 2)[None, None, :]
        dq = g.dq_detector_per_m
        u = np.asarray(g.rocking_direction)                            # e-frame components of û
        d = np.array([ax["e1"] @ delta_lab_m, ax["e2"] @ delta_lab_m, ax["e3"] @ delta_lab_m])
        return (m1 * dq * d[0] + m2 * dq * d[1]
                + m3 * g.dq_rocking_per_m * (u[0] * d[0] + u[1] * d[1] + u[2] * d[2]))


def lattice_transfer(geometry: BraggGeometry, theta_bragg_deg: float, object_shape: tuple[int, int, int],
                     origin_vox: np.ndarray, offsets_vox: np.ndarray) -> LatticeTransfer:
    """The transfer for a reconstruction whose views all share their e1 and e3 offsets (a y line scan)."""
    o = np.asarray(offsets_vox)
    if np.ptp(o[:, 0]) or np.ptp(o[:, 2]):
        raise ValueError("lattice_transfer: the views differ along e1 or e3; only scans along y share one box")
    return LatticeTransfer(geometry=geometry, theta_bragg_deg=theta_bragg_deg,
                           box_start_vox=(int(o[0, 0]), int(o[0, 2])),
                           object_shape=cast("tuple[int, int, int]", tuple(int(v) for v in object_shape)),
                           origin_vox=np.asarray(origin_vox, float))


def ptypy_model_intensities(obj_natural: np.ndarray, probe3d: np.ndarray, start_vox: np.ndarray) -> np.ndarray:
    """ptypy's model I = |fftshift(fftn(O_view · P))|² for one view starting at ``start_vox`` (3 ints)."""
    sl = tuple(slice(int(s), int(s) + n) for s, n in zip(start_vox, probe3d.shape, strict=True))
    return np.abs(np.fft.fftshift(np.fft.fftn(obj_natural[sl] * probe3d))) ** 2


@dataclass(frozen=True, kw_only=True)
class TruthComparison:
    """Error of a pxm object against a ptypy truth, on the truth's own lattice."""

    error: float
    """min over c, t of ‖c ρ̂(r + t k̂_i) − ρ_true‖ / ‖ρ_true‖ over the compared voxels."""
    amplitude_correlation: float
    """Pearson correlation of |c ρ̂| and |ρ_true| over the compared voxels."""
    beam_shift_m: float
    """t: the shift along the incident beam k̂_i that minimises the error, metres."""
    scale: complex
    """c, the global complex factor (phase and scale)."""
    n_voxels: int
    """Voxels compared (illuminated: Σ|P|² ≥ 10 % of its maximum over the scan)."""
    aligned: np.ndarray = field(repr=False)
    """c ρ̂ on the truth lattice (zeros outside the compared voxels)."""


def compare_with_truth(obj: np.ndarray, transfer: LatticeTransfer, case: PtypyBraggCase, *,
                       illumination_fraction: float = 0.1, max_shift_m: float | None = None,
                       n_shifts: int = 33) -> TruthComparison:
    """Error of a pxm object against the case's truth on the truth's own lattice (no interpolation).

    The object goes onto ptypy's lattice by :class:`LatticeTransfer` (the sub-voxel offset between the
    grids is a phase ramp on the transform, i.e. exact for the band the data measure). Compared: the
    voxels the scan lit (Σ_j |P_j|² ≥ ``illumination_fraction`` of its maximum, each view placed as ptypy
    placed it). Removed: one global complex factor c (least squares) and a shift t along k̂_i — the probe
    is invariant along the incident beam, so ρ(r + t k̂_i) fits the data as well — searched on
    ``n_shifts`` values in ±``max_shift_m`` (default: two Δr3) and refined by a bounded 1D search.
    """
    if case.truth is None or case.truth_origin_m is None:
        raise ValueError(f"{case.source}: no /truth/object; the comparison needs the true object")
    t_sl, sl, eps_lab = _overlap(case, transfer)
    n1 = transfer.geometry.n_rows_px
    truth = case.truth[t_sl]
    lit_all = _illumination(case)
    if lit_all[t_sl].sum() < (1 - 1e-6) * lit_all.sum():
        raise ValueError("compare_with_truth: part of the lit truth lies outside the reconstruction's lattice")
    region = lit_all[t_sl] >= illumination_fraction * lit_all.max()
    t_ref = truth[region]
    norm = float(np.linalg.norm(t_ref))
    if not norm > 0:
        raise ValueError("compare_with_truth: the truth is zero on the illuminated voxels")
    k_in = transfer.geometry.lab_axes()["k_in"]
    span = 2 * case.voxel_natural_m[0] if max_shift_m is None else float(max_shift_m)
    shifts = np.linspace(-span, span, n_shifts)
    psi0 = transfer._op().forward(transfer._box(obj))  # noqa: SLF001 - one transform, many shifts
    flip = np.mod(n1 - np.arange(n1), n1)

    def err_at(t: float) -> tuple[float, complex, np.ndarray]:
        psi = psi0 * np.exp(1j * transfer._q_dot(eps_lab + t * k_in))  # noqa: SLF001
        lat = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(np.moveaxis(psi[flip], 2, 0)), norm="ortho"))
        est = lat[sl][region]
        den = float(np.vdot(est, est).real)
        c = complex(np.vdot(est, t_ref) / den) if den > 0 else 0j
        return float(np.linalg.norm(c * est - t_ref)) / norm, c, est

    errs = np.array([err_at(t)[0] for t in shifts])
    i = int(np.argmin(errs))
    step = float(shifts[1] - shifts[0]) if len(shifts) > 1 else 0.0
    t_best = float(shifts[i])
    if step > 0:
        from scipy.optimize import minimize_scalar

        fit = minimize_scalar(lambda t: err_at(t)[0], bounds=(t_best - step, t_best + step), method="bounded",
                              options={"xatol": 1e-3 * step})
        if fit.fun < errs[i]:
            t_best = float(fit.x)
    e, c, est = err_at(t_best)
    a, b = np.abs(c * est), np.abs(t_ref)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    aligned = np.zeros(truth.shape, complex)
    aligned[region] = c * est
    return TruthComparison(error=e, amplitude_correlation=corr, beam_shift_m=t_best, scale=c,
                           n_voxels=int(region.sum()), aligned=aligned)


def _overlap(case: PtypyBraggCase,
             transfer: LatticeTransfer) -> tuple[tuple[slice, ...], tuple[slice, ...], np.ndarray]:
    """(truth slices, lattice slices, lab offset ε) of the truth's overlap with the transfer's lattice.

    ε is the lab displacement of the truth's voxels from the lattice points they are paired with.
    """
    d = np.asarray(case.voxel_natural_m)
    basis = _natural_basis_lab(math.radians(case.theta_bragg_deg))
    centre_nat = transfer.lattice_centre_lab_m() @ np.linalg.inv(basis)
    lat_shape = np.array([transfer.geometry.recon_shape[2], transfer.geometry.n_rows_px, transfer.object_shape[1]])
    pos = (np.asarray(case.truth_origin_m) - centre_nat) / d + lat_shape // 2
    start = np.rint(pos).astype(int)
    assert case.truth is not None                     # callers compare with a case that has its truth
    shape = np.asarray(case.truth.shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + shape, lat_shape)
    if np.any(hi <= lo):
        raise ValueError(f"the truth {tuple(shape)} at lattice index {start.tolist()} misses the reconstruction's "
                         f"lattice {tuple(lat_shape)}")
    t_sl = tuple(slice(int(a - s0), int(b - s0)) for a, b, s0 in zip(lo, hi, start, strict=True))
    l_sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return t_sl, l_sl, ((pos - start) * d) @ basis


def truth_on_grid(case: PtypyBraggCase, transfer: LatticeTransfer) -> np.ndarray:
    """The case's truth as a pxm object (the minimum-norm grid object with the truth's transform)."""
    if case.truth is None or case.truth_origin_m is None:
        raise ValueError(f"{case.source}: no /truth/object")
    t_sl, l_sl, eps_lab = _overlap(case, transfer)
    n3, n1, no2 = transfer.geometry.recon_shape[2], transfer.geometry.n_rows_px, transfer.object_shape[1]
    lat = np.zeros((n3, n1, no2), complex)
    lat[l_sl] = case.truth[t_sl]
    obj = transfer.lattice_to_grid(lat)
    # the truth sits ε off the lattice points it was put on: shift the object back by that much
    psi = transfer._op().forward(transfer._box(obj)) * np.exp(-1j * transfer._q_dot(eps_lab))  # noqa: SLF001
    out = np.zeros(transfer.object_shape, complex)
    n1p, _, n3b = transfer.geometry.recon_shape
    a, c = transfer.box_start_vox
    out[a:a + n1p, :, c:c + n3b] = transfer._op().adjoint(psi)  # noqa: SLF001
    return out


def _illumination(case: PtypyBraggCase) -> np.ndarray:
    """Σ_j |P_j|² on the truth lattice, each view placed where ptypy placed it (periodic along r3)."""
    truth = case.truth
    assert truth is not None and case.truth_origin_m is not None
    d = np.asarray(case.voxel_natural_m)
    shape = np.asarray(case.probe3d.shape)
    lit = np.zeros(truth.shape)
    p2 = np.abs(case.probe3d) ** 2
    for pos in case.positions_natural_m:
        start = np.rint((pos - case.truth_origin_m) / d).astype(int) - shape // 2
        idx = [np.mod(np.arange(s, s + n), m) if a == 0 else np.arange(s, s + n)
               for a, (s, n, m) in enumerate(zip(start, shape, truth.shape, strict=True))]
        keep = [(i >= 0) & (i < m) for i, m in zip(idx, truth.shape, strict=True)]
        sub = p2[np.ix_(keep[0], keep[1], keep[2])]
        lit[np.ix_(idx[0][keep[0]], idx[1][keep[1]], idx[2][keep[2]])] += sub
    return lit


def describe(case: PtypyBraggCase) -> str:
    """One paragraph: what the case holds (for the importer's output)."""
    n_pos, n3, n1, n2 = case.intensities.shape
    return (f"ptypy Bragg case: {n_pos} positions × {n3} rocking angles of {case.rocking_step_deg:g}°, "
            f"{n1} × {n2} frames of {case.pixel_size_m[0] * 1e6:g} µm at {case.distance_m:g} m, "
            f"{case.energy_kev:g} keV, θ_B {case.theta_bragg_deg:g}°; truth: "
            f"{'yes' if case.truth is not None else 'no'}; "
            + json.dumps({"generator": case.attributes.get("generator")}))


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    """What :func:`import_ptypy_bragg` wrote."""

    dataset_path: Path
    probe_path: Path
    upsampling: int
    """U written into the dataset's geometry (smallest U whose P2 holds the probe, unless given)."""
    probe_width_p1_m: float
    """Width of the probe along p1 (99 % of |P⊥|²), metres."""
    frames_shape: tuple[int, ...]
    masked_pixels: int

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        return [f"wrote {self.dataset_path}: frames {self.frames_shape}, {self.masked_pixels} masked pixels "
                "(pxm row 0 has no partner in ptypy's reversed row order)",
                f"wrote {self.probe_path}: P2 section (r2, r3) for U = {self.upsampling} "
                f"(probe {self.probe_width_p1_m * 1e6:.2f} µm wide along p1; seed Eq 12 needs U >= {self.upsampling})"]


def import_ptypy_bragg(source: str | Path, dataset_path: str | Path, probe_path: str | Path, *,
                       upsampling: int | None = None, sample: dict[str, Any] | None = None) -> ImportSummary:
    """Convert a ptypy Bragg3dSimScan export into a pxm dataset file and a probe file (P2 section).

    ``upsampling`` None picks the smallest U whose P2 window holds the whole probe (seed Eq 12 with
    T = 0): ptypy's probe need not fit its own r3 window (its model is periodic there), pxm's must.
    """
    from analysis.bragg.probe_file import write_probe_file
    from analysis.dataset import write_dataset

    case = read_ptypy_bragg(source)
    u = smallest_upsampling(case) if upsampling is None else int(upsampling)
    ds = pxm_dataset(case, upsampling=u, sample=sample)
    g = ds.geometry
    p2 = probe_p2(case, g)
    _, dr2, dr3 = g.voxel_size_m
    write_dataset(dataset_path, ds)
    write_probe_file(probe_path, p2, pixel_size_m=(dr2, dr3), axes="r2, r3",
                     metadata={"source_file": str(source), "source_format": "ptypy Bragg3dSimScan export",
                               "upsampling": u, "theta_bragg_deg": g.theta_bragg_deg,
                               "conversion": "analysis.bragg.ptypy_bragg.perpendicular_probe at P2's points"})
    return ImportSummary(dataset_path=Path(dataset_path), probe_path=Path(probe_path), upsampling=u,
                         probe_width_p1_m=probe_width_p1_m(case), frames_shape=tuple(ds.frames.shape),
                         masked_pixels=int((~ds.detector_mask).sum()))


def _lattice_to_truth_index(case: PtypyBraggCase, lattice_vectors_lab_m: np.ndarray, start_lab_m: np.ndarray,
                            shape: tuple[int, ...], origin_nat_m: np.ndarray) -> np.ndarray:
    """Integer natural-lattice indices (r3, r1, r2) of every point start + i·a of a pxm detector lattice array."""
    basis = _natural_basis_lab(math.radians(case.theta_bragg_deg))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    nat = (np.asarray(start_lab_m, float) + idx @ lattice_vectors_lab_m) @ np.linalg.inv(basis)
    t = (nat - origin_nat_m) / np.asarray(case.voxel_natural_m)
    off = float(np.abs(t - np.rint(t)).max(initial=0.0))
    if off > 1e-3:
        raise ValueError(f"the detector lattice is not ptypy's natural lattice here (points {off:.3f} voxel off)")
    return np.rint(t).astype(np.int64)


def lattice_probe(case: PtypyBraggCase, lattice: Any) -> np.ndarray:
    """ptypy's 3D probe on one view of pxm's detector lattice (``analysis.bragg.solvers.lattice.DetectorLattice``):
    the same samples, re-indexed (pxm's row axis runs along −r1); exact, no interpolation.
    """
    half = np.asarray(lattice.view_shape) // 2
    ti = _lattice_to_truth_index(case, lattice.vectors_lab_m, -(half @ lattice.vectors_lab_m), lattice.view_shape,
                                 np.zeros(3))
    n = np.asarray(case.probe3d.shape)
    ti = np.mod(ti + n // 2, n)                       # ptypy's view is periodic; index N//2 is its centre
    return np.asarray(case.probe3d[ti[..., 0], ti[..., 1], ti[..., 2]], np.complex128)


def compare_lattice_with_truth(obj: np.ndarray, lattice: Any, scan: Any, case: PtypyBraggCase, *,
                               illumination_fraction: float = 0.1) -> TruthComparison:
    """Error of an object on pxm's detector lattice (``analysis.bragg.solvers.lattice``) against the case's truth.

    The two lattices coincide point by point (checked), so the object is re-indexed, not interpolated; compared
    are the voxels the scan lit, as in :func:`compare_with_truth`. Removed: one global complex factor c only (no
    shift along k̂_i is searched, so this E is an upper bound of :func:`compare_with_truth`'s).
    """
    if case.truth is None or case.truth_origin_m is None:
        raise ValueError(f"{case.source}: no /truth/object; the comparison needs the true object")
    ti = _lattice_to_truth_index(case, lattice.vectors_lab_m, scan.origin_lab_m, obj.shape, case.truth_origin_m)
    shape = np.asarray(case.truth.shape)
    inside = np.all((ti >= 0) & (ti < shape), axis=-1)
    est = np.zeros(case.truth.shape, complex)
    est[ti[inside][:, 0], ti[inside][:, 1], ti[inside][:, 2]] = np.asarray(obj)[inside]
    lit = _illumination(case)
    region = lit >= illumination_fraction * lit.max()
    t_ref, e_ref = case.truth[region], est[region]
    norm = float(np.linalg.norm(t_ref))
    den = float(np.vdot(e_ref, e_ref).real)
    c = complex(np.vdot(e_ref, t_ref) / den) if den > 0 else 0j
    err = float(np.linalg.norm(c * e_ref - t_ref)) / norm
    a, b = np.abs(c * e_ref), np.abs(t_ref)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    aligned = np.zeros(case.truth.shape, complex)
    aligned[region] = c * e_ref
    return TruthComparison(error=err, amplitude_correlation=corr, beam_shift_m=0.0, scale=c,
                           n_voxels=int(region.sum()), aligned=aligned)
