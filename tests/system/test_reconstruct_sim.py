"""Reconstruction engine against the independent simulator (issue 3 "Must show").

Data come from :class:`sim.diffraction.BraggSimulator`, a finer, differently discretised
forward model (sheared 10 nm slices, continuous q3, detector-window folding), so the
engine never sees data made by its own operators (no inverse crime). Small problem:
32 × 32 ROI, 24 rocking angles, 16 jittered positions, D = 0.5 m (R1 = R2 = 1.41 µm,
R3 = 1.2 µm), voxels 23 × 44 × 50 nm, a 130 nm KB probe truncated to 0.6 µm.

Reachable accuracy: even the *true* object, point-sampled on the engine's grid and
put through the engine's forward model with the true probe, misfits the simulator's
amplitudes by ≈ 4.4 % (``test_forward_model_conventions_match_simulator``). The object
error is therefore bounded below by that discretisation mismatch (≈ 0.1 on the lit
region), not by the solver's numerical floor (< 1e-2 in tests/analysis/test_accuracy.py).
Longer ML runs lower the data misfit further but *raise* E_ρ (0.11 → 0.14 from 200 to 400
iterations): the solver starts fitting the discretisation mismatch.

Open: joint probe retrieval has a finite basin: a flat-phase Gaussian twice the lobe width, or
|P_true| with a flat phase, stagnates (E_ρ ≈ 1); see ``test_joint_probe_from_wrong_initial_probe``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.bragg.solvers.model import BraggModel
from analysis.metrics import object_error, probe_error
from analysis.strain import StrainOptions, strain_from_geometry
from sim.sample import D220_W_M, CrystalSample, Dislocation, HomogeneousDisplacement, ImplantedLayer, Slab
from testing.bragg_sim import SimProblem, gaussian_p2, lit_regions, raster, simulate, small_geometry, small_probe

NO_SHRINKWRAP = SupportSchedule(thickness_schedule_m=((0, 0.4e-6),), shrinkwrap_start_iter=None)


JOINT_EPIE, JOINT_ML = 150, 50
JOINT_MAX_OBJECT_ERROR = 0.15
JOINT_MAX_PROBE_ERROR = 0.07


def _slab(**kw) -> Slab:
    return Slab(thickness_m=0.3e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9, **kw)


@pytest.fixture(scope="module")
def geometry():
    return small_geometry()


@pytest.fixture(scope="module")
def strained(geometry) -> SimProblem:
    """Noise-free frames of a tilted 0.3 µm slab with uniform strain 2e-4 and a lattice tilt."""
    sample = CrystalSample(slab=_slab(), homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    return simulate(sample, geometry=geometry, probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6))


def _run(p: SimProblem, probe0: np.ndarray, recipe: Recipe) -> Reconstruction:
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, probe0, recipe=recipe)
    return r.iterate(recipe.n_iterations)


def _regions(p: SimProblem, r: Reconstruction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ρ_true on the object grid, S′ = true support dilated by 1, S′ ∧ Σ|P_j|² ≥ 20 % max)."""
    tru, s_prime, lit, _ = lit_regions(p.geometry, p.simulator, p.probe_p2, p.stage_xyz_m, r.result().object.shape)
    return tru, s_prime, lit


