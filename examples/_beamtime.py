"""The examples' shared set-up: a folder with a served Tiled catalog holding one small simulated beamtime.

``01_simulate_beamtime.py`` makes it; every other example reuses it when given the same WORK_DIR
(``pxm serve`` on a data folder serves the same runs again), else simulates its own.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pxm
from pxm.catalog import TiledService

SMALL = dict(n_raster=3, n_angles=17, roi_px=(32, 32), n_spiral=30, probe_iterations=30)
"""A 3 × 3 raster × 17 angles of 32 × 32 px, a 30-point spiral: seconds of simulation."""


def work_dir() -> Path:
    """WORK_DIR from the command line, else a new temporary folder."""
    return Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="pxm-example-"))


def small_beamtime(work: Path) -> tuple[TiledService, dict[str, str]]:
    """(a running server on ``work/data``, run name → uid); simulates the beamtime if the folder has none.

    The caller stops the server (``with server:``).
    """
    record = work / "beamtime.json"
    server = pxm.serve(work / "data")
    if record.is_file():
        return server, json.loads(record.read_text())["uids"]
    try:
        beamtime = pxm.simulate_beamtime(server, **SMALL, live=False)
    except BaseException:
        server.stop()
        raise
    record.write_text(json.dumps({"uids": beamtime.uids, "probe_file": str(beamtime.probe_file)}))
    return server, beamtime.uids


def probe_file(work: Path) -> Path:
    """The spiral's forward-ptychography probe file of :func:`small_beamtime`."""
    return Path(json.loads((work / "beamtime.json").read_text())["probe_file"])
