"""UDP death probes: one connected probe socket per peer, to hear a dead peer's host say "port unreachable".

:class:`ProbeSockets` makes the probe sockets when the transport starts, sends the probes the transport
was asked for and reads their answers, and follows the peers: a peer added by
:meth:`~transports.udp.UdpTransport.set_peers` gets a probe socket, a removed one's is closed, a moved
one's is pointed at the new address.  Only the transport's receive thread uses it after the start, and
that thread finally closes it.  A refusal in answer to a recent probe is evidence that the peer's process
is gone (the rules every death probe follows are in :class:`raft_election.transport.DeathProbe`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Dict, List, Optional, Tuple

from raft_election.ratelimit import RateLimitedLog
from raft_election.transport import EVIDENCE_WINDOW
from transports.socketbase import Counters
from transports.udp.addresses import SockAddr

__all__ = ["EVIDENCE_KIND", "ProbeSockets"]

#: The package's logger: the UDP transport logs as ``transports.udp``, whichever module writes the line.
logger = logging.getLogger(__package__)

#: The ``kind`` this transport reports to :meth:`UdpTransport.watch`'s callback.
EVIDENCE_KIND = "port_unreachable"

#: Datagrams or errors read from one probe socket per readiness report.
_READ_BATCH = 64

#: Most probes to one peer remembered as awaiting an answer (only those sent within ``EVIDENCE_WINDOW``).
_MAX_OUTSTANDING = 16


class ProbeSockets:
    """A node's probe sockets, one per peer, and the probes sent on them that still await an answer.

    Why a socket per peer.  When a peer's process dies on a host that stays up, nothing listens on its
    port any more, and the host answers a datagram to that port with ICMP port unreachable.  An
    *unconnected* socket never hears of that error, so the transport keeps one extra socket per peer, a
    **probe socket**: bound to an ephemeral port of this node's own host address and ``connect()``-ed to
    the peer's address, which makes the kernel report the ICMP error on that socket as ``ECONNREFUSED``
    (Linux matches the error to the socket by the 4-tuple of the datagram it quotes).

    A probe is an empty datagram sent on it (:meth:`send`); a refusal read from it within
    :data:`~raft_election.transport.EVIDENCE_WINDOW` seconds of a probe is evidence, reported as
    ``(peer_id, "port_unreachable")`` (each probe is answered at most once; the kernel keeps one pending
    error per socket).  A live or paused peer simply receives the empty datagram (its transport counts it
    as ``probes_received``), and an unreachable host or network, a timeout or anything else is never
    evidence.  A refusal without a recent probe (a late, stray or forged ICMP error) is read, counted as
    ``evidence_ignored`` and forgotten, so it cannot be banked for a later probe.

    The peers change (:meth:`retarget`) when the transport's peers do (a membership change, or a host name
    that resolves elsewhere now): a new peer's socket is made, a removed peer's socket is closed, and a
    moved peer's socket is connected to the new address, forgetting the probes sent to the old one, so an
    answer from an address the peer has left is never evidence (:meth:`target` lets the transport check
    that the address a piece of evidence came from is still the peer's).

    Made by :meth:`open` before the receive thread starts; from then on used by that thread only, which
    also closes it.
    """

    def __init__(self, node_id: int, socks: Mapping[int, socket.socket], counters: Counters,
                 log: RateLimitedLog, *, family: int = socket.AF_INET,
                 local: Tuple[object, ...] = ("", 0)) -> None:
        self._node_id = node_id
        self._socks = dict(socks)
        #: The address each probe socket is connected to.
        self._targets: Dict[int, SockAddr] = {}
        self._family = family
        self._local = local
        self._counters = counters
        self._log = log
        #: When the probes to each peer that still await an answer were sent (``time.monotonic``, oldest
        #: first).
        self._sent_at: Dict[int, List[float]] = {}

    @classmethod
    def open(cls, node_id: int, sock: socket.socket, routes: Mapping[int, SockAddr], counters: Counters,
             log: RateLimitedLog) -> ProbeSockets:
        """One non-blocking probe socket per routed peer: bound to ``(own host, 0)``, connected to the peer.

        Binding the node's own host address (that of ``sock``, the node's socket) makes probes leave from
        the address the node is known by (a wildcard address lets the kernel pick, as for the main socket).
        A peer whose probe socket cannot be made is logged and cannot be probed (counted as
        ``probe_errors``); the node then waits for its election timeout, as it would without this
        capability.
        """
        own = sock.getsockname()
        local = (own[0], 0, *own[2:])  # keep an IPv6 address's flow info and scope id
        made = cls(node_id, {}, counters, log, family=sock.family, local=local)
        for peer_id, route in routes.items():
            if peer_id != node_id:
                made._make(peer_id, route)
        return made

    def _make(self, peer_id: int, route: SockAddr) -> Optional[socket.socket]:
        """Make ``peer_id``'s probe socket, connected to ``route`` (None, logged and counted, on failure)."""
        probe: Optional[socket.socket] = None
        try:
            probe = socket.socket(self._family, socket.SOCK_DGRAM)
            probe.setblocking(False)
            probe.bind(self._local)
            probe.connect(route)
        except OSError as exc:
            if probe is not None:
                probe.close()
            self._counters.add("probe_errors")
            logger.warning("node %d: cannot make a probe socket for node %d (%s); its death will only be "
                           "noticed by the election timeout", self._node_id, peer_id, exc)
            return None
        self._socks[peer_id] = probe
        self._targets[peer_id] = route
        return probe

    def _drop(self, peer_id: int, selector: selectors.BaseSelector) -> None:
        """Close ``peer_id``'s probe socket (it can no longer be probed)."""
        probe = self._socks.pop(peer_id)
        self._targets.pop(peer_id, None)
        selector.unregister(probe)
        probe.close()

    def retarget(self, peer_id: int, route: Optional[SockAddr], selector: selectors.BaseSelector) -> None:
        """``peer_id``'s address changed to ``route`` (None: it has none any more, or left the members).

        Its probe socket is connected to the new address (made, if the peer had none: a new member), or
        closed; probes sent to the old address can no longer be answered.  A socket that cannot be pointed
        at the new address is closed rather than left on the old one (whose refusals would say nothing
        about the peer): the peer then cannot be probed (counted as ``probe_errors``, logged).
        """
        self._sent_at.pop(peer_id, None)
        probe = self._socks.get(peer_id)
        if route is None:
            if probe is not None:
                self._drop(peer_id, selector)
            return
        if probe is None:
            probe = self._make(peer_id, route)
            if probe is not None:
                selector.register(probe, selectors.EVENT_READ, peer_id)
            return
        try:
            probe.connect(route)
        except OSError as exc:
            self._counters.add("probe_errors")
            logger.warning("node %d: cannot point node %d's probe socket at its new address (%s); its death "
                           "will only be noticed by the election timeout", self._node_id, peer_id, exc)
            self._drop(peer_id, selector)
            return
        self._targets[peer_id] = route

    def target(self, peer_id: int) -> Optional[SockAddr]:
        """The address ``peer_id``'s probe socket is connected to; None if it has no probe socket."""
        return self._targets.get(peer_id)

    def addresses(self) -> Dict[int, Tuple[str, int]]:
        """The local ``(host, port)`` of each peer's probe socket."""
        return {peer_id: probe.getsockname()[:2] for peer_id, probe in self._socks.items()}

    def register(self, selector: selectors.BaseSelector) -> None:
        """Have ``selector`` watch every probe socket for reading, with the peer's id as the key's data."""
        for peer_id, probe in self._socks.items():
            selector.register(probe, selectors.EVENT_READ, peer_id)

    def close(self) -> None:
        """Close every probe socket."""
        for probe in self._socks.values():
            probe.close()

    def read(self, peer_id: int, evidence: List[int]) -> None:
        """Read what is pending on ``peer_id``'s probe socket: a refusal may be evidence, nothing else is.

        Nothing to do if the peer has no probe socket (any more: it was closed since it became readable).
        """
        probe = self._socks.get(peer_id)
        if probe is None:
            return
        for _ in range(_READ_BATCH):
            try:
                probe.recv(1)  # nobody should send to a probe socket: read and drop (and count) it
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self._refused(peer_id, evidence)
                continue
            except OSError as exc:  # host or network unreachable and the like: never evidence
                self._ignore(peer_id, f"an error ({exc})")
                continue
            self._ignore(peer_id, "a datagram")

    def send(self, requested: Iterable[int], evidence: List[int], stopping: threading.Event) -> None:
        """Send one empty datagram to each peer of ``requested``, in order, until ``stopping`` is set."""
        for peer_id in requested:
            probe = self._socks.get(peer_id)
            if probe is None or stopping.is_set():
                continue
            try:
                try:
                    probe.send(b"")
                except ConnectionRefusedError:
                    # The kernel had an ICMP error pending for an earlier datagram: it answers an earlier
                    # probe (or none).  Reading it cleared it, so the new probe can go out now.
                    self._refused(peer_id, evidence)
                    probe.send(b"")
            except OSError as exc:
                self._counters.add("probe_errors")
                self._log.warning(f"probe_error_{peer_id}", "node %s: cannot send a probe to node %d: %s",
                                  self._node_id, peer_id, exc)
                continue
            # Counted at once, before anything that allocates (and so might run the garbage collector on
            # this thread): the peer may count the probe as received within microseconds.
            self._counters.add("probes_sent")
            now = time.monotonic()
            # Only probes still within the window can be answered; the list stays short.
            sent = [at for at in self._sent_at.get(peer_id, []) if now - at <= EVIDENCE_WINDOW]
            self._sent_at[peer_id] = [*sent[-(_MAX_OUTSTANDING - 1):], now]

    def _refused(self, peer_id: int, evidence: List[int]) -> None:
        """A refusal (ICMP port unreachable) on ``peer_id``'s probe socket: evidence if a probe awaits one.

        Each probe is answered at most once: the oldest probe sent within ``EVIDENCE_WINDOW`` takes it.
        """
        now = time.monotonic()
        sent = [at for at in self._sent_at.get(peer_id, []) if now - at <= EVIDENCE_WINDOW]
        if sent:
            self._sent_at[peer_id] = sent[1:]
            evidence.append(peer_id)
        else:
            self._sent_at.pop(peer_id, None)
            self._ignore(peer_id, f"a port-unreachable error with no probe sent within {EVIDENCE_WINDOW} s "
                                  "(late, stray or forged)")

    def _ignore(self, peer_id: int, what: str) -> None:
        self._counters.add("evidence_ignored")
        self._log.warning(f"evidence_ignored_{peer_id}", "node %s: ignored %s on the probe socket for node "
                          "%d", self._node_id, what, peer_id)
