"""Live reconstruction: Bluesky documents → frames → an online engine → previews and results in Tiled.

:class:`LiveReconstructionCallback` is an ``event_model.DocumentRouter``. Its document
methods only parse and enqueue (microseconds); one worker thread per run reads the frames
from the detector's HDF5 file (SWMR), assembles the (POSITION, ANGLE) grid, runs
:class:`analysis.engine.Reconstruction`, writes previews to ``/processed/<uid8>-live-NNN``
(``status: "running"``) and, after the stop document, the final result through
:func:`pxm.publication.publish_outcome` (``status: "complete"``, docs/tiled-layout.md). The same callback runs in the
RunEngine process, behind a 0MQ ``RemoteDispatcher`` (``pxm live-consumer``) or on replayed
documents (``pxm replay``). Design notes: ``docs/live-pipeline.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import event_model
import numpy as np
from event_model import Event, EventDescriptor, EventPage, RunStart, RunStop, StreamDatum, StreamResource

from analysis.bragg.outcome import save_outcome_figures
from analysis.bragg.pipeline import PipelineOptions, reconstruct
from analysis.bragg.scan import BraggScan
from analysis.engine import Recipe, SupportSchedule
from analysis.geometry import BraggGeometry, DetectorLayout

__all__ = ["LiveOptions", "FrameGrid", "LiveReconstructionCallback", "live_recipe", "select_usable",
           "replay_documents", "jsonl_documents", "tiled_documents"]

log = logging.getLogger(__name__)
BRAGG_PLAN = "raster_rocking_scan"
PREVIEW_SPEC = "BraggPtychoLivePreview"
PREVIEW_SPEC_VERSION = "0.2"
_PREVIEW_SLICE_DIMS = {"e1": ("e2", "e3"), "e2": ("e1", "e3"), "e3": ("e1", "e2")}


def preview_dataset(arrays: Mapping[str, np.ndarray], *, object_shape: tuple[int, ...],
                    voxel_size_m: tuple[float, ...], origin_e_m: tuple[float, ...] | None = None) -> Any:
    """A live preview's arrays as an ``xarray.Dataset`` with dims, units and coordinates (as the final result).

    ``object_amplitude_mid_<a>`` (1) and ``object_phase_mid_<a>`` (rad) are the object's slices through voxel
    N//2 of axis ``a`` (dims: the other two of ``e1, e2, e3``; ``attrs["slice_at_m"]`` says where);
    ``strain_zz_mid_e2`` (1) the ε_zz slice through e2's N//2; ``probe`` (sqrt(photons), ``probe_e2, probe_e3``).
    Coordinates: ``e1, e2, e3`` in m along the reconstruction axes from ``origin_e_m`` (the placement's origin
    in that frame, as :func:`pxm.publication.outcome_dataset`; voxel 0 when None), ``probe_e2/e3`` in m from the
    beam axis. Built once per preview container; later previews overwrite the arrays only.

    Parameters
    ----------
    arrays
        The preview's arrays (``LiveReconstructionCallback`` session ``_preview_arrays``).
    object_shape
        Shape of the full object grid (N1, N2, N3).
    voxel_size_m
        (Δr1, Δr2, Δr3).
    origin_e_m
        The reconstruction-frame position of voxel [0, 0, 0], or None.

    Returns
    -------
    xarray.Dataset
        Written by :func:`pxm.publication.publish_dataset`.
    """
    import xarray as xr

    from pxm.publication import LAYOUT_DOC, RECONSTRUCTION_FRAME

    vox = [float(v) for v in voxel_size_m]
    origin = [0.0] * 3 if origin_e_m is None else [float(v) for v in origin_e_m]
    coords: dict[str, Any] = {}
    for a, name in enumerate(("e1", "e2", "e3")):
        where = "from voxel 0 (no placement recorded)" if origin_e_m is None else "reconstruction frame"
        coords[name] = (name, origin[a] + np.arange(object_shape[a]) * vox[a],
                        {"units": "m", "long_name": f"position along {name} ({where})", "frame": "reconstruction"})
    data: dict[str, Any] = {}
    for key, value in arrays.items():
        v = np.asarray(value)
        if key == "probe":
            for a, name in enumerate(("probe_e2", "probe_e3")):
                coords[name] = (name, (np.arange(v.shape[a]) - v.shape[a] // 2) * vox[a + 1],
                                {"units": "m", "long_name": f"offset from the beam axis along {name[-2:]}"})
            data[key] = (("probe_e2", "probe_e3"), v,
                         {"units": "sqrt(photons)", "long_name": "probe section P2 in the (e2, e3) plane"})
            continue
        cut = key.rsplit("_", 1)[-1]
        a = int(cut[1]) - 1
        units, what = (("rad", "object phase") if key.startswith("object_phase") else
                       ("1", "strain eps_zz (NaN off the mask)") if key.startswith("strain") else
                       ("1", "object amplitude |rho| (arbitrary scale)"))
        data[key] = (_PREVIEW_SLICE_DIMS[cut], v,
                     {"units": units, "long_name": f"{what}, slice through voxel N//2 of {cut}",
                      "slice_index": object_shape[a] // 2,
                      "slice_at_m": origin[a] + (object_shape[a] // 2) * vox[a]})
    attrs = {"title": "pxm live preview (Bragg ptychography, running)", "layout": LAYOUT_DOC,
             "reconstruction_frame": RECONSTRUCTION_FRAME}
    return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)


def live_recipe(n_epie_iterations: int = 6, n_ml_iterations: int = 0, *, thickness_m: float = 0.5e-6) -> Recipe:
    """Short fixed-slab recipe (no shrink-wrap) for previews and the demo's final result."""
    sched = SupportSchedule(thickness_schedule_m=((0, thickness_m),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=n_epie_iterations, n_ml_iterations=n_ml_iterations, support=sched)


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    """What the live pipeline reconstructs, when, and where it publishes."""

    recipe: Recipe = field(default_factory=live_recipe)
    """Recipe of the final reconstruction (run from scratch on all usable frames, so replay reproduces it)."""
    preview_iterations: int = 2
    """Engine iterations between two looks at the queue while previewing."""
    start_fraction: float = 0.25
    """Start the live engine once this fraction of all frames is usable (see :func:`select_usable`)."""
    min_angles: int = 3
    """...and, for angle-layer data, at least this many complete rocking angles at every position."""
    min_positions: int = 2
    """...and, for complete-position data, at least this many positions with every angle."""
    rebuild_growth: float = 0.25
    """After a failed engine start, retry once the usable frames grew by this fraction (a running
    engine takes every new frame in place, :meth:`analysis.engine.Reconstruction.update_frames`)."""
    preview_interval_s: float = 1.0
    """Least time between two preview writes."""
    publish_previews: bool = True
    """Write previews to Tiled while the scan runs."""
    reconstruct_live: bool = True
    """Run the engine before the stop document (False: assemble only, reconstruct at stop)."""
    final: bool = True
    """Reconstruct and publish the final result after the stop document."""
    resolution: bool = False
    """At stop, also reconstruct two binomial half-data sets and publish their FSC resolutions
    (docs/dataset-format.md, Half-data resolution; three times the final reconstruction time). The PRTF needs K ≥ 6
    more runs from random
    starts: ``pxm reconstruct --prtf K`` on the run after the beamtime."""
    backend: str = "auto"
    """Array backend of the live and final engines: ``"auto"`` (CuPy when a GPU is usable, else NumPy;
    ``PXM_BACKEND`` overrides it), ``"numpy"`` or ``"cupy"`` (:func:`analysis.xp.backend`)."""
    frame_timeout_s: float = 30.0
    """At stop, wait this long for announced frames to appear in the HDF5 file before masking them."""
    position_tolerance_um: float = 0.02
    """Event read-backs farther than this from every pattern position are rejected (reported)."""
    angle_tolerance_fraction: float = 0.25
    """...and farther than this fraction of a rocking step from every pattern angle."""
    strain_remove_ramp: bool = False
    """Remove a linear phase ramp before the strain (False keeps a uniform strain visible)."""
    initial_probe_p2: np.ndarray | None = field(default=None, compare=False, repr=False)
    """(N2, N3) complex start of the probe section P2 (e.g. a known probe); None: the model probe of
    :func:`pxm.reconstruction.initial_probe`."""
    initial_probe_file: Path | None = None
    """Probe file (``pxm probe``'s forward ptychography of a spiral run, or any file ``pxm reconstruct
    --probe-file`` takes) whose probe starts the live and final engines, resampled onto P2 as ``pxm
    reconstruct`` does; the probe source (results provenance) names the file and its spiral run's uid.
    Used when ``initial_probe_p2`` is None."""
    use_na_mask: bool = True
    """Constrain the probe to the seed's KB NA during ePIE (the live pipeline serves the seed's instrument;
    this holds for ``initial_probe_p2`` too). False: no mask, unless ``probe_na_mask_rad`` gives one."""
    probe_na_mask_rad: tuple[float, float] | None = None
    """(V, H) NA of the ePIE probe mask (rad) in place of the KB NA, e.g. for other optics."""
    detector_layout: DetectorLayout = field(default_factory=DetectorLayout)
    """Full-detector chip layout; the ROI's chip gaps are masked."""
    figures_dir: Path | None = None
    """Write PNG figures of the final result here."""
    sample_support: bool = False
    """Resolve the slab thickness and tilt from the start document's ``sample`` as ``pxm reconstruct`` does
    (:func:`analysis.recipes.resolve_sample`; ``recipe``'s schedule scaled to ``sample.thickness_m``, the tilt
    from ``tilt_x_deg``/``tilt_y_deg``). False (default): ``recipe`` as given (``live_recipe``: a fixed 0.5 µm
    slab)."""

    def __post_init__(self) -> None:
        if not 0 < self.start_fraction <= 1 or self.rebuild_growth <= 0:
            raise ValueError("LiveOptions: start_fraction must be in (0, 1] and rebuild_growth > 0")
        if self.preview_iterations < 1 or self.min_angles < 1 or self.min_positions < 1:
            raise ValueError("LiveOptions: preview_iterations, min_angles and min_positions must be >= 1")
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"LiveOptions.backend: {self.backend!r}, expected 'auto', 'numpy' or 'cupy'")


