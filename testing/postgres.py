"""A private PostgreSQL server for tests: ``initdb`` into a temporary folder, loopback only.

The server listens on 127.0.0.1 at a free port, its unix socket lives in the same temporary folder,
and it trusts local connections of the user that owns it (no password on loopback; nothing else can
reach it). PostgreSQL refuses to run as root, so under root the cluster is owned by the ``postgres``
system account (``runuser``); otherwise by the current user.

:func:`postgres_binaries` finds ``initdb``/``pg_ctl`` (``$PXM_PG_BINDIR``, the distribution's
``/usr/lib/postgresql/*/bin`` or the ``PATH``); :func:`missing_reason` says why a server cannot be
started here, for a ``pytest.skip``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pxm.catalog import free_port


@dataclass(frozen=True)
class PostgresServer:
    """A running private server: where it listens and who may log in."""

    host: str
    port: int
    user: str
    database: str
    socket_dir: Path

    def uri(self, driver: str = "asyncpg") -> str:
        """SQLAlchemy URI of the database (``postgresql+asyncpg://...`` for a Tiled catalog)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}"


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when they are not installed."""
    candidates = [os.environ.get("PXM_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if c and all((Path(c) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def _run_as() -> list[str]:
    """Command prefix that runs the server as a non-root user (``[]`` when we are not root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def missing_reason() -> str | None:
    """Why a private PostgreSQL server cannot be started on this machine (None when it can)."""
    if postgres_binaries() is None:
        return ("PostgreSQL binaries (initdb, pg_ctl) not found: install the distribution's postgresql "
                "package (.ci/run does where it runs as root with apt-get) or set $PXM_PG_BINDIR")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: PostgreSQL refuses to run as root"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' account to own the test cluster"
    return None


@contextmanager
def private_postgres(*, database: str = "pxm", start_timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """Start a throw-away PostgreSQL cluster in a new temporary folder for the block; stop and remove it after.

    Parameters
    ----------
    database
        Database created for the caller (owned by the cluster's user).
    start_timeout_s
        How long ``pg_ctl start`` may wait for the server to accept connections.
    """
    import tempfile

    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    bindir = postgres_binaries()
    assert bindir is not None
    prefix = _run_as()
    user = "postgres" if prefix else pwd.getpwuid(os.geteuid()).pw_name
    tmp_dir = Path(tempfile.mkdtemp(prefix="pxm-pg-"))     # in /tmp: reachable by the postgres account
    if prefix:
        shutil.chown(tmp_dir, user=user)
    try:
        with _cluster(bindir, prefix, user, tmp_dir, database, start_timeout_s) as server:
            yield server
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextmanager
def _cluster(bindir: Path, prefix: list[str], user: str, tmp_dir: Path, database: str,
             start_timeout_s: float) -> Iterator[PostgresServer]:
    pgdata = tmp_dir / "pgdata"
    log = tmp_dir / "postgres.log"
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=start_timeout_s + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
                               + (f"\n{log.read_text()[-1000:]}" if log.exists() else ""))

    run(str(bindir / "initdb"), "-D", str(pgdata), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={tmp_dir} "
            "-c fsync=off -c max_connections=100")
    run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts, "-w",
        "-t", str(int(start_timeout_s)), "start")
    try:
        run(str(bindir / "createdb") if (bindir / "createdb").is_file() else "createdb",
            "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
        yield PostgresServer(host="127.0.0.1", port=port, user=user, database=database, socket_dir=tmp_dir)
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
