"""The abstract transport: moves opaque bytes between node ids (SPEC §3.3).

A transport knows nothing about Raft.  The node encodes every message with the codec (framing, version,
cluster id, authentication) before handing it over, so every transport gets the same safety, and it decodes
whatever the transport delivers, treating it as untrusted.

Capabilities added later (for example evidence that a peer process died) are separate optional interfaces,
so transports written against this one keep working.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Optional, TypeVar

__all__ = ["DeliverFn", "Transport", "as_bytes"]

#: Called by the transport with each datagram that arrived for this node.
DeliverFn = Callable[[bytes], None]

_T = TypeVar("_T", bound="Transport")


def as_bytes(data: object) -> bytes:
    """``data`` as immutable bytes; a bytearray or memoryview is copied, so the caller cannot change it later.

    Raises:
        TypeError: ``data`` is not bytes-like (a caller bug, never a network condition).
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")


class Transport(abc.ABC):
    """Best-effort, unordered, possibly duplicating delivery of byte strings between node ids.

    Lifecycle: the node calls :meth:`start` once, then :meth:`send` any number of times from any thread,
    then :meth:`close` once.  The transport calls ``deliver`` from a thread of its own, never re-entrantly
    from inside :meth:`send`, and never after :meth:`close` has returned.
    """

    @abc.abstractmethod
    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Bind this node's address (``peers[node_id]``) and start delivering incoming data.

        Raises:
            TransportError: the address cannot be used; the message names the address and the reason.
        """

    @abc.abstractmethod
    def send(self, peer_id: int, data: bytes) -> None:
        """Send ``data`` to ``peer_id`` without blocking the caller.

        Best effort: data for a peer that is down or unreachable is dropped.  Never raises for network
        conditions; the caller must not rely on delivery, order or uniqueness.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop delivering, release resources and join the transport's threads.  Idempotent."""

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def counters(self) -> Mapping[str, int]:
        """Transport-level counters, merged into :meth:`RaftNode.status` (optional; default: none).

        Keys follow the node's naming: ``rejected_<reason>`` for input the transport itself dropped (for
        example ``rejected_oversized``), ``send_dropped`` and the like for outgoing data it could not send.
        """
        return {}
