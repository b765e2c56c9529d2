"""Live pipeline (issue 4): RunEngine → LiveReconstructionCallback → previews and results in Tiled.

Small sizes throughout (3 × 3 raster, 5–7 angles, 16 × 16 or 32 × 32 px) and a short fixed-slab
recipe, so that the whole file runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from tiled.queries import Key

from analysis.geometry import DetectorLayout, Roi, seed_geometry
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource, HookedFrameSource
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from pxm.live import (FrameGrid, LiveOptions, LiveReconstructionCallback, jsonl_documents, live_recipe,
                      replay_documents, select_usable, tiled_documents)
from pxm.runengine import make_run_engine

SAMPLE = {"name": "W-live-test", "material": "W"}
N_EPIE = 6


@pytest.fixture(scope="module")
def geom():
    """seed W(220) geometry cut to 32 × 32 px and 5 angles, U = 1 (the engine's sampling check passes)."""
    return seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)


@pytest.fixture
def raw_dir(tiled_service):
    d = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    return d


def _sim_source(geom, strain=0.0):
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    layout = DetectorLayout()
    return BraggSimulator(geom, uniform_strain_sample(strain=strain), KBProbe(energy_kev=8.0), layout=layout,
                          flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05), Roi.centred(layout, 32, 32)


def _plan(bl, geom, order="angle_outer", n=3):
    positions = raster_positions_um(n, n, 0.1)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    return raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=positions,
                               angles_deg=angles, sample=SAMPLE, exposure_s=0.2, order=order)


def _options(**kw):
    return LiveOptions(recipe=live_recipe(N_EPIE), preview_interval_s=0.2, **kw)


def _final_node(processed, uid):
    nodes = [processed[k] for k in processed.search(Key("raw_uid") == uid)
             if processed[k].metadata.get("status") == "complete" and "object" in processed[k]]
    assert len(nodes) >= 1
    return nodes[-1]


def _check_final(processed, raw, uid):
    node = _final_node(processed, uid)
    md = node.metadata
    assert md["raw_uid"] == uid and md["status"] == "complete" and md["live"] is True
    links = raw[uid].metadata.get("analysis") or []
    assert node.item["id"] in [link["key"] for link in links]          # back-link on the raw run
    return node


def test_live_in_runengine_with_preview_during_scan_and_strain_sign(tiled_layout, raw_dir, geom, tmp_path):
    """End to end in the RE process on the physics simulator: preview before stop, final linked both ways."""
    _, raw, processed = tiled_layout
    strain_true = -1e-4
    src, roi = _sim_source(geom, strain_true)
    seen: dict = {}
    holder: dict = {}

    def poll(kw):   # runs inside the detector's acquisition of frame 40 of 45 (before the stop document)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for k in processed.search(Key("raw_uid") == holder["cb"].sessions[0].info.uid):
                if processed[k].metadata.get("status") == "running":
                    seen["preview"] = k
                    seen["iteration"] = processed[k].metadata["iteration"]
                    return None
            time.sleep(0.1)
        return None

    bl = make_sim_beamline(HookedFrameSource(src, 40, poll), geometry=geom, data_dir=raw_dir, roi=roi,
                           exposure_s=0.2, simulate_exposure=False, seed=5)
    holder["cb"] = cb = LiveReconstructionCallback(processed=processed, raw=raw, options=_options())
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(cb,))
    (uid,) = w.RE(_plan(bl, geom, "raster_outer"))
    (summary,) = cb.wait(120)
    assert "preview" in seen, "no preview container appeared in Tiled before the stop document"
    preview = processed[seen["preview"]]
    assert preview.metadata["status"] == "complete" and preview.metadata["final_key"] == summary["final_key"]
    assert {"object_amplitude_mid_e1", "object_phase_mid_e2", "probe", "strain_zz_mid_e2"} <= set(preview)
    node = _check_final(processed, raw, uid)
    assert node["object"].shape == cb.sessions[0].final_result["object"].shape
    assert max(cb.call_times_s) < 0.05, f"a document call took {max(cb.call_times_s) * 1e3:.1f} ms"
    # strain: sign and rough magnitude only. The object starts as the (real, amplitude-1) slab support;
    # only voxels the probe lights are updated, so look where |ρ| >= 0.85 max (the lit crystal). There,
    # 6 ePIE sweeps from the model probe give ≈ 0.4 × the truth and 40 sweeps ≈ 0.6 × (measured);
    # accuracy belongs to the engine (issue 3), so the bound is [0.2, 2] × truth.
    res = cb.sessions[0].final_result
    maps = res["strain_maps"]
    amp = np.abs(res["object"])
    lit = np.asarray(maps.mask) & (amp >= 0.85 * amp.max())
    med = float(np.median(np.asarray(maps.eps_zz)[lit]))
    print(f"live strain: median {med:.3g} on {int(lit.sum())} lit voxels (truth {strain_true:g})")
    assert lit.sum() >= 3
    assert np.sign(med) == np.sign(strain_true)
    assert 0.2 * abs(strain_true) < abs(med) < 2 * abs(strain_true)


