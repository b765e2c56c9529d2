"""`pxm reconstruct --probe-run UID`: the probe's source names the spiral run by Tiled key and uid, never the
temporary probe file it went through (deleted afterwards); issue 17 point 3, docs/tiled-layout.md."""

from __future__ import annotations

import uuid

from analysis.dataset import read_results, write_dataset
from pxm.cli import EXIT_POSTPROCESSING_FAILED, main
from testing.bragg_problem import dataset_of, make_problem


def test_probe_run_source_is_the_spiral_runs_key_and_uid(tiled_service, tiled_layout, tmp_path, capsys):
    from pxm.runengine import make_run_engine, run_uids
    from testing.spiral_scan import spiral_beamline, spiral_plan

    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    fwd, geom = spiral_beamline(raw_dir)
    wiring = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=fwd.monitor.current)
    (uid,) = run_uids(wiring.RE(spiral_plan(fwd, geom)))
    dataset = tmp_path / "dataset.h5"
    write_dataset(dataset, dataset_of(make_problem(n_angles=6, n_side=3)))
    out = tmp_path / "results.h5"
    rc = main(["reconstruct", str(dataset), "--probe-run", uid, "--tiled-uri", tiled_service.uri, "--api-key",
               tiled_service.config.api_key, "-o", str(out), "--recipe", "quick", "--iterations", "2",
               "--allow-undersampled", "--no-progress"])      # the tiny problem is simulated with the model
    # 2 sweeps on a tiny slab may leave no strain interior (a post-processing warning): the results file is complete
    assert rc in (0, EXIT_POSTPROCESSING_FAILED), capsys.readouterr().err
    source = read_results(out)["provenance"]["probe_source"]
    assert source.startswith(f"spiral run raw/{uid} (Tiled key; uid {uid})"), source
    assert "pxm-reconstruct-" not in source and "probe.h5" not in source and "file " not in source
    assert f"probe: spiral run raw/{uid}" in capsys.readouterr().out
