"""Many writers into one Tiled server: no frame lost, no row duplicated (issue 15, "many writers").

Four scan processes (real RunEngine, TiledWriter, JSONL) write at once into one real ``tiled serve``
process while a reader polls every run's table and a live consumer publishes to ``/processed``. Every
run must then read back whole with ``run["primary"].read()``, each frame exactly once, and export.

On pxm's former embedded configuration (DuckDB tables behind one connection shared by Tiled's request
threads) this failed: HTTP 500 "cannot commit - no transaction is active", then duplicated event rows
from TiledWriter's retries, once a crashed server. The same test runs against a facility deployment,
a Tiled catalog on a private PostgreSQL server started on loopback (skipped, with the reason, only where
the PostgreSQL binaries are missing).
"""

from __future__ import annotations

import pytest

from pxm.catalog import TiledServerConfig, TiledService, connect, ensure_layout
from pxm.cli import main
from testing.concurrent_scan import check_run_complete, run_concurrent_scans
from testing.postgres import missing_reason, private_postgres

KEY = "concurrencytest0123456789abcdef0"
N_WRITERS = 4
N_RASTER, N_ANGLES = 2, 6            # 24 frames per writer, 96 in all (kept small: a CI test)


def _many_writers(service: TiledService, tmp_path, capsys) -> None:
    cfg = service.config
    outcome = run_concurrent_scans(service.uri, KEY, cfg.data_dir, n_writers=N_WRITERS, n_raster=N_RASTER,
                                   n_angles=N_ANGLES)
    print(f"\n{N_WRITERS} writers, {outcome.n_frames} frames in {outcome.wall_s:.1f} s "
          f"({outcome.frames_per_s:.1f} frames/s), {outcome.n_reads} reader polls, "
          f"{outcome.n_published} consumer writes, {outcome.live_array_reads} reads of running scans' frames "
          f"({outcome.live_array_errors} failed), catalog {cfg.resolved_catalog_uri.split('@')[-1]}")
    assert outcome.errors == (), outcome.errors[:5]
    assert outcome.n_reads >= 1 and outcome.n_published >= 1        # both really ran beside the writers
    assert len({r["uid"] for r in outcome.runs}) == N_WRITERS
    raw, _ = ensure_layout(connect(service.uri, KEY))
    for r in outcome.runs:
        check_run_complete(raw, r["uid"], N_RASTER * N_RASTER * N_ANGLES)
    # and each run exports (the command a user runs next)
    for i, r in enumerate(outcome.runs):
        out = tmp_path / f"run{i}.h5"
        rc = main(["export", r["uid"], "--tiled-uri", service.uri, "--api-key", KEY, "-o", str(out)])
        assert rc == 0, capsys.readouterr().err
        assert out.is_file()
    # The server failed no write (the former 500 "no transaction is active" of table appends).
    failed = [line for line in service.log_path.read_text(errors="replace").splitlines()
              if "500 Internal Server Error" in line or "Traceback" in line]
    # nor any read: a running scan's frames are read with pxm.recover.read_frames_so_far (docs/reliability.md)
    assert failed == [], failed[:3]


def test_four_scans_at_once_into_the_embedded_server_lose_and_duplicate_nothing(tmp_path, capsys):
    cfg = TiledServerConfig(data_dir=tmp_path / "data", api_key=KEY)
    with TiledService(cfg) as service:
        _many_writers(service, tmp_path, capsys)


@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_four_scans_at_once_into_a_postgresql_catalog_lose_and_duplicate_nothing(tmp_path, capsys):
    with private_postgres() as pg:
        cfg = TiledServerConfig(data_dir=tmp_path / "data", api_key=KEY, catalog_uri=pg.uri())
        assert cfg.table_storage_uri.startswith("postgresql://")          # event rows in PostgreSQL too
        with TiledService(cfg) as service:
            _many_writers(service, tmp_path, capsys)


def test_the_embedded_server_writes_tables_through_one_connection(tmp_path):
    """The configuration that makes the embedded server safe: SQLite tables, pool of one, no overflow."""
    cfg = TiledServerConfig(data_dir=tmp_path, api_key=KEY)
    d = cfg.config_dict(8000)
    args = d["trees"][0]["args"]
    assert f"sqlite:///{tmp_path.resolve() / 'tables.sqlite'}" in args["writable_storage"]
    assert not any(str(s).startswith("duckdb") for s in args["writable_storage"])
    assert d["storage_pool_size"] == 1 and cfg.server_env() == {"TILED_STORAGE_MAX_OVERFLOW": "0"}


def test_a_data_folder_of_an_older_pxm_keeps_its_duckdb_tables_readable(tmp_path):
    (tmp_path / "tables.duckdb").write_bytes(b"")
    args = TiledServerConfig(data_dir=tmp_path, api_key=KEY).config_dict(8000)["trees"][0]["args"]
    assert f"duckdb:///{tmp_path.resolve() / 'tables.duckdb'}" in args["readable_storage"]


def test_a_postgresql_catalog_keeps_the_event_rows_in_postgresql_through_one_connection(tmp_path):
    cfg = TiledServerConfig(data_dir=tmp_path, api_key=KEY, catalog_uri="postgresql+asyncpg://pxm:pw@db:5432/pxm")
    d = cfg.config_dict(8000)
    assert cfg.table_storage_uri == "postgresql://pxm:pw@db:5432/pxm"
    assert cfg.table_storage_uri in d["trees"][0]["args"]["writable_storage"]
    assert d["storage_pool_size"] == 1 and cfg.server_env() == {"TILED_STORAGE_MAX_OVERFLOW": "0"}
