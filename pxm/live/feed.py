"""Feed the live reconstruction from a document stream: a bluesky 0MQ proxy or NATS JetStream.

``pxm live-consumer`` and :func:`pxm.live_consumer` both call :func:`consume_live`: it passes every
document to a :class:`pxm.live.LiveReconstructionCallback` until the stream ends (Ctrl-C, or with ``once``
the first Bragg run's stop), waits for the final results and returns the callback's summaries.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["consume_live", "consume_zmq"]


def consume_zmq(address: str, callback: Any, *, once: bool = False, timeout_s: float | None = None,
                on_listening: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """Pass the documents of a bluesky 0MQ proxy (its out ``HOST:PORT``) to ``callback``; return its summaries.

    Parameters
    ----------
    address
        The proxy's out address, ``HOST:PORT``.
    callback
        A :class:`pxm.live.LiveReconstructionCallback`.
    once
        End after the first stop document that follows a Bragg run (``--once``); else run until interrupted.
    timeout_s
        Limit on waiting for the final results after the stream ended (None: the callback's default).
    on_listening
        Called with a line once the dispatcher is set up (the command prints it).

    Returns
    -------
    list of dict
        One summary per Bragg run (``uid``, ``metrics``, ``final_key``, ``missing_frames``).

    Raises
    ------
    RuntimeError
        Waiting for the final results failed (the message of the underlying error).
    """
    from bluesky.callbacks.zmq import RemoteDispatcher

    dispatcher = RemoteDispatcher(address)
    done: list[Any] = []

    def finish_after_stop(name: str, doc: dict) -> None:
        callback(name, doc)
        if name == "stop" and callback.sessions and once and not done:
            done.append(True)

            def wait_and_quit() -> None:
                try:
                    done.append(callback.wait(timeout_s))
                except Exception as exc:  # noqa: BLE001 - reported by the caller's thread below
                    done.append(exc)
                # bluesky declares RemoteDispatcher._task as None; start() sets it to the running task
                dispatcher.loop.call_soon_threadsafe(dispatcher._task.cancel)  # type: ignore[attr-defined]

            threading.Thread(target=wait_and_quit, daemon=True).start()

    dispatcher.subscribe(finish_after_stop)
    if on_listening is not None:
        on_listening(f"listening on {address}")
    try:
        dispatcher.start()
    except (asyncio.CancelledError, KeyboardInterrupt):
        pass
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        raise RuntimeError(str(errors[0]))
    summaries = [d for d in done if isinstance(d, list)]
    return summaries[0] if summaries else list(callback.wait(timeout_s))


def consume_live(callback: Any, *, zmq: str | None = None, nats: str | None = None, stream: str = "bluesky",
                 subject: str = "events.>", once: bool = False, timeout_s: float | None = None,
                 on_listening: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """Run the live reconstruction ``callback`` on a 0MQ proxy (``zmq``) or a JetStream stream (``nats``).

    Parameters
    ----------
    callback
        A :class:`pxm.live.LiveReconstructionCallback`.
    zmq, nats
        Exactly one: the proxy's out ``HOST:PORT``, or the NATS server URL (read from the stream's first document).
    stream, subject
        JetStream stream name and subject filter (``nats`` only).
    once
        End after the first Bragg run's stop; else run until interrupted (Ctrl-C).
    timeout_s
        Limit on waiting for the final results.
    on_listening
        Called with a line once the consumer is set up.

    Returns
    -------
    list of dict
        One summary per Bragg run.
    """
    if (zmq is None) == (nats is None):
        raise ValueError("give one source: --zmq HOST:PORT (a bluesky 0MQ proxy) or --nats URL (NATS JetStream)")
    if zmq is not None:
        return consume_zmq(zmq, callback, once=once, timeout_s=timeout_s, on_listening=on_listening)
    from pxm.transport import consume_nats

    def bragg_run_stopped(stop: dict) -> bool:
        return once and any(s.info.uid == stop.get("run_start") for s in callback.sessions)

    if on_listening is not None:
        on_listening(f"listening on {nats} (stream {stream}, {subject})")
    try:
        consume_nats(str(nats), callback, subject=subject, stream=stream, until=bragg_run_stopped)
    except KeyboardInterrupt:
        pass
    return list(callback.wait(timeout_s))
