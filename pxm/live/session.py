"""One run's live session: frames in, previews while it runs, the final result at stop."""

# Why this module is long: the live session of one run (_RunSession) is one state machine fed by documents from one
# thread and a worker: its frames, engine, previews and final result share one lock.

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from analysis.bragg.engine import Recipe
from analysis.bragg.outcome import save_outcome_figures
from analysis.bragg.pipeline import PipelineOptions, reconstruct
from analysis.bragg.scan import BraggScan
from analysis.geometry import BraggGeometry
from pxm.live.frames import FrameGrid, select_usable
from pxm.live.options import BRAGG_PLAN, LiveOptions, session_recipe
from pxm.live.previews import PREVIEW_SPEC, PREVIEW_SPEC_VERSION, _next_key, preview_dataset

log = logging.getLogger(__name__)


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
                            probe_na_rad=popts.probe_na_rad, frame_valid=frame_valid,
                            execution=popts.execution)

    def _maybe_rebuild(self) -> None:
        """Start the engine once enough frames are usable; afterwards feed new frames in place.

        The engine holds every pattern position and angle from the start; frames not yet
        measured are invalid (left free, seed Eq 13 with ω = 0) and enter through
        :meth:`analysis.bragg.engine.Reconstruction.update_frames`, so object and probe carry over.
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
