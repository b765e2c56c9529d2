"""``pxm export-cxi``, ``pxm import-cxi``, ``pxm export-vtk``: exchange formats (``docs/interop.md``).

:func:`add_format_commands` registers the three sub-commands on ``pxm``'s parser; each handler parses, calls
its :mod:`pxm.api` function and prints. Errors are :class:`pxm.PxmError` lines that ``pxm.cli.main`` prints as
``pxm <command>: error: …`` with exit status 1 (usage errors: argparse, status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_format_commands", "cmd_export_cxi", "cmd_import_cxi", "cmd_export_vtk"]


def add_format_commands(sub: Any) -> None:
    """Add ``export-cxi``, ``import-cxi`` and ``export-vtk`` to the sub-parsers ``sub`` of ``pxm``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.
    """
    p = sub.add_parser("export-cxi", help="dataset file → NeXus/CXI (NXcxi_ptycho) for other codes")
    p.add_argument("dataset", type=Path, help="pxm dataset file (pxm export / pxm demo)")
    p.add_argument("-o", "--output", type=Path, required=True, help="CXI file to write (.cxi or .nxs)")
    p.set_defaults(func=cmd_export_cxi)

    p = sub.add_parser("import-cxi", help="NeXus/CXI (NXcxi_ptycho) scan → pxm dataset file")
    p.add_argument("source", type=Path, help="CXI/NeXus file (pxm's or another facility's)")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset file to write")
    p.add_argument("--upsampling", type=int, default=None,
                   help="virtual planes per measured rocking step (default: the file's, else 1)")
    p.add_argument("--d-spacing-m", type=float, default=None,
                   help="lattice-plane spacing in m (default: the file's, else Bragg's law at the measured 2θ)")
    p.set_defaults(func=cmd_import_cxi)

    p = sub.add_parser("export-vtk", help="results file → VTK (.vti/.vts) for ParaView, in the sample frame")
    p.add_argument("results", type=Path, help="results file of pxm reconstruct")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="F.vti (ImageData with direction matrix, VTK ≥ 9) or F.vts (StructuredGrid)")
    p.set_defaults(func=cmd_export_vtk)


def cmd_export_cxi(args: argparse.Namespace) -> int:
    """``pxm export-cxi DATASET -o F.cxi``: :func:`pxm.api.export_cxi` (write, then check against NXcxi_ptycho)."""
    from pxm.api import export_cxi

    print(*export_cxi(args.dataset, args.output).lines(), sep="\n")
    return 0


def cmd_import_cxi(args: argparse.Namespace) -> int:
    """``pxm import-cxi F.cxi -o DATASET.h5``: :func:`pxm.api.import_cxi`."""
    from pxm.api import import_cxi

    summary = import_cxi(args.source, args.output, upsampling=args.upsampling, d_spacing_m=args.d_spacing_m)
    print(*summary.lines(), f"wrote {args.output}; next: pxm reconstruct {args.output} -o results.h5", sep="\n")
    return 0


def cmd_export_vtk(args: argparse.Namespace) -> int:
    """``pxm export-vtk RESULTS.h5 -o F.vti``: :func:`pxm.api.export_vtk`."""
    from pxm.api import export_vtk

    print(*export_vtk(args.results, args.output).lines(), sep="\n")
    return 0
