"""``pxm runs``, ``pxm export`` and ``pxm recover``: the runs of a catalog."""

from __future__ import annotations

import argparse
import sys

from pxm.cli._common import API_KEY_ENV, _need_key


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


def cmd_export(args: argparse.Namespace) -> int:
    """Export a Bragg-ptychography run from Tiled to a dataset file."""
    from pxm.run_export import ExportOptions, export_run

    ds = export_run(args.tiled_uri, _need_key(args, "export"), args.run, args.output,
                    options=ExportOptions(allow_partial=args.allow_partial))
    print(f"wrote {args.output}: {ds.layout} layout, frames {tuple(ds.frames.shape)}, "
          f"{int((~ds.detector_mask).sum())} masked pixels, sample {ds.sample.get('name')!r}")
    return 0
