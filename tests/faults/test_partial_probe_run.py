"""``pxm probe RUN`` refuses a partial spiral run unless ``--allow-partial``, as ``pxm export`` does (issue 15).

The spiral scan here fails after 5 of its 12 frames (a device error raised in the plan), so the run in
Tiled has a stop document with ``exit_status`` ``fail`` and 7 frames missing.
"""

from __future__ import annotations

import uuid

import h5py
import pytest

from pxm.cli import main

N_POINTS, N_TAKEN = 12, 5


@pytest.fixture(scope="module")
def partial_spiral_uid(tiled_service, tiled_layout, tmp_path_factory):
    """A 12-point Siemens-star spiral that failed after 5 frames (64 × 64 px)."""
    from bluesky.preprocessors import msg_mutator

    from pxm.runengine import ScanInterrupted, make_run_engine, run_plan
    from testing.spiral_scan import spiral_beamline, spiral_plan

    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    fwd, geom = spiral_beamline(raw_dir)
    docs_dir = tmp_path_factory.mktemp("partial-spiral-docs")
    wiring = make_run_engine(raw_catalog=raw, documents_dir=docs_dir, beam_signal=fwd.monitor.current)
    saves = []

    def fail_after_five(msg):
        if msg.command == "save":
            saves.append(msg)
        if msg.command == "trigger" and len(saves) == N_TAKEN:
            raise RuntimeError("simulated detector fault after 5 frames")
        return msg

    plan = spiral_plan(fwd, geom, n_points=N_POINTS)
    with pytest.raises(ScanInterrupted) as info:
        run_plan(wiring.RE, msg_mutator(plan, fail_after_five), documents_dir=docs_dir)
    assert info.value.exit_status == "fail"
    return info.value.uid


def test_probe_of_a_partial_spiral_run_is_refused_with_the_missing_frames(tiled_service, partial_spiral_uid,
                                                                           tmp_path, capsys):
    out = tmp_path / "probe.h5"
    rc = main(["probe", partial_spiral_uid, "--tiled-uri", tiled_service.uri, "--api-key",
               tiled_service.config.api_key, "-o", str(out), "--iterations", "2"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{N_POINTS - N_TAKEN} of {N_POINTS} frames are missing" in err and "--allow-partial" in err
    assert not out.exists()                                 # refused before any reconstruction


def test_probe_of_a_partial_spiral_run_with_allow_partial_uses_the_frames_there_are(tiled_service,
                                                                                  partial_spiral_uid, tmp_path,
                                                                                  capsys):
    out = tmp_path / "probe.h5"
    rc = main(["probe", partial_spiral_uid, "--tiled-uri", tiled_service.uri, "--api-key",
               tiled_service.config.api_key, "-o", str(out), "--iterations", "2", "--allow-partial"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        assert len(f.keys()) > 0                            # a probe file was written from the 5 frames


def _small_dataset(path):
    """A 4-position × 5-angle dataset file of 16 × 16 frames (the --probe-run step comes before its recipe)."""
    import numpy as np

    from analysis.dataset import BraggDataset, write_dataset
    from testing.bragg_sim import small_geometry

    g = small_geometry(n_px=16, n_angles=5)
    angles = np.broadcast_to(g.theta_bragg_deg + (np.arange(5) - 2) * g.rocking_step_deg, (4, 5)).copy()
    stage = np.zeros((4, 5, 3))
    stage[..., :2] = (np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float) * 1e-7)[:, None, :]
    write_dataset(path, BraggDataset(frames=np.full((4, 5, 16, 16), 3.0, np.float32), rocking_angle_deg=angles,
                                     stage_position_m=stage, detector_mask=np.ones((16, 16), bool), geometry=g,
                                     sample={"name": "test"}))
    return path


def _reconstruct_with_probe_run(tiled_service, uid, tmp_path, monkeypatch, capsys, *extra):
    """``pxm reconstruct DATASET --probe-run UID``, stopped by a marker right after the probe step."""
    def reached(*args, **kwargs):
        raise ValueError("marker: the probe step passed, the recipe is next")

    monkeypatch.setattr("pxm.recipe_args.resolve_for_dataset", reached)
    out = tmp_path / "r.h5"
    rc = main(["reconstruct", str(_small_dataset(tmp_path / "d.h5")), "--probe-run", uid, "--tiled-uri",
               tiled_service.uri, "--api-key", tiled_service.config.api_key, "-o", str(out), "--no-progress",
               *extra])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


def test_reconstruct_with_a_partial_probe_run_is_refused_with_the_line_of_pxm_probe(tiled_service,
                                                                                   partial_spiral_uid, tmp_path,
                                                                                   monkeypatch, capsys):
    from pxm.run_export import check_run_whole

    err = _reconstruct_with_probe_run(tiled_service, partial_spiral_uid, tmp_path, monkeypatch, capsys)
    assert "marker" not in err                              # refused before the forward ptychography
    run = tiled_service.client()["raw"][partial_spiral_uid]
    with pytest.raises(ValueError) as probe_line:
        check_run_whole(run, partial_spiral_uid)            # the check `pxm probe` makes, word for word
    assert err.strip() == f"pxm reconstruct: error: {probe_line.value}"
    assert f"{N_POINTS - N_TAKEN} of {N_POINTS} frames are missing" in err and "--allow-partial" in err


def test_reconstruct_with_a_partial_probe_run_and_allow_partial_takes_its_probe(tiled_service, partial_spiral_uid,
                                                                               tmp_path, monkeypatch, capsys):
    err = _reconstruct_with_probe_run(tiled_service, partial_spiral_uid, tmp_path, monkeypatch, capsys,
                                      "--allow-partial")
    assert "marker: the probe step passed" in err, err      # the forward ptychography of the 5 frames ran


def test_the_probe_step_itself_refuses_a_partial_run(tiled_service, partial_spiral_uid):
    """:func:`pxm.reconstruction.probe_from_spiral_run` (``reconstruct --probe-run``, the demo) checks on its own."""
    from pxm.reconstruction import probe_from_spiral_run

    run = tiled_service.client()["raw"][partial_spiral_uid]
    with pytest.raises(ValueError, match=f"{N_POINTS - N_TAKEN} of {N_POINTS} frames are missing"):
        probe_from_spiral_run(run, n_iterations=1)
