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
                           iterations=args.iterations, seed=args.seed)
    if args.ferroelectric:
        from pxm.ferroelectric import FerroelectricDemoOptions, run_ferroelectric_demo

        fe = FerroelectricDemoOptions(fp=opts, material=args.material, stress_bump_pa=args.stress_bump_mpa * 1e6)
        return run_ferroelectric_demo(_server_config(args), fe, tiled_uri=args.tiled_uri, figures_dir=args.figures)
    return run_dfxm_demo(_server_config(args), opts, tiled_uri=args.tiled_uri, figures_dir=args.figures)


def cmd_fp_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct a recorded fp_dfxm_scan run; publish to /processed unless --no-publish."""
    from analysis.dfxm import FPOptions
    from pxm.catalog import connect, ensure_layout
    from pxm.dfxm import publish_fp_run, reconstruct_fp_run
    from pxm.logbook_figures import check_figures_dir
    from pxm.run_export import find_run

    check_figures_dir(args.figures)
    raw, processed = ensure_layout(connect(args.tiled_uri, _need_key(args, "fp-reconstruct")))
    run = find_run(raw, args.run)
    out = reconstruct_fp_run(run, options=FPOptions(n_iterations=args.iterations,
                                                    recover_pupil=not args.fixed_pupil))
    m = out.misalignment
    print(f"reconstructed {out.data.frames.shape[0]} frames in {out.elapsed_s:.1f} s, final error "
          f"{out.result.error_history[-1]:.4g}")
    print("Zernikes (rad): " + ", ".join(f"Z{j} {c:+.3f}" for j, c in out.result.zernike_rad.items()))
    print(f"defocus {m.defocus_m * 1e6:+.2f} µm, astigmatism {m.astigmatism_rad}, coma {m.coma_rad}, "
          f"spherical {m.spherical_rad:+.3f} rad")
    if args.figures is not None:
        from pxm.logbook_figures import fp_figures

        for f in fp_figures(args.figures, out):
            print(f"wrote {f}")
    if not args.no_publish:
        res = publish_fp_run(processed, run, out)
        print(f"published {res.uri}")
    return 0
