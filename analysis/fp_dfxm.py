"""Fourier-ptychographic DFXM: forward operator, Zernike-EPRY reconstruction, misalignment, strain (spec §1).

Discrete model (spec §1.5, integer spectrum shifts): the object O lives on the
high-resolution grid (N = u·n pixels of Δx/u); its centred spectrum is S = FFT(O)/u².
Frame j sees the n × n window of S at object frequencies k − κ_j, multiplied by the pupil
P(k)·exp(−2πi k·s_j), and ψ_j = IFFT(window·P) is the field on the n × n detector grid,
I_j = |ψ_j|². With this scaling ψ_j equals O band-limited and sampled at the raw pixels.

Reconstruction (spec §1.7): EPRY [Ou, Zheng & Yang, Opt. Express 22, 4960 (2014),
doi:10.1364/OE.22.004960] with the pupil phase restricted to Noll Zernikes (Gauss–Newton
step in Zernike space once per sweep; tip/tilt zeroed), |P| fixed to the CRL Gaussian. The object
starts from the per-pixel centre of mass of the intensity over the diversity shifts (local phase
gradient, integrated): the slowly varying phase is poorly constrained per sweep and a flat start
leaves it for hundreds of sweeps (docs/fp-dfxm.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.dfxm_geometry import FPDFXMGeometry
from analysis.xp import array_module, fft_module, to_numpy
from analysis.zernike import zernike, zernike_basis

__all__ = [
    "spectral_overlap",
    "check_overlap",
    "shifts_to_pixels",
    "pupil_amplitude",
    "aberrated_pupil",
    "FPDFXMOperator",
    "FPOptions",
    "FPResult",
    "reconstruct_fp_dfxm",
    "initial_object_from_diversity",
    "DiversityStart",
    "PhaseVortex",
    "find_phase_vortices",
    "vortex_phase_rad",
    "estimate_pupil_center_rad",
    "MisalignmentReadout",
    "misalignment_readout",
    "crl_tilt_from_pupil_center_rad",
    "StrainTiltMaps",
    "strain_tilt_from_phase",
    "phase_error_rms_rad",
]


def spectral_overlap(step_rad: float, radius_rad: float) -> float:
    """Overlap of two circles of radius ρ at distance ``step``: (2/π)[acos x − x√(1−x²)], x = step/2ρ (spec §1.6)."""
    x = step_rad / (2 * radius_rad)
    if x >= 1:
        return 0.0
    return (2 / math.pi) * (math.acos(x) - x * math.sqrt(1 - x * x))


def check_overlap(shifts_rad: Any, geometry: FPDFXMGeometry, *, min_overlap: float) -> float:
    """Raise ValueError unless every frame overlaps its nearest neighbour by ≥ ``min_overlap``; return the worst.

    Pupil radius ρ_eff = 2·NA_rms (spec §1.6).
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
            f"{rho:.3e} rad, spec §1.6: about 60%, step ≈ 0.64ρ); use a finer diversity step")
    return worst


def shifts_to_pixels(shifts_rad: Any, geometry: FPDFXMGeometry, *, tolerance_px: float = 0.05) -> np.ndarray:
    """(FRAME, 2) integer spectrum shifts κ_j in frequency pixels; ValueError when off-grid or outside the object grid."""
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
    """(n_px, n_px) fixed CRL amplitude exp(−|α−α_c|²/4NA²)·circ(D/2d1) on the centred frequency grid (spec §1.4)."""
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
    """|P_CRL|·exp(i Σ c_j Z_j) on the centred frequency grid (spec §1.4)."""
    c = geometry.pupil_center_rad if pupil_center_rad is None else pupil_center_rad
    rx, ry = _rho(geometry, c)
    w = np.zeros_like(rx)
    for j, cj in zernike_rad.items():
        w += cj * zernike(j, rx, ry)
    return pupil_amplitude(geometry, pupil_center_rad=c) * np.exp(1j * w)


