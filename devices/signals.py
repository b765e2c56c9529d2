"""Soft signals and a soft positioner whose ``describe()`` carries ``units``."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import Status
from ophyd.utils import LimitError


class UnitSignal(Signal):
    """Soft :class:`ophyd.Signal` that reports ``units`` in ``describe()``."""

    def __init__(self, *args: Any, units: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.units = units

    def describe(self) -> dict[str, dict[str, Any]]:
        """Describe the signal, adding ``units``."""
        desc = super().describe()
        desc[self.name]["units"] = self.units
        return desc


class SimAxis(Device):
    """Soft axis with soft limits and a settle time; moving outside the limits raises.

    ``readback`` (hinted) follows ``setpoint`` after ``settle_time_s``; both carry
    ``units`` = ``egu``. Out-of-limit targets raise :class:`ophyd.utils.LimitError`
    (a ``ValueError``) before anything moves; the axis never clamps.
    """

    readback = Cpt(UnitSignal, value=0.0, kind=Kind.hinted)
    setpoint = Cpt(UnitSignal, value=0.0, kind=Kind.normal)

    def __init__(self, prefix: str = "", *, name: str, egu: str = "", limits: tuple[float, float] = (-1e9, 1e9),
                 settle_time_s: float = 0.0, initial: float = 0.0, **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.egu = egu
        self.set_limits(limits)
        self.set_settle_time(settle_time_s)
        self.readback.units = egu
        self.setpoint.units = egu
        self.readback.name = self.name
        self.check_value(initial)
        self.setpoint.put(float(initial))
        self.readback.put(float(initial))
        self._move_lock = threading.Lock()

    def set_limits(self, limits: tuple[float, float]) -> None:
        """Set the (low, high) soft limits in ``egu``; raises ValueError unless finite and low < high."""
        lo, hi = (float(v) for v in limits)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{self.name}: limits must be finite with low < high, got {limits!r}")
        self._limits = (lo, hi)

    def set_settle_time(self, settle_time_s: float) -> None:
        """Set the settle time (seconds, >= 0) waited after each move."""
        if not (math.isfinite(settle_time_s) and settle_time_s >= 0):
            raise ValueError(f"{self.name}: settle_time_s must be >= 0, got {settle_time_s!r}")
        self.settle_time_s = float(settle_time_s)

    @property
    def limits(self) -> tuple[float, float]:
        """(low, high) soft limits in ``egu``."""
        return self._limits

    @property
    def low_limit(self) -> float:
        """Low soft limit in ``egu``."""
        return self._limits[0]

    @property
    def high_limit(self) -> float:
        """High soft limit in ``egu``."""
        return self._limits[1]

    @property
    def position(self) -> float:
        """Current readback in ``egu``."""
        return float(self.readback.get())

    def check_value(self, value: float) -> None:
        """Raise LimitError (a ValueError) if ``value`` lies outside the soft limits."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{self.name}: target must be a finite number in {self.egu}, got {value!r}")
        lo, hi = self._limits
        if not lo <= value <= hi:
            raise LimitError(
                f"{self.name}: target {value} {self.egu} is outside the soft limits "
                f"[{lo}, {hi}] {self.egu}; the axis was not moved; choose a target inside the limits"
            )

    def set(self, value: float, **kwargs: Any) -> Status:
        """Move to ``value`` (raises LimitError outside the limits); returns a Status."""
        self.check_value(value)
        value = float(value)
        status = Status(obj=self, timeout=None)
        self.setpoint.put(value)

        def _finish() -> None:
            with self._move_lock:
                if self.settle_time_s:
                    time.sleep(self.settle_time_s)
                self.readback.put(value)
            status.set_finished()

        if self.settle_time_s:
            threading.Thread(target=_finish, daemon=True, name=f"{self.name}-move").start()
        else:
            _finish()
        return status

    def stop(self, *, success: bool = False) -> None:
        """Soft axes stop instantly (no-op)."""
