"""`pxm reconstruct --probe-run UID`: the probe's source names the spiral run by Tiled key and uid, never the
temporary probe file it went through (deleted afterwards); issue 17 point 3, docs/tiled-layout.md."""

from __future__ import annotations

import uuid

from analysis.dataset import read_results, write_dataset
from pxm.cli import EXIT_POSTPROCESSING_FAILED, main
from testing.bragg_problem import dataset_of, make_problem


def test_probe_run_source_is_the_spiral_runs_key_and_uid(tiled_service, tiled_layout, tmp_path, capsys):
    from analysis.geometry import DetectorLayout, Roi
    from devices.sim_beamline import make_sim_beamline
    from plans import spiral_probe_scan
    from pxm.demo import DemoOptions, demo_geometry, demo_probe
    from pxm.runengine import make_run_engine, run_uids
    from sim import SiemensStar, TransmissionSimulator

    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    opts = DemoOptions()
    geom = demo_geometry(opts)
    layout = DetectorLayout()
    sim = TransmissionSimulator(demo_probe(opts, geom.energy_kev), SiemensStar(energy_kev=geom.energy_kev),
                                energy_kev=geom.energy_kev, detector_distance_m=geom.detector_distance_m,
                                layout=layout, flux_ph_per_s=opts.flux_ph_per_s)
    fwd = make_sim_beamline(sim, geometry=geom, data_dir=raw_dir, roi=Roi.centred(layout, 64, 64), exposure_s=1.0,
                            simulate_exposure=False, seed=3, prefix="fwd_")
    wiring = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=fwd.monitor.current)
    (uid,) = run_uids(wiring.RE(spiral_probe_scan(fwd.detector, fwd.stage, n_points=12, step_um=0.1, exposure_s=1.0,
                                                  energy_kev=geom.energy_kev,
                                                  detector_distance_m=geom.detector_distance_m,
                                                  sample={"name": "Siemens star (simulated)"})))
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
