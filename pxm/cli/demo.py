"""``pxm demo``: a whole simulated beamtime on an embedded Tiled server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pxm.cli._common import _server_config


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a whole simulated beamtime on an embedded Tiled server."""
    from pxm.demo import DemoOptions, run_demo

    if getattr(args, "geometry", "symmetric") != "symmetric":    # general diffractometer geometry (docs/geometry.md)
        import json

        from pxm.geometry_demo import (
            GeneralDemoOptions,
            closing_lines_general,
            run_general_beamtime,
            run_general_geometry_demo,
        )

        gopts = GeneralDemoOptions(geometry=args.geometry, seed=args.seed, **_general_demo_sizes(args))
        if getattr(args, "one_process", False):          # the science chain alone, no Bluesky/Tiled
            summary = run_general_geometry_demo(gopts, Path(args.data_dir) / f"geometry-{args.geometry}")
            summary.pop("diffractometer")
            print(json.dumps(summary))
            return 0
        from pxm.catalog import tiled_session
        from pxm.runengine import interrupt_between_scans

        server = _server_config(args)
        with interrupt_between_scans(), tiled_session(server, args.tiled_uri) as session:
            summary = run_general_beamtime(gopts, raw_catalog=session.raw, raw_dir=server.raw_path,
                                           documents_dir=server.data_dir / "documents")
        print(json.dumps(summary))
        for line in closing_lines_general(summary):
            print(line)
        return 0
    opts = DemoOptions(full=args.full, seed=args.seed, n_raster=5 if args.raster is None else args.raster,
                       n_angles=21 if args.angles is None else args.angles,
                       roi_px=(64, 64) if args.roi is None else tuple(args.roi), live=not args.no_live,
                       live_iterations=args.live_iterations,
                       ferroelectric=args.ferroelectric)
    from pxm.runengine import BeamtimeInterrupted, InterruptOptions, ScanInterrupted

    try:
        return run_demo(_server_config(args), opts, tiled_uri=args.tiled_uri,
                        interrupts=InterruptOptions(on_interrupt=args.on_interrupt))
    except ScanInterrupted as exc:                      # stop document written, detector file closed
        print(f"pxm demo: {exc}", file=sys.stderr)
        return exc.exit_code
    except BeamtimeInterrupted as exc:                  # Ctrl-C/SIGTERM between scans: nothing was open
        print(f"pxm demo: {exc.line(args.data_dir)}", file=sys.stderr)
        return exc.exit_code


def _general_demo_sizes(args: argparse.Namespace) -> dict[str, Any]:
    """The sizes given to ``pxm demo --geometry NAME`` (``--raster``, ``--angles``, ``--roi``; a square crop)."""
    sizes: dict[str, Any] = {}
    if args.raster is not None:
        sizes["n_raster"] = args.raster
    if args.angles is not None:
        sizes["n_angles"] = args.angles
    if args.roi is not None:
        from pxm.geometry_demo import square_roi_px

        sizes["roi_px"] = square_roi_px(args.roi)
    return sizes
