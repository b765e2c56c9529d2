"""Re-ingest runs into Tiled from the JSONL documents after an outage (``pxm recover``).

Every run's documents go two ways (:mod:`pxm.runengine`): TiledWriter into ``/raw`` and an exact copy in
``DATA_DIR/documents/<uid>.jsonl``; the frames stay in the detector's HDF5 files, which the JSONL's
StreamResource documents name. When the Tiled server was down (or killed) during a scan, ``/raw`` holds
part of a run, or none of it, while the disk holds all of it. When the scan process itself was killed, the
disk holds every frame announced up to then but no stop document, and the HDF5 file was never closed.

:func:`recover_runs` compares each JSONL copy with ``/raw`` and

* leaves a run alone when Tiled already holds it whole (same events, same frames, a stop document, no
  duplicated event rows) — so running it twice changes nothing;
* adds a run that is missing, and rebuilds a partial one: the partial node is deleted (the HDF5 files are
  external assets: Tiled deletes its records of them, never the files) and the documents are replayed
  through a fresh ``TiledWriter``; metadata added to the run after the scan (``analysis`` back-links of
  published results) is put back;
* gives a run without a stop document on disk (its scan process died) a stop document with
  ``exit_status`` ``"fail"`` and a ``reason`` saying it was recovered; its detector files are closed
  (rewritten so plain h5py opens them) with ``/entry/pxm/complete`` left as the detector wrote it (0).

Runs whose JSONL changed less than ``settle_s`` ago are skipped: their scan may still be running.
"""

# Why this module is long: `pxm recover` is one comparison of the JSONL copies with /raw and its repairs; every case
# (partial run, missing run, killed scan) shares the same document reading.

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import h5py

from devices.maxipix import COMPLETE_PATH
from pxm.catalog import RunCounts, tiled_run_counts

__all__ = ["RecoverOptions", "DiskRun", "RecoverResult", "check_documents_dir", "read_disk_run", "read_frames_so_far",
           "repair_detector_file", "recovered_stop_document", "recover_run", "recover_runs"]

RECOVERED_BY = "pxm recover"
HDF5_MIMETYPE = "application/x-hdf5"
KEPT_METADATA_SKIP = ("start", "stop", "notes")
"""Run metadata that the replay writes itself; every other key (e.g. ``analysis``) is put back after it."""


