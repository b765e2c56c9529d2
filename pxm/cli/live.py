"""``pxm live-consumer`` and ``pxm replay``: the live pipeline from a document stream."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pxm.cli._common import API_KEY_ENV, EXIT_POSTPROCESSING_FAILED, TILED_URI_ENV, _need_key, check_output_path


def _live_callback(args: argparse.Namespace, *, publish: bool = True):
    """A LiveReconstructionCallback publishing to ``args.tiled_uri`` (nowhere without it, or with ``publish`` off)."""
    from pxm.live.options import LiveOptions, live_recipe
    from pxm.live.router import LiveReconstructionCallback

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
    from pxm.live.feed import consume_live

    cb, _ = _live_callback(args)
    _print_summaries(consume_live(cb, zmq=args.zmq, nats=args.nats, stream=args.stream, subject=args.subject,
                                  once=args.once, timeout_s=args.timeout,
                                  on_listening=lambda line: print(f"pxm live-consumer: {line}", flush=True)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Push a recorded run (Tiled or JSONL) through the live callback; keep its final result (-o, --publish)."""
    import dataclasses

    from pxm.live.replay import jsonl_documents, replay_documents, tiled_documents

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
    from pxm.live.replay import REPLAY_TIMEOUT_S

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
