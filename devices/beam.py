"""Beam monitor: storage-ring current in mA (EPICS and sim)."""

from __future__ import annotations

import math
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, Kind

from devices.signals import UnitSignal


class BeamMonitor(Device):
    """EPICS ring-current monitor; ``current`` in mA (EGU from the IOC)."""

    current = Cpt(EpicsSignalRO, "CURRENT", kind=Kind.hinted)


class SimBeamMonitor(Device):
    """Soft ring-current monitor whose ``current`` (mA) tests drive to a dump and back."""

    current = Cpt(UnitSignal, value=200.0, units="mA", kind=Kind.hinted)

    def __init__(self, prefix: str = "", *, name: str, nominal_current_ma: float = 200.0,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        if not (math.isfinite(nominal_current_ma) and nominal_current_ma > 0):
            raise ValueError(f"{name}: nominal_current_ma must be > 0, got {nominal_current_ma!r}")
        self.nominal_current_ma = float(nominal_current_ma)
        self.current.put(self.nominal_current_ma)

    def dump(self) -> None:
        """Simulate a beam dump: current drops to 0 mA."""
        self.current.put(0.0)

    def refill(self, current_ma: float | None = None) -> None:
        """Restore the beam to ``current_ma`` (default: the nominal current)."""
        value = self.nominal_current_ma if current_ma is None else float(current_ma)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{self.name}: current_ma must be >= 0, got {current_ma!r}")
        self.current.put(value)
