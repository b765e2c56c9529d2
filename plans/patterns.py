"""Scan trajectories as pure functions (no messages): raster, Archimedean spiral, rocking angles."""

from __future__ import annotations

import math

import numpy as np


def _check_step(name: str, step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(step).__name__}")
    if not (math.isfinite(step) and step != 0):
        raise ValueError(f"{name} must be finite and non-zero, got {step!r}; give the spacing between points")
    return float(step)


def _check_count(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}; a scan needs at least one point")
    return int(n)


def raster_positions_um(nx: int, ny: int, step_um: float, *, centre_um: tuple[float, float] = (0.0, 0.0),
                        jitter_fraction: float = 0.0, seed: int | None = None) -> np.ndarray:
    """Raster of ``nx × ny`` (x, y) positions in µm, x fastest, centred on ``centre_um``.

    ``jitter_fraction`` adds uniform noise of ±fraction·|step| per coordinate (seeded by
    ``seed``) to break the raster's periodicity. Returns an (nx·ny, 2) float64 array.
    """
    nx, ny = _check_count("nx", nx), _check_count("ny", ny)
    step = _check_step("step_um", step_um)
    if not (0.0 <= jitter_fraction < 0.5):
        raise ValueError(f"jitter_fraction must lie in [0, 0.5), got {jitter_fraction!r}")
    xs = (np.arange(nx) - (nx - 1) / 2) * step + centre_um[0]
    ys = (np.arange(ny) - (ny - 1) / 2) * step + centre_um[1]
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pos = np.stack([xx.ravel(), yy.ravel()], axis=1)
    if jitter_fraction > 0:
        rng = np.random.default_rng(seed)
        pos = pos + rng.uniform(-1, 1, size=pos.shape) * jitter_fraction * abs(step)
    return pos


def archimedean_spiral_um(n_points: int, step_um: float, *,
                          centre_um: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``n_points`` (x, y) positions in µm on an Archimedean spiral r = b·φ.

    Arm spacing 2πb = |step| and arc spacing ≈ |step|: φ_k = √(4πk), r_k = |step|·√(k/π).
    Returns an (n_points, 2) float64 array starting at the centre.
    """
    n = _check_count("n_points", n_points)
    step = abs(_check_step("step_um", step_um))
    k = np.arange(n, dtype=float)
    phi = np.sqrt(4 * math.pi * k)
    r = step * np.sqrt(k / math.pi)
    return np.stack([centre_um[0] + r * np.cos(phi), centre_um[1] + r * np.sin(phi)], axis=1)


def rocking_angles_deg(centre_deg: float, step_deg: float, n_angles: int) -> np.ndarray:
    """``n_angles`` goniometer angles (deg) of spacing ``step_deg`` centred on ``centre_deg``."""
    n = _check_count("n_angles", n_angles)
    step = _check_step("step_deg", step_deg)
    if not math.isfinite(centre_deg):
        raise ValueError(f"centre_deg must be finite, got {centre_deg!r}")
    return centre_deg + (np.arange(n) - (n - 1) / 2) * step
