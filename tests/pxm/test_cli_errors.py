"""Faults a user hits on the command line give one clear line and a non-zero exit (issue 15).

A wrong API key, a URI that is not a URL, a busy port, an unusable output path and a short key are
refused before any work is done, with the fix named; ``pxm serve`` stops its Tiled child on SIGTERM
and SIGINT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxm.catalog import TiledService, free_port
from pxm.cli import main
from testing import TEST_API_KEY

WRONG_KEY = "0123456789abcdef" * 2                      # well-formed (32 hex digits), not the server's


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run ``pxm argv``; assert a non-zero exit and a single stderr line without a traceback."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["runs", "export", "reconstruct", "replay"])
def test_a_wrong_api_key_is_one_line_naming_the_key(command, capsys, tiled_service, tmp_path):
    server = ["--tiled-uri", tiled_service.uri, "--api-key", WRONG_KEY]
    argv = {"runs": ["runs", *server],
            "export": ["export", "some-run", *server, "-o", str(tmp_path / "d.h5")],
            "reconstruct": ["reconstruct", "--run", "some-run", *server, "-o", str(tmp_path / "r.h5")],
            "replay": ["replay", "some-run", *server]}[command]
    err = _one_line_error(capsys, argv)
    assert f"pxm {command}: error:" in err
    assert "refused the API key" in err and "401" in err and tiled_service.uri in err
    assert "--api-key" in err                          # the fix
    assert WRONG_KEY not in err


@pytest.mark.parametrize("uri", ["notaurl", "ftp://example.org", "http://"])
def test_a_tiled_uri_that_is_not_a_url_is_one_line(uri, capsys):
    err = _one_line_error(capsys, ["runs", "--tiled-uri", uri, "--api-key", WRONG_KEY])
    assert repr(uri) in err and "http(s) URL" in err and "http://127.0.0.1:8000" in err


def test_serve_on_a_busy_port_is_one_line_naming_the_port(capsys, tiled_service, tmp_path):
    """The port is the session server's (another key): today the health check is answered by it."""
    port = int(tiled_service.uri.rsplit(":", 1)[1])
    err = _one_line_error(capsys, ["serve", "--data-dir", str(tmp_path / "d"), "--port", str(port),
                                   "--api-key", WRONG_KEY])
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


def test_serve_on_a_port_held_by_any_socket_is_refused_before_starting(capsys, tmp_path, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = _one_line_error(capsys, ["demo", "--data-dir", str(tmp_path / "d"), "--port", str(port)])
    assert "already in use" in err and "--port" in err
    assert not (tmp_path / "d" / "tiled-config.yml").exists()


def _no_server(*_args, **_kwargs):
    raise AssertionError("a Tiled server was started")


@pytest.mark.parametrize("key", ["a", "abc123", "0123456789abcde"])
@pytest.mark.parametrize("command", ["serve", "demo", "demo-remote", "runs", "export"])
def test_a_short_api_key_is_refused_in_one_line(command, key, capsys, tmp_path, monkeypatch, tiled_service):
    monkeypatch.setattr(TiledService, "start", _no_server)
    server = ["--tiled-uri", tiled_service.uri, "--api-key", key]
    argv = {"serve": ["serve", "--data-dir", str(tmp_path), "--api-key", key],
            "demo": ["demo", "--data-dir", str(tmp_path), "--api-key", key],
            "demo-remote": ["demo", "--data-dir", str(tmp_path), *server],
            "runs": ["runs", *server],
            "export": ["export", "some-run", *server, "-o", str(tmp_path / "d.h5")]}[command]
    err = _one_line_error(capsys, argv)
    assert f"has {len(key)} characters" in err and "at least 16" in err


def test_a_short_key_in_the_environment_is_refused_too(capsys, tmp_path, monkeypatch, tiled_service):
    import pxm.cli

    monkeypatch.setenv(pxm.cli.API_KEY_ENV, "short")
    monkeypatch.setattr(TiledService, "start", _no_server)
    parser = pxm.cli.build_parser()                 # defaults are read from the environment when built
    monkeypatch.setattr(pxm.cli, "build_parser", lambda: parser)
    err = _one_line_error(capsys, ["runs", "--tiled-uri", tiled_service.uri])
    assert "at least 16" in err


def _no_reconstruction(*_args, **_kwargs):
    raise AssertionError("reconstructed before checking -o")


@pytest.mark.parametrize("case", ["missing-folder", "is-a-folder", "is-the-input", "cxi-missing-folder",
                                  "cxi-is-the-output"])
def test_reconstruct_checks_its_output_paths_before_computing(case, capsys, tmp_path, monkeypatch):
    import pxm.reconstruction

    monkeypatch.setattr(pxm.reconstruction, "reconstruct_dataset", _no_reconstruction)
    monkeypatch.setattr("analysis.dataset.read_dataset", _no_reconstruction)
    dataset = tmp_path / "dataset.h5"
    dataset.write_bytes(b"not read")
    out = {"missing-folder": tmp_path / "no" / "such" / "r.h5", "is-a-folder": tmp_path,
           "is-the-input": dataset, "cxi-missing-folder": tmp_path / "r.h5",
           "cxi-is-the-output": tmp_path / "r.h5"}[case]
    argv = ["reconstruct", str(dataset), "-o", str(out), "--no-progress"]
    if case == "cxi-missing-folder":
        argv += ["--cxi", str(tmp_path / "nope" / "o.cxi")]
    if case == "cxi-is-the-output":
        argv += ["--cxi", str(out)]
    err = _one_line_error(capsys, argv)
    expected = {"missing-folder": f"the folder {tmp_path / 'no' / 'such'} does not exist",
                "is-a-folder": "is a folder", "is-the-input": "is the input file",
                "cxi-missing-folder": "--cxi", "cxi-is-the-output": "--cxi"}[case]
    assert expected in err
    assert dataset.read_bytes() == b"not read"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_reconstruct_refuses_a_read_only_output_folder(capsys, tmp_path, monkeypatch):
    import pxm.reconstruction

    monkeypatch.setattr(pxm.reconstruction, "reconstruct_dataset", _no_reconstruction)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    dataset = tmp_path / "dataset.h5"
    dataset.write_bytes(b"x")
    err = _one_line_error(capsys, ["reconstruct", str(dataset), "-o", str(ro / "r.h5")])
    assert "not writable" in err


def _alive(pid: int) -> bool:
    try:
        import psutil
    except ImportError:                                 # /proc: gone, or a zombie not yet reaped
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(stat.parent.name))
        return kids
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_pxm_serve_stops_its_tiled_child(sig, tmp_path):
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PXM_TILED_API_KEY", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pxm.cli", "serve", "--data-dir", str(tmp_path / "d"),
                                 "--port", str(free_port()), "--api-key", TEST_API_KEY],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops the server" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "pxm serve did not come up in 90 s"
            time.sleep(0.2)
        children = _children(proc.pid)
        assert children, "pxm serve has no Tiled child process"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], f"orphaned Tiled process(es) after {sig.name}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:                            # only the processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
