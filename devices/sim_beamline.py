"""Factories for complete simulated beamlines: Bragg ptychography (FrameSource) and FP-DFXM (DFXMFrameSource)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.geometry import BraggGeometry, Roi
from devices.beam import SimBeamMonitor
from devices.dfxm import ImagingCamera, SimCRLStage, SimDFXMGoniometer
from devices.maxipix import FrameSource, Maxipix
from devices.motion import SimGoniometer, SimPiezoStage, SimSixCircle
from devices.sim_backends import SimDFXMCameraBackend, SimMaxipixBackend


@dataclass(frozen=True)
class SimBeamline:
    """The sim devices of one beamline (same component names as the EPICS classes)."""

    gonio: SimGoniometer | SimSixCircle
    """``SimGoniometer`` (θ, 2θ), or ``SimSixCircle`` when the geometry carries a diffractometer."""
    stage: SimPiezoStage
    detector: Maxipix
    monitor: SimBeamMonitor
    backend: SimMaxipixBackend


def make_sim_beamline(frame_source: FrameSource, *, geometry: BraggGeometry, data_dir: str | Path,
                      roi: Roi | None = None, stage_limits_um: tuple[float, float] = (-100.0, 100.0),
                      settle_time_s: float = 0.0, nominal_current_ma: float = 200.0,
                      exposure_s: float = 0.01, simulate_exposure: bool = True, seed: int = 0,
                      prefix: str = "") -> SimBeamline:
    """Build gonio, stage, monitor and a Maxipix whose backend reads them and ``frame_source``.

    The goniometer starts at θ_B with the arm at 2θ_B; for a general geometry (``geometry.diffractometer``,
    docs/geometry.md) it is a :class:`SimSixCircle` set to the diffractometer's circle angles (η/φ, ν, δ).
    ``prefix`` is prepended to the device names (``gonio``, ``stage``, ``mpx``, ``ring``).
    """
    gonio: SimGoniometer | SimSixCircle
    if geometry.diffractometer is not None:
        from analysis.diffractometer import Diffractometer

        gonio = SimSixCircle(name=f"{prefix}gonio", settle_time_s=settle_time_s)
        gonio.move_to(Diffractometer.from_metadata(geometry.diffractometer).motor_angles_deg())
    else:
        gonio = SimGoniometer(name=f"{prefix}gonio", settle_time_s=settle_time_s)
        gonio.theta.set(geometry.rocking_centre_deg).wait()
        gonio.tth.set(2 * geometry.theta_bragg_deg).wait()
    stage = SimPiezoStage(name=f"{prefix}stage", limits_um=stage_limits_um, settle_time_s=settle_time_s)
    monitor = SimBeamMonitor(name=f"{prefix}ring", nominal_current_ma=nominal_current_ma)
    backend = SimMaxipixBackend(frame_source, stage=stage, gonio=gonio, monitor=monitor,
                                geometry=geometry, seed=seed)
    detector = Maxipix(name=f"{prefix}mpx", backend=backend, data_dir=data_dir, roi=roi,
                       simulate_exposure=simulate_exposure)
    detector.exposure_s.put(exposure_s)
    return SimBeamline(gonio=gonio, stage=stage, detector=detector, monitor=monitor, backend=backend)


@dataclass(frozen=True)
class SimDFXMBeamline:
    """The sim devices of an FP-DFXM instrument (same component names as the EPICS classes)."""

    gonio: SimDFXMGoniometer
    lens: SimCRLStage
    camera: ImagingCamera
    monitor: SimBeamMonitor
    backend: SimDFXMCameraBackend


def make_sim_dfxm_beamline(frame_source: Any, *, geometry: Any, data_dir: str | Path,
                           lens_limits_um: tuple[float, float] = (-2000.0, 2000.0),
                           chi_limits_deg: tuple[float, float] = (-10.0, 10.0),
                           settle_time_s: float = 0.0, nominal_current_ma: float = 200.0, exposure_s: float = 0.01,
                           simulate_exposure: bool = True, seed: int = 0, prefix: str = "") -> SimDFXMBeamline:
    """Build DFXM goniometer, lens stage, monitor and an imaging camera whose backend reads them.

    ``frame_source`` follows ``devices.dfxm.DFXMFrameSource`` (``sim.dfxm.DFXMSimulator``);
    ``geometry`` is the ``FPDFXMGeometry`` with its reflection. The goniometer starts at
    θ_B, χ = 0, 2θ_B; the lens at 0. Device names: ``gonio``, ``lens``, ``cam``, ``ring`` after ``prefix``.
    """
    gonio = SimDFXMGoniometer(name=f"{prefix}gonio", chi_limits_deg=chi_limits_deg, settle_time_s=settle_time_s)
    theta_b_deg = math.degrees(geometry.bragg_angle_rad)
    gonio.theta.set(theta_b_deg).wait()
    gonio.tth.set(2 * theta_b_deg).wait()
    lens = SimCRLStage(name=f"{prefix}lens", translation_limits_um=lens_limits_um, settle_time_s=settle_time_s)
    monitor = SimBeamMonitor(name=f"{prefix}ring", nominal_current_ma=nominal_current_ma)
    backend = SimDFXMCameraBackend(frame_source, lens=lens, gonio=gonio, monitor=monitor, geometry=geometry,
                                   seed=seed)
    camera = ImagingCamera(name=f"{prefix}cam", backend=backend, data_dir=data_dir,
                           simulate_exposure=simulate_exposure,
                           pixel_size_um=geometry.pixel_size_m * geometry.objective.magnification * 1e6)
    camera.exposure_s.put(exposure_s)
    return SimDFXMBeamline(gonio=gonio, lens=lens, camera=camera, monitor=monitor, backend=backend)
