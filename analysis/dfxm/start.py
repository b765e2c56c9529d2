"""FP-DFXM start object from the diversity scan: centre-of-mass phase gradient, vortices, integration.

The slowly varying phase is poorly constrained per EPRY sweep and a flat start leaves it for
hundreds of sweeps (docs/fp-dfxm.md), so the object starts from the per-pixel centre of mass
of the intensity over the diversity shifts (local phase gradient, integrated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.dfxm.geometry import FPDFXMGeometry
from analysis.dfxm.vortices import (
    PhaseVortex,
    _bright_plaquettes,
    _pick_vortices,
    _plaquette_circulation,
    vortex_phase_rad,
)
from analysis.xp import Array, array_module, fft_module, to_numpy

__all__ = ["DiversityStart", "initial_object_from_diversity"]


def _upsample_nearest(a: Array, u: int) -> Array:
    xp = array_module(a)
    return xp.repeat(xp.repeat(a, u, axis=0), u, axis=1)


def _weighted_ls_phase(g_row: np.ndarray, g_col: np.ndarray, weight: np.ndarray, *, n_iter: int = 60,
                       rtol: float = 1e-6) -> np.ndarray:
    """φ minimising Σ w(Dφ − g)² over forward differences (non-periodic), by PCG with an FFT Poisson preconditioner.

    Weighted least-squares integration of a measured gradient [Ghiglia & Romero, JOSA A 11, 107 (1994),
    doi:10.1364/JOSAA.11.000107]: edges into dark pixels (outside the grain, dislocation cores) carry no
    weight, so the phase there follows from the bright region (Neumann-like), not from a zero gradient.
    """
    n_r, n_c = weight.shape
    w_r = np.minimum(weight[1:, :], weight[:-1, :])
    w_c = np.minimum(weight[:, 1:], weight[:, :-1])
    e_r = 0.5 * (g_row[1:, :] + g_row[:-1, :])
    e_c = 0.5 * (g_col[:, 1:] + g_col[:, :-1])

    def dt(a_r: np.ndarray, a_c: np.ndarray) -> np.ndarray:        # Dᵀ (negative divergence)
        out = np.zeros((n_r, n_c))
        out[1:, :] += a_r
        out[:-1, :] -= a_r
        out[:, 1:] += a_c
        out[:, :-1] -= a_c
        return out

    def apply(p: np.ndarray) -> np.ndarray:
        return dt(w_r * (p[1:, :] - p[:-1, :]), w_c * (p[:, 1:] - p[:, :-1]))

    lap = ((4 * np.sin(np.pi * np.fft.fftfreq(2 * n_r)) ** 2)[:, None]
           + (4 * np.sin(np.pi * np.fft.fftfreq(2 * n_c)) ** 2)[None, :])
    lap[0, 0] = 1.0

    def precondition(r: np.ndarray) -> np.ndarray:                  # Neumann Laplacian⁻¹ via an even extension
        ext = np.concatenate([r, r[::-1]], axis=0)
        ext = np.concatenate([ext, ext[:, ::-1]], axis=1)
        z = np.fft.fft2(ext) / lap
        z[0, 0] = 0.0
        return np.real(np.fft.ifft2(z))[:n_r, :n_c]

    b = dt(w_r * e_r, w_c * e_c)
    phi = np.zeros((n_r, n_c))
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = float(np.sum(r * z))
    b_norm = float(np.linalg.norm(b)) or 1.0
    for _ in range(n_iter):
        ap = apply(p)
        alpha = rz / (float(np.sum(p * ap)) or 1e-300)
        phi += alpha * p
        r -= alpha * ap
        if float(np.linalg.norm(r)) <= rtol * b_norm:
            break
        z = precondition(r)
        rz_new = float(np.sum(r * z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return phi


@dataclass(frozen=True, kw_only=True)
class DiversityStart:
    """Start object of :func:`initial_object_from_diversity` and the vortices put into it."""

    object: Array = field(repr=False)
    """(HR_ROW, HR_COL) complex start object."""
    vortices: tuple[PhaseVortex, ...]
    """Vortices found in the centre-of-mass gradient, positions on the raw (n_px) grid."""


def initial_object_from_diversity(frames: Array, shifts_rad: Array, geometry: FPDFXMGeometry, *,
                                  pupil_center_rad: tuple[float, float] | None = None,
                                  background_counts: float = 0.0, vortex_window_px: int | None = 7,
                                  vortex_min_turns: float = 0.6, support_weighted: bool = False) -> DiversityStart:
    """Complex start object: phase from the local spectrum position (with vortices), amplitude from ΣI.

    A locally plane object O ∝ exp(2πi f·x) puts its light through the pupil where f + κ_j = α_c,
    so the intensity-weighted centre of mass κ̄(x) = Σ_j I_j κ_j / Σ_j I_j gives the local phase
    gradient ∇φ = 2π(α_c − κ̄)/λ (the conventional DFXM centre-of-mass map). Its circulation
    ∮∇φ·dl = 2πn over ``vortex_window_px`` windows of bright plaquettes locates dislocation vortices
    (|n| ≥ ``vortex_min_turns``; None: none sought), added as n·atan2. The rest is integrated by
    least squares with FFTs (periodic field), or with ``support_weighted`` first by weighted least
    squares over the bright pixels (finite grains in a dark field). Amplitude √(ΣI_j / Σ_j|P(κ_j)|²).
    """
    xp = array_module(frames)
    fft = fft_module(xp)
    u, big = geometry.upsampling, geometry.hr_n_px
    c = geometry.pupil_center_rad if pupil_center_rad is None else pupil_center_rad
    s = np.asarray(shifts_rad, float)
    inten = xp.maximum(frames - background_counts, 0.0)
    total = xp.sum(inten, axis=0)
    w = total + 1e-3 * float(xp.max(total)) + 1e-300             # dark pixels: gradient → 0
    k_row = xp.tensordot(xp.asarray(s[:, 0]), inten, axes=1) / w
    k_col = xp.tensordot(xp.asarray(s[:, 1]), inten, axes=1) / w
    lam = geometry.wavelength_m
    grad_row = 2 * math.pi * (c[0] - k_row) / lam                  # rad/m on the raw grid
    grad_col = 2 * math.pi * (c[1] - k_col) / lam
    gr = to_numpy(grad_row) * geometry.pixel_size_m                 # rad per raw pixel
    gc = to_numpy(grad_col) * geometry.pixel_size_m
    tot = to_numpy(total)
    vortices: tuple[PhaseVortex, ...] = ()
    if vortex_window_px is not None:
        circ = _plaquette_circulation(0.5 * (gr[1:, :] + gr[:-1, :]), 0.5 * (gc[:, 1:] + gc[:, :-1]))
        allowed = _bright_plaquettes(tot, fraction=0.04)           # intensity: 0.2 in amplitude
        vortices = _pick_vortices(circ, allowed, window_px=vortex_window_px, min_turns=vortex_min_turns)
    n = geometry.n_px
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    for v in vortices:                                               # remove ∇(n·atan2): curl-free remainder
        rho2 = np.maximum((rows - v.row_px) ** 2 + (cols - v.col_px) ** 2, 1.0)
        gr = gr - v.winding * (cols - v.col_px) / rho2
        gc = gc + v.winding * (rows - v.row_px) / rho2
    if support_weighted:
        weight = np.clip(tot / (0.25 * float(np.percentile(tot, 99)) + 1e-300), 0.0, 1.0)
        phase_raw = _weighted_ls_phase(gr, gc, weight)
        # raw pixel i is HR pixel u·i (ψ_j samples the band-limited O there, module docstring)
        from scipy.ndimage import map_coordinates

        hr_r, hr_c = np.meshgrid(np.arange(big) / u, np.arange(big) / u, indexing="ij")
        smooth = xp.asarray(map_coordinates(phase_raw, [hr_r, hr_c], order=3, mode="nearest"))
        fit_r, fit_c = np.gradient(phase_raw)
        gr, gc = weight * (gr - fit_r), weight * (gc - fit_c)     # detail left by the smooth fit, bright only
    else:
        smooth = 0.0
    g_row = _upsample_nearest(xp.asarray(gr), u) / geometry.pixel_size_m        # rad/m on the HR grid
    g_col = _upsample_nearest(xp.asarray(gc), u) / geometry.pixel_size_m
    k = xp.asarray(2 * math.pi * np.fft.fftfreq(big, d=geometry.hr_pixel_size_m))
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    k2[0, 0] = 1.0
    ph = -1j * (k[:, None] * fft.fft2(g_row) + k[None, :] * fft.fft2(g_col)) / k2
    ph[0, 0] = 0.0
    phase_hr = smooth + xp.real(fft.ifft2(ph))
    phase = phase_hr + vortex_phase_rad((big, big), vortices, scale=u, xp=xp)
    obj = geometry.objective
    r2 = (s[:, 0] - c[0]) ** 2 + (s[:, 1] - c[1]) ** 2
    p2 = float(np.sum(np.exp(-r2 / (2 * obj.na_rms_rad**2)) * (r2 <= obj.aperture_half_angle_rad**2)))
    amp = _upsample_nearest(xp.sqrt(total / max(p2, 1e-12)), u)
    return DiversityStart(object=amp * xp.exp(1j * phase), vortices=vortices)
