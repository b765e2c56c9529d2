"""A NumPy-backed stand-in for CuPy that enforces CuPy's host/device rules, to test the GPU code path on CPU.

CI has no GPU, so the CuPy branch of every ``xp``-generic function would otherwise run for the first
time on a lent GPU. This stand-in runs that branch on NumPy while holding it to the rules that make
NumPy-only code fail under CuPy (docs.cupy.dev, "Conversion to/from NumPy arrays"):

* a device array never turns into a NumPy array implicitly: ``np.asarray(x)``, SciPy functions and
  anything else that calls ``__array__`` raise ``TypeError``; ``x.get()`` / ``cupy.asnumpy(x)`` copy;
* CuPy functions, operators and ufuncs take device arrays and scalars, never NumPy arrays;
* reductions and integer indexing give 0-d device arrays, not NumPy scalars;
* ``cupyx.scipy.fft`` has no ``workers`` keyword; ``cupyx.scipy.ndimage`` takes device arrays.

It counts host→device and device→host copies (:class:`Transfers`) so a test can bound them per
iteration: each one is a synchronisation on a real GPU. ``cupy.RawModule`` kernels run through their NumPy
references (:mod:`analysis.bragg.solvers.gpu_kernels`). It cannot check the CUDA code itself, streams, memory, speed or
cuFFT's rounding: that needs the GPU (``benchmarks/gpu_validate.py``; the kernels' source is also compiled and
run on the host by ``tests/analysis/test_gpu_kernels.py``).
"""

from __future__ import annotations

import importlib
import operator
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
             "array explicitly.")


