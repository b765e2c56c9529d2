"""FP-DFXM forward model: spectral overlap, spectrum shifts, the CRL pupil and the linear operator A
(docs/fp-dfxm.md, Geometry, optics and sampling).

Discrete model (docs/fp-dfxm.md, Model and conventions, integer spectrum shifts): the object O lives on the
high-resolution grid (N = u·n pixels of Δx/u); its centred spectrum is S = FFT(O)/u².
Frame j sees the n × n window of S at object frequencies k − κ_j, multiplied by the pupil
P(k)·exp(−2πi k·s_j), and ψ_j = IFFT(window·P) is the field on the n × n detector grid,
I_j = |ψ_j|². With this scaling ψ_j equals O band-limited and sampled at the raw pixels.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.dfxm.geometry import FPDFXMGeometry
from analysis.dfxm.zernike import zernike
from analysis.xp import Array, array_module, fft_module

__all__ = [
    "spectral_overlap",
    "check_overlap",
    "shifts_to_pixels",
    "pupil_amplitude",
    "aberrated_pupil",
    "FPDFXMOperator",
]


def spectral_overlap(step_rad: float, radius_rad: float) -> float:
    """Overlap of two circles of radius ρ at distance ``step``: (2/π)[acos x − x√(1−x²)], x = step/2ρ
    (docs/fp-dfxm.md, Sampling).
    """
    x = step_rad / (2 * radius_rad)
    if x >= 1:
        return 0.0
    return (2 / math.pi) * (math.acos(x) - x * math.sqrt(1 - x * x))


def check_overlap(shifts_rad: Array, geometry: FPDFXMGeometry, *, min_overlap: float) -> float:
    """Raise ValueError unless every frame overlaps its nearest neighbour by ≥ ``min_overlap``; return the worst.

    Pupil radius ρ_eff = 2·NA_rms (docs/fp-dfxm.md, Sampling).
    """
    s = np.asarray(shifts_rad, float)
    if s.shape[0] < 2:
        raise ValueError(f"shifts_rad: {s.shape[0]} frame(s); FP needs at least 2 overlapping pupil positions")
    rho = 2 * geometry.objective.na_rms_rad
    d = np.hypot(s[:, None, 0] - s[None, :, 0], s[:, None, 1] - s[None, :, 1])
    np.fill_diagonal(d, np.inf)
    nearest = d.min(axis=1)
    worst_j = int(np.argmax(nearest))
    worst = spectral_overlap(float(nearest[worst_j]), rho)
    if worst < min_overlap:
        raise ValueError(
            f"shifts_rad: frame {worst_j} at {s[worst_j]} rad has nearest neighbour {nearest[worst_j]:.3e} rad "
            f"away, spectral overlap {worst:.0%} < required {min_overlap:.0%} (pupil radius 2·NA_rms = "
            f"{rho:.3e} rad, docs/fp-dfxm.md, Sampling: about 60%, step ≈ 0.64ρ); use a finer diversity step")
    return worst


def shifts_to_pixels(shifts_rad: Array, geometry: FPDFXMGeometry, *, tolerance_px: float = 0.05) -> np.ndarray:
    """(FRAME, 2) integer spectrum shifts κ_j in frequency pixels.

    ValueError when off-grid or outside the object grid.
    """
    s = np.asarray(shifts_rad, float) / geometry.angle_per_freq_px_rad
    k = np.rint(s)
    off = np.abs(s - k).max(initial=0.0)
    if off > tolerance_px:
        raise ValueError(f"shifts_rad: shifts are up to {off:.2f} frequency pixels off the grid of "
                         f"{geometry.angle_per_freq_px_rad:.4e} rad = λ/(n_px Δx); choose pixel_size_m/n_px so "
                         "the diversity step is a whole number of pixels")
    half = (geometry.hr_n_px - geometry.n_px) // 2
    if np.abs(k).max(initial=0) > half:
        raise ValueError(f"shifts_rad: largest shift {np.abs(k).max():.0f} px exceeds the object grid margin "
                         f"{half} px; raise upsampling (now {geometry.upsampling})")
    return k.astype(int)


def pupil_amplitude(geometry: FPDFXMGeometry, *, pupil_center_rad: tuple[float, float] | None = None) -> np.ndarray:
    """(n_px, n_px) fixed CRL amplitude exp(−|α−α_c|²/4NA²)·circ(D/2d1) on the centred frequency grid
    (docs/fp-dfxm.md, CRL pupil).
    """
    c = geometry.pupil_center_rad if pupil_center_rad is None else pupil_center_rad
    ar, ac = geometry.pupil_angles_rad()
    r2 = (ar - c[0]) ** 2 + (ac - c[1]) ** 2
    obj = geometry.objective
    return np.exp(-r2 / (4 * obj.na_rms_rad**2)) * (r2 <= obj.aperture_half_angle_rad**2)


def _rho(geometry: FPDFXMGeometry, center: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    ar, ac = geometry.pupil_angles_rad()
    return (ac - center[1]) / geometry.alpha0_rad, (ar - center[0]) / geometry.alpha0_rad


def aberrated_pupil(geometry: FPDFXMGeometry, zernike_rad: dict[int, float], *,
                    pupil_center_rad: tuple[float, float] | None = None) -> np.ndarray:
    """|P_CRL|·exp(i Σ c_j Z_j) on the centred frequency grid (docs/fp-dfxm.md, CRL pupil)."""
    c = geometry.pupil_center_rad if pupil_center_rad is None else pupil_center_rad
    rx, ry = _rho(geometry, c)
    w = np.zeros_like(rx)
    for j, cj in zernike_rad.items():
        w += cj * zernike(j, rx, ry)
    return pupil_amplitude(geometry, pupil_center_rad=c) * np.exp(1j * w)


def _window_starts(kappa_px: np.ndarray, geometry: FPDFXMGeometry) -> np.ndarray:
    # pupil pixel k (centred) sees object frequency k − κ: window starts at N/2 − n/2 − κ.
    return (geometry.hr_n_px // 2 - geometry.n_px // 2) - kappa_px


def _image_ramps(image_shifts_m: Array | None, geometry: FPDFXMGeometry) -> np.ndarray | None:
    if image_shifts_m is None:
        return None
    s = np.asarray(image_shifts_m, float)
    f = (np.arange(geometry.n_px) - geometry.n_px // 2) / (geometry.n_px * geometry.pixel_size_m)
    return np.exp(-2j * math.pi * (f[None, :, None] * s[:, 0, None, None] + f[None, None, :] * s[:, 1, None, None]))


class FPDFXMOperator:
    """Linear FP-DFXM operator A: object (HR_ROW, HR_COL) complex → fields (FRAME, ROW, COL) complex.

    A O = [IFFT_n(window_j(FFT_N(O)/u²) · P · ramp_j)]_j (docs/fp-dfxm.md, Model and conventions); ``adjoint`` is Aᴴ.
    ``pupil`` is (ROW, COL) complex on the centred frequency grid.
    """

    def __init__(self, geometry: FPDFXMGeometry, shifts_rad: Array, pupil: Array, *,
                 image_shifts_m: Array | None = None) -> None:
        n = geometry.n_px
        if tuple(pupil.shape) != (n, n):
            raise ValueError(f"pupil: shape {tuple(pupil.shape)}, expected ({n}, {n}) from geometry.n_px")
        self.geometry = geometry
        self.xp = array_module(pupil)
        self.kappa_px = shifts_to_pixels(shifts_rad, geometry)
        self.starts = _window_starts(self.kappa_px, geometry)
        ramps = _image_ramps(image_shifts_m, geometry)
        self.pupils = pupil[None] * (self.xp.asarray(ramps) if ramps is not None else 1.0)
        if self.pupils.shape[0] == 1:
            self.pupils = self.xp.broadcast_to(self.pupils, (len(self.starts), n, n))
        self.in_shape = (geometry.hr_n_px, geometry.hr_n_px)
        self.out_shape = (len(self.starts), n, n)

    def forward(self, obj: Array) -> Array:
        """Low-resolution exit fields (FRAME, ROW, COL) of the object (HR_ROW, HR_COL)."""
        if tuple(obj.shape) != self.in_shape:
            raise ValueError(f"object: shape {tuple(obj.shape)}, expected {self.in_shape}")
        xp, fft, n, u2 = self.xp, fft_module(self.xp), self.geometry.n_px, self.geometry.upsampling**2
        spec = fft.fftshift(fft.fft2(obj)) / u2
        out = xp.empty(self.out_shape, dtype=xp.result_type(obj.dtype, self.pupils.dtype))
        for j, (r0, c0) in enumerate(self.starts):
            out[j] = fft.ifft2(fft.ifftshift(spec[r0:r0 + n, c0:c0 + n] * self.pupils[j]))
        return out

    def adjoint(self, fields: Array) -> Array:
        """Aᴴ: (FRAME, ROW, COL) → (HR_ROW, HR_COL)."""
        if tuple(fields.shape) != self.out_shape:
            raise ValueError(f"fields: shape {tuple(fields.shape)}, expected {self.out_shape}")
        xp, fft, n = self.xp, fft_module(self.xp), self.geometry.n_px
        big, u2 = self.geometry.hr_n_px, self.geometry.upsampling**2
        spec = xp.zeros(self.in_shape, dtype=xp.result_type(fields.dtype, self.pupils.dtype))
        for j, (r0, c0) in enumerate(self.starts):
            phi = fft.fftshift(fft.fft2(fields[j])) / (n * n)      # adjoint of ifft2 is fft2/n²
            spec[r0:r0 + n, c0:c0 + n] += xp.conj(self.pupils[j]) * phi
        return fft.ifft2(fft.ifftshift(spec)) * (big * big) / u2   # adjoint of fft2 is N²·ifft2
