import pytest
from ophyd.utils import LimitError

from devices.beam import SimBeamMonitor
from devices.motion import SimGoniometer, SimPiezoStage


def test_stage_outside_limits_raises_and_does_not_move():
    stage = SimPiezoStage(name="stage", limits_um=(-10, 10))
    stage.x.set(5.0).wait()
    with pytest.raises(LimitError, match=r"outside the soft limits \[-10.0, 10.0\] um"):
        stage.x.set(10.5)
    assert isinstance(LimitError("x"), ValueError)
    assert stage.x.position == 5.0
    assert stage.x.setpoint.get() == 5.0


def test_non_numeric_target_is_value_error():
    gonio = SimGoniometer(name="gonio")
    with pytest.raises(ValueError, match="finite number"):
        gonio.theta.set(float("nan"))


def test_describe_carries_units():
    stage, gonio, mon = SimPiezoStage(name="s"), SimGoniometer(name="g"), SimBeamMonitor(name="m")
    for dev, unit in ((stage, "um"), (gonio, "deg"), (mon, "mA")):
        desc = dev.describe()
        assert desc and all(d["units"] == unit for d in desc.values())


def test_settle_time_delays_completion():
    stage = SimPiezoStage(name="s", settle_time_s=0.05)
    st = stage.y.set(1.0)
    assert not st.done
    st.wait(timeout=2)
    assert stage.y.position == 1.0


def test_bad_limits_rejected():
    with pytest.raises(ValueError, match="low < high"):
        SimPiezoStage(name="s", limits_um=(5, -5))


def test_beam_dump_and_refill():
    mon = SimBeamMonitor(name="ring", nominal_current_ma=180.0)
    mon.dump()
    assert mon.current.get() == 0.0
    mon.refill()
    assert mon.current.get() == 180.0
