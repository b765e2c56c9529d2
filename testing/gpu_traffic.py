"""A device-traffic counter: the CuPy stand-in (:mod:`testing.fake_cupy`) instrumented to count kernel launches.

Every operation the CuPy code path asks of the device is recorded as one or more *launches*, each with
the bytes it reads from and writes to device memory, together with host↔device copies and host syncs.
On a GPU the engine is bound by memory bandwidth and launch overhead, so these two counts, times an
H100's 3.35 TB/s and ~8 µs per launch, project its speed on a machine without a GPU
(``benchmarks/gpu_traffic.py``).

The model (what counts as a launch, and its bytes):

* **elementwise** (operators ``+ - * / ** …``, in-place ``+=`` …, comparisons, ``abs``, NumPy ufuncs
  called on device arrays, ``cupy.<ufunc>``): one launch; reads every device operand, writes the output
  (the ``out=`` array or, in place, the left operand). Python and NumPy scalars cost nothing.
* **reductions and other functions** (``sum``, ``max``, ``vdot``, ``where``, ``concatenate``, methods
  ``x.sum()``, ``x.copy()``, ``x.astype()`` …): one launch, reads its device inputs, writes its result —
  unless every result is a *view* of an input (``reshape`` of a contiguous array, ``moveaxis``,
  ``broadcast_to``, ``x.real`` …), which costs nothing. Creation: ``empty*`` is free, ``zeros``/``ones``/
  ``full``/``arange``/… write their result. In-place methods (``fill``) write their array.
* **bytes read of an operand** are the bytes it spans in memory: a broadcast view (zero strides) is read
  once, not once per repetition (GPU caches serve the repeats).
* **indexing**: basic ``x[slices]`` is a view (free); advanced (fancy/boolean) indexing is a gather
  launch (reads the index arrays and the gathered elements, writes the result). Every ``x[key] = v`` is a
  copy launch (reads ``v``, writes the selected region), including ``g[sl] += v``'s write-back of its own
  view, as CuPy does.
* **cuFFT**: per transformed axis one pass = one launch reading and writing the whole array once
  (``n·itemsize`` each way): cuFFT runs a length ≤ 4096 whose prime factors are ≤ 127 with its
  Cooley–Tukey kernels, one shared-memory kernel per dimension (the seed's 294, 160, 126, 42 have
  factors 2, 3, 5, 7). Longer axes are counted as 2 passes. An axis with a prime factor > 127 uses
  Bluestein's algorithm (cuFFT documentation, "Accuracy and Performance"): counted as 3 launches moving
  twice the data each (chirp-multiply + padded FFT, pointwise product + inverse padded FFT, chirp-multiply),
  i.e. 6 passes' bytes. A lower bound: cuFFT's real plans may split a dimension into more kernels.
  CuPy scales a normalised transform (``norm="ortho"``, the inverse with ``"backward"``, the forward
  with ``"forward"``) in a separate elementwise launch, and casts a real input to complex in one more.
* **other cupyx.scipy functions** (``ndimage``): one launch, inputs read and result written.
* **fused kernels** (``cupy.RawModule`` kernels of :mod:`analysis.bragg.solvers.gpu_kernels`, run through their NumPy
  references): one launch each, kind ``kernel:<name>``, with the bytes of the kernel's own model
  (:attr:`analysis.bragg.solvers.gpu_kernels.KernelSpec.traffic`: the box view of ρ it touches, not the whole object).
* **host↔device**: ``cupy.asarray(host)``, host values assigned or used as indices are host→device copies;
  ``.get()``, ``asnumpy``, ``float()``/``int()``/``bool()``/``item()``/``tolist()``/formatting of a device
  array are device→host copies, and each one is a **host sync** (the host waits for the device queue).

This is a model, not a profiler: it cannot see cuFFT's exact plans, kernel fusion inside CuPy (there is
none for plain array expressions), caches beyond broadcast re-reads, or launch concurrency. It counts what
the Python code asks for, which is what fused kernels must reduce. Runtime code never imports this module.
"""

# Why this module is long: test support: one CuPy stand-in that counts host↔device traffic; its fake array API is
# one piece.

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testing import fake_cupy

