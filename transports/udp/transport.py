"""The UDP transport itself: the node's datagram socket, sending, and the receive thread.

:class:`UdpTransport` binds the address that the peers map gives its own id (see
:mod:`transports.udp.addresses`), sends every message as one datagram to the address of the peer, and runs
one receive thread that delivers what arrives and serves the death probes of :mod:`transports.udp.probe`.
The parts it shares with the ZeroMQ transport (wake-up pair, counters, deliver guard, evidence report, the
receive loop's end) are in :mod:`transports.socketbase`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from raft_election.codec import MAX_FRAME_SIZE
from raft_election.errors import TransportError
from raft_election.transport import DeliverFn
from transports.socketbase import CLOSED, CREATED, PeerChanges, SocketTransport, WakeUp
from transports.udp.addresses import (
    SockAddr,
    bind_socket,
    format_address,
    is_numeric,
    parse_address,
    resolve_for,
    routes,
)
from transports.udp.probe import EVIDENCE_KIND, ProbeSockets

__all__ = ["COUNTER_NAMES", "MAX_ERROR_BACKOFF", "READ_BATCH", "RECEIVE_BUFFER", "RESOLVE_INTERVAL",
           "RESOLVE_RETRY", "SEND_BUFFER", "UdpTransport"]

#: The package's logger: the UDP transport logs as ``transports.udp``, whichever module writes the line.
logger = logging.getLogger(__package__)

#: The keys of :meth:`UdpTransport.counters`.
COUNTER_NAMES = (
    "datagrams_received",
    "rejected_oversized",
    "send_dropped",
    "receive_errors",
    "deliver_errors",
    "probes_sent",
    "probes_received",
    "death_evidence",
    "evidence_ignored",
    "probe_errors",
    "address_changes",
)

#: Datagrams read per readiness report before the loop looks at the wake-up socket again, so that a flood
#: cannot delay :meth:`UdpTransport.close` (the stop flag is also checked before each datagram).
READ_BATCH = 64

#: Longest pause of the receive loop after repeated consecutive errors (a broken socket must not turn
#: into a busy loop; the pause ends early when the transport is closed).
MAX_ERROR_BACKOFF = 0.1

#: Seconds between two resolutions of the peers' host names (numeric addresses are never resolved again).
RESOLVE_INTERVAL = 5.0
#: ... and while some name does not resolve (a member whose host or container is not up yet).
RESOLVE_RETRY = 1.0

#: ``SO_RCVBUF`` asked for the node's socket, in bytes, when the system default is smaller.  A datagram is
#: at most :data:`~raft_election.codec.MAX_FRAME_SIZE` bytes (a frame of coalesced messages); Linux's
#: default buffer (208 KiB) holds only three of those, so a burst of frames from several peers while the
#: receive thread is busy would be lost.  Linux doubles the value (for its bookkeeping) and caps it at
#: ``net.core.rmem_max``: 1 MiB holds about 17 full frames, or about 1,200 small messages.
RECEIVE_BUFFER = 512 * 1024
#: ``SO_SNDBUF`` asked for the node's socket when the system default is smaller: room for a burst of full
#: frames to several peers that the network interface has not sent yet (capped at ``net.core.wmem_max``).
SEND_BUFFER = 512 * 1024
#: Fewer full frames than this in the receive buffer the kernel granted is logged as a warning.
_FEW_FRAMES = 4

_STARTING, _RUNNING = "starting", "running"


def _size_buffers(node_id: int, sock: socket.socket) -> None:
    """Raise ``sock``'s receive and send buffers to :data:`RECEIVE_BUFFER` and :data:`SEND_BUFFER`.

    Never shrinks a larger system default.  What the kernel grants is logged (a warning when the receive
    buffer holds fewer than a few full frames: raise ``net.core.rmem_max``); a refusal is logged too, and
    the socket keeps its default.
    """
    for option, wanted in ((socket.SO_RCVBUF, RECEIVE_BUFFER), (socket.SO_SNDBUF, SEND_BUFFER)):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < wanted:
                sock.setsockopt(socket.SOL_SOCKET, option, wanted)
        except OSError as exc:
            logger.warning("node %d: cannot set the UDP socket's buffer size (option %d) to %d bytes: %s",
                           node_id, option, wanted, exc)
    try:
        receive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        send = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except OSError:
        return
    if receive < _FEW_FRAMES * MAX_FRAME_SIZE:
        logger.warning("node %d: the UDP receive buffer is only %d bytes, room for fewer than %d frames of "
                       "%d bytes; raise net.core.rmem_max", node_id, receive, _FEW_FRAMES, MAX_FRAME_SIZE)
    logger.debug("node %d: UDP socket buffers: receive %d bytes, send %d bytes", node_id, receive, send)


class UdpTransport(SocketTransport):
    """A node's UDP endpoint: a socket bound to ``peers[node_id]``, a probe socket per peer, a receive thread.

    Create one per node and hand it to :class:`~raft_election.RaftNode`, which calls :meth:`start`,
    :meth:`send` and :meth:`close` (and :meth:`watch` and :meth:`probe`, see
    :class:`~transports.udp.probe.ProbeSockets` on death probes).  A transport is started once; after
    :meth:`close` create a new one.

    UDP fits Raft's election traffic well: messages are small (a datagram is one message of at most
    :data:`~raft_election.codec.MAX_MESSAGE_SIZE` bytes, or a frame of several to the same peer, at most
    :data:`~raft_election.codec.MAX_FRAME_SIZE`), each is self-contained, and Raft already tolerates
    loss, duplication and reordering, so there is no connection state to set up, keep alive or tear down
    when a peer dies.  Delivery is best effort, as UDP is: datagrams may be lost, duplicated or reordered,
    and nothing is ever raised to a sender for a network condition.  Every datagram read, and every one
    that could not be sent, ends up in exactly one counter of :meth:`counters`.

    Threads: :meth:`start` starts one daemon receive thread, named ``udp-<node id>``, that waits on the
    socket, on the probe sockets and on a wake-up socket pair (so :meth:`close` stops it at once, and
    :meth:`probe` is served at once), and calls ``deliver`` for each acceptable datagram, one at a time.
    :meth:`send` and :meth:`probe` may be called from any thread.  When some peer's address is a host
    *name*, a second daemon thread, ``udp-<node id>-resolve``, resolves the names again every
    ``resolve_interval`` seconds (every :data:`RESOLVE_RETRY` while one does not resolve): a member whose
    address changed (a replaced host, a container on a new address) or whose name did not resolve at start
    is reached at its current address, and its probe socket follows it (``address_changes`` counts the
    changes).  Resolving never holds up sending or receiving.

    Membership changes: :meth:`set_peers` replaces the peers while the transport runs.  A new peer with a
    numeric address is reachable when it returns; one with a host name once the resolve thread (started
    then, if it was not running) has resolved it, which it does at once; the receive thread gives a new
    peer its probe socket, closes a removed peer's and points a moved peer's at the new address.

    Untrusted input: anyone who can reach the port can send to it.  The transport only drops what cannot be
    a message at all: a datagram larger than ``MAX_FRAME_SIZE``, and an empty one, which is a peer's death
    probe (counted as ``probes_received``).  The codec behind ``deliver`` checks the rest (and
    authenticates, when the cluster has a secret).  Nothing a datagram or the socket does can stop the
    receive loop: every failure is counted (see :meth:`counters`), logged at a limited rate, and the loop
    goes on.
    """

    _running = _RUNNING
    _evidence_kind = EVIDENCE_KIND
    _evidence_how = "ICMP port unreachable from the port"
    _delivered = "datagrams_received"

    def __init__(self, *, resolve_interval: float = RESOLVE_INTERVAL) -> None:
        """Create a transport; ``resolve_interval``: seconds between resolutions of the peers' names."""
        # ``_lock`` (see SocketTransport) also guards every field below, and is held around ``sendto`` so
        # that the receive thread can never close the socket under a send (a reused file descriptor would
        # then get the datagram).
        super().__init__(logger, COUNTER_NAMES)
        if not resolve_interval > 0:
            raise ValueError(f"resolve_interval must be a positive number of seconds, got "
                             f"{resolve_interval!r}")
        self._resolve_interval = resolve_interval
        #: New addresses of peers (None: no address any more, or no longer a member) for the receive thread
        #: to point their probe sockets at: names that resolve differently now, and :meth:`set_peers`.
        self._retargets: Dict[int, Optional[SockAddr]] = {}
        self._address: Optional[Tuple[str, int]] = None
        self._sock: Optional[socket.socket] = None
        #: The family of ``_sock`` (fixed at start).
        self._family = socket.AF_INET
        self._routes: Dict[int, SockAddr] = {}
        self._members: FrozenSet[int] = frozenset()
        #: The peers whose host is a name, with ``(host, port)``: the resolve thread resolves them again.
        self._names: Dict[int, Tuple[str, int]] = {}
        #: Names given by :meth:`set_peers` that were not resolved yet (the resolve thread does so at once).
        self._fresh: Set[int] = set()
        #: The resolve thread, once some peer's host is a name.
        self._resolver: Optional[threading.Thread] = None
        #: Wakes the resolve thread early: a name was added, or the transport is closing.
        self._resolve_now = threading.Event()
        #: The local ``(host, port)`` of each peer's probe socket (see :meth:`probe_address`).
        self._probe_addresses: Dict[int, Tuple[str, int]] = {}

    # ---------------------------------------------------------------- lifecycle

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Bind ``peers[node_id]``, resolve the peers' addresses and start the receive thread.

        Every address is parsed first, so a malformed one fails the start even if it is a peer's.  A
        peer whose host name cannot be resolved, or that has no address of this socket's family, is
        logged as a warning and datagrams to it are dropped (one unreachable member must not keep the
        others from electing a leader).

        Raises:
            TransportError: ``node_id`` has no address in ``peers``; an address is malformed; this node's
                host cannot be resolved; the address cannot be bound (the message names the address and
                the reason: port in use, address not local, permission denied, ...); or the transport was
                already started or closed.
        """
        with self._lock:
            if self._state == CLOSED:
                raise TransportError(f"UDP transport of node {node_id} is closed; create a new one")
            if self._state != CREATED:
                raise TransportError(f"UDP transport of node {node_id} is already started")
            self._state = _STARTING
        try:
            self._start(node_id, peers, deliver)
        except BaseException:
            with self._lock:
                if self._state == _STARTING:
                    self._state = CREATED
            raise

    def _start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        if node_id not in peers:
            raise TransportError(
                f"node {node_id} has no address in peers (members: {sorted(peers)}); add this node's "
                "own address, e.g. '127.0.0.1:9001'"
            )
        addresses = self._checked_addresses(peers)
        parsed = {peer_id: parse_address(address) for peer_id, address in addresses.items()}
        sock = bind_socket(node_id, peers[node_id], *parsed[node_id])
        wakeup: Optional[WakeUp] = None
        probes: Optional[ProbeSockets] = None
        try:
            _size_buffers(node_id, sock)
            found = routes(node_id, sock.family, peers, parsed)
            probes = ProbeSockets.open(node_id, sock, found, self._counters, self._log)
            wakeup = WakeUp()
            host, port = sock.getsockname()[:2]
            thread = threading.Thread(target=self._run, args=(sock, probes), name=f"udp-{node_id}",
                                      daemon=True)
            with self._lock:
                if self._state != _STARTING:
                    raise TransportError(f"UDP transport of node {node_id} was closed while starting")
                self._node_id = node_id
                self._deliver = deliver
                self._address = (host, port)
                self._sock = sock
                self._family = sock.family
                self._wakeup = wakeup
                self._routes = found
                self._members = frozenset(peers)
                self._addresses = addresses
                self._probe_addresses = probes.addresses()
                # Started under the lock, so that a concurrent close() finds the thread to join.
                thread.start()
                self._thread = thread
                self._state = _RUNNING
                self._names = {peer_id: (name, name_port) for peer_id, (name, name_port) in parsed.items()
                               if peer_id != node_id and not is_numeric(name)}
                self._start_resolver()
        except BaseException:
            sock.close()
            for resource in (wakeup, probes):
                if resource is not None:
                    resource.close()
            raise
        logger.info("node %d: UDP transport bound to %s", node_id, format_address(host, port))

    def close(self) -> None:
        """Stop the receive thread, wait for it and close the sockets.  Idempotent.

        When this returns no ``deliver`` call is running or will start, unless it is called from inside
        a ``deliver`` callback: the thread then cannot wait for itself, so it stops (and closes the
        sockets) as soon as that callback returns.  Sends after this are dropped silently.
        """
        with self._lock:
            self._state = CLOSED
            thread = self._thread
        # The resolve thread is not waited for (it may be in a DNS query); it ends when it sees the flag.
        self._stopping.set()
        self._resolve_now.set()
        # If the wake-up fails the loop still stops: it checks the stop flag before each datagram.
        self._stop_receiving(thread)

    # ---------------------------------------------------------------- death probes

    def _can_probe(self, peer_id: int) -> bool:
        # Every routed peer has a probe socket, or gets one before the receive thread sends the probe (or
        # could not get one, which was logged); this node itself has none.
        return peer_id != self._node_id and peer_id in self._routes

    def probe_address(self, peer_id: int) -> Optional[Tuple[str, int]]:
        """The local ``(host, port)`` of ``peer_id``'s probe socket, or ``None`` if it has none.

        Read-only, for diagnostics and tests: an ICMP error is matched to the probe socket by this address
        together with the peer's.  A peer added by :meth:`set_peers` gets its probe socket from the receive
        thread, a moment after the call returned.
        """
        with self._lock:
            return self._probe_addresses.get(peer_id)

    # ---------------------------------------------------------------- sending

    def send(self, peer_id: int, data: bytes) -> None:
        """Send ``data`` to ``peer_id`` as one datagram, without blocking.

        Dropped and counted as ``send_dropped``, never raised: a peer that is unknown, unresolved or of
        the other address family, a full socket buffer (``EAGAIN``, ``ENOBUFS``), an unreachable host or
        network, and every send before :meth:`start` or after :meth:`close`.

        Raises:
            ValueError: ``data`` is longer than ``MAX_FRAME_SIZE`` (a bug in the caller: the codec never
                produces such a datagram and no receiver would accept it).
        """
        size = len(data)
        if size > MAX_FRAME_SIZE:
            raise ValueError(
                f"cannot send {size} bytes to node {peer_id}: the largest datagram is {MAX_FRAME_SIZE} "
                "bytes (raft_election.codec.MAX_FRAME_SIZE)"
            )
        with self._lock:
            sock = self._sock
            route = self._routes.get(peer_id)
            if self._state != _RUNNING or sock is None:
                self._counters.add("send_dropped")
                return
            if route is None:
                self._counters.add("send_dropped")
                failure: object = (
                    "it has no usable address (see the warning at start)" if peer_id in self._members
                    else f"it is not a member (members: {sorted(self._members)})"
                )
            else:
                try:
                    sock.sendto(data, route)
                    return
                except OSError as exc:
                    self._counters.add("send_dropped")
                    failure = exc
            node_id = self._node_id
        key = f"send_{failure.errno}" if isinstance(failure, OSError) else f"send_no_route_{peer_id}"
        self._log.warning(key, "node %s: dropped a datagram to node %d: %s", node_id, peer_id, failure)

    # ---------------------------------------------------------------- observation

    def counters(self) -> Mapping[str, int]:
        """A snapshot of the transport's counters (merged into the node's ``status().counters``).

        * ``datagrams_received``: datagrams handed to ``deliver`` (including calls that raised);
        * ``rejected_oversized``: datagrams longer than ``MAX_FRAME_SIZE``, dropped unread;
        * ``send_dropped``: datagrams that could not be sent (see :meth:`send`);
        * ``receive_errors``: errors reported by the socket (or the selector) to the receive loop;
        * ``deliver_errors``: ``deliver`` calls that raised;
        * ``probes_sent``: empty datagrams sent on probe sockets (see :meth:`probe`);
        * ``probes_received``: empty datagrams read, that is probes from peers (dropped, never delivered);
        * ``death_evidence``: refusals reported to the :meth:`watch` callback;
        * ``evidence_ignored``: errors and datagrams read from probe sockets that were not evidence: a
          refusal with no probe to that peer sent within ``EVIDENCE_WINDOW`` seconds (late, stray or
          forged), any other error (an unreachable host or network is never evidence), data;
        * ``probe_errors``: probe sockets that could not be made and probes that could not be sent.

        Every datagram read from the main socket is in exactly one of ``datagrams_received``,
        ``rejected_oversized`` and ``probes_received``.
        """
        return self._counters.snapshot()

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        """The bound ``(host, port)`` once started (also after :meth:`close`); ``None`` before."""
        with self._lock:
            return self._address

    def __repr__(self) -> str:
        with self._lock:
            bound = "unbound" if self._address is None else format_address(*self._address)
            return f"<UdpTransport node_id={self._node_id} {bound} {self._state}>"

    def _label(self) -> str:
        return f"node {self._node_id}"

    # ---------------------------------------------------------------- membership changes

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the peers while running (see :meth:`SocketTransport.set_peers` for the rules).

        A peer whose host is a literal is routed before this returns; a host name is resolved by the
        resolve thread at once, and datagrams to that peer are dropped (``send_dropped``) until it
        resolves.  A removed peer's probe socket is closed, an added peer gets one, and a moved peer's is
        pointed at the new address, by the receive thread a moment later (see :meth:`probe_address`).

        Raises:
            TransportError: an address is malformed; the message names the member and the address.
        """
        super().set_peers(peers)

    def _canonical_address(self, address: str) -> str:
        return format_address(*parse_address(address))

    def _change_peers(self, node_id: int, members: Mapping[int, str], changes: PeerChanges) -> bool:
        """Route to the new addresses: literals at once (no DNS), names through the resolve thread.

        A removed or moved peer loses its route at once; its probe socket is closed or pointed elsewhere
        by the receive thread, woken here.
        """
        targets = {peer_id: parse_address(address) for peer_id, address in changes.targets.items()}
        names = {peer_id: target for peer_id, target in targets.items() if not is_numeric(target[0])}
        literals = {peer_id: target for peer_id, target in targets.items() if peer_id not in names}
        found = routes(node_id, self._family, members, literals, numeric_only=True)
        with self._lock:
            if self._state != _RUNNING:
                return False
            for peer_id in (*changes.removed, *targets):
                self._routes.pop(peer_id, None)
                self._names.pop(peer_id, None)
                self._fresh.discard(peer_id)
                self._retargets[peer_id] = found.get(peer_id)
            self._routes.update(found)
            self._names.update(names)
            self._fresh.update(names)
            self._members = frozenset(members)
            if names:
                self._start_resolver()
                self._resolve_now.set()
        self._wake()
        return True

    # ---------------------------------------------------------------- resolving names again

    def _start_resolver(self) -> None:
        """Start the resolve thread if some peer's host is a name and it does not run yet (``_lock`` held)."""
        if self._resolver is None and self._names:
            self._resolver = threading.Thread(target=self._refresh, daemon=True,
                                              name=f"udp-{self._node_id}-resolve")
            self._resolver.start()

    def _next_round(self) -> float:
        """Seconds until every name is resolved again: sooner while one does not resolve."""
        with self._lock:
            unresolved = any(peer_id not in self._routes for peer_id in self._names)
        return RESOLVE_RETRY if unresolved else self._resolve_interval

    def _refresh(self) -> None:
        """Resolve the peers' host names again and again until :meth:`close` (the resolve thread).

        Every name is resolved again each round (every ``resolve_interval`` seconds, every
        :data:`RESOLVE_RETRY` while one does not resolve); a name just given by :meth:`set_peers` is
        resolved at once, out of turn.
        """
        family = self._family
        due = time.monotonic() + self._next_round()
        while not self._stopping.is_set():
            self._resolve_now.wait(max(0.0, due - time.monotonic()))
            self._resolve_now.clear()
            if self._stopping.is_set():
                return
            whole_round = time.monotonic() >= due
            with self._lock:
                names = dict(self._names) if whole_round else {
                    peer_id: self._names[peer_id] for peer_id in self._fresh}
            for peer_id, (host, port) in names.items():
                if self._stopping.is_set():
                    return
                self._resolved(peer_id, host, port, resolve_for(family, host, port))
            if whole_round:
                due = time.monotonic() + self._next_round()
            else:
                due = min(due, time.monotonic() + self._next_round())

    def _resolved(self, peer_id: int, host: str, port: int, route: Optional[SockAddr]) -> None:
        """Use ``route``, a resolution of ``peer_id``'s ``host:port``, unless the peer moved or left since.

        A change of a known name's resolution is counted (``address_changes``); the first resolution of a
        name given by :meth:`set_peers` is not a change.
        """
        with self._lock:
            if self._state != _RUNNING or self._names.get(peer_id) != (host, port):
                return  # removed or moved by set_peers while this was resolved: stale
            first = peer_id in self._fresh
            self._fresh.discard(peer_id)
            old = self._routes.get(peer_id)
            changed = route != old
            if changed:
                self._routes.pop(peer_id, None)
                if route is not None:
                    self._routes[peer_id] = route
                self._retargets[peer_id] = route
                if not first:
                    self._counters.add("address_changes")
            node_id = self._node_id
        address = format_address(host, port)
        now = "nothing" if route is None else format_address(*route[:2])
        if first and route is None:
            logger.warning("node %s: cannot resolve node %d's address %s; datagrams to it will be dropped "
                           "until it resolves (tried again every %s s)", node_id, peer_id, address,
                           RESOLVE_RETRY)
        elif first:
            logger.info("node %s: node %d's address %s resolves to %s", node_id, peer_id, address, now)
        elif changed:
            logger.info("node %s: node %d's address %s now resolves to %s (was %s)", node_id, peer_id,
                        address, now, "nothing" if old is None else format_address(*old[:2]))
        if changed:
            self._wake()

    def _take_retargets(self) -> Dict[int, Optional[SockAddr]]:
        with self._lock:
            retargets, self._retargets = self._retargets, {}
        return retargets

    # ---------------------------------------------------------------- the receive thread

    def _run(self, sock: socket.socket, probes: ProbeSockets) -> None:
        """Read and deliver datagrams, send and watch probes until :meth:`close`.

        The thread owns the sockets from here on and finally closes them, the probe sockets included.
        """
        wakeup = self._wakeup
        assert wakeup is not None
        selector = selectors.DefaultSelector()
        try:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(wakeup, selectors.EVENT_READ)
            probes.register(selector)
            failures = 0
            while not self._stopping.is_set():
                try:
                    self._serve(selector, sock, wakeup, probes)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    # Repeated: pause, so a broken socket does not spin a CPU.
                    pause = min(MAX_ERROR_BACKOFF, 0.001 * 2 ** min(failures, 10)) if failures > 1 else 0.0
                    self._receive_error(exc, pause)
        finally:
            selector.close()
            with self._lock:
                self._sock = None
                sock.close()
            wakeup.close()
            probes.close()
            self._receive_ended()
            logger.debug("node %s: UDP transport closed", self._node_id)

    def _serve(self, selector: selectors.BaseSelector, sock: socket.socket, wakeup: WakeUp,
               probes: ProbeSockets) -> None:
        """Wait until a socket is readable or the thread is woken, then do what is due.

        In this order: point the probe sockets at their peers' new addresses (:meth:`set_peers`, names that
        resolve elsewhere now), read the probe sockets (answers to probes already sent), send the probes
        asked for, report the evidence found (only about peers still at the address probed), then read a
        batch of datagrams from the main socket.
        """
        main_ready = False
        answered: List[int] = []
        for key, _ in selector.select():
            if key.fileobj is sock:
                main_ready = True
            elif key.fileobj is wakeup:
                wakeup.drain()
            else:
                answered.append(key.data)
        # Probe sockets follow their peers before they are read, so that what a socket holds from a peer's
        # old address is read once the probes sent there are forgotten: it is then never evidence.
        retargets = self._take_retargets()
        for peer_id, route in retargets.items():
            probes.retarget(peer_id, route, selector)
        if retargets:
            with self._lock:
                self._probe_addresses = probes.addresses()
        evidence: List[int] = []
        for peer_id in answered:
            probes.read(peer_id, evidence)
        probes.send(self._take_probe_requests(), evidence, self._stopping)
        self._report_evidence(self._still_current(evidence, probes))
        if not main_ready:
            return
        good: List[bytes] = []
        try:
            for _ in range(READ_BATCH):
                if self._stopping.is_set():
                    return
                try:
                    data, source = sock.recvfrom(MAX_FRAME_SIZE + 1)
                except (BlockingIOError, InterruptedError):
                    return
                if self._acceptable(data, source):
                    good.append(data)
        finally:
            if good:
                self._deliver_many(good)  # what arrived together is handled together

    def _still_current(self, evidence: List[int], probes: ProbeSockets) -> List[int]:
        """The peers of ``evidence`` whose probe socket is still connected to their current address.

        A peer that left, or moved (by :meth:`set_peers` or a name that resolves elsewhere now) after its
        probe was answered, is left out: a refusal from an address it no longer has says nothing about it.
        """
        if not evidence:
            return evidence
        with self._lock:
            return [peer_id for peer_id in evidence
                    if peer_id in self._routes and self._routes[peer_id] == probes.target(peer_id)]

    def _acceptable(self, data: bytes, source: SockAddr) -> bool:
        """Whether ``data`` is to be delivered: not a probe (empty), not oversized (counted and logged)."""
        size = len(data)
        if size == 0:
            self._counters.add("probes_received")  # a peer checking that this node's process is alive
            return False
        if size > MAX_FRAME_SIZE:
            self._reject("oversized", "an oversized (> %d bytes) datagram from %s", MAX_FRAME_SIZE,
                         format_address(*source[:2]))
            return False
        return True
