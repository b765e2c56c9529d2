"""pxm — CLI and wiring: Tiled server, RunEngine, subscriptions, demo, live pipeline (docs/decisions/0001-rooms.md).

The package namespace is the Python API (:mod:`pxm.api`, docs/python-api.md): one function per CLI command, each
calling what the command calls. Its imports are light; the heavy ones sit inside the functions.
"""

from pxm.api import (
    API_KEY_ENV,
    TILED_URI_ENV,
    Beamtime,
    PxmError,
    ReplayResult,
    RunInfo,
    WrittenResults,
    connect,
    export,
    load_dataset,
    publish,
    reconstruct,
    replay,
    runs,
    serve,
    simulate_beamtime,
    write_results,
)

__all__ = ["API_KEY_ENV", "TILED_URI_ENV", "Beamtime", "PxmError", "ReplayResult", "RunInfo", "WrittenResults",
           "connect", "export", "load_dataset", "publish", "reconstruct", "replay", "runs", "serve",
           "simulate_beamtime", "write_results"]
