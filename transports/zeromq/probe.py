"""TCP death probes for the ZeroMQ transport, and the connection monitors that set them off.

:class:`TcpProbes` knows where each peer's probe connects, runs the probes (a plain, non-blocking TCP
connection to the peer's port; a refusal is evidence that the peer's process is gone) and reads the
monitors of the transport's ``PUSH`` sockets, which ask for a probe whenever a connection to a peer drops.
The peers may change while the transport runs (:meth:`TcpProbes.set_peer`, :meth:`TcpProbes.remove_peer`,
for :meth:`~transports.zeromq.ZmqTransport.set_peers`); everything else is done by the transport's
receive thread.  The rules every death probe
follows are in :class:`raft_election.transport.DeathProbe`.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, Union

import zmq

from raft_election.ratelimit import RateLimitedLog
from raft_election.transport import EVIDENCE_WINDOW
from transports.socketbase import Counters
from transports.zeromq.addresses import is_ipv6, split_endpoint

__all__ = ["DISCONNECT_WATCH", "EVIDENCE_KIND", "PROBE_TIMEOUT", "REPROBE_FIRST", "REPROBE_MAX", "TcpProbes"]

#: The package's logger: the ZeroMQ transport logs as ``transports.zeromq``, whichever module writes the line.
logger = logging.getLogger(__package__)

#: Longest wait for the answer to one probe's TCP connection, in seconds: a host that drops the SYN (it is
#: down, or partitioned away) says nothing about the peer's process, and the probe is given up.
PROBE_TIMEOUT = 1.0
#: After a connection to a peer dropped, every failed reconnection by libzmq is probed too, for this many
#: seconds (or until there is evidence, or the connection is back).
DISCONNECT_WATCH = 2.0
#: While a dropped connection is watched, a probe that gave no evidence (the dying process may have closed its
#: connections but not yet its listening socket: measured, a few milliseconds) is repeated after this many
#: seconds, the wait doubling after each probe that connects again up to :data:`REPROBE_MAX`; without it
#: the next probe waited for libzmq's reconnection to fail, some 20-50 ms later.
REPROBE_FIRST = 0.002
REPROBE_MAX = 0.1
#: The ``kind`` this transport reports to :meth:`ZmqTransport.watch`'s callback.
EVIDENCE_KIND = "connection_refused"
#: The events each PUSH socket's monitor reports.
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
#: Upper bound on one wait of the receive thread (it is woken at once on close; this is a safety net).
_POLL_TIMEOUT_MS = 1000
#: Monitor events read per readiness report.
_MONITOR_BATCH = 64


class _ProbeTarget(NamedTuple):
    """Where a probe connects for one peer."""

    host: str
    port: int
    #: The family to resolve ``host`` in (``AF_UNSPEC`` when IPv6 is enabled for a DNS name).
    family: int
    #: The resolved address of a numeric host; ``None`` for a DNS name, resolved again by every probe.
    sockaddr: Optional[Tuple[Any, ...]]


class _Attempt(NamedTuple):
    """A probe's TCP connection in progress (receive thread only)."""

    sock: socket.socket
    #: ``time.monotonic()`` when the SYN was sent.
    started: float
    #: Where it connects: its refusal is evidence only while this is still the peer's target.
    target: _ProbeTarget


#: A background name resolution's result: the family and address to connect to, or why there is none.
_Resolution = Union[Tuple[int, Tuple[Any, ...]], OSError]
#: Numbers that make each monitor's ``inproc`` endpoint unique (a peer that moves gets a new monitor).
_monitor_numbers = itertools.count(1)


