"""``pxm export-cxi``, ``pxm import-cxi``, ``pxm export-vtk``: exchange formats (``docs/interop.md``).

:func:`add_format_commands` registers the three sub-commands on ``pxm``'s parser; errors are
``ValueError`` lines that ``pxm.cli.main`` prints as ``pxm <command>: error: …`` with exit status 1
(usage errors: argparse, status 2).
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
    """``pxm export-cxi DATASET -o F.cxi``: write, then check the file against NXcxi_ptycho."""
    from analysis.cxi_nexus import check_nxcxi_ptycho, export_cxi_dataset
    from analysis.dataset import read_dataset

    ds = read_dataset(args.dataset)
    export_cxi_dataset(args.output, ds)
    problems = check_nxcxi_ptycho(args.output)
    if problems:
        raise RuntimeError(f"{args.output}: written but not NXcxi_ptycho: {'; '.join(problems)}")
    n = int(ds.frames.reshape((-1,) + ds.frames.shape[-2:]).shape[0])
    print(f"wrote {args.output}: NXcxi_ptycho (CXI 160), {n} frames {ds.frames.shape[-2]}×{ds.frames.shape[-1]}, "
          f"{ds.layout} layout; required fields present")
    return 0


def cmd_import_cxi(args: argparse.Namespace) -> int:
    """``pxm import-cxi F.cxi -o DATASET.h5``."""
    from analysis.cxi_nexus import import_cxi_dataset
    from analysis.dataset import write_dataset

    summary = import_cxi_dataset(args.source, upsampling=args.upsampling, d_spacing_m=args.d_spacing_m)
    write_dataset(args.output, summary.dataset)
    for line in summary.lines():
        print(line)
    print(f"wrote {args.output}; next: pxm reconstruct {args.output} -o results.h5")
    return 0


def cmd_export_vtk(args: argparse.Namespace) -> int:
    """``pxm export-vtk RESULTS.h5 -o F.vti``."""
    from analysis.vtk_export import export_results_vtk

    for line in export_results_vtk(args.results, args.output).lines():
        print(line)
    return 0
