"""The embedded Tiled server: configuration, start/stop, and the pxm container layout.

The server is a real ``tiled serve config`` process: SQLite catalog + files in a data
folder by default, bound to 127.0.0.1, single-user API key. ``catalog_uri`` may point at
PostgreSQL (``postgresql+asyncpg://user:pw@host/db``) for a facility deployment.

Layout inside the server (``docs/decisions/0006-tiled-layout.md``):

* ``/raw``        — a ``CatalogOfBlueskyRuns``: one node per run uid (TiledWriter);
* ``/processed``  — result containers, each with ``raw_uid`` in its metadata.
"""

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

    def config_dict(self, port: int) -> dict[str, Any]:
        """The ``tiled serve config`` configuration as a dict."""
        return {
            "authentication": {"single_user_api_key": self.api_key, "allow_anonymous_access": False},
            "trees": [{
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": self.resolved_catalog_uri,
                    "writable_storage": [str(self.data_dir / "data"),
                                         f"duckdb:///{self.data_dir / 'tables.duckdb'}"],
                    "readable_storage": [str(self.raw_path)],
                    "init_if_not_exists": True,
                },
            }],
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
        """Write the config, start the server and wait until /healthz answers."""
        import yaml

        from pxm.datadir import data_umask, file_mode, secure_dir

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
        # The server writes the catalog database, zarr arrays and duckdb tables: private like the rest.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tiled", "serve", "config", str(cfg_path)],
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True, umask=data_umask(),
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
        print(f"starting Tiled (catalog {server.resolved_catalog_uri}) ...")
        service = TiledService(server).start()
        tiled_uri = service.uri
    try:
        raw, processed = ensure_layout(connect(tiled_uri, server.api_key))
        yield TiledSession(uri=tiled_uri, raw=raw, processed=processed, started_here=service is not None)
        if service is not None:
            print(f"the server stops now; `pxm serve --data-dir {server.data_dir} --api-key {server.api_key}` "
                  "serves the same data again")
    finally:
        if service is not None:
            service.stop()
