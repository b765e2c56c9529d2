"""Document sources (JSONL files, Tiled) and replay of a recorded run through the pipeline."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pxm.live.router import LiveReconstructionCallback


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
