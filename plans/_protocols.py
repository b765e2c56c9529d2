"""Structural types of the devices plans take (plans never import ``devices``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from bluesky.protocols import Configurable, HasHints, Movable, Readable, Triggerable


@runtime_checkable
class AreaDetector(Readable, Triggerable, Configurable, HasHints, Protocol):
    """A triggerable, readable, configurable detector with hints (e.g. the Maxipix)."""


@runtime_checkable
class XYStage(Protocol):
    """A sample stage with ``x`` and ``y`` axes (µm)."""

    x: Any
    y: Any


@runtime_checkable
class RockingGoniometer(Protocol):
    """A goniometer with a rocking axis ``theta`` and a detector arm ``tth`` (deg)."""

    theta: Any
    tth: Any


def check_axes(obj: Any, kind: str, axes: tuple[str, ...]) -> None:
    """Raise TypeError unless ``obj`` has Movable, Readable attributes ``axes``."""
    for axis in axes:
        motor = getattr(obj, axis, None)
        if not (isinstance(motor, Movable) and isinstance(motor, Readable)):
            raise TypeError(f"{kind} {getattr(obj, 'name', obj)!r}: attribute {axis!r} must be a movable, "
                            f"readable axis (bluesky.protocols.Movable & Readable), got {type(motor).__name__}")


def check_detector(det: Any) -> None:
    """Raise TypeError unless ``det`` is Readable, Triggerable and Configurable."""
    for proto in (Readable, Triggerable, Configurable):
        if not isinstance(det, proto):
            raise TypeError(f"detector {getattr(det, 'name', det)!r} is not {proto.__name__} "
                            "(bluesky.protocols); pass an area detector such as the Maxipix")
