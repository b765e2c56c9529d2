"""The embedded Tiled server: configuration, start/stop, and the pxm container layout.

The server is a real ``tiled serve config`` process: SQLite catalog + files in a data
folder by default, bound to 127.0.0.1, single-user API key. ``catalog_uri`` may point at
PostgreSQL (``postgresql+asyncpg://user:pw@host/db``) for a facility deployment.

Layout inside the server (``docs/tiled-layout.md``, ``docs/decisions/0006-tiled-layout.md``):

* ``/raw``        — a ``CatalogOfBlueskyRuns``: one node per run uid (TiledWriter), never written to afterwards;
* ``/processed``  — result containers, each with ``raw_uid`` and ``raw_key`` in its metadata
  (``pxm.publication.find_results``).
"""

# Why this module is long: the embedded Tiled server and its catalog (SQLite or PostgreSQL, layout, keys) are one
# configuration that must agree with itself (docs/decisions/0006-tiled-layout.md).

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RAW_CONTAINER = "raw"
PROCESSED_CONTAINER = "processed"
HEALTH_TIMEOUT_S = 60.0
MIN_API_KEY_LENGTH = 16
"""Shortest API key pxm accepts (``pxm serve``, ``pxm demo``, every ``--api-key``)."""


def check_api_key(api_key: str) -> str:
    """Return ``api_key`` or raise ValueError: ASCII letters and digits only, at least 16 of them.

    Tiled accepts only alphanumeric keys; a short key can be guessed, so pxm refuses keys shorter than
    :data:`MIN_API_KEY_LENGTH` (a generated key is 32 hex digits) wherever it takes one.
    """
    if not api_key or not api_key.isalnum() or not api_key.isascii():
        raise ValueError(
            f"Tiled API key {api_key!r} is not usable: it must be non-empty ASCII letters and digits "
            "only (Tiled rejects other characters and the server would fail to start)"
        )
    if len(api_key) < MIN_API_KEY_LENGTH:
        raise ValueError(
            f"the API key has {len(api_key)} characters; pxm needs at least {MIN_API_KEY_LENGTH} letters and "
            "digits: use the key `pxm serve` printed, or leave --api-key out and unset $PXM_TILED_API_KEY "
            "for a generated one (32 hex digits, e.g. python -c 'import secrets; print(secrets.token_hex(16))')"
        )
    return api_key


