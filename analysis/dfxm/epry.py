"""Fourier-ptychographic DFXM reconstruction: Zernike-EPRY of object and pupil aberrations (docs/fp-dfxm.md, Algorithm).

The discrete model (integer spectrum shifts, docs/fp-dfxm.md, Model and conventions) is that of
:mod:`analysis.dfxm.forward`.

Reconstruction (docs/fp-dfxm.md, Algorithm): EPRY [Ou, Zheng & Yang, Opt. Express 22, 4960 (2014),
doi:10.1364/OE.22.004960] with the pupil phase restricted to Noll Zernikes (Gauss–Newton
step in Zernike space once per sweep; tip/tilt zeroed), |P| fixed to the CRL Gaussian. The object
starts from the per-pixel centre of mass of the intensity over the diversity shifts (local phase
gradient, integrated): the slowly varying phase is poorly constrained per sweep and a flat start
leaves it for hundreds of sweeps (docs/fp-dfxm.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np

from analysis.dfxm.forward import _image_ramps, _rho, _window_starts, check_overlap, pupil_amplitude, shifts_to_pixels
from analysis.dfxm.geometry import FPDFXMGeometry
from analysis.dfxm.start import _upsample_nearest, initial_object_from_diversity
from analysis.dfxm.zernike import zernike_basis
from analysis.xp import Array, array_module, fft_module, to_numpy

__all__ = ["FPOptions", "FPResult", "reconstruct_fp_dfxm"]


@dataclass(frozen=True, kw_only=True)
class FPOptions:
    """Options of :func:`reconstruct_fp_dfxm` (docs/fp-dfxm.md, Algorithm, "as tested")."""

    n_iterations: int = 150
    """Sweeps over all frames (150–300 are typical, docs/fp-dfxm.md, Algorithm)."""
    recover_pupil: bool = True
    """Gauss–Newton Zernike pupil update once per sweep (False: pupil fixed to the initial one)."""
    pupil_update_start_iter: int = 3
    """First sweep (0-based) with a pupil update."""
    zernike_indices: tuple[int, ...] = (4, 5, 6, 7, 8, 9, 10, 11)
    """Noll terms refined (piston and tip/tilt are always fitted and discarded)."""
    pupil_step: float = 1.5
    """Scale of the Gauss–Newton Zernike step Δc (> 1: the simultaneous object update absorbs part of
    the per-sweep pupil misfit, so the plain step under-corrects; 1.5 measured best with 2 on the edge)."""
    object_step: float = 1.0
    """ePIE step on the spectrum window."""
    rpie_alpha: float = 1.0
    """rPIE regularisation a in (0, 1]; 1 is ePIE's conj(P)/max|P|²."""
    initial_phase: str = "diversity_com"
    """Object start: ``"diversity_com"`` (phase integrated from the per-pixel centre of mass of the
    intensity over the diversity shifts, with dislocation vortices, amplitude √ΣI),
    ``"diversity_support"`` (the same, integrated by weighted least squares over the bright pixels:
    for a finite grain in a dark field) or ``"flat"`` (√I of the centre frame, phase 0)."""
    min_overlap: float = 0.55
    """Required nearest-neighbour spectral overlap (docs/fp-dfxm.md, Sampling: about 60%)."""
    background_counts: float = 0.0
    """b subtracted before √I."""
    shift_tolerance_px: float = 0.05
    """Largest allowed distance of a shift from the integer frequency grid."""

    def __post_init__(self) -> None:
        if not isinstance(self.n_iterations, int) or self.n_iterations < 1:
            raise ValueError(f"FPOptions.n_iterations must be an int >= 1, got {self.n_iterations!r}")
        if self.pupil_update_start_iter < 0:
            raise ValueError(f"FPOptions.pupil_update_start_iter must be >= 0, got {self.pupil_update_start_iter}")
        bad = [j for j in self.zernike_indices if not isinstance(j, int) or j < 4]
        if bad:
            raise ValueError(f"FPOptions.zernike_indices: {bad} not allowed; use Noll indices >= 4 "
                             "(piston and tip/tilt are degenerate with the object)")
        if not 0 < self.pupil_step <= 2 or not 0 < self.object_step <= 2:
            raise ValueError("FPOptions: pupil_step and object_step must lie in (0, 2]")
        if not 0 < self.rpie_alpha <= 1:
            raise ValueError(f"FPOptions.rpie_alpha must lie in (0, 1], got {self.rpie_alpha}")
        if self.initial_phase not in ("diversity_com", "diversity_support", "flat"):
            raise ValueError("FPOptions.initial_phase must be 'diversity_com', 'diversity_support' or 'flat', "
                             f"got {self.initial_phase!r}")
        if not 0 <= self.min_overlap < 1:
            raise ValueError(f"FPOptions.min_overlap must lie in [0, 1), got {self.min_overlap}")
        if self.background_counts < 0 or self.shift_tolerance_px < 0:
            raise ValueError("FPOptions: background_counts and shift_tolerance_px must be >= 0")