H100_BANDWIDTH_B_PER_S = 3.35e12
"""An H100 SXM's HBM3 bandwidth (NVIDIA datasheet), bytes per second."""
LAUNCH_OVERHEAD_S = 8e-6
"""Seconds per kernel launch assumed for projections (CUDA launch plus CuPy's Python dispatch, ~8–10 µs)."""

_FREE_CREATION = frozenset({"empty", "empty_like"})
_WRITE_ONLY_CREATION = frozenset({"zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange",
                                  "linspace", "eye", "identity", "indices", "tri"})
_FFT_C2C = frozenset({"fft", "ifft", "fft2", "ifft2", "fftn", "ifftn"})
_FFT_REAL = frozenset({"rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn", "hfft", "ihfft"})
_FFT_FREE = frozenset({"fftfreq", "rfftfreq", "next_fast_len", "get_fft_plan"})


@dataclass
class Counts:
    """Totals of the traffic counter (a snapshot can be subtracted from a later one)."""

    launches: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    to_device: int = 0
    to_host: int = 0
    bytes_to_device: int = 0
    bytes_to_host: int = 0

    @property
    def bytes(self) -> int:
        """Device-memory bytes moved (read + written)."""
        return self.bytes_read + self.bytes_written

    @property
    def host_syncs(self) -> int:
        """Device→host copies: each one makes the host wait for the device."""
        return self.to_host

    def __sub__(self, other: Counts) -> Counts:
        """The traffic between snapshot ``other`` and this one."""
        return Counts(**{k: getattr(self, k) - getattr(other, k) for k in self.__dataclass_fields__})

    def projected_s(self, bandwidth_b_per_s: float = H100_BANDWIDTH_B_PER_S,
                    launch_s: float = LAUNCH_OVERHEAD_S) -> float:
        """Seconds on a device streaming at ``bandwidth_b_per_s`` with ``launch_s`` per launch (no overlap)."""
        return self.bytes / bandwidth_b_per_s + self.launches * launch_s


@dataclass
class Traffic:
    """The counter: totals, per-kind totals and, optionally, per-call-site totals.

    Attributes
    ----------
    transfers
        The stand-in's own host↔device counters (:class:`testing.fake_cupy.Transfers`).
    by_kind
        ``kind → [launches, bytes]`` (``elementwise``, ``function``, ``gather``, ``setitem``, ``fft``, …).
    by_site
        ``"kind at file:line" → [launches, bytes]`` when ``record_sites`` is set (slower).
    """

    transfers: fake_cupy.Transfers
    record_sites: bool = False
    launches: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    by_site: dict[str, list[int]] = field(default_factory=dict)

    def snapshot(self) -> Counts:
        """The totals now."""
        t = self.transfers
        return Counts(self.launches, self.bytes_read, self.bytes_written, t.to_device, t.to_host,
                      t.bytes_to_device, t.bytes_to_host)

    def reset(self) -> None:
        """Zero every counter (the transfers' too)."""
        self.launches = self.bytes_read = self.bytes_written = 0
        self.by_kind.clear()
        self.by_site.clear()
        self.transfers.reset()

    def record(self, kind: str, read: int, written: int, launches: int = 1) -> None:
        """Count ``launches`` launches of ``kind`` reading ``read`` and writing ``written`` bytes in all."""
        self.launches += launches
        self.bytes_read += int(read)
        self.bytes_written += int(written)
        k = self.by_kind.setdefault(kind, [0, 0])
        k[0] += launches
        k[1] += int(read) + int(written)
        if self.record_sites:
            s = self.by_site.setdefault(f"{kind} at {_caller()}", [0, 0])
            s[0] += launches
            s[1] += int(read) + int(written)

    def top_sites(self, n: int = 10) -> list[tuple[str, int, int]]:
        """The ``n`` call sites moving the most bytes: (site, launches, bytes)."""
        rows = sorted(self.by_site.items(), key=lambda kv: -kv[1][1])[:n]
        return [(k, v[0], v[1]) for k, v in rows]


def _caller() -> str:
    """``dir/file.py:line`` of the first frame outside this module, the stand-in and analysis/xp.py."""
    f: types.FrameType | None = sys._getframe(2)
    skip = (__file__, fake_cupy.__file__)
    while f is not None and (f.f_code.co_filename in skip or f.f_code.co_filename.endswith("analysis/xp.py")):
        f = f.f_back
    return "/".join(f.f_code.co_filename.rsplit("/", 2)[-2:]) + f":{f.f_lineno}" if f is not None else "?"