def test_forward_model_conventions_match_simulator(geometry):
    """Pins q = 0 at ROI pixel (N1//2, N2//2), the row sign, the rocking direction and no twin.

    The true object and probe on the engine grid, pushed through the engine's F_meas,
    reproduce the simulator's frames (an asymmetric tilted + strained slab and a
    rocking-curve centre off zero); every mirrored convention fails.
    """
    sample = CrystalSample(slab=_slab(), homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1.5e-4,
                                                                               tilt_y_rad=3e-4),
                           rocking_centre_offset_deg=0.01)
    p = simulate(sample, geometry=geometry, probe=small_probe(), stage_xyz_m=raster(2, 0.15e-6))
    vg = p.object_grid()
    op = BraggModel.from_geometry(geometry, vg.object_shape)
    tru = p.truth_object(vg.object_shape, vg.origin_vox)
    pred = np.empty_like(p.frames)
    for j in range(p.stage_xyz_m.shape[0]):
        psi = op.fourier.forward(op.probe_at(p.probe_p2, vg.shifts_px[j]) * tru[op.view(vg.offsets_vox[j])])
        pred[j] = np.moveaxis(np.abs(psi) ** 2, -1, 0)       # (N1, N2, NM) → (ANGLE, N1, N2)

    def corr(a: np.ndarray) -> float:
        x, y = np.sqrt(a).ravel(), np.sqrt(p.frames).ravel()
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    c = corr(pred)
    scale = float((pred * p.frames).sum() / (pred ** 2).sum())
    misfit = float(np.linalg.norm(np.sqrt(scale * pred) - np.sqrt(p.frames)) / np.linalg.norm(np.sqrt(p.frames)))
    print(f"engine F vs simulator: amplitude correlation {c:.5f}, relative amplitude misfit {misfit:.4f}")
    assert c > 0.995
    assert misfit < 0.08
    peak = np.unravel_index(np.argmax(p.frames[0]), p.frames[0].shape)
    assert peak == np.unravel_index(np.argmax(pred[0]), pred[0].shape)
    for name, flipped in (("rows", pred[:, :, ::-1]), ("rocking", pred[:, ::-1]),
                          ("twin", pred[:, ::-1, ::-1, ::-1])):
        assert corr(flipped) < 0.5, name


@pytest.mark.parametrize("band_limit", [False, True])
def test_known_probe_noise_free(strained, band_limit):
    """Issue 3 item 1: noise-free simulator data, true probe; E_ρ after phase, ramp and shift.

    With ``band_limit_object`` the ePIE sweeps project ρ onto the measured sheared band:
    the phase improves (0.047 → 0.036 rad) but E_ρ rises (0.109 → 0.128) because the
    truth's sharp slab faces are partly out of band. Off by default.
    """
    recipe = Recipe(n_epie_iterations=100, n_ml_iterations=50, support=NO_SHRINKWRAP, background_init=0.0,
                    epie=EpieOptions(update_probe=False, gamma=0.0), ml=MLOptions(update_probe=False),
                    band_limit_object=band_limit)
    r = _run(strained, strained.probe_p2, recipe)
    tru, s_prime, lit = _regions(strained, r)
    e = object_error(r.result().object, tru, support=lit)
    e_all = object_error(r.result().object, tru, support=s_prime)
    print(f"known probe (band limit {band_limit}): E_rho lit {e.error:.4f} (amplitude {e.amplitude_nrmse:.4f}, "
          f"phase {e.phase_rmse_rad:.4f} rad, shift {e.shift_px}), E_rho on S' {e_all.error:.4f}")
    assert e.error < 0.15
    assert e.phase_rmse_rad < (0.045 if band_limit else 0.07)


def test_joint_probe_from_wrong_initial_probe(strained):
    """Issue 3 item 2: same data, P2 started from a flat-phase Gaussian (σ = 60 nm ≈ the lobe).

    Basin of attraction (150 ePIE sweeps, measured): a Gaussian of σ = 60 nm (E_P = 0.13) or an
    aberration-free KB probe (E_P = 0.05) converge to E_P ≈ 0.05; a Gaussian twice as wide
    (σ = 120 nm, E_P = 0.28) or |P_true| with a flat phase (side lobes of the wrong sign,
    E_P = 0.20) stagnate at E_ρ ≈ 1, E_P ≈ 0.3. Start from a probe of the right lobe width.
    """
    start = gaussian_p2(strained.geometry, 0.06e-6)
    e0 = probe_error(start, strained.probe_p2, intensity_weighted=True).error
    recipe = Recipe(n_epie_iterations=JOINT_EPIE, n_ml_iterations=JOINT_ML, support=NO_SHRINKWRAP,
                    background_init=0.0, epie=EpieOptions(gamma=0.0), ml=MLOptions())
    r = _run(strained, start, recipe)
    tru, _, lit = _regions(strained, r)
    e = object_error(r.result().object, tru, support=lit)
    pe = probe_error(r.result().probe, strained.probe_p2, intensity_weighted=True)
    print(f"joint probe: E_rho lit {e.error:.4f} (phase {e.phase_rmse_rad:.4f} rad); "
          f"E_P (|P|²-weighted) {e0:.3f} -> {pe.error:.4f}")
    assert e.error < JOINT_MAX_OBJECT_ERROR
    assert pe.error < 0.6 * e0 and pe.error < JOINT_MAX_PROBE_ERROR


