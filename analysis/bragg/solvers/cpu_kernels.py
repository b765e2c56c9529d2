"""Fused CPU kernels (Numba) of the per-position Bragg ePIE step (seed Eqs 1, 5–11, 13).

Each kernel does in one parallel pass over the box what the array code in
:mod:`analysis.bragg.solvers.epie` does with a chain of NumPy temporaries; the numbers agree to
float32 rounding (``tests/analysis/test_fused_cpu.py``). Imported only through
:func:`analysis.xp.cpu_kernels`, so Numba stays optional: without it the array code runs.

Layouts: box ``(N1P, N2, N3)``, folded box ``(N1P, N2, NM)`` with N3 = U·NM, crop
``(N1, N2, NM)`` in FFT order along every axis; measured data are stored centred and
reached through the index maps ``rows``, ``cols``, ``planes`` (FFT-order → centred).
"""

# Why this module is long: every function is a Numba kernel of the fused CPU sweeps; they share the
# compiled-signature conventions and are cached as one module (docs/decisions/0004-fused-cpu-kernels.md).

from __future__ import annotations

import math

import numba as nb
import numpy as np

_TINY = 1e-30
_FAST = {"nsz", "arcp", "contract", "reassoc"}
"""LLVM fast-math flags that let loops vectorise; NaN/inf semantics are kept (no "nnan"/"ninf")."""


@nb.njit(parallel=True, cache=True, error_model="numpy")
def extrusion_spectrum(p2_hat: np.ndarray, slices: np.ndarray, out: np.ndarray) -> None:
    """out[n1, n2, f] = P̂2[n2, f] · e^{-2πi (n1 − c) d f}: B in r3-frequency space (docs/geometry.md, Operators)."""
    n1p, n2, n3 = out.shape
    for a in nb.prange(n1p):
        for b in range(n2):
            for f in range(n3):
                out[a, b, f] = p2_hat[b, f] * slices[a, f]


@nb.njit(cache=True, fastmath=True, error_model="numpy")
def _fold_line(p: np.ndarray, v: np.ndarray, out: np.ndarray, first: bool) -> tuple[float, float]:
    """out (+)= p·v on one line of NM planes; returns (max |p|², max |v|²).

    Full fast-math (finite inputs assumed) so that the max reductions vectorise.
    """
    pm = np.float32(0.0)
    vm = np.float32(0.0)
    n = out.shape[0]
    if first:
        for k in range(n):
            out[k] = p[k] * v[k]
    else:
        for k in range(n):
            out[k] += p[k] * v[k]
    for k in range(n):
        x = p[k].real * p[k].real + p[k].imag * p[k].imag
        y = v[k].real * v[k].real + v[k].imag * v[k].imag
        pm = pm if pm > x else x
        vm = vm if vm > y else y
    return pm, vm  # type: ignore[return-value]  # Numba kernel: float32 scalars (a float to the caller)


@nb.njit(cache=True, error_model="numpy")
def _fold_row(p3: np.ndarray, view: np.ndarray, out: np.ndarray, a: int, accumulate: bool) -> tuple[float, float]:
    """One r1 row of :func:`folded_exit_wave`; returns (max |P|², max |V|²) on it."""
    n2, n3 = p3.shape[1], p3.shape[2]
    nm = out.shape[2]
    pm = 0.0
    vm = 0.0
    for b in range(n2):
        for c0 in range(0, n3, nm):
            lp, lv = _fold_line(p3[a, b, c0:c0 + nm], view[a, b, c0:c0 + nm], out[b, a],
                                c0 == 0 and not accumulate)
            pm = max(pm, lp)
            vm = max(vm, lv)
    return pm, vm


