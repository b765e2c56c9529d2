"""2D forward (transmission) ptychography with joint probe retrieval: ePIE and mPIE.

Used as in the seed (Methods, "forward ptychography of a Siemens star"): the
retrieved focal-plane probe becomes the initial probe of the Bragg reconstruction.
The initial probe is the Fourier transform of a rectangle of the numerical aperture
(:func:`rectangular_na_probe`); the object starts as ones; detector gaps are masked
and left free (the modulus constraint is applied only on live pixels).

Model: ψ_j(r) = P(r − f_j) · O(r + o_j), Ψ_j = FFT(ψ_j) (unitary), I_j = |Ψ_j|².
A stage position p_j (metres, (row, col) axes) is p_j/Δx pixels, split into the
integer object offset o_j and the fraction f_j, applied to the probe by a Fourier
shift. Δx = λD/(N p) is the object pixel size.

References: ePIE, Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009),
doi:10.1016/j.ultramic.2009.05.012; rPIE/mPIE, Maiden, Johnson & Li, Optica 4, 736
(2017), doi:10.1364/OPTICA.4.000736.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from analysis.geometry import wavelength_m_from_kev
from analysis.xp import Array, array_module, fft_module

__all__ = [
    "ForwardGeometry",
    "ForwardPtychoOptions",
    "ForwardPtychoResult",
    "rectangular_na_probe",
    "positions_to_pixels",
    "forward_ptychography",
]

_ALGORITHMS = ("epie", "mpie")


@dataclass(frozen=True, kw_only=True)
class ForwardGeometry:
    """Transmission geometry: photon energy, sample–detector distance, detector pixel pitch."""

    energy_kev: float
    detector_distance_m: float
    detector_pixel_size_m: float = 55e-6

    def __post_init__(self) -> None:
        for name in ("energy_kev", "detector_distance_m", "detector_pixel_size_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"ForwardGeometry.{name} must be a finite number > 0, got {v!r}")

    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return wavelength_m_from_kev(self.energy_kev)

    def object_pixel_size_m(self, n_px: int) -> float:
        """Δx = λD/(N p) for an N-pixel crop, in metres."""
        return self.wavelength_m * self.detector_distance_m / (n_px * self.detector_pixel_size_m)


@dataclass(frozen=True, kw_only=True)
class ForwardPtychoOptions:
    """Options of :func:`forward_ptychography` (seed Methods: ePIE, 100 iterations)."""

    algorithm: str = "epie"
    """``"epie"`` (Maiden & Rodenburg 2009) or ``"mpie"`` (rPIE steps + momentum, Maiden et al. 2017)."""
    n_iterations: int = 100
    """Full sweeps over all positions."""
    object_step: float = 1.0
    """ePIE α (object step); for mPIE the rPIE regularisation α_O ∈ (0, 1]."""
    probe_step: float = 1.0
    """ePIE β (probe step); for mPIE the rPIE regularisation β_P ∈ (0, 1]."""
    momentum: float = 0.7
    """mPIE momentum η, applied once per sweep to object and probe."""
    probe_update_start_iter: int = 1
    """First sweep (0-based) in which the probe is updated."""
    random_order: bool = True
    """Visit positions in a fresh random order every sweep."""
    seed: int = 0
    """Seed of the position-order generator."""
    object_margin_px: int = 2
    """Free pixels around the scanned area in the object array."""

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"ForwardPtychoOptions.algorithm: {self.algorithm!r}, expected one of {_ALGORITHMS}")
        if self.n_iterations < 1:
            raise ValueError(f"ForwardPtychoOptions.n_iterations must be >= 1, got {self.n_iterations}")
        for name in ("object_step", "probe_step"):
            v = getattr(self, name)
            if not 0 < v <= (1.0 if self.algorithm == "mpie" else 2.0):
                raise ValueError(f"ForwardPtychoOptions.{name} = {v} out of range for {self.algorithm}: "
                                 "use (0, 2] for ePIE, (0, 1] for mPIE")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"ForwardPtychoOptions.momentum must lie in [0, 1), got {self.momentum}")
        if self.object_margin_px < 0 or self.probe_update_start_iter < 0:
            raise ValueError("ForwardPtychoOptions: object_margin_px and probe_update_start_iter must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ForwardPtychoResult:
    """Retrieved probe and object with the convergence history."""

    probe: Array = field(repr=False)
    """(ROW, COL) complex probe at the sample plane (initial probe of the Bragg reconstruction)."""
    object: Array = field(repr=False)
    """(OBJ_ROW, OBJ_COL) complex transmission."""
    initial_probe: Array = field(repr=False)
    """The rectangular-NA (or given) starting probe."""
    error_history: np.ndarray = field(repr=False)
    """(n_iterations,) Σ_ω(|Ψ| − √I)² / Σ_ω I per sweep, before that sweep's updates."""
    positions_px: np.ndarray = field(repr=False)
    """(POS, 2) float: object pixel under probe pixel [0, 0] for each position."""
    pixel_size_m: float
    """Object/probe pixel size Δx in metres."""


