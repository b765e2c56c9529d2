"""Document transport between processes: bluesky's 0MQ publisher with a bounded linger.

bluesky's ``Publisher`` leaves its PUB socket at 0MQ's default infinite linger, so when the
proxy is gone, closing it (or garbage collection at interpreter exit) blocks forever on
unsent messages. :class:`ZmqPublisher` is the same publisher, same wire format for
``RemoteDispatcher``, with a finite linger and a context-manager close.
"""

from __future__ import annotations

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

    def __enter__(self) -> "ZmqPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
