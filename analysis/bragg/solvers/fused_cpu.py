"""Fused CPU paths (Numba kernels, FFTW plans on fixed buffers): sequential ePIE and ML.

:class:`FoldedTransform` holds the forward model Ψ_j = F_meas(P_j V)
(seed Eq 1; docs/geometry.md, Operators) and its adjoint
as unnormalised FFTW passes on three preallocated buffers (box, folded box, crop); it is built
once per :class:`BraggModel` and shared by :class:`FusedCpuSweep` (sequential ePIE,
seed Eqs 5–11, 13; same update as :func:`analysis.bragg.solvers.epie._sequential`) and
:class:`FusedCpuML` (ML cost, gradients and line-search sums, Thibault & Guizar-Sicairos 2012 and seed Eq 4; same
numbers as the array code of :mod:`analysis.bragg.solvers.ml`). Every elementwise chain between the
transforms is one parallel Numba kernel (:mod:`analysis.bragg.solvers.cpu_kernels`):

    P̂2 ─B─▶ P_j ─(fold ψ = Σ_u P_j V)─▶ FFT_r3 ─ramp─▶ FFT_r1 ─▶ FFT_r2 (crop rows) ─▶ Eqs 13, 11 / χ
    ◀── ρ, ρ*Δψ (Eqs 5, 7, 9) / ∇ρ*, ρ*g ◀── iFFT_r3 ◀─ramp*─ iFFT_r1 ◀── iFFT_r2 (pad rows) ◀──┘

Scalars cancel or are folded into one factor: |Ψ|² = |A|²/(N3 N1' N2') for the unnormalised
crop A, so the centring phases of the array path never appear (they cancel in |Ψ|², in
Re(Ψ0*Ψ1) and between F and F^H); the shift of P2 and the NA mask stay in the small (N2, N3)
plane. Used by :func:`analysis.bragg.solvers.epie.step` and :mod:`analysis.bragg.solvers.ml` when the
inputs are NumPy complex64, Numba and pyFFTW import, and the geometry is the seed's kind (shear
ramp along r1 only, probe extruded along r3 only, crop along r1 only); otherwise the array path
runs. ``tests/analysis/test_fused_cpu.py`` and ``tests/analysis/test_fused_ml.py`` check both agree.
"""

# Why this module is long: the fused ePIE sweep and its FFTW plans on fixed buffers are one object whose buffers and
# plans must live together (docs/decisions/0004-fused-cpu-kernels.md).

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.options import EpieOptions, Execution
from analysis.xp import Array, aligned_empty, cpu_kernels, fft_module, fft_workers, fftw_plan

_TINY = 1e-30
_Path = TypeVar("_Path")


def cached_path(op: BraggModel, key: str, make: Callable[[], _Path],
                still_valid: Callable[[Any], bool] | None = None) -> _Path:
    """``op.fused_cpu[key]``, made by ``make`` the first time (or when ``still_valid`` rejects the cached one): the
    per-model cache of the fused paths (CPU and GPU), so plans, buffers and device constants are built once.
    """
    cached = op.fused_cpu.get(key)
    if cached is None or (still_valid is not None and not still_valid(cached)):
        cached = make()
        op.fused_cpu[key] = cached
    return cached


def line_views(state: BraggState, data: BraggData, op: BraggModel,
               d_obj: Array) -> Iterator[tuple[int, tuple[slice, ...], Array, Array]]:
    """(j, view slices, ρ view, Δρ view) of every measured position, in order: the walk of the ML line search
    (:meth:`FusedCpuML.line_sums` and the array code of :func:`analysis.bragg.solvers.ml.line_coefficients`).
    """
    for j in range(data.n_positions):
        if data.has_data(j):
            sl = op.view(data.offsets_vox[j])
            yield j, sl, state.object[sl], d_obj[sl]


