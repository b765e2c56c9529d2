"""RunEngine wiring: TiledWriter into the raw catalog, a JSONL copy of every document, suspenders.

Every document goes two ways so that no data is lost when Tiled is down:
TiledWriter (with its own JSONL ``backup_directory`` for failed writes) and a
``JSONLinesWriter`` holding the exact original documents for offline replay.
"""

# Why this module is long: the RunEngine and everything subscribed to it (TiledWriter, JSONL documents, suspenders,
# interrupts) is one wiring whose order matters.

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.callbacks.json_writer import JSONLinesWriter
from bluesky.run_engine import RunEngineResult
from bluesky.suspenders import SuspendFloor
from bluesky_tiled_plugins import TiledWriter
from event_model import RunRouter

from pxm.datadir import secure_dir


@dataclass(frozen=True, kw_only=True)
class BeamSuspenderOptions:
    """Beam-dump suspension on the ring-current monitor (bluesky SuspendFloor)."""

    floor_ma: float = 100.0
    """Suspend when the ring current falls below this (mA)."""
    resume_ma: float = 150.0
    """Resume once it is back above this (mA)."""
    sleep_s: float = 0.5
    """Extra wait after the current recovers before resuming."""

    def __post_init__(self) -> None:
        if not (0 <= self.floor_ma <= self.resume_ma):
            raise ValueError(
                f"BeamSuspenderOptions: need 0 <= floor_ma <= resume_ma, got {self.floor_ma}, {self.resume_ma}"
            )
        if self.sleep_s < 0:
            raise ValueError(f"BeamSuspenderOptions.sleep_s must be >= 0, got {self.sleep_s}")


@dataclass
class Wiring:
    """The RunEngine and what is subscribed to it."""

    RE: RunEngine
    tiled_writer: Any
    documents_dir: Path
    tokens: dict[str, int] = field(default_factory=dict)



def run_uids(result: RunEngineResult | tuple[str, ...]) -> tuple[str, ...]:
    """The uids of the runs a ``RE(plan)`` call made (pxm's RunEngines return them as a tuple)."""
    return result if isinstance(result, tuple) else tuple(result.run_start_uids)

def jsonl_router(documents_dir: Path) -> RunRouter:
    """One ``<run uid>.jsonl`` file per run (lines ``{"name": ..., "doc": ...}``), via event-model's RunRouter."""

    def factory(name: str, start_doc: dict) -> tuple[list, list]:
        return [JSONLinesWriter(str(documents_dir), filename=f"{start_doc['uid']}.jsonl")], []

    return RunRouter([factory])


SCAN_ID_FILE = "scan_id"
"""File in the documents folder holding the last ``scan_id`` given out (one integer)."""


def persistent_scan_id_source(path: Path) -> Callable[[dict], int]:
    """A RunEngine ``scan_id_source`` that counts in ``path``, so ``scan_id`` persists per data folder.

    Each new run takes ``max(last in the file, RE.md["scan_id"]) + 1`` and writes it back under an
    exclusive ``flock``, so scans in several processes on one data folder never share a number.

    Why a locked counter file and not the alternatives: bluesky's ``PersistentDict`` as ``RE.md``
    keeps a per-process cache that it writes back whole when the process ends (zict: one process at
    a time), so two scans at once in one data folder would take the same ``scan_id`` and the
    one that exits last would roll the counter back; it also needs ``zict``, which pxm does not
    install. Asking the catalog for the highest ``scan_id`` needs the Tiled server up (scans go on
    through a Tiled outage, documents going to JSONL) and races the same way. The counter lives in
    the documents folder, next to the JSONL copies it numbers, and survives a catalog rebuild.
    """
    import fcntl

    from pxm.datadir import file_mode

    path = Path(path)

    def next_scan_id(md: dict) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            text = f.read().strip()
            try:
                last = int(text) if text else 0
            except ValueError:
                raise ValueError(f"{path} should hold the last scan_id (an integer), not {text[:40]!r}; "
                                 "fix or remove it") from None
            new = max(last, int(md.get("scan_id") or 0)) + 1
            f.seek(0)
            f.truncate()
            f.write(f"{new}\n")
            f.flush()
            os.fsync(f.fileno())
        return new

    return next_scan_id