@nb.njit(parallel=True, cache=True, error_model="numpy")
def folded_exit_wave(p3: np.ndarray, view: np.ndarray, out: np.ndarray, pmax_rows: np.ndarray,
                     vmax_rows: np.ndarray, accumulate: bool = False) -> None:
    """out[n2, n1, k] (+)= Σ_u (P_j·V)[n1, n2, uNM + k]: the exit wave ψ_j folded along r3
    (seed Eq 1; docs/geometry.md, Operators).

    ``out`` is laid out (N2, N1P, NM): the long r1 transform then runs on the middle axis.
    ``accumulate`` adds to ``out`` (a sum of products, e.g. P ΔV + ΔP V of the ML line search).

    Also returns, per r1 row, max |P_j|² (for μ_j and β of Eq 9) and max |V|² (Eq 10).
    """
    for a in nb.prange(p3.shape[0]):
        pmax_rows[a], vmax_rows[a] = _fold_row(p3, view, out, a, accumulate)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def apply_ramp(field: np.ndarray, ramp: np.ndarray, conjugate: bool) -> None:
    """field[n2, n1, k] *= ramp[n1, k] (or its conjugate): the shear ramp of docs/geometry.md, Operators, in place."""
    n2, n1p, nm = field.shape
    for b in nb.prange(n2):
        for a in range(n1p):
            for k in range(nm):
                r = ramp[a, k]
                if conjugate:
                    r = r.conjugate()
                field[b, a, k] *= r


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _modulus_run(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                 background: np.ndarray, scale2: np.float32, gamma: np.float32) -> float:
    """Eqs 13 and 11 on one contiguous run of planes (1D slices, float32, branch-free, vectorised)."""
    acc = np.float32(0.0)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    tiny = np.float32(1e-30)
    for k in range(field.shape[0]):
        z = field[k]
        on = mask[k] & plane_ok[k]
        b_old = background[k]
        sqrt_h = np.sqrt(max(scale2 * (z.real * z.real + z.imag * z.imag) + b_old, tiny))
        amp = np.sqrt(max(intensity[k], zero))
        amp = amp if on else sqrt_h                  # ω = 0: no misfit, Ψ kept, b kept (Eq 13)
        d = sqrt_h - amp
        acc += d * d
        ratio = amp / sqrt_h
        t = (one - gamma) + gamma * ratio
        background[k] = b_old * t * t
        field[k] = z * ((ratio - one) * scale2)
    return acc  # type: ignore[return-value]  # Numba kernel: a float32 scalar (a float to the caller)


@nb.njit(cache=True, error_model="numpy")
def _modulus_row(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                 background: np.ndarray, i: int, r: int, scale2: np.float32, gamma: np.float32) -> float:
    """One crop row (FFT order along r2 and k, data centred): two contiguous runs per axis."""
    n2, nm = field.shape[1], field.shape[2]
    h2, hm = n2 - n2 // 2, nm - nm // 2        # FFT index < h ↔ m ≥ 0 ↔ centred index + N//2
    row = 0.0
    for j in range(n2):
        q = j + n2 // 2 if j < h2 else j - h2
        lo, hi = nm // 2, nm - hm                 # centred planes of FFT bins [0, hm) and [hm, nm)
        row += _modulus_run(field[i, j, :hm], intensity[r, q, lo:], mask[r, q, lo:], plane_ok[lo:],
                            background[r, q, lo:], scale2, gamma)
        row += _modulus_run(field[i, j, hm:], intensity[r, q, :hi], mask[r, q, :hi], plane_ok[:hi],
                            background[r, q, :hi], scale2, gamma)
    return row


