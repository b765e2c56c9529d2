"""``pxm polarization``: ferroelectric polarization from a results file's strain."""

from __future__ import annotations

import argparse
import sys


def cmd_polarization(args: argparse.Namespace) -> int:
    """Strain maps of a results file -> polarization maps (file, and Tiled with --publish)
    (:func:`pxm.api.polarization_maps`).
    """
    from pxm.api import connect, polarization_maps

    client = connect(args.tiled_uri, args.api_key) if args.publish and args.tiled_uri and args.api_key else None
    got = polarization_maps(args.results, material=args.material, hkl=tuple(args.hkl), strain_frame=args.strain_frame,
                            output=args.output, force=args.force, figures_dir=args.figures, publish=args.publish,
                            client=client, raw_uid=args.raw_uid)
    if got.warning:
        print(f"pxm polarization: warning: {got.warning}", file=sys.stderr)
    print(*got.lines(), sep="\n")
    return 0