def spanned_bytes(a: np.ndarray) -> int:
    """Bytes of memory an array spans: its size, except that broadcast (zero-stride) axes count once."""
    n = a.itemsize
    for length, stride in zip(a.shape, a.strides, strict=True):
        if stride != 0:
            n *= length
    return n if a.size else 0


def fft_passes(shape: tuple[int, ...], axes: tuple[int, ...]) -> float:
    """cuFFT passes over the whole array for a c2c transform along ``axes`` (see the module's model).

    One per axis whose length has only prime factors ≤ 127 (two if it is longer than 4096); 6 (3 passes
    over twice the data) per axis that needs Bluestein's algorithm. Length-1 axes cost nothing.
    """
    passes = 0.0
    for ax in axes:
        n = shape[ax]
        if n <= 1:
            continue
        if _largest_prime_factor(n) > 127:
            passes += 6.0
        else:
            passes += 1.0 if n <= 4096 else 2.0
    return passes


def _largest_prime_factor(n: int) -> int:
    """The largest prime factor of ``n`` ≥ 2."""
    p, largest = 2, 1
    while p * p <= n:
        while n % p == 0:
            largest, n = p, n // p
        p += 1
    return max(largest, n)


def fft_launches(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    """cuFFT kernel launches for a c2c transform along ``axes``: one per pass, three per Bluestein axis."""
    return sum(3 if p == 6.0 else int(p) for p in (fft_passes(shape, (ax,)) for ax in axes if shape[ax] > 1))


def _fft_axes(name: str, ndim: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The axes a ``scipy.fft``-style call transforms."""
    if name.endswith("2") or name.endswith("n"):
        axes = kwargs.get("axes", args[2] if len(args) > 2 else None)
        if axes is None:
            return tuple(range(ndim - 2, ndim)) if name.endswith("2") else tuple(range(ndim))
        return tuple(int(a) % ndim for a in np.atleast_1d(axes))
    axis = kwargs.get("axis", args[2] if len(args) > 2 else -1)
    return (int(axis) % ndim,)


def _is_basic(key: Any) -> bool:
    """True when ``key`` is basic indexing (ints, slices, None, Ellipsis): the result is a view."""
    items = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer)) for k in items)


def build(record_sites: bool = False) -> tuple[dict[str, types.ModuleType], Traffic]:
    """The stand-in modules (:func:`testing.fake_cupy.build`), instrumented, and their counter."""
    mods, transfers = fake_cupy.build()

    def site(what: str) -> None:                                   # the stand-in's, skipping this module too
        key = f"{what} at {_caller()}"
        transfers.sites[key] = transfers.sites.get(key, 0) + 1

    transfers._site = site  # type: ignore[method-assign]
    tr = Traffic(transfers, record_sites=record_sites)
    cp = mods["cupy"]
    nd = cp.ndarray

    def raw(x: Any) -> np.ndarray | None:
        return x._a if isinstance(x, nd) else None

    def device_inputs(*objs: Any) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for o in objs:
            if isinstance(o, nd):
                out.append(o._a)
            elif isinstance(o, (list, tuple)):
                out.extend(device_inputs(*o))
            elif isinstance(o, dict):
                out.extend(device_inputs(*o.values()))
        return out

    def read_bytes(arrays: list[np.ndarray]) -> int:
        seen: set[int] = set()
        total = 0
        for a in arrays:
            if id(a) not in seen:
                seen.add(id(a))
                total += spanned_bytes(a)
        return total

    def results(r: Any) -> list[np.ndarray]:
        return device_inputs(r if isinstance(r, (list, tuple)) else (r,))

    def all_views(outs: list[np.ndarray], ins: list[np.ndarray]) -> bool:
        return bool(outs) and all(any(np.may_share_memory(o, i) for i in ins) for o in outs)

    def generic(kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """One launch unless free (``empty``) or every result is a view of an input."""
        def f(*args: Any, **kwargs: Any) -> Any:
            r = fn(*args, **kwargs)
            if name in _FREE_CREATION:
                return r
            outs = results(r)
            if name in _WRITE_ONLY_CREATION:
                tr.record("creation", 0, sum(o.nbytes for o in outs))
                return r
            ins = device_inputs(args, kwargs)
            if r is None and ins:                                  # in-place method (fill, sort): writes its array
                tr.record(kind, read_bytes(ins[1:]), ins[0].nbytes)
            elif outs and not all_views(outs, ins):
                tr.record(kind, read_bytes(ins), sum(o.nbytes for o in outs))
            return r
        f.__name__ = name
        return f

    # -- operators: always one elementwise launch
    def operator_(name: str, inplace: bool) -> None:
        orig = nd.__dict__[name]

        def f(self: Any, *other: Any) -> Any:
            r = orig(self, *other)
            out = self._a if inplace else raw(r)
            if out is not None:
                tr.record("elementwise", read_bytes(device_inputs(self, *other)), out.nbytes)
            return r
        setattr(nd, name, f)

    for nm in list(nd.__dict__):
        if nm.startswith("__") and nm.endswith("__") and nm not in (
                "__init__", "__getitem__", "__setitem__", "__len__", "__iter__", "__repr__", "__getattr__",
                "__setattr__", "__array__", "__array_ufunc__", "__array_function__", "__float__", "__int__",
                "__complex__", "__bool__", "__format__", "__hash__", "__module__", "__qualname__", "__slots__",
                "__doc__", "__dict__", "__weakref__", "_a") and callable(nd.__dict__[nm]):
            operator_(nm, inplace=nm.startswith("__i") and nm not in ("__invert__",))

    orig_ufunc = nd.__array_ufunc__

    def array_ufunc(self: Any, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        r = orig_ufunc(self, ufunc, method, *inputs, **kwargs)
        ins = device_inputs(inputs)
        if method == "at":                                          # scatter: reads the values, read+write targets
            vals = device_inputs(inputs[1:])
            n = sum(v.nbytes for v in vals)
            tr.record("scatter", read_bytes(vals) + n, n)
            return r
        outs = device_inputs(kwargs.get("out", ())) or results(r)
        tr.record("reduction" if method == "reduce" else "elementwise", read_bytes(ins), sum(o.nbytes for o in outs))
        return r

    nd.__array_ufunc__ = array_ufunc

    orig_function = nd.__array_function__

    def array_function(self: Any, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        return generic("function", func.__name__, lambda *a, **k: orig_function(self, func, types_, a, k))(
            *args, **kwargs)

    nd.__array_function__ = array_function

    orig_getitem = nd.__getitem__

    def getitem(self: Any, key: Any) -> Any:
        r = orig_getitem(self, key)
        if not _is_basic(key):
            idx = device_inputs(key if isinstance(key, tuple) else (key,))
            out = raw(r)
            n = out.nbytes if out is not None else 0
            tr.record("gather", read_bytes(idx) + n, n)
        return r

    nd.__getitem__ = getitem

    orig_setitem = nd.__setitem__

    def setitem(self: Any, key: Any, value: Any) -> None:
        k = key if isinstance(key, tuple) else (key,)
        plain = tuple(v._a if isinstance(v, nd) else v for v in k)
        region = self._a[plain if isinstance(key, tuple) else plain[0]]
        written = region.nbytes if isinstance(region, np.ndarray) else self._a.itemsize
        orig_setitem(self, key, value)
        tr.record("setitem", read_bytes(device_inputs(value, k)), written)

    nd.__setitem__ = setitem

    orig_getattr = nd.__getattr__

    def getattr_(self: Any, name: str) -> Any:
        attr = orig_getattr(self, name)
        if callable(attr) and not isinstance(attr, type):
            method = attr

            def call(*args: Any, **kwargs: Any) -> Any:
                return generic("function", name, lambda *a, **k: method(*a[1:], **k))(self, *args, **kwargs)
            return call
        return attr

    nd.__getattr__ = getattr_

    # -- module functions
    mod_getattr = cp.__getattr__

    def cupy_getattr(name: str) -> Any:
        attr = mod_getattr(name)
        if callable(attr) and not isinstance(attr, (type, np.dtype)):
            if isinstance(getattr(np, name, None), np.ufunc):
                return _elementwise(name, attr)
            return generic("function", name, attr)
        return attr

    def _elementwise(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def f(*args: Any, **kwargs: Any) -> Any:
            r = fn(*args, **kwargs)
            outs = device_inputs(kwargs.get("out", ())) or results(r)
            tr.record("elementwise", read_bytes(device_inputs(args)), sum(o.nbytes for o in outs))
            return r
        f.__name__ = name
        return f

    cp.__getattr__ = cupy_getattr  # type: ignore[method-assign]

    orig_asarray, orig_array = cp.asarray, cp.array

    def asarray(a: Any, dtype: Any = None, order: Any = None, **kw: Any) -> Any:
        r = orig_asarray(a, dtype=dtype, order=order, **kw)
        if isinstance(a, nd) and r is not a:                       # a dtype conversion on the device
            tr.record("function", spanned_bytes(a._a), r._a.nbytes)
        return r

    def array(a: Any, dtype: Any = None, copy: bool = True, order: Any = "K", **kw: Any) -> Any:
        r = orig_array(a, dtype=dtype, copy=copy, order=order, **kw)
        if isinstance(a, nd):
            tr.record("function", spanned_bytes(a._a), r._a.nbytes)
        return r

    cp.__dict__.update(asarray=asarray, array=array)

    # -- cuFFT and cupyx.scipy
    def fft_module(m: types.ModuleType) -> None:
        m_getattr = m.__getattr__

        def getattr_fft(name: str) -> Any:
            fn = m_getattr(name)
            if not callable(fn) or name in _FFT_FREE:
                return fn
            if name not in _FFT_C2C and name not in _FFT_REAL:
                return generic("function", name, fn)                # fftshift & co: one copy kernel

            def f(*args: Any, **kwargs: Any) -> Any:
                x = raw(args[0]) if args else raw(kwargs.get("x"))
                r = fn(*args, **kwargs)
                out = raw(r)
                if x is None or out is None:
                    return r
                axes = _fft_axes(name, x.ndim, args, kwargs)
                big = out if out.nbytes >= x.nbytes else x          # the complex side
                real_half = name in _FFT_REAL
                passes = fft_passes(big.shape, axes)
                n = big.nbytes // (2 if real_half else 1)
                tr.record("fft", int(passes * n), int(passes * n), launches=max(1, fft_launches(big.shape, axes)))
                if not np.iscomplexobj(x) and not real_half:        # CuPy casts a real input first
                    tr.record("fft-cast", x.nbytes, big.nbytes)
                norm = kwargs.get("norm") or "backward"
                inverse = name.startswith("i")
                if norm == "ortho" or (norm == "backward" and inverse) or (norm == "forward" and not inverse):
                    tr.record("fft-scale", out.nbytes, out.nbytes)
                return r
            f.__name__ = name
            return f
        m.__getattr__ = getattr_fft  # type: ignore[method-assign]

    fft_module(mods["cupyx.scipy.fft"])
    fft_module(cp.fft)
    ndi = mods["cupyx.scipy.ndimage"]
    ndi_getattr = ndi.__getattr__

    def getattr_ndi(name: str) -> Any:
        fn = ndi_getattr(name)
        return generic("ndimage", name, fn) if callable(fn) else fn

    ndi.__getattr__ = getattr_ndi  # type: ignore[method-assign]
    specs = importlib.import_module("analysis.bragg.solvers.gpu_kernels").KERNELS

    def raw_launch(name: str, args: tuple[Any, ...]) -> None:             # one fused kernel: its own byte model
        read, written = specs[name].traffic(args)
        tr.record(f"kernel:{name}", read, written)

    cp.__dict__["raw_launch_hook"] = raw_launch
    cp.__dict__["traffic"] = tr
    return mods, tr


@contextlib.contextmanager
def r_factors_at_phase_ends() -> Iterator[None]:
    """Within the block the engine records R-factors only at the end of each phase (and its start), as when a
    phase is long: with the default 20 points per phase every iteration of a 3-iteration phase would also run
    an R-factor pass, which is not the iteration's own traffic. Restores the engine's rule afterwards.
    """
    engine = importlib.import_module("analysis.bragg.engine")
    quality = importlib.import_module("analysis.bragg.solvers.quality")
    saved = engine.r_factor_due
    engine.r_factor_due = functools.partial(quality.r_factor_due, points=1)
    try:
        yield
    finally:
        engine.r_factor_due = saved


def install(monkeypatch: Any, record_sites: bool = False) -> tuple[types.ModuleType, Traffic]:
    """Put the instrumented stand-in in ``sys.modules`` as ``cupy`` & co; ``monkeypatch`` undoes it."""
    mods, tr = build(record_sites)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods["cupy"], tr