@nb.njit(parallel=True, cache=True, error_model="numpy")
def modulus_and_background(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                           background: np.ndarray, rows: np.ndarray, scale2: float, gamma: float) -> float:
    """Eqs 13 and 11 on the unnormalised crop A (|Ψ|² = scale2·|A|²), in place.

    field ← A·(√(I/h) − 1)·scale2 on ω = 1, 0 on ω = 0 (virtual planes and gaps left free);
    b ← b((1 − γ) + γ√(I/h))² on ω = 1 (old h). Returns Σ ω (√h − √I)².
    """
    n1 = field.shape[0]
    misfit_rows = np.zeros(n1)
    s2, g32 = np.float32(scale2), np.float32(gamma)
    for i in nb.prange(n1):
        misfit_rows[i] = _modulus_row(field, intensity, mask, plane_ok, background, i, rows[i], s2, g32)
    return misfit_rows.sum()


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _update_run(rho: np.ndarray, inside: np.ndarray, p: np.ndarray, dpsi: np.ndarray, beta: float, pmax: float,
                mu_j: float, alpha: float, vmax: float, probe_gradient: bool) -> None:
    """One box line of :func:`object_update` (NM planes, 1D contiguous slices, vectorised)."""
    b_pmax = np.float32(beta * pmax)
    one_m_beta = np.float32(1.0 - beta)
    mu32 = np.float32(mu_j)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    w_one_m_alpha = np.float32(1.0 - alpha)
    w_alpha_vmax = np.float32(alpha * vmax)
    tiny = np.float32(1e-30)
    for k in range(dpsi.shape[0]):
        pk = p[k]
        v = rho[k]
        d = dpsi[k]
        sbar = zero if inside[k] else mu32
        lam = one_m_beta * (pk.real * pk.real + pk.imag * pk.imag) + b_pmax + sbar
        rho[k] = v + (pk.conjugate() * d - sbar * v) * (one / lam)
        if probe_gradient:
            g = v.conjugate() * d
            if alpha != 1.0:
                g = g * (one / max(w_one_m_alpha * (v.real * v.real + v.imag * v.imag) + w_alpha_vmax, tiny))
            p[k] = g


@nb.njit(parallel=True, cache=True, error_model="numpy")
def object_update(obj: np.ndarray, support: np.ndarray, offset: np.ndarray, p3: np.ndarray, dpsi: np.ndarray,
                  beta: float, pmax: float, mu_j: float, alpha: float, vmax: float, probe_gradient: bool) -> None:
    """Eqs 5, 7, 9 on the view at ``offset`` of ρ (in place) and, if asked, Eq 8's ρ*Δψ into ``p3``.

    ρ ← ρ + (P*Δψ − μ_j S̄ ρ) / ((1 − β)|P|² + β max|P|² + μ_j S̄), with Δψ[n1, n2, c] = dpsi[n2, n1, c mod NM]
    (the adjoint fold replicates the planes). With ``probe_gradient`` the old ρ gives
    ρ*Δψ / ((1 − α)|ρ|² + α max|ρ|²) (α = 1: divided by max|ρ|² later, as a scalar).
    ρ and S are the whole arrays (C order, so the inner loop has unit stride and vectorises).
    """
    n1p, n2, n3 = p3.shape
    nm = dpsi.shape[2]
    o1, o2, o3 = offset[0], offset[1], offset[2]
    for a in nb.prange(n1p):
        for b in range(n2):
            for c0 in range(0, n3, nm):
                _update_run(obj[o1 + a, o2 + b, o3 + c0:o3 + c0 + nm], support[o1 + a, o2 + b, o3 + c0:o3 + c0 + nm],
                            p3[a, b, c0:c0 + nm], dpsi[b, a], beta, pmax, mu_j, alpha, vmax, probe_gradient)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def projection_spectrum(g_hat: np.ndarray, slices: np.ndarray, out: np.ndarray) -> None:
    """out[n2, f] = Σ_n1 Ĝ[n1, n2, f] · conj(e^{-2πi (n1 − c) d f}): B^H in r3-frequency space."""
    n1p, n2, n3 = g_hat.shape
    for b in nb.prange(n2):
        for f in range(n3):
            out[b, f] = 0
        for a in range(n1p):
            for f in range(n3):
                out[b, f] += g_hat[a, b, f] * slices[a, f].conjugate()


# --- maximum-likelihood refinement (Thibault & Guizar-Sicairos 2012; seed Eq 4) ---------------------------------------
# The crop A is the unnormalised F_meas(P_j V) in FFT order (|Ψ|² = scale2·|A|²); data are centred
# (rows: FFT-order → centred index along r1; along r2 and k two contiguous runs, as in
# :func:`_modulus_row`). Elementwise math and sums in float64.


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _data_term_run(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                   background: np.ndarray, scale2: float, poisson: bool, write_chi: bool) -> float:
    """:func:`ml_data_term` on one contiguous run of planes (1D slices, float64 math, branch-free)."""
    acc = 0.0
    for k in range(field.shape[0]):
        z = field[k]
        on = mask[k] & plane_ok[k]
        h = max(scale2 * (float(z.real) * float(z.real) + float(z.imag) * float(z.imag)) + float(background[k]), _TINY)
        inten = float(intensity[k])
        if poisson:
            term = h - inten * math.log(h)
            factor = 1.0 - inten / h
        else:
            sqrt_h = math.sqrt(h)
            amp = math.sqrt(max(inten, 0.0))
            term = (sqrt_h - amp) * (sqrt_h - amp)
            factor = 1.0 - amp / sqrt_h
        acc += term if on else 0.0
        if write_chi:
            field[k] = z * np.float32(factor * scale2 if on else 0.0)
    return acc


