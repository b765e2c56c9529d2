"""RunEngine wiring: TiledWriter into the raw catalog, a JSONL copy of every document, suspenders.

Every document goes two ways so that no data is lost when Tiled is down:
TiledWriter (with its own JSONL ``backup_directory`` for failed writes) and a
``JSONLinesWriter`` holding the exact original documents for offline replay.
"""

from __future__ import annotations

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
        Folder for the exact documents (``<uid>.jsonl``) and TiledWriter's backup.
    beam_signal
        Ring-current signal (mA); with it, a SuspendFloor pauses the scan during beam dumps.
    tiled_batch_size
        Events per TiledWriter write: 1 makes every frame visible in Tiled at once (~80 ms of
        HTTP per frame on a 2-core machine); larger batches cut that cost for long scans.
    """
    if tiled_batch_size < 1:
        raise ValueError(f"tiled_batch_size must be >= 1, got {tiled_batch_size}")
    documents_dir = Path(documents_dir)
    (documents_dir / "tiled-backup").mkdir(parents=True, exist_ok=True)
    RE = RunEngine({})
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
