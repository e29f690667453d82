"""The abstract transport: moves opaque bytes between node ids (SPEC §3.3).

A transport knows nothing about Raft.  The node encodes every message with the codec (framing, version,
cluster id, authentication) before handing it over, so every transport gets the same safety, and it decodes
whatever the transport delivers, treating it as untrusted.

Capabilities added later (for example evidence that a peer process died) are separate optional interfaces,
so transports written against this one keep working.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Optional, TypeVar

__all__ = ["EVIDENCE_WINDOW", "DeathProbe", "DeliverFn", "EvidenceFn", "Transport", "as_bytes", "batch_of"]

#: Called by the transport with each datagram that arrived for this node.
DeliverFn = Callable[[bytes], None]
#: The batch form of a :data:`DeliverFn` (see :func:`batch_of`): several datagrams, in arrival order.
DeliverBatchFn = Callable[[Sequence[bytes]], None]

#: Called by a :class:`DeathProbe` transport with ``(peer_id, kind)`` when it has evidence that the peer's
#: process is gone.  ``kind`` names the evidence: ``"port_unreachable"`` (UDP: the peer's host answered a
#: probe with ICMP port unreachable), ``"connection_refused"`` (TCP: the peer's host refused a connection to
#: its port), ``"closed"`` (in memory: the peer's transport is closed).
EvidenceFn = Callable[[int, str], None]

_T = TypeVar("_T", bound="Transport")


def batch_of(deliver: DeliverFn) -> Optional[DeliverBatchFn]:
    """The batch form of ``deliver``, if it has one: its ``batch`` attribute, a callable.

    A transport that reads several datagrams at once may hand them to it in one call instead of calling
    ``deliver`` for each (same rules: its own thread, arrival order, untrusted bytes).  The node's receiver
    has one, so that what arrived together is handled together: one lock, one durable write for every vote
    the datagrams hold, one datagram per peer for the answers.  A plain callable has none: call it per
    datagram.
    """
    batch = getattr(deliver, "batch", None)
    return batch if callable(batch) else None


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

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the ``{node id: address}`` map given to :meth:`start` (a membership change, thesis ch. 4).

        Called by the node, from whichever thread carries out its outputs, whenever the configuration it
        uses changes: new ids become reachable, ids no longer listed stop being sent to, and a changed
        address is used from now on.  This node's own id keeps the address it was started with (a
        running node never rebinds).  Never blocks for long (no name resolution on the caller's thread)
        and never raises for network conditions; calls before :meth:`start` or after :meth:`close` are
        ignored.

        The default raises ``NotImplementedError``: a transport written before membership changes existed
        keeps working for a fixed member set, and the node reports clearly why it cannot change it.

        Raises:
            TransportError: an address is malformed (the message names the member and the address).
            NotImplementedError: this transport cannot change its peers while running.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot change its peers while running")

    @abc.abstractmethod
    def close(self) -> None:
        """Stop delivering, release resources and join the transport's threads.  Idempotent."""

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    @property
    def failed(self) -> bool:
        """True if the transport stopped working by itself (its receive loop ended before :meth:`close`).

        A node whose transport failed never reports leadership: its peers may already be replacing it on
        evidence that it is gone.  Default: False (a transport that cannot fail on its own).
        """
        return False

    def counters(self) -> Mapping[str, int]:
        """Transport-level counters, merged into :meth:`RaftNode.status` (optional; default: none).

        Keys follow the node's naming: ``rejected_<reason>`` for input the transport itself dropped (for
        example ``rejected_oversized``), ``send_dropped`` and the like for outgoing data it could not send.
        """
        return {}


class DeathProbe(abc.ABC):
    """Optional capability of a :class:`Transport`: evidence that a peer's *process* is gone.

    A peer that is merely silent may be paused, partitioned away or slow, and only an election timeout can
    tell.  But when a process dies on a host that stays up, the host's kernel says so at once: nothing
    listens on the peer's port any more, so a probe is refused.  The node uses such evidence to replace a
    dead leader in milliseconds (see :mod:`raft_election.core`, "fast failover").

    Rules every implementation follows, because safety arguments rest on them:

    * Evidence means "nothing listens on the peer's address now": ICMP port unreachable or a refused TCP
      connection, in answer to a probe this transport sent within :data:`EVIDENCE_WINDOW` seconds.  A
      timeout, host or network unreachable, a reset connection alone, or anything else ambiguous is *not*
      evidence.  Unsolicited errors (no probe outstanding) are ignored.
    * A paused process keeps its sockets, so it never yields evidence.
    * ``report`` is called from a transport thread, outside the transport's own locks, never after
      :meth:`Transport.close` has returned, and never raises into the transport (exceptions are logged).

    The node calls :meth:`watch` once after :meth:`Transport.start`, and :meth:`probe` whenever its core
    asks for one (a leader's heartbeat is overdue, or a voter is asked to confirm a leader's death).
    """

    @abc.abstractmethod
    def watch(self, report: EvidenceFn) -> None:
        """From now on, call ``report(peer_id, kind)`` with every piece of death evidence about a peer."""

    @abc.abstractmethod
    def probe(self, peer_id: int) -> None:
        """Check, without blocking the caller, whether anything still listens on ``peer_id``'s address.

        If nothing does, ``report`` is called soon after (typically within a millisecond on a LAN); if the
        peer is alive, paused or unreachable, nothing happens.  Unknown peers and calls before
        :meth:`Transport.start` or after :meth:`Transport.close` are ignored.
        """


#: How long after sending a probe its refusal still counts as evidence, in seconds.  A refusal that
#: arrives later (or without any probe) is ignored, so a stray or forged error cannot be banked for later.
EVIDENCE_WINDOW = 0.5
