"""pxm's EPICS device classes against a real Channel Access server: a caproto IOC process on loopback.

The IOC (testing/epics_ioc.py) serves motor-record-like axes and a ring current on 127.0.0.1 and a free
port; ophyd talks to it through its Channel Access client (caproto's, the control layer ophyd picks when
pyepics is absent). Nothing here is simulated on the client side except the detector's frames.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import ophyd
import pytest
from caproto.sync.client import read as ca_read
from caproto.sync.client import write as ca_write
from ophyd import EpicsSignal
from ophyd.utils import LimitError

from devices.beam import BeamMonitor
from devices.maxipix import Maxipix
from devices.motion import Goniometer, PiezoStage
from devices.sim_backends import SimMaxipixBackend
from devices.testing import EncodingFrameSource, HookedFrameSource
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from pxm.runengine import BeamSuspenderOptions, make_run_engine
from testing.epics_ioc import IOCProcess, loopback_ioc
from testing.plan_checks import DocCollector, check_frames_match_events

CONNECT_TIMEOUT_S = 60.0     # ~100 PVs on a loaded 2-core machine
MOVE_TIMEOUT_S = 30.0
SCAN_LIMIT_S = 240.0         # the 36-point scan with a 1 s dump takes ~20 s on 2 loaded cores
SAMPLE = {"name": "W-foil-epics", "material": "W"}


@pytest.fixture(scope="module")
def ioc():
    """The IOC process on a free loopback port; this process's CA client is pointed at it alone."""
    with loopback_ioc("PXMT") as proc:
        yield proc


@pytest.fixture(scope="module")
def epics_beamline(ioc: IOCProcess):
    """Goniometer, piezo stage and beam monitor of pxm connected to the IOC (once per module)."""
    gonio = Goniometer(f"{ioc.prefix}GONIO:", name="gonio")
    stage = PiezoStage(f"{ioc.prefix}STAGE:", name="stage")
    ring = BeamMonitor(f"{ioc.prefix}RING:", name="ring")
    for dev in (gonio, stage, ring):
        dev.wait_for_connection(timeout=CONNECT_TIMEOUT_S)
    return gonio, stage, ring


@pytest.fixture
def stage(epics_beamline):
    """The stage with x back at 0 um after each test."""
    stage = epics_beamline[1]
    yield stage
    stage.x.set(0.0).wait(MOVE_TIMEOUT_S)


def test_ophyd_talks_channel_access_through_a_real_client(epics_beamline, ioc):
    assert ophyd.cl.name in ("caproto", "pyepics")                    # not ophyd's "dummy" layer
    _, stage, ring = epics_beamline
    assert stage.x.user_readback.pvname == f"{ioc.prefix}STAGE:X.RBV"
    assert ring.current.get() == pytest.approx(200.0)


def test_move_reaches_readback_at_finite_velocity(stage, ioc):
    seen_um: list[float] = []
    token = stage.x.user_readback.subscribe(lambda value, **kw: seen_um.append(float(value)), run=False)
    try:
        status = stage.x.set(12.5)
        status.wait(MOVE_TIMEOUT_S)
    finally:
        stage.x.user_readback.unsubscribe(token)
    assert status.success
    assert stage.x.position == pytest.approx(12.5, abs=1e-9)
    assert stage.x.motor_done_move.get() == 1 and stage.x.moving is False
    assert ca_read(f"{ioc.prefix}STAGE:X.RBV", timeout=5).data[0] == pytest.approx(12.5)   # the IOC agrees
    intermediate = [v for v in seen_um if 0.0 < v < 12.5]
    assert len(intermediate) >= 3, f"no motion at finite velocity: readbacks {seen_um}"
    assert np.all(np.diff(seen_um) >= 0)                              # monotonic towards the target


def test_units_come_from_the_ioc(epics_beamline):
    gonio, stage, ring = epics_beamline
    for dev, unit in ((gonio, "deg"), (stage, "um"), (ring, "mA")):
        desc = dev.describe()
        assert desc and all(d["units"] == unit for d in desc.values()), desc
    assert stage.x.egu == "um" and gonio.theta.egu == "deg"


def test_out_of_limits_raises_before_moving_and_the_ioc_refuses_too(stage, ioc):
    assert stage.x.limits == (-100.0, 100.0)                          # .VAL control limits = .LLM/.HLM
    with pytest.raises(LimitError, match=r"stage_x_user_setpoint: value 150(\.0)? outside of range"):
        stage.x.set(150.0)
    assert stage.x.user_setpoint.get() == 0.0 and stage.x.position == 0.0
    with pytest.raises(Exception, match="(?i)limit|error"):           # a client that skips the check
        ca_write(f"{ioc.prefix}STAGE:X.VAL", 150.0, notify=True, timeout=5)
    assert ca_read(f"{ioc.prefix}STAGE:X.VAL", timeout=5).data[0] == 0.0


