"""The embedded Tiled server: layout, authentication, and clear errors."""

import pytest

from pxm.catalog import TiledServerConfig, check_api_key, connect, ensure_layout, free_port


def test_layout_has_a_bluesky_run_catalog_and_a_processed_container(tiled_layout):
    root, raw, processed = tiled_layout
    assert {"raw", "processed"} <= set(root)
    assert any(s.name == "CatalogOfBlueskyRuns" for s in raw.specs)
    # idempotent
    raw2, _ = ensure_layout(root)
    assert raw2.uri == raw.uri


def test_server_rejects_a_wrong_api_key(tiled_service):
    with pytest.raises(PermissionError, match="401"):
        c = connect(tiled_service.uri, "wrongkey" * 4)
        list(c)


def test_server_binds_loopback_and_writes_its_config_privately(tiled_service):
    cfg_path = tiled_service.config.data_dir / "tiled-config.yml"
    assert tiled_service.uri.startswith("http://127.0.0.1:")
    assert oct(cfg_path.stat().st_mode & 0o777) == "0o600"
    assert "json_seq_exporter" in cfg_path.read_text()


@pytest.mark.parametrize("key", ["ci-secret", "", "clé"])
def test_non_alphanumeric_api_key_is_refused_before_start(key, tmp_path):
    with pytest.raises(ValueError, match="alphanumeric|letters and digits"):
        check_api_key(key)
    with pytest.raises(ValueError):
        TiledServerConfig(data_dir=tmp_path, api_key=key)


def test_a_server_that_is_down_gives_a_clear_error():
    port = free_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        connect(f"http://127.0.0.1:{port}", "abc" * 6)


def test_catalog_uri_is_configurable(tmp_path):
    cfg = TiledServerConfig(data_dir=tmp_path, api_key="k1" * 8,
                            catalog_uri="postgresql+asyncpg://pxm:pw@db.example/pxm")
    tree = cfg.config_dict(8000)["trees"][0]["args"]
    assert tree["uri"].startswith("postgresql+asyncpg://")
    assert tree["readable_storage"] == [str(tmp_path.resolve() / "raw")]


def test_with_on_a_started_service_keeps_its_one_server(tmp_path):
    """``with service:`` after ``start()`` (and a second ``start()``) reuses the running process: no second
    server, no leaked first one; the block's end stops it, and it starts again afterwards."""
    import os

    from pxm.catalog import TiledService

    service = TiledService(TiledServerConfig(data_dir=tmp_path, api_key="0123456789abcdef" * 2)).start()
    try:
        pid, uri = service.pid, service.uri
        assert service.start() is service and (service.pid, service.uri) == (pid, uri)
        with service as s:
            assert s is service and (s.pid, s.uri) == (pid, uri) and s.running
            assert list(s.client()) is not None                    # the one server answers
        assert not service.running and service.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)                                         # the process is gone, not leaked
        with service:                                               # a stopped service starts again
            assert service.running and service.pid != pid
        assert not service.running
    finally:
        service.stop()
