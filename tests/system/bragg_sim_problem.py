"""Small Bragg-ptychography data sets from the independent simulator (:mod:`sim`), on the engine's grid.

The helper maps the simulator's conventions onto the engine's (checked by
``test_reconstruct_sim.py``):

* detector: the Bragg peak sits on ROI pixel (N1//2, N2//2), the engine's q = 0 (m1 = m2 = 0);
* rocking: angle index k has offset (k − NM//2)·Δθ + ``rocking_centre_offset_deg``, so the
  engine's m3 = U(k − NM//2) is q3 = |Q|(offset − centre) along x̂ = û, as in the simulator;
* real space: object voxel i sits at r = Σ_a (i_a − origin_a) Δr_a e_a (stage s puts the probe at
  r = −s); P2[n2, n3] = P⊥(p1·r, p2·r) at r = (n2 − N2//2)Δr2 e2 + (n3 − N3//2)Δr3 e3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, cubic_d_spacing_m
from analysis.operators import view_grid
from analysis.solvers.model import BraggModel
from sim.diffraction import BraggSimulator
from sim.probe import KBProbe, probe_axes
from sim.sample import CrystalSample

TUNGSTEN_A_M = 3.1652e-10


def small_geometry(*, n_px: int = 32, n_angles: int = 24, upsampling: int = 1, distance_m: float = 0.5,
                   window3_m: float = 1.2e-6) -> BraggGeometry:
    """W(220) at 8 keV, D = 0.5 m (R1 = R2 = 1.41 µm), R3 = ``window3_m`` after up-sampling U."""
    g0 = BraggGeometry(energy_kev=8.0, d_spacing_m=cubic_d_spacing_m(TUNGSTEN_A_M, (2, 2, 0)),
                       detector_distance_m=distance_m, n_rows_px=n_px, n_cols_px=n_px, n_angles=n_angles,
                       rocking_step_deg=1.0, upsampling=upsampling)
    t = g0.theta_bragg_rad
    # R3 = λ / (2 δθ sinθ cosθ)  → δθ; Δθ = U δθ
    dtheta = g0.wavelength_m / (2 * window3_m * np.sin(t) * np.cos(t))
    return BraggGeometry(energy_kev=8.0, d_spacing_m=g0.d_spacing_m, detector_distance_m=distance_m,
                         n_rows_px=n_px, n_cols_px=n_px, n_angles=n_angles,
                         rocking_step_deg=float(np.degrees(dtheta * upsampling)), upsampling=upsampling)


def small_probe(*, na_rad: float = 6e-4, extent_m: float = 0.6e-6, aberrated: bool = True) -> KBProbe:
    """Focused KB probe (central lobe ≈ 130 nm) truncated to ``extent_m``."""
    c = 1.0 if aberrated else 0.0
    return KBProbe(energy_kev=8.0, na_h=na_rad, na_v=na_rad, coma_h_rad=0.8 * c, coma_v_rad=0.8 * c,
                   spherical_h_rad=0.5 * c, spherical_v_rad=0.5 * c, extent_v_m=extent_m, extent_h_m=extent_m)


def raster(n_side: int, step_m: float, jitter: float = 0.15, seed: int = 0) -> np.ndarray:
    """Jittered n_side × n_side raster (x, y, 0) in metres, centred on 0."""
    rng = np.random.default_rng(seed)
    xs = (np.arange(n_side) - (n_side - 1) / 2) * step_m
    sx, sy = np.meshgrid(xs, xs, indexing="ij")
    s = np.stack([sx.ravel(), sy.ravel(), np.zeros(sx.size)], axis=1)
    s[:, :2] += rng.uniform(-jitter, jitter, s[:, :2].shape) * step_m
    s[:, :2] -= s[:, :2].mean(axis=0)
    return s


def p2_section_probe_coords_m(geometry: BraggGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(p1, p2) in metres of every point of the engine's oblique probe section P2 (N2, N3)."""
    n1p, n2, n3 = geometry.recon_shape
    _, dr2, dr3 = geometry.voxel_size_m
    ax = geometry.lab_axes()
    pa = probe_axes(geometry.theta_bragg_rad)
    b = ((np.arange(n2) - n2 // 2) * dr2)[:, None, None]
    c = ((np.arange(n3) - n3 // 2) * dr3)[None, :, None]
    r = b * ax["e2"][None, None, :] + c * ax["e3"][None, None, :]
    return r @ pa["p1"], r @ pa["p2"]


def truth_p2(geometry: BraggGeometry, probe: KBProbe) -> np.ndarray:
    """The simulator's P⊥ sampled on the engine's oblique section P2 (N2, N3)."""
    return probe.field_perp(*p2_section_probe_coords_m(geometry)).astype(np.complex128)


@dataclass
class SimProblem:
    """Simulated frames plus everything needed to compare with the truth."""

    geometry: BraggGeometry
    simulator: BraggSimulator
    frames: np.ndarray           # (POS, ANGLE, N1, N2)
    mask: np.ndarray             # (N1, N2)
    stage_xyz_m: np.ndarray
    rocking_offsets_deg: np.ndarray
    probe_p2: np.ndarray         # truth on the engine section

    def object_grid(self, margin_vox: int = 2):
        """The engine's ViewGrid for these positions."""
        return view_grid(self.geometry, self.stage_xyz_m, margin_vox=margin_vox)

    def voxel_centre_m(self, shape: tuple[int, int, int], origin_vox: np.ndarray) -> np.ndarray:
        """Lab position of voxel index N//2 of an object grid with ``origin_vox``."""
        ax = self.geometry.lab_axes()
        e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
        n = (np.asarray(shape) // 2 - np.asarray(origin_vox)) * np.asarray(self.geometry.voxel_size_m)
        return n @ e

    def lab_coordinates(self, shape: tuple[int, int, int], origin_vox: np.ndarray) -> tuple[np.ndarray, ...]:
        """(x, y, z) in metres of every voxel of an object grid with ``origin_vox``."""
        ax = self.geometry.lab_axes()
        r = [(np.arange(n) - o) * d for n, o, d in zip(shape, origin_vox, self.geometry.voxel_size_m)]
        r1, r2, r3 = np.meshgrid(*r, indexing="ij")
        return tuple(r1 * ax["e1"][i] + r2 * ax["e2"][i] + r3 * ax["e3"][i] for i in range(3))

    def truth_object(self, shape: tuple[int, int, int], origin_vox: np.ndarray) -> np.ndarray:
        """ρ_true point-sampled on the engine's object grid."""
        return self.simulator.truth_object(*self.lab_coordinates(shape, origin_vox))


def make_simulator(sample: CrystalSample, *, geometry: BraggGeometry, probe: KBProbe,
                   flux_ph_per_s: float = 1e9) -> tuple[BraggSimulator, DetectorLayout, Roi]:
    """(simulator, gap-free 4N1 × 4N2 detector, ROI) with the Bragg peak on ROI pixel (N1//2, N2//2)."""
    n1, n2 = geometry.n_rows_px, geometry.n_cols_px
    layout = DetectorLayout(n_rows_px=4 * n1, n_cols_px=4 * n2, gap_px=0)
    roi = Roi(row0_px=2 * n1 - n1 // 2, col0_px=2 * n2 - n2 // 2, n_rows_px=n1, n_cols_px=n2)
    sim = BraggSimulator(geometry, sample, probe, layout=layout, flux_ph_per_s=flux_ph_per_s,
                         oversampling=2, centre_px=(2.0 * n1, 2.0 * n2))
    return sim, layout, roi


def rocking_offsets_deg(geometry: BraggGeometry) -> np.ndarray:
    """(ANGLE,) offsets (k − NM//2)·Δθ from θ_B of the engine's rocking index k (degrees)."""
    return (np.arange(geometry.n_angles) - geometry.n_angles // 2) * geometry.rocking_step_deg


def lit_regions(geometry: BraggGeometry, simulator: BraggSimulator, probe_p2: np.ndarray, stage_xyz_m: np.ndarray,
                object_shape: tuple[int, int, int], *, margin_vox: int = 2
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """(ρ_true, S′ = true support dilated by 1, S′ ∧ Σ|P_j|² ≥ 20 % max, lab (x, y, z) in m) on the engine's grid.

    The grid is the one :class:`analysis.engine.Reconstruction` builds for ``stage_xyz_m``
    (``margin_vox`` as there); ``object_shape`` is checked against it.
    """
    from scipy.ndimage import binary_dilation

    vg = view_grid(geometry, np.asarray(stage_xyz_m, float), margin_vox=margin_vox)
    if tuple(vg.object_shape) != tuple(object_shape):
        raise ValueError(f"object shape {tuple(object_shape)} is not the engine's grid {tuple(vg.object_shape)}")
    op = BraggModel.from_geometry(geometry, tuple(object_shape))
    r = [(np.arange(n) - o) * d for n, o, d in zip(object_shape, vg.origin_vox, geometry.voxel_size_m)]
    ax = geometry.lab_axes()
    r1, r2, r3 = np.meshgrid(*r, indexing="ij")
    xyz = tuple(r1 * ax["e1"][i] + r2 * ax["e2"][i] + r3 * ax["e3"][i] for i in range(3))
    tru = simulator.truth_object(*xyz)
    s_prime = binary_dilation(np.abs(tru) > 0.5, iterations=1)
    ill = np.zeros(tuple(object_shape))
    for j in range(len(vg.offsets_vox)):
        ill[op.view(vg.offsets_vox[j])] += np.abs(op.probe_at(probe_p2, vg.shifts_px[j])) ** 2
    return tru, s_prime, s_prime & (ill >= 0.2 * ill.max()), xyz


def simulate(sample: CrystalSample, *, geometry: BraggGeometry, probe: KBProbe, stage_xyz_m: np.ndarray,
             exposure_s: float = 0.2, flux_ph_per_s: float = 1e9, noise_seed: int | None = None,
             angle_stride: int = 1) -> SimProblem:
    """Frames (expected counts, or Poisson with ``noise_seed``) for every position and angle."""
    n1, n2, nm = geometry.n_rows_px, geometry.n_cols_px, geometry.n_angles
    sim, _, roi = make_simulator(sample, geometry=geometry, probe=probe, flux_ph_per_s=flux_ph_per_s)
    offs = rocking_offsets_deg(geometry) + sample.rocking_centre_offset_deg
    rng = None if noise_seed is None else np.random.default_rng(noise_seed)
    frames = np.empty((stage_xyz_m.shape[0], nm, n1, n2), np.float64)
    for j, s in enumerate(stage_xyz_m):
        for k, d in enumerate(offs):
            lam = sim.expected_counts(stage_xyz_m=tuple(s), rocking_offset_deg=float(d), exposure_s=exposure_s,
                                      roi=roi)
            frames[j, k] = lam if rng is None else rng.poisson(lam)
    return SimProblem(geometry=geometry, simulator=sim, frames=frames, mask=np.ones((n1, n2), bool),
                      stage_xyz_m=np.asarray(stage_xyz_m, float), rocking_offsets_deg=offs,
                      probe_p2=truth_p2(geometry, probe))


def reduced_rocking_set(problem: SimProblem, probe: KBProbe, *, n_angles: int, upsampling: int) -> SimProblem:
    """Every (N/``n_angles``)-th angle of ``problem`` (N angles, centred on the rocking index), up-sampled U×.

    The step becomes stride·Δθ over the same q3 range; with U = 3·stride the fine step δθ is that of the full
    scan at U = 3 (the seed's 7 angles at 0.03° with U = 18 against 42 at 0.005° with U = 3).
    """
    g0 = problem.geometry
    if n_angles < 1 or g0.n_angles % n_angles:
        raise ValueError(f"reduced_rocking_set: {n_angles} angles must divide the scan's {g0.n_angles}")
    stride = g0.n_angles // n_angles
    sel = np.arange(stride // 2, g0.n_angles, stride)
    g = dataclasses.replace(g0, n_angles=n_angles, rocking_step_deg=stride * g0.rocking_step_deg,
                            upsampling=upsampling)
    offs = problem.rocking_offsets_deg[sel]
    if not np.allclose(offs - offs[n_angles // 2], (np.arange(n_angles) - n_angles // 2) * g.rocking_step_deg):
        raise ValueError("reduced_rocking_set: the selected angles are not centred on the rocking index")
    return dataclasses.replace(problem, geometry=g, frames=problem.frames[:, sel], rocking_offsets_deg=offs,
                               probe_p2=truth_p2(g, probe))


def gaussian_p2(geometry: BraggGeometry, sigma_m: float) -> np.ndarray:
    """A flat-phase Gaussian P⊥ of width ``sigma_m`` on the engine's P2 section (a wrong start)."""
    p1, p2 = p2_section_probe_coords_m(geometry)
    return np.exp(-(p1 ** 2 + p2 ** 2) / (2 * sigma_m ** 2)).astype(np.complex128)
