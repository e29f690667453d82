"""An in-process network for tests: the transport *and* the fault injector (SPEC §3.3, §5).

:class:`InMemoryNetwork` connects any number of :class:`MemoryTransport` endpoints, one per node id (ids
are the addresses).  Like hashicorp/raft's in-memory transport it is also where tests inject faults:
partitions, isolation, one-way blocks, random drops, delays, duplicates and reordering, all changeable
while messages are in flight.

Delivery model:

* Every message goes through one heap ordered by ``(deliver_at, sequence)`` and is delivered by a single
  scheduler thread per network (started lazily, daemon).  ``deliver`` callbacks therefore run on that
  thread, one at a time, outside the network's lock, and never re-entrantly from inside :meth:`send`.
* Fault choices (drop, duplicate, delay, reorder) are drawn from the network's own
  ``random.Random(seed)``, only under the lock, so a run with a single sending thread makes the same
  choices every time.
* Reachability and liveness are checked twice: when a message is sent and again when it is due, so a
  partition (or a closed receiver) also catches messages already in flight.
* Nothing is ever raised to a sender for a network condition; every message ends up in exactly one
  counter of :attr:`InMemoryNetwork.stats`.
* Death evidence (:class:`~raft_election.transport.DeathProbe`): a probe of a node whose transport is
  closed (a crashed node) is answered with evidence of kind ``"closed"`` after two one-way delays, if the
  path is open both ways and the probe is not lost (``drop_rate``); a live node, or one cut off by a
  partition, yields nothing, as on a real network.
* Membership: any id can join at any time (:meth:`InMemoryNetwork.transport` makes its endpoint while
  messages flow).  An endpoint sends to every id on the network until :meth:`MemoryTransport.set_peers`
  gives it a member set; from then on it sends to (and probes) those members only, as the socket
  transports do.

The network moves opaque bytes and knows nothing about Raft.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple, Type, Union

import attrs

from raft_election.delays import wait_until_due
from raft_election.errors import TransportError
from raft_election.netfaults import REORDER_MIN_WINDOW, FaultControls, NetworkFaults
from raft_election.transport import DeathProbe, DeliverFn, EvidenceFn, Transport, as_bytes

__all__ = ["REORDER_MIN_WINDOW", "InMemoryNetwork", "MemoryTransport", "NetworkStats"]

logger = logging.getLogger(__name__)


class _Evidence(NamedTuple):
    """The answer to a probe: nothing listens for ``about`` (its transport is closed)."""

    about: int


#: ``(deliver_at, sequence, src, dst, data)``; ``src`` is ``None`` for :meth:`InMemoryNetwork.inject`.
#: The unique sequence number breaks ties, so later fields are never compared.
_Entry = Tuple[float, int, Optional[int], int, Union[bytes, _Evidence]]

_network_numbers = itertools.count(1)


@attrs.frozen(kw_only=True)
class NetworkStats:
    """A snapshot of an :class:`InMemoryNetwork`'s counters.

    Every copy of a message is accounted for exactly once, so at any instant
    ``sent + injected + duplicated == delivered + dropped_partition + dropped_random + dropped_closed
    + in_flight``.
    """

    #: Calls to :meth:`MemoryTransport.send` (whatever became of the message).
    sent: int = 0
    #: Calls to :meth:`InMemoryNetwork.inject`.
    injected: int = 0
    #: Copies handed to a ``deliver`` callback (counted just before the call, including calls that raised).
    delivered: int = 0
    #: Copies dropped by a partition, an isolation or a block, at send or delivery time.
    dropped_partition: int = 0
    #: Messages dropped by ``drop_rate``.
    dropped_random: int = 0
    #: Extra copies created by ``duplicate_rate``.
    duplicated: int = 0
    #: Copies dropped because the sender or receiver was closed, unknown or not started, the receiver is
    #: not one of the sender's members (see :meth:`MemoryTransport.set_peers`), or the network was closed
    #: (including the messages still in flight when it closed).
    dropped_closed: int = 0
    #: ``deliver`` calls that raised (logged with their traceback; delivery goes on).
    deliver_errors: int = 0
    #: Copies scheduled and not yet delivered or dropped.
    in_flight: int = 0
    #: Calls to :meth:`MemoryTransport.probe` (not messages: outside the equation above).
    probes: int = 0
    #: Probes answered with death evidence (the probed node's transport was closed).
    evidence: int = 0


class InMemoryNetwork(FaultControls):
    """A simulated network of :class:`MemoryTransport` endpoints with fault injection.

    The faults are a :class:`~raft_election.netfaults.NetworkFaults` value with the controls of
    :class:`~raft_election.netfaults.FaultControls` (``partition``, ``isolate``/``rejoin``,
    ``block``/``unblock``, ``heal``, ``can_reach``, the random settings and ``faults`` itself), the same
    model and semantics as the deterministic simulation's (see :mod:`raft_election.netfaults`).

    Args:
        seed: seed of the network's own ``random.Random``, which makes every fault choice; ``None`` seeds
            from the OS.
        delay: each copy of a message is delivered ``uniform(*delay)`` seconds after it is sent.
        drop_rate: probability that a sent message is dropped.
        duplicate_rate: probability that a message not dropped is delivered twice (each copy has its own
            delay).
        reorder_rate: probability that a copy is held back by an extra ``uniform(0, max(delay max, 5 ms))``
            so that messages sent after it overtake it.

    Raises:
        ConfigError: a setting is out of range (a ``ValueError``); the message names the field.

    The random settings are also read/write properties (validated the same way) and apply to messages sent
    afterwards.  Partitions, isolations and blocks take effect at once, also for messages already in
    flight.  Every control is thread-safe and may be called from a ``deliver`` callback.  :meth:`close`
    (or leaving a ``with`` block) stops and joins the delivery thread.
    """

    def __init__(
        self,
        seed: Optional[int] = None,
        *,
        delay: Tuple[float, float] = (0.0, 0.0),
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
    ) -> None:
        self._seed = seed
        self._faults = NetworkFaults(delay=delay, drop_rate=drop_rate, duplicate_rate=duplicate_rate,
                                     reorder_rate=reorder_rate)
        self._random = random.Random(seed)
        #: Guards everything below; the scheduler waits on it for the next deadline or for new messages.
        self._cond = threading.Condition(threading.Lock())
        self._name = f"InMemoryNetwork-{next(_network_numbers)}"
        self._transports: Dict[int, MemoryTransport] = {}
        self._heap: List[_Entry] = []
        self._sequence = itertools.count()
        self._thread: Optional[threading.Thread] = None
        #: The transport whose ``deliver`` the scheduler is running right now, if any.
        self._delivering: Optional[MemoryTransport] = None
        self._closed = False
        self._sent = 0
        self._injected = 0
        self._delivered = 0
        self._dropped_partition = 0
        self._dropped_random = 0
        self._duplicated = 0
        self._dropped_closed = 0
        self._deliver_errors = 0
        self._probes = 0
        self._evidence = 0

    # ---------------------------------------------------------------- endpoints and lifecycle

    def transport(self, node_id: int) -> MemoryTransport:
        """Create the endpoint for ``node_id``, any id, at any time (also while messages are in flight).

        A node that joins the cluster later (a membership change) gets its endpoint then.  A node that
        restarts gets a new endpoint once the old one is closed; messages still in flight to the id are
        then delivered to the new one, as a real network would.

        Raises:
            TypeError: ``node_id`` is not an int.
            TransportError: the network is closed, or a live (not closed) endpoint for ``node_id`` exists.
        """
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            raise TypeError(f"node_id must be an int, got {node_id!r}")
        with self._cond:
            if self._closed:
                raise TransportError(f"{self._name} is closed; cannot create a transport for node {node_id}")
            if node_id in self._transports:
                raise TransportError(
                    f"node {node_id} already has a live transport on {self._name}; close it first"
                )
            endpoint = MemoryTransport(self, node_id)
            self._transports[node_id] = endpoint
            return endpoint

    def close(self) -> None:
        """Stop the delivery thread and discard messages in flight (counted as ``dropped_closed``).

        Idempotent.  Joins the thread, so no ``deliver`` call runs after this returns, unless it is called
        from inside a ``deliver`` callback, in which case the thread exits as soon as that callback returns.
        Afterwards every send is dropped and :meth:`transport` raises.
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                self._dropped_closed += len(self._heap)
                self._heap.clear()
                self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> InMemoryNetwork:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The network's unique name, which is also the name of its delivery thread."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        with self._cond:
            return self._closed

    # ---------------------------------------------------------------- fault controls (FaultControls)

    def _current_faults(self) -> NetworkFaults:
        with self._cond:
            return self._faults

    def _change_faults(self, change: Callable[[NetworkFaults], NetworkFaults]) -> None:
        # Under the lock, so a control takes effect at once, also for messages already in flight.
        with self._cond:
            self._faults = change(self._faults)

    def inject(self, dst: int, data: Union[bytes, bytearray, memoryview]) -> None:
        """Deliver raw ``data`` to ``dst`` as if it came from the network (for bad-input tests).

        It goes through the scheduler like any message (so it is delivered on the delivery thread, after
        messages already due), with no delay and no partition or random fault; it is dropped if ``dst``
        has no started, open transport.

        Raises:
            TypeError: ``data`` is not bytes-like.
        """
        payload = as_bytes(data)
        with self._cond:
            self._injected += 1
            if self._closed or not self._accepting(dst):
                self._dropped_closed += 1
                return
            self._schedule(time.monotonic(), None, dst, payload)

    @property
    def stats(self) -> NetworkStats:
        """An immutable snapshot of the counters (see :class:`NetworkStats`)."""
        with self._cond:
            return NetworkStats(
                sent=self._sent,
                injected=self._injected,
                delivered=self._delivered,
                dropped_partition=self._dropped_partition,
                dropped_random=self._dropped_random,
                duplicated=self._duplicated,
                dropped_closed=self._dropped_closed,
                deliver_errors=self._deliver_errors,
                in_flight=sum(not isinstance(entry[4], _Evidence) for entry in self._heap),
                probes=self._probes,
                evidence=self._evidence,
            )

    def __repr__(self) -> str:
        with self._cond:
            if self._closed:
                state = "closed"
            elif self._thread is not None:
                state = "running"
            else:
                state = "idle"
            faults = self._faults
            groups = None if faults.partition is None else [sorted(group) for group in faults.partition]
            return (
                f"<InMemoryNetwork {self._name} {state} seed={self._seed!r} nodes={sorted(self._transports)} "
                f"in_flight={len(self._heap)} partition={groups} isolated={sorted(faults.isolated)} "
                f"blocked={sorted(faults.blocked)} delay={faults.delay} drop_rate={faults.drop_rate} "
                f"duplicate_rate={faults.duplicate_rate} reorder_rate={faults.reorder_rate}>"
            )

    # ---------------------------------------------------------------- internals (called with the lock held
    # unless noted)

    def _accepting(self, node_id: int) -> bool:
        endpoint = self._transports.get(node_id)
        return endpoint is not None and endpoint._deliver is not None

    def _send(self, src: MemoryTransport, dst: int, data: bytes) -> None:
        """Apply the send-time checks and the random faults, then schedule the copies."""
        with self._cond:
            self._sent += 1
            if self._closed or src._closed or not src._is_peer(dst) or not self._accepting(dst):
                self._dropped_closed += 1
                return
            if not self._faults.can_reach(src.node_id, dst):
                self._dropped_partition += 1
                return
            delays = self._faults.copy_delays(self._random)
            if not delays:
                self._dropped_random += 1
                return
            self._duplicated += len(delays) - 1
            now = time.monotonic()
            for delay in delays:
                self._schedule(now + delay, src.node_id, dst, data)

    def _probe(self, src: MemoryTransport, dst: int) -> None:
        """Answer a probe with evidence if ``dst``'s transport is closed and the path is open both ways."""
        with self._cond:
            self._probes += 1
            faults = self._faults
            if (self._closed or src._closed or not src._is_peer(dst) or self._accepting(dst)
                    or not faults.can_reach(src.node_id, dst)
                    or not faults.can_reach(dst, src.node_id) or self._random.random() < faults.drop_rate):
                return
            low, high = faults.delay
            delay = self._random.uniform(low, high) + self._random.uniform(low, high)
            self._schedule(time.monotonic() + delay, dst, src.node_id, _Evidence(dst))

    def _schedule(self, deliver_at: float, src: Optional[int], dst: int,
                  data: Union[bytes, _Evidence]) -> None:
        heapq.heappush(self._heap, (deliver_at, next(self._sequence), src, dst, data))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _next_delivery(self) -> Optional[Tuple[MemoryTransport, Callable[[], object]]]:
        """Wait for the next message that is due and still deliverable; ``None`` once the network closes.

        Returns the endpoint and the call that delivers the message (or the probe's answer) to it.
        """
        while wait_until_due(self._cond, self._heap, lambda: self._closed) is not None:
            _, _, src, dst, data = heapq.heappop(self._heap)
            endpoint = self._transports.get(dst)
            if isinstance(data, _Evidence):
                if endpoint is None or endpoint._deliver is None or endpoint._report is None:
                    continue
                report = endpoint._report
                self._evidence += 1
                self._delivering = endpoint
                return endpoint, functools.partial(report, data.about, "closed")
            deliver = None if endpoint is None else endpoint._deliver
            if endpoint is None or deliver is None:
                self._dropped_closed += 1
            elif src is not None and not self._faults.can_reach(src, dst):
                self._dropped_partition += 1
            else:
                self._delivered += 1
                self._delivering = endpoint
                return endpoint, functools.partial(deliver, data)
        return None

    def _run(self) -> None:
        """The scheduler thread: deliver due messages one at a time, outside the lock."""
        while True:
            with self._cond:
                item = self._next_delivery()
            if item is None:
                return
            endpoint, deliver = item
            failed = 0
            try:
                deliver()
            except Exception:
                failed = 1
                logger.exception("%s: deliver callback of node %d raised", self._name, endpoint.node_id)
            finally:
                with self._cond:
                    self._deliver_errors += failed
                    self._delivering = None
                    self._cond.notify_all()

    def _close_transport(self, endpoint: MemoryTransport) -> None:
        """Stop deliveries to ``endpoint`` and wait out a ``deliver`` call already running for it."""
        with self._cond:
            endpoint._closed = True
            endpoint._deliver = None
            endpoint._report = None
            if self._transports.get(endpoint.node_id) is endpoint:
                del self._transports[endpoint.node_id]
            if threading.current_thread() is self._thread:
                return  # closing from inside a callback: waiting for ourselves would deadlock
            while self._delivering is endpoint:
                self._cond.wait()


