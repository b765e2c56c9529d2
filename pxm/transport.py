"""Document transport between processes: bluesky's 0MQ publisher with a bounded linger, and NATS JetStream.

bluesky's ``Publisher`` leaves its PUB socket at 0MQ's default infinite linger, so when the
proxy is gone, closing it (or garbage collection at interpreter exit) blocks forever on
unsent messages. :class:`ZmqPublisher` is the same publisher, same wire format for
``RemoteDispatcher``, with a finite linger and a context-manager close.

NATS JetStream (bluesky-nats) persists the documents in a stream, so a consumer started after
the run still receives all of them. :func:`nats_publisher` is the RunEngine side: a document call
serializes (msgpack) and schedules the write on a private I/O thread, and returns at once; writes
go out in call order, acknowledged by JetStream. :func:`consume_nats` is the consumer side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
from bluesky.callbacks.zmq import Publisher


class ZmqPublisher(Publisher):
    """bluesky 0MQ ``Publisher`` whose close never waits longer than ``linger_s`` for unsent documents."""

    def __init__(self, address: str | tuple[str, int], *, linger_s: float = 2.0, **kwargs: Any) -> None:
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        super().__init__(address, **kwargs)
        self.linger_ms = int(round(linger_s * 1000))
        self._socket.setsockopt(zmq.LINGER, self.linger_ms)

    def close(self) -> None:
        """Close the socket and terminate the context (waits at most ``linger_s``)."""
        if not self._context.closed:
            self._context.destroy(linger=self.linger_ms)

    def __enter__(self) -> ZmqPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


log = logging.getLogger(__name__)

NATS_STREAM = "bluesky"
"""Default JetStream stream name."""
NATS_SUBJECT = "events.pxm"
"""Default subject prefix; a document goes to ``<subject>.<document name>``."""


def ensure_nats_stream(url: str, *, stream: str = NATS_STREAM, subjects: tuple[str, ...] = ("events.>",),
                       timeout_s: float = 10.0) -> None:
    """Create the JetStream stream ``stream`` on ``subjects`` (no-op if it exists with that config)."""
    import nats

    async def _create() -> None:
        nc = await nats.connect(url, connect_timeout=timeout_s, max_reconnect_attempts=0)
        try:
            await nc.jetstream().add_stream(name=stream, subjects=list(subjects))
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(_create(), timeout_s))


class NatsPublisher:
    """RunEngine callback publishing documents to JetStream without waiting for the acknowledgement.

    Writes are scheduled on a ``bluesky_nats.NatsRuntime`` I/O thread through an ``Outbox``
    (``Delivery.CRITICAL``: never dropped) and sent one at a time in call order. A failed write is
    logged and counted (``n_errors``, ``health``), never raised into the RunEngine; :meth:`close`
    flushes and returns False if a write failed or did not settle.
    """

    def __init__(self, url: str, *, subject: str = NATS_SUBJECT, connect_timeout_s: float = 10.0) -> None:
        import nats
        from bluesky_nats.nats_runtime import NatsRuntime
        from bluesky_nats.outbox import Delivery, Outbox

        self.url, self.subject = url, subject
        self._runtime = NatsRuntime("pxm-nats-publisher")
        try:
            client = self._runtime.connect(nats.connect(url, connect_timeout=connect_timeout_s,
                                                        max_reconnect_attempts=3), timeout=connect_timeout_s + 1)
            self._outbox = Outbox(self._runtime, client, delivery=Delivery.CRITICAL)
            self._js = client.jetstream()
            self._lock: asyncio.Lock = self._runtime.setup(self._new_lock())
        except BaseException:
            self._runtime.close(timeout=1.0)
            raise
        self._run_uid = ""
        self.n_errors = 0
        self.closed = False

    @staticmethod
    async def _new_lock() -> asyncio.Lock:
        return asyncio.Lock()

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        async with self._lock:             # FIFO: tasks start in call order, so writes keep it
            try:
                await self._js.publish(subject, payload, headers=headers)
            except Exception as exc:
                self.n_errors += 1
                log.error("NATS publish to %s failed: %s", subject, exc)
                raise
        self._outbox.record_ack(subject)

    def __call__(self, name: str, doc: dict) -> None:
        """Serialize ``doc`` and schedule its write to ``<subject>.<name>``; returns without waiting."""
        from ormsgpack import OPT_NAIVE_UTC, OPT_SERIALIZE_NUMPY, packb

        if self.closed:
            return
        if name == "start":
            self._run_uid = str(doc.get("uid", ""))
        subject = f"{self.subject}.{name}"
        payload = packb(doc, option=OPT_NAIVE_UTC | OPT_SERIALIZE_NUMPY)
        self._outbox.record_subject(subject)
        try:
            self._outbox.spawn(self._publish(subject, payload, {"run_id": self._run_uid}))
        except RuntimeError as exc:         # runtime closed under us
            self.n_errors += 1
            log.error("NATS publisher: %s", exc)

    @property
    def health(self) -> Any:
        """The outbox's ``OutboxHealth`` (pending writes, last error, last ack)."""
        return self._outbox.health

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every scheduled write is acknowledged (True) or failed/timed out (False)."""
        return self._outbox.flush(timeout=timeout_s) and self.n_errors == 0

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush, drain the connection and join the I/O thread; True if every write was acknowledged."""
        if self.closed:
            return self.n_errors == 0
        self.closed = True
        ok = self._outbox.flush(timeout=timeout_s)
        return self._runtime.close(timeout=timeout_s) and ok and self.n_errors == 0

    def __enter__(self) -> NatsPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def nats_publisher(url: str, subject: str = NATS_SUBJECT, *, connect_timeout_s: float = 10.0) -> NatsPublisher:
    """A RunEngine callback publishing documents to JetStream at ``url`` under ``<subject>.<name>``."""
    return NatsPublisher(url, subject=subject, connect_timeout_s=connect_timeout_s)


def consume_nats(url: str, callback: Callable[[str, dict], Any], *, subject: str = "events.>",
                 stream: str = NATS_STREAM, until: Callable[[dict], bool] | None = None,
                 timeout_s: float | None = None) -> dict | None:
    """Feed ``callback`` every document of ``stream`` (from its first) via a ``NATSDispatcher``.

    Returns the first stop document for which ``until(stop)`` is true (any stop if ``until`` is
    None after the callback has seen it). Runs in a fresh event loop in this thread; raises
    ``TimeoutError`` after ``timeout_s`` (None: wait for ever).
    """
    from bluesky_nats.nats_dispatcher import NATSDispatcher

    async def _run() -> dict | None:
        stopped: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_document(name: str, doc: dict) -> None:
            callback(name, doc)
            if name == "stop" and not stopped.done() and (until is None or until(doc)):
                stopped.set_result(doc)

        async with NATSDispatcher(subject=subject, servers=url, stream_name=stream,
                                  max_reconnect_attempts=3) as dispatcher:
            dispatcher.subscribe(on_document)
            return await asyncio.wait_for(stopped, timeout_s)

    return asyncio.run(_run())
