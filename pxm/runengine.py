"""RunEngine wiring: TiledWriter into the raw catalog, a JSONL copy of every document, suspenders.

Every document goes two ways so that no data is lost when Tiled is down:
TiledWriter (with its own JSONL ``backup_directory`` for failed writes) and a
``JSONLinesWriter`` holding the exact original documents for offline replay.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.callbacks.json_writer import JSONLinesWriter
from bluesky.run_engine import RunEngineResult
from bluesky.suspenders import SuspendFloor
from bluesky_tiled_plugins import TiledWriter
from event_model import RunRouter

from pxm.datadir import secure_dir


@dataclass(frozen=True, kw_only=True)
class BeamSuspenderOptions:
    """Beam-dump suspension on the ring-current monitor (bluesky SuspendFloor)."""

    floor_ma: float = 100.0
    """Suspend when the ring current falls below this (mA)."""
    resume_ma: float = 150.0
    """Resume once it is back above this (mA)."""
    sleep_s: float = 0.5
    """Extra wait after the current recovers before resuming."""

    def __post_init__(self) -> None:
        if not (0 <= self.floor_ma <= self.resume_ma):
            raise ValueError(
                f"BeamSuspenderOptions: need 0 <= floor_ma <= resume_ma, got {self.floor_ma}, {self.resume_ma}"
            )
        if self.sleep_s < 0:
            raise ValueError(f"BeamSuspenderOptions.sleep_s must be >= 0, got {self.sleep_s}")


@dataclass
class Wiring:
    """The RunEngine and what is subscribed to it."""

    RE: RunEngine
    tiled_writer: Any
    documents_dir: Path
    tokens: dict[str, int] = field(default_factory=dict)



def run_uids(result: RunEngineResult | tuple[str, ...]) -> tuple[str, ...]:
    """The uids of the runs a ``RE(plan)`` call made (pxm's RunEngines return them as a tuple)."""
    return result if isinstance(result, tuple) else tuple(result.run_start_uids)

def jsonl_router(documents_dir: Path) -> RunRouter:
    """One ``<run uid>.jsonl`` file per run (lines ``{"name": ..., "doc": ...}``), via event-model's RunRouter."""

    def factory(name: str, start_doc: dict) -> tuple[list, list]:
        return [JSONLinesWriter(str(documents_dir), filename=f"{start_doc['uid']}.jsonl")], []

    return RunRouter([factory])


SCAN_ID_FILE = "scan_id"
"""File in the documents folder holding the last ``scan_id`` given out (one integer)."""


def persistent_scan_id_source(path: Path) -> Callable[[dict], int]:
    """A RunEngine ``scan_id_source`` that counts in ``path``, so ``scan_id`` persists per data folder.

    Each new run takes ``max(last in the file, RE.md["scan_id"]) + 1`` and writes it back under an
    exclusive ``flock``, so scans in several processes on one data folder never share a number.

    Why a locked counter file and not the alternatives: bluesky's ``PersistentDict`` as ``RE.md``
    keeps a per-process cache that it writes back whole when the process ends (zict: one process at
    a time), so two scans at once in one data folder would take the same ``scan_id`` and the
    one that exits last would roll the counter back; it also needs ``zict``, which pxm does not
    install. Asking the catalog for the highest ``scan_id`` needs the Tiled server up (scans go on
    through a Tiled outage, documents going to JSONL) and races the same way. The counter lives in
    the documents folder, next to the JSONL copies it numbers, and survives a catalog rebuild.
    """
    import fcntl

    from pxm.datadir import file_mode

    path = Path(path)

    def next_scan_id(md: dict) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            text = f.read().strip()
            try:
                last = int(text) if text else 0
            except ValueError:
                raise ValueError(f"{path} should hold the last scan_id (an integer), not {text[:40]!r}; "
                                 "fix or remove it") from None
            new = max(last, int(md.get("scan_id") or 0)) + 1
            f.seek(0)
            f.truncate()
            f.write(f"{new}\n")
            f.flush()
            os.fsync(f.fileno())
        return new

    return next_scan_id


def make_run_engine(*, raw_catalog: Any, documents_dir: Path, beam_signal: Any | None = None,
                    suspender: BeamSuspenderOptions | None = None,
                    extra_callbacks: tuple[Callable[[str, dict], Any], ...] = (),
                    tiled_batch_size: int = 1) -> Wiring:
    """A RunEngine that writes every run into ``raw_catalog`` and to JSONL files.

    Parameters
    ----------
    raw_catalog
        Tiled node tagged ``CatalogOfBlueskyRuns`` (``pxm.catalog.ensure_layout``).
    documents_dir
        Folder for the exact documents (``<uid>.jsonl``), TiledWriter's backup and the ``scan_id``
        counter (:func:`persistent_scan_id_source`): RunEngines on one folder, in any process, number
        their runs 1, 2, 3, ...; created 0700 (:func:`pxm.datadir.secure_dir`).
    beam_signal
        Ring-current signal (mA); with it, a SuspendFloor pauses the scan during beam dumps.
    tiled_batch_size
        Events per TiledWriter write: 1 makes every frame visible in Tiled at once (~80 ms of
        HTTP per frame on a 2-core machine); larger batches cut that cost for long scans.
    """
    if tiled_batch_size < 1:
        raise ValueError(f"tiled_batch_size must be >= 1, got {tiled_batch_size}")
    documents_dir = Path(documents_dir)
    secure_dir(documents_dir / "tiled-backup")
    RE = RunEngine({}, scan_id_source=persistent_scan_id_source(documents_dir / SCAN_ID_FILE))
    writer = TiledWriter(raw_catalog, batch_size=tiled_batch_size, backup_directory=str(documents_dir / "tiled-backup"))
    tokens = {
        "tiled": RE.subscribe(writer),
        "jsonl": RE.subscribe(jsonl_router(documents_dir)),
    }
    for i, cb in enumerate(extra_callbacks):
        tokens[f"extra{i}"] = RE.subscribe(cb)
    if beam_signal is not None:
        opts = suspender or BeamSuspenderOptions()
        RE.install_suspender(SuspendFloor(beam_signal, opts.floor_ma, resume_thresh=opts.resume_ma,
                                          sleep=opts.sleep_s))
    return Wiring(RE=RE, tiled_writer=writer, documents_dir=documents_dir, tokens=tokens)
