"""Exact sheared 3D Fourier transforms of the Bragg reconstruction frame (docs/geometry.md, Operators).

Conventions (shared by every operator in :mod:`analysis.bragg.operators`):

* Real space: box index ``n_a`` in ``[0, N_a)``, physical position
  ``(n_a - N_a//2) Δr_a`` along the orthonormal axes e_a (box centre = origin).
* Reciprocal space: centred indices ``m_a`` in ``[-N_a//2, N_a - N_a//2)``,
  stored at array index ``m_a + N_a//2`` (the detector crop as recorded).
* q(m) = m1 Δq1 e1 + m2 Δq2 e2 + m3 Δq3 û and Ψ(m) = N^-1/2 Σ_n ψ(n) e^{-i q(m)·r(n)}
  (unitary; sign e^{-iq·r}, docs/geometry.md, Operators).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from analysis.geometry import BraggGeometry
from analysis.xp import Array, array_module, fft_module, fft_workers


def _fft_kw(xp: ModuleType) -> dict[str, Any]:
    return {"workers": fft_workers()} if xp is np else {}


def _centred(n: int) -> np.ndarray:
    """Centred integer indices [-n//2, n - n//2)."""
    return np.arange(n) - n // 2


def shear_per_index_rad(geometry: BraggGeometry, n1_padded: int | None = None) -> tuple[float, float]:
    """(Δq3 u1 Δr1, Δq3 u2 Δr2): shear-ramp phase per unit m3·n1 and m3·n2 (docs/geometry.md, Operators, shear ramp)."""
    n1p = geometry.recon_shape[0] if n1_padded is None else n1_padded
    dr1, dr2, _ = geometry._voxel(n1p)  # noqa: SLF001 - same module family, exact voxel of N1'
    u1, u2, _ = geometry.rocking_direction
    dq3 = geometry.dq_rocking_per_m
    return (dq3 * u1 * dr1, dq3 * u2 * dr2)


def _crop_blocks(n_out: int, n_in: int) -> list[tuple[slice, slice]]:
    """(output, input) slice pairs taking centred indices [−n_out//2, n_out − n_out//2) from FFT order."""
    neg, pos = n_out // 2, n_out - n_out // 2
    pairs = [(slice(neg, n_out), slice(0, pos))]
    if neg:
        pairs.append((slice(0, neg), slice(n_in - neg, n_in)))
    return pairs


class _ShearBase:
    """Shared index bookkeeping of the full and folded transforms."""

    def __init__(self, box_shape: tuple[int, int, int], crop_shape: tuple[int, int],
                 shear_rad: tuple[float, float], m3: np.ndarray) -> None:
        n1p, n2p, n3 = (int(v) for v in box_shape)
        n1, n2 = (int(v) for v in crop_shape)
        if min(n1p, n2p, n3, n1, n2) < 1:
            raise ValueError(f"box_shape {box_shape} and crop_shape {crop_shape} must be positive")
        if n1 > n1p or n2 > n2p:
            raise ValueError(f"crop_shape {crop_shape} exceeds the box {box_shape[:2]}; expected N1 <= N1', N2 <= N2'")
        self.box_shape = (n1p, n2p, n3)
        self.crop_shape = (n1, n2)
        self.shear_rad = (float(shear_rad[0]), float(shear_rad[1]))
        self._m3 = np.asarray(m3, dtype=float)
        m1, m2 = _centred(n1), _centred(n2)
        self._idx1 = np.mod(m1, n1p)
        self._idx2 = np.mod(m2, n2p)
        # centring phases e^{+2πi m c/N} turn an FFT over n in [0,N) into one over n - N//2
        self._c1 = np.exp(2j * np.pi * m1 * (n1p // 2) / n1p)
        self._c2 = np.exp(2j * np.pi * m2 * (n2p // 2) / n2p)
        n1c, n2c = _centred(n1p), _centred(n2p)
        # shear ramp exp(-i m3 Δq3 (u1 n1 Δr1 + u2 n2 Δr2)), separable in n1 and n2
        self._ramp1 = np.exp(-1j * self.shear_rad[0] * n1c[:, None, None] * self._m3[None, None, :])
        self._ramp2 = np.exp(-1j * self.shear_rad[1] * n2c[None, :, None] * self._m3[None, None, :])
        self._cache: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def _consts(self, xp: ModuleType, dtype: Any) -> tuple[Array, ...]:
        key = (xp.__name__, np.dtype(dtype).str)
        if key not in self._cache:
            c = [xp.asarray(a, dtype=dtype) for a in (self._ramp1, self._ramp2, self._c1, self._c2)]
            c += [xp.asarray(self._idx1), xp.asarray(self._idx2)]
            c += [xp.asarray(a, dtype=dtype) for a in self._extra_consts()]
            self._cache[key] = tuple(c)
        return self._cache[key]

    def _extra_consts(self) -> list[np.ndarray]:
        return []

    def _check(self, x: Array, shape: tuple[int, ...], name: str) -> None:
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"{type(self).__name__}.{name}: input shape {tuple(x.shape)}, expected {tuple(shape)}")
        if not np.issubdtype(x.dtype, np.complexfloating):
            raise ValueError(f"{type(self).__name__}.{name}: dtype {x.dtype}, expected complex64 or complex128")

    def _ramp_fft2_crop(self, a: Array, consts: tuple[Array, ...]) -> Array:
        """Steps 2–3: shear ramp, unitary 2D FFT over (n1, n2), centred crop."""
        xp = array_module(a)
        ramp1, ramp2, c1, c2, idx1, idx2 = consts[:6]
        a = a * ramp1
        if self.shear_rad[1] != 0.0:
            a = a * ramp2
        fft = fft_module(xp)
        a = fft.fft2(a, axes=(0, 1), norm="ortho", overwrite_x=True, **_fft_kw(xp))
        a = a[idx1][:, idx2]
        a *= c1[:, None, None]
        a *= c2[None, :, None]
        return a

    def _pad_ifft2_deramp(self, y: Array, consts: tuple[Array, ...]) -> Array:
        """Adjoint of :meth:`_ramp_fft2_crop`."""
        xp = array_module(y)
        ramp1, ramp2, c1, c2, idx1, idx2 = consts[:6]
        n1p, n2p, _ = self.box_shape
        y = y * xp.conj(c1)[:, None, None]
        y *= xp.conj(c2)[None, :, None]
        a = xp.zeros((n1p, n2p, y.shape[2]), dtype=y.dtype)
        a[idx1[:, None], idx2[None, :]] = y
        fft = fft_module(xp)
        a = fft.ifft2(a, axes=(0, 1), norm="ortho", overwrite_x=True, **_fft_kw(xp))
        a *= xp.conj(ramp1)
        if self.shear_rad[1] != 0.0:
            a *= xp.conj(ramp2)
        return a


class ShearedFourier3D(_ShearBase):
    """Exact unitary sheared 3D transform F of the whole box (docs/geometry.md, Operators), all N3 planes.

    ``forward``: ``(N1P, N2P, N3) complex`` exit wave → ``(N1, N2, N3) complex`` field on
    the sheared q-grid, centred indices. ``adjoint``: the reverse (F^H).

    Parameters
    ----------
    box_shape : (N1P, N2P, N3) real-space box.
    crop_shape : (N1, N2) detector crop.
    shear_rad : (Δq3 u1 Δr1, Δq3 u2 Δr2), see :func:`shear_per_index_rad`.
    """

    def __init__(self, box_shape: tuple[int, int, int], crop_shape: tuple[int, int],
                 shear_rad: tuple[float, float]) -> None:
        n3 = int(box_shape[2])
        super().__init__(box_shape, crop_shape, shear_rad, _centred(n3))
        self.out_shape = (self.crop_shape[0], self.crop_shape[1], n3)
        self._c3 = np.exp(2j * np.pi * _centred(n3) * (n3 // 2) / n3)
        self._idx3 = np.mod(_centred(n3), n3)

    @classmethod
    def from_geometry(cls, geometry: BraggGeometry) -> ShearedFourier3D:
        """Operator on ``geometry.recon_shape`` with the crop (n_rows_px, n_cols_px)."""
        return cls(geometry.recon_shape, (geometry.n_rows_px, geometry.n_cols_px), shear_per_index_rad(geometry))

    def _extra_consts(self) -> list[np.ndarray]:
        return [self._c3]

    def forward(self, x: Array) -> Array:
        """Ψ = F ψ: ``(N1P, N2P, N3)`` → ``(N1, N2, N3)`` complex."""
        self._check(x, self.box_shape, "forward")
        xp = array_module(x)
        consts = self._consts(xp, x.dtype)
        fft = fft_module(xp)
        a = fft.fft(x, axis=2, norm="ortho", **_fft_kw(xp))           # step 1 along n3
        a = a[:, :, xp.asarray(self._idx3)] * consts[6][None, None, :]  # centred m3, centred n3
        return self._ramp_fft2_crop(a, consts)

    def adjoint(self, y: Array) -> Array:
        """ψ = F^H Ψ: ``(N1, N2, N3)`` → ``(N1P, N2P, N3)`` complex."""
        self._check(y, self.out_shape, "adjoint")
        xp = array_module(y)
        consts = self._consts(xp, y.dtype)
        a = self._pad_ifft2_deramp(y, consts)
        a = a * xp.conj(consts[6])[None, None, :]
        b = xp.empty_like(a)
        b[:, :, xp.asarray(self._idx3)] = a
        fft = fft_module(xp)
        return fft.ifft(b, axis=2, norm="ortho", overwrite_x=True, **_fft_kw(xp))


class FoldedFourier3D(_ShearBase):
    """F restricted to the measured planes m3 = U k + m0, via the r3 fold (seed Eq 1; docs/geometry.md, Operators).

    ``forward``: ``(N1P, N2P, N3) complex`` → ``(N1, N2, NM) complex`` with NM = N3/U
    measured planes (centred k, i.e. ANGLE index k + NM//2). Equals the rows of
    :class:`ShearedFourier3D` at those planes (the N_m-point FFT is scaled by 1/√N3).
    ``adjoint``: replicates the folded result U times along r3.
    """

    def __init__(self, box_shape: tuple[int, int, int], crop_shape: tuple[int, int],
                 shear_rad: tuple[float, float], upsampling: int, m0: int = 0) -> None:
        n3 = int(box_shape[2])
        if upsampling < 1 or n3 % upsampling:
            raise ValueError(f"upsampling {upsampling} must be >= 1 and divide N3 = {n3}")
        nm = n3 // upsampling
        k = _centred(nm)
        m3 = upsampling * k + m0
        if not (0 <= m0 < upsampling) or m3.min() < -(n3 // 2) or m3.max() >= n3 - n3 // 2:
            raise ValueError(f"m0 = {m0}: measured planes U k + m0 must lie in [-N3//2, N3 - N3//2); use 0 <= m0 < U")
        super().__init__(box_shape, crop_shape, shear_rad, m3)
        self.upsampling = int(upsampling)
        self.m0 = int(m0)
        self.n_measured = nm
        self.out_shape = (self.crop_shape[0], self.crop_shape[1], nm)
        n = np.arange(n3)
        self._fold = np.exp(-2j * np.pi * m0 * n / n3)             # e^{-2πi m0 n/N3}
        self._idxk = np.mod(k, nm)
        # centring phase along n3 for the measured m3, and the 1/√N3 normalisation
        self._c3 = np.exp(2j * np.pi * m3 * (n3 // 2) / n3) / math.sqrt(n3)

    @classmethod
    def from_geometry(cls, geometry: BraggGeometry, m0: int = 0) -> FoldedFourier3D:
        """Operator on ``geometry.recon_shape`` with U = ``geometry.upsampling``."""
        return cls(geometry.recon_shape, (geometry.n_rows_px, geometry.n_cols_px),
                   shear_per_index_rad(geometry), geometry.upsampling, m0)

    def _extra_consts(self) -> list[np.ndarray]:
        return [self._fold, self._c3]

    def _fast_consts(self, xp: ModuleType, dtype: Any) -> tuple[Any, ...]:
        """Ramps in FFT order along m3 and one combined centring phase on the crop (cached)."""
        key = ("fast", xp.__name__, np.dtype(dtype).str)
        if key not in self._cache:
            inv = np.argsort(self._idxk)                     # FFT bin i ↔ centred plane inv[i]
            r1 = self._ramp1[:, :, inv]
            r2 = self._ramp2[:, :, inv] if self.shear_rad[1] != 0.0 else None
            phase = self._c1[:, None, None] * self._c2[None, :, None] * self._c3[None, None, :]
            n1p, n2p, _ = self.box_shape
            axes = [_crop_blocks(self.crop_shape[0], n1p), _crop_blocks(self.crop_shape[1], n2p),
                    _crop_blocks(self.n_measured, self.n_measured)]
            blocks = tuple((b0[0], b1[0], b2[0]) + (b0[1], b1[1], b2[1])
                           for b0 in axes[0] for b1 in axes[1] for b2 in axes[2])
            self._cache[key] = (xp.asarray(r1, dtype=dtype), None if r2 is None else xp.asarray(r2, dtype=dtype),
                                xp.asarray(phase, dtype=dtype), blocks, xp.asarray(self._fold, dtype=dtype))
        return self._cache[key]

    def forward(self, x: Array) -> Array:
        """Ψ_meas = F_meas ψ: ``(N1P, N2P, N3)`` → ``(N1, N2, NM)`` complex.

        Fold along n3, N_m-point FFT, shear ramp (in FFT order, in place), 2D FFT over
        (n1, n2) in place, then one gather of the crop and one combined centring phase.
        """
        self._check(x, self.box_shape, "forward")
        xp = array_module(x)
        r1, r2, phase, gather, fold = self._fast_consts(xp, x.dtype)
        n1p, n2p, n3 = self.box_shape
        u, nm = self.upsampling, self.n_measured
        if self.m0:
            x = x * fold[None, None, :]
        f = x.reshape(n1p, n2p, u, nm).sum(axis=2) if u > 1 else x   # r3 fold
        fft = fft_module(xp)
        kw = _fft_kw(xp)
        a = fft.fft(f, axis=2, overwrite_x=f is not x, **kw)          # N_m-point FFT (new array)
        a *= r1
        if r2 is not None:
            a *= r2
        a = fft.fft2(a, axes=(0, 1), norm="ortho", overwrite_x=True, **kw)
        out = xp.empty(self.out_shape, dtype=a.dtype)
        for b in gather:                                   # centred crop: ≤ 8 strided block copies
            out[b[:3]] = a[b[3:]]
        out *= phase
        return out

    def adjoint(self, y: Array) -> Array:
        """ψ = F_meas^H Ψ_meas: ``(N1, N2, NM)`` → ``(N1P, N2P, N3)`` complex (replicated ×U)."""
        self._check(y, self.out_shape, "adjoint")
        xp = array_module(y)
        r1, r2, phase, gather, fold = self._fast_consts(xp, y.dtype)
        n1p, n2p, n3 = self.box_shape
        u, nm = self.upsampling, self.n_measured
        a = xp.zeros((n1p, n2p, nm), dtype=y.dtype)
        yc = y * xp.conj(phase)
        for b in gather:
            a[b[3:]] = yc[b[:3]]
        fft = fft_module(xp)
        kw = _fft_kw(xp)
        a = fft.ifft2(a, axes=(0, 1), norm="ortho", overwrite_x=True, **kw)
        a *= xp.conj(r1)
        if r2 is not None:
            a *= xp.conj(r2)
        f = fft.ifft(a, axis=2, norm="forward", overwrite_x=True, **kw)   # unnormalised inverse
        out = xp.broadcast_to(f[:, :, None, :], (n1p, n2p, u, nm)).reshape(n1p, n2p, n3) if u > 1 else f
        if self.m0:
            out = out * xp.conj(fold)[None, None, :]
        return out


def measured_band_mask(geometry: BraggGeometry, object_shape: tuple[int, int, int]) -> np.ndarray:
    """Boolean (NO1, 1, NO3) mask in FFT order: the object frequencies that the crop measures.

    A measured point q = m1Δq1 e1 + m3Δq3 û has, in cycles per voxel of the r-grid,
    f1 = m1/N1' + c f3 with c = N3 Δq3 u1 Δr1 / 2π and f3 = m3/N3 (docs/geometry.md, Operators). The crop keeps
    |m1| ≤ N1/2, so the band is |f1 − c f3| ≤ N1/(2 N1'). This is exact for the exit wave P·ρ; for the object it
    holds only as far as the probe carries no frequencies across it (the probe is invariant along k̂_i alone),
    so the projection is an option of the engine (``band_limit_object``), not a property of the data.

    The columns' band |f2 − c2 f3| ≤ N2/(2 N2') (c2 from the e2 shear, :func:`shear_per_index_rad`) is not
    applied: in an out-of-plane geometry the probe carries e2 frequencies of the order of the out-of-band
    margin (N2' − N2)/2, so object content outside it is measured through the probe. Brute-force DFT at the
    measured q (asymmetric-out-of-plane, 12² px, box 18 × 16 × 6, 0.24 µm Gaussian beam): an object
    frequency outside the columns' band keeps 10–32 % of its exit-wave energy at the measured points
    (in band 99 %; as an exit wave without the probe, 0 %), tests/analysis/test_band_general_geometry.py.
    """
    n1p, _, n3 = geometry.recon_shape
    if len(object_shape) != 3 or min(object_shape) < 1:
        raise ValueError(f"measured_band_mask: object_shape {object_shape}, expected 3 positive sizes")
    c = shear_per_index_rad(geometry)[0] * n3 / (2 * math.pi)
    f1 = np.fft.fftfreq(object_shape[0])[:, None, None]
    f3 = np.fft.fftfreq(object_shape[2])[None, None, :]
    return np.abs(f1 - c * f3) <= geometry.n_rows_px / (2 * n1p)