def _encoding_scan(raw, raw_dir, geom16, tmp_path, order, cb, source=None):
    bl = make_sim_beamline(source or EncodingFrameSource((16, 16)), geometry=geom16, data_dir=raw_dir,
                           exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / order, extra_callbacks=(cb,))
    positions = raster_positions_um(3, 3, 0.1, jitter_fraction=0.15, seed=3)
    angles = rocking_angles_deg(geom16.theta_bragg_deg, geom16.rocking_step_deg, geom16.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom16, positions_um=positions,
                                      angles_deg=angles, sample=SAMPLE, exposure_s=0.001, order=order))
    return uid


def test_acquisition_order_duplicates_and_missing_frames(tiled_layout, raw_dir, geometry, tmp_path):
    """angle_outer and raster_outer assemble the same grid; a repeated event is not counted twice;
    a frame that never arrives is masked (its position left out) and reported."""
    _, raw, _ = tiled_layout
    grids = {}
    for order in ("angle_outer", "raster_outer"):
        cb = LiveReconstructionCallback(options=LiveOptions(reconstruct_live=False, final=False))
        _encoding_scan(raw, raw_dir, geometry, tmp_path, order, cb)
        cb.wait(60)
        g = cb.sessions[0].grid
        assert g.measured.all() and g.n_duplicates == 0
        frames = g.frames.copy()
        frames[:, :, 0, 5] = 0                                  # call counter differs with the order
        grids[order] = frames
        jsonl = tmp_path / order / f"{cb.sessions[0].info.uid}.jsonl"
    np.testing.assert_array_equal(grids["angle_outer"], grids["raster_outer"])

    docs = list(jsonl_documents(jsonl))
    events = [d for d in docs if d[0] in ("event", "event_page")]
    lost = 13                                                    # event seq_num 14 never reaches us
    cb = LiveReconstructionCallback(options=LiveOptions(reconstruct_live=False, final=False, frame_timeout_s=1.0))
    for name, doc in docs:
        if name == "event_page" and doc["seq_num"] == [lost + 1]:
            continue
        cb(name, doc)
        if name == "event_page" and doc["seq_num"] == [5]:
            cb(name, doc)                                        # duplicated event
    (summary,) = cb.wait(60)
    s = cb.sessions[0]
    assert summary["missing_frames"] == [(lost // 9, lost % 9)] and summary["n_duplicates"] == 1
    assert len(events) == 81 and s.grid.n_measured == 80 and s.grid.n_duplicates == 1
    assert s.grid.missing() == [(lost // 9, lost % 9)]          # raster_outer: position 1, angle 4
    positions, angles, _ = select_usable(s.grid.measured)
    assert (lost // 9 not in positions or lost % 9 not in angles) and len(positions) * len(angles) == 72


def test_select_usable_masks_unmeasured_angles():
    m = np.zeros((4, 5), bool)
    m[:, :2] = True
    m[:2, 2] = True
    p, a, mode = select_usable(m)
    assert mode == "angle_layers" and list(a) == [0, 1] and len(p) == 4
    m = np.zeros((4, 5), bool)
    m[:3] = True
    p, a, mode = select_usable(m)
    assert mode == "complete_positions" and list(p) == [0, 1, 2] and len(a) == 5
    g = FrameGrid(np.array([[0, 0], [0.1, 0]]), np.array([10.0, 10.005]), position_tolerance_um=0.02,
                  angle_tolerance_deg=0.001)
    assert g.index(0.101, 0.0, 10.0049) == (1, 1) and g.index(0.05, 0, 10) is None


def test_replay_from_tiled_and_jsonl_equals_live(tiled_layout, tiled_service, raw_dir, geom, tmp_path):
    """Same documents, same seed, the final result is computed from scratch: identical objects."""
    _, raw, processed = tiled_layout
    src, roi = _sim_source(geom)
    bl = make_sim_beamline(src, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=0.2,
                           simulate_exposure=False, seed=7)
    cb = LiveReconstructionCallback(processed=processed, raw=raw, options=_options())
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(cb,))
    (uid,) = w.RE(_plan(bl, geom, "angle_outer"))
    cb.wait(120)
    live_obj = cb.sessions[0].final_result["object"]
    cb_t = LiveReconstructionCallback(options=_options(reconstruct_live=False))
    replay_documents(tiled_documents(raw[uid]), cb_t, timeout_s=120)
    np.testing.assert_array_equal(cb_t.sessions[0].final_result["object"], live_obj)
    # the CLI on the JSONL file publishes a second result for the same raw run
    out = subprocess.run([sys.executable, "-m", "pxm.cli", "replay", "--jsonl", str(tmp_path / "docs" / f"{uid}.jsonl"),
                          "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key,
                          "--iterations", str(N_EPIE)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    node = _final_node(processed, uid)
    np.testing.assert_array_equal(node["object"][:], live_obj.astype(np.complex64))


def _proxy():
    from bluesky.callbacks.zmq import Proxy

    from pxm.catalog import free_port

    pin, pout = free_port(), free_port()
    threading.Thread(target=Proxy(pin, pout).start, daemon=True).start()
    return pin, pout


def _consumer(tiled_service, pout):
    p = subprocess.Popen([sys.executable, "-m", "pxm.cli", "live-consumer", "--zmq", f"127.0.0.1:{pout}", "--once",
                          "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key,
                          "--iterations", str(N_EPIE), "--timeout", "120"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "listening" in p.stdout.readline()
    time.sleep(1.0)                                  # 0MQ slow joiner: let the SUB socket connect
    return p


def test_live_over_zmq_in_a_second_process(tiled_layout, tiled_service, raw_dir, geom, tmp_path):
    from bluesky.callbacks.zmq import Publisher

    _, raw, processed = tiled_layout
    pin, pout = _proxy()
    consumer = _consumer(tiled_service, pout)
    try:
        src, roi = _sim_source(geom)
        bl = make_sim_beamline(src, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=0.2,
                               simulate_exposure=False, seed=9)
        w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs",
                            extra_callbacks=(Publisher(f"127.0.0.1:{pin}"),))
        (uid,) = w.RE(_plan(bl, geom, "raster_outer"))
        out, err = consumer.communicate(timeout=120)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    assert uid in out
    _check_final(processed, raw, uid)


def test_analysis_dies_mid_scan_and_replay_finishes(tiled_layout, tiled_service, raw_dir, geom, tmp_path):
    """Kill the consumer process mid-scan: the raw data are all in Tiled and `pxm replay` publishes."""
    from bluesky.callbacks.zmq import Publisher

    _, raw, processed = tiled_layout
    pin, pout = _proxy()
    consumer = _consumer(tiled_service, pout)

    def kill(kw):
        consumer.kill()

    src, roi = _sim_source(geom)
    bl = make_sim_beamline(HookedFrameSource(src, 20, kill), geometry=geom, data_dir=raw_dir, roi=roi,
                           exposure_s=0.2, simulate_exposure=False, seed=11)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs",
                        extra_callbacks=(Publisher(f"127.0.0.1:{pin}"),))
    (uid,) = w.RE(_plan(bl, geom, "angle_outer"))
    consumer.wait(10)
    assert raw[uid]["primary"]["mpx_image"].shape == (45, 32, 32)
    assert not list(processed.search(Key("raw_uid") == uid).search(Key("status") == "complete"))
    out = subprocess.run([sys.executable, "-m", "pxm.cli", "replay", uid, "--tiled-uri", tiled_service.uri,
                          "--api-key", tiled_service.config.api_key, "--iterations", str(N_EPIE)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    node = _check_final(processed, raw, uid)
    assert node.metadata["metrics"]["n_frames_used"] == 45 and node.metadata["missing_frames"] == []
    _ = json  # (documents are JSON on disk as well: tests above)
