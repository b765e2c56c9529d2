"""One reconstruction pipeline (issue 18): ``pxm reconstruct`` and the live final result call the same
:func:`analysis.bragg.reconstruct` and give the same object, probe and strain on the same frames; the
:class:`analysis.bragg.BraggScan` they both build is validated once, with one-line errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg import BraggScan, Outcome
from analysis.bragg.recipes import quick_recipe, schedule_iterations
from analysis.dataset import BraggDataset, read_results, write_dataset
from analysis.geometry import DetectorLayout, Roi, seed_geometry
from devices.sim_beamline import make_sim_beamline
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from pxm.cli import main
from pxm.live import LiveOptions, LiveReconstructionCallback

SAMPLE = {"name": "W-one-pipeline", "material": "W", "thickness_m": 0.45e-6}


@pytest.fixture(scope="module")
def geom():
    """seed W(220) geometry cut to 32 × 32 px and 5 angles, U = 1 (as tests/system/test_live.py)."""
    return seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)


def _scan(geom, **kw):
    rng = np.random.default_rng(0)
    args = dict(geometry=geom, frames=rng.poisson(2.0, (4, geom.n_angles, geom.n_rows_px, geom.n_cols_px)),
                mask=np.ones((geom.n_rows_px, geom.n_cols_px), bool),
                stage_xyz_m=np.column_stack([np.arange(4) * 1e-7, np.zeros(4), np.zeros(4)]),
                rocking_offsets_deg=(np.arange(geom.n_angles) - geom.n_angles // 2) * geom.rocking_step_deg)
    args.update(kw)
    return BraggScan(**args)


# ------------------------------------------------------------------------------------------ BraggScan
def test_bragg_scan_normalises_and_freezes_its_arrays(geom):
    s = _scan(geom)
    assert s.frames.dtype == np.float32 and s.mask.shape == (geom.n_angles, 32, 32)
    assert s.n_positions == 4 and s.n_angles == geom.n_angles and not s.is_share
    for a in (s.frames, s.mask, s.stage_xyz_m, s.rocking_offsets_deg):
        assert not a.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.frames = s.frames                                            # type: ignore[misc]
    half = s.with_frames(np.zeros_like(s.frames))
    assert half.frames.sum() == 0 and half.geometry is s.geometry


@pytest.mark.parametrize(("change", "message"), [
    (dict(frames=np.zeros((4, 3, 32, 32))), r"BraggScan\.frames: shape \(4, 3, 32, 32\), expected \(POS, 5, 32, 32\)"),
    (dict(frames=-np.ones((4, 5, 32, 32))), r"BraggScan\.frames: 20480 negative counts; subtract dark frames"),
    (dict(frames=np.full((4, 5, 32, 32), np.nan)), r"BraggScan\.frames: NaN or inf in measured frames; mask"),
    (dict(frames=np.ones((4, 5, 32, 32), complex)), r"BraggScan\.frames: dtype complex128; store real photon"),
    (dict(mask=np.ones((32, 32))), r"BraggScan\.mask: dtype float64; pass a bool array"),
    (dict(mask=np.ones((4, 32, 32), bool)), r"BraggScan\.mask: shape \(4, 32, 32\); pass \(32, 32\) or \(5, 32, 32\)"),
    (dict(stage_xyz_m=np.zeros((3, 3))), r"BraggScan\.stage_xyz_m: shape \(3, 3\); pass \(4, 3\) finite"),
    (dict(rocking_offsets_deg=np.arange(5) * 0.01), r"BraggScan\.rocking_offsets_deg: steps .* differ from the "
                                                    r"geometry's rocking_step_deg = 0\.005; fix the geometry"),
    (dict(rocking_offsets_deg=np.zeros(4)), r"BraggScan\.rocking_offsets_deg: shape \(4,\); pass \(5,\) finite"),
    (dict(frame_valid=np.ones((4, 5), int)), r"BraggScan\.frame_valid: shape \(4, 5\) dtype int64; pass bool"),
    (dict(positions=np.array([0, 2, 1, 3])), r"BraggScan\.positions: .* pass 4 increasing global position"),
    (dict(positions=np.array([0, 2, 4, 6])), r"BraggScan\.positions: index 6 outside the 4 positions"),
    (dict(geometry="seed"), r"BraggScan\.geometry: got str; pass an analysis\.geometry\.BraggGeometry"),
])
def test_bad_scans_are_one_line_errors_naming_field_and_fix(geom, change, message):
    with pytest.raises(ValueError, match=message) as info:
        _scan(geom, **change)
    assert "\n" not in str(info.value)


def test_invalid_frames_may_hold_anything_and_shares_keep_every_position(geom):
    fv = np.ones((4, geom.n_angles), bool)
    fv[1, 2] = False
    frames = np.ones((4, geom.n_angles, 32, 32))
    frames[1, 2] = np.nan                                              # an unmeasured frame: not validated
    assert _scan(geom, frames=frames, frame_valid=fv).frame_valid[1, 2] == np.False_
    share = _scan(geom, frames=np.ones((2, geom.n_angles, 32, 32)), positions=np.array([1, 3]))
    assert share.is_share and share.n_positions == 4 and list(share.positions) == [1, 3]


def test_scan_of_a_dataset_and_its_errors(geom):
    n_pos = 3
    ang = np.broadcast_to(geom.theta_bragg_deg + (np.arange(5) - 2) * geom.rocking_step_deg, (n_pos, 5))
    pos = np.zeros((n_pos, 5, 3))
    pos[:, :, 0] = np.arange(n_pos)[:, None] * 1e-7
    ds = BraggDataset(frames=np.ones((n_pos, 5, 32, 32), np.uint16), rocking_angle_deg=ang, stage_position_m=pos,
                      detector_mask=np.ones((32, 32), bool), geometry=geom, sample=SAMPLE, provenance={"x": 1})
    s = BraggScan.from_dataset(ds, source="d.h5")
    np.testing.assert_allclose(s.stage_xyz_m[:, 0], np.arange(n_pos) * 1e-7)
    np.testing.assert_allclose(s.rocking_offsets_deg, (np.arange(5) - 2) * geom.rocking_step_deg, atol=1e-12)
    assert s.sample["thickness_m"] == 0.45e-6 and s.provenance == {"x": 1} and s.source == "d.h5"
    moving = pos.copy()
    moving[0, 3, 0] += 50e-9
    with pytest.raises(ValueError, match="moves by 40.0 nm between angles"):
        BraggScan.from_dataset(dataclasses.replace(ds, stage_position_m=moving))
    flat = BraggDataset(frames=np.ones((2, 32, 32)), rocking_angle_deg=ang[0, :2], stage_position_m=pos[0, :2],
                        detector_mask=np.ones((32, 32), bool), geometry=geom, position_index=np.array([0, 0]),
                        angle_index=np.array([0, 1]))
    with pytest.raises(ValueError, match="flat layout .* needs every position at every angle"):
        BraggScan.from_dataset(flat)


# ------------------------------------------------------------------------------------------ CLI == live
def test_cli_and_live_final_result_are_the_same_reconstruction(RE, tmp_path, capsys):
    """A simulated scan through the live callback (final result only, sample-resolved support, strain with the
    ramp removed as pxm reconstruct does), then its frames and read-backs as a dataset file through
    ``pxm reconstruct --recipe quick``: the same object, probe, background and strain maps, bit for bit, and the
    same metrics (measured: identical; the stage positions are averaged in another order and still agree)."""
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    geom = seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=12, rocking_step_deg=0.005, upsampling=1)
    layout = DetectorLayout()
    src = BraggSimulator(geom, uniform_strain_sample(strain=-2e-4), KBProbe(energy_kev=8.0), layout=layout,
                         flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05)
    bl = make_sim_beamline(src, geometry=geom, data_dir=tmp_path / "raw", roi=Roi.centred(layout, 32, 32),
                           exposure_s=0.2, simulate_exposure=False, seed=7)
    recipe = schedule_iterations(quick_recipe(), n_epie_iterations=8, n_ml_iterations=2)   # --iterations 8 --ml 2
    cb = LiveReconstructionCallback(options=LiveOptions(recipe=recipe, reconstruct_live=False,
                                                        sample_support=True, strain_remove_ramp=True,
                                                        backend="numpy"))
    RE.subscribe(cb)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=raster_positions_um(3, 3, 0.1),
                           angles_deg=angles, sample=SAMPLE, exposure_s=0.2, order="angle_outer"))
    cb.wait(120)
    s = cb.sessions[0]
    live = s.final_result
    assert s.final_error is None and isinstance(live["outcome"], Outcome)
    assert live["outcome"].recipe.support.thickness_schedule_m == ((0, 0.45e-6),)      # from the start's sample

    g = s.grid                                       # the same frames, with their own per-frame read-backs
    assert g.measured.all() and g.frames is not None
    stage = np.zeros(g.readback_xy_um.shape[:2] + (3,))
    stage[..., :2] = g.readback_xy_um * 1e-6
    ds = BraggDataset(frames=g.frames, rocking_angle_deg=g.readback_theta_deg, stage_position_m=stage,
                      detector_mask=s.mask, geometry=s.info.geometry, sample=s.info.start["sample"],
                      provenance={"raw_uid": s.info.uid})
    write_dataset(tmp_path / "dataset.h5", ds, compression=None)
    assert main(["reconstruct", str(tmp_path / "dataset.h5"), "-o", str(tmp_path / "r.h5"), "--recipe", "quick",
                 "--iterations", "8", "--ml", "2", "--backend", "numpy", "--no-progress"]) == 0
    assert "support: slab" in capsys.readouterr().out
    cli = read_results(tmp_path / "r.h5")

    def same(a, b):                                  # bit for bit: one function, one process, the same inputs
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    for key in ("object", "probe", "background"):
        same(cli[key], live[key])
    maps = cli["strain"]["reconstruction"]
    for mine, theirs in (("eps_zz", "strain_zz"), ("omega_x_rad", "omega_x"), ("omega_y_rad", "omega_y")):
        same(getattr(maps, mine), live[theirs])
    np.testing.assert_array_equal(np.asarray(maps.mask), np.asarray(live["strain_maps"].mask))
    same(cli["error_history"], live["error"])
    for key in ("initial_probe_scale", "r_factor_initial", "r_factor_epie", "r_factor_ml", "final_cost",
                "valid_strain_voxels", "support_voxels", "n_positions", "n_angles"):
        assert cli["metrics"][key] == live["metrics"][key], key
    assert cli["metrics"]["converged"] == live["metrics"]["converged"]


# ------------------------------------------------------------------------------------------ tests' problems
def test_pipeline_on_a_test_factory_problem_is_the_engine_plus_post_processing(tmp_path):
    """The tests' problem factory as a BraggScan: :func:`analysis.bragg.reconstruct` gives exactly the engine's
    result driven by hand, and its Outcome goes to the results file in two stages without being read back."""
    from analysis.bragg import PipelineOptions, reconstruct, write_outcome
    from analysis.bragg.engine import Reconstruction
    from analysis.bragg.outcome import finish_results
    from analysis.bragg.solvers.options import Execution
    from testing.bragg_problem import engine_inputs, make_problem, scan_of

    problem = make_problem()
    kw = engine_inputs(problem)
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True)
    scan = dataclasses.replace(scan_of(problem), sample={"name": "factory"})
    seen = []
    out = reconstruct(scan, recipe, kw["probe"],
        options=PipelineOptions(execution=Execution(backend="numpy")), checkpoint=seen.append)
    by_hand = Reconstruction(**kw, recipe=recipe).iterate(recipe.n_iterations)
    np.testing.assert_array_equal(out.object, by_hand.result().object)
    np.testing.assert_array_equal(out.probe, by_hand.result().probe)
    assert out.metrics["initial_probe_scale"] == by_hand.initial_probe_scale != 1.0   # scaled once, by the engine
    assert len(seen) == 1 and seen[0].strain is None and out.strain is not None       # checkpoint before strain
    assert out.provenance["sample_name"] == "factory" and out.sample == {"name": "factory"}
    assert set(out.strain_arrays()) == {"strain_zz", "omega_x", "omega_y"} and out.status == "complete"
    path = tmp_path / "r.h5"
    assert write_outcome(seen[0], path) == {}
    assert read_results(path)["status"] == "iterations complete"
    errors = write_outcome(out, path, stage="postprocessing")
    finish_results(path, errors)
    r = read_results(path)
    assert r["status"] == "complete" and set(r["strain"]) == {"reconstruction"}
    np.testing.assert_array_equal(r["object"], out.object)
    assert r["metrics"]["valid_strain_voxels"] == out.metrics["valid_strain_voxels"]
