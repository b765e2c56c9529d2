"""Strain and tilt maps from the FP-DFXM Bragg phase, and the phase-error metric (docs/fp-dfxm.md, Strain)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.dfxm.geometry import FPDFXMGeometry
from analysis.xp import Array, array_module, to_numpy

__all__ = ["StrainTiltMaps", "strain_tilt_from_phase", "phase_error_rms_rad"]


@dataclass(frozen=True, kw_only=True)
class StrainTiltMaps:
    """Strain and tilts from the Bragg phase (docs/fp-dfxm.md, Strain)."""

    q_2theta: Array = field(repr=False)
    """(ROW, COL) ∂φ/∂row / |G|."""
    q_roll: Array = field(repr=False)
    """(ROW, COL) ∂φ/∂col / |G| = roll tilt (rad)."""
    strain: Array = field(repr=False)
    """ε_GG = −(sinθ q_rock' + cosθ q_2θ)."""
    tilt_rock_rad: Array = field(repr=False)
    """δφ = cosθ q_rock' − sinθ q_2θ."""


def strain_tilt_from_phase(obj: Array, geometry: FPDFXMGeometry, *, pixel_size_m: float,
                           q_rock_prime: Array | None = None) -> StrainTiltMaps:
    """Strain and tilt maps from a complex Bragg object without unwrapping (docs/fp-dfxm.md, Strain).

    The phase gradient is arg(O(r+Δ)O*(r−Δ))/2Δ (wrap-free form of Im(O*∇O)/|O|²);
    ``q_rock_prime`` (ROW, COL) from the rocking-curve centre of mass, default 0.
    """
    if geometry.reflection is None:
        raise ValueError("strain_tilt_from_phase: geometry has no reflection metadata (|G|, θ); "
                         "pass FPDFXMGeometry(reflection=Reflection(hkl=..., d_spacing_m=...))")
    xp = array_module(obj)
    if obj.ndim != 2 or not bool(xp.all(xp.isfinite(obj))):
        raise ValueError(f"obj: expected a finite 2D complex array, got shape {tuple(obj.shape)}")
    if not pixel_size_m > 0:
        raise ValueError(f"pixel_size_m must be > 0, got {pixel_size_m!r}")
    g = geometry.reflection.g_per_m
    theta = geometry.bragg_angle_rad
    d_row = xp.angle(xp.roll(obj, -1, axis=0) * xp.conj(xp.roll(obj, 1, axis=0))) / (2 * pixel_size_m)
    d_col = xp.angle(xp.roll(obj, -1, axis=1) * xp.conj(xp.roll(obj, 1, axis=1))) / (2 * pixel_size_m)
    q2t, qroll = d_row / g, d_col / g
    qr = 0.0 * q2t if q_rock_prime is None else q_rock_prime
    return StrainTiltMaps(q_2theta=q2t, q_roll=qroll,
                          strain=-(math.sin(theta) * qr + math.cos(theta) * q2t),
                          tilt_rock_rad=math.cos(theta) * qr - math.sin(theta) * q2t)


def phase_error_rms_rad(estimate: Array, truth: Array, *, weights: Array | None = None,
                        remove_ramp: bool = True) -> float:
    """Weighted rms of arg(est·conj(truth)) after removing global phase (and a linear ramp)
    (docs/fp-dfxm.md, Strain).
    """
    est, tru = to_numpy(estimate), to_numpy(truth)
    if est.shape != tru.shape:
        raise ValueError(f"phase_error_rms_rad: shapes {est.shape} and {tru.shape} differ")
    w = np.abs(tru) ** 2 if weights is None else np.asarray(to_numpy(weights), float)
    d = est * np.conj(tru)
    if remove_ramp:
        # ramp from the weighted mean wrap-free gradient of d
        gr = np.angle(np.sum(w[1:, :] * d[1:, :] * np.conj(d[:-1, :])))
        gc = np.angle(np.sum(w[:, 1:] * d[:, 1:] * np.conj(d[:, :-1])))
        r = np.arange(d.shape[0])[:, None]
        c = np.arange(d.shape[1])[None, :]
        d = d * np.exp(-1j * (gr * r + gc * c))
    d = d * np.exp(-1j * np.angle(np.sum(w * d)))
    ph = np.angle(d)
    return float(np.sqrt(np.sum(w * ph**2) / np.sum(w)))