def _poisson_run(sample: CrystalSample, geometry, seed: int) -> tuple[SimProblem, Reconstruction, np.ndarray]:
    """Poisson frames at 1e9 ph/s × 0.2 s, known probe, ePIE then Poisson ML; returns the lit interior."""
    p = simulate(sample, geometry=geometry, probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6),
                 exposure_s=0.2, flux_ph_per_s=1e9, noise_seed=seed)
    recipe = Recipe(n_epie_iterations=100, n_ml_iterations=40, support=NO_SHRINKWRAP, background_init=0.0,
                    epie=EpieOptions(update_probe=False, gamma=0.0),
                    ml=MLOptions(update_probe=False, noise_model="poisson"))
    r = _run(p, p.probe_p2, recipe)
    tru, _, lit = _regions(p, r)
    return p, r, binary_erosion(lit & (np.abs(tru) > 0.9), iterations=1)


def test_poisson_bulk_strain_and_implanted_layer_step(geometry):
    """Issue 3 item 3: strain RMSE vs the simulator's ε_zz at voxel scale; the 3e-4 layer step.

    Layer boundary at y = 0 (edge 50 nm); ε from Eq 15 central differences, no ramp removal
    (the q-grid origin is the reference |Q|), on the lit crystal interior eroded by 1 voxel.
    """
    sample = CrystalSample(slab=_slab(), implanted_layer=ImplantedLayer(strain=3e-4, depth_m=1.8e-6,
                                                                        edge_width_m=50e-9))
    p, r, region = _poisson_run(sample, geometry, seed=1)
    counts = p.frames.sum(axis=(1, 2, 3)).mean()
    maps = strain_from_geometry(r.result().object, geometry,
                                options=StrainOptions(remove_ramp=False, amplitude_threshold=0.3))
    x, y, z = p.lab_coordinates(r.result().object.shape, r._grid.origin_vox)  # noqa: SLF001
    eps_true = sample.strain_zz(x, y, z)
    reg = region & maps.mask
    d = (maps.eps_zz - eps_true)[reg]
    rmse = float(np.sqrt(np.mean(d ** 2)))
    layer, bulk = reg & (y > 0.1e-6), reg & (y < -0.1e-6)
    step = float(np.mean(maps.eps_zz[layer]) - np.mean(maps.eps_zz[bulk]))
    print(f"Poisson ({counts:.3g} photons/position): strain RMSE {rmse:.3g} (offset {d.mean():.2g}) on "
          f"{int(reg.sum())} voxels; layer step {step:.3g} (true 3e-4; {int(layer.sum())}/{int(bulk.sum())} voxels)")
    assert reg.sum() > 300
    assert rmse <= 1e-4
    assert abs(step - 3e-4) < 0.5e-4