def session_recipe(start: Mapping[str, Any], options: LiveOptions) -> Recipe:
    """The recipe of one run: ``options.recipe``, resolved against ``start["sample"]`` when ``sample_support``.

    Parameters
    ----------
    start
        The run's start document.
    options
        The live options.

    Returns
    -------
    Recipe
        The recipe the live and final engines of this run use (``sources`` say where the support came from).
    """
    if not options.sample_support:
        return options.recipe
    from analysis.recipes import resolve_sample

    return resolve_sample(options.recipe, recipe_name="live", sample=start.get("sample") or {})


# ------------------------------------------------------------------------------------------ frame grid
class FrameGrid:
    """Frames on the (POSITION, ANGLE) grid of a ``raster_rocking_scan`` pattern, in any acquisition order."""

    def __init__(self, positions_um: np.ndarray, angles_deg: np.ndarray, *, position_tolerance_um: float,
                 angle_tolerance_deg: float) -> None:
        self.positions_um = np.asarray(positions_um, float).reshape(-1, 2)
        self.angles_deg = np.asarray(angles_deg, float).ravel()
        self.n_positions, self.n_angles = len(self.positions_um), len(self.angles_deg)
        self.position_tolerance_um, self.angle_tolerance_deg = position_tolerance_um, angle_tolerance_deg
        self.measured = np.zeros((self.n_positions, self.n_angles), bool)
        self.readback_xy_um = np.full((self.n_positions, self.n_angles, 2), np.nan)
        self.readback_theta_deg = np.full((self.n_positions, self.n_angles), np.nan)
        self.frames: np.ndarray | None = None
        self.n_duplicates = 0
        self.rejected: list[dict[str, Any]] = []

    def index(self, x_um: float, y_um: float, theta_deg: float) -> tuple[int, int] | None:
        """(position, angle) of the pattern point nearest to the read-backs, or None beyond tolerance."""
        d = np.hypot(self.positions_um[:, 0] - x_um, self.positions_um[:, 1] - y_um)
        p = int(np.argmin(d))
        da = np.abs(self.angles_deg - theta_deg)
        a = int(np.argmin(da))
        if d[p] > self.position_tolerance_um or da[a] > self.angle_tolerance_deg:
            return None
        return p, a

    def add(self, p: int, a: int, frame: np.ndarray, x_um: float, y_um: float, theta_deg: float) -> bool:
        """Store a frame; a second frame for the same (p, a) is counted as a duplicate and ignored."""
        if self.measured[p, a]:
            self.n_duplicates += 1
            return False
        if self.frames is None:
            self.frames = np.zeros((self.n_positions, self.n_angles) + frame.shape, np.float32)
        self.frames[p, a] = frame
        self.measured[p, a] = True
        self.readback_xy_um[p, a] = (x_um, y_um)
        self.readback_theta_deg[p, a] = theta_deg
        return True

    @property
    def n_measured(self) -> int:
        """Distinct frames stored."""
        return int(self.measured.sum())

    def missing(self) -> list[tuple[int, int]]:
        """(position, angle) pairs with no frame."""
        return [(int(p), int(a)) for p, a in zip(*np.nonzero(~self.measured), strict=True)]

    def stage_xyz_m(self, positions: np.ndarray) -> np.ndarray:
        """(POS, 3) mean read-back of each position (pattern target where none was read), metres."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(self.readback_xy_um[positions], axis=1)
        mean = np.where(np.isfinite(mean), mean, self.positions_um[positions])
        return np.column_stack([mean * 1e-6, np.zeros(len(positions))])

    def angles_read_deg(self) -> np.ndarray:
        """(ANGLE,) mean read-back of each angle (pattern target where none was read)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(self.readback_theta_deg, axis=0)
        return np.where(np.isfinite(m), m, self.angles_deg)