def make_run_engine(*, raw_catalog: Any, documents_dir: Path, beam_signal: Any | None = None,
                    suspender: BeamSuspenderOptions | None = None,
                    extra_callbacks: tuple[Callable[[str, dict], Any], ...] = (),
                    tiled_batch_size: int = 1) -> Wiring:
    """A RunEngine that writes every run into ``raw_catalog`` and to JSONL files.

    Parameters
    ----------
    raw_catalog
        Tiled node tagged ``CatalogOfBlueskyRuns`` (``pxm.catalog.ensure_layout``).
    documents_dir
        Folder for the exact documents (``<uid>.jsonl``), TiledWriter's backup and the ``scan_id``
        counter (:func:`persistent_scan_id_source`): RunEngines on one folder, in any process, number
        their runs 1, 2, 3, ...; created 0700 (:func:`pxm.datadir.secure_dir`).
    beam_signal
        Ring-current signal (mA); with it, a SuspendFloor pauses the scan during beam dumps.
    tiled_batch_size
        Events per TiledWriter write: 1 makes every frame visible in Tiled at once (~80 ms of
        HTTP per frame on a 2-core machine); larger batches cut that cost for long scans.
    """
    if tiled_batch_size < 1:
        raise ValueError(f"tiled_batch_size must be >= 1, got {tiled_batch_size}")
    documents_dir = Path(documents_dir)
    secure_dir(documents_dir / "tiled-backup")
    RE = RunEngine({}, scan_id_source=persistent_scan_id_source(documents_dir / SCAN_ID_FILE))
    writer = TiledWriter(raw_catalog, batch_size=tiled_batch_size, backup_directory=str(documents_dir / "tiled-backup"))
    tokens = {
        "tiled": RE.subscribe(writer),
        "jsonl": RE.subscribe(jsonl_router(documents_dir)),
    }
    for i, cb in enumerate(extra_callbacks):
        tokens[f"extra{i}"] = RE.subscribe(cb)
    if beam_signal is not None:
        opts = suspender or BeamSuspenderOptions()
        RE.install_suspender(SuspendFloor(beam_signal, opts.floor_ma, resume_thresh=opts.resume_ma,
                                          sleep=opts.sleep_s))
    return Wiring(RE=RE, tiled_writer=writer, documents_dir=documents_dir, tokens=tokens)


# ------------------------------------------------------------------------------------ interrupts
INTERRUPT_CHOICES = ("ask", "abort", "stop")
"""What a first Ctrl-C leads to once the scan has paused (``--on-interrupt``)."""
EXIT_SIGINT = 130
"""Exit status of a scan ended by Ctrl-C (128 + SIGINT, the shell's convention)."""
EXIT_SIGTERM = 143
"""Exit status of a scan ended by SIGTERM (128 + SIGTERM)."""
EXIT_SCAN_FAILED = 1
"""Exit status of a scan that failed (detector, disk, device error)."""


@dataclass(frozen=True, kw_only=True)
class InterruptOptions:
    """What happens when a scan is interrupted (docs/reliability.md).

    A first Ctrl-C asks the RunEngine for a deferred pause (bluesky's convention: it pauses at the next
    checkpoint). Once paused, ``on_interrupt`` decides: ``ask`` offers resume / stop / abort when stdin is a
    terminal and aborts otherwise; ``abort`` ends the run with ``exit_status="abort"``; ``stop`` ends it
    with bluesky's ``exit_status="success"`` after the frames taken so far. A second Ctrl-C or a SIGTERM
    always aborts.
    """

    on_interrupt: str = "ask"
    """One of :data:`INTERRUPT_CHOICES`."""

    def __post_init__(self) -> None:
        if self.on_interrupt not in INTERRUPT_CHOICES:
            raise ValueError(f"on_interrupt must be one of {', '.join(INTERRUPT_CHOICES)}, "
                             f"got {self.on_interrupt!r}")


