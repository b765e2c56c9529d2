"""Quality metrics against a known truth and resolution estimates
(docs/dataset-format.md, Half-data resolution; Fienup, Appl. Opt. 36, 8352 (1997)).

* :func:`register_shift` / :func:`fourier_shift` — sub-voxel registration by an
  up-sampled cross-correlation evaluated with matrix-multiply DFTs on a small
  neighbourhood of the coarse peak (the idea of Guizar-Sicairos, Thurman & Fienup,
  Opt. Lett. 33, 156 (2008), doi:10.1364/OL.33.000156), refined in zoom stages;
* :func:`object_error` (E_ρ), :func:`probe_error` (E_P), :func:`strain_rmse`, :func:`r_factor`;
* :func:`prtf` (Chapman et al., JOSA A 23, 1179 (2006)), :func:`fourier_shell_correlation`
  with the ½-bit threshold (van Heel & Schatz, J. Struct. Biol. 151, 250 (2005));
* :func:`binomial_split` — half-data sets that keep the full overlap.
"""

# Why this module is long: the truth metrics share one sub-voxel registration (register_shift/fourier_shift); every
# metric registers first, so they stay beside it.

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from analysis.strain import StrainMaps
from analysis.xp import Array, array_module, fft_module, ndimage_module, to_numpy

__all__ = [
    "register_shift",
    "fourier_shift",
    "AlignedError",
    "object_error",
    "probe_error",
    "StrainError",
    "strain_rmse",
    "r_factor",
    "ConvergenceRule",
    "ConvergenceVerdict",
    "convergence",
    "ShellCurve",
    "prtf",
    "random_phase_prtf",
    "fourier_shell_correlation",
    "half_bit_threshold",
    "shell_crossing",
    "binomial_split",
]


# --------------------------------------------------------------------------- registration
def _freqs(n: int, xp: ModuleType) -> Array:
    return xp.fft.fftfreq(n) * n  # integer frequencies k, DFT order


def _local_cc(cross: Array, centre: np.ndarray, half_width: float, n_pts: int) -> tuple[Array, list[np.ndarray]]:
    """Cross-correlation Σ_k X(k) e^{+2πi k·s/N} on a (n_pts)^d grid of shifts s around ``centre``."""
    xp = array_module(cross)
    grids = [centre[a] + np.linspace(-half_width, half_width, n_pts) for a in range(cross.ndim)]
    out = cross
    for a in range(cross.ndim):
        n = cross.shape[a]
        k = _freqs(n, xp)
        kern = xp.exp(2j * math.pi * xp.asarray(grids[a])[:, None] * k[None, :] / n)  # (n_pts, N_a)
        out = xp.moveaxis(xp.tensordot(out, kern, axes=([a], [1])), -1, a)
    return out, grids


