"""``pxm dfxm-demo`` and ``pxm fp-reconstruct``: Fourier-ptychographic DFXM."""

from __future__ import annotations

import argparse

from pxm.cli._common import _need_key, _server_config


def cmd_dfxm_demo(args: argparse.Namespace) -> int:
    """Simulated FP-DFXM acquisition into Tiled, reconstruction, publication to /processed."""
    from pxm.dfxm import DFXMDemoOptions, run_dfxm_demo
    from pxm.logbook_figures import check_figures_dir

    check_figures_dir(args.figures)
    opts = DFXMDemoOptions(n_px=args.n_px, n_side=args.grid, step_px=args.step_px, kind=args.kind,
                           iterations=args.iterations, seed=args.seed,
                           simulate_exposure=args.simulate_exposure)
    if args.ferroelectric:
        from pxm.ferroelectric import FerroelectricDemoOptions, run_ferroelectric_demo

        fe = FerroelectricDemoOptions(fp=opts, material=args.material, stress_bump_pa=args.stress_bump_mpa * 1e6)
        return run_ferroelectric_demo(_server_config(args), fe, tiled_uri=args.tiled_uri, figures_dir=args.figures)
    return run_dfxm_demo(_server_config(args), opts, tiled_uri=args.tiled_uri, figures_dir=args.figures)


def cmd_fp_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct a recorded fp_dfxm_scan run; publish to /processed unless --no-publish
    (:func:`pxm.api.fp_reconstruct`).
    """
    from pxm.api import connect, fp_reconstruct

    got = fp_reconstruct(connect(args.tiled_uri, _need_key(args, "fp-reconstruct")), args.run,
                         iterations=args.iterations, fixed_pupil=args.fixed_pupil, publish=not args.no_publish,
                         figures_dir=args.figures)
    print(*got.lines(), sep="\n")
    return 0
