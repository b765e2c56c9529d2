"""``pxm probe``, ``pxm reconstruct`` and ``pxm import-ptypy-bragg``: Bragg data sets and probes in,
reconstructions out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pxm.cli._common import EXIT_POSTPROCESSING_FAILED, _need_key, check_output_path


def cmd_probe(args: argparse.Namespace) -> int:
    """Forward ptychography of a spiral run → probe file for ``pxm reconstruct --probe-file``
    (:func:`pxm.api.probe`).
    """
    from pxm.api import connect, probe

    got = probe(connect(args.tiled_uri, _need_key(args, "probe")), args.run, output=args.output,
                iterations=args.iterations, algorithm=args.algorithm, figures_dir=args.figures,
                allow_partial=args.allow_partial)
    print(*got.lines(), sep="\n")
    return 0


def _probe_options(args: argparse.Namespace) -> dict:
    """ReconstructOptions fields of --probe-recentre, --probe-blur-px, --probe-na-mask."""
    na = None if args.probe_na_mask is None else (float(args.probe_na_mask[0]), float(args.probe_na_mask[1]))
    return dict(probe_recentre=args.probe_recentre, probe_blur_px=args.probe_blur_px, probe_na_mask_rad=na)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct a dataset file or a Tiled run; write results (+ CXI, figures, Tiled).

    The reconstruction is written before any post-processing; a failed post-processing step is a warning
    line and exit status :data:`EXIT_POSTPROCESSING_FAILED` (docs/dataset-format.md §2).
    """
    import dataclasses
    import tempfile

    from analysis.dataset import BraggDataset, DatasetShare, read_dataset, read_dataset_share
    from pxm.recipe_args import recipe_from_args, resolve_for_dataset
    from pxm.reconstruction import (
        POSTPROCESSING_STEPS,
        ReconstructOptions,
        error_line,
        reconstruct_dataset,
        write_outputs,
        write_reconstruction,
    )

    if (args.dataset is None) == (args.run is None):
        raise ValueError("give either DATASET.h5 or --run UID (not both)")
    if args.publish and args.run is None:
        raise ValueError("--publish needs --run UID (the raw run the result belongs to)")
    inputs = (args.dataset, args.probe_file)           # output paths are checked before hours of computing
    check_output_path(args.output, "-o", inputs=inputs)
    if args.cxi is not None:
        check_output_path(args.cxi, "--cxi", inputs=(*inputs, args.output))
    recipe, given = recipe_from_args(args)
    if args.free_fraction:
        from analysis.bragg.engine import FreeDataOptions

        recipe = dataclasses.replace(recipe, free=FreeDataOptions(fraction=args.free_fraction, unit=args.free_unit))
    if args.ml_smoothness is not None:
        recipe = dataclasses.replace(recipe, ml=dataclasses.replace(recipe.ml, smoothness=args.ml_smoothness))
    if args.ml_free_probe_ramp:
        recipe = dataclasses.replace(recipe, ml=dataclasses.replace(recipe.ml, hold_probe_ramp=False))
    if args.batches is not None:
        if args.batches < 1:
            raise ValueError(f"--batches must be >= 1, got {args.batches}")
        recipe = dataclasses.replace(recipe, epie=dataclasses.replace(recipe.epie, n_batches=args.batches))
    comm = None
    if args.mpi:
        if args.dataset is None or args.probe_run is not None or args.fsc:
            raise ValueError("--mpi reconstructs a DATASET.h5 file (each rank reads its own positions); "
                             "it does not take --run, --probe-run or --fsc")
        if recipe.epie.n_batches < 1:
            raise ValueError("--mpi needs --batches N (mini-batch rPIE, docs/mpi.md; e.g. 16-25 for a full scan): "
                             "sequential ePIE cannot be split across ranks")
        from analysis.bragg.solvers.distributed import mpi_communicator

        comm = mpi_communicator()
    raw = run = None
    probe_file = args.probe_file
    probe_label: str | None = None
    tmp = tempfile.TemporaryDirectory(prefix="pxm-reconstruct-")
    try:
        if args.run is not None or args.probe_run is not None:
            from pxm.catalog import connect, ensure_layout

            if not args.tiled_uri:
                raise ValueError("--run and --probe-run need --tiled-uri")
            raw, _ = ensure_layout(connect(args.tiled_uri, _need_key(args, "reconstruct")))
        if args.run is not None:
            from pxm.run_export import find_run, run_to_dataset

            run = find_run(raw, args.run)
            from pxm.run_export import ExportOptions

            dataset: BraggDataset | DatasetShare = run_to_dataset(
                run, tiled_uri=args.tiled_uri, options=ExportOptions(allow_partial=args.allow_partial))
            source = f"raw/{run.metadata['start']['uid']} (Tiled key)"
        else:
            if not Path(args.dataset).is_file():
                raise ValueError(f"{args.dataset}: no such file")
            if comm is None:
                dataset = read_dataset(args.dataset)
            else:
                dataset = read_dataset_share(args.dataset, rank=comm.rank, size=comm.size)
            source = str(args.dataset)
        if args.probe_run is not None:
            from pxm.reconstruction import probe_from_spiral_run, write_probe_file
            from pxm.run_export import find_run

            probe, px, md, err = probe_from_spiral_run(find_run(raw, args.probe_run),   # partial: refused
                                                       allow_partial=args.allow_partial)
            probe_file = Path(tmp.name) / "probe.h5"       # temporary: probe_source names the run, not the file
            write_probe_file(probe_file, probe, pixel_size_m=px, metadata=md, error_history=err)
            probe_label = (f"spiral run raw/{md['raw_uid']} (Tiled key; uid {md['raw_uid']}), forward "
                           f"ptychography ({md['algorithm']}, {md['n_iterations']} iterations) by --probe-run")
        recipe = resolve_for_dataset(recipe, given, dataset, recipe_name=args.recipe, comm=comm)
        if comm is None or comm.rank == 0:
            for line in recipe.sources if args.recipe != "thin-layer" else ():   # the lattice route picks its slab
                print(line)                             # support, shrink-wrap, sampling T: where each came from
        save_first = None if comm is not None and comm.rank != 0 else (   # on disk before any post-processing
            lambda o: write_reconstruction(o, args.output))
        outcome = reconstruct_dataset(dataset, recipe=recipe, recipe_name=args.recipe, probe_file=probe_file,
                                      dataset_source=source,
                                      options=ReconstructOptions(progress=not args.no_progress, fsc=args.fsc,
                                                                 fsc_split_seed=args.fsc_seed, backend=args.backend,
                                                                 prtf_runs=args.prtf, prtf_seed=args.prtf_seed,
                                                                 probe_label=probe_label, **_probe_options(args)),
                                      comm=comm, checkpoint=save_first)
        if comm is not None and comm.rank != 0:
            return 0                                    # rank 0 holds the same result and writes it
        out = write_outputs(outcome, args.output, cxi_path=args.cxi, figures_dir=args.figures,
                            reconstruction_written=True)
    finally:
        tmp.cleanup()
    m = outcome.metrics
    print(f"wrote {out['results']}: {m['n_iterations']} iterations, final cost {m['final_cost']:.4g}, "
          f"{outcome.timings_s['iterations_s']:.1f} s on {outcome.device}")
    for line in outcome.quality_lines():               # R-factor, cost, free cost per phase
        print(line)
    print(f"probe: {outcome.probe_source}")
    if "route_line" in m:                               # the default recipe: which route won and why
        print(m["route_line"])
    if "lattice_slab_thickness_m" in m:
        print(f"thin layer: {m['lattice_slabs_tried']} slabs tried on the detector lattice, chosen T = "
              f"{m['lattice_slab_thickness_m'] * 1e6:.3g} µm, offset {m['lattice_slab_offset_m'] * 1e9:+.0f} nm "
              f"(picked by {m.get('lattice_score', 'r_factor')}, {m.get('lattice_ml_iterations', 0)} Poisson "
              "likelihood iterations after); "
              f"R-factor {m['r_factor_lattice_model']:.4g} on the lattice model, {m['r_factor']:.4g} on pxm's grid "
              f"model (object × {m['lattice_to_grid_scale']:.4g}, exact transfer); /lattice holds the lattice object")
    if outcome.resolution is not None:
        print(outcome.resolution.summary())
    if outcome.prtf is not None:
        print(outcome.prtf.summary())
    if "free_best_cost" in m:
        print(f"held-out {m['free_fraction']:g} ({m['free_unit']}s): lowest free cost {m['free_best_cost']:.4g} per "
              f"entry at iteration {m['free_best_iteration']}, stopped: {m['free_stopped_phases'] or 'none'}")
    if out["cxi"] is not None:
        print(f"wrote {out['cxi']}")
    for f in out["figures"]:
        print(f"wrote {f}")
    if args.publish:
        from pxm.catalog import connect, ensure_layout
        from pxm.publication import publish_outcome

        assert run is not None                          # --publish needs --run (checked above)
        try:                                            # the outcome itself, not the file read back
            _, processed = ensure_layout(connect(args.tiled_uri, args.api_key))
            res = publish_outcome(processed, run.metadata["start"]["uid"], outcome, raw_run=run,
                                  postprocessing_errors=dict(out["errors"]), extra_metadata={"recipe": args.recipe})
            print(f"published /processed/{res.item['id']} (docs/tiled-layout.md)")
        except Exception as exc:                        # noqa: BLE001 - the results file is already complete
            from analysis.dataset import append_results

            out["errors"]["publish"] = error_line(exc)
            append_results(args.output, postprocessing_errors={"publish": out["errors"]["publish"]},
                           status="complete with post-processing errors")
    for step, line in out["errors"].items():
        print(f"warning: {POSTPROCESSING_STEPS.get(step, step)} failed: {line}; object, probe and metrics are in "
              f"{out['results']}", file=sys.stderr)
    if outcome.convergence is not None:
        print(outcome.convergence.summary())            # the closing line: converged or not, and why
    return EXIT_POSTPROCESSING_FAILED if out["errors"] else 0


def cmd_import_ptypy_bragg(args: argparse.Namespace) -> int:
    """``pxm import-ptypy-bragg``: a ptypy Bragg3dSimScan export → pxm dataset and probe files
    (:func:`pxm.api.import_ptypy_bragg`).
    """
    from pxm.api import import_ptypy_bragg

    summary = import_ptypy_bragg(args.source, args.output, probe_out=args.probe_out, upsampling=args.upsampling)
    print(*summary.lines(), f"next: pxm reconstruct {args.output} --probe-file {summary.probe_path} -o results.h5",
          sep="\n")
    return 0


def cmd_reconstruct_thin_layer(args: argparse.Namespace) -> int:
    """``pxm reconstruct-thin-layer``: known probe, thin layer, slab found by the data
    (:func:`pxm.api.reconstruct_thin_layer`).
    """
    from pxm.api import reconstruct_thin_layer

    run = reconstruct_thin_layer(args.dataset, args.probe_file, args.output, thicknesses_m=args.thickness_m,
                                 offsets=args.offsets, search_iterations=args.search_iterations,
                                 iterations=args.iterations, score=args.score, ml_iterations=args.ml_iterations)
    print(*run.lines(), sep="\n")
    return 0
