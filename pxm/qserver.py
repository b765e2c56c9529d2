"""bluesky-queueserver wiring: the namespace (plans, devices, RunEngine) a RE Manager worker loads.

Start a manager with ``start-re-manager --startup-module pxm.qserver_startup`` (recipe in README,
"Queue server"); the module reads ``PXM_DATA_DIR``, ``PXM_TILED_URI``, ``PXM_TILED_API_KEY`` and
``PXM_LIVE`` from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import plans
from analysis.geometry import DetectorLayout, Roi, seed_geometry

USER_GROUP_PERMISSIONS_YAML = """\
# bluesky-queueserver user group permissions for pxm (start-re-manager --user-group-permissions)
user_groups:
  root:
    allowed_plans: [null]
    forbidden_plans: [":^_"]
    allowed_devices: [null]
    forbidden_devices: [":^_:?.*"]
    allowed_functions: [null]
    forbidden_functions: [":^_"]
  primary:
    allowed_plans: [":.*"]
    forbidden_plans: [null]
    allowed_devices: [":?.*:depth=5"]
    forbidden_devices: [null]
    allowed_functions: [null]
    forbidden_functions: [null]
"""
"""Every pxm plan and device for the default ``primary`` group (names starting with ``_`` stay hidden)."""


def write_user_group_permissions(path: Path) -> Path:
    """Write :data:`USER_GROUP_PERMISSIONS_YAML` to ``path`` (a file, or a folder for the default file name).

    Parameters
    ----------
    path
        File to write, or an existing folder (then ``user_group_permissions.yaml`` inside it).

    Returns
    -------
    Path
        The file written; pass it to ``start-re-manager --user-group-permissions``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "user_group_permissions.yaml"
    path.write_text(USER_GROUP_PERMISSIONS_YAML)
    return path


def env_flag(value: str | None, *, default: bool) -> bool:
    """An on/off environment variable: unset → ``default``; ``0``, ``false``, ``no``, ``off`` → False."""
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def build_namespace(*, data_dir: Path, tiled_uri: str | None = None, api_key: str | None = None,
                    roi_px: tuple[int, int] = (64, 64), live: bool = False,
                    live_iterations: int = 6) -> dict[str, Any]:
    """Plans, simulated devices (``mpx``, ``stage``, ``gonio``, ``ring``) and, with Tiled, a wired ``RE``.

    A beamline replaces the simulated devices here by its EPICS classes
    (``devices.motion.Goniometer``, ``PiezoStage``, ``devices.beam.BeamMonitor``).

    Parameters
    ----------
    data_dir
        Detector files go to ``data_dir/raw`` (it must lie in the Tiled server's readable storage for
        the frames to be served), the exact documents to ``data_dir/documents``.
    tiled_uri, api_key
        The Tiled server the ``RE``'s TiledWriter writes runs to (``/raw``); without a URI no ``RE``
        is defined here.
    roi_px
        Detector region of interest (rows, columns) of the simulated Maxipix.
    live
        With Tiled: also subscribe :class:`pxm.live.LiveReconstructionCallback` to the ``RE`` (as
        ``pxm demo`` does), so every ``raster_rocking_scan`` gets its live result in ``/processed``.
    live_iterations
        ePIE sweeps of the live recipe.

    Returns
    -------
    dict
        The worker namespace; ``pxm_live`` holds the live callback when ``live`` is on.
    """
    from devices.sim_beamline import make_sim_beamline
    from sim import BraggSimulator, KBProbe, seed_sample

    geom = seed_geometry(n_rows_px=roi_px[0], n_cols_px=roi_px[1], n_angles=9)
    layout = DetectorLayout()
    source = BraggSimulator(geom, seed_sample(), KBProbe(energy_kev=geom.energy_kev), layout=layout)
    bl = make_sim_beamline(source, geometry=geom, data_dir=Path(data_dir) / "raw",
                           roi=Roi.centred(layout, *roi_px), simulate_exposure=False)
    ns: dict[str, Any] = {name: getattr(plans, name) for name in plans.QSERVER_PLANS}
    ns.update(mpx=bl.detector, stage=bl.stage, gonio=bl.gonio, ring=bl.monitor, geometry=geom.to_metadata())
    if tiled_uri:
        from pxm.catalog import connect, ensure_layout
        from pxm.runengine import make_run_engine

        if not api_key:
            raise ValueError("PXM_TILED_URI is set but PXM_TILED_API_KEY is not; the RE Manager needs both")
        raw, processed = ensure_layout(connect(tiled_uri, api_key))
        extra: tuple[Any, ...] = ()
        if live:
            from pxm.live.options import LiveOptions, live_recipe
            from pxm.live.router import LiveReconstructionCallback

            ns["pxm_live"] = LiveReconstructionCallback(processed=processed, raw=raw, options=LiveOptions(
                recipe=live_recipe(live_iterations), figures_dir=Path(data_dir) / "figures"))
            extra = (ns["pxm_live"],)
        ns["RE"] = make_run_engine(raw_catalog=raw, documents_dir=Path(data_dir) / "documents",
                                   beam_signal=bl.monitor.current, extra_callbacks=extra).RE
    return ns


def namespace_from_env() -> dict[str, Any]:
    """:func:`build_namespace` configured from the environment.

    ``PXM_DATA_DIR`` (default ``pxm-data``), ``PXM_TILED_URI``, ``PXM_TILED_API_KEY`` and ``PXM_LIVE``
    (live reconstruction into ``/processed``; on unless ``0``/``false``/``no``/``off``).
    The worker process's files in the data folder are private (umask 077; 027 with ``PXM_GROUP_ACCESS``,
    :mod:`pxm.datadir`).
    """
    from pxm.datadir import data_umask

    os.umask(data_umask())          # the RE worker process writes detector HDF5 and JSONL for its lifetime
    return build_namespace(data_dir=Path(os.environ.get("PXM_DATA_DIR", "pxm-data")),
                           tiled_uri=os.environ.get("PXM_TILED_URI"),
                           api_key=os.environ.get("PXM_TILED_API_KEY"),
                           live=env_flag(os.environ.get("PXM_LIVE"), default=True))
