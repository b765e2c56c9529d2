"""The fused sequential ePIE sweep and ML passes on a GPU: CuPy's cuFFT plus the CUDA kernels of
:mod:`analysis.bragg.solvers.gpu_kernels`.

Same mathematics as :class:`analysis.bragg.solvers.fused_cpu.FusedCpuSweep` (seed Eqs 1, 5–11, 13), on device
arrays, with no host↔device copy and no host sync inside the sweep:

    P̃2 = FFT2(P2) once per sweep ─[shift phase, iDFT_r2]─▶ extrude ─▶ iFFT_r3 = P_j ─[fold Σ_u P_j ρ, DFT_k, ramp]─▶
    FFT2_(r1,r2) ─modulus + background (crop rows, ω)─▶ iFFT2 ─[ramp*, iDFT_k, object update at c mod NM]─▶
    ρ, ρ*Δψ ─FFT_r3─▶ B^H ─[DFT_r2, shift phase*]─▶ P̃2 += … / max|ρ|²  …  P2 = iFFT2(M_NA · P̃2) once per sweep

(brackets: one kernel each; the NM-point DFTs along the measured planes run inside the fold and update
kernels as NM-term sums, which trades 4 passes over the folded box and 4 launches for ≈ (N3 + NM)·8 flop per
folded voxel and NM·8 per box voxel).

The probe is kept in 2D frequency space during the sweep (its sub-pixel shift and the NA mask are products
there); max|P_j|², max|ρ_j|² and the misfit stay on the device (one slot per position); the cost is read
once per sweep and the ρ/P scale is fixed on the device. Transforms are unnormalised, as on CPU:
|Ψ|² = scale2·|A|² with scale2 = 1/(N3 N1' N2'), and the centring phases cancel. The kernels are compiled
once per model (``cupy.RawModule``); in CI they run through their NumPy references on the CuPy stand-in
(``testing/fake_cupy.py``), and ``tests/analysis/test_fused_gpu.py`` compares the whole sweep with the
CPU array code. :class:`FusedGpuML` runs the ML passes on the same kernels (the interface of
:class:`analysis.bragg.solvers.fused_cpu.FusedCpuML`). ``PXM_GPU_KERNELS=0`` runs the CuPy array code instead.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from analysis.bragg.solvers.fused_cpu import FoldedTransform, cached_path
from analysis.bragg.solvers.gpu_kernels import CUDA_SOURCE, KERNELS, launch_grid
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.options import EpieOptions, Execution
from analysis.xp import Array, array_module, fft_module

_TINY = 1e-30
_I32, _F32, _F64 = np.int32, np.float32, np.float64


class FusedGpuSweep:
    """The fused sequential ePIE sweep on CuPy arrays; build with :meth:`for_model` (None where it does not apply)."""

    def __init__(self, op: BraggModel, xp: ModuleType) -> None:
        why = FoldedTransform.unsupported_reason(op)
        if why:
            raise ValueError(f"FusedGpuSweep: {why}")
        self.op, self.xp = op, xp
        f = op.fourier
        self.n1p, self.n2, self.n3 = (int(v) for v in op.box_shape)
        self.n1 = int(f.crop_shape[0])
        self.nm, u = int(f.n_measured), int(f.upsampling)
        module = xp.RawModule(code=CUDA_SOURCE)
        self._fn = {name: module.get_function(name) for name in KERNELS}
        c64 = np.complex64
        slices = np.ascontiguousarray(op.extrusion._slices.reshape(self.n1p, self.n3))  # noqa: SLF001
        kk = np.fft.fftfreq(self.nm) * self.nm
        n1c = np.arange(self.n1p) - self.n1p // 2
        ramp = np.exp(-1j * f.shear_rad[0] * n1c[:, None] * (u * kk)[None, :])            # (N1', NM), FFT order in k
        q = np.arange(self.nm)
        tw = np.exp(-2j * np.pi * np.outer(q, q) / self.nm)                                 # DFT matrix e^{-2πi qk/NM}
        # constants copied to the device once per model
        self.slices = xp.asarray(slices, dtype=c64)
        self.ramp = xp.asarray(ramp, dtype=c64)
        self.twiddles = xp.asarray(tw, dtype=c64)
        self.all_planes = xp.asarray(np.ones(self.nm, bool))
        self.na_mask = None if op.na_mask is None else xp.asarray(op.na_mask, dtype=bool)
        self.scale2 = 1.0 / (self.n3 * self.n1p * self.n2)

    @classmethod
    def for_model(cls, op: BraggModel, state: BraggState, execution: Execution | None = None) -> FusedGpuSweep | None:
        """The (cached) fused GPU sweep of ``op``, or None: not CuPy complex64, ``execution.gpu_kernels`` off
        (``PXM_GPU_KERNELS=0``; ``execution`` None: :class:`Execution`'s defaults), no
        ``RawModule``, or a geometry the fused path does not support (the CuPy array code then runs).
        """
        xp = array_module(state.object)
        enabled = (Execution() if execution is None else execution).gpu_kernels
        if xp is np or not enabled or getattr(xp, "RawModule", None) is None:
            return None
        if state.object.dtype != np.complex64 or state.probe.dtype != np.complex64:
            return None
        if FoldedTransform.unsupported_reason(op):
            return None
        return cached_path(op, "gpu-epie", lambda: cls(op, xp), lambda c: c.xp is xp)

    def _launch(self, name: str, n: int, args: tuple[Any, ...]) -> None:
        grid, block = launch_grid(n)
        self._fn[name](grid, block, args)

    def sweep(self, state: BraggState, data: BraggData, options: EpieOptions, order: np.ndarray, update_probe: bool,
              na_mask: bool, normalise: bool) -> float:
        """One sequential sweep over ``order``; returns Σ_j Σ ω (√h − √I)² (before each update), read once.

        ``na_mask``: apply the NA mask to P2 at the end (in frequency space); ``normalise``: fix the ρ/P scale
        (mean |ρ| on S = 1) on the device, as :func:`analysis.bragg.solvers.model.normalise_scale`.
        """
        xp = self.xp
        fft = fft_module(xp)
        state.object = xp.ascontiguousarray(state.object)
        state.support = xp.ascontiguousarray(state.support)
        if state.background.dtype != np.float32:
            state.background = state.background.astype(np.float32)
        state.background = xp.ascontiguousarray(state.background)
        maxes = xp.zeros((data.n_positions, 2), np.float32)          # (max|P_j|², max|ρ_j|²) per position
        misfit = xp.zeros(data.n_positions, np.float64)
        p2f = fft.fft2(state.probe)                                   # P̃2, unnormalised
        for j in order:
            if data.has_data(int(j)):
                self._position(state, data, int(j), options, update_probe, p2f, maxes, misfit)
        if update_probe:
            if na_mask and self.na_mask is not None:
                p2f *= self.na_mask
            state.probe = fft.ifft2(p2f, overwrite_x=True)
        if normalise:
            self._normalise(state)
        return float(xp.sum(misfit))

    def _position(self, state: BraggState, data: BraggData, j: int, options: EpieOptions, update_probe: bool,
                  p2f: Array, maxes: Array, misfit: Array) -> None:
        fft = fft_module(self.xp)
        n1p, n2, n3, nm = self.n1p, self.n2, self.n3, self.nm
        obj = state.object
        no2, no3 = (_I32(v) for v in obj.shape[1:])
        o1, o2, o3 = (_I32(v) for v in data.offsets_vox[j])
        s0, s1 = (_F64(v) for v in data.shifts_px[j])
        dims = (_I32(n1p), _I32(n2), _I32(n3))
        mx = maxes[j]
        p3 = self.extrude(p2f, s0, s1)
        fold = self.forward(p3, obj, data.offsets_vox[j], mx)
        mask, planes = self._mask(data, j)
        self._launch("pxm_modulus", fold.size, (fold, data.intensities[j], mask, planes, state.background,
                                                misfit[j:j + 1], _I32(n1p), _I32(n2), _I32(nm), _I32(self.n1),
                                                _F32(self.scale2), _F32(options.gamma)))
        # Δψ_j = F_meas^H(Ψ' − Ψ): iFFT2 here, ramp* and iFFT_k inside the object update (Eqs 5, 7, 9)
        fold = fft.ifft2(fold, axes=(0, 1), norm="forward", overwrite_x=True)
        self._launch("pxm_object_update", p3.size, (obj, state.support, p3, fold, self.twiddles, self.ramp, mx, *dims,
                                                    _I32(nm), no2, no3, o1, o2, o3, _F32(options.beta),
                                                    _F32(options.mu), _F32(options.alpha), _I32(update_probe)))
        if update_probe:                            # Eq 6: P2 += R(ρ*Δψ)/den, R = B^H/N1', in 2D frequency space
            self.project_into(p2f, p3, s0, s1, mx, 1.0 / n1p, options.alpha == 1.0)

    def extrude(self, p2f: Array, s0: np.float64, s1: np.float64) -> Array:
        """P_j = B Shift_g P2 (N1', N2, N3) from P̃2 = FFT2(P2): P̂2 = iDFT_r2(P̃2 e^{-2πi(f·g)}) in one small kernel,
        extruded in r3-frequency space, iFFT_r3 (its 1/N3 folded into the first kernel's scale). ``p2f`` may stack
        several P̃2 (nb, N2, N3) with the same shift (P2 and ΔP2 in the line search): (nb, N1', N2, N3) in the
        same three launches.
        """
        xp, fft = self.xp, fft_module(self.xp)
        n1p, n2, n3 = self.n1p, self.n2, self.n3
        nb = int(p2f.size) // (n2 * n3)
        spec = xp.empty_like(p2f)
        self._launch("pxm_shifted_spectrum", spec.size, (p2f, spec, _I32(nb), _I32(n2), _I32(n3), s0, s1,
                                                         _F32(1.0 / (n2 * n3))))
        box = xp.empty((n1p, n2, n3) if p2f.ndim == 2 else (nb, n1p, n2, n3), np.complex64)
        self._launch("pxm_extrude", box.size, (spec, self.slices, box, _I32(nb), _I32(n1p), _I32(n2), _I32(n3)))
        return fft.ifft(box, axis=-1, norm="forward", overwrite_x=True)

    def forward(self, p3: Array, obj: Array, offset: np.ndarray, maxes: Array) -> Array:
        """A = unnormalised F_meas(p3·ρ_view) in the folded box (N1', N2, NM), FFT order: fold, FFT_k and the shear
        ramp in one kernel, then FFT2 over (r1, r2). ``maxes`` receives (max|p3|², max|ρ|²).
        """
        xp, fft = self.xp, fft_module(self.xp)
        fold = xp.empty((self.n1p, self.n2, self.nm), np.complex64)
        self._launch("pxm_fold_spectrum", fold.size, (p3, obj, self.twiddles, self.ramp, fold, maxes,
                                                      *self._geometry_args(obj, offset)))
        return fft.fft2(fold, axes=(0, 1), overwrite_x=True)

    def forward_pair(self, p3: Array, obj: Array, dp3: Array, dobj: Array, offset: np.ndarray) -> tuple[Array, Array]:
        """(F_meas(P ΔV + ΔP V), F_meas(ΔP ΔV)) as :meth:`forward`, both folds in one kernel (the ML line search)."""
        xp, fft = self.xp, fft_module(self.xp)
        s1 = xp.empty((self.n1p, self.n2, self.nm), np.complex64)
        s2 = xp.empty_like(s1)
        self._launch("pxm_fold_spectrum_pair", s1.size, (p3, obj, dp3, dobj, self.twiddles, self.ramp, s1, s2,
                                                         *self._geometry_args(obj, offset)))
        # two FFT2s over the leading axes: CuPy runs one cuFFT plan each (a batched (2, N1', N2, NM) transform
        # over axes (1, 2) would fall back to 1D transforms with copies)
        return fft.fft2(s1, axes=(0, 1), overwrite_x=True), fft.fft2(s2, axes=(0, 1), overwrite_x=True)

    def _geometry_args(self, obj: Array, offset: np.ndarray) -> tuple[np.int32, ...]:
        """(N1', N2, N3, NM, NO2, NO3, o1, o2, o3) as the kernels take them."""
        return tuple(_I32(v) for v in (self.n1p, self.n2, self.n3, self.nm, *obj.shape[1:], *offset))

    def project_into(self, acc: Array, p3: Array, s0: np.float64, s1: np.float64, maxes: Array, scale: float,
                     by_vmax: bool) -> None:
        """acc (2D frequency space of P2) += FFT2(Shift_{−g} B^H p3)·scale (/ max(vmax) with ``by_vmax``);
        destroys p3.
        """
        xp, fft = self.xp, fft_module(self.xp)
        n1p, n2, n3 = self.n1p, self.n2, self.n3
        g_hat = fft.fft(p3, axis=2, overwrite_x=True)
        proj = xp.empty((n2, n3), np.complex64)
        self._launch("pxm_project", proj.size, (g_hat, self.slices, proj, _I32(n1p), _I32(n2), _I32(n3)))
        self._launch("pxm_probe_update", proj.size, (acc, proj, maxes, _I32(n2), _I32(n3), s0, s1, _F32(scale),
                                                     _I32(by_vmax)))

    def _mask(self, data: BraggData, j: int) -> tuple[Array, Array]:
        """(ω (N1, N2, NM) bool, valid planes (NM,) bool) of position j, on the device."""
        fv = data.frame_valid
        if fv is None:
            return data.mask, self.all_planes
        if fv.ndim == 2:
            return data.mask, fv[j]
        return data.mask_at(j), self.all_planes

    def _normalise(self, state: BraggState) -> None:
        """ρ ← ρ/m, P2 ← P2·m with m = mean |ρ| on S, computed and applied on the device (no host sync)."""
        xp = self.xp
        n = xp.count_nonzero(state.support)
        m = xp.sum(xp.abs(state.object) * state.support, dtype=np.float64)
        ok = (m > 0) & (n > 0)
        m = xp.where(ok, m / xp.maximum(n, 1), 1.0)
        state.object *= (1.0 / m).astype(np.float32)
        state.probe *= m.astype(np.float32)


class FusedGpuML:
    """Cost, Wirtinger gradients and line-search sums of the ML refinement (Thibault & Guizar-Sicairos 2012, seed
    Eq 4) on CuPy arrays, with the kernels and constants of a :class:`FusedGpuSweep`; same interface and numbers
    as :class:`analysis.bragg.solvers.fused_cpu.FusedCpuML` (the μ term stays in :mod:`analysis.bragg.solvers.ml`).

    Per position, as the ePIE sweep: P_j from P̃2, F in two launches (fold + DFT + ramp, FFT2), the data term over
    the crop (χ written in place, Ψ kept as unnormalised crops), F^H (iFFT2 + the inverse DFT inside the gradient
    kernel), ∇ρ* scattered, and ∇P2* accumulated in 2D frequency space. Sums stay on the device and are returned
    as 0-d device arrays (:mod:`analysis.bragg.solvers.ml` reads them once per iteration). Build with :meth:`for_model`.
    """

    kernels = "fused-gpu"
    """The name :mod:`analysis.bragg.solvers.ml` reports for this path."""

    def __init__(self, sweep: FusedGpuSweep) -> None:
        self.s = sweep
        self.xp = sweep.xp
        self._scratch = self.xp.zeros(2, np.float32)            # maxes nobody reads (line search, cost)
        # χ of one position: the data term writes its crop rows; the others stay 0 from here on (F^H's zero padding)
        self._chi = self.xp.zeros((sweep.n1p, sweep.n2, sweep.nm), np.complex64)
        self._none_f32 = self.xp.zeros(1, np.float32)           # stands for an absent w0 / r0

    @classmethod
    def for_model(cls, op: BraggModel, state: BraggState, execution: Execution | None = None) -> FusedGpuML | None:
        """The (cached) fused ML path of ``op`` on the GPU, or None where :meth:`FusedGpuSweep.for_model` is None."""
        sweep = FusedGpuSweep.for_model(op, state, execution)
        return None if sweep is None else cached_path(op, "gpu-ml", lambda: cls(sweep), lambda c: c.s is sweep)

    def kept_waves(self, n_positions: int, current: Any = None) -> Array:
        """A (POS, N1, N2, NM) complex64 device buffer for the Ψ crops: ``current`` if it is one, else a new one."""
        s = self.s
        shape = (n_positions, s.n1, s.n2, s.nm)
        if current is not None and array_module(current) is self.xp and tuple(current.shape) == shape \
                and current.dtype == np.complex64:
            return current
        return self.xp.empty(shape, np.complex64)

    def _prepare(self, state: BraggState) -> None:
        xp = self.xp
        state.object = xp.ascontiguousarray(state.object)
        state.support = xp.ascontiguousarray(state.support)
        if state.background.dtype != np.float32:
            state.background = state.background.astype(np.float32)
        state.background = xp.ascontiguousarray(state.background)

    def _data_term(self, field: Array, kept_j: Array | None, data: BraggData, j: int, background: Array, cost: Array,
                   poisson: bool, use_kept: bool, write_kept: bool, write_chi: bool) -> None:
        s = self.s
        mask, planes = s._mask(data, j)  # noqa: SLF001 - the sweep's own helper
        s._launch("pxm_data_term", field.size, (  # noqa: SLF001
            field, field if kept_j is None else kept_j, self._chi, data.intensities[j], mask, planes, background, cost,
            _I32(s.n1p), _I32(s.n2), _I32(s.nm), _I32(s.n1), _F64(s.scale2), _I32(poisson), _I32(use_kept),
            _I32(write_kept), _I32(write_chi)))

    def cost_and_gradient(self, state: BraggState, data: BraggData, poisson: bool, with_probe: bool,
                          kept: Array | None, reuse: bool = False, prior_w0: Array | None = None,
                          prior_r0: Array | None = None, prior_strength: float = 0.0) -> tuple[Array, Array, Array]:
        """(Σ_j Σ ω ℓ, Σ_j scatter(P_j* F^H χ_j), Σ_j Shift_{−g_j} B^H(ρ_j* F^H χ_j)) as
        :meth:`analysis.bragg.solvers.fused_cpu.FusedCpuML.cost_and_gradient` (same arguments); the cost is a 0-d
        device array (no host sync).
        """
        self._prepare(state)
        s, xp, fft = self.s, self.xp, fft_module(self.xp)
        obj = state.object
        no2, no3 = (_I32(v) for v in obj.shape[1:])
        g_obj = xp.zeros_like(obj)
        g_pr_hat = xp.zeros_like(state.probe)
        cost = xp.zeros(1, np.float64)
        p2f = fft.fft2(state.probe)
        w0 = self._none_f32 if prior_w0 is None else prior_w0
        r0 = self._none_f32 if prior_r0 is None else prior_r0
        for j in range(data.n_positions):
            if not data.has_data(j):
                continue
            s0, s1 = (_F64(v) for v in data.shifts_px[j])
            p3 = s.extrude(p2f, s0, s1)
            use_kept = bool(reuse and kept is not None)
            field = self._chi if use_kept else s.forward(p3, obj, data.offsets_vox[j], self._scratch)
            self._data_term(field, None if kept is None else kept[j], data, j, state.background, cost, poisson,
                            use_kept, kept is not None and not use_kept, True)
            g = fft.ifft2(self._chi, axes=(0, 1), norm="forward")       # F^H χ_j, folded spectrum (χ's zeros kept)
            o1, o2, o3 = (_I32(v) for v in data.offsets_vox[j])
            s._launch("pxm_ml_gradient", p3.size, (  # noqa: SLF001
                g_obj, obj, p3, g, s.twiddles, s.ramp, w0, r0, _I32(s.n1p), _I32(s.n2), _I32(s.n3), _I32(s.nm),
                no2, no3, o1, o2, o3, _I32(with_probe), _I32(prior_w0 is not None),
                _I32(prior_r0 is not None and with_probe), _F32(prior_strength)))
            if with_probe:
                s.project_into(g_pr_hat, p3, s0, s1, self._scratch, 1.0, False)
        g_pr = fft.ifft2(g_pr_hat, overwrite_x=True) if with_probe else g_pr_hat
        return cost[0], g_obj, g_pr

    def cost(self, state: BraggState, data: BraggData, poisson: bool, kept: Array | None = None) -> Array:
        """Σ_j Σ ω ℓ(h_j, I_j) (seed Eq 4 / Poisson) as a 0-d device array; Ψ_j crops into ``kept`` if given."""
        self._prepare(state)
        s, xp, fft = self.s, self.xp, fft_module(self.xp)
        cost = xp.zeros(1, np.float64)
        p2f = fft.fft2(state.probe)
        for j in range(data.n_positions):
            if data.has_data(j):
                s0, s1 = (_F64(v) for v in data.shifts_px[j])
                field = s.forward(s.extrude(p2f, s0, s1), state.object, data.offsets_vox[j], self._scratch)
                self._data_term(field, None if kept is None else kept[j], data, j, state.background, cost, poisson,
                                False, kept is not None, False)
        return cost[0]

    def line_sums(self, state: BraggState, data: BraggData, poisson: bool, d_obj: Array, d_probe: Array | None,
                  kept: Array | None, prior_w12: list[Array] | None = None) -> tuple[Array, Array]:
        """Data-term (L'(0), L''(0)) along (Δρ, ΔP) as :meth:`analysis.bragg.solvers.fused_cpu.FusedCpuML.line_sums`,
        as 0-d device arrays (no host sync).
        """
        self._prepare(state)
        s, xp, fft = self.s, self.xp, fft_module(self.xp)
        obj = state.object
        d_obj = xp.ascontiguousarray(d_obj)
        no2, no3 = (_I32(v) for v in obj.shape[1:])
        sums = xp.zeros(2, np.float64)
        # P̃2 and ΔP̃2 stacked: one extrusion (3 launches) gives P_j and ΔP_j
        p2f = fft.fft2(state.probe if d_probe is None else xp.stack([state.probe, xp.asarray(d_probe, np.complex64)]),
                       axes=(-2, -1))
        for j in range(data.n_positions):
            if not data.has_data(j):
                continue
            off = data.offsets_vox[j]
            s0, s1 = (_F64(v) for v in data.shifts_px[j])
            both = s.extrude(p2f, s0, s1)
            p3 = both if d_probe is None else both[0]
            psi0 = kept[j] if kept is not None else s.forward(p3, obj, off, self._scratch)
            psi2 = None
            if d_probe is not None:
                dp3 = both[1]
                if prior_w12 is not None:
                    o1, o2, o3 = (_I32(v) for v in off)
                    s._launch("pxm_illumination", p3.size, (  # noqa: SLF001
                        prior_w12[0], prior_w12[1], p3, dp3, _I32(s.n1p), _I32(s.n2), _I32(s.n3), no2, no3, o1, o2,
                        o3))
                psi1, psi2 = s.forward_pair(p3, obj, dp3, d_obj, off)
            else:
                psi1 = s.forward(p3, d_obj, off, self._scratch)
            mask, planes = s._mask(data, j)  # noqa: SLF001
            s._launch("pxm_line_sums", psi1.size, (  # noqa: SLF001
                psi0, psi1, psi1 if psi2 is None else psi2, data.intensities[j], mask, planes, state.background, sums,
                _I32(s.n1p), _I32(s.n2), _I32(s.nm), _I32(s.n1), _F64(s.scale2), _I32(poisson),
                _I32(kept is not None), _I32(psi2 is not None)))
        return sums[0], sums[1]
