"""The CUDA source of analysis/bragg/solvers/gpu_kernels.py computes what its NumPy references compute (issue 16).

No GPU in CI, so the very source CuPy compiles on a GPU is compiled here by the host C++ compiler with
``-DPXM_HOST`` (one thread walks each grid-stride loop; atomics and warp reductions become plain updates)
and run through ctypes on random inputs against each kernel's reference, to float32 rounding. ``nvcc``, where
installed, compiles the same source for the H100 (sm_90) so that CUDA-only syntax is checked too. The
references are what the CuPy stand-in executes (tests/analysis/test_fused_gpu.py: the whole sweep).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.bragg.solvers.gpu_kernels import CUDA_SOURCE, KERNELS, launch_grid
from testing.gpu_kernel_cases import kernel_cases, max_rel_diff

I32, F32, F64 = np.int32, np.float32, np.float64


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory) -> ctypes.CDLL:
    """The CUDA source compiled as C++ with the host shim (``-DPXM_HOST``), as a shared library."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to run the CUDA source on CPU")
    d = tmp_path_factory.mktemp("gpu_kernels")
    src, lib = d / "kernels.cpp", d / "kernels.so"
    src.write_text(CUDA_SOURCE)
    out = subprocess.run([cxx, "-DPXM_HOST", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-x", "c++", str(src),
                          "-o", str(lib)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return ctypes.CDLL(str(lib))


def _call_host(lib: ctypes.CDLL, name: str, args: tuple[Any, ...]) -> None:
    cargs: list[Any] = []
    for a in args:
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous
            cargs.append(ctypes.c_void_p(a.ctypes.data))
        elif isinstance(a, np.int32):
            cargs.append(ctypes.c_int(int(a)))
        elif isinstance(a, np.float32):
            cargs.append(ctypes.c_float(float(a)))
        elif isinstance(a, np.float64):
            cargs.append(ctypes.c_double(float(a)))
        else:
            raise TypeError(f"{name}: argument of type {type(a).__name__}")
    getattr(lib, name)(*cargs)


def _cases(rng: np.random.Generator) -> list[tuple[str, tuple[Any, ...]]]:
    return kernel_cases(rng)


def test_every_kernel_is_covered():
    assert {name for name, _ in _cases(np.random.default_rng(0))} == set(KERNELS)


@pytest.mark.parametrize("index", range(len(_cases(np.random.default_rng(0)))))
def test_cuda_source_equals_the_numpy_reference(host_lib, index):
    name, args = _cases(np.random.default_rng(7))[index]
    ref = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    dev = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    KERNELS[name].reference(*ref)
    _call_host(host_lib, name, dev)
    assert max_rel_diff(name, ref, dev) <= 2e-6, name
    assert any(isinstance(r, np.ndarray) and not np.array_equal(r, a) for r, a in zip(ref, args, strict=True)), name


def test_references_on_known_values():
    """Two references against closed forms: the shifted spectrum of one frequency and the fold's sum."""
    out = np.zeros((4, 4), np.complex64)
    delta = np.zeros((4, 4), np.complex64)
    delta[1, 0] = 1.0                                                   # one r2 frequency, f2 = 1/4
    KERNELS["pxm_shifted_spectrum"].reference(delta, out, I32(1), I32(4), I32(4), F64(1.0), F64(0.0), F32(1.0))
    # shifted by one pixel: e^{-2πi/4}, then the inverse DFT along r2: e^{+2πi b/4}
    assert np.allclose(out[:, 0], np.exp(-2j * np.pi * 0.25) * np.exp(2j * np.pi * np.arange(4) / 4))
    assert np.allclose(out[:, 1:], 0.0)
    p = np.ones((1, 1, 6), np.complex64)
    obj = np.arange(6, dtype=np.complex64).reshape(1, 1, 6)
    fold, mx = np.zeros((1, 1, 2), np.complex64), np.zeros(2, np.float32)
    tw2 = np.array([[1, 1], [1, -1]], np.complex64)                     # the 2-point DFT
    KERNELS["pxm_fold_spectrum"].reference(p, obj, tw2, np.ones((1, 2), np.complex64), fold, mx, I32(1), I32(1),
                                           I32(6), I32(2), I32(1), I32(6), I32(0), I32(0), I32(0))
    assert np.allclose(fold.ravel(), [6 + 9, 6 - 9]) and np.allclose(mx, [1.0, 25.0])


def test_launch_grid_covers_with_whole_warps():
    assert launch_grid(1) == ((1,), (256,)) and launch_grid(257) == ((2,), (256,))
    assert launch_grid(10 ** 9)[0] == (2048,)                              # grid-stride loops cover the rest


def test_nvcc_compiles_the_source_for_the_h100(tmp_path: Path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) not installed")
    src = tmp_path / "kernels.cu"
    src.write_text(CUDA_SOURCE)
    out = subprocess.run([nvcc, "-arch=sm_90", "-ptx", str(src), "-o", str(tmp_path / "kernels.ptx")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    assert all(f".entry {name}(" in ptx for name in KERNELS)


@pytest.mark.parametrize("index", range(len(_cases(np.random.default_rng(0)))))
def test_traffic_model_covers_what_the_kernel_writes(index):
    """Each kernel's byte model (what testing/gpu_traffic.py counts) writes at least the elements its reference
    changes and reads no more than its array arguments hold."""
    name, args = _cases(np.random.default_rng(3))[index]
    out = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    KERNELS[name].reference(*out)
    changed = sum(int(np.count_nonzero(o != a)) * a.itemsize
                  for o, a in zip(out, args, strict=True) if isinstance(a, np.ndarray))
    read, written = KERNELS[name].traffic(out)
    assert changed > 0 and written >= changed, (name, written, changed)
    assert 0 < read <= sum(a.nbytes for a in args if isinstance(a, np.ndarray)) + 16, (name, read)
