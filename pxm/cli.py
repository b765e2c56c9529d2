"""The ``pxm`` command line: ``serve``, ``demo``, ``runs``, ``recover``, ``export``, ``probe``, ``reconstruct``,
``live-consumer``, ``replay``, ``dfxm-demo`` and ``fp-reconstruct``.

Heavy imports sit inside the command functions so ``pxm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_DATA_DIR = Path("pxm-data")
EXIT_POSTPROCESSING_FAILED = 3
"""Exit status of ``pxm reconstruct`` when the results file was written but a post-processing step
(strain, FSC/PRTF, CXI, figures, publication) failed; errors are 1, usage errors 2."""
API_KEY_ENV = "PXM_TILED_API_KEY"
TILED_URI_ENV = "PXM_TILED_URI"
"""Default of every ``--tiled-uri`` option, as ``$PXM_TILED_API_KEY`` is of ``--api-key``."""


def _tiled_uri_required() -> dict:
    """``--tiled-uri`` of a command that needs a server: required unless ``$PXM_TILED_URI`` gives it."""
    env = os.environ.get(TILED_URI_ENV)
    return dict(default=env, required=env is None, help=f"Tiled server URL (default: ${TILED_URI_ENV})")


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="folder for the catalog, arrays, detector files and logs (default: ./pxm-data)")
    p.add_argument("--catalog-uri", default=None,
                   help="catalog database URI (default: SQLite in DATA_DIR; e.g. postgresql+asyncpg://...)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"alphanumeric API key (default: ${API_KEY_ENV} or a random one)")


def _server_config(args: argparse.Namespace):
    from pxm.catalog import TiledServerConfig

    kw = dict(data_dir=args.data_dir, catalog_uri=args.catalog_uri, host=args.host, port=args.port)
    if args.api_key:
        kw["api_key"] = args.api_key
    return TiledServerConfig(**kw)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Tiled server on its own until Ctrl-C."""
    from pxm.catalog import TiledService, ensure_layout, redacted_uri, write_key_file

    service = TiledService(_server_config(args))
    with _stop_on_signals():                            # SIGTERM/SIGHUP/SIGINT: stop the Tiled child too
        try:
            service.start()
            ensure_layout(service.client())
            print(f"Tiled server: {service.uri}")
            key_file = write_key_file(service.config.data_dir, service.config.api_key)   # never printed itself
            print(f"API key:      in {key_file} (mode 0600); clients: export {API_KEY_ENV}=$(cat {key_file})")
            print(f"data folder:  {service.config.data_dir}  (detector files under {service.config.raw_path})")
            print(f"catalog:      {redacted_uri(service.config.resolved_catalog_uri)}")
            print(f"connect:      import os; from tiled.client import from_uri; c = from_uri('{service.uri}', "
                  f"api_key=os.environ['{API_KEY_ENV}'])")
            print("Ctrl-C stops the server.", flush=True)
            return service.wait()
        except KeyboardInterrupt:
            print("stopping the Tiled server", file=sys.stderr)
            return 0
        finally:
            service.stop()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM, SIGHUP and SIGINT into one KeyboardInterrupt for the block, in the main thread.

    ``pxm serve`` starts Tiled in its own session, so a signal to ``pxm serve`` alone would leave
    the server running; the interrupt lets the ``finally`` stop it. Further signals are ignored
    until the block ends, so a second Ctrl-C cannot cut the stop short (it ends in SIGKILL anyway).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def interrupt(signum: int, frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs in a Tiled server's raw catalog."""
    from pxm.catalog import connect, ensure_layout

    if not args.api_key:
        print(f"pxm runs: give --api-key or set ${API_KEY_ENV}", file=sys.stderr)
        return 2
    from pxm.catalog import tiled_run_counts

    raw, processed = ensure_layout(connect(args.tiled_uri, args.api_key))
    n_partial = 0
    for uid in raw:
        counts = tiled_run_counts(raw[uid])             # status: complete, PARTIAL(...) or DAMAGED(...)
        start = counts.start
        sample = start.get("sample")
        n_partial += counts.status() != "complete"
        print(f"{uid}  scan_id={start.get('scan_id')}  plan={start.get('plan_name')}  "
              f"sample={sample.get('name') if isinstance(sample, dict) else sample}  status={counts.status()}")
    if n_partial:
        print(f"{n_partial} run(s) not complete: `pxm recover --tiled-uri URL --data-dir DATA_DIR` adds what the "
              "scans left on disk (docs/reliability.md)", file=sys.stderr)
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    """Re-ingest runs from the JSONL documents (and their HDF5 frames) into Tiled after an outage."""
    from pxm.api import RecoverReport  # its lines() are what pxm.recover_runs returns
    from pxm.catalog import connect, ensure_layout
    from pxm.recover import RecoverOptions, check_documents_dir, recover_runs

    options = RecoverOptions(settle_s=args.settle_s, dry_run=args.dry_run)
    documents = check_documents_dir(args.documents if args.documents is not None else args.data_dir / "documents")
    raw, _ = ensure_layout(connect(args.tiled_uri, _need_key(args, "recover")))
    report = RecoverReport(results=recover_runs(raw, documents, options, uids=tuple(args.run or ())))
    for line in report.lines():
        print(line)
    return 1 if report.failed else 0


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


def _general_demo_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The sizes given to ``pxm demo --geometry NAME`` (``--raster``, ``--angles``, ``--roi``; a square crop)."""
    sizes = {}
    if args.raster is not None:
        sizes["n_raster"] = args.raster
    if args.angles is not None:
        sizes["n_angles"] = args.angles
    if args.roi is not None:
        if args.roi[0] != args.roi[1]:
            raise ValueError(f"--roi {args.roi[0]} {args.roi[1]}: the --geometry demo simulates a square crop; "
                             "give equal ROWS and COLS")
        sizes["roi_px"] = args.roi[0]
    return sizes


def _need_key(args: argparse.Namespace, cmd: str) -> str:
    if not args.api_key:
        raise ValueError(f"give --api-key or set ${API_KEY_ENV}")
    return args.api_key


def cmd_export(args: argparse.Namespace) -> int:
    """Export a Bragg-ptychography run from Tiled to a dataset file."""
    from pxm.run_export import ExportOptions, export_run

    ds = export_run(args.tiled_uri, _need_key(args, "export"), args.run, args.output,
                    options=ExportOptions(allow_partial=args.allow_partial))
    print(f"wrote {args.output}: {ds.layout} layout, frames {tuple(ds.frames.shape)}, "
          f"{int((~ds.detector_mask).sum())} masked pixels, sample {ds.sample.get('name')!r}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Forward ptychography of a spiral run → probe file for ``pxm reconstruct --probe-file``."""
    from pxm.catalog import connect, ensure_layout
    from pxm.logbook_figures import check_figures_dir
    from pxm.reconstruction import probe_from_spiral_run, write_probe_file
    from pxm.run_export import check_run_whole, find_run

    check_figures_dir(args.figures)
    check_output_path(args.output, "-o")
    raw, _ = ensure_layout(connect(args.tiled_uri, _need_key(args, "probe")))
    run = find_run(raw, args.run)
    if not args.allow_partial:                          # as export / reconstruct --run: no partial run unasked
        check_run_whole(run, args.run)
    probe, px, md, err = probe_from_spiral_run(run, n_iterations=args.iterations, algorithm=args.algorithm,
                                               allow_partial=args.allow_partial)
    md["tiled_uri"] = args.tiled_uri
    write_probe_file(args.output, probe, pixel_size_m=px, metadata=md, error_history=err)
    print(f"wrote {args.output}: probe {probe.shape}, pixel {px * 1e9:.2f} nm, final error {err[-1]:.4g}")
    if args.figures is not None:
        from pxm.logbook_figures import probe_figures

        for f in probe_figures(args.figures, probe, pixel_size_m=px, run_uid=str(md.get("raw_uid") or args.run),
                               algorithm=args.algorithm, n_iterations=args.iterations, error_history=err):
            print(f"wrote {f}")
    return 0


def check_output_path(path: Path, option: str, inputs: tuple[Path | None, ...] = ()) -> None:
    """Raise ValueError unless ``path`` can be written.

    Its folder must exist and be writable; it must not be a folder, a read-only file or one of ``inputs``.
    """
    out = Path(path)
    folder = out.parent
    if out.is_dir():
        raise ValueError(f"{option} {out} is a folder; give a file name, e.g. {option} {out / 'results.h5'}")
    if not folder.is_dir():
        raise ValueError(f"{option} {out}: the folder {folder} does not exist; create it (mkdir -p {folder}) "
                         "or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"{option} {out}: not writable here (permissions of {folder}); choose another path")
    for given in inputs:
        if given is not None and (out.resolve() == Path(given).resolve()
                                  or (Path(given).exists() and out.exists() and out.samefile(given))):
            raise ValueError(f"{option} {out} is the input file {given}; write to another file")


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
        from analysis.engine import FreeDataOptions

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
        from analysis.solvers.distributed import mpi_communicator

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
    if "lattice_slab_thickness_m" in m:
        print(f"thin layer: {m['lattice_slabs_tried']} slabs tried on the detector lattice, chosen T = "
              f"{m['lattice_slab_thickness_m'] * 1e6:.3g} µm, offset {m['lattice_slab_offset_m'] * 1e9:+.0f} nm; "
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


def _live_callback(args: argparse.Namespace, *, publish: bool = True):
    """A LiveReconstructionCallback publishing to ``args.tiled_uri`` (nowhere without it, or with ``publish`` off)."""
    from pxm.live import LiveOptions, LiveReconstructionCallback, live_recipe

    raw = processed = None
    if args.tiled_uri:
        from pxm.catalog import connect, ensure_layout

        raw, processed = ensure_layout(connect(args.tiled_uri, _need_key(args, "live")))
        if not publish:
            processed = None
    opts = LiveOptions(recipe=live_recipe(args.iterations, args.ml), figures_dir=args.figures,
                       reconstruct_live=not args.no_live_engine, backend=args.backend)
    return LiveReconstructionCallback(processed=processed, raw=raw, options=opts), raw


def _print_summaries(summaries: list) -> None:
    for s in summaries:
        m = s.get("metrics", {})
        print(f"run {s['uid']}: {m.get('n_frames_used')} of {m.get('n_frames_measured')} frames used, "
              f"{m.get('n_iterations')} iterations, final cost {m.get('final_cost')}; "
              f"missing {s.get('missing_frames')}, duplicates {m.get('n_duplicates')}; "
              f"result {s.get('final_key') or '(not published)'}", flush=True)


def cmd_live_consumer(args: argparse.Namespace) -> int:
    """Run the live reconstruction in this process, fed by a bluesky 0MQ proxy or NATS JetStream."""
    from pxm.live_feed import consume_live

    cb, _ = _live_callback(args)
    _print_summaries(consume_live(cb, zmq=args.zmq, nats=args.nats, stream=args.stream, subject=args.subject,
                                  once=args.once, timeout_s=args.timeout,
                                  on_listening=lambda line: print(f"pxm live-consumer: {line}", flush=True)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Push a recorded run (Tiled or JSONL) through the live callback; keep its final result (-o, --publish)."""
    import dataclasses

    from pxm.live import jsonl_documents, replay_documents, tiled_documents

    if (args.run is None) == (args.jsonl is None):
        raise ValueError("give either RUN_UID (read from Tiled) or --jsonl FILE")
    if args.publish and not args.tiled_uri:
        raise ValueError("--publish needs --tiled-uri URL and --api-key (the server to publish to)")
    if args.output is not None:
        check_output_path(args.output, "-o", inputs=(args.jsonl,))
    cb, raw = _live_callback(args, publish=args.publish)
    if args.run is not None:
        if raw is None:
            raise ValueError("RUN_UID needs --tiled-uri and --api-key")
        from pxm.run_export import find_run

        docs = tiled_documents(find_run(raw, args.run))
        source = f"raw/{args.run}"                      # a Tiled key, not a server's URL
    else:
        if not Path(args.jsonl).is_file():
            raise ValueError(f"{args.jsonl}: no such file")
        docs = jsonl_documents(args.jsonl)
        source = str(Path(args.jsonl).resolve())
    from pxm.live import REPLAY_TIMEOUT_S

    _print_summaries(replay_documents(docs, cb, timeout_s=args.timeout if args.timeout is not None
                                      else REPLAY_TIMEOUT_S))
    cut_off = [s.summary for s in cb.sessions if s.summary.get("status") == "aborted"]
    for sm in cut_off:                                  # recorded with exit_status abort/fail, or no stop at all
        print(f"pxm replay: run {sm['uid']} ended with exit_status '{sm.get('exit_status')}' "
              f"({sm.get('reason')}); {sm.get('n_frames_measured')} frames replayed, no final result "
              "(the live result is marked 'aborted'; docs/reliability.md)", file=sys.stderr)
    if cut_off:
        return 1
    if args.output is None:
        return 0
    from pxm.reconstruction import POSTPROCESSING_STEPS, write_outputs

    finals = [s.final_result for s in cb.sessions if s.final_result is not None]
    if not finals:
        raise ValueError(f"{source}: no Bragg scan with a final result to write; replay a raster_rocking_scan run")
    final = finals[-1]                                  # the live final result, with its frame counts
    outcome = dataclasses.replace(final["outcome"], metrics=final["metrics"], timings_s=final["timings_s"])
    out = write_outputs(outcome, args.output, dataset_source=source)
    print(f"wrote {out['results']}")
    for step, line in out["errors"].items():
        print(f"warning: {POSTPROCESSING_STEPS.get(step, step)} failed: {line}; object, probe and metrics are in "
              f"{out['results']}", file=sys.stderr)
    return EXIT_POSTPROCESSING_FAILED if out["errors"] else 0


def _add_live_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV),
                   help="publish previews and results to this Tiled server (default: $PXM_TILED_URI)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("--iterations", type=int, default=6, help="ePIE sweeps of the live recipe (default 6)")
    p.add_argument("--ml", type=int, default=0, help="ML iterations of the live recipe (default 0)")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--no-live-engine", action="store_true", help="assemble only; reconstruct after the stop")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend of the live engine (auto: CuPy when a GPU is usable; PXM_BACKEND overrides)")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting for results after this many s")


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pxm``."""
    from pxm.recipe_args import add_recipe_arguments

    parser = argparse.ArgumentParser(prog="pxm", description="Coherent X-ray Bragg microscopy: scan to science.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the embedded Tiled server on its own")
    _add_server_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a simulated Bragg-ptychography beamtime into Tiled")
    _add_server_args(p)
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV),
                   help="use this running server instead of starting one (default: $PXM_TILED_URI)")
    p.add_argument("--full", action="store_true", help="the seed's full 20 × 20 × 42 scan with 200 × 160 frames")
    p.add_argument("--raster", type=int, default=None,
                   help="raster points per axis (default 5; with --geometry NAME: 3)")
    p.add_argument("--angles", type=int, default=None,
                   help="rocking angles (default 21; at least 17 at the 0.005° step: the range must be twice the "
                        "probe's convergence; with --geometry NAME: 10 of 0.012°)")
    p.add_argument("--roi", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="detector region saved per frame (default 64 64; with --geometry NAME: 20 20, square)")
    p.add_argument("--seed", type=int, default=2021, help="random seed of the simulation")
    p.add_argument("--no-live", action="store_true", help="no live reconstruction during the BP scan")
    p.add_argument("--live-iterations", type=int, default=None,
                   help="ePIE sweeps of the live and final reconstruction: the default recipe scaled to N sweeps "
                        "(default: the default recipe's 200 + 100 ML)")
    p.add_argument("--on-interrupt", choices=("ask", "abort", "stop"), default="ask",
                   help="after Ctrl-C has paused a scan: ask (resume/stop/abort when stdin is a terminal, "
                        "else abort; the default), abort, or stop; a second Ctrl-C or SIGTERM always aborts "
                        "(docs/reliability.md)")
    p.add_argument("--ferroelectric", action="store_true",
                   help="also run the ferroelectric FP-DFXM chain (two scans → polarization maps, ~1 min)")
    p.add_argument("--geometry", default="symmetric",
                   choices=("symmetric", "asymmetric-in-plane", "asymmetric-out-of-plane"),
                   help="diffractometer geometry (docs/geometry.md); other than symmetric: a small simulated "
                        "beamtime in that geometry (sim six-circle devices, RunEngine -> Tiled -> export -> "
                        "reconstruct, ~1 min) that prints the strain RMSE against the truth")
    p.add_argument("--one-process", action="store_true",
                   help="with --geometry NAME: the science chain alone, in one process without Bluesky/Tiled "
                        "(simulate, write DATA_DIR/geometry-NAME/dataset.h5, reconstruct, score)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("polarization", help="polarization maps from the strain maps of a results file (LGD)")
    p.add_argument("results", type=Path, metavar="RESULTS.h5", help="results file of `pxm reconstruct`")
    p.add_argument("--material", required=True, help="LGD coefficient set, e.g. BaTiO3, PbTiO3, SrTiO3")
    p.add_argument("--hkl", type=float, nargs=3, required=True, metavar=("H", "K", "L"),
                   help="the measured reflection in the parent cubic frame")
    p.add_argument("--strain-frame", default=None, help="which /strain map to invert (default: the first)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="OUT.h5",
                   help="polarization file to write (default RESULTS-polarization-MATERIAL-HKL.h5 beside the "
                        "results; never the results file itself)")
    p.add_argument("--force", action="store_true",
                   help="invert even if the material/reflection do not match the results' sample (material, hkl, "
                        "d-spacing within 1 %%)")
    p.add_argument("--publish", action="store_true", help="also publish to /processed in Tiled")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--raw-uid", default=None, help="raw run uid (default: from the results file)")
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV))
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.set_defaults(func=cmd_polarization)

    p = sub.add_parser("runs", help="list runs in a Tiled server")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("export", help="export a Bragg-ptychography run from Tiled to a dataset file")
    p.add_argument("run", metavar="RUN", help="run uid in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset HDF5 file to write")
    p.add_argument("--allow-partial", action="store_true",
                   help="export a run that is partial (no stop document, not ended in success, frames missing) "
                        "with the frames it has")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recover", help="re-ingest runs from the JSONL documents into Tiled after an outage")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="data folder the scans wrote to (its documents/ holds <uid>.jsonl; default ./pxm-data)")
    p.add_argument("--documents", type=Path, default=None, metavar="DIR",
                   help="folder of the <uid>.jsonl copies (default DATA_DIR/documents)")
    p.add_argument("--run", action="append", default=None, metavar="UID", help="only this run (repeatable)")
    p.add_argument("--settle-s", type=float, default=30.0, metavar="S",
                   help="skip runs whose JSONL changed less than S seconds ago: their scan may still be running "
                        "(default 30)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be done")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("import-ptypy-bragg", help="convert a ptypy Bragg3dSimScan export → dataset + probe file")
    p.add_argument("source", type=Path, metavar="PTYPY.h5", help="ptypy export (docs/dataset-format.md §5)")
    p.add_argument("-o", "--output", type=Path, required=True, help="pxm dataset file to write")
    p.add_argument("--probe-out", type=Path, default=None, metavar="F",
                   help="probe file to write (default: OUTPUT with _probe before .h5)")
    p.add_argument("--upsampling", type=int, default=None, metavar="U",
                   help="U of the dataset's geometry (default: the smallest whose P2 holds the probe)")
    p.set_defaults(func=cmd_import_ptypy_bragg)

    p = sub.add_parser("reconstruct-thin-layer",
                       help="a thin crystalline layer with a known probe: difference map on the detector lattice, the "
                            "slab picked by the data (docs/recipes.md)")
    p.add_argument("dataset", type=Path, metavar="DATASET.h5")
    p.add_argument("--probe-file", type=Path, required=True, metavar="F",
                   help="the known probe (docs/dataset-format.md §4), held fixed")
    p.add_argument("-o", "--output", type=Path, required=True, help="result HDF5 file to write")
    p.add_argument("--thickness-m", type=float, nargs="+", default=None, metavar="T",
                   help="slab thicknesses to try (default: 0.75/1/1.25 × /sample thickness_m, else 0.15 0.2 0.25 µm)")
    p.add_argument("--offsets", type=int, default=12, help="slab offsets tried per thickness (default 12)")
    p.add_argument("--search-iterations", type=int, default=20, help="map iterations per slab (default 20)")
    p.add_argument("--iterations", type=int, default=60, help="map iterations on the chosen slab (default 60)")
    p.set_defaults(func=cmd_reconstruct_thin_layer)

    p = sub.add_parser("probe", help="forward ptychography of a spiral run → probe file")
    p.add_argument("run", metavar="RUN_UID", help="uid of a spiral_probe_scan run in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, default=Path("probe.h5"), help="probe file (default probe.h5)")
    p.add_argument("--allow-partial", action="store_true",
                   help="use a run without stop document or with frames missing (refused by default)")
    p.add_argument("--iterations", type=int, default=100, help="ePIE sweeps (default 100, as in the seed)")
    p.add_argument("--algorithm", choices=("epie", "mpie"), default="epie")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("reconstruct", help="reconstruct a dataset file or a Tiled run")
    p.add_argument("dataset", metavar="DATASET.h5", nargs="?", type=Path, default=None)
    p.add_argument("--run", default=None, metavar="UID", help="reconstruct this /raw run instead of a file")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --run: reconstruct a partial run (no stop document, not ended in success, frames "
                        "missing) from the frames it has; with --probe-run: take the probe from a partial spiral run")
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV))
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, required=True, help="results HDF5 file to write")
    add_recipe_arguments(p)                         # --recipe, --recipe-file, --iterations, --ml, support, U, probe
    g = p.add_mutually_exclusive_group()
    g.add_argument("--probe-run", default=None, metavar="UID", help="spiral run: forward ptychography gives the probe")
    g.add_argument("--probe-file", type=Path, default=None, metavar="F",
                   help="probe file: 2D beam plane (rectangular pixels allowed), (r2, r3) section or 3D probe "
                        "(docs/dataset-format.md §4); used without re-centring, blur or NA mask unless asked")
    p.add_argument("--probe-recentre", action="store_true",
                   help="move the probe file's intensity centroid to the centre of P2 (default: its pixel N//2)")
    p.add_argument("--probe-blur-px", type=float, default=0.0, metavar="S",
                   help="blur the probe file's probe by a Gaussian of σ = S P2 pixels before resampling "
                        "(anti-aliasing; default 0 = none)")
    p.add_argument("--probe-na-mask", type=float, nargs=2, default=None, metavar=("V", "H"),
                   help="constrain the probe to this numerical aperture (rad, vertical and horizontal) during "
                        "ePIE; default: none for a probe file, the seed's KB NA for the model probe")
    p.add_argument("--cxi", type=Path, default=None, help="also export the object and probe as CXI")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--publish", action="store_true", help="publish the result to /processed (needs --run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend: CuPy on a GPU or NumPy on the CPU (auto: CuPy when a GPU is usable; "
                        "PXM_BACKEND overrides auto)")
    p.add_argument("--fsc", action="store_true",
                   help="also reconstruct two binomial half-data sets: FSC resolution into the results (3× time)")
    p.add_argument("--fsc-seed", type=int, default=0, metavar="N", help="seed of the binomial photon split")
    p.add_argument("--prtf", type=int, default=0, metavar="K",
                   help="also run K (>= 6) reconstructions of the full data from random starts: their PRTF (1/e) "
                        "says how reproducibly the phases are retrieved ((K+1)× time)")
    p.add_argument("--prtf-seed", type=int, default=0, metavar="N", help="seed of the PRTF runs' random starts")
    p.add_argument("--free-fraction", type=float, default=0.0, metavar="F",
                   help="hold out this fraction of the measured data (0 <= F < 0.5, e.g. 0.05): its cost is tracked "
                        "every 10 iterations, a phase stops after 5 checks without improvement and the state with "
                        "the lowest held-out cost is kept (/free_cost in the results; docs/seed-schedule.md)")
    p.add_argument("--free-unit", choices=("entry", "frame"), default="entry",
                   help="hold out single detector-voxels (entry) or whole (position, angle) frames")
    p.add_argument("--ml-smoothness", type=float, default=None, metavar="S",
                   help="smoothness prior S·Σ|P|²|∇ρ|² in the ML refinement (default: the recipe's, 0.01 in "
                        "--recipe default, 0 in seed; 0 = the seed's cost alone); keeps long ML runs from fitting "
                        "model error with voxel-scale noise (docs/seed-schedule.md)")
    p.add_argument("--ml-free-probe-ramp", action="store_true",
                   help="let ML move the probe's linear phase ramp (by default it is held where ePIE left it: the "
                        "data cannot tell a probe ramp from an object ramp, which reads as a uniform strain offset)")
    p.add_argument("--batches", type=int, default=None, metavar="N",
                   help="mini-batch rPIE with N spatially spread batches instead of sequential ePIE (docs/mpi.md)")
    p.add_argument("--mpi", action="store_true",
                   help="split the positions across MPI ranks (run under mpirun -n R; needs mpi4py and --batches); "
                        "each rank reads only its frames, rank 0 writes the results (docs/mpi.md)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("live-consumer", help="live reconstruction fed over 0MQ (bluesky proxy) or NATS JetStream")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--zmq", metavar="HOST:PORT", help="the proxy's out address")
    src.add_argument("--nats", metavar="URL", help="NATS server (nats://HOST:PORT); reads the JetStream stream "
                                                    "from its first document")
    p.add_argument("--stream", default="bluesky", help="JetStream stream name (--nats; default bluesky)")
    p.add_argument("--subject", default="events.>", help="subject filter (--nats; default events.>)")
    p.add_argument("--once", action="store_true", help="exit after the first Bragg run's final result")
    _add_live_args(p)
    p.set_defaults(func=cmd_live_consumer)

    p = sub.add_parser("replay", help="push a recorded run through the live reconstruction")
    p.add_argument("run", metavar="RUN_UID", nargs="?", default=None, help="run uid in /raw (needs --tiled-uri)")
    p.add_argument("--jsonl", type=Path, default=None, metavar="FILE", help="replay this <uid>.jsonl instead")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="RESULTS.h5",
                   help="write the final result to this results file (docs/dataset-format.md §2)")
    p.add_argument("--publish", action="store_true",
                   help="publish previews and the final result to /processed of --tiled-uri (docs/tiled-layout.md)")
    _add_live_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("dfxm-demo", help="simulated FP-DFXM acquisition into Tiled, reconstruction, publication")
    _add_server_args(p)
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV),
                   help="use this running server instead of starting one (default: $PXM_TILED_URI)")
    p.add_argument("--n-px", type=int, default=32, help="camera frame size in pixels (default 32)")
    p.add_argument("--grid", type=int, default=5, help="diversity grid n × n (default 5)")
    p.add_argument("--step-px", type=int, default=6, help="grid step in frequency pixels (default 6: ~63%% overlap)")
    p.add_argument("--kind", choices=("rock_roll", "two_theta_roll", "lens_translation"), default="rock_roll",
                   help="which motors create the diversity (default rock_roll)")
    p.add_argument("--iterations", type=int, default=150, help="Zernike-EPRY sweeps (default 150)")
    p.add_argument("--seed", type=int, default=6, help="random seed of the simulation")
    p.add_argument("--ferroelectric", action="store_true",
                   help="c/a domain film: one FP scan per variant's 2θ, strain → polarization maps (LGD), published")
    p.add_argument("--material", default="BaTiO3", help="LGD coefficient set of --ferroelectric (default BaTiO3)")
    p.add_argument("--stress-bump-mpa", type=float, default=60.0,
                   help="peak elastic stress along ĝ in the --ferroelectric film (default 60 MPa)")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR",
                   help="write PNG figures of the FP-DFXM result into DIR (--ferroelectric: both scans and the "
                        "polarization maps)")
    p.set_defaults(func=cmd_dfxm_demo)

    p = sub.add_parser("fp-reconstruct", help="reconstruct a recorded FP-DFXM run and publish it")
    p.add_argument("--run", required=True, metavar="UID", help="uid of an fp_dfxm_scan run in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("--iterations", type=int, default=150, help="Zernike-EPRY sweeps (default 150)")
    p.add_argument("--fixed-pupil", action="store_true", help="do not refine the pupil aberrations")
    p.add_argument("--no-publish", action="store_true", help="do not publish to /processed")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.set_defaults(func=cmd_fp_reconstruct)

    from pxm.cli_formats import add_format_commands  # export-cxi, import-cxi, export-vtk (docs/interop.md)

    add_format_commands(sub)
    return parser


def cmd_import_ptypy_bragg(args: argparse.Namespace) -> int:
    """``pxm import-ptypy-bragg``: a ptypy Bragg3dSimScan export → pxm dataset and probe files."""
    from analysis.ptypy_bragg import import_ptypy_bragg

    probe_out = args.probe_out or args.output.with_name(args.output.stem + "_probe.h5")
    summary = import_ptypy_bragg(args.source, args.output, probe_out, upsampling=args.upsampling)
    for line in summary.lines():
        print(line)
    print(f"next: pxm reconstruct {args.output} --probe-file {probe_out} -o results.h5")
    return 0


def cmd_reconstruct_thin_layer(args: argparse.Namespace) -> int:
    """``pxm reconstruct-thin-layer``: known probe, thin layer, slab found by the data (analysis.solvers.lattice)."""
    import time

    from analysis.dataset import read_dataset, scan_axes
    from analysis.probe_file import p2_from_probe_file, read_probe_file
    from analysis.solvers.lattice import ThinLayerOptions, reconstruct_thin_layer, write_thin_layer_result

    check_output_path(args.output, "-o", inputs=(args.dataset, args.probe_file))
    if not Path(args.dataset).is_file():
        raise ValueError(f"{args.dataset}: no such file")
    ds = read_dataset(args.dataset)
    g = ds.geometry
    thick = args.thickness_m
    t_sample = ds.sample.get("thickness_m") if isinstance(ds.sample, dict) else None
    if thick is None and isinstance(t_sample, (int, float)) and t_sample > 0:
        thick = [0.75 * t_sample, t_sample, 1.25 * t_sample]
    opts = ThinLayerOptions(n_offsets=args.offsets, n_search_iterations=args.search_iterations,
                            n_iterations=args.iterations, **({"thicknesses_m": tuple(thick)} if thick else {}))
    p2, how = p2_from_probe_file(read_probe_file(args.probe_file), g)
    stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    t0 = time.perf_counter()
    res = reconstruct_thin_layer(ds.frames, ds.detector_mask, stage, g, p2, g, sample=dict(ds.sample),
                                 options=opts)
    wall = time.perf_counter() - t0
    write_thin_layer_result(str(args.output), res, metadata={"dataset": str(args.dataset),
                                                              "probe_file": str(args.probe_file), "probe": how})
    c = res.search.chosen
    print(f"probe: {args.probe_file} ({how}), held fixed")
    print(f"{len(res.search.trials)} slabs tried ({', '.join(f'{t * 1e6:g}' for t in opts.thicknesses_m)} µm × "
          f"{opts.n_offsets} offsets, {opts.n_search_iterations} map iterations each); chosen: T = "
          f"{c.thickness_m * 1e6:.3g} µm, offset {c.offset_m * 1e9:+.0f} nm along n = "
          f"({', '.join(f'{v:.3f}' for v in res.normal)}), {c.n_voxels} voxels")
    print(f"wrote {args.output}: R-factor {c.r_factor:.4g} after {opts.n_iterations} more iterations, {wall:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pxm`` command."""
    from pxm.recipe_args import one_line_warnings

    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings(args.command):           # e.g. --allow-undersampled: the sampling check's warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        runengine = sys.modules.get("pxm.runengine")    # loaded by every command that can raise this one
        if runengine is not None and isinstance(exc, runengine.BeamtimeInterrupted):
            print(f"pxm {args.command}: {exc.line(getattr(args, 'data_dir', '.'))}", file=sys.stderr)
            return exc.exit_code
        print(f"pxm {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except (ValueError, ConnectionError, RuntimeError, TimeoutError, OSError) as exc:
        runengine = sys.modules.get("pxm.runengine")
        if runengine is not None and isinstance(exc, runengine.ScanInterrupted):   # stop document written
            print(f"pxm {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pxm {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
