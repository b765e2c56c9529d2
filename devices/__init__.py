"""Ophyd v1 devices of pxm: EPICS classes and their sim twins (same component names)."""

from devices.beam import BeamMonitor, SimBeamMonitor
from devices.maxipix import FrameSource, Maxipix, MaxipixBackend
from devices.motion import Goniometer, PiezoStage, SimGoniometer, SimPiezoStage
from devices.sim_beamline import SimBeamline, make_sim_beamline

__all__ = ["BeamMonitor", "FrameSource", "Goniometer", "Maxipix", "MaxipixBackend", "PiezoStage",
           "SimBeamMonitor", "SimBeamline", "SimGoniometer", "SimPiezoStage", "make_sim_beamline"]
