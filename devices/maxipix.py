"""Maxipix area detector (Ophyd v1) writing SWMR HDF5 and announcing frames as StreamDatum.

The device is the same for the beamline and CI; only the *backend* differs. A backend
follows :class:`MaxipixBackend` (``detector_shape`` and ``acquire``); the sim backend
(``devices/sim_backends.py``) wraps a :class:`FrameSource` from ``sim``.

File life cycle: ``stage()`` opens ``<data_dir>/<name>_<uuid>.h5``
with ``/entry/data/data`` (uint32, chunks (1, H, W), SWMR) and ``/entry/pxm/complete = 0``;
each ``trigger()`` writes one frame in a worker thread into the *unread slot* (overwriting a
frame that was triggered but never collected, e.g. after a pause/suspend rewind);
``collect_asset_docs()`` announces that slot with a StreamDatum; ``unstage()`` drops any
unannounced frame, writes ``/entry/pxm/n_frames`` and sets ``complete = 1`` only if no
acquisition failed or was cut off and the scan was not left paused (a stop or abort after a pause
unstages a paused detector; ``pause()``/``resume()`` are the RunEngine's device hooks).
"""

from __future__ import annotations

import errno
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import h5py
import numpy as np
from event_model import ComposeStreamResource, StreamRange
from ophyd import Component as Cpt
from ophyd import Device, Kind
from ophyd.status import DeviceStatus

from analysis.geometry import Roi
from devices.signals import UnitSignal

DATASET_PATH = "/entry/data/data"
"""HDF5 path of the frame stack (FRAME, ROWS, COLS) uint32."""
COMPLETE_PATH = "/entry/pxm/complete"
"""HDF5 path of the scalar uint8 flag: 1 only after a clean ``unstage()``."""
N_FRAMES_PATH = "/entry/pxm/n_frames"
RESERVE_BYTES = 1 << 20
"""Free space kept on the data volume: a frame that would eat into it is refused (ENOSPC) before HDF5
writes a byte. HDF5 cannot recover from a write that fails half-way (its metadata cache stays dirty, the
file cannot be closed, the process may crash at exit); with the reserve, the file still closes cleanly,
marked incomplete (docs/reliability.md, "disk full")."""
"""HDF5 path of the scalar int64 count of announced frames (written at ``unstage()``)."""


@runtime_checkable
class FrameSource(Protocol):
    """Physics behind a simulated detector (implemented by ``sim.diffraction``)."""

    detector_shape: tuple[int, int]

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
              detector_arm_offset_deg: float, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """Return one uint32 frame of shape ``roi.shape`` (or ``detector_shape``)."""
        ...


