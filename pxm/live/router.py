"""The document router: a Bluesky callback that hands each run's documents to its session."""

from __future__ import annotations

import logging
import time
from typing import Any

import event_model
from event_model import Event, EventDescriptor, EventPage, RunStart, RunStop, StreamDatum, StreamResource

from pxm.live.options import BRAGG_PLAN, LiveOptions
from pxm.live.session import _run_info, _RunSession

log = logging.getLogger(__name__)


class LiveReconstructionCallback(event_model.DocumentRouter):
    """Parse documents and enqueue them for a per-run worker; never blocks the caller.

    ``processed`` is the Tiled ``/processed`` container and ``raw`` the run catalog (read, never written:
    results name their run by ``raw_uid``); either may be None (no publication, e.g. in benchmarks). Errors of previews
    are logged and counted; errors of the final result are raised by :meth:`wait`.
    """

    def __init__(self, *, processed: Any = None, raw: Any = None, options: LiveOptions = LiveOptions()) -> None:
        super().__init__()
        self.processed, self.raw, self.options = processed, raw, options
        self.sessions: list[_RunSession] = []
        self._session: _RunSession | None = None
        self.call_times_s: list[float] = []
        self.parse_errors: list[str] = []

    # every document goes through here: time it, never raise into the RunEngine
    def __call__(self, name: str, doc: dict, validate: bool = False) -> Any:  # noqa: D102
        t0 = time.perf_counter()
        try:
            if hasattr(doc, "to_dict"):
                doc = doc.to_dict()
            return super().__call__(name, doc, validate=validate)
        except Exception as exc:  # a preview pipeline must never stop acquisition
            self.parse_errors.append(f"{name}: {exc!r}")
            log.exception("live callback: %s document could not be parsed", name)
            return None
        finally:
            self.call_times_s.append(time.perf_counter() - t0)

    def start(self, doc: RunStart) -> RunStart:  # noqa: D102
        self._session = None
        if doc.get("plan_name") != BRAGG_PLAN:
            return doc
        sess = _RunSession(_run_info(doc, self.options), self.options, self.processed, self.raw)
        self.sessions.append(sess)
        self._session = sess
        sess.thread.start()
        return doc

    def descriptor(self, doc: EventDescriptor) -> EventDescriptor:  # noqa: D102
        s = self._session
        if s is None or doc.get("name", "primary") != "primary":
            return doc
        keys = doc.get("data_keys", {})
        image = next((k for k, v in keys.items() if str(v.get("external", "")).startswith("STREAM")), None)
        image = image or f"{s.info.detector}_image"
        cfg = (doc.get("configuration") or {}).get(s.info.detector, {}).get("data", {})
        s.q.put(("descriptor", doc["uid"], image, cfg))
        s.descriptors[doc["uid"]] = image
        return doc

    def stream_resource(self, doc: StreamResource) -> StreamResource:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("resource", doc["uid"], doc["uri"], doc.get("parameters", {}).get("dataset",
                                                                                               "/entry/data/data")))
        return doc

    def stream_datum(self, doc: StreamDatum) -> StreamDatum:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("datum", doc["stream_resource"], int(doc["seq_nums"]["start"]),
                                 int(doc["seq_nums"]["stop"]), int(doc["indices"]["start"])))
        return doc

    def event(self, doc: Event) -> Event:  # noqa: D102
        s = self._session
        if s is not None and doc.get("descriptor") in s.descriptors:
            d, ax = doc["data"], s.info.axes
            s.q.put(("events", [int(doc["seq_num"])], [d.get(ax["x"])], [d.get(ax["y"])], [d.get(ax["theta"])]))
        return doc

    def event_page(self, doc: EventPage) -> EventPage:  # noqa: D102
        s = self._session
        if s is not None and doc.get("descriptor") in s.descriptors:
            d, ax = doc["data"], s.info.axes
            n = len(doc["seq_num"])
            s.q.put(("events", list(doc["seq_num"]), d.get(ax["x"], [None] * n), d.get(ax["y"], [None] * n),
                     d.get(ax["theta"], [None] * n)))
        return doc

    def stop(self, doc: RunStop) -> RunStop:  # noqa: D102
        if self._session is not None:
            self._session.q.put(("stop", doc))
            self._session = None
        return doc

    def wait(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Wait for every run's worker; return their summaries; raise the first final-result error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for s in self.sessions:
            s.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if s.thread.is_alive():
                raise TimeoutError(f"live reconstruction of run {s.info.uid} still running after {timeout_s} s")
        for s in self.sessions:
            if s.final_error is not None:
                raise RuntimeError(f"live reconstruction of run {s.info.uid}: final result failed: "
                                   f"{s.final_error}") from s.final_exc
        return [s.summary for s in self.sessions]

    def abort(self, reason: str, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """End every run's live session that is still working: nothing more is published, previews say ``aborted``.

        For a Ctrl-C or SIGTERM while a session computes its final result (e.g. ``pxm demo`` after its
        Bragg scan): the session's preview gets ``status: "aborted"`` with ``reason`` and no final result is
        written, however long the computation still runs (its worker thread is a daemon and publishes
        nothing once aborted). A session whose final result was already published, or that had ended, is
        left as it is.

        Parameters
        ----------
        reason
            Why (put into the preview's metadata and the summary).
        timeout_s
            How long to wait for a publication in progress to end before marking the preview.

        Returns
        -------
        list of dict
            The sessions' summaries; an aborted one has ``status`` ``"aborted"`` and ``preview_key``.
        """
        for s in self.sessions:
            s.cancel(reason, timeout_s=timeout_s)
        return [s.summary for s in self.sessions]