@nb.njit(cache=True, error_model="numpy")
def _data_term_row(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                   background: np.ndarray, i: int, r: int, scale2: float, poisson: bool, write_chi: bool) -> float:
    """One crop row of :func:`ml_data_term` (FFT order along r2 and k, data centred: two runs per line)."""
    n2, nm = field.shape[1], field.shape[2]
    h2, hm = n2 - n2 // 2, nm - nm // 2
    lo, hi = nm // 2, nm - hm
    acc = 0.0
    for j in range(n2):
        q = j + n2 // 2 if j < h2 else j - h2
        acc += _data_term_run(field[i, j, :hm], intensity[r, q, lo:], mask[r, q, lo:], plane_ok[lo:],
                              background[r, q, lo:], scale2, poisson, write_chi)
        acc += _data_term_run(field[i, j, hm:], intensity[r, q, :hi], mask[r, q, :hi], plane_ok[:hi],
                              background[r, q, :hi], scale2, poisson, write_chi)
    return acc


@nb.njit(parallel=True, cache=True, error_model="numpy")
def ml_data_term(field: np.ndarray, intensity: np.ndarray, mask: np.ndarray, plane_ok: np.ndarray,
                 background: np.ndarray, rows: np.ndarray, scale2: float, poisson: bool, write_chi: bool) -> float:
    """Σ ω ℓ(h, I) with h = |Ψ|² + b (Thibault & Guizar-Sicairos 2012): amplitude ℓ = (√h − √I)²
    (seed Eq 4) or Poisson h − I log h.

    With ``write_chi``: field ← scale2·A·χ/Ψ, χ = ∂L/∂Ψ* = ω(1 − √I/√h)Ψ or ω(1 − I/h)Ψ, so that the
    unnormalised adjoint of the crop is g = F^H χ.
    """
    n1 = field.shape[0]
    cost_rows = np.zeros(n1)
    for i in nb.prange(n1):
        cost_rows[i] = _data_term_row(field, intensity, mask, plane_ok, background, i, rows[i], scale2, poisson,
                                      write_chi)
    return cost_rows.sum()


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _line_sums_run(psi0: np.ndarray, psi1: np.ndarray, psi2: np.ndarray, has_psi2: bool, intensity: np.ndarray,
                   mask: np.ndarray, plane_ok: np.ndarray, background: np.ndarray, scale2: float,
                   poisson: bool) -> tuple[float, float]:
    """:func:`ml_line_sums` on one contiguous run of planes (1D slices, float64, branch-free)."""
    s1 = 0.0
    s2 = 0.0
    for k in range(psi0.shape[0]):
        on = mask[k] & plane_ok[k]
        x0, y0 = float(psi0[k].real), float(psi0[k].imag)
        x1, y1 = float(psi1[k].real), float(psi1[k].imag)
        a0 = max(scale2 * (x0 * x0 + y0 * y0) + float(background[k]), _TINY)
        a1 = 2.0 * scale2 * (x0 * x1 + y0 * y1)
        a2 = scale2 * (x1 * x1 + y1 * y1)
        if has_psi2:
            a2 += 2.0 * scale2 * (x0 * float(psi2[k].real) + y0 * float(psi2[k].imag))
        inten = float(intensity[k])
        if poisson:
            f = 1.0 - inten / a0
            e1 = a1 * f
            e2 = 2.0 * a2 * f + inten * (a1 / a0) * (a1 / a0)
        else:
            r0 = math.sqrt(a0)
            res = r0 - math.sqrt(max(inten, 0.0))
            da = a1 / (2.0 * r0)
            e1 = 2.0 * res * da
            e2 = 2.0 * (da * da + res * (a2 - a1 * a1 / (4.0 * a0)) / r0)
        s1 += e1 if on else 0.0
        s2 += e2 if on else 0.0
    return s1, s2


