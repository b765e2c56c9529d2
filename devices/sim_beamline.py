"""Factory for a complete simulated beamline bound to one FrameSource."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.geometry import BraggGeometry, Roi
from devices.beam import SimBeamMonitor
from devices.maxipix import FrameSource, Maxipix
from devices.motion import SimGoniometer, SimPiezoStage
from devices.sim_backends import SimMaxipixBackend


@dataclass(frozen=True)
class SimBeamline:
    """The sim devices of one beamline (same component names as the EPICS classes)."""

    gonio: SimGoniometer
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

    The goniometer starts at θ_B with the arm at 2θ_B. ``prefix`` is prepended to the
    device names (``gonio``, ``stage``, ``mpx``, ``ring``).
    """
    gonio = SimGoniometer(name=f"{prefix}gonio", settle_time_s=settle_time_s)
    gonio.theta.set(geometry.theta_bragg_deg).wait()
    gonio.tth.set(2 * geometry.theta_bragg_deg).wait()
    stage = SimPiezoStage(name=f"{prefix}stage", limits_um=stage_limits_um, settle_time_s=settle_time_s)
    monitor = SimBeamMonitor(name=f"{prefix}ring", nominal_current_ma=nominal_current_ma)
    backend = SimMaxipixBackend(frame_source, stage=stage, gonio=gonio, monitor=monitor,
                                geometry=geometry, seed=seed)
    detector = Maxipix(name=f"{prefix}mpx", backend=backend, data_dir=data_dir, roi=roi,
                       simulate_exposure=simulate_exposure)
    detector.exposure_s.put(exposure_s)
    return SimBeamline(gonio=gonio, stage=stage, detector=detector, monitor=monitor, backend=backend)