def check_port_free(host: str, port: int) -> None:
    """Raise OSError naming the fix when ``port`` on ``host`` is already taken (e.g. by another server).

    Without this check a second server fails to bind while the health check is answered by the first
    one, and every request goes to the other server's catalog.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise OSError(f"cannot bind {host}:{port} ({exc.strerror or exc}): check --host and --port") from exc
            raise OSError(
                f"port {port} on {host} is already in use ({exc.strerror or exc}), perhaps by another "
                "`pxm serve`/`pxm demo`: stop that server, pick another --port, or leave --port out for a free one"
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, kw_only=True)
class TiledServerConfig:
    """Where the embedded Tiled server keeps its catalog, data and detector files."""

    data_dir: Path
    """Folder for the catalog database, written arrays (zarr), tables and logs."""
    raw_dir: Path | None = None
    """Folder the detectors write HDF5 into; the server may serve files under it (default data_dir/raw)."""
    catalog_uri: str | None = None
    """SQLAlchemy URI of the catalog (default: SQLite in data_dir/catalog.db)."""
    host: str = "127.0.0.1"
    """Interface to bind; keep loopback unless the facility network is intended."""
    port: int = 0
    """TCP port; 0 picks a free one at start."""
    api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    """Single-user API key (alphanumeric)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())
        if self.raw_dir is not None:
            object.__setattr__(self, "raw_dir", Path(self.raw_dir).resolve())
        check_api_key(self.api_key)
        if not (0 <= self.port < 65536):
            raise ValueError(f"TiledServerConfig.port must be in [0, 65535], got {self.port}")

    @property
    def raw_path(self) -> Path:
        """Folder for detector files (served as external assets)."""
        return self.raw_dir if self.raw_dir is not None else self.data_dir / "raw"

    @property
    def resolved_catalog_uri(self) -> str:
        """The catalog URI in use."""
        return self.catalog_uri or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def table_storage_uri(self) -> str:
        """Where Tiled keeps appendable tables (the event rows TiledWriter appends).

        The PostgreSQL catalog's own database for a facility deployment (``postgresql://``, Tiled's
        ADBC driver), otherwise an SQLite file in the data folder, used through one pooled connection
        (see :meth:`config_dict`).
        """
        catalog = self.resolved_catalog_uri
        if catalog.startswith("postgresql"):
            scheme, rest = catalog.split("://", 1)
            return f"postgresql://{rest}" if "+" in scheme else catalog
        return f"sqlite:///{self.data_dir / 'tables.sqlite'}"

    def server_env(self) -> dict[str, str]:
        """Environment the ``tiled serve`` process needs on top of ours (see :meth:`config_dict`)."""
        return {"TILED_STORAGE_MAX_OVERFLOW": "0"}

    def config_dict(self, port: int) -> dict[str, Any]:
        """The ``tiled serve config`` configuration as a dict.

        Tables (event rows) of an embedded server go to SQLite with a pool of exactly one connection
        (``storage_pool_size=1``, no overflow): Tiled serves requests from a thread pool, and its
        default embedded table store, DuckDB, shares one connection between all threads, so two scans
        appending at once interleave their transactions ("cannot commit - no transaction is active",
        HTTP 500, then duplicated rows from TiledWriter's retries, or a crashed server); SQLite through
        ADBC has no busy timeout, so several connections fail with "database is locked". One pooled
        connection makes every table write a whole transaction, queued, not refused. PostgreSQL gets the
        same one-connection table pool: with Tiled's default pool, four scans starting at once lost a run's
        event table (``primary/internal`` missing, 2026-12-07, a fresh-clone CI run), as concurrent
        creation of the same table races in PostgreSQL. Tables written by an older
        pxm (``tables.duckdb``) stay readable.

        Tiled replaces a pool overflow of 0 in its configuration file by its default (10), so the
        "no overflow" half travels in the server's environment (:meth:`server_env`).
        """
        readable = [str(self.raw_path)]
        legacy_tables = self.data_dir / "tables.duckdb"
        if legacy_tables.exists():
            readable.append(f"duckdb:///{legacy_tables}")
        args: dict[str, Any] = {
            "uri": self.resolved_catalog_uri,
            "writable_storage": [str(self.data_dir / "data"), self.table_storage_uri],
            "readable_storage": readable,
            "init_if_not_exists": True,
        }
        pool = {"storage_pool_size": 1}
        return {
            "authentication": {"single_user_api_key": self.api_key, "allow_anonymous_access": False},
            "trees": [{"path": "/", "tree": "catalog", "args": args}],
            **pool,
            # run.documents() (replay) needs the json-seq exporter registered on the server.
            "media_types": {"BlueskyRun": {
                "application/json-seq": "bluesky_tiled_plugins.exporters:json_seq_exporter"}},
            "uvicorn": {"host": self.host, "port": port},
        }


