"""The one array-backend module: decides CuPy (GPU) or NumPy/SciPy (CPU).

Nothing else in pxm imports ``cupy``. Functions take their array module from
their inputs (:func:`array_module`), never from a global flag; the caller
chooses the backend once, with :func:`backend`, when it creates the arrays.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[Any]
"""A NumPy or CuPy array. CuPy ships no type stubs and its ``ndarray`` mirrors NumPy's, so both are typed
as NumPy's; use this alias (not ``Any``) for array parameters and results of backend-agnostic code."""

REAL = np.float32
"""Default real dtype of reconstruction arrays."""
COMPLEX = np.complex64
"""Default complex dtype of reconstruction arrays (object, probe, exit waves)."""


def cupy_available() -> bool:
    """Return True when CuPy imports and sees at least one CUDA device."""
    try:
        cp = importlib.import_module("cupy")
        return int(cp.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def backend(name: str = "auto") -> ModuleType:
    """Return the array module for ``name``: ``"numpy"``, ``"cupy"`` or ``"auto"``.

    ``"auto"`` picks CuPy when a GPU is usable, NumPy otherwise. The environment
    variable ``PXM_BACKEND`` overrides ``"auto"``.
    """
    if name == "auto":
        name = os.environ.get("PXM_BACKEND", "auto")
    if name == "auto":
        name = "cupy" if cupy_available() else "numpy"
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError(
                "backend 'cupy' requested but CuPy is not installed or sees no CUDA device; "
                "install pxm[gpu] on a GPU machine or use backend='numpy'"
            )
        return importlib.import_module("cupy")
    raise ValueError(f"backend: unknown name {name!r}, expected 'auto', 'numpy' or 'cupy'")


class DeviceCopies:
    """An operator's constant arrays, copied once per (name, backend, dtype): no host→device copy per call."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str, str], Array] = {}

    def get(self, name: str, host: np.ndarray, xp: ModuleType, dtype: Any) -> Array:
        """``host`` as ``dtype`` on ``xp``'s device, copied on the first request only."""
        key = (name, xp.__name__, np.dtype(dtype).str)
        if key not in self._arrays:
            self._arrays[key] = xp.asarray(host, dtype=dtype)
        return self._arrays[key]


def device_description(xp: ModuleType) -> str:
    """Where arrays of ``xp`` live, for provenance: ``"CPU (NumPy 2.x)"`` or the CUDA device's name."""
    if xp is np:
        return f"CPU (NumPy {np.__version__})"
    try:
        name = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is informative only
        name = "CUDA device"
    return f"{name} (CuPy {getattr(xp, '__version__', 'unknown')})"


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            return importlib.import_module("cupy")
    return np


def fft_module(xp: ModuleType) -> ModuleType:
    """Return the FFT module matching ``xp``: ``cupyx.scipy.fft`` or ``scipy.fft``."""
    if xp is np:
        return importlib.import_module("scipy.fft")
    return importlib.import_module("cupyx.scipy.fft")


def ndimage_module(xp: ModuleType) -> ModuleType:
    """Return ``cupyx.scipy.ndimage`` or ``scipy.ndimage`` to match ``xp``."""
    if xp is np:
        return importlib.import_module("scipy.ndimage")
    return importlib.import_module("cupyx.scipy.ndimage")


def fft_workers() -> int:
    """Number of CPU threads for ``scipy.fft`` (``PXM_FFT_WORKERS``, default all cores)."""
    return int(os.environ.get("PXM_FFT_WORKERS", os.cpu_count() or 1))


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copies from the GPU when needed)."""
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)


def asarray(a: Any, xp: ModuleType, dtype: Any = None) -> Array:
    """Move ``a`` to the backend ``xp`` (no copy when it is already there)."""
    return xp.asarray(a, dtype=dtype)


def cpu_kernels() -> ModuleType | None:
    """The fused CPU kernels (:mod:`analysis.bragg.solvers.cpu_kernels`, Numba) and FFTW, or None if either is missing.

    Availability only: whether a reconstruction uses them is ``Execution.cpu_kernels``
    (:class:`analysis.bragg.solvers.options.Execution`, whose default ``PXM_CPU_KERNELS=0`` turns off).
    """
    # Numba's OpenMP workers spin after each kernel by default and starve the FFTW threads that
    # follow on the same cores (measured: +9 ms per kernel → FFT hand-over on 2 cores); passive
    # waiting unless the user chose otherwise. Read by libgomp when Numba first starts it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        importlib.import_module("pyfftw")
        return importlib.import_module("analysis.bragg.solvers.cpu_kernels")
    except ImportError:
        return None


def fftw_plan(input_array: np.ndarray, output_array: np.ndarray, axes: tuple[int, ...], *, inverse: bool,
              threads: int | None = None, effort: str = "FFTW_MEASURE") -> Any:
    """An FFTW plan (pyFFTW) on fixed buffers; call ``.execute()`` for an *unnormalised* transform.

    Planning with ``FFTW_MEASURE`` overwrites the buffers: make plans before filling them.
    """
    pyfftw = importlib.import_module("pyfftw")
    return pyfftw.FFTW(input_array, output_array, axes=axes, direction="FFTW_BACKWARD" if inverse else "FFTW_FORWARD",
                       threads=fft_workers() if threads is None else threads,
                       flags=(effort, "FFTW_DESTROY_INPUT"))


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised NumPy array aligned for SIMD FFTs (pyFFTW's allocator)."""
    return importlib.import_module("pyfftw").empty_aligned(shape, dtype=dtype)