def _window_starts(kappa_px: np.ndarray, geometry: FPDFXMGeometry) -> np.ndarray:
    # pupil pixel k (centred) sees object frequency k − κ: window starts at N/2 − n/2 − κ.
    return (geometry.hr_n_px // 2 - geometry.n_px // 2) - kappa_px


def _image_ramps(image_shifts_m: Any, geometry: FPDFXMGeometry) -> np.ndarray | None:
    if image_shifts_m is None:
        return None
    s = np.asarray(image_shifts_m, float)
    f = (np.arange(geometry.n_px) - geometry.n_px // 2) / (geometry.n_px * geometry.pixel_size_m)
    return np.exp(-2j * math.pi * (f[None, :, None] * s[:, 0, None, None] + f[None, None, :] * s[:, 1, None, None]))


class FPDFXMOperator:
    """Linear FP-DFXM operator A: object (HR_ROW, HR_COL) complex → fields (FRAME, ROW, COL) complex.

    A O = [IFFT_n(window_j(FFT_N(O)/u²) · P · ramp_j)]_j (spec §1.5); ``adjoint`` is Aᴴ.
    ``pupil`` is (ROW, COL) complex on the centred frequency grid.
    """

    def __init__(self, geometry: FPDFXMGeometry, shifts_rad: Any, pupil: Any, *, image_shifts_m: Any = None) -> None:
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

    def forward(self, obj: Any) -> Any:
        """Low-resolution exit fields (FRAME, ROW, COL) of the object (HR_ROW, HR_COL)."""
        if tuple(obj.shape) != self.in_shape:
            raise ValueError(f"object: shape {tuple(obj.shape)}, expected {self.in_shape}")
        xp, fft, n, u2 = self.xp, fft_module(self.xp), self.geometry.n_px, self.geometry.upsampling**2
        spec = fft.fftshift(fft.fft2(obj)) / u2
        out = xp.empty(self.out_shape, dtype=xp.result_type(obj.dtype, self.pupils.dtype))
        for j, (r0, c0) in enumerate(self.starts):
            out[j] = fft.ifft2(fft.ifftshift(spec[r0:r0 + n, c0:c0 + n] * self.pupils[j]))
        return out

    def adjoint(self, fields: Any) -> Any:
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


@dataclass(frozen=True, kw_only=True)
class FPOptions:
    """Options of :func:`reconstruct_fp_dfxm` (spec §1.7, "as tested")."""

    n_iterations: int = 150
    """Sweeps over all frames (spec: 150–300)."""
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
    """Required nearest-neighbour spectral overlap (spec §1.6: about 60%)."""
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

    object: Any = field(repr=False)
    """(HR_ROW, HR_COL) complex object on the high-resolution grid."""
    pupil: Any = field(repr=False)
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
    """Which degeneracies were fixed and how (spec §4.4)."""


def _validate_frames(frames: Any, shifts_rad: Any, geometry: FPDFXMGeometry, image_shifts_m: Any) -> None:
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


def _upsample_nearest(a: Any, u: int) -> Any:
    xp = array_module(a)
    return xp.repeat(xp.repeat(a, u, axis=0), u, axis=1)


@dataclass(frozen=True, kw_only=True)
class PhaseVortex:
    """A phase singularity of the Bragg exit field: a dislocation with G·b = 2π·winding (spec §1.5)."""

    row_px: float
    """Row of the core on the grid it was found on (pixel centres at integers)."""
    col_px: float
    """Column of the core."""
    winding: int
    """Winding number n of φ = n·atan2(row − row_px, col − col_px) around the core."""


def _box_sum(a: np.ndarray, width_px: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(a, width_px, mode="constant") * width_px * width_px


def _pick_vortices(circulation_rad: np.ndarray, allowed: np.ndarray, *, window_px: int,
                   min_turns: float, max_vortices: int = 64) -> tuple[PhaseVortex, ...]:
    """Vortices from a plaquette circulation map (ROW−1, COL−1): greedy peaks of its window sums.

    Stokes: ∮∇φ·dl around a loop is 2π × (net winding inside), so the circulation summed over a
    window of plaquettes counts the vortices in it even when the core itself is blurred.
    """
    circ = np.where(allowed, circulation_rad, 0.0)
    half = window_px // 2
    found: list[PhaseVortex] = []
    for _ in range(max_vortices):
        box = _box_sum(circ, window_px)
        k = np.unravel_index(int(np.argmax(np.abs(box))), box.shape)
        turns = float(box[k]) / (2 * math.pi)
        if abs(turns) < min_turns:
            break
        sl = (slice(max(k[0] - half, 0), min(k[0] + half + 1, circ.shape[0])),
              slice(max(k[1] - half, 0), min(k[1] + half + 1, circ.shape[1])))
        wgt = np.maximum(np.sign(turns) * circ[sl], 0.0)
        rr, cc = np.mgrid[sl]
        norm = float(wgt.sum()) or 1.0
        # plaquette (r, c) is centred at (r + ½, c + ½) of the pixel grid
        found.append(PhaseVortex(row_px=float((wgt * rr).sum() / norm) + 0.5,
                                 col_px=float((wgt * cc).sum() / norm) + 0.5, winding=int(round(turns))))
        circ[sl] = 0.0
    merged: list[PhaseVortex] = []                     # a core split into residues of both signs: one vortex
    for v in found:
        near = [m for m in merged if math.hypot(m.row_px - v.row_px, m.col_px - v.col_px) <= window_px]
        if near:
            m = near[0]
            merged[merged.index(m)] = PhaseVortex(row_px=m.row_px, col_px=m.col_px, winding=m.winding + v.winding)
        else:
            merged.append(v)
    return tuple(v for v in merged if v.winding != 0)


def _plaquette_circulation(d_row: np.ndarray, d_col: np.ndarray) -> np.ndarray:
    """∮ around each plaquette, path +col, +row, −col, −row; d_row (R−1, C), d_col (R, C−1) edge increments."""
    return d_col[:-1, :] + d_row[:, 1:] - d_col[1:, :] - d_row[:, :-1]


def _bright_plaquettes(weight: np.ndarray, *, fraction: float) -> np.ndarray:
    from scipy.ndimage import binary_fill_holes

    ok = binary_fill_holes(weight > fraction * float(np.percentile(weight, 99)))   # dark cores inside stay in
    return ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]


def find_phase_vortices(obj: Any, *, window_px: int = 9, amplitude_fraction: float = 0.2) -> tuple[PhaseVortex, ...]:
    """Phase vortices (dislocation cores, spec §1.5) of a complex field (ROW, COL) from its phase residues.

    Each plaquette's sum of wrapped phase differences is 2π × an integer (a residue); residues are
    summed over ``window_px`` windows (noise dipoles cancel) inside the region where the amplitude
    exceeds ``amplitude_fraction`` of its 99th percentile, holes (dark cores) filled; the dark exterior is excluded.
    """
    o = np.asarray(to_numpy(obj))
    if o.ndim != 2 or not np.all(np.isfinite(o)):
        raise ValueError(f"find_phase_vortices: expected a finite 2D complex array, got shape {o.shape}")
    if not isinstance(window_px, int) or window_px < 3:
        raise ValueError(f"find_phase_vortices: window_px must be an int >= 3, got {window_px!r}")
    d_row = np.angle(o[1:, :] * np.conj(o[:-1, :]))
    d_col = np.angle(o[:, 1:] * np.conj(o[:, :-1]))
    allowed = _bright_plaquettes(np.abs(o), fraction=amplitude_fraction)
    return _pick_vortices(_plaquette_circulation(d_row, d_col), allowed, window_px=window_px, min_turns=0.5)


def vortex_phase_rad(shape: tuple[int, int], vortices: tuple[PhaseVortex, ...], *, scale: float = 1.0,
                     xp: Any = np) -> Any:
    """Σ n·atan2(row − s·row_px, col − s·col_px) on a (ROW, COL) grid ``scale`` times finer."""
    rows = xp.arange(shape[0], dtype=float)[:, None]
    cols = xp.arange(shape[1], dtype=float)[None, :]
    phase = xp.zeros(shape)
    for v in vortices:
        phase = phase + v.winding * xp.arctan2(rows - scale * v.row_px, cols - scale * v.col_px)
    return phase


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

    lap = (4 * np.sin(np.pi * np.fft.fftfreq(2 * n_r)) ** 2)[:, None] + (4 * np.sin(np.pi * np.fft.fftfreq(2 * n_c)) ** 2)[None, :]
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

    object: Any = field(repr=False)
    """(HR_ROW, HR_COL) complex start object."""
    vortices: tuple[PhaseVortex, ...]
    """Vortices found in the centre-of-mass gradient, positions on the raw (n_px) grid."""


def initial_object_from_diversity(frames: Any, shifts_rad: Any, geometry: FPDFXMGeometry, *,
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


def reconstruct_fp_dfxm(frames: Any, shifts_rad: Any, geometry: FPDFXMGeometry, *, options: FPOptions,
                        image_shifts_m: Any = None, initial_zernike_rad: dict[int, float] | None = None,
                        pupil_center_rad: tuple[float, float] | None = None) -> FPResult:
    """Zernike-EPRY reconstruction of object and pupil aberrations (spec §1.7).

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
    n, big, u = geometry.n_px, geometry.hr_n_px, geometry.upsampling
    center = geometry.pupil_center_rad if pupil_center_rad is None else tuple(pupil_center_rad)
    amp = xp.asarray(pupil_amplitude(geometry, pupil_center_rad=center))
    rx, ry = _rho(geometry, center)
    fit_idx = (1, 2, 3) + tuple(options.zernike_indices)
    basis = xp.asarray(zernike_basis(fit_idx, rx, ry))                     # (Z, n, n)
    fit_mask = xp.asarray((rx**2 + ry**2 <= 1.0)) & (amp > 1e-3)
    coeffs = np.array([(initial_zernike_rad or {}).get(j, 0.0) for j in options.zernike_indices], float)

    def make_pupil(c: np.ndarray) -> Any:
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
    return FPResult(object=obj, pupil=pupil, zernike_rad=dict(zip(options.zernike_indices, coeffs.tolist())),
                    tip_tilt_rad=tip_tilt, error_history=err_hist, zernike_history=zern_hist,
                    pupil_center_rad=(float(center[0]), float(center[1])),
                    twin_and_ramp="piston and tip/tilt fixed to 0 in the pupil (object carries global phase and "
                                  "ramp); twin fixed by the labelled, non-symmetric frame shifts and |P| known")


def estimate_pupil_center_rad(frames: Any, shifts_rad: Any) -> tuple[float, float]:
    """Pupil centre α_c from frame brightness: fit log ΣI_j = a + b·κ_j − c|κ_j|² (spec §1.7 read-out).

    Valid when the object spectrum is concentrated near the Bragg peak (dark-field thin film),
    so ΣI_j ∝ |P(κ_j)|²; the vertex −b/2c is α_c.
    """
    xp = array_module(frames)
    s = np.asarray(shifts_rad, float)
    tot = to_numpy(xp.sum(frames, axis=(1, 2))).astype(float)
    if s.shape != (tot.shape[0], 2) or np.any(tot <= 0):
        raise ValueError("estimate_pupil_center_rad: need (FRAME, 2) shifts and frames with positive total counts")
    a = np.stack([np.ones(len(s)), s[:, 0], s[:, 1], -(s[:, 0] ** 2 + s[:, 1] ** 2)], axis=1)
    coef, *_ = np.linalg.lstsq(a * np.sqrt(tot)[:, None], np.log(tot) * np.sqrt(tot), rcond=None)
    if coef[3] <= 0:
        raise ValueError("estimate_pupil_center_rad: frame brightness is not peaked; the scan does not bracket "
                         "the pupil centre")
    return float(coef[1] / (2 * coef[3])), float(coef[2] / (2 * coef[3]))


@dataclass(frozen=True, kw_only=True)
class MisalignmentReadout:
    """Instrument misalignment read from the retrieved pupil (spec §1.7)."""

    pupil_center_rad: tuple[float, float]
    """(row, col) lens decentering / angular offset."""
    image_shift_m: np.ndarray = field(repr=False)
    """(FRAME, 2) residual image shift from per-frame tip/tilt."""
    defocus_m: float
    """Sample defocus Δz = 2√3 c₄ λ/(π α₀²)."""
    astigmatism_rad: tuple[float, float]
    """(Z5, Z6): CRL tilt / decentering."""
    coma_rad: tuple[float, float]
    """(Z7, Z8): CRL tilt / decentering."""
    spherical_rad: float
    """Z11: lenslet figure error."""
    crl_tilt_rad: tuple[float, float]
    """(pitch, yaw) CRL tilt that would put the absorption aperture at ``pupil_center_rad`` (no decentering)."""


def crl_tilt_from_pupil_center_rad(pupil_center_rad: tuple[float, float], geometry: FPDFXMGeometry, *,
                                   tilt_pivot_m: float | None = None) -> tuple[float, float]:
    """(pitch, yaw) CRL tilt τ = α_c / (dα_c/dτ) from the Gaussian-aperture centre (docs/fp-dfxm.md, CRL tilt).

    dα_c/dτ = Σh_n(z_n − z_p)/Σh_n² (:meth:`CRLObjective.pupil_shift_per_tilt`); a lens decentering
    moves α_c too, so subtract a known decentering first. ValueError when the pivot makes τ unobservable.
    """
    k = geometry.objective.pupil_shift_per_tilt(tilt_pivot_m=tilt_pivot_m)
    if abs(k) < 1e-6:
        raise ValueError(f"crl_tilt_from_pupil_center_rad: a tilt about pivot {tilt_pivot_m!r} m moves the aperture "
                         f"by only {k:.2e} rad/rad; the tilt is not observable from the pupil centre there")
    return float(pupil_center_rad[0]) / k, float(pupil_center_rad[1]) / k


def misalignment_readout(result: FPResult, geometry: FPDFXMGeometry, *,
                         tilt_pivot_m: float | None = None) -> MisalignmentReadout:
    """Convert retrieved Zernikes and pupil centre to misalignment quantities (spec §1.4, §1.7)."""
    z = result.zernike_rad
    shifts = np.array([geometry.image_shift_m_from_tilt(float(t[0]), float(t[1])) for t in result.tip_tilt_rad])
    try:
        tilt = crl_tilt_from_pupil_center_rad(result.pupil_center_rad, geometry, tilt_pivot_m=tilt_pivot_m)
    except ValueError:
        tilt = (math.nan, math.nan)
    return MisalignmentReadout(pupil_center_rad=result.pupil_center_rad, image_shift_m=shifts, crl_tilt_rad=tilt,
                               defocus_m=geometry.defocus_m_from_z4(z.get(4, 0.0)),
                               astigmatism_rad=(z.get(5, 0.0), z.get(6, 0.0)), coma_rad=(z.get(7, 0.0), z.get(8, 0.0)),
                               spherical_rad=z.get(11, 0.0))


@dataclass(frozen=True, kw_only=True)
class StrainTiltMaps:
    """Strain and tilts from the Bragg phase (spec §1.8)."""

    q_2theta: Any = field(repr=False)
    """(ROW, COL) ∂φ/∂row / |G|."""
    q_roll: Any = field(repr=False)
    """(ROW, COL) ∂φ/∂col / |G| = roll tilt (rad)."""
    strain: Any = field(repr=False)
    """ε_GG = −(sinθ q_rock' + cosθ q_2θ)."""
    tilt_rock_rad: Any = field(repr=False)
    """δφ = cosθ q_rock' − sinθ q_2θ."""


def strain_tilt_from_phase(obj: Any, geometry: FPDFXMGeometry, *, pixel_size_m: float,
                           q_rock_prime: Any = None) -> StrainTiltMaps:
    """Strain and tilt maps from a complex Bragg object without unwrapping (spec §1.8 steps 2–5).

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


def phase_error_rms_rad(estimate: Any, truth: Any, *, weights: Any = None, remove_ramp: bool = True) -> float:
    """Weighted rms of arg(est·conj(truth)) after removing global phase (and a linear ramp) (spec §1.8 step 1)."""
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