def test_limits_moved_on_the_ioc_reach_ophyd_and_the_plans(stage, epics_beamline, RE, tmp_path, geometry):
    gonio = epics_beamline[0]
    stage.x.high_limit_travel.put(20.0, wait=True)
    try:
        deadline = time.monotonic() + 10
        while stage.x.limits != (-100.0, 20.0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stage.x.limits == (-100.0, 20.0)
        with pytest.raises(LimitError):
            stage.x.set(30.0)
        docs = DocCollector()
        RE.subscribe(docs)
        det = _detector(EncodingFrameSource(), stage, gonio, epics_beamline[2], geometry, tmp_path)
        with pytest.raises(ValueError, match=r"positions_um x: 1 target\(s\) of 'stage_x' outside its limits"):
            RE(raster_rocking_scan(det, stage, gonio, geometry=geometry, positions_um=[[0.0, 0.0], [30.0, 0.0]],
                                   angles_deg=_angles(geometry), sample=SAMPLE, exposure_s=0.001))
        assert docs.docs == [] and stage.x.position == 0.0               # validated before anything moved
    finally:
        stage.x.high_limit_travel.put(100.0, wait=True)


def test_stop_mid_move_ends_where_the_axis_is_and_fails_the_move(stage, ioc):
    status = stage.x.set(80.0)                                        # 1.6 s at 50 um/s
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while stage.x.position < 5.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stage.x.stop()
    with pytest.raises(Exception):                                   # noqa: B017 - ophyd's status failure type
        status.wait(MOVE_TIMEOUT_S)
    assert status.done and not status.success
    deadline = time.monotonic() + 10
    while stage.x.motor_done_move.get() != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)                                                   # no further readback updates arrive
    stopped_um = stage.x.position
    assert 5.0 <= stopped_um < 80.0
    assert stage.x.motor_done_move.get() == 1
    assert stage.x.user_setpoint.get() == pytest.approx(stopped_um)  # the record sets VAL = RBV on a stop
    assert ca_read(f"{ioc.prefix}STAGE:X.RBV", timeout=5).data[0] == pytest.approx(stopped_um)


def _angles(geometry):
    return rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)


def _detector(source, stage, gonio, ring, geometry, data_dir):
    backend = SimMaxipixBackend(source, stage=stage, gonio=gonio, monitor=ring, geometry=geometry,
                                nominal_current_ma=200.0)
    det = Maxipix(name="mpx", backend=backend, data_dir=data_dir)
    det.exposure_s.put(0.001)
    return det


def test_beam_dump_on_the_ring_current_pv_suspends_the_scan_and_it_resumes(epics_beamline, ioc, tiled_layout,
                                                                          tmp_path, geometry):
    """pxm's RunEngine wiring (SuspendFloor on BeamMonitor.current) suspends on a dump served by the IOC."""
    gonio, stage, ring = epics_beamline
    _, raw, _ = tiled_layout
    writer = EpicsSignal(f"{ioc.prefix}RING:CURRENT", name="ring_writer")
    writer.wait_for_connection(timeout=CONNECT_TIMEOUT_S)
    times_s: dict[str, float] = {}
    holder = {}

    def refill() -> None:
        times_s["refill"] = time.time()
        writer.put(200.0, wait=True)

    def dump(kw):
        times_s["dump"] = time.time()
        writer.put(0.0, wait=True)
        threading.Timer(2.0, refill).start()
        suspender = holder["RE"].suspenders[0]
        deadline = time.monotonic() + 10
        while not suspender.tripped and time.monotonic() < deadline:   # the RE hears the PV mid-exposure
            time.sleep(0.01)
        # A dump lasts far longer than an exposure: let the RE act on the trip (it cancels the wait for this
        # frame) before the exposure ends, so the cut frame is never read and the point is retaken. Returning at
        # the trip itself raced the frame's 'read' against the suspension (docs/reliability.md).
        time.sleep(0.5)
        return {**kw, "flux_scale": 0.0}                               # this frame is taken without beam

    det = _detector(HookedFrameSource(EncodingFrameSource(), 10, dump), stage, gonio, ring, geometry,
                    tmp_path / "raw")
    docs = DocCollector()
    wiring = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=ring.current,
                             suspender=BeamSuspenderOptions(floor_ma=50.0, resume_ma=150.0, sleep_s=0.1),
                             extra_callbacks=(docs,))
    holder["RE"] = wiring.RE
    positions = raster_positions_um(2, 2, 0.5)
    watchdog = threading.Timer(SCAN_LIMIT_S, wiring.RE.request_pause, kwargs={"defer": False})
    watchdog.start()                                                   # a hung suspension fails, not hangs
    try:
        (uid,) = wiring.RE(raster_rocking_scan(det, stage, gonio, geometry=geometry, positions_um=positions,
                                               angles_deg=_angles(geometry), sample=SAMPLE, exposure_s=0.001,
                                               monitors=[ring]))
    finally:
        watchdog.cancel()
        if wiring.RE.state != "idle":
            wiring.RE.halt()
    events = docs.of("event")
    assert len(events) == 4 * geometry.n_angles
    assert docs.of("stop")[0]["exit_status"] == "success"
    assert len(det.backend.calls) > len(events)                        # the point cut by the dump was retaken
    check_frames_match_events(docs, geometry)                          # no beamless frame survived
    assert "dump" in times_s and "refill" in times_s
    event_times_s = np.array([e["time"] for e in events])
    assert not np.any((event_times_s > times_s["dump"] + 0.05) & (event_times_s < times_s["refill"]))
    assert np.sum(event_times_s > times_s["refill"]) >= len(events) - 10
    assert all(e["data"]["ring_current"] >= 150.0 for e in events)   # every event read the real PV with beam
    assert raw[uid].metadata["stop"]["num_events"]["primary"] == len(events)
