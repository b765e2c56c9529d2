"""Interrupted scans (issue 15, "Interrupts"): Ctrl-C pauses, then resume / stop / abort; a second Ctrl-C or
SIGTERM aborts; a failing detector fails the run. Every way out writes the stop document and leaves the detector
file closed, readable with plain h5py, ``/entry/pxm/complete`` = 0 unless the scan really completed.

The first cases run :func:`pxm.runengine.run_plan` in this process (a real RunEngine and simulated Maxipix, the
signal sent to this process from a RunEngine callback); the last ones run ``pxm demo`` as a user does and
send the signal to it (docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import time

import bluesky.plans as bp
import h5py
import pytest

from devices.maxipix import COMPLETE_PATH, DATASET_PATH, N_FRAMES_PATH
from pxm.runengine import EXIT_SIGINT, EXIT_SIGTERM, InterruptOptions, ScanInterrupted, run_plan

N_POINTS = 30


def _signal_after(n_events: int, *signals: int, gap_s: float = 0.5):
    """A RunEngine subscriber that sends ``signals`` to this process at the ``n_events``-th event.

    Several signals go ``gap_s`` apart (a person pressing Ctrl-C twice; two SIGINTs sent at once would
    merge into one pending signal). The RunEngine's loop waits meanwhile, so the scan cannot reach its
    pause between them.
    """
    seen = []

    def cb(name: str, doc: dict) -> None:
        if name == "event":
            seen.append(doc["seq_num"])
            if len(seen) == n_events:
                for i, sig in enumerate(signals):
                    if i:
                        time.sleep(gap_s)
                    os.kill(os.getpid(), sig)

    return cb


def _run(RE, beamline, tmp_path, *, signals=(signal.SIGINT,), answers=(), on_interrupt="ask", tty=True):
    """Run a 30-point count with the Maxipix; return (docs, outcome: result or ScanInterrupted, prompts)."""
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(_signal_after(5, *signals))
    prompts: list[str] = []
    replies = list(answers)

    def prompt(text: str) -> str:
        prompts.append(text)
        reply = replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    plan = bp.count([beamline.detector], num=N_POINTS, delay=0.2)   # >= 5 s left after the signal
    try:
        outcome = run_plan(RE, plan, documents_dir=tmp_path, options=InterruptOptions(on_interrupt=on_interrupt),
                           prompt=prompt, stdin_is_tty=tty)
    except ScanInterrupted as exc:
        outcome = exc
    return docs, outcome, prompts


def _file_state(beamline) -> tuple[int, int, int]:
    """(complete, n_frames, frames in the dataset) read with plain h5py (no SWMR, read-only)."""
    with h5py.File(beamline.detector.file_path, "r") as f:
        return int(f[COMPLETE_PATH][()]), int(f[N_FRAMES_PATH][()]), f[DATASET_PATH].shape[0]


def _stop(docs):
    stops = [d for n, d in docs if n == "stop"]
    assert len(stops) == 1, stops
    return stops[0]


def test_ctrl_c_then_resume_completes_the_scan(RE, beamline, tmp_path):
    docs, outcome, prompts = _run(RE, beamline, tmp_path, answers=["r"])
    assert len(prompts) == 1 and "[r]esume" in prompts[0]
    assert not isinstance(outcome, ScanInterrupted)
    assert _stop(docs)["exit_status"] == "success"
    assert sum(n == "event" for n, _ in docs) == N_POINTS
    assert _file_state(beamline) == (1, N_POINTS, N_POINTS)     # resumed: complete again


def test_ctrl_c_then_stop_ends_the_run_incomplete(RE, beamline, tmp_path):
    docs, outcome, _ = _run(RE, beamline, tmp_path, answers=["s"])
    assert isinstance(outcome, ScanInterrupted) and outcome.exit_code == EXIT_SIGINT
    assert outcome.exit_status == "success" and "scan stopped (Ctrl-C)" in str(outcome)
    n = sum(n == "event" for n, _ in docs)
    assert 5 <= n < N_POINTS
    assert _stop(docs)["exit_status"] == "success"              # bluesky's stop: a clean end, kept
    assert _file_state(beamline) == (0, n, n)                   # but the scan is not complete
    assert f"{n} of {N_POINTS} frames" in str(outcome) and "complete=0" in str(outcome)


@pytest.mark.parametrize("reply", ["a", KeyboardInterrupt(), EOFError()], ids=["abort", "ctrl-c", "eof"])
def test_ctrl_c_then_abort_at_the_prompt(RE, beamline, tmp_path, reply):
    docs, outcome, _ = _run(RE, beamline, tmp_path, answers=["what?", reply])    # a bad answer asks again
    assert isinstance(outcome, ScanInterrupted) and outcome.exit_status == "abort"
    stop = _stop(docs)
    assert stop["exit_status"] == "abort" and "Ctrl-C" in stop["reason"]
    n = sum(n == "event" for n, _ in docs)
    assert _file_state(beamline) == (0, n, n)


@pytest.mark.parametrize("on_interrupt", ["ask", "abort"])
def test_without_a_terminal_ctrl_c_aborts(RE, beamline, tmp_path, on_interrupt):
    docs, outcome, prompts = _run(RE, beamline, tmp_path, on_interrupt=on_interrupt, tty=False)
    assert prompts == []
    assert isinstance(outcome, ScanInterrupted) and outcome.exit_status == "abort"
    assert _stop(docs)["exit_status"] == "abort"
    assert _file_state(beamline)[0] == 0


@pytest.mark.parametrize(("signals", "cause", "code"), [
    ((signal.SIGINT, signal.SIGINT), "second Ctrl-C", EXIT_SIGINT),
    ((signal.SIGTERM,), "SIGTERM", EXIT_SIGTERM),
])
def test_second_ctrl_c_or_sigterm_aborts_without_asking(RE, beamline, tmp_path, signals, cause, code):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    docs, outcome, prompts = _run(RE, beamline, tmp_path, signals=signals, answers=["r"], on_interrupt="stop")
    assert prompts == []                                        # not asked, and --on-interrupt stop overridden
    assert isinstance(outcome, ScanInterrupted) and outcome.exit_code == code
    stop = _stop(docs)
    assert stop["exit_status"] == "abort" and cause in stop["reason"]
    assert _file_state(beamline)[0] == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before   # handlers restored


def test_a_failing_detector_fails_the_run_with_one_message(RE, beamline, tmp_path, monkeypatch):
    backend = beamline.backend
    calls = []
    real_acquire = backend.acquire

    def acquire(**kw):
        calls.append(1)
        if len(calls) > 4:
            raise OSError(28, "No space left on device")
        return real_acquire(**kw)

    monkeypatch.setattr(backend, "acquire", acquire)
    docs, outcome, _ = _run(RE, beamline, tmp_path, signals=())
    assert isinstance(outcome, ScanInterrupted) and outcome.exit_status == "fail" and outcome.exit_code == 1
    assert "No space left on device" in str(outcome) and "\n" not in str(outcome)
    stop = _stop(docs)
    assert stop["exit_status"] == "fail" and "No space left on device" in stop["reason"]
    assert _file_state(beamline) == (0, 4, 4)


def test_a_beam_dump_suspension_still_ends_complete(RE, tmp_path, geometry):
    """A suspender pauses and resumes the devices too: the flag must not stay 'interrupted' after it."""
    import threading

    from bluesky.suspenders import SuspendFloor

    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource, HookedFrameSource

    def dump(kw):
        bl.monitor.dump()
        threading.Timer(0.3, bl.monitor.refill).start()
        time.sleep(0.05)
        return {**kw, "flux_scale": 0.0}

    bl = make_sim_beamline(HookedFrameSource(EncodingFrameSource(), 5, dump), geometry=geometry,
                           data_dir=tmp_path, exposure_s=0.001)
    RE.install_suspender(SuspendFloor(bl.monitor.current, 50, resume_thresh=150, sleep=0.05))
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    run_plan(RE, bp.count([bl.detector], num=12), documents_dir=tmp_path, stdin_is_tty=False)
    assert _stop(docs)["exit_status"] == "success"
    assert len(bl.backend.calls) >= 13                  # the dumped frame was taken again
    assert _file_state(bl) == (1, 12, 12)