@runtime_checkable
class MaxipixBackend(Protocol):
    """What the Maxipix device needs from its hardware (or simulation)."""

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Full detector (rows, cols)."""
        ...

    def acquire(self, *, exposure_s: float, roi: Roi) -> np.ndarray:
        """Expose for ``exposure_s`` seconds and return a uint32 frame of shape ``roi.shape``."""
        ...


class FrameStatus(DeviceStatus):
    """The status of one frame; a failed one reads as its error, so the run's stop document says why.

    bluesky reports a failed trigger as ``FailedStatus(status)`` and puts ``str(status)`` into the stop
    document's ``reason``; ophyd's plain repr would only say ``done=True, success=False``.
    """

    def __str__(self) -> str:
        exc = self.exception() if self.done else None
        if exc is None:
            return super().__str__()
        return f"{self.device.name}: frame not written: {type(exc).__name__}: {exc}"


class Maxipix(Device):
    """Maxipix detector: ``image`` frames in HDF5 (StreamResource/StreamDatum), ``total`` ROI sum.

    Parameters
    ----------
    backend
        Object following :class:`MaxipixBackend`.
    data_dir
        Directory for the HDF5 files (created if missing).
    roi
        Initial ROI (default: the full detector); also settable with :meth:`set_roi`.
    simulate_exposure
        If True, the worker thread sleeps ``exposure_s`` before acquiring (sim backends only).
    reserve_bytes
        Free space to keep on the data volume (default :data:`RESERVE_BYTES`).
    """

    exposure_s = Cpt(UnitSignal, value=0.1, units="s", kind=Kind.config)
    roi_row0_px = Cpt(UnitSignal, value=0, units="px", kind=Kind.config)
    roi_col0_px = Cpt(UnitSignal, value=0, units="px", kind=Kind.config)
    roi_n_rows_px = Cpt(UnitSignal, value=1, units="px", kind=Kind.config)
    roi_n_cols_px = Cpt(UnitSignal, value=1, units="px", kind=Kind.config)
    total = Cpt(UnitSignal, value=0, units="counts", kind=Kind.hinted)

    def __init__(self, prefix: str = "", *, name: str, backend: MaxipixBackend, data_dir: str | Path,
                 roi: Roi | None = None, simulate_exposure: bool = True, reserve_bytes: int = RESERVE_BYTES,
                 **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        if not isinstance(backend, MaxipixBackend):
            raise TypeError(f"{name}: backend {type(backend).__name__} lacks detector_shape/acquire "
                            "(see devices.maxipix.MaxipixBackend)")
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.simulate_exposure = bool(simulate_exposure)
        if reserve_bytes < 0:
            raise ValueError(f"{name}: reserve_bytes must be >= 0, got {reserve_bytes}")
        self.reserve_bytes = int(reserve_bytes)
        rows, cols = backend.detector_shape
        self.set_roi(roi if roi is not None else Roi(row0_px=0, col0_px=0, n_rows_px=rows, n_cols_px=cols))
        self._lock = threading.RLock()
        self._h5: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None
        self._asset_queue: deque[tuple[str, Mapping[str, Any]]] = deque()
        self._compose_datum: Any = None
        self._slot = 0            # index of the next frame to announce
        self._pending = False     # a frame sits in slot ``_slot`` but has not been announced
        self._generation = 0      # bumps on each trigger/unstage; stale workers do not write
        self._in_flight = False   # the current generation's worker is running
        self._failure: BaseException | None = None
        self._paused = False      # the RunEngine paused (Ctrl-C, suspender) and has not resumed
        self._frame_shape: tuple[int, int] = (rows, cols)
        self.file_path: Path | None = None
        """Path of the current (or last) HDF5 file."""

    # --- configuration ------------------------------------------------------
    @property
    def image_key(self) -> str:
        """Data key of the external frame stream."""
        return f"{self.name}_image"

    @property
    def roi(self) -> Roi:
        """ROI built from the ``roi_*_px`` configuration signals."""
        return Roi(row0_px=int(self.roi_row0_px.get()), col0_px=int(self.roi_col0_px.get()),
                   n_rows_px=int(self.roi_n_rows_px.get()), n_cols_px=int(self.roi_n_cols_px.get()))

    def set_roi(self, roi: Roi) -> None:
        """Set the ROI (raises ValueError off the detector, RuntimeError while staged)."""
        if not isinstance(roi, Roi):
            raise TypeError(f"{self.name}: roi must be analysis.geometry.Roi, got {type(roi).__name__}")
        if getattr(self, "_h5", None) is not None:
            raise RuntimeError(f"{self.name}: cannot change the ROI while staged (file open); unstage first")
        rows, cols = self.backend.detector_shape
        if roi.row0_px + roi.n_rows_px > rows or roi.col0_px + roi.n_cols_px > cols:
            raise ValueError(f"{self.name}: ROI {roi} leaves the {rows} × {cols} detector; move or shrink it")
        self.roi_row0_px.put(roi.row0_px)
        self.roi_col0_px.put(roi.col0_px)
        self.roi_n_rows_px.put(roi.n_rows_px)
        self.roi_n_cols_px.put(roi.n_cols_px)

    # --- staging ------------------------------------------------------------
    def stage(self) -> list[Any]:
        """Arm: open the HDF5 file (SWMR) and queue its StreamResource document."""
        if self._h5 is not None:
            raise RuntimeError(f"{self.name}: already staged (file {self.file_path} open); unstage first")
        exposure_s = float(self.exposure_s.get())
        if not exposure_s > 0:
            raise ValueError(f"{self.name}: exposure_s must be > 0 s, got {exposure_s}")
        roi = self.roi
        rows, cols = roi.shape
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = (self.data_dir / f"{self.name}_{uuid.uuid4().hex}.h5").resolve()
        h5 = h5py.File(path, "w", libver="latest")
        try:
            ds = h5.create_dataset(DATASET_PATH, shape=(0, rows, cols), maxshape=(None, rows, cols),
                                   chunks=(1, rows, cols), dtype="<u4")
            ds.attrs["units"] = "counts"
            ds.attrs["roi_px"] = [roi.row0_px, roi.col0_px, rows, cols]
            h5.create_dataset(COMPLETE_PATH, data=np.uint8(0))
            h5.create_dataset(N_FRAMES_PATH, data=np.int64(0))
            h5[COMPLETE_PATH].attrs["meaning"] = ("1 only after a clean unstage: every frame announced, "
                                                  "none missing; 0 while writing or after a failure")
            h5.swmr_mode = True
        except BaseException:
            h5.close()
            raise
        bundle = ComposeStreamResource()(
            mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=self.image_key,
            parameters={"dataset": DATASET_PATH, "chunk_shape": (1, rows, cols)})
        with self._lock:
            self._h5, self._dataset, self.file_path = h5, ds, path
            self._frame_shape = (rows, cols)
            self._compose_datum = bundle.compose_stream_datum
            self._asset_queue.clear()
            self._asset_queue.append(("stream_resource", bundle.stream_resource_doc))
            self._slot, self._pending, self._failure, self._in_flight = 0, False, None, False
            self._paused = False
        try:
            return super().stage()
        except BaseException:
            self._close(complete=False)
            raise

    def unstage(self) -> list[Any]:
        """Disarm: drop any unannounced frame, mark the file complete if clean, close it."""
        with self._lock:
            if self._h5 is not None:
                interrupted = self._pending or self._in_flight or self._paused   # paused: stopped or aborted
                self._generation += 1
                if self._pending:
                    assert self._dataset is not None            # set and cleared together with _h5
                    self._dataset.resize(self._slot, axis=0)   # never announced: not part of the run
                    self._pending = False
                self._close(complete=self._failure is None and not interrupted)
        return super().unstage()

    def pause(self) -> None:
        """The RunEngine paused: until :meth:`resume`, an unstage (stop/abort) leaves ``complete = 0``."""
        with self._lock:
            self._paused = True
        super().pause()

    def resume(self) -> None:
        """The RunEngine resumed the scan (after a pause or a suspension)."""
        with self._lock:
            self._paused = False
        super().resume()

    def _close(self, *, complete: bool) -> None:
        with self._lock:
            h5 = self._h5
            if h5 is None:
                return
            try:
                h5[N_FRAMES_PATH][()] = np.int64(self._slot)
                h5[COMPLETE_PATH][()] = np.uint8(1 if complete else 0)
                h5.flush()
            finally:
                self._h5 = self._dataset = None
                try:
                    h5.close()
                except Exception:
                    try:                   # a failed close leaves HDF5's id open; releasing it avoids a crash at exit
                        h5.id.close()
                    except Exception:      # noqa: BLE001 - the first error is the one to report
                        pass
                    raise

    # --- acquisition --------------------------------------------------------
    def trigger(self) -> DeviceStatus:
        """Acquire one frame in a worker thread; raises RuntimeError if not staged."""
        with self._lock:
            if self._h5 is None:
                raise RuntimeError(
                    f"{self.name}: trigger() called but the detector is not armed (no HDF5 file open); "
                    "stage it first (bluesky stage_decorator / det.stage())")
            self._generation += 1
            generation = self._generation
            self._in_flight = True
        status = FrameStatus(self)
        exposure_s = float(self.exposure_s.get())
        roi = self.roi
        threading.Thread(target=self._acquire, args=(generation, status, exposure_s, roi),
                         daemon=True, name=f"{self.name}-acquire").start()
        return status

    def _acquire(self, generation: int, status: FrameStatus, exposure_s: float, roi: Roi) -> None:
        try:
            if self.simulate_exposure:
                time.sleep(exposure_s)
            frame = np.asarray(self.backend.acquire(exposure_s=exposure_s, roi=roi))
            if frame.shape != self._frame_shape:
                raise ValueError(f"{self.name}: backend returned a frame of shape {frame.shape}, expected "
                                 f"{self._frame_shape} from the ROI; check the backend's ROI handling")
            free = shutil.disk_usage(self.data_dir).free
            if free < frame.nbytes + self.reserve_bytes:
                raise OSError(errno.ENOSPC, f"No space left on device: {free} bytes free in {self.data_dir}, a frame "
                              f"needs {frame.nbytes} + {self.reserve_bytes} kept free; free space there or move the "
                              "data folder")
            with self._lock:
                if generation != self._generation or self._h5 is None:
                    status.set_exception(RuntimeError(
                        f"{self.name}: acquisition superseded by a later trigger or unstage; frame discarded"))
                    return
                ds = self._dataset
                assert ds is not None                           # set and cleared together with _h5
                if ds.shape[0] < self._slot + 1:
                    ds.resize(self._slot + 1, axis=0)
                ds[self._slot] = frame.astype("<u4", copy=False)   # overwrites an unread slot
                ds.flush()
                self._pending = True
                self._in_flight = False
                self.total.put(int(frame.sum(dtype=np.int64)))
            status.set_finished()
        except Exception as exc:   # noqa: BLE001 - reported through the status
            with self._lock:
                if generation == self._generation:
                    self._in_flight = False
                    self._failure = exc
            status.set_exception(exc)

    def collect_asset_docs(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Yield the queued StreamResource and one StreamDatum for the frame just read."""
        with self._lock:
            docs = list(self._asset_queue)
            self._asset_queue.clear()
            if self._pending:
                docs.append(("stream_datum",
                             self._compose_datum(indices=StreamRange(start=self._slot, stop=self._slot + 1))))
                self._slot += 1
                self._pending = False
        yield from docs

    def describe(self) -> dict[str, dict[str, Any]]:
        """Describe ``total`` plus the external ``<name>_image`` key (STREAM:)."""
        desc = dict(super().describe())
        rows, cols = self.roi.shape
        desc[self.image_key] = {"source": f"{self.name}:hdf5", "shape": [rows, cols], "dtype": "array",
                                "dtype_numpy": "<u4", "external": "STREAM:", "units": "counts"}
        return desc
