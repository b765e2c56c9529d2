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
from typing import Any

import numpy as np

from analysis.bragg.engine import ReconstructionResult
from analysis.bragg.operators import view_grid
from analysis.bragg.solvers.model import BraggModel
from analysis.geometry import BraggGeometry, DetectorLayout, Roi, cubic_d_spacing_m
from sim.diffraction import BraggSimulator
from sim.probe import KBProbe, probe_axes
from sim.sample import CrystalSample, ImplantedLayer, Slab

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
        r = [(np.arange(n) - o) * d for n, o, d in zip(shape, origin_vox, self.geometry.voxel_size_m, strict=True)]
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

    The grid is the one :class:`analysis.bragg.engine.Reconstruction` builds for ``stage_xyz_m``
    (``margin_vox`` as there); ``object_shape`` is checked against it.
    """
    from scipy.ndimage import binary_dilation

    vg = view_grid(geometry, np.asarray(stage_xyz_m, float), margin_vox=margin_vox)
    if tuple(vg.object_shape) != tuple(object_shape):
        raise ValueError(f"object shape {tuple(object_shape)} is not the engine's grid {tuple(vg.object_shape)}")
    op = BraggModel.from_geometry(geometry, tuple(object_shape))
    r = [(np.arange(n) - o) * d for n, o, d in zip(object_shape, vg.origin_vox, geometry.voxel_size_m, strict=True)]
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


SEED_LIKE_SAMPLE = CrystalSample(slab=Slab(thickness_m=0.45e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9),
                                 implanted_layer=ImplantedLayer(strain=3e-4, depth_m=1.8e-6, edge_width_m=50e-9))
"""Seed-like phantom: 0.45 µm W(220) slab tilted 5.5° about x and −2° about y, 3e-4 implanted layer (edge at y = 0)."""


def seed_like_problem(*, noise_seed: int | None = 1) -> SimProblem:
    """The seed-schedule problem: :data:`SEED_LIKE_SAMPLE`, :func:`small_geometry`, aberrated KB probe (NA 6e-4),
    4 × 4 jittered raster at 0.12 µm, 1e9 ph/s × 0.2 s (Poisson with ``noise_seed``).
    """
    return simulate(SEED_LIKE_SAMPLE, geometry=small_geometry(), probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6),
                    noise_seed=noise_seed)


@dataclass(frozen=True)
class ReconstructionScores:
    """Errors of one reconstruction against the simulator truth
    (E_ρ, E_P and strain RMSE of :mod:`analysis.metrics`).
    """

    object_error: float
    """E_ρ on the lit crystal S′ ∧ Σ|P_j|² ≥ 20 % max."""
    phase_rmse_rad: float
    """Phase RMSE of the aligned object on the same region (rad)."""
    probe_error: float
    """Intensity-weighted E_P of P2 against the truth."""
    strain_rmse: float
    """RMSE of ε_zz (Eq 15, no ramp removal) against the simulator's on the lit crystal interior."""
    strain_bias: float
    """Mean of that ε_zz difference (a uniform offset: e.g. an object phase ramp traded with the probe)."""
    layer_step: float
    """mean ε_zz(y > 0.1 µm) − mean ε_zz(y < −0.1 µm) on the same voxels (true 3e-4 for SEED_LIKE_SAMPLE)."""
    n_strain_voxels: int
    """Voxels of the strain region."""
    support_voxels: int
    """Voxels in the current support S."""
    lit_crystal_kept: float
    """Fraction of the lit crystal inside S."""


