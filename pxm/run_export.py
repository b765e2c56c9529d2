"""Tiled Bragg-ptychography run → :class:`analysis.dataset.BraggDataset` (``pxm export``).

A ``raster_rocking_scan`` run holds everything the reconstruction needs
(``docs/start-document.md``): the geometry (``start["geometry"]``), the trajectory
(``start["pattern"]`` and the event columns of ``primary``), the sample, and the detector
ROI in the detector's configuration. Frames come back as (FRAME, ROW, COL) counts and are
regrouped into the grid layout (POSITION, ANGLE, ROW, COL); a partial scan becomes the
flat layout with per-frame indices.

The detector mask holds the Maxipix chip gaps that fall inside the ROI; pixels that
merely counted zero are live (a dark pixel is data, not a defect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset import BraggDataset
from analysis.geometry import BraggGeometry, DetectorLayout, Roi

__all__ = ["ExportOptions", "check_run_whole", "find_run", "frame_indices", "roi_from_configuration",
           "run_to_dataset", "export_run"]

BRAGG_PLAN = "raster_rocking_scan"


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How a run is turned into a dataset."""

    detector_layout: DetectorLayout = field(default_factory=DetectorLayout)
    """Chip layout of the full detector (default Maxipix 2×2 with 4-px gaps); the ROI is cut from it."""
    stream: str = "primary"
    """Event stream holding the frames."""
    use_event_positions: bool = True
    """Stage positions and angles from the event columns (read-backs); False uses the pattern's targets."""
    allow_partial: bool = False
    """Export a partial run (no stop document, a stop other than success, frames missing:
    :class:`pxm.catalog.RunCounts`) with the frames it has; by default such a run is refused."""


def _missing(key: str, where: str, hint: str = "") -> ValueError:
    return ValueError(f"run {where}: metadata key {key!r} is missing{'; ' + hint if hint else ''}")


