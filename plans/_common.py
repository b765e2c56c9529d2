"""Validation and metadata helpers shared by the plans (no messages)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.geometry import BraggGeometry

START_SCHEMA_VERSION = "pxm-start/1"
"""Value of ``pxm_schema`` in every pxm start document (docs/start-document.md)."""


def as_positions_um(positions_um: Any) -> np.ndarray:
    """(N, 2) float64 (x, y) positions in µm; ValueError on wrong shape, NaN or empty."""
    pos = np.asarray(positions_um, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1:
        raise ValueError(f"positions_um: shape {pos.shape}, expected (n_positions >= 1, 2) of (x, y) in µm; "
                         "build them with plans.patterns")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions_um contain NaN or inf")
    return pos


def as_angles_deg(angles_deg: Any) -> np.ndarray:
    """(M,) float64 goniometer angles in degrees; ValueError when empty or non-finite."""
    ang = np.asarray(angles_deg, dtype=float)
    if ang.ndim != 1 or ang.size < 1:
        raise ValueError(f"angles_deg: shape {ang.shape}, expected (n_angles >= 1,); "
                         "build them with plans.patterns.rocking_angles_deg")
    if not np.all(np.isfinite(ang)):
        raise ValueError("angles_deg contain NaN or inf")
    return ang


def as_geometry(geometry: BraggGeometry | Mapping[str, Any]) -> BraggGeometry:
    """Accept a BraggGeometry or its ``to_metadata()`` dict (queueserver passes dicts)."""
    if isinstance(geometry, BraggGeometry):
        return geometry
    if isinstance(geometry, Mapping):
        return BraggGeometry.from_metadata(dict(geometry))
    raise TypeError(f"geometry must be BraggGeometry or its to_metadata() dict, got {type(geometry).__name__}")


def check_exposure(exposure_s: float) -> float:
    """Return ``exposure_s`` as float; ValueError unless finite and > 0."""
    if isinstance(exposure_s, bool) or not isinstance(exposure_s, (int, float)) or not (
            math.isfinite(exposure_s) and exposure_s > 0):
        raise ValueError(f"exposure_s must be a finite number > 0 s, got {exposure_s!r}")
    return float(exposure_s)


def check_sample(sample: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the sample metadata as a dict; ValueError unless it has a non-empty ``name``."""
    if sample is None or not isinstance(sample, Mapping):
        raise ValueError("sample metadata missing: pass sample={'name': ..., ...} (required key 'name'; "
                         "optional 'material', 'thickness_m', 'description')")
    name = sample.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"sample metadata: 'name' must be a non-empty string, got {name!r}; "
                         "e.g. sample={'name': 'W-foil-07'}")
    return dict(sample)


def check_within_limits(motor: Any, values: np.ndarray, what: str) -> None:
    """ValueError if any of ``values`` lies outside ``motor.limits`` (skipped when limits are (0, 0))."""
    limits = getattr(motor, "limits", None)
    if limits is None:
        return
    lo, hi = (float(v) for v in limits)
    if lo == hi == 0:   # EPICS convention: no limits
        return
    bad = (values < lo) | (values > hi)
    if np.any(bad):
        raise ValueError(
            f"{what}: {int(bad.sum())} target(s) of {getattr(motor, 'name', motor)!r} outside its limits "
            f"[{lo}, {hi}] (first {values[bad][0]!r}); nothing was moved; shrink or recentre the pattern")


def check_geometry_angles(geometry: BraggGeometry, angles: np.ndarray) -> None:
    """ValueError unless the angles match ``geometry.n_angles`` and its uniform ``rocking_step_deg``."""
    if angles.size != geometry.n_angles:
        raise ValueError(f"angles_deg has {angles.size} angles but geometry.n_angles = {geometry.n_angles}; "
                         "make them agree (the reconstruction grid depends on it)")
    if angles.size > 1:
        steps = np.diff(angles)
        step = abs(geometry.rocking_step_deg)
        if not np.allclose(np.abs(steps), step, rtol=1e-6, atol=1e-12):
            raise ValueError(f"angles_deg steps {steps.min():.6g}..{steps.max():.6g} deg do not equal "
                             f"geometry.rocking_step_deg = {geometry.rocking_step_deg} deg; "
                             "use plans.patterns.rocking_angles_deg with the geometry's step")


def merge_md(base: dict[str, Any], md: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge user ``md`` last (it wins), as bluesky's ``count`` does."""
    if md is not None and not isinstance(md, Mapping):
        raise TypeError(f"md must be a mapping or None, got {type(md).__name__}")
    return {**base, **(md or {})}


def names(objs: Sequence[Any]) -> list[str]:
    """Device names (``repr`` for objects without one)."""
    return [getattr(o, "name", repr(o)) for o in objs]
