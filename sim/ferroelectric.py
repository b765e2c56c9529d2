"""Ferroelectric c/a domain sample for the FP-DFXM simulator (BaTiO₃-like thin film, 00l reflection).

The sample is a pattern: stripes of c (P ∥ z) and a (P ∥ x) domains separated by 90° walls,
an elastic stress field and a structure amplitude. The constitutive physics (P and the
spontaneous strain of each variant under the local stress, LGD model) is *not* computed here:
the caller hands the strain along ĝ in as data (``pxm.ferroelectric`` uses
``analysis.ferro``), so the simulator shares no code with the inversion it tests.
:func:`strain_exit_field` turns that strain map into the exit field seen by a scan whose
2θ is set for a chosen reference lattice (same phase convention as
:func:`sim.dfxm.crystal_exit_field`, docs/fp-dfxm.md, Reciprocal space and pupil).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.dfxm.geometry import Reflection
from sim.dfxm import _smooth_step, _texture

__all__ = ["VARIANT_NONE", "VARIANT_C", "VARIANT_A", "DomainPattern", "ca_domain_pattern", "strain_exit_field"]

VARIANT_NONE = 0
"""Label of a voxel without a variant (no signal)."""
VARIANT_C = 1
"""Label of the c variant: P along the film normal z (the 00l direction)."""
VARIANT_A = 2
"""Label of the a variant: P in the film plane, along x."""


@dataclass(frozen=True, kw_only=True)
class DomainPattern:
    """Ground-truth layout of a c/a domain film on the simulator's (fine) grid (ROW, COL)."""

    c_weight: np.ndarray = field(repr=False)
    """(ROW, COL) in [0, 1]: 1 inside c domains, 0 inside a domains; tanh profile across 90° walls.
    The polarization direction is cos β ẑ + sin β x̂ with β = (π/2)(1 − c_weight)."""
    variant: np.ndarray = field(repr=False)
    """(ROW, COL) int8 label, :data:`VARIANT_C` where c_weight ≥ ½, else :data:`VARIANT_A`."""
    stress_along_g_pa: np.ndarray = field(repr=False)
    """(ROW, COL) uniaxial stress σ_gg along the reflection (Pa): the elastic, non-spontaneous part."""
    amplitude: np.ndarray = field(repr=False)
    """(ROW, COL) exit-field amplitude (walls dimmed, smooth texture)."""
    pixel_size_m: float


def ca_domain_pattern(n_px: int, pixel_size_m: float, *, variants: tuple[str, ...] = ("c", "a", "c", "a"),
                      wall_width_m: float = 10e-9, stress_bump_pa: float = 60e6,
                      stress_bump_center_frac: tuple[float, float] = (0.5, 0.5),
                      stress_bump_width_frac: float = 0.2, texture_amplitude: float = 0.15,
                      seed: int = 0) -> DomainPattern:
    """Stripes of c/a domains (walls along the columns, equal widths), a Gaussian stress bump and texture.

    ``variants`` lists the stripes from the top row down (``"c"`` or ``"a"``). The walls are
    horizontal so the domain strain varies along the rows only (no rigid twin tilt is modelled).
    The stress bump σ_gg = ``stress_bump_pa`` · exp(−r²/2w²) (w = ``stress_bump_width_frac`` · field)
    stands for the local elastic stress the one-reflection inversion infers (docs/polarization.md, Equations).
    """
    if not (isinstance(n_px, int) and n_px >= 8):
        raise ValueError(f"ca_domain_pattern: n_px must be an int >= 8, got {n_px!r}")
    if not pixel_size_m > 0 or not wall_width_m > 0 or not stress_bump_width_frac > 0:
        raise ValueError("ca_domain_pattern: pixel_size_m, wall_width_m and stress_bump_width_frac must be > 0, got "
                         f"{pixel_size_m!r}, {wall_width_m!r}, {stress_bump_width_frac!r}")
    if not variants or any(v not in ("c", "a") for v in variants):
        raise ValueError(f"ca_domain_pattern: variants must be a non-empty sequence of 'c'/'a', got {variants!r}")
    if not math.isfinite(stress_bump_pa):
        raise ValueError(f"ca_domain_pattern: stress_bump_pa must be finite, got {stress_bump_pa!r}")
    idx = np.arange(n_px, dtype=float)
    rows = idx[:, None] * np.ones((1, n_px))
    cols = np.ones((n_px, 1)) * idx[None, :]
    w_px = wall_width_m / pixel_size_m
    target = np.array([1.0 if v == "c" else 0.0 for v in variants])
    c_weight = np.full((n_px, n_px), target[0])
    wall = np.zeros((n_px, n_px))
    for k in range(1, len(variants)):
        edge = n_px * k / len(variants)
        c_weight = c_weight + (target[k] - target[k - 1]) * _smooth_step(rows - edge, w_px)
        if target[k] != target[k - 1]:
            wall = wall + np.exp(-((rows - edge) / (2 * max(w_px, 1.0))) ** 2)
    width_px = stress_bump_width_frac * n_px
    r2 = (rows - stress_bump_center_frac[0] * n_px) ** 2 + (cols - stress_bump_center_frac[1] * n_px) ** 2
    stress = stress_bump_pa * np.exp(-r2 / (2 * width_px**2))
    amp = (1.0 - 0.5 * np.clip(wall, 0, 1)) * (1 + texture_amplitude * np.tanh(_texture(n_px, pixel_size_m, seed)))
    variant = np.where(c_weight >= 0.5, VARIANT_C, VARIANT_A).astype(np.int8)
    return DomainPattern(c_weight=c_weight, variant=variant, stress_along_g_pa=stress, amplitude=amp,
                         pixel_size_m=float(pixel_size_m))


def strain_exit_field(strain_g: np.ndarray, amplitude: np.ndarray, pixel_size_m: float, reflection: Reflection,
                      energy_kev: float, *, reference_strain: float) -> np.ndarray:
    """Exit field A·exp(iφ) of a strain map ε_g (relative to the cubic parent) for a scan set at ``reference_strain``.

    The scan's 2θ and ``reflection`` (its d-spacing) belong to the reference lattice
    d_ref = d_parent (1 + ``reference_strain``); the strain seen relative to it is
    Δε = (1 + ε_g)/(1 + ε_ref) − 1, integrated along the rows as in :func:`sim.dfxm.crystal_exit_field`:
    φ = |G_ref| Δx Σ_row cosθ (−Δε) (q_par = −Δε, no rocking tilt; docs/fp-dfxm.md, Reciprocal space and pupil).
    """
    eps = np.asarray(strain_g, float)
    amp = np.asarray(amplitude, float)
    if eps.ndim != 2 or eps.shape != amp.shape:
        raise ValueError(f"strain_exit_field: strain_g {eps.shape} and amplitude {amp.shape} must be the same 2D shape")
    if not np.all(np.isfinite(eps)):
        raise ValueError("strain_exit_field: strain_g has NaN/inf values; the simulator needs a strain everywhere")
    if not (math.isfinite(reference_strain) and reference_strain > -1):
        raise ValueError(f"strain_exit_field: reference_strain must be finite and > −1, got {reference_strain!r}")
    if not isinstance(reflection, Reflection):
        raise ValueError("strain_exit_field: reflection metadata (analysis.dfxm.Reflection) is required")
    theta = reflection.bragg_angle_rad(energy_kev)
    d_eps = (1.0 + eps) / (1.0 + reference_strain) - 1.0
    phase = reflection.g_per_m * pixel_size_m * np.cumsum(math.cos(theta) * (-d_eps), axis=0)
    return amp * np.exp(1j * phase)