def rectangular_na_probe(shape: tuple[int, int], *, pixel_size_m: float, wavelength_m: float,
                         na_rows: float, na_cols: float, defocus_m: float = 0.0,
                         total_intensity: float = 1.0) -> np.ndarray:
    """Probe from a rectangular pupil |f_row| ≤ NA_row/λ, |f_col| ≤ NA_col/λ (seed Methods).

    P = F⁻¹[pupil · exp(−iπλz|f|²)], centred in the array, scaled so Σ|P|² = ``total_intensity``.
    ``defocus_m`` z > 0 propagates downstream of the focus (paraxial Fresnel).
    """
    if not (na_rows > 0 and na_cols > 0 and pixel_size_m > 0 and wavelength_m > 0 and total_intensity > 0):
        raise ValueError("rectangular_na_probe: na_rows, na_cols, pixel_size_m, wavelength_m and "
                         "total_intensity must all be > 0")
    fr = np.fft.fftfreq(shape[0], d=pixel_size_m)[:, None]
    fc = np.fft.fftfreq(shape[1], d=pixel_size_m)[None, :]
    pupil = (np.abs(fr) <= na_rows / wavelength_m) & (np.abs(fc) <= na_cols / wavelength_m)
    if pupil.sum() < 2:
        raise ValueError(f"rectangular_na_probe: the NA ({na_rows}, {na_cols}) is below one frequency pixel "
                         f"1/(N Δx); enlarge the array or check pixel_size_m = {pixel_size_m}")
    spec = pupil * np.exp(-1j * math.pi * wavelength_m * defocus_m * (fr**2 + fc**2))
    p = np.fft.fftshift(np.fft.ifft2(spec))
    return (p * math.sqrt(total_intensity / float((np.abs(p) ** 2).sum()))).astype(np.complex128)