@nb.njit(cache=True, error_model="numpy")
def _line_sums_row(psi0: np.ndarray, psi1: np.ndarray, psi2: np.ndarray, has_psi2: bool, intensity: np.ndarray,
                   mask: np.ndarray, plane_ok: np.ndarray, background: np.ndarray, i: int, r: int, scale2: float,
                   poisson: bool) -> tuple[float, float]:
    """One crop row of :func:`ml_line_sums` (two runs per line, as :func:`_data_term_row`)."""
    n2, nm = psi0.shape[1], psi0.shape[2]
    h2, hm = n2 - n2 // 2, nm - nm // 2
    lo, hi = nm // 2, nm - hm
    s1 = 0.0
    s2 = 0.0
    for j in range(n2):
        q = j + n2 // 2 if j < h2 else j - h2
        a1, a2 = _line_sums_run(psi0[i, j, :hm], psi1[i, j, :hm], psi2[i, j, :hm], has_psi2, intensity[r, q, lo:],
                                mask[r, q, lo:], plane_ok[lo:], background[r, q, lo:], scale2, poisson)
        b1, b2 = _line_sums_run(psi0[i, j, hm:], psi1[i, j, hm:], psi2[i, j, hm:], has_psi2, intensity[r, q, :hi],
                                mask[r, q, :hi], plane_ok[:hi], background[r, q, :hi], scale2, poisson)
        s1 += a1 + b1
        s2 += a2 + b2
    return s1, s2


@nb.njit(parallel=True, cache=True, error_model="numpy")
def ml_line_sums(psi0: np.ndarray, psi1: np.ndarray, psi2: np.ndarray, has_psi2: bool, intensity: np.ndarray,
                 mask: np.ndarray, plane_ok: np.ndarray, background: np.ndarray, rows: np.ndarray, scale2: float,
                 poisson: bool) -> tuple[float, float]:
    """(L'(0), L''(0)) of the data term along Ψ(t) = Ψ0 + tΨ1 + t²Ψ2 (Thibault & Guizar-Sicairos 2012), float64 sums.

    h(t) = A0 + A1 t + A2 t² + …: A0 = |Ψ0|² + b, A1 = 2Re(Ψ0*Ψ1), A2 = |Ψ1|² + 2Re(Ψ0*Ψ2).
    Poisson: L' = Σω A1(1 − I/A0), L'' = Σω[2A2(1 − I/A0) + I(A1/A0)²]. Amplitude: a0 = √A0,
    a' = A1/(2a0), a'' = (A2 − A1²/(4A0))/a0, L' = 2Σω(a0 − √I)a', L'' = 2Σω[a'² + (a0 − √I)a''].
    ``psi2`` is read only when ``has_psi2`` (probe fixed: Ψ2 = 0).
    """
    n1 = psi0.shape[0]
    d1_rows = np.zeros(n1)
    d2_rows = np.zeros(n1)
    for i in nb.prange(n1):
        d1_rows[i], d2_rows[i] = _line_sums_row(psi0, psi1, psi2, has_psi2, intensity, mask, plane_ok, background,
                                                i, rows[i], scale2, poisson)
    return d1_rows.sum(), d2_rows.sum()


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _gradient_run(g_obj: np.ndarray, rho: np.ndarray, p: np.ndarray, g: np.ndarray, probe_gradient: bool,
                  w: np.ndarray | None, r: np.ndarray | None, strength: np.float32) -> None:
    """One box line of :func:`ml_gradient` (NM planes, 1D contiguous slices, vectorised; the ``None``
    branches are pruned when Numba compiles).
    """
    for k in range(g.shape[0]):
        d = g[k]
        pk = p[k]
        g_obj[k] += pk.conjugate() * d
        if w is not None:
            w[k] += pk.real * pk.real + pk.imag * pk.imag
        if probe_gradient:
            if r is not None:
                p[k] = rho[k].conjugate() * d + (strength * r[k]) * pk
            else:
                p[k] = rho[k].conjugate() * d


