"""Helpers of the fault tests that signal or kill pxm processes: what a JSONL copy holds so far, and which Tiled
server processes still serve a data folder (the orphan check).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["jsonl_so_far", "n_events", "tiled_processes_of"]


def jsonl_so_far(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, doc) pairs of a JSONL document copy that may still be written: an incomplete line is left out."""
    out = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        out.append((d["name"], d["doc"]))
    return out


def n_events(docs: list[tuple[str, dict[str, Any]]]) -> int:
    """Number of events in ``docs``, counting each row of an event page."""
    return sum(1 if k == "event" else len(d["seq_num"]) for k, d in docs if k in ("event", "event_page"))


def tiled_processes_of(data_dir: Path) -> list[int]:
    """pids of the processes (other than this one) whose command line names ``tiled`` and ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tiled" in cmd and str(data_dir) in cmd:
            pids.append(int(proc.name))
    return pids
