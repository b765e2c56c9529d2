"""Who may read the data folder: private (0700 folders, 0600 files) unless group access is asked for.

The HTTP side of pxm needs an API key, so the files behind it must not be world-readable either:
the raw HDF5 files, the JSONL document copies, the catalog database and Tiled's arrays. pxm does
this in one place rather than at every ``open``:

* :func:`private_files` sets the process umask (``077``, or ``027`` with group access) for the
  block in which a ``pxm demo``/``dfxm-demo`` writes (detector HDF5 in ``devices``, bluesky's
  ``JSONLinesWriter``, TiledWriter's backup, figures), and :class:`pxm.catalog.TiledService`
  starts the Tiled server process with the same umask (catalog database, zarr arrays, duckdb
  tables, written by that process);
* :func:`secure_dir` creates the folders pxm owns with the mode set explicitly, so they are right
  even where the umask is not set (a notebook calling :func:`pxm.runengine.make_run_engine`).

Group access: set ``PXM_GROUP_ACCESS=1`` (``true``/``yes``/``on``) in the environment of
``pxm serve``, ``pxm demo`` or the queue-server worker; folders are then ``0750`` and files ``0640``.
Folders that already exist are left as they are (pxm never loosens or tightens a folder it did not
create).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GROUP_ACCESS_ENV = "PXM_GROUP_ACCESS"
"""Environment variable: a true value gives the group read access to the data folder."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def group_access(value: bool | None = None) -> bool:
    """``value`` if given, otherwise whether ``$PXM_GROUP_ACCESS`` asks for group access."""
    if value is not None:
        return value
    raw = os.environ.get(GROUP_ACCESS_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"${GROUP_ACCESS_ENV}={raw!r} is not understood; use 1/true/yes/on or 0/false/no/off")


def dir_mode(group: bool | None = None) -> int:
    """Mode of the folders pxm creates: ``0o700``, or ``0o750`` with group access."""
    return 0o750 if group_access(group) else 0o700


def file_mode(group: bool | None = None) -> int:
    """Mode of the files pxm creates: ``0o600``, or ``0o640`` with group access."""
    return 0o640 if group_access(group) else 0o600


def data_umask(group: bool | None = None) -> int:
    """The umask giving :func:`dir_mode` folders and :func:`file_mode` files: ``0o077`` or ``0o027``."""
    return 0o027 if group_access(group) else 0o077


def secure_dir(path: Path | str, *, group: bool | None = None) -> Path:
    """Create ``path`` and its missing parents with :func:`dir_mode`; return it.

    Only the folders created here get their mode set (``chmod``, so a permissive umask cannot widen
    it); a folder that already exists keeps its mode.
    """
    path = Path(path)
    mode = dir_mode(group)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:     # made meanwhile by another process: not ours to chmod
            continue
        os.chmod(d, mode)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    return path


@contextmanager
def private_files(group: bool | None = None) -> Iterator[int]:
    """Set the process umask to :func:`data_umask` for the block (yields it), then restore the old one.

    The umask is per process: everything written in the block by any thread (detector files,
    JSONL, figures) gets :func:`file_mode`/:func:`dir_mode`.
    """
    mask = data_umask(group)
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)
