"""Inputs for every kernel of :mod:`analysis.bragg.solvers.gpu_kernels`, to run a kernel and its NumPy reference side by
side.

Used by ``tests/analysis/test_gpu_kernels.py`` (the CUDA source compiled for the host) and by
``benchmarks/gpu_validate.py`` (the same source on a lent GPU). Sizes are odd and even along the axes the
kernels map between FFT order and centred order, and every flag takes both values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

I32, F32, F64 = np.int32, np.float32, np.float64


@dataclass(frozen=True)
class CaseSizes:
    """Box (n1p, n2, n3), measured planes nm (n3 = U·nm), crop rows n1 and object shape of the cases."""

    n1p: int = 6
    n2: int = 5
    n3: int = 9
    nm: int = 3
    n1: int = 3
    obj: tuple[int, int, int] = (8, 7, 11)
    offset: tuple[int, int, int] = (1, 2, 1)


def _c64(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def twiddles(nm: int) -> np.ndarray:
    """The nm-point DFT matrix e^{-2πi qk/nm}, complex64."""
    q = np.arange(nm)
    return np.exp(-2j * np.pi * np.outer(q, q) / nm).astype(np.complex64)


def kernel_cases(rng: np.random.Generator, z: CaseSizes | None = None) -> list[tuple[str, tuple[Any, ...]]]:
    """(kernel name, arguments) pairs covering every kernel; arrays are NumPy, scalars NumPy scalars."""
    z = CaseSizes() if z is None else z
    dims = (I32(z.n1p), I32(z.n2), I32(z.n3))
    off = tuple(I32(v) for v in z.offset)
    ostr = (I32(z.obj[1]), I32(z.obj[2]))
    tw = twiddles(z.nm)
    sup = rng.random(z.obj) < 0.6
    cases: list[tuple[str, tuple[Any, ...]]] = [
        ("pxm_shifted_spectrum", (_c64(rng, z.n2, z.n3), np.zeros((z.n2, z.n3), np.complex64), I32(1), I32(z.n2),
                                  I32(z.n3), F64(0.3), F64(-0.7), F32(0.25))),
        ("pxm_shifted_spectrum", (_c64(rng, 2, z.n2, z.n3), np.zeros((2, z.n2, z.n3), np.complex64), I32(2),
                                  I32(z.n2), I32(z.n3), F64(-0.6), F64(0.2), F32(0.5))),
        ("pxm_extrude", (_c64(rng, z.n2, z.n3), _c64(rng, z.n1p, z.n3), np.zeros((z.n1p, z.n2, z.n3), np.complex64),
                         I32(1), *dims)),
        ("pxm_extrude", (_c64(rng, 2, z.n2, z.n3), _c64(rng, z.n1p, z.n3),
                         np.zeros((2, z.n1p, z.n2, z.n3), np.complex64), I32(2), *dims)),

        ("pxm_project", (_c64(rng, z.n1p, z.n2, z.n3), _c64(rng, z.n1p, z.n3), np.zeros((z.n2, z.n3), np.complex64),
                         *dims)),
    ]
    cases.append(("pxm_fold_spectrum", (_c64(rng, z.n1p, z.n2, z.n3), _c64(rng, *z.obj), tw, _c64(rng, z.n1p, z.nm),
                                        np.zeros((z.n1p, z.n2, z.nm), np.complex64), np.zeros(2, np.float32), *dims,
                                        I32(z.nm), *ostr, *off)))
    cases.append(("pxm_fold_spectrum_pair", (_c64(rng, z.n1p, z.n2, z.n3), _c64(rng, *z.obj),
                                             _c64(rng, z.n1p, z.n2, z.n3), _c64(rng, *z.obj), tw,
                                             _c64(rng, z.n1p, z.nm), np.zeros((z.n1p, z.n2, z.nm), np.complex64),
                                             np.zeros((z.n1p, z.n2, z.nm), np.complex64), *dims, I32(z.nm), *ostr,
                                             *off)))
    crop = (z.n1, z.n2, z.nm)
    for poisson, use_kept, write_kept, write_chi in ((0, 0, 1, 1), (1, 0, 0, 1), (0, 1, 0, 1), (1, 0, 1, 0)):
        cases.append(("pxm_data_term", (_c64(rng, z.n1p, z.n2, z.nm), _c64(rng, *crop), _c64(rng, z.n1p, z.n2, z.nm),
                                        (rng.random(crop) * 4 + 0.1).astype(np.float32), rng.random(crop) < 0.8,
                                        np.arange(z.nm) % 3 != 1, rng.random(crop).astype(np.float32),
                                        np.array([0.25]), I32(z.n1p), I32(z.n2), I32(z.nm), I32(z.n1), F64(0.7),
                                        I32(poisson), I32(use_kept), I32(write_kept), I32(write_chi))))
    for grad, w0, r0 in ((1, 1, 1), (1, 0, 0), (0, 1, 0)):
        cases.append(("pxm_ml_gradient", (_c64(rng, *z.obj), _c64(rng, *z.obj), _c64(rng, z.n1p, z.n2, z.n3),
                                          _c64(rng, z.n1p, z.n2, z.nm), tw, _c64(rng, z.n1p, z.nm),
                                          rng.random(z.obj).astype(np.float32), rng.random(z.obj).astype(np.float32),
                                          *dims, I32(z.nm), *ostr, *off, I32(grad), I32(w0), I32(r0), F32(0.3))))
    for poisson, psi0_crop, has_psi2 in ((0, 1, 1), (1, 0, 0), (1, 1, 1), (0, 0, 0)):
        psi0 = _c64(rng, *crop) if psi0_crop else _c64(rng, z.n1p, z.n2, z.nm)
        cases.append(("pxm_line_sums", (psi0, _c64(rng, z.n1p, z.n2, z.nm), _c64(rng, z.n1p, z.n2, z.nm),
                                        (rng.random(crop) * 4 + 0.1).astype(np.float32), rng.random(crop) < 0.8,
                                        np.arange(z.nm) % 3 != 1, rng.random(crop).astype(np.float32),
                                        np.array([0.5, -0.25]), I32(z.n1p), I32(z.n2), I32(z.nm), I32(z.n1),
                                        F64(0.7), I32(poisson), I32(psi0_crop), I32(has_psi2))))
    cases.append(("pxm_illumination", (rng.random(z.obj).astype(np.float32), rng.random(z.obj).astype(np.float32),
                                       _c64(rng, z.n1p, z.n2, z.n3), _c64(rng, z.n1p, z.n2, z.n3), *dims, *ostr,
                                       *off)))
    for by_vmax in (0, 1):
        cases.append(("pxm_probe_update", (_c64(rng, z.n2, z.n3), _c64(rng, z.n2, z.n3),
                                           np.array([3.0, 2.5], np.float32), I32(z.n2), I32(z.n3), F64(-0.4),
                                           F64(1.3), F32(1 / 6), I32(by_vmax))))
    for gamma in (0.0, 0.3):
        crop = (z.n1, z.n2, z.nm)
        inten = (rng.random(crop) * 4 - 0.2).astype(np.float32)
        cases.append(("pxm_modulus", (_c64(rng, z.n1p, z.n2, z.nm), inten, rng.random(crop) < 0.8,
                                      np.arange(z.nm) % 3 != 1, rng.random(crop).astype(np.float32),
                                      np.array([0.5]), I32(z.n1p), I32(z.n2), I32(z.nm), I32(z.n1), F32(0.7),
                                      F32(gamma))))
    for alpha, grad in ((1.0, 1), (0.6, 1), (1.0, 0)):
        cases.append(("pxm_object_update", (_c64(rng, *z.obj), sup, _c64(rng, z.n1p, z.n2, z.n3),
                                            _c64(rng, z.n1p, z.n2, z.nm), tw, _c64(rng, z.n1p, z.nm),
                                            np.array([4.0, 3.0], np.float32), *dims, I32(z.nm), *ostr, *off,
                                            F32(0.4), F32(0.05), F32(alpha), I32(grad))))
    return cases


def max_rel_diff(name: str, ref: tuple[Any, ...], got: tuple[Any, ...]) -> float:
    """Largest |got − ref| / max|ref| over the non-boolean array arguments of one launch."""
    worst = 0.0
    for r, g in zip(ref, got, strict=True):
        if isinstance(r, np.ndarray) and r.dtype != bool:
            scale = max(float(np.max(np.abs(r))), 1e-30)
            worst = max(worst, float(np.max(np.abs(np.asarray(g).astype(np.complex128) - r))) / scale)
    return worst