def _need(d: dict[str, Any], key: str, path: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d or d[key] is None:
        raise _missing(f"{path}{key}", where)
    return d[key]


def find_run(raw: Any, uid: str) -> Any:
    """``raw[uid]`` or a ValueError naming the uid (unknown runs, partial uids that do not match)."""
    try:
        return raw[uid]
    except KeyError:
        raise ValueError(f"run {uid!r} is not in the raw catalog; list runs with `pxm runs`") from None


def check_run_whole(run: Any, where: str) -> None:
    """Raise ValueError (one line: how many frames are missing, and the ways on) unless ``run`` is complete.

    Complete: a stop document with ``exit_status`` success, every planned frame present, no duplicated
    event rows (:func:`pxm.catalog.tiled_run_counts`).
    """
    from pxm.catalog import tiled_run_counts

    counts = tiled_run_counts(run)
    status = counts.status()
    if status == "complete":
        return
    have = counts.primary_frames
    raise ValueError(
        f"run {where} is not complete: {counts.missing_frames} of {counts.expected_frames} frames are missing "
        f"({status}); if the frames are on disk, `pxm recover` puts them into Tiled, or pass --allow-partial "
        f"to use the {have} frames there are")


def frame_indices(order: str, k: np.ndarray, n_pos: int, n_ang: int) -> tuple[np.ndarray, np.ndarray]:
    """(position, angle) indices of events ``k`` (0-based) of a ``raster_rocking_scan`` in pattern ``order``."""
    k = np.asarray(k)
    if order == "angle_outer":
        return k % n_pos, k // n_pos
    if order == "raster_outer":
        return k // n_ang, k % n_ang
    raise ValueError(f"start.pattern.order is {order!r}, expected 'angle_outer' or 'raster_outer'")


def _roi(stream_md: dict[str, Any], detector: str, where: str) -> Roi:
    cfg = stream_md.get("configuration", {}).get(detector, {}).get("data", {})
    return roi_from_configuration(cfg, detector, where)


def roi_from_configuration(cfg: dict[str, Any], detector: str, where: str) -> Roi:
    """The detector ROI from a descriptor's ``configuration[detector]["data"]`` (keys ``<det>_roi_*``)."""
    vals = {}
    for name in ("row0_px", "col0_px", "n_rows_px", "n_cols_px"):
        key = f"{detector}_roi_{name}"
        if key not in cfg:
            raise _missing(f"configuration.{detector}.data.{key}", where,
                           "the detector ROI is needed to place the chip gaps")
        vals[name] = int(cfg[key])
    return Roi(**vals)


def _column(stream: Any, key: str, n: int, where: str) -> np.ndarray | None:
    if key not in stream:
        return None
    a = np.asarray(stream[key][:], float).ravel()
    if a.shape != (n,):
        raise ValueError(f"run {where}: event column {key!r} has {a.size} values for {n} frames")
    return a


def run_to_dataset(run: Any, *, tiled_uri: str | None = None,
                   options: ExportOptions = ExportOptions()) -> BraggDataset:
    """Rebuild frames, angles, positions, mask, geometry, sample and provenance of a BP run."""
    md = run.metadata
    start = md.get("start")
    if not isinstance(start, dict):
        raise ValueError("run: metadata key 'start' is missing; is this a Bluesky run?")
    uid = str(start.get("uid", "?"))
    where = uid
    plan = start.get("plan_name")
    if plan != BRAGG_PLAN:
        raise ValueError(f"run {where}: plan_name is {plan!r}, expected {BRAGG_PLAN!r} (a Bragg-ptychography scan)")
    geometry_md = _need(start, "geometry", "start.", where)
    try:
        geometry = BraggGeometry.from_metadata(geometry_md)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"run {where}: start.geometry: {exc}") from exc
    pattern = _need(start, "pattern", "start.", where)
    positions_um = np.asarray(_need(pattern, "positions_um", "start.pattern.", where), float)
    angles_deg = np.asarray(_need(pattern, "angles_deg", "start.pattern.", where), float)
    order = _need(pattern, "order", "start.pattern.", where)
    axes = pattern.get("axes", {})
    sample = dict(_need(start, "sample", "start.", where))
    detectors = _need(start, "detectors", "start.", where)
    det = detectors[0]
    if options.stream not in run:
        raise ValueError(f"run {where}: stream {options.stream!r} is missing (the scan recorded no events)")
    stream = run[options.stream]
    image_key = f"{det}_image"
    if image_key not in stream:
        raise ValueError(f"run {where}: {options.stream}.{image_key} is missing; no detector frames in this run")
    if not options.allow_partial:
        check_run_whole(run, where)
    frames = np.asarray(stream[image_key][:])
    if frames.ndim != 3:
        raise ValueError(f"run {where}: {image_key} has shape {frames.shape}, expected (frames, rows, cols)")
    n = frames.shape[0]
    n_pos, n_ang = len(positions_um), len(angles_deg)
    if n_ang != geometry.n_angles:
        raise ValueError(f"run {where}: start.pattern.angles_deg has {n_ang} angles but geometry.n_angles = "
                         f"{geometry.n_angles}")
    try:
        pos_idx, ang_idx = frame_indices(order, np.arange(n), n_pos, n_ang)
    except ValueError as exc:
        raise ValueError(f"run {where}: {exc}") from None
    if n > n_pos * n_ang:
        raise ValueError(f"run {where}: {n} frames but the pattern has only {n_pos} × {n_ang}")

    x_um = y_um = th = None
    if options.use_event_positions:
        x_um = _column(stream, axes.get("x", "stage_x"), n, where)
        y_um = _column(stream, axes.get("y", "stage_y"), n, where)
        th = _column(stream, axes.get("theta", "gonio_theta"), n, where)
    if x_um is None or y_um is None:
        x_um, y_um = positions_um[pos_idx, 0], positions_um[pos_idx, 1]
    if th is None:
        th = angles_deg[ang_idx]
    stage_m = np.stack([x_um * 1e-6, y_um * 1e-6, np.zeros(n)], axis=1)

    stream_md = dict(stream.metadata)
    roi = _roi(stream_md, det, where)
    if roi.shape != frames.shape[1:]:
        raise ValueError(f"run {where}: detector ROI {roi.shape} does not match the frames {frames.shape[1:]}")
    layout = options.detector_layout
    try:
        roi.check_inside(layout)
    except ValueError as exc:
        raise ValueError(f"run {where}: {exc}") from exc
    mask = layout.mask()[roi.slices].copy()

    provenance: dict[str, Any] = {
        "raw_uid": uid, "tiled_uri": tiled_uri or getattr(run, "uri", None), "scan_id": start.get("scan_id"),
        "plan_name": plan, "pattern_order": order, "exporter": "pxm.run_export.run_to_dataset",
        "detector": det, "roi_px": [roi.row0_px, roi.col0_px, roi.n_rows_px, roi.n_cols_px],
        "exposure_s": start.get("exposure_s"), "exit_status": (md.get("stop") or {}).get("exit_status"),
    }
    provenance = {k: v for k, v in provenance.items() if v is not None}
    if n == n_pos * n_ang:
        grid = np.zeros((n_pos, n_ang) + frames.shape[1:], frames.dtype)
        ang = np.zeros((n_pos, n_ang))
        pos = np.zeros((n_pos, n_ang, 3))
        grid[pos_idx, ang_idx] = frames
        ang[pos_idx, ang_idx] = th
        pos[pos_idx, ang_idx] = stage_m
        return BraggDataset(frames=grid, rocking_angle_deg=ang, stage_position_m=pos, detector_mask=mask,
                            geometry=geometry, sample=sample, provenance=provenance)
    return BraggDataset(frames=frames, rocking_angle_deg=th, stage_position_m=stage_m, detector_mask=mask,
                        geometry=geometry, position_index=pos_idx.astype(np.int64),
                        angle_index=ang_idx.astype(np.int64), sample=sample,
                        provenance={**provenance, "partial": True})


def export_run(tiled_uri: str, api_key: str, uid: str, out_path: str | Path, *,
               options: ExportOptions = ExportOptions()) -> BraggDataset:
    """Connect, export run ``uid`` from ``/raw`` and write it with :func:`analysis.dataset.write_dataset`."""
    from analysis.dataset import write_dataset
    from pxm.catalog import connect, ensure_layout

    raw, _ = ensure_layout(connect(tiled_uri, api_key))
    ds = run_to_dataset(find_run(raw, uid), tiled_uri=tiled_uri, options=options)
    write_dataset(out_path, ds)
    return ds
