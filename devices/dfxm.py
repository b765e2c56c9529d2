"""FP-DFXM instrument: objective-lens (CRL) stage, DFXM goniometer, imaging camera (EPICS and sim).

The EPICS and sim classes share component names so plans cannot tell them apart:

- lens stage: translations ``x`` (along the optical axis, focus), ``y`` (horizontal,
  image columns), ``z`` (vertical, scattering plane, image rows) in µm; tilts ``pitch``
  and ``yaw`` in mrad;
- goniometer: rocking ``theta``, roll ``chi`` and objective/detector arm ``tth`` in degrees;
- camera: :class:`ImagingCamera`, the Maxipix HDF5/StreamDatum writer with a camera backend
  (:class:`DFXMFrameSource` physics in CI, see ``devices/sim_backends.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind

from analysis.geometry import Roi
from devices.maxipix import Maxipix, MaxipixBackend
from devices.motion import StoppableEpicsMotor
from devices.signals import SimAxis, UnitSignal

LENS_TRANSLATION_UNITS = "um"
"""Units of the lens-stage translations (micrometres)."""
LENS_TILT_UNITS = "mrad"
"""Units of the lens-stage tilts (milliradians)."""
ANGLE_UNITS = "deg"
"""Units of the DFXM goniometer axes (degrees)."""


class CRLStage(Device):
    """EPICS objective-lens (CRL) stage: ``x``, ``y``, ``z`` (µm) and ``pitch``, ``yaw`` (mrad); limits from the IOC.

    Axes are :class:`devices.motion.StoppableEpicsMotor`: a stopped move fails its status
    (tests/devices/test_epics_ioc_general.py).
    """

    x = Cpt(StoppableEpicsMotor, "X")
    y = Cpt(StoppableEpicsMotor, "Y")
    z = Cpt(StoppableEpicsMotor, "Z")
    pitch = Cpt(StoppableEpicsMotor, "PITCH")
    yaw = Cpt(StoppableEpicsMotor, "YAW")


class SimCRLStage(Device):
    """Soft objective-lens stage with the component names of :class:`CRLStage` and soft limits."""

    x = Cpt(SimAxis, egu=LENS_TRANSLATION_UNITS)
    y = Cpt(SimAxis, egu=LENS_TRANSLATION_UNITS)
    z = Cpt(SimAxis, egu=LENS_TRANSLATION_UNITS)
    pitch = Cpt(SimAxis, egu=LENS_TILT_UNITS)
    yaw = Cpt(SimAxis, egu=LENS_TILT_UNITS)

    def __init__(self, prefix: str = "", *, name: str,
                 translation_limits_um: tuple[float, float] = (-2000.0, 2000.0),
                 tilt_limits_mrad: tuple[float, float] = (-5.0, 5.0), settle_time_s: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        for axis in (self.x, self.y, self.z):
            axis.set_limits(translation_limits_um)
        for axis in (self.pitch, self.yaw):
            axis.set_limits(tilt_limits_mrad)
        for axis in (self.x, self.y, self.z, self.pitch, self.yaw):
            axis.set_settle_time(settle_time_s)


class DFXMGoniometer(Device):
    """EPICS DFXM goniometer: rocking ``theta``, roll ``chi``, objective arm ``tth`` (degrees; stoppable motors)."""

    theta = Cpt(StoppableEpicsMotor, "THETA")
    chi = Cpt(StoppableEpicsMotor, "CHI")
    tth = Cpt(StoppableEpicsMotor, "TTH")


class SimDFXMGoniometer(Device):
    """Soft DFXM goniometer with the component names of :class:`DFXMGoniometer` (degrees)."""

    theta = Cpt(SimAxis, egu=ANGLE_UNITS)
    chi = Cpt(SimAxis, egu=ANGLE_UNITS)
    tth = Cpt(SimAxis, egu=ANGLE_UNITS)

    def __init__(self, prefix: str = "", *, name: str, theta_limits_deg: tuple[float, float] = (-10.0, 100.0),
                 chi_limits_deg: tuple[float, float] = (-10.0, 10.0),
                 tth_limits_deg: tuple[float, float] = (-5.0, 170.0), settle_time_s: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.theta.set_limits(theta_limits_deg)
        self.chi.set_limits(chi_limits_deg)
        self.tth.set_limits(tth_limits_deg)
        for axis in (self.theta, self.chi, self.tth):
            axis.set_settle_time(settle_time_s)


@runtime_checkable
class DFXMFrameSource(Protocol):
    """Physics behind a simulated imaging camera (implemented by ``sim.dfxm.DFXMSimulator``).

    Offsets are relative to the aligned instrument: rocking δφ, roll δχ and Δ2θ in rad,
    lens translation (vertical z, horizontal y) and focus offset along the axis in m.
    """

    detector_shape: tuple[int, int]

    def frame(self, *, rock_rad: float, roll_rad: float, two_theta_rad: float,
              lens_translation_m: tuple[float, float], lens_focus_m: float, exposure_s: float,
              flux_scale: float, rng: np.random.Generator) -> np.ndarray:
        """Return one uint32 frame of shape ``detector_shape``."""
        ...


class ImagingCamera(Maxipix):
    """DFXM imaging camera (far-field detector behind the CRL): the Maxipix HDF5 writer with a camera backend.

    Frames go to ``/entry/data/data`` (uint32, SWMR) and are announced as StreamDatum, as
    for the Maxipix (slot overwrite after a rewind included). ``pixel_size_um`` records the
    detector pixel (the object-plane pixel is ``pixel_size_um / M``).
    """

    pixel_size_um = Cpt(UnitSignal, value=0.68, units="um", kind=Kind.config)

    def __init__(self, prefix: str = "", *, name: str, backend: MaxipixBackend, data_dir: str | Path,
                 roi: Roi | None = None, simulate_exposure: bool = True, pixel_size_um: float = 0.68,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, backend=backend, data_dir=data_dir, roi=roi,
                         simulate_exposure=simulate_exposure, **kwargs)
        if not pixel_size_um > 0:
            raise ValueError(f"{name}: pixel_size_um must be > 0, got {pixel_size_um!r}")
        self.pixel_size_um.put(float(pixel_size_um))