def score_reconstruction(problem: SimProblem, sample: CrystalSample, result: ReconstructionResult, op: BraggModel,
                         origin_vox: np.ndarray) -> ReconstructionScores:
    """E_ρ, phase RMSE, E_P, strain RMSE and layer step of ``result`` (a ReconstructionResult) against the truth.

    ``op`` and ``origin_vox`` are the engine's model and object-grid origin (``r.op``,
    ``r._grid.origin_vox``). Lit crystal: true support dilated by 1 voxel where Σ_j|P_j|² of the
    true probe is ≥ 20 % of its maximum; strain region: lit ∧ |ρ_true| > 0.9, eroded by 1 voxel,
    ∧ the strain mask (|ρ̂| ≥ 0.3 × its maximum on the lit crystal: voxels no probe reached do not set it).
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    from analysis.metrics import object_error, probe_error
    from analysis.strain import StrainOptions, strain_from_geometry

    shape = result.object.shape
    tru = problem.truth_object(shape, origin_vox)
    crystal = np.abs(tru) > 0.5
    ill = np.zeros(shape)
    for j in range(problem.stage_xyz_m.shape[0]):
        ill[op.view(result.offsets_vox[j])] += np.abs(op.probe_at(problem.probe_p2, result.shifts_px[j])) ** 2
    lit = binary_dilation(crystal, iterations=1) & (ill >= 0.2 * ill.max())
    e = object_error(result.object, tru, support=lit)
    pe = probe_error(result.probe, problem.probe_p2, intensity_weighted=True).error
    maps = strain_from_geometry(result.object, problem.geometry, amplitude_reference=lit,
                                options=StrainOptions(remove_ramp=False, amplitude_threshold=0.3))
    x, y, z = problem.lab_coordinates(shape, origin_vox)
    reg = binary_erosion(lit & (np.abs(tru) > 0.9), iterations=1) & maps.mask
    d = (maps.eps_zz - sample.strain_zz(x, y, z))[reg]
    layer, bulk = reg & (y > 0.1e-6), reg & (y < -0.1e-6)
    step = (float(np.mean(maps.eps_zz[layer]) - np.mean(maps.eps_zz[bulk])) if layer.any() and bulk.any()
            else float("nan"))
    return ReconstructionScores(
        object_error=float(e.error), phase_rmse_rad=float(e.phase_rmse_rad), probe_error=float(pe),
        strain_rmse=float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan"),
        strain_bias=float(np.mean(d)) if d.size else float("nan"), layer_step=step,
        n_strain_voxels=int(reg.sum()), support_voxels=int(result.support.sum()),
        lit_crystal_kept=float((result.support & lit & crystal).sum() / (lit & crystal).sum()))


def model_frames(geometry: BraggGeometry, op: BraggModel, probe_p2: np.ndarray, obj: np.ndarray,
                 offsets_vox: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """(POS, ANGLE, N1, N2) intensities |F(P_j ρ)|² of ``obj`` through the engine's model ``op`` (no simulator):
    "exact-model" frames, which ``obj`` fits exactly. Angles in the user's order (step sign honoured).
    """
    pred = np.stack([np.abs(op.fourier.forward(op.probe_at(probe_p2, shifts_px[j]) * obj[op.view(offsets_vox[j])]))
                     ** 2 for j in range(len(offsets_vox))])          # (POS, N1, N2, NM), increasing angle
    pred = np.moveaxis(pred, -1, 1)
    return pred[:, ::-1] if geometry.rocking_step_deg < 0 else pred


def exact_model_frames(problem: SimProblem, rec: Any, truth: np.ndarray) -> np.ndarray:
    """:func:`model_frames` of ``truth`` on the grid and probe of ``rec`` (a Reconstruction), rescaled to
    ``problem``'s photon total: data without simulator mismatch, which the truth fits exactly.
    """
    res = rec.result()
    frames = model_frames(problem.geometry, rec.op, problem.probe_p2, truth, res.offsets_vox, res.shifts_px)
    return frames * (problem.frames.sum() / frames.sum())


def start_next_to_truth(rec: Any, truth: np.ndarray, region: np.ndarray, *, phase_rms_rad: float,
                        corr_vox: float, seed: int = 1) -> None:
    """Set ``rec``'s object to ρ_true·(1 + a)·e^{iφ} in its support, at the engine's starting scale: a smooth
    random phase φ of RMS ``phase_rms_rad`` and amplitude factor a of RMS half that on ``region``, both
    Gaussian-correlated over ``corr_vox`` voxels.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    phi, amp = (gaussian_filter(rng.standard_normal(truth.shape), corr_vox) for _ in range(2))
    phi *= phase_rms_rad / phi[region].std()
    amp *= 0.5 * phase_rms_rad / amp[region].std()
    start = truth * (1 + amp) * np.exp(1j * phi) * rec.state.support
    start *= np.abs(rec.state.object).max() / np.abs(start).max()
    rec.state.object = start.astype(rec.state.object.dtype)


