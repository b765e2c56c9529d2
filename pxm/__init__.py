"""pxm — CLI and wiring: Tiled server, RunEngine, subscriptions, demo, live pipeline (docs/decisions/0001-rooms.md).

The package namespace is the Python API (:mod:`pxm.api`, docs/python-api.md): one function per CLI command, each
calling what the command calls. Its imports are light; the heavy ones sit inside the functions.
"""

from pxm.api import (
    API_KEY_ENV,
    TILED_URI_ENV,
    Beamtime,
    CxiExport,
    Ferroelectric,
    FPReconstruction,
    GeometryBeamtime,
    Polarization,
    PxmError,
    RecoverReport,
    ReplayResult,
    RunInfo,
    SpiralProbe,
    ThinLayerRun,
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
    reconstruct_thin_layer,
    recover_runs,
    replay,
    runs,
    serve,
    simulate_beamtime,
    simulate_ferroelectric,
    simulate_fp_dfxm,
    simulate_general_geometry,
    write_results,
)

__all__ = ["API_KEY_ENV", "TILED_URI_ENV", "Beamtime", "CxiExport", "Ferroelectric", "FPReconstruction",
           "GeometryBeamtime", "Polarization", "PxmError", "RecoverReport", "ReplayResult", "RunInfo", "SpiralProbe",
           "ThinLayerRun", "WrittenResults", "connect", "export", "export_cxi", "export_vtk", "fp_reconstruct",
           "import_cxi", "import_ptypy_bragg", "live_consumer", "load_dataset", "polarization_maps", "probe",
           "publish", "reconstruct", "reconstruct_thin_layer", "recover_runs", "replay", "runs", "serve",
           "simulate_beamtime", "simulate_ferroelectric", "simulate_fp_dfxm", "simulate_general_geometry",
           "write_results"]
