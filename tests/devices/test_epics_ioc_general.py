"""The six-circle diffractometer and the FP-DFXM axes against a real Channel Access server (issues 19, 20).

The caproto IOC of testing/epics_ioc.py runs as a process on loopback and serves, besides the goniometer and
stage of tests/devices/test_epics_ioc.py, the circles of ``devices.motion.SixCircle`` (``SIX:``), the DFXM
goniometer (``DFXM:``) and the objective-lens stage (``CRL:``). pxm's EPICS classes connect, move, read back,
hit limits and stop against it, and the general-geometry Bragg plan runs with the EPICS six-circle.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from caproto.sync.client import read as ca_read
from caproto.sync.client import write as ca_write
from ophyd.utils import LimitError

from analysis.diffractometer import asymmetric_out_of_plane
from devices.beam import BeamMonitor
from devices.dfxm import CRLStage, DFXMGoniometer
from devices.maxipix import Maxipix
from devices.motion import SIX_CIRCLE_AXES, PiezoStage, SixCircle
from devices.sim_backends import SimMaxipixBackend
from devices.testing import EncodingFrameSource
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from testing.epics_ioc import IOCProcess, loopback_ioc
from testing.plan_checks import DocCollector, check_frames_match_events

CONNECT_TIMEOUT_S = 60.0
MOVE_TIMEOUT_S = 30.0
SET_DEG = {"phi": 10.0, "nu": 25.0, "delta": 80.0}        # asymmetric_out_of_plane's circles; η = 30° rocks


@pytest.fixture(scope="module")
def ioc():
    """The IOC process on a free loopback port; this process's CA client is pointed at it alone."""
    with loopback_ioc("PXMG", general=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def devices(ioc: IOCProcess):
    """SixCircle, DFXMGoniometer, CRLStage, PiezoStage and BeamMonitor connected to the IOC (once per module)."""
    devs = {"six": SixCircle(f"{ioc.prefix}SIX:", name="gonio"),
            "dfxm": DFXMGoniometer(f"{ioc.prefix}DFXM:", name="dfxm_gonio"),
            "crl": CRLStage(f"{ioc.prefix}CRL:", name="crl"),
            "stage": PiezoStage(f"{ioc.prefix}STAGE:", name="stage"),
            "ring": BeamMonitor(f"{ioc.prefix}RING:", name="ring")}
    for dev in devs.values():
        dev.wait_for_connection(timeout=CONNECT_TIMEOUT_S)
    return devs


def _rbv(ioc: IOCProcess, pv: str) -> float:
    return float(ca_read(f"{ioc.prefix}{pv}.RBV", timeout=5).data[0])


def test_axes_connect_with_the_iocs_units_and_limits(devices, ioc):
    six, dfxm, crl = devices["six"], devices["dfxm"], devices["crl"]
    assert six.delta.user_readback.pvname == f"{ioc.prefix}SIX:DELTA.RBV"
    assert crl.pitch.user_setpoint.pvname == f"{ioc.prefix}CRL:PITCH.VAL"
    for name in SIX_CIRCLE_AXES:
        axis = getattr(six, name)
        assert axis.egu == "deg" and axis.limits == (-180.0, 180.0), name
    assert (dfxm.theta.limits, dfxm.chi.limits, dfxm.tth.limits) == ((-10.0, 100.0), (-10.0, 10.0), (-5.0, 170.0))
    assert {crl.x.egu, crl.y.egu, crl.z.egu} == {"um"} and {crl.pitch.egu, crl.yaw.egu} == {"mrad"}
    assert crl.x.limits == (-2000.0, 2000.0) and crl.yaw.limits == (-5.0, 5.0)
    desc = six.describe()
    assert {d["units"] for d in desc.values()} == {"deg"} and "gonio_delta" in desc


def test_moves_reach_the_iocs_readback(devices, ioc):
    six, dfxm, crl = devices["six"], devices["dfxm"], devices["crl"]
    targets = [(six.nu, "SIX:NU", 25.0), (six.delta, "SIX:DELTA", 80.0), (six.phi, "SIX:PHI", 10.0),
               (dfxm.theta, "DFXM:THETA", 17.8), (dfxm.chi, "DFXM:CHI", -0.5), (dfxm.tth, "DFXM:TTH", 35.6),
               (crl.x, "CRL:X", 250.0), (crl.pitch, "CRL:PITCH", 0.75)]
    statuses = [axis.set(value) for axis, _, value in targets]       # all at once, as bps.mv does
    for status in statuses:
        status.wait(MOVE_TIMEOUT_S)
    for (axis, pv, value), status in zip(targets, statuses, strict=True):
        assert status.success, pv
        assert axis.position == pytest.approx(value, abs=1e-9), pv
        assert _rbv(ioc, pv) == pytest.approx(value, abs=1e-9), pv    # the server agrees
        assert axis.motor_done_move.get() == 1, pv


@pytest.mark.parametrize(("device", "axis", "pv", "value"), [
    ("six", "delta", "SIX:DELTA", 200.0), ("dfxm", "chi", "DFXM:CHI", 12.0), ("crl", "pitch", "CRL:PITCH", -6.0)])
def test_out_of_limits_raises_and_the_ioc_refuses(devices, ioc, device, axis, pv, value):
    motor = getattr(devices[device], axis)
    before = motor.position
    with pytest.raises(LimitError, match="outside of range"):
        motor.set(value)
    with pytest.raises(Exception, match="(?i)limit|error"):          # a client that skips ophyd's check
        ca_write(f"{ioc.prefix}{pv}.VAL", value, notify=True, timeout=5)
    assert motor.position == before and _rbv(ioc, pv) == before


@pytest.mark.parametrize(("device", "axis", "target", "past"), [("six", "eta", 150.0, 10.0),
                                                                ("crl", "z", 1500.0, 100.0)])
def test_stop_mid_move_fails_the_move_where_the_axis_is(devices, ioc, device, axis, target, past):
    motor = getattr(devices[device], axis)
    start = motor.position
    status = motor.set(target)                                         # ~3 s at the IOC's velocity
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while motor.position < start + past and time.monotonic() < deadline:
        time.sleep(0.01)
    motor.stop()
    with pytest.raises(Exception):                                    # noqa: B017 - ophyd's status failure type
        status.wait(MOVE_TIMEOUT_S)
    assert status.done and not status.success
    deadline = time.monotonic() + 10
    while motor.motor_done_move.get() != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    stopped = motor.position
    assert start + past <= stopped < target
    assert motor.user_setpoint.get() == pytest.approx(stopped)       # the record sets VAL = RBV on a stop
    motor.set(start).wait(MOVE_TIMEOUT_S)


def test_general_geometry_bragg_plan_with_the_epics_six_circle(devices, ioc, RE, tmp_path):
    """raster_rocking_scan drives η, φ, ν, δ on the IOC; the start document records what the IOC read back."""
    six, stage, ring = devices["six"], devices["stage"], devices["ring"]
    geom = asymmetric_out_of_plane().bragg_geometry(n_rows_px=16, n_cols_px=16, n_angles=3)
    for status in [six.eta.set(20.0), six.phi.set(-3.0), six.nu.set(0.0), six.delta.set(70.0)]:
        status.wait(MOVE_TIMEOUT_S)                                    # knocked off: the plan must set them
    backend = SimMaxipixBackend(EncodingFrameSource((16, 16)), stage=stage, gonio=six, monitor=ring,
                                geometry=geom, nominal_current_ma=200.0)
    det = Maxipix(name="mpx", backend=backend, data_dir=tmp_path)
    det.exposure_s.put(0.001)
    docs = DocCollector()
    RE.subscribe(docs)
    angles = rocking_angles_deg(geom.rocking_centre_deg, geom.rocking_step_deg, geom.n_angles)
    RE(raster_rocking_scan(det, stage, six, geometry=geom, positions_um=raster_positions_um(2, 2, 0.5),
                           angles_deg=angles, sample={"name": "Si-slab-epics"}, exposure_s=0.001, monitors=[ring]))
    (start,) = docs.of("start")
    rec = start["diffractometer_angles"]
    assert rec["rocking_circle"] == "eta" and rec["set_deg"] == pytest.approx(SET_DEG)
    assert rec["axes"] == {"eta": "gonio_eta", "phi": "gonio_phi", "nu": "gonio_nu", "delta": "gonio_delta"}
    # what the plan read before the first point is what the server holds (the arms have not moved since)
    ioc_deg = {c: _rbv(ioc, f"SIX:{c.upper()}") for c in ("phi", "nu", "delta")}
    assert {c: rec["read_deg"][c] for c in ioc_deg} == pytest.approx(ioc_deg, abs=1e-9)
    assert ioc_deg == pytest.approx(SET_DEG, abs=1e-9)
    assert rec["read_deg"]["eta"] == pytest.approx(20.0, abs=1e-9)   # η is read before the cycler moves it
    events = docs.of("event")
    assert len(events) == 4 * 3 and docs.of("stop")[0]["exit_status"] == "success"
    for name, value in SET_DEG.items():
        assert all(ev["data"][f"gonio_{name}"] == pytest.approx(value, abs=1e-9) for ev in events)
    np.testing.assert_allclose(sorted({round(ev["data"]["gonio_eta"], 9) for ev in events}), angles, atol=1e-9)
    _, decoded = check_frames_match_events(docs, geom, theta_key="gonio_eta")
    assert all(d["arm_offset_deg"] == 0.0 for d in decoded)           # the frames saw ν, δ in place
    assert _rbv(ioc, "SIX:ETA") == pytest.approx(angles[-1], abs=1e-9)