def _fft_order_to_centred(n: int) -> np.ndarray:
    """Centred array index of each FFT-order index of an n-point grid: (i + n//2) mod n."""
    return (np.arange(n) + n // 2) % n


class ProbeBox:
    """One box buffer with the FFTW plans of the probe extrusion B and its adjoint B^H (docs/geometry.md, Operators).

    B runs in r3-frequency space: P_j = iFFT_r3[P̂2(f) e^{-2πi (n1 − c) d f}], P̂2 = FFT_r3(Shift_g P2).
    """

    def __init__(self, op: BraggModel, kernels: ModuleType, effort: str) -> None:
        self.op = op
        self.k = kernels
        n1p, n2p, n3 = op.box_shape
        self.n1p, self.n3 = n1p, n3
        self.box = aligned_empty((n1p, n2p, n3), np.complex64)   # P_j, then ρ*g (probe gradient)
        self._inv = fftw_plan(self.box, self.box, (2,), inverse=True, effort=effort)
        self._fwd = fftw_plan(self.box, self.box, (2,), inverse=False, effort=effort)
        self._slices = np.ascontiguousarray(op.extrusion._slices.reshape(n1p, n3)).astype(np.complex64)  # noqa: SLF001
        self._proj = np.empty((n2p, n3), np.complex128)

    def extrude(self, p2: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
        """box ← P_j = B Shift_g P2 (docs/geometry.md, Operators); the 1/N3 of the inverse FFT goes into P̂2."""
        p2_hat = fft_module(np).fft(self.op.shift2d(p2, shift_px), axis=-1, workers=fft_workers())
        p2_hat *= 1.0 / self.n3
        self.k.extrusion_spectrum(p2_hat, self._slices, self.box)
        self._inv.execute()
        return self.box

    def adjoint(self, shift_px: np.ndarray) -> np.ndarray:
        """Shift_{−g} B^H of the box (the *sum* along k_i), (N2, N3) complex64; destroys the box."""
        self._fwd.execute()
        self.k.projection_spectrum(self.box, self._slices, self._proj)
        g = fft_module(np).ifft(self._proj, axis=-1, workers=fft_workers()).astype(np.complex64)
        return self.op.shift2d(g, shift_px, inverse=True)


class FoldedTransform:
    """Ψ_j = F_meas(P_j V) and F_meas^H on fixed buffers, unnormalised
    (seed Eq 1; docs/geometry.md, Operators), for one :class:`BraggModel`.

    ``forward`` leaves the crop A in FFT order (|Ψ|² = ``scale2``·|A|²); ``adjoint`` takes the
    crop holding ``scale2``·A·f and leaves F_meas^H(Ψ f) folded in ``fold`` (N2, N1P, NM): the U
    replicas along r3 are read with c mod NM. Build with :meth:`for_model` (cached on the model).
    """

    def __init__(self, op: BraggModel, kernels: ModuleType, effort: str = "FFTW_MEASURE") -> None:
        why = self.unsupported_reason(op)
        if why:
            raise ValueError(f"{type(self).__name__}: {why}")
        self.op = op
        self.k = kernels
        self.effort = effort
        f = op.fourier
        n1p, n2p, n3 = op.box_shape
        n1, n2 = f.crop_shape
        nm, u = f.n_measured, f.upsampling
        self.n1p = n1p
        c64 = np.complex64
        self.probe = ProbeBox(op, kernels, effort)
        self.fold = aligned_empty((n2p, n1p, nm), c64)     # folded ψ_j, then Δψ_j / g_j; (r2, r1, k) order
        self.crop = aligned_empty((n1, n2, nm), c64)       # A on the detector crop, FFT order
        self._pos, self._neg = n1 - n1 // 2, n1 // 2          # crop rows m1 ≥ 0 and m1 < 0
        self._r3_fwd = fftw_plan(self.fold, self.fold, (2,), inverse=False, effort=effort)
        self._r3_inv = fftw_plan(self.fold, self.fold, (2,), inverse=True, effort=effort)
        self._r1_fwd = fftw_plan(self.fold, self.fold, (1,), inverse=False, effort=effort)
        self._r1_inv = fftw_plan(self.fold, self.fold, (1,), inverse=True, effort=effort)
        # r2 transform and r1 crop in one out-of-place pass: rows m1 ≥ 0 then m1 < 0, written
        # straight into the (N1, N2, NM) crop through transposed views
        blocks = [(self.fold[:, :self._pos], self.crop[:self._pos].transpose(1, 0, 2))]
        if self._neg:
            blocks.append((self.fold[:, n1p - self._neg:], self.crop[self._pos:].transpose(1, 0, 2)))
        self._r2_fwd = [fftw_plan(a, c, (0,), inverse=False, effort=effort) for a, c in blocks]
        self._r2_inv = [fftw_plan(c, a, (0,), inverse=True, effort=effort) for a, c in blocks]
        # shear ramp e^{-i m3 Δq3 u1 n1 Δr1} on (n1, FFT bin of k), m3 = U k (docs/geometry.md, Operators, shear ramp)
        kk = np.fft.fftfreq(nm) * nm
        n1c = np.arange(n1p) - n1p // 2
        self._ramp = np.exp(-1j * f.shear_rad[0] * n1c[:, None] * (u * kk)[None, :]).astype(c64)
        self.rows = _fft_order_to_centred(n1)
        self.scale2 = 1.0 / (n3 * n1p * n2p)
        self.pmax_rows = np.empty(n1p)
        self.vmax_rows = np.empty(n1p)
        self._all_planes = np.ones(nm, bool)

    @staticmethod
    def unsupported_reason(op: BraggModel) -> str:
        """Why the fused path cannot run ``op`` ('' when it can)."""
        f, e = op.fourier, op.extrusion
        if f.m0 != 0:
            return f"measured-plane offset m0 = {f.m0} (only 0)"
        if f.shear_rad[1] != 0.0:
            return "shear ramp along r2 (only along r1)"
        if e.slope_px[0] != 0.0 or e.shift_px != (0.0, 0.0):
            return "probe extruded along r2 (only along r3)"
        if f.crop_shape[1] != f.box_shape[1]:
            return f"crop along r2 ({f.crop_shape[1]} of {f.box_shape[1]})"
        return ""

    @classmethod
    def for_model(cls, op: BraggModel, state: BraggState, enabled: bool,
                  effort: str = "FFTW_MEASURE") -> FoldedTransform | None:
        """The (cached) transform of ``op``, or None where the fused path does not apply (array path runs).

        Applies when ``enabled``, ρ and P2 are NumPy complex64, the kernels import and the
        geometry is supported.
        """
        if not enabled or not isinstance(state.object, np.ndarray) or not isinstance(state.probe, np.ndarray):
            return None
        if state.object.dtype != np.complex64 or state.probe.dtype != np.complex64:
            return None
        kernels = cpu_kernels()
        if kernels is None or cls.unsupported_reason(op):
            return None
        return cached_path(op, "transform", lambda: cls(op, kernels, effort=effort))

    def fold_product(self, p3: np.ndarray, view: np.ndarray, accumulate: bool = False) -> None:
        """fold (+)= Σ_u p3·view (the r3 fold of seed Eq 1; docs/geometry.md, Operators); also sets
        ``pmax_rows``/``vmax_rows``.
        """
        self.k.folded_exit_wave(p3, view, self.fold, self.pmax_rows, self.vmax_rows, accumulate)

    def transform(self) -> np.ndarray:
        """crop ← A = FFT_r2 FFT_r1 ramp FFT_r3 (fold), unnormalised, FFT order (destroys ``fold``)."""
        self._r3_fwd.execute()
        self.k.apply_ramp(self.fold, self._ramp, False)
        self._r1_fwd.execute()
        for p in self._r2_fwd:
            p.execute()
        return self.crop

    def forward(self, p3: np.ndarray, view: np.ndarray) -> np.ndarray:
        """crop ← A with Ψ_j = F_meas(p3·view) (|Ψ|² = scale2·|A|²)."""
        self.fold_product(p3, view)
        return self.transform()

    def adjoint(self) -> np.ndarray:
        """fold ← unnormalised F_meas^H of the crop, folded (destroys ``crop``)."""
        for p in self._r2_inv:
            p.execute()
        self.fold[:, self._pos:self.n1p - self._neg] = 0
        self._r1_inv.execute()
        self.k.apply_ramp(self.fold, self._ramp, True)
        self._r3_inv.execute()
        return self.fold

    def mask(self, data: BraggData, j: int) -> tuple[Array, Array]:
        """(ω (N1, N2, NM) bool, valid planes (NM,) bool) of position j for the kernels."""
        fv = data.frame_valid
        if fv is None:
            return data.mask, self._all_planes
        if fv.ndim == 2:
            return data.mask, np.ascontiguousarray(fv[j])
        return data.mask_at(j), self._all_planes


def _contiguous_state(state: BraggState) -> None:
    """Make ρ and S C-contiguous in place (the kernels index whole arrays)."""
    if not (state.object.flags.c_contiguous and state.support.flags.c_contiguous):
        state.object = np.ascontiguousarray(state.object)
        state.support = np.ascontiguousarray(state.support)


class FusedCpuSweep:
    """The fused sequential ePIE sweep on a shared :class:`FoldedTransform`.

    Build with :meth:`for_model`, which returns None where the fused path does not apply.
    """

    def __init__(self, op: BraggModel, kernels: ModuleType, effort: str = "FFTW_MEASURE",
                 transform: FoldedTransform | None = None) -> None:
        self.t = FoldedTransform(op, kernels, effort) if transform is None else transform
        self.op = op
        self.k = kernels

    @staticmethod
    def unsupported_reason(op: BraggModel) -> str:
        """Why the fused path cannot run ``op`` ('' when it can)."""
        return FoldedTransform.unsupported_reason(op)

    @classmethod
    def for_model(cls, op: BraggModel, state: BraggState, execution: Execution) -> FusedCpuSweep | None:
        """The (cached) fused sweep of ``op``, or None where it does not apply (array path runs)."""
        t = FoldedTransform.for_model(op, state, execution.cpu_kernels, execution.fftw_effort)
        return None if t is None else cached_path(op, "epie", lambda: cls(op, t.k, transform=t))

    def sweep(self, state: BraggState, data: BraggData, options: EpieOptions, order: np.ndarray,
              update_probe: bool) -> float:
        """One sequential sweep over ``order``; returns Σ_j Σ ω (√h − √I)² (before each update)."""
        if not (isinstance(state.background, np.ndarray) and state.background.dtype == np.float32
                and state.background.flags.c_contiguous):
            state.background = np.ascontiguousarray(state.background, dtype=np.float32)
        _contiguous_state(state)
        total = 0.0
        for j in order:
            if data.has_data(int(j)):
                total += self._position(state, data, int(j), options, update_probe)
        return total

    def _position(self, state: BraggState, data: BraggData, j: int, options: EpieOptions,
                  update_probe: bool) -> float:
        k, t = self.k, self.t
        view = state.object[self.op.view(data.offsets_vox[j])]
        p3 = t.probe.extrude(state.probe, data.shifts_px[j])
        # Ψ_j = F_meas(P_j V), unnormalised (seed Eq 1; docs/geometry.md, Operators)
        crop = t.forward(p3, view)
        mask, planes_ok = t.mask(data, j)
        misfit = k.modulus_and_background(crop, data.intensities[j], mask, planes_ok, state.background,
                                          t.rows, t.scale2, float(options.gamma))
        dpsi = t.adjoint()                                   # Δψ_j = F_meas^H(Ψ' − Ψ), folded
        pmax = float(t.pmax_rows.max())
        vmax = float(t.vmax_rows.max())
        k.object_update(state.object, state.support, data.offsets_vox[j], p3, dpsi, float(options.beta),
                        pmax, float(options.mu) * pmax, float(options.alpha), vmax, bool(update_probe))
        if update_probe:                                     # Eq 6: P2 += R(ρ*Δψ)/den, R = B^H/N1'
            g = t.probe.adjoint(data.shifts_px[j])
            den = vmax if options.alpha == 1.0 else 1.0
            state.probe += g * np.float32(1.0 / (t.n1p * max(den, _TINY)))
        return float(misfit)


class FusedCpuML:
    """Cost, Wirtinger gradients and line-search sums of the ML refinement (Thibault & Guizar-Sicairos 2012) on a shared
    :class:`FoldedTransform`; the μ term stays in :mod:`analysis.bragg.solvers.ml` (it is cheap).

    Per position: the gradient pass does P_j, F, χ, F^H, ∇ρ* scatter and B^H (as one ePIE
    position); the line pass P_j (and ΔP_j), F(PΔV + ΔP V) (and F(ΔPΔV)) with Ψ0 kept from the
    gradient pass; the cost pass P_j, F. Build with :meth:`for_model`.
    """

    def __init__(self, transform: FoldedTransform) -> None:
        t = transform
        self.t = t
        self.k = t.k
        self.op = t.op
        self.delta_probe = ProbeBox(t.op, t.k, t.effort)              # ΔP_j for the line search
        self._psi0 = np.empty_like(t.crop)                            # Ψ0 when not kept
        self._psi2 = np.empty_like(t.crop)                            # Ψ2 = F(ΔP ΔV)
        self._background = np.zeros(t.crop.shape, np.float32)         # b as float32 (set per pass)

    @classmethod
    def for_model(cls, op: BraggModel, state: BraggState, execution: Execution) -> FusedCpuML | None:
        """The (cached) fused ML path of ``op``, or None where it does not apply (array path runs)."""
        t = FoldedTransform.for_model(op, state, execution.cpu_kernels, execution.fftw_effort)
        return None if t is None else cached_path(op, "ml", lambda: cls(t))

    def kept_waves(self, n_positions: int, current: Any = None) -> np.ndarray:
        """A (POS, N1, N2, NM) complex64 buffer for the Ψ crops: ``current`` if it is one, else a new one."""
        shape = (n_positions,) + self.t.crop.shape
        if isinstance(current, np.ndarray) and current.shape == shape and current.dtype == np.complex64:
            return current
        return np.empty(shape, np.complex64)

    def _data(self, data: BraggData, j: int) -> tuple[Array, Array, Array, Array]:
        """(I_j, ω_j, valid planes, b) as the kernels take them."""
        mask, planes_ok = self.t.mask(data, j)
        return data.intensities[j], mask, planes_ok, self._background

    def _prepare(self, state: BraggState) -> None:
        _contiguous_state(state)
        self._background = np.ascontiguousarray(state.background, dtype=np.float32)

    def _data_term(self, data: BraggData, j: int, poisson: bool, write_chi: bool) -> float:
        t = self.t
        return float(self.k.ml_data_term(t.crop, *self._data(data, j), t.rows, t.scale2,
                                         poisson, write_chi))

    def cost_and_gradient(self, state: BraggState, data: BraggData, poisson: bool, with_probe: bool,
                          kept: np.ndarray | None, reuse: bool = False, prior_w0: np.ndarray | None = None,
                          prior_r0: np.ndarray | None = None,
                          prior_strength: float = 0.0) -> tuple[float, np.ndarray, np.ndarray]:
        """(Σ_j Σ ω ℓ, Σ_j scatter(P_j* F^H χ_j), Σ_j Shift_{−g_j} B^H(ρ_j* F^H χ_j))
        (Thibault & Guizar-Sicairos 2012, seed Eq 4).

        ``kept`` (POS, N1, N2, NM): receives the unnormalised Ψ0 crops for :meth:`line_sums`, or with
        ``reuse`` already holds them (kept by :meth:`cost` on this very state): F is then skipped.
        ``prior_w0`` (object grid, float32): receives Σ_j |P_j|²; with ``prior_r0`` the smoothness
        prior's s r0_j P_j joins ρ_j* F^H χ_j before B^H (module :mod:`analysis.bragg.solvers.smoothness`).
        """
        self._prepare(state)
        t, k, op = self.t, self.k, self.op
        g_obj = np.zeros_like(state.object)
        g_pr = np.zeros_like(state.probe)
        total = 0.0
        for j in range(data.n_positions):
            if not data.has_data(j):
                continue                                    # ω_j = 0 everywhere: no cost, χ_j = 0
            view = state.object[op.view(data.offsets_vox[j])]
            p3 = t.probe.extrude(state.probe, data.shifts_px[j])
            if reuse and kept is not None:
                np.copyto(t.crop, kept[j])
            else:
                t.forward(p3, view)
                if kept is not None:
                    np.copyto(kept[j], t.crop)
            total += self._data_term(data, j, poisson, True)                  # crop ← scale2·A·χ/Ψ
            g = t.adjoint()                                                   # g_j = F^H χ_j, folded
            k.ml_gradient(g_obj, state.object, data.offsets_vox[j], p3, g, with_probe, prior_w0, prior_r0,
                          np.float32(prior_strength))
            if with_probe:
                g_pr += t.probe.adjoint(data.shifts_px[j])
        return total, g_obj, g_pr

    def cost(self, state: BraggState, data: BraggData, poisson: bool, kept: np.ndarray | None = None) -> float:
        """Σ_j Σ ω ℓ(h_j, I_j), the data term of L (seed Eq 4 / Poisson); Ψ_j crops into ``kept`` if given."""
        self._prepare(state)
        t = self.t
        total = 0.0
        for j in range(data.n_positions):
            if data.has_data(j):
                t.forward(t.probe.extrude(state.probe, data.shifts_px[j]),
                          state.object[self.op.view(data.offsets_vox[j])])
                if kept is not None:
                    np.copyto(kept[j], t.crop)
                total += self._data_term(data, j, poisson, False)
        return total

    def line_sums(self, state: BraggState, data: BraggData, poisson: bool, d_obj: np.ndarray,
                  d_probe: np.ndarray | None, kept: np.ndarray | None,
                  prior_w12: list[np.ndarray] | None = None) -> tuple[float, float]:
        """Data-term (L'(0), L''(0)) along (Δρ, ΔP) from Ψ(t) = Ψ0 + tΨ1 + t²Ψ2
        (Thibault & Guizar-Sicairos 2012), float64 sums.

        Ψ1 = F(P ΔV + ΔP V), Ψ2 = F(ΔP ΔV); Ψ0 from ``kept`` (the gradient pass) or recomputed.
        ``prior_w12`` [w1, w2] (object grid, float32; with ``d_probe``): receive Σ_j 2Re P_j*ΔP_j, Σ_j |ΔP_j|².
        """
        self._prepare(state)
        t, k = self.t, self.k
        d_obj = np.ascontiguousarray(d_obj)
        d1 = d2 = 0.0
        for j, _, v, dv in line_views(state, data, self.op, d_obj):
            p3 = t.probe.extrude(state.probe, data.shifts_px[j])
            if kept is None:
                np.copyto(self._psi0, t.forward(p3, v))
            psi0 = self._psi0 if kept is None else kept[j]
            if d_probe is not None:
                dp3 = self.delta_probe.extrude(d_probe, data.shifts_px[j])
                if prior_w12 is not None:
                    k.illumination_direction(prior_w12[0], prior_w12[1], data.offsets_vox[j], p3, dp3)
                np.copyto(self._psi2, t.forward(dp3, dv))
                t.fold_product(p3, dv)
                t.fold_product(dp3, v, accumulate=True)
                psi1 = t.transform()
            else:
                psi1 = t.forward(p3, dv)
            s1, s2 = k.ml_line_sums(psi0, psi1, self._psi2, d_probe is not None, *self._data(data, j),
                                    t.rows, t.scale2, poisson)
            d1 += s1
            d2 += s2
        return d1, d2
