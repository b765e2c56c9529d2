"""After an interrupted scan (issue 15): the live result ends ``status: aborted``, and ``pxm replay`` of the
run's JSONL finishes with a clear message, with or without a stop document (it used to wait for ever).

A real RunEngine, the live engine and the session's Tiled server; the scan is aborted by a SIGINT sent to this
process from the detector's 30th frame (of 45), handled by :func:`pxm.runengine.run_plan` as without a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from devices.testing import HookedFrameSource
from pxm.live import NO_STOP_REASON, LiveOptions, LiveReconstructionCallback, live_recipe
from pxm.runengine import InterruptOptions, ScanInterrupted, make_run_engine, run_plan
from testing.small_bragg_scan import small_bragg_scan_plan


@pytest.fixture(scope="module")
def aborted_run(tiled_layout, tiled_service, tmp_path_factory):
    """(uid, live callback, JSONL path) of a 3 × 3 × 5 Bragg scan aborted by Ctrl-C at frame 30."""
    _, raw, processed = tiled_layout
    plan = small_bragg_scan_plan(tiled_service.config.raw_path / uuid.uuid4().hex[:8], sample_name="W-abort-test",
                                 seed=5, wrap_source=lambda src: HookedFrameSource(
                                     src, 30, lambda kw: os.kill(os.getpid(), signal.SIGINT)))
    live = LiveReconstructionCallback(processed=processed, raw=raw, options=LiveOptions(
        recipe=live_recipe(4), preview_interval_s=0.2))
    docs_dir = tmp_path_factory.mktemp("docs")
    w = make_run_engine(raw_catalog=raw, documents_dir=docs_dir, extra_callbacks=(live,))
    with pytest.raises(ScanInterrupted) as info:
        run_plan(w.RE, plan, documents_dir=docs_dir, options=InterruptOptions(), stdin_is_tty=False)
    assert info.value.exit_status == "abort"
    return info.value.uid, live, docs_dir / f"{info.value.uid}.jsonl"


def test_the_live_result_of_an_aborted_scan_ends_aborted(aborted_run, tiled_layout):
    uid, live, _ = aborted_run
    (summary,) = live.wait(120)                          # ends at once: no final reconstruction of an abort
    assert summary["status"] == "aborted" and summary["exit_status"] == "abort"
    assert "Ctrl-C" in summary["reason"] and 29 <= summary["n_frames_measured"] < 45
    _, raw, processed = tiled_layout
    assert raw[uid].metadata["stop"]["exit_status"] == "abort"
    key = summary["preview_key"]
    assert key is not None, "the live engine published no preview before the abort"
    md = processed[key].metadata
    assert md["status"] == "aborted" and md["exit_status"] == "abort" and md["raw_uid"] == uid


def _replay(jsonl) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pxm.cli", "replay", "--jsonl", str(jsonl), "--iterations", "2",
                           "--no-live-engine"], capture_output=True, text=True, timeout=120)


def test_replay_of_an_aborted_run_finishes_with_a_message(aborted_run):
    uid, _, jsonl = aborted_run
    out = _replay(jsonl)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"pxm replay: run {uid} ended with exit_status 'abort'" in out.stderr
    assert "Ctrl-C" in out.stderr and "no final result" in out.stderr


def test_replay_of_a_run_without_stop_document_finishes(aborted_run, tmp_path):
    uid, _, jsonl = aborted_run
    lines = jsonl.read_text().splitlines()
    assert json.loads(lines[-1])["name"] == "stop"
    cut = tmp_path / f"{uid}.jsonl"
    cut.write_text("\n".join(lines[:-1]) + "\n")         # as left by a scan process killed with -9
    out = _replay(cut)
    assert out.returncode == 1, out.stderr
    assert f"pxm replay: run {uid} ended with exit_status 'fail' ({NO_STOP_REASON})" in out.stderr
