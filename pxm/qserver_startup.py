"""Startup module for bluesky-queueserver (``start-re-manager --startup-module pxm.qserver_startup``).

Importing it builds the namespace (see :mod:`pxm.qserver`); import ``pxm.qserver`` instead
from library code. With ``PXM_TILED_URI`` set, it first checks, as ``pxm demo`` does before any frame,
that the Tiled server reads detector files written to ``PXM_DATA_DIR/raw``
(:func:`pxm.catalog.check_server_reads`); otherwise the worker refuses to start with one line naming the fix.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pxm.qserver import namespace_from_env


def check_data_dir_served(env: Mapping[str, str]) -> None:
    """Raise ValueError (one line) unless the Tiled server of ``PXM_TILED_URI`` serves ``PXM_DATA_DIR/raw``.

    Parameters
    ----------
    env
        The worker's environment (``PXM_DATA_DIR``, default ``pxm-data``; ``PXM_TILED_URI``;
        ``PXM_TILED_API_KEY``). Without a URI or a key nothing is checked here (no ``RE`` writes to Tiled;
        a URI without a key is refused by :func:`pxm.qserver.build_namespace`).
    """
    import httpx

    from pxm.catalog import check_server_reads, connect

    uri, key = env.get("PXM_TILED_URI"), env.get("PXM_TILED_API_KEY")
    if not uri or not key:
        return
    raw_dir = Path(env.get("PXM_DATA_DIR", "pxm-data")) / "raw"
    try:
        check_server_reads(connect(uri, key), raw_dir, uri)
    except ValueError as exc:
        cause = exc.__cause__
        why = (f"HTTP {cause.response.status_code}" if isinstance(cause, httpx.HTTPStatusError)
               else type(cause).__name__ if cause is not None else "it served other bytes")
        raise ValueError(f"pxm queue server: the Tiled server at PXM_TILED_URI={uri} cannot read detector files "
                         f"written to PXM_DATA_DIR/raw = {raw_dir.resolve()} ({why}); set PXM_DATA_DIR to the "
                         "folder that server was started with (`pxm serve --data-dir D` serves D/raw, so "
                         "PXM_DATA_DIR=D or a folder inside D/raw) and open the environment again") from None


def startup_namespace(env: Mapping[str, str]) -> dict[str, Any]:
    """The worker namespace: :func:`check_data_dir_served`, then :func:`pxm.qserver.namespace_from_env`."""
    check_data_dir_served(env)
    return namespace_from_env()


globals().update(startup_namespace(os.environ))
