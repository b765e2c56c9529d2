"""Sequential ePIE (spec 2.2, variant A) with fused CPU kernels and FFTW plans on fixed buffers.

Same update as :func:`analysis.solvers.epie._sequential` (seed Eqs 5–11, 13), reorganised
for a CPU: the folded transform of spec 2.1 runs as unnormalised FFTW passes on three
preallocated buffers (box, folded box, crop), and every elementwise chain between them is one
parallel Numba kernel (:mod:`analysis.cpu_kernels`):

    P̂2 ─B─▶ P_j ─(fold ψ = Σ_u P_j V)─▶ FFT_r3 ─ramp─▶ FFT_r1 ─▶ FFT_r2 (crop rows) ─▶ Eqs 13, 11
    ◀── ρ, ρ*Δψ (Eqs 5, 7, 9) ◀── iFFT_r3 ◀─ramp*─ iFFT_r1 ◀── iFFT_r2 (pad rows) ◀──┘

Scalars cancel or are folded into one factor: |Ψ|² = |A|²/(N3 N1' N2') for the unnormalised
crop A, so the centring phases of the array path never appear; the shift of P2 and the NA
mask stay in the small (N2, N3) plane. Used by :func:`analysis.solvers.epie.step` when the
inputs are NumPy complex64, Numba and pyFFTW import, and the geometry is the seed's kind
(shear ramp along r1 only, probe extruded along r3 only, crop along r1 only);
otherwise the array path runs. ``tests/analysis/test_fused_cpu.py`` checks both agree.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from analysis.solvers.model import BraggData, BraggModel, BraggState
from analysis.solvers.options import EpieOptions
from analysis.xp import aligned_empty, cpu_kernels, fft_module, fft_workers, fftw_plan

_TINY = 1e-30


def _fft_order_to_centred(n: int) -> np.ndarray:
    """Centred array index of each FFT-order index of an n-point grid: (i + n//2) mod n."""
    return (np.arange(n) + n // 2) % n


class FusedCpuSweep:
    """Buffers, FFTW plans and index maps of the fused sequential sweep for one :class:`BraggModel`.

    Build with :meth:`for_model`, which returns None where the fused path does not apply.
    """

    def __init__(self, op: BraggModel, kernels: ModuleType, effort: str = "FFTW_MEASURE") -> None:
        why = self.unsupported_reason(op)
        if why:
            raise ValueError(f"FusedCpuSweep: {why}")
        self.op = op
        self.k = kernels
        f = op.fourier
        n1p, n2p, n3 = op.box_shape
        n1, n2 = f.crop_shape
        nm, u = f.n_measured, f.upsampling
        self.n1p, self.n3 = n1p, n3
        c64 = np.complex64
        self._box = aligned_empty((n1p, n2p, n3), c64)      # P_j, then ρ*Δψ (probe gradient)
        self._fold = aligned_empty((n2p, n1p, nm), c64)     # folded ψ_j, then Δψ_j; (r2, r1, k) order
        self._crop = aligned_empty((n1, n2, nm), c64)       # A on the detector crop, FFT order
        self._pos, self._neg = n1 - n1 // 2, n1 // 2          # crop rows m1 ≥ 0 and m1 < 0
        self._box_inv = fftw_plan(self._box, self._box, (2,), inverse=True, effort=effort)
        self._box_fwd = fftw_plan(self._box, self._box, (2,), inverse=False, effort=effort)
        self._r3_fwd = fftw_plan(self._fold, self._fold, (2,), inverse=False, effort=effort)
        self._r3_inv = fftw_plan(self._fold, self._fold, (2,), inverse=True, effort=effort)
        self._r1_fwd = fftw_plan(self._fold, self._fold, (1,), inverse=False, effort=effort)
        self._r1_inv = fftw_plan(self._fold, self._fold, (1,), inverse=True, effort=effort)
        # r2 transform and r1 crop in one out-of-place pass: rows m1 ≥ 0 then m1 < 0, written
        # straight into the (N1, N2, NM) crop through transposed views
        blocks = [(self._fold[:, :self._pos], self._crop[:self._pos].transpose(1, 0, 2))]
        if self._neg:
            blocks.append((self._fold[:, n1p - self._neg:], self._crop[self._pos:].transpose(1, 0, 2)))
        self._r2_fwd = [fftw_plan(a, c, (0,), inverse=False, effort=effort) for a, c in blocks]
        self._r2_inv = [fftw_plan(c, a, (0,), inverse=True, effort=effort) for a, c in blocks]
        # shear ramp e^{-i m3 Δq3 u1 n1 Δr1} on (n1, FFT bin of k), m3 = U k (spec 1.2 step 2)
        kk = np.fft.fftfreq(nm) * nm
        n1c = np.arange(n1p) - n1p // 2
        self._ramp = np.exp(-1j * f.shear_rad[0] * n1c[:, None] * (u * kk)[None, :]).astype(c64)
        self._slices = np.ascontiguousarray(op.extrusion._slices.reshape(n1p, n3)).astype(c64)  # noqa: SLF001
        self._rows = _fft_order_to_centred(n1)
        self._scale2 = 1.0 / (n3 * n1p * n2p)
        self._pmax_rows = np.empty(n1p)
        self._vmax_rows = np.empty(n1p)
        self._proj = np.empty((n2p, n3), np.complex128)
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
    def for_model(cls, op: BraggModel, state: BraggState, options: EpieOptions) -> "FusedCpuSweep | None":
        """The (cached) fused sweep of ``op``, or None where it does not apply (array path runs)."""
        if not options.cpu_fused or not isinstance(state.object, np.ndarray):
            return None
        if state.object.dtype != np.complex64 or state.probe.dtype != np.complex64:
            return None
        kernels = cpu_kernels()
        if kernels is None or cls.unsupported_reason(op):
            return None
        cached = getattr(op, "fused_cpu", None)
        if cached is None:
            cached = cls(op, kernels, effort=options.fftw_effort)
            op.fused_cpu = cached
        return cached

    def sweep(self, state: BraggState, data: BraggData, options: EpieOptions, order: np.ndarray,
              update_probe: bool) -> float:
        """One sequential sweep over ``order``; returns Σ_j Σ ω (√h − √I)² (before each update)."""
        if not (isinstance(state.background, np.ndarray) and state.background.dtype == np.float32
                and state.background.flags.c_contiguous):
            state.background = np.ascontiguousarray(state.background, dtype=np.float32)
        if not (state.object.flags.c_contiguous and state.support.flags.c_contiguous):
            state.object = np.ascontiguousarray(state.object)
            state.support = np.ascontiguousarray(state.support)
        total = 0.0
        for j in order:
            if data.has_data(int(j)):
                total += self._position(state, data, int(j), options, update_probe)
        return total

    def _mask(self, data: BraggData, j: int) -> tuple[Any, Any]:
        fv = data.frame_valid
        if fv is None:
            return data.mask, self._all_planes
        if fv.ndim == 2:
            return data.mask, np.ascontiguousarray(fv[j])
        return data.mask_at(j), self._all_planes

    def _position(self, state: BraggState, data: BraggData, j: int, options: EpieOptions,
                  update_probe: bool) -> float:
        k, op = self.k, self.op
        fft = fft_module(np)
        view = state.object[op.view(data.offsets_vox[j])]
        # P_j = B Shift_g P2 (spec 1.5–1.6); the 1/N3 of the inverse FFT goes into P̂2
        p2_hat = fft.fft(op.shift2d(state.probe, data.shifts_px[j]), axis=-1, workers=fft_workers())
        p2_hat *= 1.0 / self.n3
        k.extrusion_spectrum(p2_hat, self._slices, self._box)
        self._box_inv.execute()
        # forward model Ψ_j = F_meas(P_j V), unnormalised (spec 2.1)
        k.folded_exit_wave(self._box, view, self._fold, self._pmax_rows, self._vmax_rows)
        self._r3_fwd.execute()
        k.apply_ramp(self._fold, self._ramp, False)
        self._r1_fwd.execute()
        for p in self._r2_fwd:
            p.execute()
        mask, planes_ok = self._mask(data, j)
        misfit = k.modulus_and_background(self._crop, data.intensities[j], mask, planes_ok, state.background,
                                          self._rows, self._scale2, float(options.gamma))
        # Δψ_j = F_meas^H(Ψ' − Ψ), folded (the U replicas are read with c mod NM)
        for p in self._r2_inv:
            p.execute()
        self._fold[:, self._pos:self.n1p - self._neg] = 0
        self._r1_inv.execute()
        k.apply_ramp(self._fold, self._ramp, True)
        self._r3_inv.execute()
        pmax = float(self._pmax_rows.max())
        vmax = float(self._vmax_rows.max())
        k.object_update(state.object, state.support, data.offsets_vox[j], self._box, self._fold, float(options.beta),
                        pmax, float(options.mu) * pmax, float(options.alpha), vmax, bool(update_probe))
        if update_probe:                                     # Eq 6: P2 += R(ρ*Δψ)/den, R = B^H/N1'
            self._box_fwd.execute()
            k.projection_spectrum(self._box, self._slices, self._proj)
            g = fft.ifft(self._proj, axis=-1, workers=fft_workers()).astype(np.complex64)
            g = op.shift2d(g, data.shifts_px[j], inverse=True)
            den = vmax if options.alpha == 1.0 else 1.0
            state.probe += g * np.float32(1.0 / (self.n1p * max(den, _TINY)))
        return float(misfit)
