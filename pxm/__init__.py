"""pxm — CLI and wiring: Tiled server, RunEngine, subscriptions, demo, live pipeline (docs/decisions/0001-rooms.md).

The package namespace is the Python API (:mod:`pxm.api`, docs/python-api.md): one function per CLI command, each
calling what the command calls. Its imports are light; the heavy ones sit inside the functions.
"""

from pxm.api import (
    API_KEY_ENV,
    TILED_URI_ENV,
    Beamtime,
    FPReconstruction,
    Polarization,
    PxmError,
    RecoverReport,
    ReplayResult,
    RunInfo,
    SpiralProbe,
    WrittenResults,
    connect,
    export,
    export_cxi,
    export_vtk,
    fp_reconstruct,
    import_cxi,
    import_ptypy_bragg,
    live_consumer,
    load_dataset,
    polarization_maps,
    probe,
    publish,
    reconstruct,
    recover_runs,
    replay,
    runs,
    serve,
    simulate_beamtime,
    simulate_fp_dfxm,
    write_results,
)

__all__ = ["API_KEY_ENV", "TILED_URI_ENV", "Beamtime", "FPReconstruction", "Polarization", "PxmError",
           "RecoverReport", "ReplayResult", "RunInfo", "SpiralProbe", "WrittenResults", "connect", "export",
           "export_cxi", "export_vtk", "fp_reconstruct", "import_cxi", "import_ptypy_bragg", "live_consumer",
           "load_dataset", "polarization_maps", "probe", "publish", "reconstruct", "recover_runs", "replay", "runs",
           "serve", "simulate_beamtime", "simulate_fp_dfxm", "write_results"]
