"""``pxm polarization``: ferroelectric polarization from a results file's strain."""

from __future__ import annotations

import argparse
import sys


def cmd_polarization(args: argparse.Namespace) -> int:
    """Strain maps of a results file -> polarization maps (file, and Tiled with --publish)."""
    from analysis.dataset import read_results
    from pxm.logbook_figures import check_figures_dir
    from pxm.polarization import (
        default_output_path,
        polarization_from_results,
        publish_polarization,
        summary,
        write_polarization,
    )

    if not args.results.exists():
        raise ValueError(f"results file {args.results} does not exist")
    check_figures_dir(args.figures)
    maps = polarization_from_results(args.results, material=args.material, hkl=tuple(args.hkl),
                                     strain_frame=args.strain_frame, force=args.force)
    if maps.sample_check.get("note"):
        print(f"pxm polarization: warning: {maps.sample_check['note']}", file=sys.stderr)
    out = args.output or default_output_path(args.results, maps)
    group = write_polarization(out, maps, source_results=args.results)
    info = summary(maps)
    print(f"wrote {out}:{group}: {info['voxels']} voxels, mean |P| = {info['mean_abs_p_c_per_m2']:.4f} C/m², "
          f"max {info['max_abs_p_c_per_m2']:.4f} C/m²; each P is one of {info['n_equivalent_values']} "
          "symmetry-equivalent solutions (one reflection cannot tell them apart)")
    if args.figures is not None:
        from pxm.logbook_figures import polarization_figures

        uid = args.raw_uid or str(read_results(args.results)["provenance"].get("raw_uid") or "")
        for f in polarization_figures(args.figures, maps, run_uid=uid, source=args.results.name):
            print(f"wrote {f}")
    if args.publish:
        from pxm.catalog import connect, ensure_layout

        if not (args.tiled_uri and args.api_key):
            raise ValueError("--publish needs --tiled-uri and --api-key")
        raw_uid = args.raw_uid or str(read_results(args.results)["provenance"].get("raw_uid") or "")
        if not raw_uid:
            raise ValueError("--publish: the results file records no raw run uid; pass --raw-uid")
        raw, processed = ensure_layout(connect(args.tiled_uri, args.api_key))
        raw_run = raw[raw_uid] if raw_uid in raw else None
        node = publish_polarization(processed, raw_uid, maps, raw_run=raw_run, source=str(args.results.resolve()))
        print(f"published /processed/{node.item['id']} (raw_uid {raw_uid})")
    return 0