class TcpProbes:
    """The ZeroMQ transport's death probes: TCP connections to the peers' ports, and connection monitors.

    When a peer's process dies on a host that stays up, its kernel closes the connections and refuses new
    ones to the port.  The transport asks for both:

    * A probe (asked for by :meth:`~transports.zeromq.ZmqTransport.probe`) opens a plain, non-blocking TCP
      connection (not ZeroMQ) to the peer's host and port.  Refused (``ECONNREFUSED``) within
      :data:`~raft_election.transport.EVIDENCE_WINDOW` seconds: :meth:`run` returns the peer as evidence,
      which the transport reports as ``(peer_id, "connection_refused")``.  Connected: the connection is
      closed at once and nothing is reported (a paused peer's kernel completes the handshake too, so it
      never yields evidence).  No answer within :data:`PROBE_TIMEOUT`, host or network unreachable, or
      anything else: nothing is reported (counted as ``evidence_ignored``).  One probe per peer is in
      flight at a time; further requests meanwhile are dropped.  A DNS name is resolved by a short-lived
      helper thread, so neither the caller nor the receive thread waits for DNS.
    * Each ``PUSH`` socket is monitored (``zmq_socket_monitor``, read by the receive thread).  When its
      connection drops the peer is probed at once, and again whenever libzmq's reconnection fails, for
      :data:`DISCONNECT_WATCH` seconds or until there is evidence or the connection is back; a dead peer
      is so reported without anyone calling :meth:`~transports.zeromq.ZmqTransport.probe`.  (The repeats
      cover the instant in which the dying process has closed its connections but not yet its listening
      socket: a probe that gives no evidence meanwhile is repeated after :data:`REPROBE_FIRST` seconds,
      then at doubling intervals up to :data:`REPROBE_MAX`.)

    Args:
        name: the transport's name, for log lines and the monitors' ``inproc`` endpoints.
        ipv6: as given to the transport (see :func:`~transports.zeromq.options.configure`).
        counters: the transport's counters (``probes_sent``, ``evidence_ignored``, ``probe_errors``,
            ``disconnects``).
        log: the transport's rate-limited log.
        request: queues a probe of a peer (a dropped connection asks for one).
        wake: wakes the receive thread (a background name resolution finished).
        running: whether the transport is still running (a resolution finished after close is dropped).

    Peers are set (:meth:`open_monitor`, :meth:`set_peer`) while the transport starts, and set or removed
    (:meth:`set_peer`, :meth:`remove_peer`) by :meth:`~transports.zeromq.ZmqTransport.set_peers` while it
    runs: the targets and the monitors are guarded by a lock of their own (a leaf: nothing else is taken
    while it is held), and the receive thread takes up the new monitors and closes the retired ones
    (:meth:`poll_monitors`).  A peer that moves or leaves is forgotten at once: a probe of its old address
    that is still in flight is never evidence.  Everything else is done by the receive thread only, and
    :meth:`close` runs once it is done.
    """

    def __init__(self, name: str, ipv6: Optional[bool], counters: Counters, log: RateLimitedLog, *,
                 request: Callable[[int], None], wake: Callable[[], None],
                 running: Callable[[], bool]) -> None:
        self._name = name
        self._ipv6 = ipv6
        self._counters = counters
        self._log = log
        self._request = request
        self._wake = wake
        self._running = running
        #: Guards ``_targets``, ``_monitors``, ``_retired`` and ``_version``.
        self._lock = threading.Lock()
        self._targets: Dict[int, _ProbeTarget] = {}
        #: Each PUSH socket's monitor (a PAIR socket), read and finally closed by the receive thread.
        self._monitors: Dict[int, zmq.Socket[bytes]] = {}
        #: Monitors of PUSH sockets that were closed, for the receive thread to stop polling and close.
        self._retired: List[zmq.Socket[bytes]] = []
        #: Bumped on every change of ``_monitors``, so the receive thread looks only when there is news.
        self._version = 0
        # Used by the receive thread only.
        #: The monitors the receive thread's poller has, and the ``_version`` they are of.
        self._polled: Dict[int, zmq.Socket[bytes]] = {}
        self._polled_version = 0
        self._attempts: Dict[int, _Attempt] = {}
        self._resolving: Set[int] = set()
        #: Peers whose connection dropped, with the end of their watch (``time.monotonic``).
        self._watching: Dict[int, float] = {}
        #: Watched peers whose last probe connected: when to probe again, and the wait that led there.
        self._reprobe: Dict[int, Tuple[float, float]] = {}
        #: Background resolutions done, for the receive thread to take; guarded by ``_resolved_lock``.
        self._resolved_lock = threading.Lock()
        self._resolved: List[Tuple[int, _ProbeTarget, _Resolution]] = []

    # ---------------------------------------------------------------- the peers (any thread)

    def target(self, endpoint: str) -> _ProbeTarget:
        """Where a probe of a peer at ``endpoint`` connects; a numeric host is resolved now (no DNS)."""
        host, port = split_endpoint(endpoint)
        family = socket.AF_UNSPEC if self._ipv6 or is_ipv6(endpoint) else socket.AF_INET
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:  # a DNS name, as libzmq resolves it again on every connect
            return _ProbeTarget(host, port, family, None)
        return _ProbeTarget(host, port, infos[0][0], infos[0][4])

    def open_monitor(self, push: zmq.Socket[bytes], peer_id: int) -> Optional[zmq.Socket[bytes]]:
        """A PAIR socket to which libzmq reports ``push``'s connection events; give it to :meth:`set_peer`.

        ``None`` (logged) if ``push`` cannot be monitored: the peer can still be probed; only the probe on
        disconnection is lost.
        """
        endpoint = f"inproc://{self._name}-monitor-{peer_id}-{next(_monitor_numbers)}"
        try:
            return push.get_monitor_socket(_MONITOR_EVENTS, endpoint)
        except zmq.ZMQError as exc:
            logger.warning("%s: cannot monitor the connection to node %d (%s); a drop of it will not trigger "
                           "a probe", self._name, peer_id, exc.strerror)
            return None

    def set_peer(self, peer_id: int, target: _ProbeTarget, monitor: Optional[zmq.Socket[bytes]]) -> None:
        """Probe ``peer_id`` at ``target`` from now on, its new PUSH socket watched by ``monitor``.

        A peer already known is moved: its old monitor is retired (closed by the receive thread), and
        what a probe of its old target still has to say is never evidence.
        """
        with self._lock:
            self._targets[peer_id] = target
            old = self._monitors.pop(peer_id, None)
            if old is not None:
                self._retired.append(old)
            if monitor is not None:
                self._monitors[peer_id] = monitor
            self._version += 1

    def remove_peer(self, peer_id: int) -> None:
        """Probe ``peer_id`` no more (it left the members); its monitor is retired."""
        with self._lock:
            self._targets.pop(peer_id, None)
            old = self._monitors.pop(peer_id, None)
            if old is not None:
                self._retired.append(old)
            self._version += 1

    def knows(self, peer_id: int) -> bool:
        """Whether ``peer_id`` can be probed (it is a peer)."""
        with self._lock:
            return peer_id in self._targets

    def _current(self, peer_id: int) -> Optional[_ProbeTarget]:
        with self._lock:
            return self._targets.get(peer_id)

    @staticmethod
    def unmonitor(push: zmq.Socket[bytes]) -> None:
        """Stop ``push``'s monitor, if it has one (before ``push`` is closed)."""
        with contextlib.suppress(zmq.ZMQError):
            push.disable_monitor()

    def close(self) -> None:
        """Close the monitors and the connections of probes in flight (once the receive thread is done)."""
        with self._lock:
            monitors = [*self._monitors.values(), *self._retired]
            self._monitors, self._retired = {}, []
            self._version += 1
        for monitor in monitors:
            monitor.close(linger=0)
        self._polled = {}
        attempts, self._attempts = self._attempts, {}
        for attempt in attempts.values():
            attempt.sock.close()

    # ---------------------------------------------------------------- receive thread only

    def poll_monitors(self, poller: zmq.Poller) -> List[Tuple[int, zmq.Socket[bytes]]]:
        """Bring ``poller`` up to date with the monitors; return ``(peer_id, monitor)`` for each to read.

        New monitors are registered; retired ones are unregistered and closed, and what they still hold
        is discarded (events of a PUSH socket that was closed, or of a peer's old address).
        """
        with self._lock:
            if self._version != self._polled_version:
                current = dict(self._monitors)
                retired, self._retired = self._retired, []
                self._polled_version = self._version
            else:
                current, retired = self._polled, []
        if current is not self._polled:
            for peer_id, monitor in self._polled.items():
                if current.get(peer_id) is not monitor:
                    poller.unregister(monitor)
                    self._watching.pop(peer_id, None)  # the connection watched is gone
                    self._reprobe.pop(peer_id, None)
            for peer_id, monitor in current.items():
                if self._polled.get(peer_id) is not monitor:
                    poller.register(monitor, zmq.POLLIN)
            self._polled = current
        for monitor in retired:
            monitor.close(linger=0)
        return list(current.items())

    def poll_timeout_ms(self) -> int:
        """How long the receive thread may wait: until the earliest probe in flight must be given up."""
        due = min([attempt.started + PROBE_TIMEOUT for attempt in self._attempts.values()]
                  + [at for at, _ in self._reprobe.values()], default=math.inf)
        if due == math.inf:
            return _POLL_TIMEOUT_MS
        return max(0, min(_POLL_TIMEOUT_MS, math.ceil((due - time.monotonic()) * 1000)))

    def read_monitor(self, peer_id: int, monitor: zmq.Socket[bytes]) -> None:
        """Read the connection events of the PUSH socket to ``peer_id``; a drop asks for a probe."""
        for _ in range(_MONITOR_BATCH):
            try:
                message = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(message) != 2 or len(message[0]) != 6:
                continue  # not an event of libzmq 4's format: [uint16 event, uint32 value], endpoint
            event = struct.unpack("=HI", message[0])[0]
            now = time.monotonic()
            if event == zmq.EVENT_DISCONNECTED:
                self._counters.add("disconnects")
                self._reprobe.pop(peer_id, None)
                self._watching[peer_id] = now + DISCONNECT_WATCH
                self._request(peer_id)
            elif event == zmq.EVENT_CONNECT_RETRIED and peer_id in self._watching:
                # libzmq's reconnection failed: refused (evidence) or unanswered (not).
                if now < self._watching[peer_id]:
                    self._request(peer_id)
                else:
                    del self._watching[peer_id]
            elif event == zmq.EVENT_CONNECTED:
                self._watching.pop(peer_id, None)
                self._reprobe.pop(peer_id, None)

    def run(self, poller: zmq.Poller, ready: Mapping[Any, int], requested: Iterable[int]) -> List[int]:
        """Conclude the probes answered or timed out, start those ``requested``; return the evidence found.

        ``ready`` is what ``zmq_poll`` reported: a plain socket appears as its file descriptor.
        """
        evidence: List[int] = []
        now = time.monotonic()
        for peer_id, attempt in list(self._attempts.items()):
            if self._current(peer_id) != attempt.target:
                # The peer moved or left since: this probe can say nothing about it, and must not hold up
                # a probe of its new address.
                del self._attempts[peer_id]
                poller.unregister(attempt.sock)
                attempt.sock.close()
                continue
            answered = attempt.sock.fileno() in ready
            if answered or now - attempt.started >= PROBE_TIMEOUT:
                del self._attempts[peer_id]
                poller.unregister(attempt.sock)
                if answered:
                    outcome = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                else:
                    outcome = errno.ETIMEDOUT
                self._conclude(peer_id, attempt, outcome, evidence)
        with self._resolved_lock:
            resolved, self._resolved = self._resolved, []
        requested = list(requested)
        for peer_id, (at, wait) in list(self._reprobe.items()):
            if now < at:
                continue
            if now < self._watching.get(peer_id, -math.inf):
                requested.append(peer_id)
                self._reprobe[peer_id] = (math.inf, wait)  # kept for its wait, which the next one doubles
            else:
                del self._reprobe[peer_id]
        for peer_id, target, resolution in resolved:
            self._resolving.discard(peer_id)
            if self._current(peer_id) != target:
                # The peer moved (or left) while its name was resolved: probe its new address instead.
                requested.append(peer_id)
            elif isinstance(resolution, OSError):
                self._counters.add("probe_errors")
                self._log.warning(f"resolve_{peer_id}", "%s: cannot probe node %d: its host name does not "
                                  "resolve (%s)", self._name, peer_id, resolution)
            else:
                self._connect(poller, peer_id, target, resolution, evidence)
        for peer_id in requested:
            current = self._current(peer_id)
            busy = peer_id in self._attempts or peer_id in self._resolving
            if current is None or busy or peer_id in evidence:
                continue  # one probe per peer in flight; evidence found just now answers this request too
            if current.sockaddr is not None:
                self._connect(poller, peer_id, current, (current.family, current.sockaddr), evidence)
            else:
                self._resolving.add(peer_id)
                threading.Thread(target=self._resolve, args=(peer_id, current), daemon=True,
                                 name=f"{self._name}-resolve-{peer_id}").start()
        return evidence

    def _resolve(self, peer_id: int, target: _ProbeTarget) -> None:
        """Resolve a peer's DNS name for a probe (in a helper thread); the receive thread then connects."""
        result: _Resolution
        try:
            infos = socket.getaddrinfo(target.host, target.port, target.family, socket.SOCK_STREAM)
            result = (infos[0][0], infos[0][4])
        except (OSError, IndexError) as exc:
            result = exc if isinstance(exc, OSError) else OSError(f"no address for {target.host}")
        if not self._running():
            return
        with self._resolved_lock:
            self._resolved.append((peer_id, target, result))
        self._wake()

    def _connect(self, poller: zmq.Poller, peer_id: int, target: _ProbeTarget,
                 address: Tuple[int, Tuple[Any, ...]], evidence: List[int]) -> None:
        """Start a non-blocking TCP connection to ``address``; conclude at once if the kernel knows.

        ``address`` is ``(family, sockaddr)``, a resolution of ``target`` (kept with the attempt).
        """
        family, sockaddr = address
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._counters.add("probe_errors")
            self._log.warning("probe_socket", "%s: cannot make a probe socket: %s", self._name, exc)
            return
        sock.setblocking(False)
        attempt = _Attempt(sock, time.monotonic(), target)
        self._counters.add("probes_sent")
        try:
            outcome = sock.connect_ex(sockaddr)
        except OSError as exc:
            outcome = exc.errno or errno.EINVAL
        if outcome in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self._attempts[peer_id] = attempt
            poller.register(sock, zmq.POLLOUT)
        else:
            self._conclude(peer_id, attempt, outcome, evidence)

    def _again(self, peer_id: int) -> None:
        """A probe of a watched peer said nothing: probe again soon (REPROBE_FIRST, doubling)."""
        now = time.monotonic()
        if now < self._watching.get(peer_id, -math.inf):
            previous = self._reprobe.get(peer_id)
            wait = REPROBE_FIRST if previous is None else min(2 * previous[1], REPROBE_MAX)
            self._reprobe[peer_id] = (now + wait, wait)

    def _conclude(self, peer_id: int, attempt: _Attempt, outcome: int, evidence: List[int]) -> None:
        """Close a probe's connection; a refusal within ``EVIDENCE_WINDOW`` is evidence, nothing else is.

        Nothing is evidence about a peer that moved or left since the probe started.
        """
        attempt.sock.close()
        if outcome == 0:
            self._again(peer_id)  # something listens: alive (perhaps paused), or its process still closing
            return
        if self._current(peer_id) != attempt.target:
            self._counters.add("evidence_ignored")
            logger.debug("%s: probe of node %d's old address %s:%d: %s (it moved or left; not evidence)",
                         self._name, peer_id, attempt.target.host, attempt.target.port, os.strerror(outcome))
            return
        if outcome == errno.ECONNREFUSED and time.monotonic() - attempt.started <= EVIDENCE_WINDOW:
            self._watching.pop(peer_id, None)
            self._reprobe.pop(peer_id, None)
            evidence.append(peer_id)
            return
        self._counters.add("evidence_ignored")
        self._again(peer_id)
        if outcome == errno.ECONNREFUSED:
            self._log.warning(f"late_{peer_id}", "%s: ignored a refusal by node %d that came more than %s s "
                              "after the probe", self._name, peer_id, EVIDENCE_WINDOW)
        else:
            logger.debug("%s: probe of node %d: %s (not evidence)", self._name, peer_id, os.strerror(outcome))
