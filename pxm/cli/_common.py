"""What every command group shares: defaults, environment variables, server arguments, exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import os
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


def _need_key(args: argparse.Namespace, cmd: str) -> str:
    if not args.api_key:
        raise ValueError(f"give --api-key or set ${API_KEY_ENV}")
    return args.api_key


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
