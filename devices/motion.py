"""Goniometer and piezo stage: EPICS classes and their soft (sim) twins.

The EPICS and sim classes expose the same component names (``theta``, ``tth``; the six circles
``mu``, ``eta``, ``chi``, ``phi``, ``nu``, ``delta`` of a general diffractometer; ``x``, ``y``, ``z``),
so plans cannot tell them apart. Angles are in degrees,
stage positions in micrometres (``egu`` and ``describe()['units']`` say so).
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor
from ophyd.positioner import PositionerBase

from devices.signals import SimAxis

STAGE_UNITS = "um"
"""Units of every PiezoStage axis (micrometres)."""
ANGLE_UNITS = "deg"
"""Units of every Goniometer axis (degrees)."""


class StoppableEpicsMotor(EpicsMotor):
    """``EpicsMotor`` whose move status fails when the move is stopped short (``stop(success=False)``).

    ophyd 1.11's ``EpicsMotor.stop`` reaches ``Device.stop`` before ``PositionerBase.stop`` in the MRO,
    so a stopped move later reports success at ``.DMOV`` = 1 wherever the axis stopped
    (tests/devices/test_epics_ioc.py shows it against a caproto IOC).
    """

    def stop(self, *, success: bool = False) -> None:
        """Put ``.STOP`` = 1 and finish the pending move status with ``success``."""
        super().stop(success=success)
        PositionerBase.stop(self, success=success)


class Goniometer(Device):
    """EPICS goniometer: rocking axis ``theta`` and detector arm ``tth`` (degrees)."""

    theta = Cpt(StoppableEpicsMotor, "THETA")
    tth = Cpt(StoppableEpicsMotor, "TTH")


SIX_CIRCLE_AXES = ("mu", "eta", "chi", "phi", "nu", "delta")
"""Circles of a 4S+2D diffractometer: sample μ, η, χ, φ and detector ν (γ), δ (``Diffractometer.circle_names``)."""


class SixCircle(Device):
    """EPICS 4S+2D diffractometer: sample circles ``mu``, ``eta``, ``chi``, ``phi``, detector arms ``nu``, ``delta``."""

    mu = Cpt(StoppableEpicsMotor, "MU")
    eta = Cpt(StoppableEpicsMotor, "ETA")
    chi = Cpt(StoppableEpicsMotor, "CHI")
    phi = Cpt(StoppableEpicsMotor, "PHI")
    nu = Cpt(StoppableEpicsMotor, "NU")
    delta = Cpt(StoppableEpicsMotor, "DELTA")


class PiezoStage(Device):
    """EPICS piezo sample stage with axes ``x``, ``y``, ``z`` (micrometres, limits from the IOC)."""

    x = Cpt(StoppableEpicsMotor, "X")
    y = Cpt(StoppableEpicsMotor, "Y")
    z = Cpt(StoppableEpicsMotor, "Z")


class SimGoniometer(Device):
    """Soft goniometer with the component names of :class:`Goniometer` (degrees)."""

    theta = Cpt(SimAxis, egu=ANGLE_UNITS)
    tth = Cpt(SimAxis, egu=ANGLE_UNITS)

    def __init__(self, prefix: str = "", *, name: str,
                 theta_limits_deg: tuple[float, float] = (-10.0, 100.0),
                 tth_limits_deg: tuple[float, float] = (-5.0, 170.0),
                 settle_time_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.theta.set_limits(theta_limits_deg)
        self.tth.set_limits(tth_limits_deg)
        for axis in (self.theta, self.tth):
            axis.set_settle_time(settle_time_s)


class SimSixCircle(Device):
    """Soft diffractometer with the component names of :class:`SixCircle` (degrees), for a general geometry."""

    mu = Cpt(SimAxis, egu=ANGLE_UNITS)
    eta = Cpt(SimAxis, egu=ANGLE_UNITS)
    chi = Cpt(SimAxis, egu=ANGLE_UNITS)
    phi = Cpt(SimAxis, egu=ANGLE_UNITS)
    nu = Cpt(SimAxis, egu=ANGLE_UNITS)
    delta = Cpt(SimAxis, egu=ANGLE_UNITS)

    def __init__(self, prefix: str = "", *, name: str, limits_deg: tuple[float, float] = (-180.0, 180.0),
                 settle_time_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        for axis_name in SIX_CIRCLE_AXES:
            axis = getattr(self, axis_name)
            axis.set_limits(limits_deg)
            axis.set_settle_time(settle_time_s)

    def move_to(self, angles_deg: dict[str, float]) -> None:
        """Set circles by name (e.g. ``Diffractometer.motor_angles_deg()``) and wait; ValueError names unknown ones."""
        unknown = sorted(set(angles_deg) - set(SIX_CIRCLE_AXES))
        if unknown:
            raise ValueError(f"SimSixCircle {self.name!r} has no circle {unknown}; its circles are "
                             f"{SIX_CIRCLE_AXES}; name the Diffractometer's circles with these "
                             "(sample_circle_names, detector_circle_names)")
        for axis_name, value in angles_deg.items():
            getattr(self, axis_name).set(float(value)).wait()


class SimPiezoStage(Device):
    """Soft piezo stage with the component names of :class:`PiezoStage` (micrometres)."""

    x = Cpt(SimAxis, egu=STAGE_UNITS)
    y = Cpt(SimAxis, egu=STAGE_UNITS)
    z = Cpt(SimAxis, egu=STAGE_UNITS)

    def __init__(self, prefix: str = "", *, name: str,
                 limits_um: tuple[float, float] = (-100.0, 100.0), settle_time_s: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        for axis in (self.x, self.y, self.z):
            axis.set_limits(limits_um)
            axis.set_settle_time(settle_time_s)