def test_poisson_joint_probe_with_seed_background_update(geometry):
    """Item 3 with the probe unknown (σ = 60 nm Gaussian start) and the seed's b = 0.1, γ = 0.1, μ = 0.02.

    The simulator has no background; Eq 11 still lets b grow where the model under-predicts
    (mean b ≈ 150 photons against ≈ 7000 per pixel); strain and layer step are unaffected.
    """
    sample = CrystalSample(slab=_slab(), implanted_layer=ImplantedLayer(strain=3e-4, depth_m=1.8e-6,
                                                                        edge_width_m=50e-9))
    p = simulate(sample, geometry=geometry, probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6), noise_seed=1)
    recipe = Recipe(n_epie_iterations=150, n_ml_iterations=40, support=NO_SHRINKWRAP,
                    ml=MLOptions(noise_model="poisson"))
    r = _run(p, gaussian_p2(geometry, 0.06e-6), recipe)
    tru, _, lit = _regions(p, r)
    res = r.result()
    maps = strain_from_geometry(res.object, geometry, options=StrainOptions(remove_ramp=False, amplitude_threshold=0.3))
    x, y, z = p.lab_coordinates(res.object.shape, r._grid.origin_vox)  # noqa: SLF001
    reg = binary_erosion(lit & (np.abs(tru) > 0.9), iterations=1) & maps.mask
    d = (maps.eps_zz - sample.strain_zz(x, y, z))[reg]
    rmse = float(np.sqrt(np.mean(d ** 2)))
    step = float(np.mean(maps.eps_zz[reg & (y > 0.1e-6)]) - np.mean(maps.eps_zz[reg & (y < -0.1e-6)]))
    pe = probe_error(res.probe, p.probe_p2, intensity_weighted=True).error
    print(f"Poisson, joint probe: strain RMSE {rmse:.3g} (offset {d.mean():.2g}), layer step {step:.3g}, "
          f"E_P {pe:.4f}, mean b {res.background.mean():.3g}")
    assert rmse <= 1e-4
    assert abs(step - 3e-4) < 0.5e-4
    assert pe < JOINT_MAX_PROBE_ERROR


def test_poisson_dislocation_vortex_where_simulated(geometry):
    """Issue 3 item 3: a Q·b = 2π dislocation along y; the phase winds once around its line only there.

    ρ = s e^{−iQ·u} and Q·u winds by +2π right-handed about ξ̂ = ŷ = e2, i.e. from e3 to e1,
    so arg ρ̂ winds by −2π on a loop in the (e3, e1) plane around the core.
    """
    core_m = (0.0, 0.0, 0.0)
    sample = CrystalSample(slab=_slab(), dislocations=(Dislocation(point_m=core_m, line_direction=(0.0, 1.0, 0.0),
                                                                   burgers_m=(0.0, 0.0, D220_W_M)),))
    p, r, _ = _poisson_run(sample, geometry, seed=2)
    rho = r.result().object
    org = r._grid.origin_vox  # noqa: SLF001
    core = np.rint(org).astype(int)           # object voxel of r = 0

    def winding(c1: int, c2: int, c3: int, h: int = 2) -> int:
        # counter-clockwise in the (e3, e1) plane (e3 horizontal, e1 vertical), points (n1, n3)
        loop = ([(c1 + k, c3 + h) for k in range(-h, h)] + [(c1 + h, c3 - k) for k in range(-h, h)]
                + [(c1 - k, c3 - h) for k in range(-h, h)] + [(c1 - h, c3 + k) for k in range(-h, h)])
        ph = np.angle([rho[a, c2, b] for a, b in loop])
        return int(np.rint(np.sum(np.angle(np.exp(1j * np.diff(np.append(ph, ph[0]))))) / (2 * np.pi)))

    at_core = [winding(core[0], core[1] + dy, core[2]) for dy in (-2, 0, 2)]
    # ±(7, 0, 4) voxels is x ≈ ±0.26 µm at z ≈ ±0.02 µm: inside the lit crystal, away from the line
    away = [winding(core[0] + s * 7, core[1], core[2] + s * 4) for s in (-1, 1)]
    print(f"dislocation: winding numbers at the core (y = -2, 0, +2 voxels) {at_core}, 0.26 µm away {away}")
    assert at_core == [-1, -1, -1]
    assert away == [0, 0]
