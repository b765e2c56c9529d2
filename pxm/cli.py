"""The ``pxm`` command line: ``pxm serve``, ``pxm demo``, ``pxm runs``.

Heavy imports sit inside the command functions so ``pxm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_DATA_DIR = Path("pxm-data")
API_KEY_ENV = "PXM_TILED_API_KEY"


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
    from pxm.catalog import TiledService, ensure_layout

    service = TiledService(_server_config(args)).start()
    ensure_layout(service.client())
    print(f"Tiled server: {service.uri}")
    print(f"API key:      {service.config.api_key}")
    print(f"data folder:  {service.config.data_dir}  (detector files under {service.config.raw_path})")
    print(f"catalog:      {service.config.resolved_catalog_uri}")
    print(f"connect:      from tiled.client import from_uri; c = from_uri('{service.uri}', "
          f"api_key='{service.config.api_key}')")
    print("Ctrl-C stops the server.")
    try:
        return service.wait()
    except KeyboardInterrupt:
        service.stop()
        return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs in a Tiled server's raw catalog."""
    from pxm.catalog import connect, ensure_layout

    if not args.api_key:
        print(f"pxm runs: give --api-key or set ${API_KEY_ENV}", file=sys.stderr)
        return 2
    raw, processed = ensure_layout(connect(args.tiled_uri, args.api_key))
    for uid in raw:
        start = raw[uid].metadata["start"]
        print(f"{uid}  scan_id={start.get('scan_id')}  plan={start.get('plan_name')}  "
              f"sample={start.get('sample', {}).get('name') if isinstance(start.get('sample'), dict) else start.get('sample')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a whole simulated beamtime on an embedded Tiled server."""
    from pxm.demo import DemoOptions, run_demo

    opts = DemoOptions(full=args.full, seed=args.seed, n_raster=args.raster, n_angles=args.angles,
                       roi_px=tuple(args.roi))
    return run_demo(_server_config(args), opts, tiled_uri=args.tiled_uri)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pxm``."""
    parser = argparse.ArgumentParser(prog="pxm", description="Coherent X-ray Bragg microscopy: scan to science.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the embedded Tiled server on its own")
    _add_server_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a simulated Bragg-ptychography beamtime into Tiled")
    _add_server_args(p)
    p.add_argument("--tiled-uri", default=None, help="use this running server instead of starting one")
    p.add_argument("--full", action="store_true", help="the seed's full 20 × 20 × 42 scan with 200 × 160 frames")
    p.add_argument("--raster", type=int, default=5, help="raster points per axis (default 5)")
    p.add_argument("--angles", type=int, default=9, help="rocking angles (default 9)")
    p.add_argument("--roi", type=int, nargs=2, default=(64, 64), metavar=("ROWS", "COLS"),
                   help="detector region saved per frame (default 64 64)")
    p.add_argument("--seed", type=int, default=2021, help="random seed of the simulation")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("runs", help="list runs in a Tiled server")
    p.add_argument("--tiled-uri", required=True)
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pxm`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, ConnectionError, RuntimeError, TimeoutError) as exc:
        print(f"pxm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