def register_shift(reference: Array, moving: Array, *, precision_px: float = 1e-3) -> tuple[float, ...]:
    """Sub-pixel shift s such that ``fourier_shift(moving, s)`` best matches ``reference``.

    The integer peak of the FFT cross-correlation is refined by evaluating the
    correlation on 21^d-point neighbourhoods (±1 px, then ±0.1 px, …) with
    matrix-multiply DFTs until the step is below ``precision_px``. Works in any dimension.
    """
    xp = array_module(reference, moving)
    if reference.shape != moving.shape:
        raise ValueError(f"register_shift: shapes differ, reference {tuple(reference.shape)} vs moving "
                         f"{tuple(moving.shape)}; crop or pad to a common grid first")
    fft = fft_module(xp)
    cross = fft.fftn(reference) * xp.conj(fft.fftn(moving))
    cc = xp.abs(fft.ifftn(cross))
    peak = np.array(np.unravel_index(int(xp.argmax(cc)), cc.shape), float)
    shape = np.array(cross.shape)
    peak = np.where(peak > shape // 2, peak - shape, peak)
    half, n_pts = 1.0, 21
    while True:
        vals, grids = _local_cc(cross, peak, half, n_pts)
        idx = np.unravel_index(int(xp.argmax(xp.abs(vals))), vals.shape)
        peak = np.array([grids[a][idx[a]] for a in range(cross.ndim)])
        step = 2 * half / (n_pts - 1)
        if step <= precision_px:
            break
        half = step
    return tuple(float(p) for p in peak)


def fourier_shift(x: Array, shift_px: Any) -> Array:
    """Shift ``x`` by ``shift_px`` voxels (x(r) → x(r − s)) with a Fourier phase ramp (periodic)."""
    xp = array_module(x)
    fft = fft_module(xp)
    shift_px = tuple(float(s) for s in np.broadcast_to(np.asarray(shift_px, float), (x.ndim,)))
    spec = fft.fftn(x)
    for a, s in enumerate(shift_px):
        if s == 0:
            continue
        n = x.shape[a]
        sh = [1] * x.ndim
        sh[a] = n
        spec = spec * xp.exp(-2j * math.pi * _freqs(n, xp) * s / n).reshape(sh)
    out = fft.ifftn(spec)
    return out if np.iscomplexobj(x) else out.real


# --------------------------------------------------------------------------- E_ρ, E_P
@dataclass(frozen=True, kw_only=True)
class AlignedError:
    """Error after removing global scale/phase c, linear phase ramp κ and shift δ (Fienup 1997)."""

    error: float
    """‖c e^{iκ·r} ρ̂(r−δ) − ρ_true‖_S / ‖ρ_true‖_S."""
    amplitude_nrmse: float
    """‖|ρ̂'| − |ρ_true|‖_S / ‖ρ_true‖_S."""
    phase_rmse_rad: float
    """|ρ_true|²-weighted RMS of arg(ρ̂' ρ_true*) on S."""
    scale: complex
    """c (Fienup 1997)."""
    ramp_rad_per_px: tuple[float, ...]
    """κ per array axis in rad/voxel."""
    shift_px: tuple[float, ...]
    """δ per array axis in voxels."""
    aligned: Array = field(repr=False)
    """c e^{iκ·r} ρ̂(r − δ) on the full grid."""


def _ramp_grid(shape: tuple[int, ...], kappa: list[float], xp: ModuleType) -> Array:
    ph = 0
    for a, (n, k) in enumerate(zip(shape, kappa, strict=True)):
        sh = [1] * len(shape)
        sh[a] = n
        ph = ph + k * (xp.arange(n) - n // 2).reshape(sh)
    return xp.exp(1j * ph)


def _aligned_error(estimate: Array, truth: Array, support: Array | None, *, remove_shift: bool, remove_ramp: bool,
                   weights: Array | None = None, name: str) -> AlignedError:
    xp = array_module(estimate, truth)
    if estimate.shape != truth.shape:
        raise ValueError(f"{name}: estimate shape {tuple(estimate.shape)} != truth shape {tuple(truth.shape)}; "
                         "compare on a common grid")
    est = xp.asarray(estimate, dtype=complex)
    tru = xp.asarray(truth, dtype=complex)
    if support is None:
        support = xp.ones(tru.shape, dtype=bool)
    support = xp.asarray(support, dtype=bool)
    if support.shape != tru.shape:
        raise ValueError(f"{name}: support shape {tuple(support.shape)} != truth shape {tuple(tru.shape)}")
    if not bool(support.any()):
        raise ValueError(f"{name}: support is empty")
    w = support.astype(float) if weights is None else xp.asarray(weights, float) * support
    shift = (0.0,) * est.ndim
    if remove_shift:
        shift = register_shift(xp.abs(tru), xp.abs(est))
        est = fourier_shift(est, shift)
    kappa = [0.0] * est.ndim
    if remove_ramp:
        for _ in range(2):
            z = xp.conj(tru) * est * _ramp_grid(est.shape, kappa, xp).conj()
            for a in range(est.ndim):
                pair = xp.roll(z, -1, axis=a) * xp.conj(z)
                ok = w * xp.roll(w, -1, axis=a)
                edge: list[slice | int] = [slice(None)] * est.ndim
                edge[a] = -1
                ok[tuple(edge)] = 0
                kappa[a] += float(xp.angle((ok * pair).sum()))
        est = est * _ramp_grid(est.shape, kappa, xp).conj()
    # c = Σ w ρ̂'* ρ_true / Σ w |ρ̂'|²  (Fienup, Appl. Opt. 36, 8352 (1997))
    den = float((w * xp.abs(est) ** 2).sum())
    if den == 0:
        raise ValueError(f"{name}: the estimate is zero on the support; nothing to compare")
    c = complex((w * xp.conj(est) * tru).sum()) / den
    est = c * est
    norm = float(math.sqrt(float((w * xp.abs(tru) ** 2).sum())))
    err = math.sqrt(float((w * xp.abs(est - tru) ** 2).sum())) / norm
    amp_err = math.sqrt(float((w * (xp.abs(est) - xp.abs(tru)) ** 2).sum())) / norm
    wt = w * xp.abs(tru) ** 2
    ph = xp.angle(est * xp.conj(tru))
    ph_rms = math.sqrt(float((wt * ph**2).sum()) / max(float(wt.sum()), 1e-300))
    return AlignedError(error=err, amplitude_nrmse=amp_err, phase_rmse_rad=ph_rms, scale=c,
                        ramp_rad_per_px=tuple(kappa), shift_px=shift, aligned=est)


def object_error(estimate: Array, truth: Array, *, support: Array | None = None, remove_shift: bool = True,
                 remove_ramp: bool = True) -> AlignedError:
    """Object error E_ρ = min_{c,κ,δ} ‖c e^{iκ·r} ρ̂(r−δ) − ρ_true‖_S/‖ρ_true‖_S
    (Fienup 1997; Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008)).

    δ by up-sampled amplitude cross-correlation, κ from the weighted wrap-free phase
    gradient of ρ_true*ρ̂ (as seed Eq 15), c by least squares. ``support`` is S′ (the
    true support dilated by one voxel); default: the whole grid. Any dimension.
    """
    return _aligned_error(estimate, truth, support, remove_shift=remove_shift, remove_ramp=remove_ramp,
                          name="object_error")


def probe_error(estimate: Array, truth: Array, *, intensity_weighted: bool = False, remove_shift: bool = True,
                remove_ramp: bool = True) -> AlignedError:
    """Probe error E_P = min_{c,shift,κ} ‖c P̂ − P_true‖/‖P_true‖ over the whole probe array (as E_ρ, Fienup 1997).

    With ``intensity_weighted`` the norm is weighted by |P_true|² (normalised to max 1).
    """
    xp = array_module(truth)
    weights = None
    if intensity_weighted:
        a2 = xp.abs(xp.asarray(truth)) ** 2
        weights = a2 / a2.max()
    return _aligned_error(estimate, truth, None, remove_shift=remove_shift, remove_ramp=remove_ramp,
                          weights=weights, name="probe_error")


# --------------------------------------------------------------------------- strain RMSE
@dataclass(frozen=True, kw_only=True)
class StrainError:
    """RMSE of strain and tilts on the eroded common mask; mean offsets reported separately."""

    eps_zz_rmse: float
    eps_zz_offset: float
    """mean(ε̂ − ε_true): a global offset (reference choice), included in the RMSE."""
    eps_zz_rmse_centred: float
    """RMSE after removing the mean offset."""
    omega_x_rmse_rad: float
    omega_x_offset_rad: float
    omega_y_rmse_rad: float
    omega_y_offset_rad: float
    n_voxels: int


def strain_rmse(estimate: StrainMaps, truth: StrainMaps, *, erode_voxels: int = 2) -> StrainError:
    """Strain/tilt RMSE on (estimate.mask ∧ truth.mask) eroded by ``erode_voxels``
    (the same strain operator on both fields).
    """
    if estimate.eps_zz.shape != truth.eps_zz.shape or estimate.frame != truth.frame:
        raise ValueError(f"strain_rmse: maps differ in grid ({tuple(estimate.eps_zz.shape)}, {estimate.frame}) vs "
                         f"({tuple(truth.eps_zz.shape)}, {truth.frame}); compute both with the same operator and grid")
    xp = array_module(estimate.eps_zz)
    ndi = ndimage_module(xp)
    m = estimate.mask & truth.mask
    if erode_voxels > 0:
        m = ndi.binary_erosion(m, iterations=erode_voxels)
    n = int(m.sum())
    if n == 0:
        raise ValueError(f"strain_rmse: no voxel left after eroding the common mask by {erode_voxels}; "
                         "lower erode_voxels or check the masks")

    def stats(a: Array, b: Array) -> tuple[float, float, float]:
        d = (a - b)[m]
        mean = float(d.mean())
        return float(xp.sqrt((d**2).mean())), mean, float(xp.sqrt(((d - mean) ** 2).mean()))

    e = stats(estimate.eps_zz, truth.eps_zz)
    wx = stats(estimate.omega_x_rad, truth.omega_x_rad)
    wy = stats(estimate.omega_y_rad, truth.omega_y_rad)
    return StrainError(eps_zz_rmse=e[0], eps_zz_offset=e[1], eps_zz_rmse_centred=e[2],
                       omega_x_rmse_rad=wx[0], omega_x_offset_rad=wx[1], omega_y_rmse_rad=wy[0],
                       omega_y_offset_rad=wy[1], n_voxels=n)


# --------------------------------------------------------------------------- data side
def r_factor(measured: Array, predicted: Array, *, mask: Array | None = None) -> float:
    """R = Σω|√I − √h| / Σω√I over masked pixels
    (docs/dataset-format.md, Quality of a run); ``mask`` broadcasts to the data.
    """
    xp = array_module(measured, predicted)
    if measured.shape != predicted.shape:
        raise ValueError(f"r_factor: measured shape {tuple(measured.shape)} != predicted {tuple(predicted.shape)}")
    w = xp.ones(measured.shape) if mask is None else xp.broadcast_to(xp.asarray(mask, float), measured.shape)
    sm = xp.sqrt(xp.clip(measured, 0, None))
    den = float((w * sm).sum())
    if den == 0:
        raise ValueError("r_factor: no counts under the mask")
    return float((w * xp.abs(sm - xp.sqrt(xp.clip(predicted, 0, None)))).sum()) / den


@dataclass(frozen=True, kw_only=True)
class ConvergenceRule:
    """When a run counts as converged (docs/dataset-format.md §2, "Quality").

    Judged on the last phase: over its last ``window_fraction`` of iterations (at least
    ``min_window_iterations``) the cost changed by at most ``max_relative_cost_change`` of its value
    at the window's start, and the R-factor at the end of the phase is not above the one it started
    from (the previous phase's end, or the initial state) by more than ``r_factor_tolerance`` (relative).
    """

    window_fraction: float = 0.1
    """Fraction of the last phase's iterations the cost change is measured over."""
    min_window_iterations: int = 2
    """Shortest window; a phase with fewer than this + 1 iterations cannot be judged (not converged)."""
    max_relative_cost_change: float = 0.01
    """|c_end − c_start| / |c_start| over the window must not exceed this."""
    r_factor_tolerance: float = 1e-3
    """Relative rise of the R-factor over the last phase still counted as "not rising"."""

    def __post_init__(self) -> None:
        if not 0.0 < self.window_fraction <= 1.0:
            raise ValueError(f"ConvergenceRule.window_fraction must lie in (0, 1], got {self.window_fraction}")
        if self.min_window_iterations < 1:
            raise ValueError(f"ConvergenceRule.min_window_iterations must be >= 1, got {self.min_window_iterations}")
        if not (self.max_relative_cost_change > 0 and self.r_factor_tolerance >= 0):
            raise ValueError("ConvergenceRule: max_relative_cost_change must be > 0 and r_factor_tolerance >= 0")

    def describe(self) -> str:
        """The rule in one line (stored next to the verdict)."""
        return (f"last phase: |relative cost change| over its last {self.window_fraction:.0%} of iterations "
                f"(>= {self.min_window_iterations}) <= {self.max_relative_cost_change:g}, and its R-factor not "
                f"above the one it started from by more than {self.r_factor_tolerance:g} (relative)")


@dataclass(frozen=True, kw_only=True)
class ConvergenceVerdict:
    """Outcome of :func:`convergence` for one run."""

    converged: bool
    """Both criteria of the rule hold."""
    phase: str
    """The phase judged (the last one run), or "" when nothing ran."""
    relative_cost_change: float
    """(c_end − c_start) / |c_start| over the window (NaN when it cannot be computed)."""
    window_iterations: int
    """Iterations in the window."""
    r_factor_start: float
    """R-factor the last phase started from (NaN if unknown)."""
    r_factor_end: float
    """R-factor at the end of the last phase (NaN if unknown)."""
    reason: str
    """Why, in a few words."""

    def summary(self) -> str:
        """One closing line, e.g. ``converged: yes (ML: cost changed -0.2 % over the last 50 iterations; ...)``."""
        return f"converged: {'yes' if self.converged else 'no'} ({self.reason})"


def convergence(costs: Any, phases: Any, r_factors: dict[str, float],
                rule: ConvergenceRule = ConvergenceRule()) -> ConvergenceVerdict:
    """Apply ``rule`` to a cost history (one value per iteration, ``phases`` 'epie'/'ml' per iteration)
    and the R-factors at ``"initial"`` and at the end of each phase (``ReconstructionResult.r_factors``).
    """
    c = np.asarray(costs, float)
    ph = [str(p) for p in phases]
    if c.shape != (len(ph),):
        raise ValueError(f"convergence: {c.size} costs for {len(ph)} phase labels; pass one of each per iteration")
    nan = float("nan")
    if not ph:
        return ConvergenceVerdict(converged=False, phase="", relative_cost_change=nan, window_iterations=0,
                                  r_factor_start=nan, r_factor_end=nan, reason="no iterations")
    last = ph[-1]
    name = "ML" if last == "ml" else "ePIE"
    seq = c[[i for i, p in enumerate(ph) if p == last]]
    order = ["initial"] + [p for p in dict.fromkeys(ph) if p != last]
    r_start = float(r_factors.get(order[-1], nan))
    r_end = float(r_factors.get(last, nan))
    w = max(rule.min_window_iterations, int(math.ceil(rule.window_fraction * seq.size)))
    if seq.size < w + 1:
        return ConvergenceVerdict(converged=False, phase=last, relative_cost_change=nan, window_iterations=w,
                                  r_factor_start=r_start, r_factor_end=r_end,
                                  reason=f"{name}: {seq.size} iteration(s), too few to judge (needs {w + 1})")
    c0, c1 = float(seq[-w - 1]), float(seq[-1])
    rel = (c1 - c0) / abs(c0) if c0 != 0 else (0.0 if c1 == 0 else float("inf"))
    flat = bool(np.isfinite(rel) and abs(rel) <= rule.max_relative_cost_change)
    r_ok = bool(np.isfinite(r_start) and np.isfinite(r_end) and r_end <= r_start * (1 + rule.r_factor_tolerance))
    cost_txt = (f"{name}: cost changed {rel:+.2%} over the last {w} iterations "
                f"({'≤' if flat else '>'} {rule.max_relative_cost_change:.2%})")
    r_txt = (f"R-factor {r_start:.4g} → {r_end:.4g}" + ("" if r_ok else " (rising)") if np.isfinite(r_start + r_end)
             else "R-factor unknown")
    return ConvergenceVerdict(converged=flat and r_ok, phase=last, relative_cost_change=float(rel),
                              window_iterations=w, r_factor_start=r_start, r_factor_end=r_end,
                              reason=f"{cost_txt}; {r_txt}")


# --------------------------------------------------------------------------- shells
@dataclass(frozen=True, kw_only=True)
class ShellCurve:
    """A curve over shells of spatial frequency, with its threshold and crossing."""

    frequency: Array
    """Shell centre frequencies (1/m if voxel sizes were given, else cycles/voxel or pixels)."""
    value: Array
    """PRTF or FSC per shell (NaN for empty shells)."""
    threshold: Array
    """Threshold per shell (½-bit for FSC, 1/e for PRTF)."""
    n_voxels: Array
    """Voxels per shell."""
    crossing_frequency: float
    """First frequency where value falls below threshold (linear interpolation); NaN if never."""

    @property
    def resolution(self) -> float:
        """Full-period resolution 1/crossing_frequency (m when frequencies are in 1/m)."""
        return 1.0 / self.crossing_frequency if self.crossing_frequency > 0 else math.nan

    @property
    def finest_period(self) -> float:
        """Full period 1/f of the highest non-empty shell: the finest scale the curve examined.

        When the curve never crosses its threshold (``resolution`` NaN) the resolution is finer
        than this: grid-limited, not unknown.
        """
        f = np.asarray(self.frequency, float)[np.asarray(self.n_voxels, float) > 0]
        return 1.0 / float(f.max()) if f.size and f.max() > 0 else math.nan


def _unit_axis(cone_axis: Any, ndim: int, name: str) -> np.ndarray | None:
    """``cone_axis`` normalised (None stays None); a clear error for a wrong length or the zero vector."""
    if cone_axis is None:
        return None
    u = np.asarray(cone_axis, float)
    if u.shape != (ndim,) or not np.linalg.norm(u) > 0:
        raise ValueError(f"{name}: cone_axis must be a non-zero {ndim}-vector, got {cone_axis}")
    return u / np.linalg.norm(u)


def _basis_shells(shape: tuple[int, ...], basis: np.ndarray, n_shells: int | None, axis: np.ndarray | None,
                  half_angle_deg: float, xp: ModuleType, *,
                  centred: bool = True) -> tuple[Array, np.ndarray, Array | None]:
    """Shells of |q| for a grid whose index steps are the rows of ``basis`` (q = Σ_a i_a b_a, i_a centred, or in
    DFT order with ``centred=False``; any non-orthogonal basis); returns (shell index per voxel, shell centres,
    in-cone mask or None).

    Shells are min_a |b_a| wide (or k_max / ``n_shells``) and run to k_max: the sphere inscribed in the
    sampled parallelepiped, min_a (n_a//2) / |b*_a| (b*_a the reciprocal rows, b*_a·b_b = δ_ab), or with a
    unit ``axis`` the parallelepiped's extent along it, min_a (n_a//2) / |axis·b*_a| (for an orthogonal grid
    of spacings d_a: min_a (n_a//2) d_a, and min_a (n_a//2) d_a / |axis_a|).
    """
    nd = len(shape)
    b = np.asarray(basis, float)
    if b.shape != (nd, nd) or not abs(np.linalg.det(b)) > 0:
        raise ValueError(f"q basis: expected a non-singular ({nd}, {nd}) array of steps per axis, got {b.shape}")
    recip = np.linalg.inv(b).T
    used = [a for a, n in enumerate(shape) if n > 1]      # a length-1 axis bounds nothing
    if axis is None:
        k_max = min(float((shape[a] // 2) / np.linalg.norm(recip[a])) for a in used)
    else:
        k_max = min((shape[a] // 2) / abs(float(axis @ recip[a])) for a in used if abs(float(axis @ recip[a])) > 1e-300)
    width = min(float(np.linalg.norm(b[a])) for a in used) if not n_shells else k_max / n_shells
    n_sh = n_shells or int(math.floor(k_max / width + 1e-9))
    q = [0] * nd
    for a, n in enumerate(shape):
        sh = [1] * nd
        sh[a] = n
        i = ((xp.arange(n) - n // 2) if centred else _freqs(n, xp)).reshape(sh)
        for c in range(nd):
            if b[a, c] != 0:                                   # an orthogonal grid stays separable
                q[c] = q[c] + i * b[a, c]
    r = xp.sqrt(sum(qc ** 2 for qc in q))
    idx = xp.broadcast_to(xp.floor(r / width + 0.5).astype(int), shape)
    cone = None
    if axis is not None:
        dot = sum(qc * float(axis[c]) for c, qc in enumerate(q))
        cone = xp.broadcast_to((xp.abs(dot) >= math.cos(math.radians(half_angle_deg)) * r) | (r == 0), shape)
    return idx, np.arange(n_sh + 1) * width, cone


def random_phase_prtf(n_runs: int) -> float:
    """E|(1/K) Σ_k e^{iφ_k}| for K independent uniform phases: the PRTF of K runs that share no phase
    information (2/π for K = 2; below 1/e only from K = 6). Computed as (1/K)∫₀^∞ (1 − J₀(t)^K) t⁻² dt.
    """
    from scipy import integrate, special

    if n_runs < 1:
        raise ValueError(f"random_phase_prtf: n_runs must be >= 1, got {n_runs}")
    if n_runs == 1:
        return 1.0
    f = lambda t: (1.0 - special.j0(t) ** n_runs) / t ** 2  # noqa: E731
    head = integrate.quad(f, 0.0, 200.0, limit=2000)[0]
    # beyond t = 200, |J₀|^K ≤ (0.06)^K: the integrand is 1/t² to far better than the head's accuracy
    return (head + 1.0 / 200.0) / n_runs


def _crossing(freq: np.ndarray, value: np.ndarray, thr: np.ndarray) -> float:
    ok = np.isfinite(value)
    f, v, t = freq[ok], value[ok], thr[ok]
    for i in range(1, len(f)):
        if v[i] < t[i]:
            d0, d1 = v[i - 1] - t[i - 1], v[i] - t[i]
            return float(f[i - 1] + (f[i] - f[i - 1]) * d0 / (d0 - d1)) if d0 > 0 else float(f[i])
    return math.nan


def shell_crossing(frequency: Array, value: Array, threshold: Array) -> float:
    """First frequency where ``value`` falls below ``threshold`` (linear interpolation); NaN if never."""
    return _crossing(np.asarray(frequency, float), np.asarray(value, float), np.asarray(threshold, float))


def half_bit_threshold(n_voxels: Array) -> Array:
    """½-bit threshold T(n) = (0.2071 + 1.9102/√n)/(1.2071 + 0.9102/√n), van Heel & Schatz (2005)."""
    n = np.maximum(np.asarray(n_voxels, float), 1.0)
    s = np.sqrt(n)
    return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)


def fourier_shell_correlation(a: Array, b: Array, *, voxel_size_m: Any = 1.0, mask: Array | None = None,
                              n_shells: int | None = None, cone_axis: Any = None,
                              cone_half_angle_deg: float = 20.0) -> ShellCurve:
    """FSC(k) = Re Σ_shell A B* / √(Σ|A|² Σ|B|²) between two aligned reconstructions
    (docs/dataset-format.md, Half-data resolution).

    ``a``, ``b`` must already be registered (shift, phase, ramp: see :func:`object_error`);
    ``mask`` is a common (soft) mask applied to both. Frequencies in 1/m for voxel sizes
    in m; ``resolution`` is the full period where FSC meets the ½-bit threshold.
    Full shells run to the sphere inscribed in the sampled box. ``cone_axis`` (a vector in
    array-axis coordinates, e.g. (1, 0, 0)) restricts every shell to the double cone within
    ``cone_half_angle_deg`` of ±axis, and its shells run to the box's extent along the axis: the
    resolution along that direction, up to that direction's Nyquist frequency.
    """
    xp = array_module(a, b)
    if a.shape != b.shape:
        raise ValueError(f"fourier_shell_correlation: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    fft = fft_module(xp)
    vox = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_m, float), (a.ndim,)))
    u = _unit_axis(cone_axis, a.ndim, "fourier_shell_correlation")
    if mask is not None:
        a, b = a * mask, b * mask
    A, B = fft.fftn(a), fft.fftn(b)
    dk = tuple(1.0 / (n * d) for n, d in zip(a.shape, vox, strict=True))
    idx, centres, cone = _basis_shells(a.shape, np.diag(dk), n_shells, u, cone_half_angle_deg, xp, centred=False)
    nb = len(centres)
    flat = idx.ravel()
    keep = flat < nb
    if cone is not None:
        keep = keep & cone.ravel()
    fi = flat[keep]

    def shell_sum(v: Array) -> np.ndarray:
        return to_numpy(xp.bincount(fi, weights=v.ravel()[keep], minlength=nb))[:nb]

    num = shell_sum((A * xp.conj(B)).real)
    da = shell_sum(xp.abs(A) ** 2)
    db = shell_sum(xp.abs(B) ** 2)
    cnt = to_numpy(xp.bincount(fi, minlength=nb))[:nb].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsc = num / np.sqrt(da * db)
    fsc[cnt == 0] = np.nan
    thr = half_bit_threshold(cnt)
    return ShellCurve(frequency=centres, value=fsc, threshold=thr, n_voxels=cnt,
                      crossing_frequency=_crossing(centres, fsc, thr))


def prtf(far_fields: Array, intensity: Array, *, mask: Array | None = None, dq_per_m: Any = 1.0,
         n_shells: int | None = None, modulus_constraint: bool = True, cone_axis: Any = None,
         cone_half_angle_deg: float = 20.0, q_basis: Array | None = None) -> ShellCurve:
    """Phase-retrieval transfer function ⟨|⟨Φ_k⟩_k| / √I⟩ over shells of |q|
    (Chapman et al. 2006, docs/dataset-format.md, Half-data resolution).

    Parameters
    ----------
    far_fields : (K, ...) complex
        Far fields Ψ_k of K phase-aligned runs for one frame/stack, centred like ``intensity``.
    intensity : (...) float
        Measured counts (zero frequency at the array centre); only pixels with I > 0 enter.
    mask : (...) bool, optional
        True on measured pixels (gaps and virtual planes False).
    dq_per_m : float or tuple
        Pixel size in q per axis; frequencies are returned in these units (radius of q).
    q_basis : (ndim, ndim), optional
        Instead of ``dq_per_m``: row a is the q step of one pixel along axis a, for a sheared grid such
        as the measured (detector × rocking) frame (:meth:`~analysis.geometry.BraggGeometry.measured_q_basis_per_m`);
        ``cone_axis`` is then in the same coordinates as the rows.
    modulus_constraint : bool
        Φ_k = √I Ψ_k/|Ψ_k| (default), the runs' far fields after the modulus constraint as in Chapman
        et al.: the PRTF is then the phase consistency |⟨e^{iφ_k}⟩| and the counting noise of √I cancels.
        False: Φ_k = Ψ_k, which also falls where the fitted |Ψ| is below the (noisy) √I.
    cone_axis : vector, optional
        Restrict every shell to the double cone within ``cone_half_angle_deg`` of ±axis (array
        coordinates, or the basis' coordinates); shells then run to the extent of the array along the axis.

    Runs that share no phase information give :func:`random_phase_prtf` (K), not 0: the 1/e
    threshold can be reached by phase disagreement only when K ≥ 6.
    """
    xp = array_module(far_fields, intensity)
    if tuple(far_fields.shape[1:]) != tuple(intensity.shape):
        raise ValueError(f"prtf: far_fields shape {tuple(far_fields.shape)} must be (K,) + intensity shape "
                         f"{tuple(intensity.shape)}")
    if q_basis is None:
        q_basis = np.diag(np.broadcast_to(np.asarray(dq_per_m, float), (intensity.ndim,)))
    u = _unit_axis(cone_axis, intensity.ndim, "prtf")
    valid = intensity > 0
    if mask is not None:
        valid &= xp.asarray(mask, dtype=bool)
    if modulus_constraint:
        amp = xp.abs(far_fields)
        ratio = xp.abs((far_fields / xp.where(amp > 0, amp, 1.0)).mean(axis=0))
    else:
        ratio = xp.abs(far_fields.mean(axis=0)) / xp.sqrt(xp.where(valid, intensity, 1.0))
    ratio = xp.where(valid, ratio, 0.0)
    idx, centres, cone = _basis_shells(tuple(intensity.shape), q_basis, n_shells, u, cone_half_angle_deg, xp)
    nb = len(centres)
    keep = valid & (idx < nb)
    if cone is not None:
        keep &= cone
    sel = keep.ravel()
    fi = idx.ravel()[sel]
    s = to_numpy(xp.bincount(fi, weights=ratio.ravel()[sel], minlength=nb))[:nb]
    cnt = to_numpy(xp.bincount(fi, minlength=nb))[:nb].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = s / cnt
    thr = np.full(nb, 1 / math.e)
    return ShellCurve(frequency=centres, value=val, threshold=thr, n_voxels=cnt,
                      crossing_frequency=_crossing(centres, val, thr))


# --------------------------------------------------------------------------- half data
def binomial_split(counts: Array, *, rng: np.random.Generator) -> tuple[Array, Array]:
    """Split photon counts into two halves I_A ~ Bin(I, ½), I_B = I − I_A
    (docs/dataset-format.md, Half-data resolution).

    Both halves keep every scan position (full overlap). ``counts`` must be finite,
    non-negative integers (any integer or float dtype holding integers).
    """
    xp = array_module(counts)
    c = to_numpy(counts)
    if not np.all(np.isfinite(c)):
        raise ValueError("binomial_split: counts contain NaN or inf; clean the frames first")
    if np.any(c < 0) or np.any(c != np.round(c)):
        raise ValueError("binomial_split: counts must be non-negative integers (photon counts); "
                         "convert ADU to photons before splitting")
    ci = c.astype(np.int64)
    a = rng.binomial(ci, 0.5)
    return xp.asarray(a.astype(c.dtype)), xp.asarray((ci - a).astype(c.dtype))