def select_usable(measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, angles, mode) of the largest block the engine can take.

    The engine has one mask per rocking angle, shared by all positions, so a usable block is
    either every position × the angles measured at all of them (``angle_layers``: unmeasured
    angles masked) or the positions measured at every angle × all angles (``complete_positions``).
    """
    n_pos, n_ang = measured.shape
    full_angles = np.nonzero(measured.all(axis=0))[0]
    full_positions = np.nonzero(measured.all(axis=1))[0]
    if len(full_angles) * n_pos >= len(full_positions) * n_ang:
        return np.arange(n_pos), full_angles, "angle_layers"
    return full_positions, np.arange(n_ang), "complete_positions"


# ------------------------------------------------------------------------------------------ document parsing
@dataclass(frozen=True)
class _RunInfo:
    uid: str
    start: Mapping[str, Any]
    geometry: BraggGeometry
    grid_args: dict
    axes: dict
    detector: str


def _run_info(start: Mapping[str, Any], options: LiveOptions) -> _RunInfo:
    pattern = start.get("pattern") or {}
    geometry = BraggGeometry.from_metadata(start["geometry"])
    angles = np.asarray(pattern["angles_deg"], float)
    tol_deg = options.angle_tolerance_fraction * abs(geometry.rocking_step_deg)
    return _RunInfo(uid=start["uid"], start=start, geometry=geometry,
                    grid_args=dict(positions_um=np.asarray(pattern["positions_um"], float), angles_deg=angles,
                                   position_tolerance_um=options.position_tolerance_um, angle_tolerance_deg=tol_deg),
                    axes={"x": "stage_x", "y": "stage_y", "theta": "gonio_theta", **(pattern.get("axes") or {})},
                    detector=(start.get("detectors") or ["mpx"])[0])


class LiveReconstructionCallback(event_model.DocumentRouter):
    """Parse documents and enqueue them for a per-run worker; never blocks the caller.

    ``processed`` is the Tiled ``/processed`` container and ``raw`` the run catalog (read, never written:
    results name their run by ``raw_uid``); either may be None (no publication, e.g. in benchmarks). Errors of previews
    are logged and counted; errors of the final result are raised by :meth:`wait`.
    """

    def __init__(self, *, processed: Any = None, raw: Any = None, options: LiveOptions = LiveOptions()) -> None:
        super().__init__()
        self.processed, self.raw, self.options = processed, raw, options
        self.sessions: list[_RunSession] = []
        self._session: _RunSession | None = None
        self.call_times_s: list[float] = []
        self.parse_errors: list[str] = []

    # every document goes through here: time it, never raise into the RunEngine
    def __call__(self, name: str, doc: dict, validate: bool = False) -> Any:  # noqa: D102
        t0 = time.perf_counter()
        try:
            if hasattr(doc, "to_dict"):
                doc = doc.to_dict()
            return super().__call__(name, doc, validate=validate)
        except Exception as exc:  # a preview pipeline must never stop acquisition
            self.parse_errors.append(f"{name}: {exc!r}")
            log.exception("live callback: %s document could not be parsed", name)
            return None
        finally:
            self.call_times_s.append(time.perf_counter() - t0)

    def start(self, doc: RunStart) -> RunStart:  # noqa: D102
        self._session = None
        if doc.get("plan_name") != BRAGG_PLAN:
            return doc
        sess = _RunSession(_run_info(doc, self.options), self.options, self.processed, self.raw)
        self.sessions.append(sess)
        self._session = sess
        sess.thread.start()
        return doc

    def descriptor(self, doc: EventDescriptor) -> EventDescriptor:  # noqa: D102
        s = self._session
        if s is None or doc.get("name", "primary") != "primary":
            return doc
        keys = doc.get("data_keys", {})
        image = next((k for k, v in keys.items() if str(v.get("external", "")).startswith("STREAM")), None)
        image = image or f"{s.info.detector}_image"
        cfg = (doc.get("configuration") or {}).get(s.info.detector, {}).get("data", {})
        s.q.put(("descriptor", doc["uid"], image, cfg))
        s.descriptors[doc["uid"]] = image
        return doc

    def stream_resource(self, doc: StreamResource) -> StreamResource:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("resource", doc["uid"], doc["uri"], doc.get("parameters", {}).get("dataset",
                                                                                               "/entry/data/data")))
        return doc

    def stream_datum(self, doc: StreamDatum) -> StreamDatum:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("datum", doc["stream_resource"], int(doc["seq_nums"]["start"]),
                                 int(doc["seq_nums"]["stop"]), int(doc["indices"]["start"])))
        return doc

    def event(self, doc: Event) -> Event:  # noqa: D102
        s = self._session
        if s is not None and doc.get("descriptor") in s.descriptors:
            d, ax = doc["data"], s.info.axes
            s.q.put(("events", [int(doc["seq_num"])], [d.get(ax["x"])], [d.get(ax["y"])], [d.get(ax["theta"])]))
        return doc

    def event_page(self, doc: EventPage) -> EventPage:  # noqa: D102
        s = self._session
        if s is not None and doc.get("descriptor") in s.descriptors:
            d, ax = doc["data"], s.info.axes
            n = len(doc["seq_num"])
            s.q.put(("events", list(doc["seq_num"]), d.get(ax["x"], [None] * n), d.get(ax["y"], [None] * n),
                     d.get(ax["theta"], [None] * n)))
        return doc

    def stop(self, doc: RunStop) -> RunStop:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("stop", doc))
            self._session = None
        return doc

    def wait(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Wait for every run's worker; return their summaries; raise the first final-result error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for s in self.sessions:
            s.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if s.thread.is_alive():
                raise TimeoutError(f"live reconstruction of run {s.info.uid} still running after {timeout_s} s")
        for s in self.sessions:
            if s.final_error is not None:
                raise RuntimeError(f"live reconstruction of run {s.info.uid}: final result failed: "
                                   f"{s.final_error}") from s.final_exc
        return [s.summary for s in self.sessions]

    def abort(self, reason: str, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """End every run's live session that is still working: nothing more is published, previews say ``aborted``.

        For a Ctrl-C or SIGTERM while a session computes its final result (e.g. ``pxm demo`` after its
        Bragg scan): the session's preview gets ``status: "aborted"`` with ``reason`` and no final result is
        written, however long the computation still runs (its worker thread is a daemon and publishes
        nothing once aborted). A session whose final result was already published, or that had ended, is
        left as it is.

        Parameters
        ----------
        reason
            Why (put into the preview's metadata and the summary).
        timeout_s
            How long to wait for a publication in progress to end before marking the preview.

        Returns
        -------
        list of dict
            The sessions' summaries; an aborted one has ``status`` ``"aborted"`` and ``preview_key``.
        """
        for s in self.sessions:
            s.cancel(reason, timeout_s=timeout_s)
        return [s.summary for s in self.sessions]


# ------------------------------------------------------------------------------------------ worker
class _RunSession:
    """One run's queue, worker thread, frame grid, engine and publication state."""

    def __init__(self, info: _RunInfo, options: LiveOptions, processed: Any, raw: Any) -> None:
        self.info, self.options, self.processed, self.raw = info, options, processed, raw
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.descriptors: dict[str, str] = {}
        self.grid = FrameGrid(**info.grid_args)
        self.thread = threading.Thread(target=self._run, name=f"pxm-live-{info.uid[:8]}", daemon=True)
        self.resources: dict[str, tuple[str, str]] = {}
        self.files: dict[str, Any] = {}
        self.datums: dict[int, tuple[str, int]] = {}       # seq_num → (resource uid, file index)
        self.events: dict[int, tuple[Any, Any, Any]] = {}   # seq_num → (x_um, y_um, theta_deg)
        self.seen_seq: set[int] = set()
        self.config: dict = {}
        self.mask: np.ndarray | None = None
        self.engine: Any = None
        self.engine_frames = 0
        self.probe0: np.ndarray | None = None
        self.probe_source = ""
        self.recipe = session_recipe(info.start, options)
        self.preview: Any = None
        self.preview_key: str | None = None
        self.preview_nodes: dict[str, Any] = {}
        self.preview_attrs: dict[str, Any] = {}
        self.n_previews = 0
        self.last_preview_t = 0.0
        self.preview_errors: list[str] = []
        self.preview_times_s: list[tuple[float, float]] = []    # (compute, Tiled write) per preview
        self.final_error: str | None = None
        self.final_exc: BaseException | None = None
        self.stop_doc: dict | None = None
        self.timeline: dict[str, float] = {"start_t": time.time()}
        self.layer_preview_t: dict[int, float] = {}
        self.summary: dict[str, Any] = {"uid": info.uid}
        self.final_result: dict[str, Any] | None = None
        self.final_key: str | None = None
        self.cancelled: str | None = None                  # the reason, once LiveReconstructionCallback.abort ran
        self.ended = False                                 # the worker returned (not thread.is_alive(): a join
        # interrupted by a signal's exception marks a running thread stopped in CPython 3.11, bpo-45274's fix)
        self.publish_lock = threading.Lock()              # a publication and an abort never interleave

    def cancel(self, reason: str, *, timeout_s: float) -> None:
        """Stop publishing; mark the preview ``aborted`` unless the session had ended or its result is out."""
        locked = self.publish_lock.acquire(timeout=timeout_s)
        try:
            if self.ended or self.final_key is not None or self.cancelled is not None:
                return
            self.cancelled = reason
            self.summary.update(status="aborted", reason=reason, preview_key=self.preview_key,
                                exit_status=(self.stop_doc or {}).get("exit_status"))
            self._finish_preview("aborted", force=True, reason=reason)
        finally:
            if locked:
                self.publish_lock.release()

    # --- message handling -------------------------------------------------------------------------
    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "descriptor":
            self.config = msg[3]
        elif kind == "resource":
            _, uid, uri, dataset = msg
            self.resources[uid] = (urlparse(uri).path, dataset)
        elif kind == "datum":
            _, res, s0, s1, i0 = msg
            for s in range(s0, s1):
                self.datums[s] = (res, i0 + s - s0)
        elif kind == "events":
            _, seqs, xs, ys, ths = msg
            for s, x, y, th in zip(seqs, xs, ys, ths, strict=False):      # as delivered: never raise here
                if s in self.events or s in self.seen_seq:
                    self.grid.n_duplicates += 1        # the same event delivered twice
                else:
                    self.events[s] = (x, y, th)
        elif kind == "stop":
            self.stop_doc = msg[1]

    def _file(self, res: str) -> Any:
        import h5py

        f = self.files.get(res)
        if f is None:
            path, dataset = self.resources[res]
            fh = h5py.File(path, "r", libver="latest", swmr=True)
            f = self.files[res] = fh[dataset]
        return f

    def _ingest_ready(self) -> int:
        """Read every frame whose event and datum have both arrived and that is in the file."""
        ready = sorted(s for s in self.events if s in self.datums)
        n = 0
        refreshed: set[str] = set()
        for s in ready:
            res, i = self.datums[s]
            if res not in self.resources:
                continue
            ds = self._file(res)
            if res not in refreshed:
                ds.refresh()
                refreshed.add(res)
            if i >= ds.shape[0]:
                continue
            x, y, th = self.events.pop(s)
            del self.datums[s]
            self._place(s, np.asarray(ds[i]), x, y, th)
            n += 1
        return n

    def _place(self, seq: int, frame: np.ndarray, x: Any, y: Any, th: Any) -> None:
        g = self.grid
        if seq in self.seen_seq:
            g.n_duplicates += 1
            return
        self.seen_seq.add(seq)
        if x is None or y is None or th is None:   # no read-backs: the pattern order (docs/start-document.md)
            from pxm.run_export import frame_indices

            ps, angs = frame_indices(self.info.start["pattern"]["order"], np.array([seq - 1]), g.n_positions,
                                     g.n_angles)
            p, a = int(ps[0]), int(angs[0])
            x, y = g.positions_um[p]
            th = g.angles_deg[a]
        else:
            idx = g.index(float(x), float(y), float(th))
            if idx is None:
                g.rejected.append({"seq_num": seq, "x_um": float(x), "y_um": float(y), "theta_deg": float(th)})
                return
            p, a = idx
        if g.add(p, a, frame, float(x), float(y), float(th)) and g.measured[:, a].all():
            self.layer_preview_t.setdefault(a, -time.time())   # negative: layer done, preview pending

    # --- engine -------------------------------------------------------------------------------------
    def _detector_mask(self, shape: tuple[int, int]) -> np.ndarray:
        if self.mask is None:
            from pxm.run_export import roi_from_configuration

            try:
                roi = roi_from_configuration(self.config, self.info.detector, self.info.uid)
                roi.check_inside(self.options.detector_layout)
                self.mask = self.options.detector_layout.mask()[roi.slices].copy()
            except ValueError as exc:
                log.warning("live %s: no detector ROI (%s); no chip-gap mask", self.info.uid[:8], exc)
                self.mask = np.ones(shape, bool)
        return self.mask

    def _scan(self, positions: np.ndarray, angles: np.ndarray) -> BraggScan:
        """The :class:`~analysis.bragg.scan.BraggScan` of the grid's ``positions`` × all angles.

        Angles not in ``angles`` are masked (the engine has one mask per rocking angle, shared by all positions).
        """
        g = self.grid
        geom = self.info.geometry
        assert g.frames is not None, "no frame stored yet"
        frames = g.frames[positions]
        mask2 = self._detector_mask(frames.shape[2:])
        mask = np.broadcast_to(mask2, (g.n_angles,) + mask2.shape).copy()
        unmeasured = np.setdiff1d(np.arange(g.n_angles), angles)
        mask[unmeasured] = False
        return BraggScan(geometry=geom, frames=frames, mask=mask, stage_xyz_m=g.stage_xyz_m(positions),
                         rocking_offsets_deg=g.angles_read_deg() - geom.theta_bragg_deg,
                         sample=self.info.start.get("sample") or {},
                         provenance={"raw_uid": self.info.uid, "plan_name": BRAGG_PLAN, "detector": self.info.detector},
                         source=f"live run {self.info.uid}")

    def _initial_probe(self, recipe: Recipe) -> tuple[np.ndarray, str]:
        """(P2, its source): ``initial_probe_p2``, else ``initial_probe_file``, else the KB model; once per run."""
        from analysis.bragg.pipeline import recipe_geometry
        from pxm.reconstruction import initial_probe

        if self.probe0 is None and self.options.initial_probe_p2 is not None:
            self.probe0 = np.array(self.options.initial_probe_p2, dtype=np.complex128)
            self.probe_source = "given: LiveOptions.initial_probe_p2"
        if self.probe0 is None:
            self.probe0, self.probe_source = initial_probe(recipe_geometry(self.info.geometry, recipe),
                                                           probe_file=self.options.initial_probe_file,
                                                           options=self._reconstruct_options())
        return self.probe0, self.probe_source

    def _reconstruct_options(self) -> Any:
        from pxm.reconstruction import ReconstructOptions

        return ReconstructOptions(progress=False, use_na_mask=self.options.use_na_mask,
                                  probe_na_mask_rad=self.options.probe_na_mask_rad, backend=self.options.backend)

    def _pipeline_options(self) -> PipelineOptions:
        """The final result's :class:`~analysis.bragg.pipeline.PipelineOptions` (the preview engine's too)."""
        from analysis.strain import StrainOptions

        return dataclasses.replace(self._reconstruct_options().pipeline_options(from_file=False),
                                   strain=StrainOptions(remove_ramp=self.options.strain_remove_ramp),
                                   fsc=self.options.resolution, fsc_split_seed=0)

    def _build(self, positions: np.ndarray, angles: np.ndarray, recipe: Recipe, probe: np.ndarray | None,
               frame_valid: np.ndarray | None = None) -> Any:
        """The live (preview) engine: :func:`analysis.bragg.pipeline.build_engine` on the grid's scan."""
        from analysis.bragg.pipeline import build_engine

        p0, _ = self._initial_probe(recipe)
        popts = self._pipeline_options()
        return build_engine(self._scan(positions, angles), recipe, p0 if probe is None else probe,
                            probe_na_rad=popts.probe_na_rad, backend_name=popts.backend, frame_valid=frame_valid,
                            execution=popts.execution)

    def _maybe_rebuild(self) -> None:
        """Start the engine once enough frames are usable; afterwards feed new frames in place.

        The engine holds every pattern position and angle from the start; frames not yet
        measured are invalid (left free, seed Eq 13 with ω = 0) and enter through
        :meth:`analysis.engine.Reconstruction.update_frames`, so object and probe carry over.
        """
        o, g = self.options, self.grid
        if self.engine is not None:
            if g.n_measured > self.engine_frames:
                self.engine.update_frames(g.frames, frame_valid=g.measured.copy())
                self.engine_frames = g.n_measured
            return
        positions, angles, mode = select_usable(g.measured)
        n_usable = len(positions) * len(angles)
        total = g.n_positions * g.n_angles
        enough = (n_usable >= o.start_fraction * total
                  and (len(angles) >= o.min_angles if mode == "angle_layers" else len(positions) >= o.min_positions))
        if not enough or n_usable < (1 + o.rebuild_growth) * self.engine_frames:
            return
        try:
            self.engine = self._build(np.arange(g.n_positions), np.arange(g.n_angles), self.recipe, None,
                                      frame_valid=g.measured.copy())
        except ValueError as exc:
            log.warning("live %s: engine not started on %d frames: %s", self.info.uid[:8], n_usable, exc)
            self.engine_frames = n_usable
            return
        self.engine_frames = g.n_measured
        self.summary.setdefault("live_start_frames", n_usable)
        self.summary.setdefault("live_start_t", time.time() - self.timeline["start_t"])
        self.summary["live_mode"] = mode

    # --- publication -----------------------------------------------------------------------------
    def _preview_arrays(self, res: Any, illuminated: np.ndarray) -> dict[str, np.ndarray]:
        from analysis.strain import StrainOptions, strain_from_geometry

        obj = res.object
        c = [n // 2 for n in obj.shape]
        out: dict[str, np.ndarray] = {}
        for ax, name in enumerate(("e1", "e2", "e3")):
            sl = np.take(obj, c[ax], axis=ax)
            out[f"object_amplitude_mid_{name}"] = np.abs(sl).astype(np.float32)
            out[f"object_phase_mid_{name}"] = np.angle(sl).astype(np.float32)
        out["probe"] = res.probe.astype(np.complex64)
        maps = strain_from_geometry(obj, res.geometry, support=res.support, amplitude_reference=illuminated,
                                    options=StrainOptions(remove_ramp=self.options.strain_remove_ramp))
        out["strain_zz_mid_e2"] = np.take(np.asarray(maps.eps_zz), c[1], axis=1).astype(np.float32)
        return out

    def _publish_preview(self, force: bool = False) -> None:
        if (self.processed is None or not self.options.publish_previews or self.engine is None
                or self.cancelled is not None):
            return
        now = time.time()
        if not force and now - self.last_preview_t < self.options.preview_interval_s:
            return
        self.last_preview_t = now
        try:
            t0 = time.perf_counter()
            res = self.engine.result()
            arrays = self._preview_arrays(res, self.engine.illuminated_support())
            t1 = time.perf_counter()
            with self.publish_lock:       # an abort marks the preview between two writes, never during one
                if self.cancelled is not None:
                    return
                md = {"raw_uid": self.info.uid, "kind": "live-preview", "status": "running",
                      "iteration": int(res.iterations), "n_frames_used": int(self.engine_frames),
                      "n_frames_measured": self.grid.n_measured,
                      "n_frames_total": self.grid.n_positions * self.grid.n_angles,
                      "mode": self.summary.get("live_mode"), "cost": float(res.costs[-1]) if res.costs else None,
                      "costs": [float(c) for c in res.costs], "n_previews": self.n_previews + 1, "updated_at": now}
                md.update(raw_key=f"raw/{self.info.uid}", voxel_size_m=[float(v) for v in res.geometry.voxel_size_m])
                if self.preview is None:   # the dataset (dims, units, coordinates) once; later only the arrays
                    from pxm.publication import publish_dataset

                    placement = res.placement if getattr(res, "origin_vox", None) is not None else None
                    origin_e = (None if placement is None
                                else tuple(np.linalg.solve(placement.axes_lab.T, placement.origin_m)))
                    ds = preview_dataset(arrays, object_shape=tuple(res.object.shape),
                                         voxel_size_m=tuple(res.geometry.voxel_size_m), origin_e_m=origin_e)
                    self.preview_attrs = dict(ds.attrs)
                    self.preview_key = _next_key(self.processed, f"{self.info.uid[:8]}-live-")
                    clients: dict[str, Any] = {}
                    self.preview = publish_dataset(self.processed, self.preview_key, ds, metadata=md,
                                                   specs=[(PREVIEW_SPEC, PREVIEW_SPEC_VERSION)], array_clients=clients)
                    self.preview_nodes = {k: clients[k] for k in arrays}
                    arrays = {}
                md["attrs"] = self.preview_attrs
                for k, v in arrays.items():   # one request per array: the array clients are kept
                    v = np.ascontiguousarray(v)
                    node = self.preview_nodes.get(k)
                    if node is not None and tuple(node.shape) == v.shape:
                        node.write(v)
                    else:
                        dims, meta = (None, None) if node is None else (node.dims, dict(node.metadata))
                        if node is not None:   # a new shape: same dims and units, new extent
                            self.preview.delete_contents(k, external_only=False)
                        self.preview_nodes[k] = self.preview.write_array(v, key=k, dims=dims, metadata=meta,
                                                                         specs=None if node is None else node.specs)
                self.preview.update_metadata(metadata=md)
                self.n_previews += 1
                self.preview_times_s.append((t1 - t0, time.perf_counter() - t1))
                for a, t in list(self.layer_preview_t.items()):
                    if t < 0 and self.grid.measured[:, a].all() and a in set(_angles_in_engine(self)):
                        self.layer_preview_t[a] = time.time() + t      # delay from layer end to preview
        except Exception as exc:  # previews may fail; acquisition and the final result go on
            self.preview_errors.append(repr(exc))
            log.warning("live %s: preview not written: %r", self.info.uid[:8], exc)

    def _finish_preview(self, status: str, *, force: bool = False, **extra: Any) -> None:
        if self.preview is None or (self.cancelled is not None and not force):   # aborted: its status stays
            return
        try:
            self.preview.update_metadata(metadata={"status": status, "final_key": self.final_key, **extra})
        except Exception as exc:
            self.preview_errors.append(repr(exc))

    # --- final -----------------------------------------------------------------------------------
    def _final(self) -> None:
        """The final result: :func:`analysis.bragg.reconstruct` from scratch on every usable frame, then publish."""
        g = self.grid
        missing = g.missing()
        positions, angles, mode = select_usable(g.measured)
        if len(positions) == 0 or len(angles) == 0:
            raise RuntimeError(f"run {self.info.uid}: no complete block of frames to reconstruct "
                               f"({g.n_measured} of {g.n_positions * g.n_angles} frames)")
        t0 = time.perf_counter()
        recipe = self.recipe
        probe, probe_source = self._initial_probe(recipe)
        outcome = reconstruct(self._scan(positions, angles), recipe, probe, options=self._pipeline_options(),
                              recipe_name="live", probe_source=probe_source)
        postprocessing_errors = dict(outcome.postprocessing_errors)
        if "strain" in postprocessing_errors:   # the object, probe and metrics are published even when strain fails
            log.warning("live %s: strain maps failed: %s; object, probe and metrics are kept", self.info.uid[:8],
                        postprocessing_errors["strain"])
        t_fsc = outcome.timings_s.get("fsc_s", 0.0)
        timings = {**outcome.timings_s, "reconstruction_s": time.perf_counter() - t0 - t_fsc,
                   **({"resolution_s": t_fsc} if self.options.resolution else {})}
        excluded_pos = sorted(set(range(g.n_positions)) - set(int(p) for p in positions))
        masked_ang = sorted(set(range(g.n_angles)) - set(int(a) for a in angles))
        metrics = {**outcome.metrics, "n_frames_measured": g.n_measured,
                   "n_frames_used": int(len(positions) * len(angles)), "n_duplicates": g.n_duplicates,
                   "n_missing": len(missing), "n_rejected": len(g.rejected)}
        metrics.setdefault("valid_strain_voxels", 0)
        if self.options.figures_dir is not None:
            figures = save_outcome_figures(outcome, Path(self.options.figures_dir), postprocessing_errors,
                                           prefix="live_", title_prefix="live: ", convergence=True)
            self.summary["figures"] = [str(p) for p in figures]
        self.final_result = {**outcome.arrays(), "metrics": metrics, "timings_s": timings,
                             "strain_maps": outcome.strain, "geometry": outcome.geometry,
                             "stage_xyz_m": g.stage_xyz_m(positions), "outcome": outcome}
        self.summary.update(metrics=metrics, missing_frames=missing, excluded_positions=excluded_pos,
                            masked_angles=masked_ang, final_mode=mode, rejected=list(g.rejected),
                            postprocessing_errors=postprocessing_errors)
        if self.processed is None:
            return
        with self.publish_lock:
            if self.cancelled is None:
                self._publish_final(outcome, missing, excluded_pos, masked_ang, mode, metrics, timings,
                                    postprocessing_errors)

    def _publish_final(self, outcome: Any, missing: list[tuple[int, int]], excluded_pos: list[int],
                       masked_ang: list[int], mode: str, metrics: dict[str, Any], timings: dict[str, float],
                       postprocessing_errors: dict[str, str]) -> None:
        """Write the final result to ``/processed`` (called with ``publish_lock`` held, not after an abort)."""
        from pxm.publication import publish_outcome

        g = self.grid
        raw_run = None
        if self.raw is not None:
            try:
                raw_run = self.raw[self.info.uid]
            except KeyError:
                log.warning("live %s: raw run not in Tiled; the result names it by raw_uid only", self.info.uid[:8])
        extra = {"live": True, "preview_key": self.preview_key, "missing_frames": [list(m) for m in missing],
                 "excluded_positions": excluded_pos, "masked_angles": masked_ang, "final_mode": mode,
                 "n_duplicates": g.n_duplicates, "rejected_events": list(g.rejected),
                 "exit_status": (self.stop_doc or {}).get("exit_status"), "device": outcome.device,
                 "partial": bool(missing)}   # e.g. a run ended by `stop`: the result of the frames that arrived
        node = publish_outcome(self.processed, self.info.uid, outcome, raw_run=raw_run,
                               algorithm="pxm live Bragg ptychography (ePIE + ML)", metrics=metrics,
                               timings_s=timings, postprocessing_errors=postprocessing_errors, extra_metadata=extra)
        self.final_key = node.item["id"] if hasattr(node, "item") else None
        self.summary["final_key"] = self.final_key

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.ended = True
            for f in self.files.values():
                try:
                    f.file.close()
                except Exception:
                    pass

    def _loop(self) -> None:
        o = self.options
        while self.stop_doc is None and self.cancelled is None:
            try:
                msg = self.q.get(timeout=0.05 if self.engine is None else 0.0)
                self._handle(msg)
                while True:
                    self._handle(self.q.get_nowait())
            except queue.Empty:
                pass
            try:
                self._ingest_ready()
                if o.reconstruct_live:
                    self._maybe_rebuild()
                    if self.engine is not None:
                        # a rocking layer just completed: one sweep with it, then publish at once
                        layer_due = any(t < 0 for t in self.layer_preview_t.values())
                        self.engine.iterate(1 if layer_due else o.preview_iterations)
                        self._publish_preview(force=layer_due)
            except Exception as exc:   # live previews are best effort
                self.preview_errors.append(repr(exc))
                log.warning("live %s: %s", self.info.uid[:8], traceback.format_exc())
                self.engine = None
        if self.cancelled is not None:
            return
        self.timeline["stop_received_t"] = time.time()
        while True:   # documents that arrived with or after stop (replayed stream_datum comes late)
            try:
                self._handle(self.q.get_nowait())
            except queue.Empty:
                break
        deadline = time.monotonic() + o.frame_timeout_s
        while self.events and time.monotonic() < deadline:
            self._ingest_ready()
            if self.events and not any(s in self.datums for s in self.events):
                break
            if self.events:
                time.sleep(0.05)
        self.summary.update(missing_frames=self.grid.missing(), n_duplicates=self.grid.n_duplicates,
                            rejected=list(self.grid.rejected), n_frames_measured=self.grid.n_measured)
        if self.engine is not None:
            self._publish_preview(force=True)
        stop = self.stop_doc or {}
        if stop.get("exit_status", "success") != "success":   # aborted or failed: no final result from it
            self.summary.update(status="aborted", exit_status=stop.get("exit_status"), reason=stop.get("reason"),
                                preview_key=self.preview_key)
            self._finish_preview("aborted", exit_status=stop.get("exit_status"), reason=stop.get("reason"))
            return
        if not o.final:
            self._finish_preview("stopped")
            return
        try:
            self._final()
            if self.cancelled is not None:
                return
            self._finish_preview("complete")
            self.summary["final_delay_s"] = time.time() - self.timeline["stop_received_t"]
        except Exception as exc:   # the final result must not be lost silently: wait() raises it
            self.final_error, self.final_exc = f"{type(exc).__name__}: {exc}", exc
            log.error("live %s: final result failed:\n%s", self.info.uid[:8], traceback.format_exc())
            self._finish_preview("failed")


def _angles_in_engine(s: _RunSession) -> list[int]:
    _, angles, _ = select_usable(s.grid.measured)
    return [int(a) for a in angles]


def _next_key(container: Any, prefix: str) -> str:
    nums = [int(str(k)[len(prefix):]) for k in container
            if str(k).startswith(prefix) and str(k)[len(prefix):].isdigit()]
    return f"{prefix}{max(nums, default=0) + 1:03d}"


# ------------------------------------------------------------------------------------------ replay
def jsonl_documents(path: str | Path) -> Iterable[tuple[str, dict]]:
    """(name, doc) pairs of a ``<uid>.jsonl`` file written by :func:`pxm.runengine.jsonl_router`."""
    import json

    with open(path) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                yield d["name"], d["doc"]


def tiled_documents(run: Any) -> Iterable[tuple[str, dict]]:
    """(name, doc) pairs of a Tiled BlueskyRun (needs the server's json-seq exporter)."""
    for name, doc in run.documents():
        yield name, doc.to_dict() if hasattr(doc, "to_dict") else doc


REPLAY_TIMEOUT_S = 3600.0
"""``pxm replay``'s default limit on waiting for the final results (``--timeout``)."""
NO_STOP_REASON = "no stop document in the recording: the scan process was cut off"
"""The reason replay gives a run that has a start but no stop document."""


def replay_documents(documents: Iterable[tuple[str, dict]], callback: LiveReconstructionCallback,
                     *, timeout_s: float | None = None) -> list[dict[str, Any]]:
    """Push recorded documents through ``callback`` and wait for its final results.

    A run whose recording ends without a stop document (a scan process killed mid-scan) gets one with
    ``exit_status="fail"`` and :data:`NO_STOP_REASON`, so its live session ends, marked aborted,
    instead of waiting for ever.
    """
    import uuid

    def close(run_start: str) -> None:
        callback("stop", {"uid": str(uuid.uuid4()), "run_start": run_start, "time": time.time(),
                          "exit_status": "fail", "reason": NO_STOP_REASON, "num_events": {}})

    open_run: str | None = None
    for name, doc in documents:
        if name == "start":
            if open_run is not None:     # the previous run never stopped
                close(open_run)
            open_run = str(doc["uid"])
        elif name == "stop":
            open_run = None
        callback(name, doc)
    if open_run is not None:
        close(open_run)
    return callback.wait(timeout_s)