class ScanInterrupted(RuntimeError):
    """A scan ended before its plan did: aborted, stopped or failed; the message says where its data are.

    ``exit_status`` is the stop document's, ``exit_code`` the one the CLI returns, ``uid`` the run's.
    """

    def __init__(self, message: str, *, exit_status: str, exit_code: int, uid: str | None) -> None:
        super().__init__(message)
        self.exit_status, self.exit_code, self.uid = exit_status, exit_code, uid


class _RunTracker:
    """A subscriber that remembers, per run, its start, frames, detector files and stop document."""

    def __init__(self) -> None:
        self.starts: dict[str, dict] = {}
        self.stops: dict[str, dict] = {}
        self.n_events: dict[str, int] = {}
        self.files: dict[str, list[str]] = {}
        self._descriptor_run: dict[str, str] = {}
        self._resource_run: dict[str, str] = {}
        self.current: str | None = None

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.current = doc["uid"]
            self.starts[doc["uid"]], self.n_events[doc["uid"]], self.files[doc["uid"]] = doc, 0, []
        elif name == "descriptor":
            self._descriptor_run[doc["uid"]] = doc["run_start"]
        elif name == "event" and doc.get("descriptor") in self._descriptor_run:
            uid = self._descriptor_run[doc["descriptor"]]
            self.n_events[uid] = self.n_events.get(uid, 0) + 1
        elif name == "event_page" and doc.get("descriptor") in self._descriptor_run:
            uid = self._descriptor_run[doc["descriptor"]]
            self.n_events[uid] = self.n_events.get(uid, 0) + len(doc.get("seq_num", ()))
        elif name == "stream_resource":
            run = doc.get("run_start") or self.current
            if run is not None:
                self.files.setdefault(run, []).append(str(doc.get("uri", "")).removeprefix("file://localhost"))
        elif name == "stop":
            self.stops[doc["run_start"]] = doc


class _SignalPauser:
    """SIGINT/SIGTERM handlers for one :func:`run_plan` call (main thread only).

    The handler itself only records and queues; a worker thread asks the RunEngine for the pause
    (``request_pause`` blocks on the RunEngine's loop, which a signal handler must not do).
    """

    def __init__(self, RE: RunEngine) -> None:
        import queue
        import threading

        self.RE = RE
        self.n_sigint = 0
        self.abort_signal: str | None = None
        self.prompting = False
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="pxm-pause-requests", daemon=True)
        self._previous: dict[int, Any] = {}

    def _work(self) -> None:
        import sys

        while True:
            defer = self._q.get()
            if defer is None:
                return
            if defer:
                print("pxm: Ctrl-C: the scan pauses at the next checkpoint; Ctrl-C again (or SIGTERM) aborts it",
                      file=sys.stderr, flush=True)
            else:
                print(f"pxm: {self.abort_signal}: aborting the scan (cleanup, then a stop document with "
                      "exit_status 'abort')", file=sys.stderr, flush=True)
            try:
                self.RE.request_pause(defer=defer)
            except Exception:   # noqa: BLE001 - idle, paused or already aborting: nothing to pause
                pass

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        if signum == signal.SIGINT and self.n_sigint == 0 and self.abort_signal is None:
            self.n_sigint = 1
            self._q.put(True)
            return
        if self.abort_signal is None:
            self.abort_signal = "second Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.prompting:
            raise KeyboardInterrupt(self.abort_signal)
        self._q.put(False)

    def __enter__(self) -> _SignalPauser:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        self._worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._q.put(None)
        self._worker.join(5)


class _NoTracebacks:
    """A logging filter for bluesky's logger during :func:`run_plan`: no "Run aborted" stack.

    The run's end is reported once, by :class:`ScanInterrupted`'s one line; bluesky would print the
    plan's whole stack for every abort (Python's last-resort handler shows its ERROR records) and a
    warning about tracing. Other records with a traceback are cut to one line.
    """

    def filter(self, record: Any) -> bool:  # noqa: D102
        if record.msg in ("Run aborted", "No open traces left to close!"):
            return False
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__} {exc}".rstrip()
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _with_abort_reason(plan: Any, reason: list[str]) -> Any:
    """``plan`` with ``reason[0]`` put into an abort's ``close_run``.

    bluesky's ``run_wrapper`` closes an aborted run with ``exit_status="abort"`` and no reason (the
    ``RequestAbort`` it catches is empty), so ``RE.abort(reason)`` alone leaves ``reason: ""`` in the stop
    document.
    """
    from bluesky.preprocessors import msg_mutator

    def add_reason(msg: Any) -> Any:
        if (msg.command == "close_run" and msg.kwargs.get("exit_status") == "abort" and reason
                and not msg.kwargs.get("reason")):
            return msg._replace(kwargs={**msg.kwargs, "reason": reason[0]})
        return msg

    return (yield from msg_mutator(plan, add_reason))


