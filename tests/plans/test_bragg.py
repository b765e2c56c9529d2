import threading
import time

import numpy as np
import pytest
from bluesky.suspenders import SuspendFloor
from bluesky.utils import RunEngineInterrupted

from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource, HookedFrameSource
from plans.bragg import raster_rocking_scan
from plans.patterns import raster_positions_um, rocking_angles_deg
from testing.plan_checks import DocCollector, check_frames_match_events

SAMPLE = {"name": "W-foil-07", "material": "W", "thickness_m": 200e-9}


def _plan(bl, geometry, *, nx=5, ny=5, order="angle_outer", **kw):
    pos = raster_positions_um(nx, ny, 0.5, jitter_fraction=0.1, seed=1)
    ang = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    args = dict(geometry=geometry, positions_um=pos, angles_deg=ang, sample=SAMPLE, exposure_s=0.001,
                order=order)
    args.update(kw)
    return raster_rocking_scan(bl.detector, bl.stage, bl.gonio, **args), pos, ang


@pytest.mark.parametrize("order", ["angle_outer", "raster_outer"])
def test_scan_frames_match_positions(RE, beamline, geometry, order):
    docs = DocCollector()
    RE.subscribe(docs)
    plan, pos, ang = _plan(beamline, geometry, order=order, md={"operator": "lead"})
    RE(plan)
    events = docs.of("event")
    assert len(events) == 25 * 9
    _, decoded = check_frames_match_events(docs, geometry)
    # frame k ↔ (position, angle) by the documented order
    for k, dec in enumerate(decoded):
        j, i = divmod(k, 25) if order == "angle_outer" else divmod(k, 9)[::-1]
        assert dec["x_um"] == pytest.approx(pos[i, 0], abs=1e-3)
        assert dec["y_um"] == pytest.approx(pos[i, 1], abs=1e-3)
        assert dec["rocking_offset_deg"] == pytest.approx(ang[j] - geometry.theta_bragg_deg, abs=1e-6)
        assert dec["arm_offset_deg"] == 0.0
    (start,) = docs.of("start")
    assert start["plan_name"] == "raster_rocking_scan" and start["num_points"] == 225
    assert start["shape"] == ([9, 25] if order == "angle_outer" else [25, 9])
    assert start["pattern"]["order"] == order
    np.testing.assert_array_equal(start["pattern"]["positions_um"], pos)
    assert start["geometry"] == geometry.to_metadata()
    assert start["sample"]["name"] == "W-foil-07" and start["operator"] == "lead"
    assert start["motors"] == ["stage_x", "stage_y", "gonio_theta"]
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "success" and stop["num_events"]["primary"] == 225
    desc = docs.of("descriptor")[0]
    assert desc["data_keys"]["mpx_image"]["external"] == "STREAM:"
    assert all("units" in v for v in desc["data_keys"].values())


def test_pause_resume_mid_scan(RE, tmp_path, geometry):
    def pause(kw):
        RE.request_pause(defer=False)
        return kw
    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource(), 7, pause), geometry=geometry, data_dir=tmp_path,
                           exposure_s=0.001)
    docs = DocCollector()
    RE.subscribe(docs)
    plan, _, _ = _plan(bl, geometry, nx=2, ny=2)
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    assert RE.state == "paused"
    RE.resume()
    assert len(docs.of("event")) == 36
    assert len(bl.backend.calls) == 37          # the interrupted point was re-triggered
    check_frames_match_events(docs, geometry)


def test_beam_dump_suspends_and_frames_stay_aligned(RE, tmp_path, geometry):
    def dump(kw):
        bl.monitor.dump()
        threading.Timer(0.3, bl.monitor.refill).start()
        time.sleep(0.05)                        # the RE sees the dump while this exposure runs
        return {**kw, "flux_scale": 0.0}        # and this frame is taken without beam
    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource(), 10, dump), geometry=geometry, data_dir=tmp_path,
                           exposure_s=0.001)
    RE.install_suspender(SuspendFloor(bl.monitor.current, 50, resume_thresh=150, sleep=0.05))
    docs = DocCollector()
    RE.subscribe(docs)
    plan, _, _ = _plan(bl, geometry, nx=2, ny=2)
    RE(plan)
    assert len(docs.of("event")) == 36
    assert len(bl.backend.calls) >= 37
    check_frames_match_events(docs, geometry)   # includes: no zero-flux frame survived


def _angles(geometry):
    return rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)


@pytest.mark.parametrize("kw, exc, match", [
    ({"angles_deg": []}, ValueError, "n_angles >= 1"),
    ({"positions_um": np.zeros((0, 2))}, ValueError, "n_positions >= 1"),
    ({"sample": None}, ValueError, "sample metadata missing"),
    ({"sample": {"material": "W"}}, ValueError, "'name' must be a non-empty string"),
    ({"exposure_s": 0}, ValueError, "exposure_s"),
    ({"order": "diagonal"}, ValueError, "order must be one of"),
    ({"positions_um": [[0.0, 0.0], [500.0, 0.0]]}, ValueError, "outside its limits"),
])
def test_bad_input_raises_before_anything_moves(RE, beamline, geometry, kw, exc, match):
    docs = DocCollector()
    RE.subscribe(docs)
    args = dict(geometry=geometry, positions_um=[[1.0, 1.0]], angles_deg=_angles(geometry), sample=SAMPLE,
                exposure_s=0.001)
    args.update(kw)
    x0, th0 = beamline.stage.x.position, beamline.gonio.theta.position
    with pytest.raises(exc, match=match):
        RE(raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, **args))
    assert docs.docs == []
    assert (beamline.stage.x.position, beamline.gonio.theta.position) == (x0, th0)


def test_angles_must_match_geometry(RE, beamline, geometry):
    with pytest.raises(ValueError, match="geometry.n_angles"):
        RE(raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, geometry=geometry,
                               positions_um=[[0, 0]], angles_deg=[43.9], sample=SAMPLE, exposure_s=0.001))


def test_devices_type_checked(RE, beamline, geometry):
    with pytest.raises(TypeError, match="'mpx' is not Readable"):
        RE(raster_rocking_scan("mpx", beamline.stage, beamline.gonio, geometry=geometry,
                               positions_um=[[0, 0]], angles_deg=_angles(geometry), sample=SAMPLE,
                               exposure_s=0.001))


def test_geometry_as_dict_for_queueserver(RE, beamline, geometry):
    docs = DocCollector()
    RE.subscribe(docs)
    RE(raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, geometry=geometry.to_metadata(),
                           positions_um=[[0, 0]], angles_deg=list(_angles(geometry)), sample=SAMPLE,
                           exposure_s=0.001))
    assert len(docs.of("event")) == 9