@dataclass(frozen=True, kw_only=True)
class FPResult:
    """Output of :func:`reconstruct_fp_dfxm`."""

    object: Array = field(repr=False)
    """(HR_ROW, HR_COL) complex object on the high-resolution grid."""
    pupil: Array = field(repr=False)
    """(ROW, COL) complex final pupil."""
    zernike_rad: dict[int, float]
    """Retrieved Noll coefficients (radians, radius α₀)."""
    tip_tilt_rad: np.ndarray = field(repr=False)
    """(FRAME, 2) Z2, Z3 of the last sweep's per-frame pupil misfit (image shift residual)."""
    error_history: np.ndarray = field(repr=False)
    """(n_iterations,) Σ(|ψ|−√I)²/ΣI per sweep."""
    zernike_history: np.ndarray = field(repr=False)
    """(n_iterations, len(zernike_indices)) coefficients after each sweep."""
    pupil_center_rad: tuple[float, float]
    """Pupil centre used."""
    twin_and_ramp: str
    """Which degeneracies were fixed and how (docs/fp-dfxm.md, Model and conventions)."""


def _validate_frames(frames: Array, shifts_rad: Array, geometry: FPDFXMGeometry, image_shifts_m: Array | None) -> None:
    n = geometry.n_px
    if frames.ndim != 3 or tuple(frames.shape[1:]) != (n, n):
        raise ValueError(f"frames: shape {tuple(frames.shape)}, expected (FRAME, {n}, {n}) from geometry.n_px")
    s = np.asarray(shifts_rad)
    if s.shape != (frames.shape[0], 2):
        raise ValueError(f"shifts_rad: shape {s.shape}, expected ({frames.shape[0]}, 2) (row, col) radians")
    if not np.all(np.isfinite(s)):
        raise ValueError("shifts_rad: contains NaN or inf")
    xp = array_module(frames)
    if not bool(xp.all(xp.isfinite(frames))):
        bad = int(xp.sum(~xp.isfinite(frames)))
        raise ValueError(f"frames: {bad} NaN/inf pixels; mask or replace them before reconstruction")
    if bool(xp.any(frames < 0)):
        raise ValueError("frames: negative intensities; subtract background with FPOptions.background_counts instead")
    if image_shifts_m is not None:
        m = np.asarray(image_shifts_m)
        if m.shape != s.shape or not np.all(np.isfinite(m)):
            raise ValueError(f"image_shifts_m: shape {m.shape} (must be {s.shape}) and finite")