def _ask(prompt: Callable[[str], str]) -> str:
    """resume / stop / abort from the terminal; anything unreadable aborts."""
    while True:
        try:
            answer = prompt("scan paused: [r]esume, [s]top (end the run here, exit_status 'success'), "
                            "[a]bort (exit_status 'abort')? ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            return "abort"
        for choice in ("resume", "stop", "abort"):
            if answer and choice.startswith(answer):
                return choice


def _scan_outcome(tracker: _RunTracker, documents_dir: Path, uid: str | None) -> str:
    """Where an ended run's data are: frames, detector files with their ``complete`` flag, JSONL."""
    if uid is None:
        return "no run was open"
    stop = tracker.stops.get(uid)
    files = []
    for f in tracker.files.get(uid, []):
        complete = _complete_flag(Path(f))
        files.append(f"{f} ({complete})")
    start = tracker.starts.get(uid, {})
    total = start.get("num_points")
    frames = f"{tracker.n_events.get(uid, 0)}" + (f" of {total}" if total else "")
    where = f"; detector file {', '.join(files)}" if files else ""
    status = f"stop document exit_status '{stop.get('exit_status')}'" if stop else "NO stop document"
    return (f"run {uid} (scan_id {start.get('scan_id')}, {start.get('plan_name')}): {frames} frames recorded, "
            f"{status} in Tiled and {Path(documents_dir) / (uid + '.jsonl')}{where}")


def _complete_flag(path: Path) -> str:
    """``complete=0|1`` of a detector file, or why it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f"complete={int(f['/entry/pxm/complete'][()])}" if "/entry/pxm/complete" in f else "no complete flag"
    except Exception as exc:   # noqa: BLE001 - reported in the message
        return f"unreadable: {' '.join(str(exc).split())[:120]}"


def run_plan(RE: RunEngine, plan: Any, *, documents_dir: Path, options: InterruptOptions = InterruptOptions(),
             prompt: Callable[[str], str] = input, stdin_is_tty: bool | None = None) -> Any:
    """``RE(plan)`` with pxm's interrupt handling; return what ``RE(plan)`` returns.

    Parameters
    ----------
    RE
        The RunEngine (its own SIGINT handler is replaced for the call).
    plan
        The plan to run.
    documents_dir
        The JSONL folder of ``RE`` (named in the message).
    options
        What a paused scan leads to (:class:`InterruptOptions`).
    prompt, stdin_is_tty
        The terminal question and whether to ask it (default: ``sys.stdin.isatty()``).

    Raises
    ------
    ScanInterrupted
        The run was aborted, stopped or failed; its stop document is written and the detector file closed.
    """
    import sys

    from bluesky.utils import RunEngineInterrupted

    tty = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
    tracker = _RunTracker()
    token = RE.subscribe(tracker)
    import logging

    saved_managers = RE.context_managers
    RE.context_managers = []
    quiet = _NoTracebacks()
    logging.getLogger("bluesky").addFilter(quiet)
    try:
        with _SignalPauser(RE) as sig:
            abort_reason: list[str] = []
            try:
                return RE(_with_abort_reason(plan, abort_reason))
            except RunEngineInterrupted:
                pass
            except Exception as exc:
                uid = tracker.current
                raise ScanInterrupted(f"scan failed: {' '.join(str(exc).split()) or type(exc).__name__}; "
                                      f"{_scan_outcome(tracker, documents_dir, uid)}",
                                      exit_status="fail", exit_code=EXIT_SCAN_FAILED, uid=uid) from exc
            while True:   # paused
                if sig.abort_signal is not None:
                    action = "abort"
                elif options.on_interrupt == "ask" and tty:
                    sig.prompting = True
                    try:
                        action = _ask(prompt)
                    finally:
                        sig.prompting = False
                    if sig.abort_signal is not None:
                        action = "abort"
                else:
                    action = "abort" if options.on_interrupt == "ask" else options.on_interrupt
                if action == "resume":
                    try:
                        return RE.resume()
                    except RunEngineInterrupted:
                        continue
                break
            cause = sig.abort_signal or "Ctrl-C"
            uid = tracker.current
            if action == "abort":
                abort_reason.append(f"aborted by {cause} (pxm, on_interrupt={options.on_interrupt})")
                RE.abort(reason=abort_reason[0])
            else:
                RE.stop()
            code = EXIT_SIGTERM if cause == "SIGTERM" else EXIT_SIGINT
            verb = "aborted" if action == "abort" else "stopped"
            raise ScanInterrupted(f"scan {verb} ({cause}); {_scan_outcome(tracker, documents_dir, uid)}",
                                  exit_status="abort" if action == "abort" else "success", exit_code=code, uid=uid)
    finally:
        RE.context_managers = saved_managers
        RE.unsubscribe(token)
        logging.getLogger("bluesky").removeFilter(quiet)


class BeamtimeInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived outside a running plan (e.g. during a reconstruction between two scans).

    A ``KeyboardInterrupt`` (so no ``except Exception`` on the way swallows it); ``signal_name`` is
    ``"Ctrl-C"`` or ``"SIGTERM"``, ``exit_code`` 130 or 143, ``runs`` the ``{name: uid}`` of the runs that
    had ended before it, filled in by the code that knows them. ``live_note`` is set when the signal came
    while the live reconstruction computed a final result (no scan running): what became of it.
    """

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code
        self.runs: dict[str, str] = {}
        self.live_note: str | None = None

    def line(self, data_dir: Path | str) -> str:
        """The one line a command prints: what had ended, where it is, what was not written."""
        done = ": " + ", ".join(f"{name} {uid}" for name, uid in self.runs.items()) if self.runs else ""
        if self.live_note is not None:
            return (f"interrupted ({self.signal_name}) during the live reconstruction's final result, no scan was "
                    f"running; the runs that had ended{done} are whole (stop document, in Tiled and "
                    f"{Path(data_dir) / 'documents'}); {self.live_note}")
        return (f"interrupted ({self.signal_name}) between scans, no scan was running; the runs that had ended"
                f"{done} are whole (stop document, in Tiled and {Path(data_dir) / 'documents'}); nothing of the "
                "step that was running was kept (no probe file or result); run it again")


@contextmanager
def interrupt_between_scans() -> Iterator[None]:
    """For the block, SIGINT and SIGTERM raise :class:`BeamtimeInterrupted` in the main thread.

    A batch system's SIGTERM would otherwise end the process at once (no ``finally``: an embedded Tiled
    server left running, a half-written file); Ctrl-C would raise a bare ``KeyboardInterrupt``. Only the
    first signal raises; later ones during the cleanup are ignored. :func:`run_plan` puts its own handlers
    in place while a plan runs (pause, then stop document) and brings these back after it. Outside the main
    thread the block runs unchanged.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[int] = []

    def handle(signum: int, frame: object) -> None:
        if raised:
            return
        raised.append(signum)
        if signum == signal.SIGTERM:
            raise BeamtimeInterrupted("SIGTERM", EXIT_SIGTERM)
        raise BeamtimeInterrupted("Ctrl-C", EXIT_SIGINT)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interruptible(RE: RunEngine, *, documents_dir: Path,
                  options: InterruptOptions = InterruptOptions()) -> Callable[[Any], Any]:
    """``RE`` as a callable ``plan -> RE(plan)`` with :func:`run_plan`'s interrupt handling."""

    def run(plan: Any) -> Any:
        return run_plan(RE, plan, documents_dir=documents_dir, options=options)

    return run