@nb.njit(parallel=True, cache=True, error_model="numpy")
def ml_gradient(g_obj: np.ndarray, obj: np.ndarray, offset: np.ndarray, p3: np.ndarray, g_fold: np.ndarray,
                probe_gradient: bool, w0: np.ndarray | None, r0: np.ndarray | None, strength: np.float32) -> None:
    """∇ρ* L += scatter_{o_j}(P_j* g_j) (Thibault & Guizar-Sicairos 2012) and, if asked, p3 ← ρ_j* g_j
    (for ∇P2* = B^H of it).

    g_j[n1, n2, c] = g_fold[n2, n1, c mod NM] (the adjoint fold replicates the planes);
    ``g_obj`` and ρ are the whole arrays (C order). For the ML smoothness prior
    (analysis.bragg.solvers.smoothness): ``w0`` (object grid, float32) accumulates |P_j|² on view j, and with
    ``r0`` (object grid, float32) p3 ← ρ_j* g_j + s r0_j P_j; None: not wanted.
    """
    n1p, n2, n3 = p3.shape
    nm = g_fold.shape[2]
    o1, o2, o3 = offset[0], offset[1], offset[2]
    for a in nb.prange(n1p):
        for b in range(n2):
            for c0 in range(0, n3, nm):
                lo, hi = o3 + c0, o3 + c0 + nm
                _gradient_run(g_obj[o1 + a, o2 + b, lo:hi], obj[o1 + a, o2 + b, lo:hi], p3[a, b, c0:c0 + nm],
                              g_fold[b, a], probe_gradient, None if w0 is None else w0[o1 + a, o2 + b, lo:hi],
                              None if r0 is None else r0[o1 + a, o2 + b, lo:hi], strength)


@nb.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _illumination_direction_run(w1: np.ndarray, w2: np.ndarray, p: np.ndarray, dp: np.ndarray) -> None:
    for k in range(p.shape[0]):
        a = p[k]
        b = dp[k]
        w1[k] += 2.0 * (a.real * b.real + a.imag * b.imag)
        w2[k] += b.real * b.real + b.imag * b.imag


@nb.njit(parallel=True, cache=True, error_model="numpy")
def illumination_direction(w1: np.ndarray, w2: np.ndarray, offset: np.ndarray, p3: np.ndarray,
                           dp3: np.ndarray) -> None:
    """w1 += 2Re(P_j* ΔP_j), w2 += |ΔP_j|² on view j (the prior's line maps; whole object-grid float32 arrays)."""
    n1p, n2, n3 = p3.shape
    o1, o2, o3 = offset[0], offset[1], offset[2]
    for a in nb.prange(n1p):
        for b in range(n2):
            _illumination_direction_run(w1[o1 + a, o2 + b, o3:o3 + n3], w2[o1 + a, o2 + b, o3:o3 + n3],
                                        p3[a, b], dp3[a, b])


# --------------------------------------------------------------------------- ML smoothness prior
# R = s Σ_n w(n) Σ_a |ρ(n + e_a) − ρ(n)|² on a 3D grid with periodic neighbours (analysis.bragg.solvers.smoothness);
# these kernels compute its maps and sums voxel by voxel, without the whole-array differences.


@nb.njit(cache=True, error_model="numpy")
def _neighbours(i: int, j: int, n0: int, n1: int) -> tuple[int, int, int, int]:
    """(i + 1, i − 1, j + 1, j − 1), periodic."""
    return (i + 1) % n0, (i - 1) % n0, (j + 1) % n1, (j - 1) % n1


