"""Whole scans under the real RunEngine into a real Tiled server process, read back by clients.

Frames come from ``devices.testing.EncodingFrameSource`` where the frame-to-position mapping
must be checked exactly (each frame carries the stage position and angle it was taken at),
and from the physics simulator where the physics matters.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import h5py
import numpy as np
import pytest
from bluesky import RunEngineInterrupted

from analysis.geometry import BraggGeometry, DetectorLayout, Roi
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource, HookedFrameSource, decode_frame
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg, rocking_curve_align
from pxm.runengine import BeamSuspenderOptions, make_run_engine

SAMPLE = {"name": "W-foil-test", "material": "W"}


@pytest.fixture
def geometry() -> BraggGeometry:
    return BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=16,
                         n_cols_px=16, n_angles=9, rocking_step_deg=0.005, bragg_angle_deg=43.9, hkl=(2, 2, 0))


@pytest.fixture
def raw_dir(tiled_service):
    d = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    return d


def _scan(bl, geometry, n_raster, order="angle_outer"):
    positions = raster_positions_um(n_raster, n_raster, 0.1, jitter_fraction=0.15, seed=3)
    angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    plan = raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geometry, positions_um=positions,
                               angles_deg=angles, sample=SAMPLE, exposure_s=0.001, order=order,
                               monitors=[bl.monitor])
    return plan, positions, angles


def _check_run(run, bl, geometry, n_events):
    """Tiled frames == HDF5 frames, one per event, each taken where the event says."""
    frames = run["primary"]["mpx_image"][:]
    assert frames.shape == (n_events, 16, 16)
    with h5py.File(bl.detector.file_path, "r") as f:
        np.testing.assert_array_equal(frames, f["/entry/data/data"][()])
        assert int(f["/entry/pxm/complete"][()]) == 1
    table = run["primary"].read()
    x_um = np.asarray(table["stage_x"]).ravel()
    y_um = np.asarray(table["stage_y"]).ravel()
    theta = np.asarray(table["gonio_theta"]).ravel()
    for i in range(n_events):
        d = decode_frame(frames[i])
        assert d["x_um"] == pytest.approx(x_um[i], abs=1.5e-3)
        assert d["y_um"] == pytest.approx(y_um[i], abs=1.5e-3)
        assert d["rocking_offset_deg"] == pytest.approx(theta[i] - geometry.theta_bragg_deg, abs=2e-6)
        assert d["flux_scale"] > 0.5, f"frame {i} was taken without beam"
    return frames


def test_scan_lands_in_tiled_and_frames_match_positions(tiled_layout, raw_dir, geometry, tmp_path):
    _, raw, _ = tiled_layout
    bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geometry, data_dir=raw_dir, exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=bl.monitor.current)
    plan, positions, angles = _scan(bl, geometry, 5)
    (uid,) = w.RE(plan)
    run = raw[uid]
    _check_run(run, bl, geometry, 25 * 9)
    start = run.metadata["start"]
    assert start["geometry"]["energy_kev"] == 8.0
    assert run.metadata["stop"]["exit_status"] == "success"
    # the exact documents are on disk too (offline replay, no data lost if Tiled is down)
    lines = (tmp_path / "docs" / f"{uid}.jsonl").read_text().splitlines()
    names = [json.loads(line)["name"] for line in lines]
    n_events = sum(len(json.loads(line)["doc"]["seq_num"]) for line in lines
                   if json.loads(line)["name"] == "event_page")
    assert names[0] == "start" and names[-1] == "stop" and n_events == 225


def test_databroker_reads_the_same_frames(tiled_layout, raw_dir, geometry, tmp_path):
    from bluesky_tiled_plugins.clients.bluesky_run import BlueskyRun
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH

    _, raw, _ = tiled_layout
    bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geometry, data_dir=raw_dir, exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs")
    plan, _, _ = _scan(bl, geometry, 2)
    (uid,) = w.RE(plan)
    try:
        ds = raw[uid].v2.primary.read()             # databroker-2 (v2) API
        with h5py.File(bl.detector.file_path, "r") as f:
            np.testing.assert_array_equal(np.asarray(ds["mpx_image"]), f["/entry/data/data"][()])
    finally:  # .v2 swaps tiled's process-global client registry: later BlueskyRuns would be V2
        DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"].set("BlueskyRun", lambda: BlueskyRun)


def test_pause_and_resume_keep_frames_aligned_in_tiled(tiled_layout, raw_dir, geometry, tmp_path):
    _, raw, _ = tiled_layout
    holder = {}

    def pause(kw):
        holder["w"].RE.request_pause(defer=False)

    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource((16, 16)), 40, pause), geometry=geometry,
                           data_dir=raw_dir, exposure_s=0.001)
    holder["w"] = w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs")
    plan, _, _ = _scan(bl, geometry, 3, order="raster_outer")
    with pytest.raises(RunEngineInterrupted):
        w.RE(plan)
    assert w.RE.state == "paused"
    (uid,) = w.RE.resume()
    assert len(bl.backend.calls) == 82               # the interrupted point was taken again
    _check_run(raw[uid], bl, geometry, 81)


def test_beam_dump_suspends_and_tiled_serves_the_right_frames(tiled_layout, raw_dir, geometry, tmp_path):
    _, raw, _ = tiled_layout
    holder = {}

    def dump(kw):
        bl = holder["bl"]
        bl.monitor.dump()
        threading.Timer(0.3, bl.monitor.refill).start()
        time.sleep(0.05)
        return {**kw, "flux_scale": 0.0}             # this frame is taken without beam

    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource((16, 16)), 30, dump), geometry=geometry,
                           data_dir=raw_dir, exposure_s=0.001)
    holder["bl"] = bl
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=bl.monitor.current,
                        suspender=BeamSuspenderOptions(floor_ma=50, resume_ma=150, sleep_s=0.05))
    plan, _, _ = _scan(bl, geometry, 3)
    (uid,) = w.RE(plan)
    assert len(bl.backend.calls) >= 82
    _check_run(raw[uid], bl, geometry, 81)           # no beamless frame survived


def test_tiled_down_mid_scan_loses_no_data(raw_dir, geometry, tmp_path):
    """Tiled dies during the scan: the scan completes, every frame is in HDF5, every document in JSONL."""
    from pxm.catalog import TiledServerConfig, TiledService, ensure_layout

    service = TiledService(TiledServerConfig(data_dir=tmp_path / "tiled2", raw_dir=raw_dir,
                                             api_key="pxmtestkey0123456789"))
    service.start()
    raw, _ = ensure_layout(service.client())

    def kill(kw):
        service.stop()

    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource((16, 16)), 5, kill), geometry=geometry,
                           data_dir=raw_dir, exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs")
    plan, _, _ = _scan(bl, geometry, 2)
    try:
        (uid,) = w.RE(plan)
    finally:
        service.stop()
    with h5py.File(bl.detector.file_path, "r") as f:
        assert f["/entry/data/data"].shape[0] == 36
        assert int(f["/entry/pxm/complete"][()]) == 1
    docs = [json.loads(line) for line in (tmp_path / "docs" / f"{uid}.jsonl").read_text().splitlines()]
    assert sum(len(d["doc"]["seq_num"]) for d in docs if d["name"] == "event_page") == 36
    assert docs[-1]["name"] == "stop"
    backup = list((tmp_path / "docs" / "tiled-backup").glob("*.jsonl"))
    assert backup, "TiledWriter kept no backup of the documents it could not write"


def test_simulated_crystal_scan_in_tiled(tiled_layout, raw_dir, tmp_path):
    """The physics simulator behind the devices: Bragg signal in the frames Tiled serves."""
    from analysis.geometry import seed_geometry
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    geom = seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)
    layout = DetectorLayout()
    sim = BraggSimulator(geom, uniform_strain_sample(strain=0.0), KBProbe(energy_kev=8.0), layout=layout,
                         flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05)
    roi = Roi.centred(layout, 32, 32)   # on the Bragg peak (crosses the chip gaps)
    _, raw, _ = tiled_layout
    bl = make_sim_beamline(sim, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=0.2,
                           simulate_exposure=False, seed=5)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs")
    positions = raster_positions_um(2, 2, 0.1)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=positions,
                                      angles_deg=angles, sample=SAMPLE, exposure_s=0.2))
    frames = raw[uid]["primary"]["mpx_image"][:]
    with h5py.File(bl.detector.file_path, "r") as f:
        np.testing.assert_array_equal(frames, f["/entry/data/data"][()])
    assert frames.shape == (20, 32, 32) and frames.dtype == np.uint32
    background_total = 0.05 * 0.2 * 32 * 32
    assert frames.sum(axis=(1, 2)).min() > 100 * background_total   # a real Bragg signal on every frame


def test_alignment_finds_the_crystal_misorientation(tiled_layout, raw_dir, tmp_path):
    """Rocking-curve alignment centres the goniometer on the simulated crystal's offset.

    The ROI must hold the whole convergent-beam cone (±NA_V ≈ ±0.021°, ±10 px), or the
    clipped rocking curve biases the centroid. The top of that curve is lumpy (aberrated
    KB pupil), so the centroid is good to about half a rocking step: 0.004° < 0.005°.
    """
    from dataclasses import replace

    from analysis.geometry import seed_geometry
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    geom = seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)
    layout = DetectorLayout()
    offset_deg = 0.012
    sample = replace(uniform_strain_sample(strain=0.0), rocking_centre_offset_deg=offset_deg)
    sim = BraggSimulator(geom, sample, KBProbe(energy_kev=8.0), layout=layout, flux_ph_per_s=1e9)
    _, raw, _ = tiled_layout
    bl = make_sim_beamline(sim, geometry=geom, data_dir=raw_dir, roi=Roi.centred(layout, 64, 64),
                           exposure_s=0.2, simulate_exposure=False)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs")
    w.RE(rocking_curve_align(bl.detector, bl.gonio, centre_deg=geom.theta_bragg_deg, step_deg=0.004,
                             n_angles=15, exposure_s=0.2, md={"sample": SAMPLE}))
    assert bl.gonio.theta.position - geom.theta_bragg_deg == pytest.approx(offset_deg, abs=0.004)