def reconstruct_fp_dfxm(frames: Array, shifts_rad: Array, geometry: FPDFXMGeometry, *, options: FPOptions,
                        image_shifts_m: Array | None = None, initial_zernike_rad: dict[int, float] | None = None,
                        pupil_center_rad: tuple[float, float] | None = None) -> FPResult:
    """Zernike-EPRY reconstruction of object and pupil aberrations (docs/fp-dfxm.md, Algorithm).

    ``frames`` (FRAME, ROW, COL) intensities; ``shifts_rad`` (FRAME, 2) (row, col) spectrum
    shifts κ_j; ``image_shifts_m`` optional (FRAME, 2) s_j. Frames are visited by |κ| ascending;
    the object starts from :func:`initial_object_from_diversity` (``options.initial_phase``), or,
    with ``"flat"``, as the upsampled √I of the smallest-|κ| frame.
    """
    _validate_frames(frames, shifts_rad, geometry, image_shifts_m)
    check_overlap(shifts_rad, geometry, min_overlap=options.min_overlap)
    kappa = shifts_to_pixels(shifts_rad, geometry, tolerance_px=options.shift_tolerance_px)
    xp = array_module(frames)
    fft = fft_module(xp)
    n, u = geometry.n_px, geometry.upsampling
    center = geometry.pupil_center_rad if pupil_center_rad is None else cast("tuple[float, float]",
                                                                             tuple(pupil_center_rad))
    amp = xp.asarray(pupil_amplitude(geometry, pupil_center_rad=center))
    rx, ry = _rho(geometry, center)
    fit_idx = (1, 2, 3) + tuple(options.zernike_indices)
    basis = xp.asarray(zernike_basis(fit_idx, rx, ry))                     # (Z, n, n)
    fit_mask = xp.asarray(rx**2 + ry**2 <= 1.0) & (amp > 1e-3)
    coeffs = np.array([(initial_zernike_rad or {}).get(j, 0.0) for j in options.zernike_indices], float)

    def make_pupil(c: np.ndarray) -> Array:
        w = xp.tensordot(xp.asarray(c), basis[3:], axes=1) if len(c) else 0.0 * amp
        return amp * xp.exp(1j * w)

    pupil = make_pupil(coeffs)
    ramps = _image_ramps(image_shifts_m, geometry)
    ramps = xp.asarray(ramps) if ramps is not None else None
    sqrt_i = xp.sqrt(xp.maximum(frames - options.background_counts, 0.0))
    order = np.argsort(np.hypot(kappa[:, 0], kappa[:, 1]), kind="stable")
    starts = _window_starts(kappa, geometry)
    if options.initial_phase != "flat":
        init = initial_object_from_diversity(frames, shifts_rad, geometry, pupil_center_rad=center,
                                             background_counts=options.background_counts,
                                             support_weighted=options.initial_phase == "diversity_support").object
    else:                                                               # S ← FFT(upsample(√I_centre)) / u²
        init = _upsample_nearest(sqrt_i[int(order[0])], u).astype(complex)
    spec = fft.fftshift(fft.fft2(init)) / (u * u)
    total_i = float(xp.sum(sqrt_i**2))
    err_hist = np.zeros(options.n_iterations)
    zern_hist = np.zeros((options.n_iterations, len(coeffs)))
    tip_tilt = np.zeros((len(order), 2))
    wsum = fit_mask.astype(float)
    for it in range(options.n_iterations):
        num = xp.zeros((n, n))
        den = xp.zeros((n, n))
        err = 0.0
        p_frame = pupil
        pmax2 = xp.max(xp.abs(pupil) ** 2)                          # 0-d, on the device
        last = it == options.n_iterations - 1
        for j in order:
            r0, c0 = starts[j]
            win = spec[r0:r0 + n, c0:c0 + n]
            p_frame = pupil * ramps[j] if ramps is not None else pupil
            phi = win * p_frame
            psi = fft.ifft2(fft.ifftshift(phi))
            mod = xp.abs(psi)
            err += xp.sum((mod - sqrt_i[j]) ** 2)           # stays on the device: one copy per iteration
            psi_new = sqrt_i[j] * psi / xp.maximum(mod, 1e-12)
            dphi = fft.fftshift(fft.fft2(psi_new)) - phi
            p2 = xp.abs(p_frame) ** 2
            denom = (1 - options.rpie_alpha) * p2 + options.rpie_alpha * pmax2
            spec[r0:r0 + n, c0:c0 + n] = win + options.object_step * xp.conj(p_frame) * dphi / denom
            gn = xp.imag(xp.conj(phi) * dphi)
            num += gn
            w2 = xp.abs(phi) ** 2
            den += w2
            if last:
                wj = w2 * wsum
                a_tt = basis[1:3].reshape(2, -1) * wj.reshape(1, -1)
                g = xp.linalg.solve(a_tt @ basis[1:3].reshape(2, -1).T + 1e-30 * xp.eye(2),
                                    a_tt @ (gn / (w2 + 1e-12 * float(xp.max(w2)))).reshape(-1))
                tip_tilt[j] = to_numpy(g)
        err_hist[it] = float(err) / max(total_i, 1e-300)
        if options.recover_pupil and it >= options.pupil_update_start_iter and len(coeffs):
            dw = num / (den + 1e-9 * float(xp.max(den)))
            wts = (den * wsum).reshape(-1)
            bz = basis.reshape(basis.shape[0], -1)
            a = (bz * wts[None, :]) @ bz.T
            rhs = (bz * wts[None, :]) @ dw.reshape(-1)
            dc = to_numpy(xp.linalg.solve(a + 1e-12 * float(xp.trace(a)) * xp.eye(a.shape[0]), rhs))
            coeffs = coeffs + options.pupil_step * dc[3:]          # piston and tip/tilt are discarded
            pupil = make_pupil(coeffs)
        zern_hist[it] = coeffs
    obj = fft.ifft2(fft.ifftshift(spec)) * (u * u)
    zernike_rad = dict(zip(options.zernike_indices, coeffs.tolist(), strict=True))
    return FPResult(object=obj, pupil=pupil, zernike_rad=zernike_rad,
                    tip_tilt_rad=tip_tilt, error_history=err_hist, zernike_history=zern_hist,
                    pupil_center_rad=(float(center[0]), float(center[1])),
                    twin_and_ramp="piston and tip/tilt fixed to 0 in the pupil (object carries global phase and "
                                  "ramp); twin fixed by the labelled, non-symmetric frame shifts and |P| known")