class MemoryTransport(Transport, DeathProbe):
    """One node's endpoint on an :class:`InMemoryNetwork`; create it with :meth:`InMemoryNetwork.transport`.

    Addresses are node ids, so the ``peers`` given to :meth:`start` are ignored: the endpoint sends to
    every id on the network, until :meth:`set_peers` gives it a member set.  ``deliver`` (and the
    ``report`` of :meth:`watch`) is called on the network's delivery thread, one call at a time.
    """

    def __init__(self, network: InMemoryNetwork, node_id: int) -> None:
        self._network = network
        self.node_id = node_id
        # The fields below are guarded by the network's lock.
        self._deliver: Optional[DeliverFn] = None
        self._report: Optional[EvidenceFn] = None
        self._closed = False
        #: The ids this endpoint sends to and probes; ``None``: every id (until :meth:`set_peers`).
        self._peers: Optional[FrozenSet[int]] = None

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Start receiving: from now on messages for this node are passed to ``deliver``.

        Raises:
            TransportError: ``node_id`` is not the id this transport was created for, or the transport
                was already started or closed.
        """
        if node_id != self.node_id:
            raise TransportError(
                f"transport was created for node {self.node_id} but started as node {node_id}"
            )
        with self._network._cond:
            if self._closed:
                raise TransportError(f"transport of node {node_id} is closed; create a new one")
            if self._deliver is not None:
                raise TransportError(f"transport of node {node_id} is already started")
            self._deliver = deliver

    def send(self, peer_id: int, data: bytes) -> None:
        """Hand ``data`` to the network for ``peer_id``; never blocks and never raises for network faults.

        A copy is taken of a ``bytearray`` or ``memoryview``.  Messages to an unknown, unstarted or closed
        peer, to an id that is not a member (once :meth:`set_peers` was called), and every message after
        :meth:`close`, are dropped and counted (``dropped_closed``).

        Raises:
            TypeError: ``data`` is not bytes-like (a programming error, not a network condition).
        """
        self._network._send(self, peer_id, as_bytes(data))

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """From now on send to (and probe) only the ids of ``peers`` (a membership change, thesis ch. 4).

        Addresses are node ids here, so the addresses themselves are not looked at (none is malformed, and
        this node's own never changes).  A message to an id that is no longer a member is dropped and
        counted as ``dropped_closed`` (copies already in flight are still delivered, as on a real
        network); a probe of one is ignored.  An added id is reached as soon as its endpoint is started
        (see :meth:`InMemoryNetwork.transport`).  Calls before :meth:`start` or after :meth:`close` are
        ignored.  Thread-safe; never blocks for long.
        """
        members = frozenset(peers) | {self.node_id}
        with self._network._cond:
            if self._closed or self._deliver is None:
                return
            self._peers = members
        logger.debug("node %d: peers on %s are now %s", self.node_id, self._network.name, sorted(members))

    def _is_peer(self, peer_id: int) -> bool:
        """Whether this endpoint sends to ``peer_id`` (called with the network's lock held)."""
        return self._peers is None or peer_id in self._peers

    def watch(self, report: EvidenceFn) -> None:
        """Report death evidence (answers to :meth:`probe`) to ``report(peer_id, "closed")``."""
        with self._network._cond:
            self._report = report

    def probe(self, peer_id: int) -> None:
        """Ask whether ``peer_id``'s transport is closed; the answer comes on the delivery thread, if any.

        Probes of ids that are not members (once :meth:`set_peers` was called) are ignored.
        """
        self._network._probe(self, peer_id)

    def close(self) -> None:
        """Stop delivery to this node.  Idempotent.

        Returns only when no ``deliver`` call for this node is running or will start (except when called
        from inside this node's own ``deliver`` callback, which may then finish normally).
        """
        self._network._close_transport(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        with self._network._cond:
            return self._closed

    def __repr__(self) -> str:
        with self._network._cond:
            if self._closed:
                state = "closed"
            elif self._deliver is not None:
                state = "started"
            else:
                state = "created"
        return f"<MemoryTransport node_id={self.node_id} {state} on {self._network.name}>"