@dataclass(frozen=True, kw_only=True)
class RecoverOptions:
    """How ``pxm recover`` treats the runs it finds on disk."""

    settle_s: float = 30.0
    """Skip runs whose JSONL changed less than this many seconds ago (their scan may still be running)."""
    batch_size: int = 1000
    """Events per TiledWriter write during the replay (large: a recovered run is written in few requests)."""
    dry_run: bool = False
    """Only report what would be done."""

    def __post_init__(self) -> None:
        if self.settle_s < 0:
            raise ValueError(f"--settle-s must be >= 0 seconds, got {self.settle_s}")
        if self.batch_size < 1:
            raise ValueError(f"RecoverOptions.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DiskRun:
    """One run as its JSONL copy records it."""

    uid: str
    path: Path
    documents: tuple[tuple[str, dict[str, Any]], ...]
    events: dict[str, int]
    """Event rows per stream name."""
    frames: dict[str, int]
    """Frames per ``stream/data_key`` of external (detector) data, from the StreamDatum ranges."""
    files: tuple[Path, ...]
    """Detector HDF5 files named by the StreamResource documents."""
    frames_needed: dict[tuple[Path, str], int]
    """Frames each (HDF5 file, dataset) must hold: the highest StreamDatum index that refers to it."""
    stop: dict[str, Any] | None
    age_s: float
    """Seconds since the JSONL was last written."""
    dropped_lines: int = 0
    """Lines that could not be parsed (a line cut short when the writer was killed)."""
    unmatched_frames: int = 0
    """Frames announced after the last event of their stream by a scan that died (left out of the run)."""


@dataclass(frozen=True)
class RecoverResult:
    """What :func:`recover_run` did with one run."""

    uid: str
    action: str
    """``ok`` (nothing to do), ``added``, ``completed``, ``skipped`` or ``failed``; ``would add`` /
    ``would complete`` in a dry run."""
    detail: str
    counts: RunCounts | None = None
    """The run as Tiled holds it after the action (None when Tiled was not changed or read)."""
    repaired_files: tuple[Path, ...] = field(default=())

    def line(self) -> str:
        """One line for the terminal."""
        return f"{self.uid}  {self.action}: {self.detail}"


def _file_path(uri: str) -> Path | None:
    parts = urlsplit(uri)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def read_frames_so_far(array: Any) -> Any:
    """The frames of a run's detector array (a Tiled ``ArrayClient``), also while its scan still writes.

    A plain ``array.read()`` or ``array[:]`` asks the server for the *whole* array and sends the shape the
    client knows; while the scan runs, TiledWriter grows the array's shape in the catalog with every
    frame (``PUT /data_source … patch_shape``), so between the client's metadata request and its data
    request the server may serve one frame more than the client expects and answers HTTP 500 ("The shape
    expected from the structure … does not match the actual data shape"; Tiled 0.2.20), which the client
    retries in vain. Asking for the explicit slice ``[0:n]`` of the ``n`` frames the client knows gets
    exactly those frames (the detector writes and flushes each frame before announcing it, so the file
    always holds them). docs/reliability.md, "Many writers".

    Parameters
    ----------
    array
        ``run[stream][key]`` of an external detector array, e.g. ``raw[uid]["primary"]["mpx_image"]``.

    Returns
    -------
    numpy.ndarray
        (n_frames, rows, cols), n_frames as announced when ``array`` was fetched (0 frames: an empty array).
    """
    import numpy as np

    n = int(array.shape[0])
    if n == 0:
        return np.zeros(tuple(array.shape), dtype=array.dtype)
    return np.asarray(array.read(slice=(slice(0, n),)))


def read_disk_run(path: Path) -> DiskRun:
    """Parse ``<uid>.jsonl`` (lines ``{"name": ..., "doc": ...}``) and count its events and frames.

    Raises
    ------
    ValueError
        The file holds no start document (not a pxm/bluesky JSONL copy).
    """
    path = Path(path)
    docs: list[tuple[str, dict[str, Any]]] = []
    dropped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                docs.append((str(item["name"]), dict(item["doc"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped += 1
    if not docs or docs[0][0] != "start":
        raise ValueError(f"{path}: no start document on the first line; not a run's JSONL copy")
    uid = str(docs[0][1]["uid"])
    trimmed = 0
    if not any(name == "stop" for name, _ in docs):
        docs, trimmed = _drop_unmatched_frames(docs)
    stream_of: dict[str, str] = {}
    key_of: dict[str, str] = {}
    events: dict[str, int] = defaultdict(int)
    frames: dict[str, int] = defaultdict(int)
    files: list[Path] = []
    resource_of: dict[str, tuple[Path, str]] = {}
    needed: dict[tuple[Path, str], int] = {}
    stop = None
    for name, doc in docs:
        if name == "descriptor":
            stream_of[doc["uid"]] = doc.get("name", "primary")
            events.setdefault(stream_of[doc["uid"]], 0)
        elif name == "event":
            events[stream_of.get(doc["descriptor"], "?")] += 1
        elif name == "event_page":
            events[stream_of.get(doc["descriptor"], "?")] += len(doc.get("seq_num", []))
        elif name == "stream_resource":
            key_of[doc["uid"]] = doc["data_key"]
            p = _file_path(doc.get("uri", ""))
            if p is not None and doc.get("mimetype") == HDF5_MIMETYPE:
                resource_of[doc["uid"]] = (p, str(doc.get("parameters", {}).get("dataset", "")))
                if p not in files:
                    files.append(p)
        elif name == "stream_datum":
            n = int(doc["indices"]["stop"]) - int(doc["indices"]["start"])
            if doc["stream_resource"] in resource_of:
                where = resource_of[doc["stream_resource"]]
                needed[where] = max(needed.get(where, 0), int(doc["indices"]["stop"]))
            frames[f"{stream_of.get(doc['descriptor'], '?')}/{key_of.get(doc['stream_resource'], '?')}"] += n
        elif name == "stop":
            stop = doc
    return DiskRun(uid=uid, path=path, documents=tuple(docs), events=dict(events), frames=dict(frames),
                   files=tuple(files), frames_needed=needed, stop=stop,
                   age_s=max(time.time() - path.stat().st_mtime, 0.0),
                   dropped_lines=dropped, unmatched_frames=trimmed)


def _drop_unmatched_frames(docs: list[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """Drop StreamDatum documents written after the last event of their stream (the scan died in between).

    Bluesky announces a point's frames (StreamDatum) just before its event; a process killed between the two
    leaves frames that belong to no event row. They stay in the HDF5 file but are not part of the run.
    """
    last_event: dict[str, int] = {}
    for i, (name, doc) in enumerate(docs):
        if name in ("event", "event_page"):
            last_event[doc["descriptor"]] = i
    kept, dropped = [], 0
    for i, (name, doc) in enumerate(docs):
        if name == "stream_datum" and i > last_event.get(doc["descriptor"], -1):
            dropped += int(doc["indices"]["stop"]) - int(doc["indices"]["start"])
            continue
        kept.append((name, doc))
    return kept, dropped


def _detector_file_state(path: Path) -> tuple[bool, int | None]:
    """(opens with plain h5py, the ``/entry/pxm/complete`` flag or None when absent)."""
    try:
        with h5py.File(path, "r") as f:
            return True, (int(f[COMPLETE_PATH][()]) if COMPLETE_PATH in f else None)
    except OSError:
        with h5py.File(path, "r", swmr=True) as f:        # its writer died: only a SWMR reader gets in
            return False, (int(f[COMPLETE_PATH][()]) if COMPLETE_PATH in f else None)


def repair_detector_file(path: Path) -> bool:
    """Close a detector file left open for write by a killed process, so plain h5py (and Tiled) read it.

    HDF5 marks a file open for (SWMR) write in its superblock and refuses a plain open until the writer
    closes it; a killed writer never does. The file is read through a SWMR reader, copied object by object
    into a new file beside it, and the copy replaces it atomically with the same mode. Frames and flags
    (``/entry/pxm/complete`` stays 0) are unchanged. Returns True when the file was rewritten, False when it
    already opened.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r"):
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".recovering")
    try:
        with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w") as dst:
            for key in src:
                src.copy(src[key], dst, name=key)
            for k, v in src.attrs.items():
                dst.attrs[k] = v
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def recovered_stop_document(run: DiskRun, reason: str) -> dict[str, Any]:
    """A stop document for a run whose scan process died: ``exit_status`` "fail", the ``reason`` given,
    ``num_events`` as on disk, ``time`` of the last document written.
    """
    times = []
    for _, d in run.documents:
        t = d.get("time")
        if isinstance(t, (int, float)):
            times.append(float(t))
        elif isinstance(t, list) and t:                  # event pages: one time per event
            times.append(float(max(t)))
    last_time = max(times, default=time.time())
    return {"uid": str(uuid.uuid4()), "run_start": run.uid, "time": last_time, "exit_status": "fail",
            "reason": reason, "num_events": dict(run.events)}


def _whole(run: DiskRun, counts: RunCounts) -> bool:
    return (counts.has_stop and counts.duplicate_rows == 0
            and all(counts.events.get(s, 0) == n for s, n in run.events.items())
            and all(counts.frames.get(k, 0) == n for k, n in run.frames.items()))


def _summary(counts: RunCounts) -> str:
    ev = sum(counts.events.values())
    fr = sum(counts.frames.values())
    return f"{ev} events, {fr} frames, stop {counts.exit_status or 'none'}"


def recover_run(raw: Any, run: DiskRun, options: RecoverOptions = RecoverOptions()) -> RecoverResult:
    """Bring one run in ``raw`` (a ``CatalogOfBlueskyRuns`` client) up to what ``run`` holds on disk."""
    from bluesky_tiled_plugins import TiledWriter

    present = run.uid in raw
    counts = tiled_run_counts(raw[run.uid]) if present else None
    if counts is not None and _whole(run, counts):
        return RecoverResult(run.uid, "ok", f"already whole in Tiled ({_summary(counts)})", counts)
    if run.age_s < options.settle_s:
        return RecoverResult(run.uid, "skipped", (
            f"{run.path.name} changed {run.age_s:.0f} s ago, its scan may still be running; run `pxm recover` "
            f"again later or pass --settle-s {int(run.age_s)} if no scan is writing it"))
    missing_files = [p for p in run.files if not p.is_file()]
    if missing_files:
        return RecoverResult(run.uid, "failed", f"detector file {missing_files[0]} is missing; restore it "
                             "from a backup, then run `pxm recover` again")
    action = "completed" if present else "added"
    if options.dry_run:
        have = _summary(counts) if counts is not None else "not in Tiled"
        return RecoverResult(run.uid, "would complete" if present else "would add",
                             f"Tiled: {have}; disk: {sum(run.events.values())} events, "
            f"{sum(run.frames.values())} frames, stop {(run.stop or {}).get('exit_status', 'none')}")
    flags = []
    repaired: list[Path] = []
    for p in run.files:
        if repair_detector_file(p):
            repaired.append(p)
        _, complete = _detector_file_state(p)
        flags.append(complete)
    for (p, dataset), n_needed in run.frames_needed.items():
        with h5py.File(p, "r") as f:
            n_have = int(f[dataset].shape[0]) if dataset in f else 0
        if n_have < n_needed:
            return RecoverResult(run.uid, "failed", f"detector file {p} holds {n_have} frames in {dataset} but the "
                                 f"documents announce {n_needed}; restore the file, or export the run from Tiled "
                                 "with --allow-partial", None, tuple(repaired))
    stop = run.stop
    if stop is None:
        incomplete = sum(1 for c in flags if c == 0)
        reason = (f"recovered by {RECOVERED_BY} on {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: the scan process "
                  f"ended without a stop document (killed or crashed); {sum(run.events.values())} events and "
                  f"{sum(run.frames.values())} frames were on disk"
                  + (f"; {incomplete} detector file(s) not marked complete" if incomplete else ""))
        stop = recovered_stop_document(run, reason)
    kept: dict[str, Any] = {}
    if present:
        node = raw[run.uid]
        kept = {k: v for k, v in dict(node.metadata).items() if k not in KEPT_METADATA_SKIP}
        raw.delete_contents(run.uid, recursive=True, external_only=False)   # HDF5 files are external: kept
    writer = TiledWriter(raw, batch_size=options.batch_size)
    for name, doc in run.documents:
        if name != "stop":
            writer(name, doc)
    writer("stop", dict(stop))
    node = raw[run.uid]
    note = {"by": RECOVERED_BY, "time": time.time(), "jsonl": str(run.path.resolve()),
            "stop_written_by_recover": run.stop is None,
            "repaired_files": [str(p) for p in repaired]}
    node.update_metadata(metadata={**kept, "recovered": note}, drop_revision=True)
    after = tiled_run_counts(raw[run.uid])
    if not _whole(run, after):
        return RecoverResult(run.uid, "failed", f"after the replay Tiled holds {_summary(after)} but the disk "
                             f"{sum(run.events.values())} events and {sum(run.frames.values())} frames; "
                             "see the Tiled server log", after, tuple(repaired))
    detail = _summary(after) + (" (stop document written by pxm recover)" if run.stop is None else "")
    if run.unmatched_frames:
        detail += f"; {run.unmatched_frames} frame(s) announced without an event left out"
    if repaired:
        detail += f"; closed {len(repaired)} detector file(s) left open by the killed scan"
    return RecoverResult(run.uid, action, detail, after, tuple(repaired))


def check_documents_dir(documents_dir: Path) -> Path:
    """Return ``documents_dir`` or raise ValueError (one line with the fix) when it is not a folder."""
    documents_dir = Path(documents_dir)
    if not documents_dir.is_dir():
        raise ValueError(f"{documents_dir} is not a folder; pass the --data-dir the scans wrote to "
                         "(its documents/ folder holds the <uid>.jsonl copies) or --documents DIR")
    return documents_dir


def recover_runs(raw: Any, documents_dir: Path, options: RecoverOptions = RecoverOptions(),
                 uids: tuple[str, ...] = ()) -> list[RecoverResult]:
    """Recover every run with a ``<uid>.jsonl`` in ``documents_dir`` (or only ``uids``), oldest first.

    Raises
    ------
    ValueError
        ``documents_dir`` does not exist, or a uid in ``uids`` has no JSONL copy there.
    """
    documents_dir = check_documents_dir(documents_dir)
    paths = sorted(documents_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    if uids:
        by_uid = {p.stem: p for p in paths}
        unknown = [u for u in uids if u not in by_uid]
        if unknown:
            raise ValueError(f"no {unknown[0]}.jsonl in {documents_dir}; list the runs on disk with "
                             f"`ls {documents_dir}`")
        paths = [by_uid[u] for u in uids]
    results = []
    for p in paths:
        try:
            run = read_disk_run(p)
        except (ValueError, OSError) as exc:
            results.append(RecoverResult(p.stem, "failed", str(exc)))
            continue
        results.append(recover_run(raw, run, options))
    return results