@dataclass
class Transfers:
    """Host↔device copies seen by the stand-in (calls and bytes)."""

    to_device: int = 0
    to_host: int = 0
    bytes_to_device: int = 0
    bytes_to_host: int = 0
    sites: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Zero every counter."""
        self.to_device = self.to_host = self.bytes_to_device = self.bytes_to_host = 0
        self.sites.clear()

    def _host(self, a: np.ndarray, why: str) -> None:
        self.to_host += 1
        self.bytes_to_host += int(a.nbytes)
        self._site("to host: " + why)

    def _device(self, a: np.ndarray) -> None:
        self.to_device += 1
        self.bytes_to_device += int(a.nbytes)
        self._site("to device")

    def _site(self, what: str) -> None:
        f = sys._getframe(2)
        while f is not None and (f.f_code.co_filename == __file__ or f.f_code.co_filename.endswith("analysis/xp.py")):
            f = f.f_back
        where = "/".join(f.f_code.co_filename.rsplit("/", 2)[-2:]) + f":{f.f_lineno}" if f is not None else "?"
        key = f"{what} at {where}"
        self.sites[key] = self.sites.get(key, 0) + 1


def install(monkeypatch: Any) -> tuple[types.ModuleType, Transfers]:
    """Put the stand-in in ``sys.modules`` as ``cupy``, ``cupyx``, ``cupyx.scipy.{fft,ndimage}``.

    Returns the ``cupy`` module and its transfer counters; ``monkeypatch`` undoes it after the test.
    """
    mods, transfers = build()
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods["cupy"], transfers


_DEVICE_BOOL = frozenset({"array_equal", "array_equiv", "allclose"})
"""Functions NumPy answers with a Python bool and CuPy with a 0-d device array."""


def build() -> tuple[dict[str, types.ModuleType], Transfers]:
    """The stand-in modules (not installed) and their transfer counters."""
    tr = Transfers()

    def strict(x: Any, where: str) -> Any:
        if isinstance(x, ndarray):
            return x._a
        if isinstance(x, np.ndarray):
            raise TypeError(f"Unsupported type {type(x)}: a NumPy array given to CuPy ({where}); "
                            "move it with cupy.asarray first")
        if isinstance(x, (list, tuple)):
            return type(x)(strict(v, where) for v in x)
        if isinstance(x, dict):
            return {k: strict(v, where) for k, v in x.items()}
        return x

    def wrap(r: Any) -> Any:
        if isinstance(r, np.ndarray):
            return ndarray(r)
        if isinstance(r, np.generic) and not isinstance(r, (np.str_, np.bytes_)):
            return ndarray(np.asarray(r))
        if isinstance(r, tuple):
            return tuple(wrap(v) for v in r)
        if isinstance(r, list):
            return [wrap(v) for v in r]
        return r

    def index(key: Any) -> Any:
        if isinstance(key, ndarray):
            return key._a
        if isinstance(key, np.ndarray):               # CuPy copies a host index array to the device
            tr._device(key)
            return key
        if isinstance(key, tuple):
            return tuple(index(k) for k in key)
        if isinstance(key, list):
            return [index(k) for k in key]
        return key

    def device_function(name: str, fn: Any) -> Any:
        def f(*args: Any, **kwargs: Any) -> Any:
            return wrap(fn(*strict(args, name), **strict(kwargs, name)))
        f.__name__ = name
        return f

    class ndarray:  # noqa: N801 - CuPy's name
        """A device array: a NumPy array that refuses to leave the device implicitly."""

        __slots__ = ("_a",)
        __hash__ = None  # type: ignore[assignment]

        def __init__(self, a: np.ndarray) -> None:
            object.__setattr__(self, "_a", a)

        # -- explicit transfers
        def get(self, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
            tr._host(self._a, "get()")
            return np.array(self._a, order=order)

        def tolist(self) -> Any:
            tr._host(self._a, "tolist()")
            return self._a.tolist()

        def item(self) -> Any:
            tr._host(self._a, "item()")
            return self._a.item()

        def _scalar(self, kind: Any) -> Any:
            if self._a.size != 1:
                raise TypeError(f"only size-1 arrays can be converted to Python scalars (shape {self._a.shape})")
            tr._host(self._a, kind.__name__ + "()")
            return kind(self._a.reshape(()))

        def __float__(self) -> float:
            return self._scalar(float)

        def __int__(self) -> int:
            return self._scalar(int)

        def __complex__(self) -> complex:
            return self._scalar(complex)

        def __bool__(self) -> bool:
            return self._scalar(bool)

        def __format__(self, spec: str) -> str:
            tr._host(self._a, "format()")
            return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

        def __array__(self, *args: Any, **kwargs: Any) -> Any:
            raise TypeError(_IMPLICIT)

        # -- NumPy protocols: NumPy's functions run on device arrays (CuPy implements them), never on a mix
        def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
            return wrap(getattr(ufunc, method)(*strict(inputs, ufunc.__name__), **strict(kwargs, ufunc.__name__)))

        def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
            return wrap(func(*strict(args, func.__name__), **strict(kwargs, func.__name__)))

        # -- container
        def __getitem__(self, key: Any) -> Any:
            return wrap(self._a[index(key)])

        def __setitem__(self, key: Any, value: Any) -> None:
            if isinstance(value, np.ndarray):         # CuPy copies host values to the device
                tr._device(value)
                self._a[index(key)] = value
            else:
                self._a[index(key)] = strict(value, "__setitem__")

        def __len__(self) -> int:
            return len(self._a)

        def __iter__(self) -> Any:
            for i in range(len(self._a)):
                yield self[i]

        def __repr__(self) -> str:
            return f"fake-cupy {self._a!r}"

        def __getattr__(self, name: str) -> Any:
            if name == "_a" or name.startswith("__"):     # no __array_interface__ etc.: NumPy must not see the data
                raise AttributeError(name)
            attr = getattr(self._a, name)
            if callable(attr):
                def method(*args: Any, **kwargs: Any) -> Any:
                    return wrap(attr(*strict(args, "ndarray." + name), **strict(kwargs, "ndarray." + name)))
                return method
            return wrap(attr)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self._a, name, strict(value, "ndarray." + name))

    def _binary(name: str) -> Any:
        op = getattr(operator, name)

        def f(self: Any, other: Any) -> Any:
            return wrap(op(self._a, strict(other, name)))
        return f

    def _reflected(name: str) -> Any:
        op = getattr(operator, name)

        def f(self: Any, other: Any) -> Any:
            return wrap(op(strict(other, name), self._a))
        return f

    def _inplace(name: str) -> Any:
        op = getattr(operator, name)

        def f(self: Any, other: Any) -> Any:
            op(self._a, strict(other, name))
            return self
        return f

    for nm in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_", "xor",
               "lshift", "rshift"):
        dunder = nm.rstrip("_")
        setattr(ndarray, f"__{dunder}__", _binary(nm))
        setattr(ndarray, f"__r{dunder}__", _reflected(nm))
        setattr(ndarray, f"__i{dunder}__", _inplace("i" + dunder))
    for nm in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(ndarray, f"__{nm}__", _binary(nm))
    for nm in ("neg", "pos", "abs", "invert"):
        setattr(ndarray, f"__{nm}__", (lambda op: lambda self: wrap(op(self._a)))(getattr(operator, nm)))
    ndarray.__module__ = "cupy._core.core"
    ndarray.__qualname__ = "ndarray"

    cupy = types.ModuleType("cupy", "NumPy-backed CuPy stand-in (testing/fake_cupy.py)")
    cupy.ndarray = ndarray
    cupy.transfers = tr

    def asarray(a: Any, dtype: Any = None, order: Any = None, **_: Any) -> Any:
        if isinstance(a, ndarray):
            return a if dtype is None or np.dtype(dtype) == a._a.dtype else ndarray(a._a.astype(dtype))
        h = np.asarray(a, dtype=dtype, order=order)
        tr._device(h)
        return ndarray(np.array(h, copy=True))

    def array(a: Any, dtype: Any = None, copy: bool = True, order: Any = "K", **_: Any) -> Any:
        if isinstance(a, ndarray):
            return ndarray(np.array(a._a, dtype=dtype, copy=True, order=order))
        return asarray(a, dtype=dtype)

    def asnumpy(a: Any, **_: Any) -> np.ndarray:
        return a.get() if isinstance(a, ndarray) else np.asarray(a)

    def get_array_module(*args: Any) -> types.ModuleType:
        return cupy if any(isinstance(a, ndarray) for a in args) else np

    cupy.asarray, cupy.array, cupy.asnumpy, cupy.get_array_module = asarray, array, asnumpy, get_array_module

    class RawModule:
        """``cupy.RawModule`` whose kernels run through their NumPy references
        (:data:`analysis.bragg.solvers.gpu_kernels.KERNELS`).

        A launch ``kernel(grid, block, args)`` checks what CuPy and the CUDA code need (device arrays
        C-contiguous, scalars as NumPy scalars of an explicit C type, a kernel named in the source), runs the
        reference on the arrays in place, then calls ``cupy.raw_launch_hook(name, args)`` if one is set.
        """

        def __init__(self, code: str | None = None, *, options: tuple[str, ...] = (), **_: Any) -> None:
            self.code = code or ""

        def get_function(self, name: str) -> Any:
            specs = importlib.import_module("analysis.bragg.solvers.gpu_kernels").KERNELS
            if f" {name}(" not in self.code or name not in specs:
                raise AttributeError(f"RawModule: no kernel {name!r} in the source (or no NumPy reference for it)")
            return _RawKernel(name, specs[name].reference)

    class _RawKernel:
        def __init__(self, name: str, reference: Any) -> None:
            self.name, self.reference = name, reference

        def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                     shared_mem: int = 0) -> None:
            if not (isinstance(grid, tuple) and isinstance(block, tuple) and all(int(g) > 0 for g in grid + block)):
                raise ValueError(f"{self.name}: grid {grid!r} and block {block!r} must be tuples of positive ints")
            plain: list[Any] = []
            for i, a in enumerate(args):
                if isinstance(a, ndarray):
                    if not a._a.flags.c_contiguous:
                        raise ValueError(f"{self.name}: argument {i} is not C-contiguous (the kernel indexes it flat)")
                    plain.append(a._a)
                elif isinstance(a, np.generic) and not isinstance(a, np.ndarray):
                    plain.append(a)
                else:
                    raise TypeError(f"{self.name}: argument {i} is {type(a).__name__}; pass device arrays and NumPy "
                                    "scalars (np.int32, np.float32, np.float64) so that the C types match")
            self.reference(*plain)
            hook = cupy.__dict__.get("raw_launch_hook")
            if hook is not None:
                hook(self.name, tuple(plain))

    cupy.RawModule = RawModule
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      getDeviceProperties=lambda i: {"name": b"fake-cupy (NumPy)"}),
        Device=lambda i=0: types.SimpleNamespace(synchronize=lambda: None, id=i),
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))
    pool = types.SimpleNamespace(used_bytes=lambda: 0, total_bytes=lambda: 0, free_all_blocks=lambda: None)
    cupy.get_default_memory_pool = lambda: pool

    def ascontiguousarray(a: Any, dtype: Any = None) -> Any:
        """As CuPy: ``a`` itself when it is already C-contiguous (and of ``dtype``), else a contiguous copy."""
        if isinstance(a, ndarray) and a._a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a._a.dtype):
            return a
        return device_function("ascontiguousarray", np.ascontiguousarray)(a, dtype=dtype)

    def module_getattr(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "ascontiguousarray":
            return ascontiguousarray
        if name in _DEVICE_BOOL:                    # CuPy returns a 0-d device array: bool() of it is a host sync
            numpy_fn = getattr(np, name)
            return device_function(name, lambda *a, **k: np.asarray(numpy_fn(*a, **k)))
        attr = getattr(np, name)
        if isinstance(attr, (type, np.dtype)) or not callable(attr):
            return attr
        return device_function(name, attr)

    cupy.__getattr__ = module_getattr  # type: ignore[attr-defined]

    def scipy_like(modname: str, source: types.ModuleType, reject: tuple[str, ...] = ()) -> types.ModuleType:
        m = types.ModuleType(modname, f"stand-in for {modname} on {source.__name__}")

        def getattr_(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            fn = getattr(source, name)
            if not callable(fn):
                return fn

            def f(*args: Any, **kwargs: Any) -> Any:
                bad = [k for k in reject if k in kwargs]
                if bad:
                    raise TypeError(f"{modname}.{name}() got an unexpected keyword argument {bad[0]!r}")
                return wrap(fn(*strict(args, f"{modname}.{name}"), **strict(kwargs, f"{modname}.{name}")))
            f.__name__ = name
            return f
        m.__getattr__ = getattr_  # type: ignore[attr-defined]
        return m

    cupyx = types.ModuleType("cupyx")
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    fft = scipy_like("cupyx.scipy.fft", scipy.fft, reject=("workers",))
    ndi = scipy_like("cupyx.scipy.ndimage", scipy.ndimage)
    cupyx.scipy = cupyx_scipy
    cupyx_scipy.fft, cupyx_scipy.ndimage = fft, ndi
    cupy.fft = scipy_like("cupy.fft", np.fft)
    return ({"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx_scipy, "cupyx.scipy.fft": fft,
             "cupyx.scipy.ndimage": ndi}, tr)