def truth_amplitude_cost(problem: SimProblem, op: BraggModel, result: ReconstructionResult,
                         origin_vox: np.ndarray) -> float:
    """Σ_j Σ_q (√(s·|F(P_j ρ_true)|²) − √I_j)²: the amplitude-Gaussian data cost (seed Eq 4, b = 0) of the *true*
    object and probe put through the engine's model ``op`` on ``result``'s grid, best global scale s.

    The floor a solver should not go below on simulator data: a lower cost fits the discretisation
    mismatch between the simulator and the engine's model (or the noise).
    """
    tru = problem.truth_object(result.object.shape, origin_vox)
    pred = model_frames(problem.geometry, op, problem.probe_p2, tru, result.offsets_vox, result.shifts_px)
    scale = float((pred * problem.frames).sum() / (pred ** 2).sum())
    return float(np.sum((np.sqrt(scale * pred) - np.sqrt(problem.frames)) ** 2))


def resolution_problem(flux_ph_per_s: float, *, n_epie: int = 40, n_ml: int = 10):
    """The resolution problem (docs/dataset-format.md, Half-data resolution): 0.3 µm implanted slab, small geometry,
    4 × 4 raster, Poisson noise
    at ``flux_ph_per_s`` × 0.2 s; and its recipe: known probe, ``n_epie`` ePIE + ``n_ml`` Poisson-ML sweeps,
    fixed 0.4 µm slab support. Returns (SimProblem, Recipe).
    """
    from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, SupportSchedule

    g = small_geometry()
    sample = CrystalSample(slab=Slab(thickness_m=0.3e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9),
                           implanted_layer=ImplantedLayer(strain=3e-4, depth_m=1.8e-6, edge_width_m=50e-9))
    p = simulate(sample, geometry=g, probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6), noise_seed=4,
                 flux_ph_per_s=flux_ph_per_s)
    recipe = Recipe(n_epie_iterations=n_epie, n_ml_iterations=n_ml, background_init=0.0,
                    support=SupportSchedule(thickness_schedule_m=((0, 0.4e-6),), shrinkwrap_start_iter=None),
                    epie=EpieOptions(update_probe=False, gamma=0.0),
                    ml=MLOptions(update_probe=False, noise_model="poisson"))
    return p, recipe


def half_data_reconstructions(flux_ph_per_s: float, *, n_epie: int = 40, n_ml: int = 10,
                              split_seed: int = 0) -> tuple[SimProblem, list]:
    """:func:`resolution_problem`'s data split binomially, both halves reconstructed with its recipe."""
    from analysis.bragg.engine import Reconstruction
    from analysis.metrics import binomial_split

    p, recipe = resolution_problem(flux_ph_per_s, n_epie=n_epie, n_ml=n_ml)
    g = p.geometry
    half_a, half_b = binomial_split(p.frames, rng=np.random.default_rng(split_seed))
    recs = [Reconstruction(g, f, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=recipe)
            .iterate(recipe.n_iterations) for f in (half_a, half_b)]
    return p, recs


def truth_fsc_crossings(problem: SimProblem, rec, estimate, truth: np.ndarray | None = None) -> dict[str, float]:
    """Where FSC(half A, truth) meets √(½-bit threshold), per curve of ``estimate`` ("all", "z", "y", "x"; m).

    ``rec`` is half A's Reconstruction, ``estimate`` the ResolutionEstimate: same mask, cones and shells;
    ``truth``: ρ_true on ``rec``'s grid if the caller has it already. With independent half errors,
    FSC(A, truth) = √FSC(A, B), so this is where a calibrated half-data FSC would cross ½-bit. NaN if it
    never does.
    """
    from analysis.bragg.resolution import fsc_cone_axes
    from analysis.metrics import fourier_shell_correlation, object_error, shell_crossing

    ra = rec.result()
    tru = problem.truth_object(ra.object.shape, rec._grid.origin_vox) if truth is None else truth
    a = object_error(ra.object, tru, support=estimate.mask > 0.5).aligned
    axes = {"all": None, **fsc_cone_axes(problem.geometry)}
    out = {}
    for name, curve in {"all": estimate.fsc, **estimate.fsc_directional}.items():
        t = fourier_shell_correlation(a, tru, voxel_size_m=problem.geometry.voxel_size_m, mask=estimate.mask,
                                      cone_axis=axes[name])
        if not np.allclose(t.frequency, curve.frequency):
            raise AssertionError(f"truth_fsc_crossings: shells of {name} differ from the estimate's")
        f = shell_crossing(t.frequency, t.value, np.sqrt(curve.threshold))
        out[name] = 1.0 / f if f > 0 else float("nan")
    return out
