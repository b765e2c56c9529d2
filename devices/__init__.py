"""Ophyd v1 devices of pxm: EPICS classes and their sim twins (same component names)."""

from devices.beam import BeamMonitor, SimBeamMonitor
from devices.dfxm import CRLStage, DFXMFrameSource, DFXMGoniometer, ImagingCamera, SimCRLStage, SimDFXMGoniometer
from devices.maxipix import FrameSource, Maxipix, MaxipixBackend
from devices.motion import Goniometer, PiezoStage, SimGoniometer, SimPiezoStage
from devices.sim_beamline import SimBeamline, SimDFXMBeamline, make_sim_beamline, make_sim_dfxm_beamline

__all__ = ["BeamMonitor", "CRLStage", "DFXMFrameSource", "DFXMGoniometer", "FrameSource", "Goniometer",
           "ImagingCamera", "Maxipix", "MaxipixBackend", "PiezoStage", "SimBeamMonitor", "SimBeamline",
           "SimCRLStage", "SimDFXMBeamline", "SimDFXMGoniometer", "SimGoniometer", "SimPiezoStage",
           "make_sim_beamline", "make_sim_dfxm_beamline"]