@nb.njit(parallel=True, cache=True, error_model="numpy")
def roughness(rho: np.ndarray, out: np.ndarray) -> None:
    """out(n) = Σ_a |ρ(n + e_a) − ρ(n)|² (3D, periodic)."""
    n0, n1, n2 = rho.shape
    for i in nb.prange(n0):
        for j in range(n1):
            ip, _, jp, _ = _neighbours(i, j, n0, n1)
            for k in range(n2):
                v = rho[i, j, k]
                d0 = rho[ip, j, k] - v
                d1 = rho[i, jp, k] - v
                d2 = rho[i, j, (k + 1) % n2] - v
                out[i, j, k] = (d0.real * d0.real + d0.imag * d0.imag + d1.real * d1.real + d1.imag * d1.imag
                                + d2.real * d2.real + d2.imag * d2.imag)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def prior_gradient(rho: np.ndarray, w: np.ndarray, strength: float, grad: np.ndarray) -> float:
    """grad ← s Σ_a D_aᴴ(w D_a ρ), i.e. s Σ_a [w(n − e_a)(ρ(n) − ρ(n − e_a)) − w(n)(ρ(n + e_a) − ρ(n))];
    returns Σ_n w(n) Σ_a |D_a ρ(n)|² (float64, without s).
    """
    n0, n1, n2 = rho.shape
    partial = np.zeros(n0)
    for i in nb.prange(n0):
        acc = 0.0
        for j in range(n1):
            ip, im, jp, jm = _neighbours(i, j, n0, n1)
            for k in range(n2):
                kp, km = (k + 1) % n2, (k - 1) % n2
                v = rho[i, j, k]
                wn = w[i, j, k]
                d0 = rho[ip, j, k] - v
                d1 = rho[i, jp, k] - v
                d2 = rho[i, j, kp] - v
                acc += wn * (d0.real * d0.real + d0.imag * d0.imag + d1.real * d1.real + d1.imag * d1.imag
                             + d2.real * d2.real + d2.imag * d2.imag)
                g = (w[im, j, k] * (v - rho[im, j, k]) + w[i, jm, k] * (v - rho[i, jm, k])
                     + w[i, j, km] * (v - rho[i, j, km]) - wn * (d0 + d1 + d2))
                grad[i, j, k] = strength * g
        partial[i] = acc
    return partial.sum()


@nb.njit(parallel=True, cache=True, error_model="numpy")
def prior_line_sums(rho: np.ndarray, direction: np.ndarray, w0: np.ndarray, w1: np.ndarray, w2: np.ndarray,
                    with_probe: bool) -> np.ndarray:
    """S[i, k] = Σ_n w_i(n) r_k(n) (float64, 3 × 3) with r0 = Σ_a|D_aρ|², r1 = Σ_a 2Re (D_aρ)* D_aΔρ,
    r2 = Σ_a |D_aΔρ|²; rows 1, 2 (w1, w2) only ``with_probe``.
    """
    n0, n1, n2 = rho.shape
    partial = np.zeros((n0, 3, 3))
    for i in nb.prange(n0):
        for j in range(n1):
            ip, _, jp, _ = _neighbours(i, j, n0, n1)
            for k in range(n2):
                kp = (k + 1) % n2
                v = rho[i, j, k]
                dv = direction[i, j, k]
                r0 = 0.0
                r1 = 0.0
                r2 = 0.0
                for a in range(3):
                    if a == 0:
                        d = rho[ip, j, k] - v
                        e = direction[ip, j, k] - dv
                    elif a == 1:
                        d = rho[i, jp, k] - v
                        e = direction[i, jp, k] - dv
                    else:
                        d = rho[i, j, kp] - v
                        e = direction[i, j, kp] - dv
                    r0 += d.real * d.real + d.imag * d.imag
                    r1 += 2.0 * (d.real * e.real + d.imag * e.imag)
                    r2 += e.real * e.real + e.imag * e.imag
                x = w0[i, j, k]
                partial[i, 0, 0] += x * r0
                partial[i, 0, 1] += x * r1
                partial[i, 0, 2] += x * r2
                if with_probe:
                    y = w1[i, j, k]
                    z = w2[i, j, k]
                    partial[i, 1, 0] += y * r0
                    partial[i, 1, 1] += y * r1
                    partial[i, 1, 2] += y * r2
                    partial[i, 2, 0] += z * r0
                    partial[i, 2, 1] += z * r1
                    partial[i, 2, 2] += z * r2
    return partial.sum(axis=0)