class TiledService:
    """A ``tiled serve`` process for the lifetime of a ``with`` block (or start()/stop()).

    If ``stop()`` is not called the process is left running on purpose only when
    ``detach=True`` (``pxm serve`` in the background); otherwise it is terminated.
    """

    def __init__(self, config: TiledServerConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_file: Any = None

    @property
    def uri(self) -> str:
        """Base URL of the running server."""
        if self._port is None:
            raise RuntimeError("TiledService.uri: the server is not started; call start() first")
        return f"http://{self.config.host}:{self._port}"

    @property
    def log_path(self) -> Path:
        """Server log file (stdout and stderr of the process)."""
        return self.config.data_dir / "tiled-server.log"

    def start(self) -> TiledService:
        """Write the config, start the server and wait until /healthz answers.

        Idempotent: a server this object already runs is kept (a second process would leak the first);
        one that exited on its own is released and started again.
        """
        import yaml

        from pxm.datadir import data_umask, file_mode, secure_dir

        if self.running:
            return self
        if self._proc is not None or self._log_file is not None:
            self.stop()                        # exited on its own: close its handle and log before restarting
        cfg = self.config
        for d in (cfg.data_dir, cfg.data_dir / "data", cfg.raw_path):
            secure_dir(d)                      # 0700 (0750 with $PXM_GROUP_ACCESS) when created here
        if cfg.port:
            check_port_free(cfg.host, cfg.port)
        self._port = cfg.port or free_port(cfg.host)
        cfg_path = cfg.data_dir / "tiled-config.yml"
        cfg_path.write_text(yaml.safe_dump(cfg.config_dict(self._port), sort_keys=False))
        os.chmod(cfg_path, 0o600)  # holds the API key
        self._log_file = open(self.log_path, "ab")
        os.chmod(self.log_path, file_mode())
        # The server writes the catalog database, zarr arrays and SQLite tables: private like the rest.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tiled", "serve", "config", str(cfg_path)],
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True, umask=data_umask(),
            env={**os.environ, **cfg.server_env()},
        )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(
                        f"Tiled server exited with code {self._proc.returncode} during start-up; "
                        f"last lines of {self.log_path}:\n{self._tail_log()}"
                    )
                try:
                    if client.get(f"{self.uri}/healthz", timeout=1.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"Tiled server at {self.uri} did not answer /healthz within {HEALTH_TIMEOUT_S:.0f} s; "
            f"see {self.log_path}:\n{self._tail_log()}"
        )

    def _tail_log(self, n_lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """Process id of the server (None before start and after stop); fault tests kill it with SIGKILL."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the server process (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def wait(self) -> int:
        """Block until the server exits (``pxm serve``); return its exit code."""
        if self._proc is None:
            raise RuntimeError("TiledService.wait: the server is not started")
        return self._proc.wait()

    def client(self) -> Any:
        """A Tiled client of the server root (authenticated with the API key)."""
        return connect(self.uri, self.config.api_key)

    def __enter__(self) -> TiledService:
        """Start the server unless it already runs (:meth:`start`); the block's end stops it either way."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect(uri: str, api_key: str) -> Any:
    """Connect a Tiled client to ``uri``; every way this fails is one exception whose message names the fix.

    The one place the CLI opens a Tiled client: a short or malformed key or a URI that is not http(s)
    gives ValueError, a down server ConnectionError, a refused key PermissionError (all caught by
    :func:`pxm.cli.main` and printed as one line).
    """
    from urllib.parse import urlsplit

    from tiled.client import from_uri

    check_api_key(api_key)
    parts = urlsplit(uri or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"--tiled-uri {uri!r} is not an http(s) URL: give the address `pxm serve` printed, "
            "e.g. http://127.0.0.1:8000"
        )
    try:
        return from_uri(uri, api_key=api_key)
    except httpx.ConnectError as exc:
        raise ConnectionError(
            f"cannot reach the Tiled server at {uri} ({exc}); start it with `pxm serve` "
            "or pass the right --tiled-uri"
        ) from exc
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        if code in (401, 403):
            raise PermissionError(
                f"the Tiled server at {uri} refused the API key (HTTP {code}): pass the key that server's "
                "`pxm serve` printed with --api-key or $PXM_TILED_API_KEY"
            ) from exc
        raise ConnectionError(
            f"the Tiled server at {uri} answered HTTP {code} ({exc.response.reason_phrase}); "
            "check --tiled-uri and the server's log"
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ConnectionError(f"cannot talk to a Tiled server at {uri} ({exc}); check --tiled-uri") from exc


KEY_FILE_NAME = "api-key"
"""File in the data folder holding the server's API key (mode 0600), so no printed command carries it."""


def write_key_file(data_dir: Path, api_key: str) -> Path:
    """Write ``api_key`` to ``data_dir/api-key`` readable by the owner only (0600); return the path.

    Printed hints name this file (``PXM_TILED_API_KEY=$(cat FILE) pxm ...``) instead of the key, so the
    key stays out of terminal scroll-back, shell history and process listings.
    """
    from pxm.datadir import secure_dir

    path = secure_dir(Path(data_dir)) / KEY_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)              # an existing file keeps no wider mode
        f.write(api_key + "\n")
    return path


def redacted_uri(uri: str) -> str:
    """``uri`` with its password (``scheme://user:PASSWORD@host``) replaced by ``***``, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


PROBE_DATASET = "pxm_probe"


def check_server_reads(root: Any, raw_dir: Path, uri: str) -> None:
    """Raise ValueError unless the server at ``uri`` serves files written in ``raw_dir``, before any scan.

    The detectors write HDF5 into ``raw_dir`` and TiledWriter registers those files with the server,
    which serves only files under its readable storage (``pxm serve --data-dir D`` reads ``D/raw``).
    A ``--data-dir`` the server cannot read, or a server on another machine or data folder, would have
    every frame refused (HTTP 500) while the scan goes on. Here a small HDF5 file holding a random
    token is written to ``raw_dir``, registered under a scratch key and read back through the server;
    anything but the same token is the error, naming the fix. The scratch node and file are removed.
    """
    import h5py
    import numpy as np
    from tiled.structures.array import ArrayStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import Asset, DataSource, Management

    from pxm.datadir import secure_dir

    raw_dir = secure_dir(Path(raw_dir).resolve())
    token = secrets.token_hex(8)
    expected = np.frombuffer(bytes.fromhex(token), dtype=np.uint8)
    path = raw_dir / f".pxm-probe-{token}.h5"
    key = f"pxm-probe-{token}"
    with h5py.File(path, "w") as f:
        f[PROBE_DATASET] = expected
    fix = (f"the Tiled server at {uri} cannot read detector files written to {raw_dir} (%s): pass the "
           "--data-dir that server was started with (`pxm serve --data-dir D` serves D/raw), or leave "
           "--tiled-uri out to start a server on this --data-dir")
    registered = False
    try:
        ds = DataSource(structure_family=StructureFamily.array, mimetype="application/x-hdf5",
                        structure=ArrayStructure.from_array(expected), parameters={"dataset": PROBE_DATASET},
                        management=Management.external,
                        assets=[Asset(data_uri=path.as_uri(), is_directory=False, parameter="data_uris", num=0)])
        try:
            node = root.new(StructureFamily.array, [ds], key=key, metadata={"purpose": "pxm readable-storage probe"})
            registered = True
            got = np.asarray(node.read())
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            detail = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__
            raise ValueError(fix % f"HTTP {detail}" if isinstance(detail, int) else fix % detail) from exc
        if not np.array_equal(got, expected):
            raise ValueError(fix % "it served other bytes for the probe file")
    finally:
        path.unlink(missing_ok=True)
        if registered:
            _delete_probe(root, key)


def _delete_probe(root: Any, key: str, attempts: int = 3) -> None:
    """Remove the scratch probe node; best effort (after a 500 the server may drop the connection once)."""
    for _ in range(attempts):
        try:
            root.delete_contents(key, external_only=True)
            return
        except httpx.TransportError:
            time.sleep(0.2)
        except httpx.HTTPStatusError:
            return                                   # refused: the inert node stays, named pxm-probe-*


def ensure_layout(root: Any) -> tuple[Any, Any]:
    """Create (if needed) and return the ``raw`` run catalog and the ``processed`` container."""
    from tiled.structures.core import Spec

    if RAW_CONTAINER not in root:
        root.create_container(RAW_CONTAINER, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")])
    if PROCESSED_CONTAINER not in root:
        root.create_container(PROCESSED_CONTAINER)
    return root[RAW_CONTAINER], root[PROCESSED_CONTAINER]


@dataclass(frozen=True)
class TiledSession:
    """A reachable server and its pxm containers (what :func:`tiled_session` yields)."""

    uri: str
    raw: Any
    processed: Any
    started_here: bool


@contextmanager
def tiled_session(server: TiledServerConfig, tiled_uri: str | None = None) -> Iterator[TiledSession]:
    """Reach ``tiled_uri``, or start an embedded server from ``server`` for the block and stop it after.

    Files written in the block (detector HDF5, JSONL, figures) are private to the user, or to the
    group with ``$PXM_GROUP_ACCESS`` (:func:`pxm.datadir.private_files` sets the process umask).
    """
    from pxm.datadir import private_files

    with private_files(), _tiled_session(server, tiled_uri) as session:
        yield session


@contextmanager
def _tiled_session(server: TiledServerConfig, tiled_uri: str | None) -> Iterator[TiledSession]:
    service = None
    if tiled_uri is None:
        print(f"starting Tiled (catalog {redacted_uri(server.resolved_catalog_uri)}) ...")
        service = TiledService(server).start()
        tiled_uri = service.uri
    try:
        root = connect(tiled_uri, server.api_key)
        if service is None:                          # someone else's server: can it read our detector files?
            check_server_reads(root, server.raw_path, tiled_uri)
        raw, processed = ensure_layout(root)
        yield TiledSession(uri=tiled_uri, raw=raw, processed=processed, started_here=service is not None)
        if service is not None:
            key_file = write_key_file(server.data_dir, server.api_key)
            print(f"the server stops now; `PXM_TILED_API_KEY=$(cat {key_file}) pxm serve --data-dir "
                  f"{server.data_dir}` serves the same data again (the key is in {key_file}, mode 0600)")
    finally:
        if service is not None:
            service.stop()


@dataclass(frozen=True)
class RunCounts:
    """What Tiled holds of one run (:func:`tiled_run_counts`): the basis of partial-run marking and recovery."""

    uid: str
    start: dict[str, Any]
    stop: dict[str, Any] | None
    events: dict[str, int]
    """Event rows per stream (rows of the stream's ``internal`` table)."""
    frames: dict[str, int]
    """Length of each external array (detector frames), keyed ``stream/data_key``."""
    duplicate_rows: int
    """Event rows whose ``seq_num`` repeats an earlier row of the same stream (retried appends)."""

    @property
    def has_stop(self) -> bool:
        """True when the run has a stop document."""
        return isinstance(self.stop, dict)

    @property
    def exit_status(self) -> str | None:
        """The stop document's exit status, None without one."""
        return str(self.stop.get("exit_status")) if isinstance(self.stop, dict) else None

    @property
    def expected_frames(self) -> int:
        """Frames the scan should have taken: the start's ``num_points`` unless it ended in success."""
        n_events = self.events.get("primary", 0)
        planned = self.start.get("num_points")
        if self.exit_status != "success" and isinstance(planned, int) and planned > n_events:
            return planned
        return n_events

    @property
    def primary_frames(self) -> int:
        """Frames of the primary stream: its shortest external array, or its event rows without one."""
        lengths = [n for k, n in self.frames.items() if k.startswith("primary/")]
        return min(lengths) if lengths else self.events.get("primary", 0)

    @property
    def missing_frames(self) -> int:
        """Frames the scan should have and Tiled does not hold."""
        return max(self.expected_frames - self.primary_frames, 0)

    @property
    def partial(self) -> bool:
        """No stop document, a stop other than success, or frames missing."""
        return self.exit_status != "success" or self.missing_frames > 0

    def status(self) -> str:
        """One word and the numbers, e.g. ``complete`` or ``PARTIAL(no stop document; 16 of 45 frames missing)``."""
        why = []
        if not self.has_stop:
            why.append("no stop document")
        elif self.exit_status != "success":
            reason = str((self.stop or {}).get("reason") or "")
            why.append(f"exit_status {self.exit_status}" + (" (recovered)" if "recovered by" in reason else ""))
        if self.missing_frames:
            why.append(f"{self.missing_frames} of {self.expected_frames} frames missing")
        if self.duplicate_rows:
            why.append(f"{self.duplicate_rows} duplicated event rows")
        if not why:
            return "complete"
        return ("PARTIAL(" if self.partial else "DAMAGED(") + "; ".join(why) + ")"


def tiled_run_counts(run: Any) -> RunCounts:
    """Count the events, frames and duplicated event rows of a BlueskyRun client (``raw[uid]``).

    One small read per stream (the ``seq_num`` column) and the external arrays' shapes; no frames are read.
    """
    import numpy as np

    md = dict(run.metadata)
    start = dict(md.get("start") or {})
    events: dict[str, int] = {}
    frames: dict[str, int] = {}
    duplicates = 0
    for stream in run:
        node = run[stream]
        base = getattr(node, "base", node)
        keys = list(base)
        if "internal" in keys:
            seq = np.asarray(base["internal"].read(["seq_num"])["seq_num"])
            events[stream] = int(seq.size)
            duplicates += int(seq.size - np.unique(seq).size)
        else:
            events[stream] = 0
        for key in keys:
            if key == "internal":
                continue
            child = base[key]
            shape = getattr(child, "shape", None)
            if shape:
                frames[f"{stream}/{key}"] = int(shape[0])
    return RunCounts(uid=str(start.get("uid", getattr(run, "item", {}).get("id", "?"))), start=start,
                     stop=md.get("stop") if isinstance(md.get("stop"), dict) else None, events=events,
                     frames=frames, duplicate_rows=duplicates)