def positions_to_pixels(positions_m: Array, pixel_size_m: float, *,
                        margin_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stage positions (POS, 2) in metres → (integer offsets o_j, fractions f_j ∈ [0, 1)) in pixels.

    Offsets are relative to floor(min p/Δx) − margin, so fractions are those of p/Δx itself.
    """
    pos = np.asarray(positions_m, float)
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions_m: shape {pos.shape}, expected finite (n_positions, 2) (row, col) in metres")
    px = pos / pixel_size_m
    base = np.floor(px.min(axis=0)) - margin_px
    rel = px - base
    off = np.floor(rel).astype(int)
    return off, rel - off


def _shift_spectrum(shape: tuple[int, int], frac: np.ndarray, xp: ModuleType) -> Array:
    kr = xp.asarray(np.fft.fftfreq(shape[0]))[:, None]
    kc = xp.asarray(np.fft.fftfreq(shape[1]))[None, :]
    return xp.exp(-2j * math.pi * (kr * float(frac[0]) + kc * float(frac[1])))


def forward_ptychography(intensities: Array, positions_m: Array, *, pixel_size_m: float,
                         initial_probe: Array, mask: Array | None = None,
                         options: ForwardPtychoOptions = ForwardPtychoOptions(),
                         initial_object: Array | None = None) -> ForwardPtychoResult:
    """Reconstruct probe and object from forward-geometry diffraction patterns (ePIE or mPIE).

    Parameters
    ----------
    intensities : (POS, ROW, COL) float
        Counts with zero frequency at the array centre (as on the detector).
    positions_m : (POS, 2) float
        Stage positions (row, col) in metres.
    pixel_size_m : float
        Object pixel Δx = λD/(N p) (:meth:`ForwardGeometry.object_pixel_size_m`).
    initial_probe : (ROW, COL) complex
        Starting probe, e.g. :func:`rectangular_na_probe`; rescaled to the mean frame intensity.
    mask : (ROW, COL) bool, optional
        True on live pixels; detector gaps (False) are left free.
    """
    xp = array_module(intensities)
    fft = fft_module(xp)
    data = xp.asarray(intensities, dtype=xp.float64)
    if data.ndim != 3:
        raise ValueError(f"intensities: shape {tuple(data.shape)}, expected (n_positions, rows, cols)")
    n_pos, nr, nc = data.shape
    if not bool(xp.all(xp.isfinite(data))) or bool((data < 0).any()):
        raise ValueError("intensities: NaN, inf or negative counts; mask or clean those pixels first")
    probe = xp.asarray(initial_probe, dtype=xp.complex128)
    if probe.shape != (nr, nc):
        raise ValueError(f"initial_probe: shape {tuple(probe.shape)}, expected the frame shape {(nr, nc)}")
    m = xp.ones((nr, nc), dtype=bool) if mask is None else xp.asarray(mask, dtype=bool)
    if m.shape != (nr, nc):
        raise ValueError(f"mask: shape {tuple(m.shape)}, expected the frame shape {(nr, nc)}")
    pos = np.asarray(positions_m, float)
    if pos.shape != (n_pos, 2):
        raise ValueError(f"positions_m: shape {pos.shape}, expected ({n_pos}, 2) to match the frames")
    off, frac = positions_to_pixels(pos, pixel_size_m, margin_px=options.object_margin_px)
    obj_shape = (int(off[:, 0].max()) + nr + 1 + options.object_margin_px,
                 int(off[:, 1].max()) + nc + 1 + options.object_margin_px)
    if initial_object is None:
        obj = xp.ones(obj_shape, dtype=xp.complex128)
    else:
        obj = xp.asarray(initial_object, dtype=xp.complex128)
        if obj.shape != obj_shape:
            raise ValueError(f"initial_object: shape {tuple(obj.shape)}, expected {obj_shape} from the positions")

    # data in DFT order; amplitudes; masked pixels left free
    amp = xp.sqrt(fft.ifftshift(data, axes=(1, 2)))
    mk = fft.ifftshift(m)
    live_fraction = float(m.mean())
    mean_power = float(data.sum()) / n_pos / max(live_fraction, 1e-12)
    probe = probe * math.sqrt(mean_power / float((xp.abs(probe) ** 2).sum()))
    init_probe = probe.copy()
    shifts = [None if not np.any(f) else _shift_spectrum((nr, nc), f, xp) for f in frac]
    norm_data = float((data * m).sum())

    rng = np.random.default_rng(options.seed)
    history = np.zeros(options.n_iterations)
    mpie = options.algorithm == "mpie"
    v_obj = xp.zeros_like(obj) if mpie else None
    v_probe = xp.zeros_like(probe) if mpie else None
    for it in range(options.n_iterations):
        order = rng.permutation(n_pos) if options.random_order else np.arange(n_pos)
        obj_prev, probe_prev = (obj.copy(), probe.copy()) if mpie else (None, None)
        update_probe = it >= options.probe_update_start_iter
        err = 0.0
        for j in order:
            sl = (slice(int(off[j, 0]), int(off[j, 0]) + nr), slice(int(off[j, 1]), int(off[j, 1]) + nc))
            pj = probe if shifts[j] is None else fft.ifft2(fft.fft2(probe) * shifts[j])
            oj = obj[sl]
            psi = pj * oj
            spec = fft.fft2(psi, norm="ortho")
            mod = xp.abs(spec)
            err += float((((mod - amp[j]) ** 2) * mk).sum())
            spec_new = xp.where(mk, amp[j] * spec / xp.maximum(mod, 1e-30), spec)
            dpsi = fft.ifft2(spec_new, norm="ortho") - psi
            p2, o2 = xp.abs(pj) ** 2, xp.abs(oj) ** 2
            if mpie:
                a, b = options.object_step, options.probe_step
                obj[sl] = oj + xp.conj(pj) * dpsi / ((1 - a) * p2 + a * p2.max())
                dp = xp.conj(oj) * dpsi / ((1 - b) * o2 + b * o2.max())
            else:
                obj[sl] = oj + options.object_step * xp.conj(pj) * dpsi / p2.max()
                dp = options.probe_step * xp.conj(oj) * dpsi / o2.max()
            if update_probe:
                probe = probe + (dp if shifts[j] is None else fft.ifft2(fft.fft2(dp) * xp.conj(shifts[j])))
        history[it] = err / max(norm_data, 1e-300)
        if mpie and options.momentum > 0 and v_obj is not None and v_probe is not None:   # both set with mpie
            v_obj = options.momentum * v_obj + (obj - obj_prev)
            obj = obj + options.momentum * v_obj
            if update_probe:
                v_probe = options.momentum * v_probe + (probe - probe_prev)
                probe = probe + options.momentum * v_probe
    positions_px = off + frac
    return ForwardPtychoResult(probe=probe, object=obj, initial_probe=init_probe, error_history=history,
                               positions_px=positions_px, pixel_size_m=float(pixel_size_m))
