"""The queue-server worker checks, like ``pxm demo``, that Tiled reads its detector folder before any frame.

The startup module is loaded the way the RE Manager's worker loads it
(``bluesky_queueserver``'s ``load_startup_module``), against the session's real Tiled server: a
``PXM_DATA_DIR`` outside the server's readable storage is refused with one line naming the fix; the
server's own data folder gives the namespace with its ``RE``.
"""

from __future__ import annotations

import sys
import uuid

import pytest

profile_ops = pytest.importorskip("bluesky_queueserver.manager.profile_ops")

MODULE = "pxm.qserver_startup"


def _load(monkeypatch, tiled_service, data_dir) -> dict:
    monkeypatch.setenv("PXM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PXM_TILED_URI", tiled_service.uri)
    monkeypatch.setenv("PXM_TILED_API_KEY", tiled_service.config.api_key)
    monkeypatch.setenv("PXM_LIVE", "0")
    monkeypatch.delitem(sys.modules, MODULE, raising=False)   # the worker imports it afresh
    return profile_ops.load_startup_module(MODULE)


def test_a_data_folder_the_server_cannot_read_is_refused_at_startup(monkeypatch, tiled_service, tmp_path):
    with pytest.raises(profile_ops.ScriptLoadingError) as info:
        _load(monkeypatch, tiled_service, tmp_path / "elsewhere")
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert f"cannot read detector files written to PXM_DATA_DIR/raw = {tmp_path / 'elsewhere' / 'raw'}" in msg
    assert "set PXM_DATA_DIR to the folder that server was started with" in msg
    assert not list((tmp_path / "elsewhere" / "raw").glob(".pxm-probe-*"))   # the probe file is removed
    assert MODULE not in sys.modules                                          # nothing half-loaded


def test_the_servers_data_folder_passes_and_gives_the_run_engine(monkeypatch, tiled_service):
    data_dir = tiled_service.config.raw_path / f"qserver-probe-{uuid.uuid4().hex[:8]}"
    ns = _load(monkeypatch, tiled_service, data_dir)
    assert "RE" in ns and "mpx" in ns
    assert not list((data_dir / "raw").glob(".pxm-probe-*"))
