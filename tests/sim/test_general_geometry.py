"""The simulator's direct-summation route in a general geometry agrees with the engine's model (issue 19)."""

import dataclasses
import math

import numpy as np
import pytest

from analysis.bragg.operators.fourier import ShearedFourier3D
from analysis.diffractometer import asymmetric_out_of_plane, native_sample_coordinates_m
from analysis.geometry import BraggGeometry
from sim.general_geometry import GeneralBraggSimulator
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from testing.bragg_sim import small_probe

N_ANGLES = 10


@pytest.fixture(scope="module")
def case():
    d = asymmetric_out_of_plane(rocking_step_deg=0.012, detector_distance_m=0.35)
    sample = CrystalSample(slab=Slab(thickness_m=0.25e-6, tilt_x_deg=0.0, tilt_y_deg=0.0),
                           homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    sim = GeneralBraggSimulator(diffractometer=d, sample=sample, probe=small_probe(extent_m=0.6e-6),
                                n_rows_px=20, n_cols_px=20, step_m=20e-9, half_extent_m=(0.45e-6,) * 3)
    offsets = (np.arange(N_ANGLES) - N_ANGLES // 2) * d.rocking_step_deg
    amp = np.stack([sim.amplitude(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=float(a)) for a in offsets], axis=2)
    return sim, amp


def _engine(sim: GeneralBraggSimulator, g: BraggGeometry) -> np.ndarray:
    """The engine's model: exit wave P·ρ on the native grid through the sheared transform."""
    r = native_sample_coordinates_m(g, g.recon_shape)
    psi = (sim.probe_field(r) * sim.object_field(r)).astype(complex)
    return ShearedFourier3D.from_geometry(g).forward(psi) * np.prod(g.voxel_size_m) * math.sqrt(psi.size)


def _residuals(a: np.ndarray, e: np.ndarray) -> tuple[float, float, complex]:
    c = np.vdot(e, a) / np.vdot(e, e)
    ia, ie = np.abs(a) ** 2, np.abs(c * e) ** 2
    return float(np.linalg.norm(a - c * e) / np.linalg.norm(a)), float(np.linalg.norm(ia - ie) / np.linalg.norm(ia)), c


def test_direct_summation_agrees_with_the_engine_model_out_of_plane(case):
    sim, amp = case
    g = sim.geometry(n_angles=N_ANGLES)
    assert abs(g.rocking_direction[1]) > 0.1 and g.recon_shape[1] > g.n_cols_px   # shear along e1 and e2
    field, intensity, c = _residuals(amp, _engine(sim, g))
    assert intensity < 0.08, intensity
    assert field < 0.25, field
    assert abs(c) == pytest.approx(1.0, abs=0.1)           # same absolute scale (m², probe in 1/m)


def test_the_engine_without_the_e2_shear_disagrees(case):
    sim, amp = case
    g = sim.geometry(n_angles=N_ANGLES)
    u1, _, u3 = g.rocking_direction
    n = math.hypot(u1, u3)
    wrong = dataclasses.replace(g, frame=dataclasses.replace(g.frame, rocking_direction=(u1 / n, 0.0, u3 / n)))
    _, intensity, _ = _residuals(amp, _engine(sim, wrong))
    assert intensity > 0.3, intensity


def test_bad_simulator_input_names_the_problem():
    d = asymmetric_out_of_plane()
    with pytest.raises(ValueError, match="same energy"):
        GeneralBraggSimulator(diffractometer=d, sample=CrystalSample(), probe=small_probe().__class__(energy_kev=9.0),
                              n_rows_px=8, n_cols_px=8)
    sim = GeneralBraggSimulator(diffractometer=d, sample=CrystalSample(), probe=small_probe(), n_rows_px=4,
                                n_cols_px=4, half_extent_m=(0.1e-6,) * 3)
    with pytest.raises(ValueError, match="metres"):
        sim.amplitude(stage_xyz_m=(1.0, 0.0, 0.0), rocking_offset_deg=0.0)


def test_frame_source_gives_poisson_counts_of_the_amplitude(case):
    sim, amp = case
    big = dataclasses.replace(sim, flux_ph_per_s=1e10)
    rng = np.random.default_rng(0)
    counts = big.frame(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0, detector_arm_offset_deg=0.0,
                       exposure_s=1.0, flux_scale=1.0, roi=None, rng=rng)
    assert counts.dtype == np.uint32 and counts.shape == big.detector_shape
    ref = np.abs(amp[:, :, N_ANGLES // 2]) ** 2
    assert np.corrcoef(counts.ravel(), ref.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="overflow"):
        dataclasses.replace(sim, flux_ph_per_s=1e14).frame(
            stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0, detector_arm_offset_deg=0.0, exposure_s=1.0,
            flux_scale=1.0, roi=None, rng=rng)
    with pytest.raises(ValueError, match="arm"):
        big.frame(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0, detector_arm_offset_deg=0.1,
                  exposure_s=1.0, flux_scale=1.0, roi=None, rng=rng)


def test_sim_devices_and_the_bragg_plan_run_a_general_geometry(RE, tmp_path):
    from devices.sim_beamline import make_sim_beamline
    from plans.bragg import raster_rocking_scan
    from plans.patterns import raster_positions_um, rocking_angles_deg
    from testing.plan_checks import DocCollector

    d = asymmetric_out_of_plane(rocking_step_deg=0.012, detector_distance_m=0.35)
    sim = GeneralBraggSimulator(diffractometer=d, sample=CrystalSample(), probe=small_probe(extent_m=0.6e-6),
                                n_rows_px=8, n_cols_px=8, step_m=25e-9, half_extent_m=(0.4e-6,) * 3)
    g = sim.geometry(n_angles=5)
    bl = make_sim_beamline(sim, geometry=g, data_dir=tmp_path / "raw", exposure_s=0.001)
    assert bl.gonio.eta.position == pytest.approx(30.0)                # η, not θ_B = 40.47°
    pos = raster_positions_um(2, 1, 0.1)
    ang = rocking_angles_deg(g.rocking_centre_deg, g.rocking_step_deg, g.n_angles)
    docs = DocCollector()
    RE.subscribe(docs)
    RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=g, positions_um=pos, angles_deg=ang,
                           sample={"name": "general", "material": "W", "thickness_m": 0.45e-6}, exposure_s=0.001))
    (start,) = docs.of("start")
    md = start["geometry"]["diffractometer"]
    assert md["sample_circles"] == ["x+", "z+"] and md["detector_angles_deg"] == [25.0, 80.0]
    assert np.allclose(start["pattern"]["rocking_offsets_deg"], ang - 30.0)
    assert BraggGeometry.from_metadata(start["geometry"]).frame == g.frame
    calls = bl.backend.calls
    assert len(calls) == 10 and all(c["detector_arm_offset_deg"] == pytest.approx(0.0, abs=1e-9) for c in calls)
    assert sorted({round(c["rocking_offset_deg"], 6) for c in calls}) == pytest.approx(ang - 30.0)
    assert sum(c["frame_sum"] for c in calls) > 0


def test_nufft_and_direct_routes_equal_the_brute_force_sum_over_the_whole_box():
    """Both summations, over the cropped non-zero box, equal Σ_r P ρ e^{−i(q−Q)·r} δ³ over the whole box."""
    d = asymmetric_out_of_plane(rocking_step_deg=0.012, detector_distance_m=0.35)
    sample = CrystalSample(slab=Slab(thickness_m=0.2e-6, tilt_x_deg=3.0, tilt_y_deg=-2.0),
                           homogeneous=HomogeneousDisplacement(strain=3e-4, tilt_x_rad=2e-4, tilt_y_rad=-1e-4))
    kw = dict(diffractometer=d, sample=sample, probe=small_probe(extent_m=0.6e-6), n_rows_px=9, n_cols_px=7,
              step_m=25e-9, half_extent_m=(0.5e-6, 0.45e-6, 0.4e-6))
    nufft = GeneralBraggSimulator(**kw)
    direct = GeneralBraggSimulator(**kw, summation="direct")
    stage, rock = (0.07e-6, -0.04e-6, 0.01e-6), 0.018
    # brute force: every grid point of the whole box, no factorisation, no crop
    s = np.asarray(stage)
    axes = [np.arange(-h, h + 25e-9 / 2, 25e-9) - c for h, c in zip(kw["half_extent_m"], s, strict=True)]
    r = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    w = nufft.probe_field(r + s, rock) * nufft.object_field(r)
    assert np.count_nonzero(w) < 0.5 * w.size                       # the crop has zeros to drop
    q = d.q_exact_per_m(9, 7, [rock])[0] - d.q_basis_per_m().q_bragg_per_m
    brute = (np.exp(-1j * q.reshape(-1, 3) @ r.T) @ w).reshape(9, 7) * 25e-9 ** 3
    a_direct = direct.amplitude(stage_xyz_m=stage, rocking_offset_deg=rock)
    a_nufft = nufft.amplitude(stage_xyz_m=stage, rocking_offset_deg=rock)
    scale = np.abs(brute).max()
    assert np.abs(a_direct - brute).max() < 1e-12 * scale
    assert np.abs(a_nufft - brute).max() < 1e-10 * scale            # nufft_eps = 1e-12 requested
    with pytest.raises(ValueError, match="summation"):
        GeneralBraggSimulator(**kw, summation="fft")
