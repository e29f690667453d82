"""A UDP transport: one datagram socket per node, for a LAN or loopback (SPEC §3.3, §5).

Each node binds the address that the peers map gives its own id and sends every message as one datagram
to the address of the peer.  UDP fits Raft's election traffic well: messages are tiny (at most
:data:`~raft_election.codec.MAX_MESSAGE_SIZE` bytes), each is self-contained, and Raft already tolerates
loss, duplication and reordering, so there is no connection state to set up, keep alive or tear down when
a peer dies.

Addresses are ``host:port`` (an IPv4 literal or a host name) or ``[IPv6]:port`` (``[::1]:9001``).  Every
address is resolved once, in :meth:`UdpTransport.start`, numeric literals without any DNS query.  The
socket's family (IPv4 or IPv6) is the family of the node's own resolved address; a peer that has no
address of that family cannot be reached from this socket, so datagrams to it are dropped and counted
(``send_dropped``) and :meth:`UdpTransport.start` logs a warning naming it.  Use one family per cluster.

Threads: :meth:`UdpTransport.start` starts one daemon receive thread, named ``udp-<node id>``, that waits
on the socket, on the probe sockets (see "Death probes" below) and on a wake-up socket pair (so
:meth:`UdpTransport.close` stops it at once, and :meth:`UdpTransport.probe` is served at once), and calls
``deliver`` for each acceptable datagram, one at a time.  :meth:`UdpTransport.send` and
:meth:`UdpTransport.probe` may be called from any thread.

Untrusted input: anyone who can reach the port can send to it.  The transport only drops what cannot be a
message at all: a datagram larger than ``MAX_MESSAGE_SIZE``, and an empty one, which is a peer's death
probe (see below; counted as ``probes_received``).  The codec behind ``deliver`` checks the rest (and
authenticates, when the cluster has a secret).  Nothing a datagram or the socket does can stop the receive
loop: every failure is counted (see :meth:`UdpTransport.counters`), logged at a limited rate, and the loop
goes on.

Death probes (:class:`~raft_election.transport.DeathProbe`).  When a peer's process dies on a host that
stays up, nothing listens on its port any more, and the host answers a datagram to that port with ICMP
port unreachable.  An *unconnected* socket never hears of that error, so the transport keeps one extra
socket per peer, a **probe socket**: bound to an ephemeral port of this node's own host address and
``connect()``-ed to the peer's address, which makes the kernel report the ICMP error on that socket as
``ECONNREFUSED`` (Linux matches the error to the socket by the 4-tuple of the datagram it quotes).
:meth:`UdpTransport.probe` asks the receive thread to send an empty datagram on it; the receive thread
watches the probe sockets too and reports ``(peer_id, "port_unreachable")`` when a probe is refused
within :data:`~raft_election.transport.EVIDENCE_WINDOW` seconds (each probe is answered at most once; the
kernel keeps one pending error per socket).  A live or paused peer simply
receives the empty datagram (its transport counts it as ``probes_received``), and an unreachable host or
network, a timeout or anything else is never evidence.  A refusal without a recent probe (a late,
stray or forged ICMP error) is read, counted as ``evidence_ignored`` and forgotten, so it cannot be
banked for a later probe.  Probe sockets are made by :meth:`UdpTransport.start`, before the receive thread
starts, and are only ever used by that thread, which also closes them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from raft_election.codec import MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.ratelimit import RateLimitedLog
from raft_election.transport import (
    EVIDENCE_WINDOW,
    DeathProbe,
    DeliverFn,
    EvidenceFn,
    Transport,
    report_deaths,
)

__all__ = ["COUNTER_NAMES", "EVIDENCE_KIND", "UdpTransport", "parse_address"]

logger = logging.getLogger(__name__)

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
)

#: The ``kind`` this transport reports to :meth:`UdpTransport.watch`'s callback.
EVIDENCE_KIND = "port_unreachable"

#: Datagrams read per readiness report before the loop looks at the wake-up socket again, so that a flood
#: cannot delay :meth:`UdpTransport.close` (the stop flag is also checked before each datagram).
READ_BATCH = 64

#: Longest pause of the receive loop after repeated consecutive errors (a broken socket must not turn
#: into a busy loop; the pause ends early when the transport is closed).
MAX_ERROR_BACKOFF = 0.1

#: Most probes to one peer remembered as awaiting an answer (only those sent within ``EVIDENCE_WINDOW``).
_MAX_OUTSTANDING = 16

#: What a failed ``bind`` means, in plain words, by errno.
_BIND_REASONS: Dict[int, str] = {
    errno.EADDRINUSE: "the port is already in use (another process, or another node on this host, is "
                      "bound to it)",
    errno.EADDRNOTAVAIL: "the address is not local: no network interface of this host has it",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EPERM: "permission denied",
    errno.EAFNOSUPPORT: "this host does not support the address family (is IPv6 disabled?)",
}

#: A socket address as ``getaddrinfo`` returns it: ``(host, port)`` or ``(host, port, flow, scope)``.
_SockAddr = Tuple[Any, ...]

_CREATED, _STARTING, _RUNNING, _CLOSED = "created", "starting", "running", "closed"


def parse_address(address: str) -> Tuple[str, int]:
    """Split a transport address into ``(host, port)``; no name is resolved.

    Accepted forms: ``host:port``, where host is an IPv4 literal or a host name (``127.0.0.1:9001``,
    ``db1.example:9001``), and ``[host]:port`` for IPv6 literals (``[::1]:9001``, ``[fe80::1%eth0]:9001``).
    The port must be a decimal number from 1 to 65535.

    Raises:
        TransportError: the address is malformed; the message quotes it and says what is wrong.
    """

    def bad(problem: str) -> TransportError:
        return TransportError(
            f"invalid UDP address {address!r}: {problem}; write it as host:port, "
            "e.g. '127.0.0.1:9001' or '[::1]:9001'"
        )

    if not isinstance(address, str):
        raise bad(f"it is a {type(address).__name__}, not a string")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise bad("the '[' of an IPv6 address has no closing ']'")
        host, rest = address[1:end], address[end + 1:]
        if not rest:
            raise bad("no port after the ']'")
        if not rest.startswith(":"):
            raise bad(f"unexpected {rest!r} after the ']'; a ':' and the port must follow it")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise bad("no port")
        if ":" in host:
            raise bad("an IPv6 address must be in brackets")
    if not host:
        raise bad("no host (to listen on every interface use 0.0.0.0 or [::])")
    if not port_text:
        raise bad("no port after the ':'")
    if not (port_text.isascii() and port_text.isdigit()):
        raise bad(f"the port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise bad(f"the port {port} is out of range (1 to 65535)")
    return host, port


def _resolve(host: str, port: int) -> List[Tuple[int, _SockAddr]]:
    """Resolve ``host`` to ``(family, sockaddr)`` pairs, IPv4 and IPv6 only, in ``getaddrinfo``'s order.

    A numeric literal is tried first with ``AI_NUMERICHOST``, so it never waits for DNS.

    Raises:
        socket.gaierror: the name cannot be resolved.
    """
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    return [
        (family, sockaddr)
        for family, _, _, _, sockaddr in infos
        if family in (socket.AF_INET, socket.AF_INET6)
    ]


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UdpTransport(Transport, DeathProbe):
    """A node's UDP endpoint: a socket bound to ``peers[node_id]``, a probe socket per peer, a receive thread.

    Create one per node and hand it to :class:`~raft_election.RaftNode`, which calls :meth:`start`,
    :meth:`send` and :meth:`close` (and :meth:`watch` and :meth:`probe`, see the module docstring on death
    probes).  A transport is started once; after :meth:`close` create a new one.

    Delivery is best effort, as UDP is: datagrams may be lost, duplicated or reordered, and nothing is
    ever raised to a sender for a network condition.  Every datagram read, and every one that could not
    be sent, ends up in exactly one counter of :meth:`counters`.

    The socket does not set ``SO_REUSEADDR``, so two nodes can never share a port by mistake (on Linux
    that option would let both bind it and split the traffic between them).
    """

    def __init__(self) -> None:
        #: Guards every field below; also held around ``sendto`` so that :meth:`close` can never close
        #: the socket under a send (a reused file descriptor would then get the datagram).
        self._lock = threading.Lock()
        self._state = _CREATED
        self._node_id: Optional[int] = None
        self._address: Optional[Tuple[str, int]] = None
        self._sock: Optional[socket.socket] = None
        self._wake_send: Optional[socket.socket] = None
        self._routes: Dict[int, _SockAddr] = {}
        self._members: FrozenSet[int] = frozenset()
        self._thread: Optional[threading.Thread] = None
        self._counts: Dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        #: Set by :meth:`close`; the receive loop checks it before each datagram and each report.
        self._stopping = threading.Event()
        #: Set when the receive thread ended before :meth:`close` (see :attr:`failed`).
        self._failed = False
        self._log = RateLimitedLog(logger)
        #: Called with death evidence; set by :meth:`watch`.
        self._report: Optional[EvidenceFn] = None
        #: Peers whose probe :meth:`probe` asked for and the receive thread has not sent yet, in request
        #: order (a dict used as an ordered set: repeated requests before the send are one probe).
        self._probe_requests: Dict[int, None] = {}
        #: The local ``(host, port)`` of each peer's probe socket (fixed at start; see :meth:`probe_address`).
        self._probe_addresses: Dict[int, Tuple[str, int]] = {}
        #: Each peer's probe socket.  Set at start, then used (and finally closed) by the receive thread only.
        self._probe_socks: Dict[int, socket.socket] = {}
        #: When the receive thread sent the probes to each peer that still await an answer
        #: (``time.monotonic``, oldest first); used by that thread only.
        self._probe_sent_at: Dict[int, List[float]] = {}

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
            if self._state == _CLOSED:
                raise TransportError(f"UDP transport of node {node_id} is closed; create a new one")
            if self._state != _CREATED:
                raise TransportError(f"UDP transport of node {node_id} is already started")
            self._state = _STARTING
        try:
            self._start(node_id, peers, deliver)
        except BaseException:
            with self._lock:
                if self._state == _STARTING:
                    self._state = _CREATED
            raise

    def _start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        if node_id not in peers:
            raise TransportError(
                f"node {node_id} has no address in peers (members: {sorted(peers)}); add this node's "
                "own address, e.g. '127.0.0.1:9001'"
            )
        parsed: Dict[int, Tuple[str, int]] = {}
        for peer_id, address in peers.items():
            try:
                parsed[peer_id] = parse_address(address)
            except TransportError as exc:
                raise TransportError(f"address of node {peer_id}: {exc}") from None
        sock = _bind(node_id, peers[node_id], *parsed[node_id])
        wake_receive: Optional[socket.socket] = None
        wake_send: Optional[socket.socket] = None
        probe_socks: Dict[int, socket.socket] = {}
        try:
            routes = _routes(node_id, sock.family, peers, parsed)
            probe_socks = self._open_probe_sockets(node_id, sock, routes)
            wake_receive, wake_send = socket.socketpair()
            wake_receive.setblocking(False)
            wake_send.setblocking(False)
            host, port = sock.getsockname()[:2]
            thread = threading.Thread(
                target=self._run, args=(sock, wake_receive, wake_send, probe_socks, deliver),
                name=f"udp-{node_id}", daemon=True,
            )
            with self._lock:
                if self._state != _STARTING:
                    raise TransportError(f"UDP transport of node {node_id} was closed while starting")
                self._node_id = node_id
                self._address = (host, port)
                self._sock = sock
                self._wake_send = wake_send
                self._routes = routes
                self._members = frozenset(peers)
                self._probe_socks = probe_socks
                self._probe_addresses = {peer_id: probe.getsockname()[:2]
                                         for peer_id, probe in probe_socks.items()}
                # Started under the lock, so that a concurrent close() finds the thread to join.
                thread.start()
                self._thread = thread
                self._state = _RUNNING
        except BaseException:
            for resource in (sock, wake_receive, wake_send, *probe_socks.values()):
                if resource is not None:
                    resource.close()
            raise
        logger.info("node %d: UDP transport bound to %s", node_id, _format(host, port))

    def _open_probe_sockets(self, node_id: int, sock: socket.socket,
                            routes: Mapping[int, _SockAddr]) -> Dict[int, socket.socket]:
        """One non-blocking probe socket per routed peer: bound to ``(own host, 0)``, connected to the peer.

        Binding the node's own host address makes probes leave from the address the node is known by
        (a wildcard address lets the kernel pick, as for the main socket).  A peer whose probe socket
        cannot be made is logged and cannot be probed (counted as ``probe_errors``); the node then waits
        for its election timeout, as it would without this capability.
        """
        own = sock.getsockname()
        local = (own[0], 0, *own[2:])  # keep an IPv6 address's flow info and scope id
        probes: Dict[int, socket.socket] = {}
        for peer_id, route in routes.items():
            if peer_id == node_id:
                continue
            probe: Optional[socket.socket] = None
            try:
                probe = socket.socket(sock.family, socket.SOCK_DGRAM)
                probe.setblocking(False)
                probe.bind(local)
                probe.connect(route)
            except OSError as exc:
                if probe is not None:
                    probe.close()
                self._count("probe_errors")
                logger.warning("node %d: cannot make a probe socket for node %d (%s); its death will only "
                               "be noticed by the election timeout", node_id, peer_id, exc)
                continue
            probes[peer_id] = probe
        return probes

    def close(self) -> None:
        """Stop the receive thread, wait for it and close the sockets.  Idempotent.

        When this returns no ``deliver`` call is running or will start, unless it is called from inside
        a ``deliver`` callback: the thread then cannot wait for itself, so it stops (and closes the
        sockets) as soon as that callback returns.  Sends after this are dropped silently.
        """
        with self._lock:
            if self._state != _CLOSED:
                self._state = _CLOSED
                self._stopping.set()
                # If this fails the loop still stops: it checks _stopping before each datagram.
                self._wake_locked()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wake_locked(self) -> None:
        """Wake the receive thread (called with the lock held).  Never blocks, never raises."""
        if self._wake_send is not None:
            # OSError: the pair's buffer is full, so a wake-up is pending anyway (or the thread has ended).
            with contextlib.suppress(OSError):
                self._wake_send.send(b"\0")

    # ---------------------------------------------------------------- death probes

    def watch(self, report: EvidenceFn) -> None:
        """From now on, call ``report(peer_id, "port_unreachable")`` with every piece of death evidence.

        ``report`` runs on the receive thread, outside the transport's lock, one call at a time, never
        after :meth:`close` has returned; what it raises is logged (at a limited rate) and receiving goes
        on.
        """
        with self._lock:
            self._report = report

    def probe(self, peer_id: int) -> None:
        """Ask the receive thread to send an empty datagram to ``peer_id`` on its probe socket.

        Never blocks and never raises.  If nothing listens on the peer's port its host answers with ICMP
        port unreachable, and the callback given to :meth:`watch` gets ``(peer_id, "port_unreachable")``
        (on loopback or a LAN within a millisecond or so).  A live, paused or unreachable peer yields
        nothing.  Requests for this node itself, for unknown peers or peers without a probe socket,
        before :meth:`start` and after :meth:`close` are ignored; requests made before the receive
        thread got to the previous one for the same peer are one probe.
        """
        with self._lock:
            if self._state != _RUNNING or peer_id not in self._probe_addresses:
                return
            self._probe_requests[peer_id] = None
            self._wake_locked()

    def probe_address(self, peer_id: int) -> Optional[Tuple[str, int]]:
        """The local ``(host, port)`` of ``peer_id``'s probe socket, or ``None`` if it has none.

        Read-only, for diagnostics and tests: an ICMP error is matched to the probe socket by this address
        together with the peer's.
        """
        with self._lock:
            return self._probe_addresses.get(peer_id)

    @property
    def failed(self) -> bool:
        """True if the receive thread ended before :meth:`close` was called (it then never restarts)."""
        with self._lock:
            return self._failed

    # ---------------------------------------------------------------- sending

    def send(self, peer_id: int, data: bytes) -> None:
        """Send ``data`` to ``peer_id`` as one datagram, without blocking.

        Dropped and counted as ``send_dropped``, never raised: a peer that is unknown, unresolved or of
        the other address family, a full socket buffer (``EAGAIN``, ``ENOBUFS``), an unreachable host or
        network, and every send before :meth:`start` or after :meth:`close`.

        Raises:
            ValueError: ``data`` is longer than ``MAX_MESSAGE_SIZE`` (a bug in the caller: the codec never
                produces such a message and no receiver would accept it).
        """
        size = len(data)
        if size > MAX_MESSAGE_SIZE:
            raise ValueError(
                f"cannot send {size} bytes to node {peer_id}: the largest message is {MAX_MESSAGE_SIZE} "
                "bytes (raft_election.codec.MAX_MESSAGE_SIZE)"
            )
        with self._lock:
            sock = self._sock
            route = self._routes.get(peer_id)
            if self._state != _RUNNING or sock is None:
                self._counts["send_dropped"] += 1
                return
            if route is None:
                self._counts["send_dropped"] += 1
                failure: object = (
                    "it has no usable address (see the warning at start)" if peer_id in self._members
                    else f"it is not a member (members: {sorted(self._members)})"
                )
            else:
                try:
                    sock.sendto(data, route)
                    return
                except OSError as exc:
                    self._counts["send_dropped"] += 1
                    failure = exc
            node_id = self._node_id
        key = f"send_{failure.errno}" if isinstance(failure, OSError) else f"send_no_route_{peer_id}"
        self._log.warning(key, "node %s: dropped a datagram to node %d: %s", node_id, peer_id, failure)

    # ---------------------------------------------------------------- observation

    def counters(self) -> Mapping[str, int]:
        """A snapshot of the transport's counters (merged into the node's ``status().counters``).

        * ``datagrams_received``: datagrams handed to ``deliver`` (including calls that raised);
        * ``rejected_oversized``: datagrams longer than ``MAX_MESSAGE_SIZE``, dropped unread;
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
        with self._lock:
            return dict(self._counts)

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        """The bound ``(host, port)`` once started (also after :meth:`close`); ``None`` before."""
        with self._lock:
            return self._address

    @property
    def node_id(self) -> Optional[int]:
        """The id given to :meth:`start`; ``None`` before."""
        with self._lock:
            return self._node_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        with self._lock:
            return self._state == _CLOSED

    def __repr__(self) -> str:
        with self._lock:
            bound = "unbound" if self._address is None else _format(*self._address)
            return f"<UdpTransport node_id={self._node_id} {bound} {self._state}>"

    # ---------------------------------------------------------------- the receive thread

    def _run(self, sock: socket.socket, wake_receive: socket.socket, wake_send: socket.socket,
             probes: Dict[int, socket.socket], deliver: DeliverFn) -> None:
        """Read and deliver datagrams, send and watch probes until :meth:`close`.

        The thread owns the sockets from here on and finally closes them, the probe sockets included.
        """
        selector = selectors.DefaultSelector()
        try:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(wake_receive, selectors.EVENT_READ)
            for peer_id, probe in probes.items():
                selector.register(probe, selectors.EVENT_READ, peer_id)
            failures = 0
            while not self._stopping.is_set():
                try:
                    self._serve(selector, sock, wake_receive, probes, deliver)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self._count("receive_errors")
                    self._log.warning("receive_error", "node %s: UDP receive error (%r); receiving goes on",
                                      self._node_id, exc)
                    if failures > 1:  # repeated: pause, so a broken socket does not spin a CPU
                        self._stopping.wait(min(MAX_ERROR_BACKOFF, 0.001 * 2 ** min(failures, 10)))
        finally:
            selector.close()
            with self._lock:
                failed = self._failed = self._state != _CLOSED
                self._sock = None
                self._wake_send = None
                for resource in (sock, wake_receive, wake_send, *probes.values()):
                    resource.close()
            if failed:
                logger.error("node %s: the UDP receive thread ended before close(); this node receives "
                             "nothing more", self._node_id)
            logger.debug("node %s: UDP transport closed", self._node_id)

    def _serve(self, selector: selectors.BaseSelector, sock: socket.socket, wake_receive: socket.socket,
               probes: Mapping[int, socket.socket], deliver: DeliverFn) -> None:
        """Wait until a socket is readable or the thread is woken, then do what is due.

        In this order: read the probe sockets (answers to probes already sent), send the probes asked for,
        report the evidence found, then read a batch of datagrams from the main socket.
        """
        main_ready = False
        evidence: List[int] = []
        for key, _ in selector.select():
            if key.fileobj is sock:
                main_ready = True
            elif key.fileobj is wake_receive:
                _drain(wake_receive)
            else:
                self._read_probe_socket(key.data, probes[key.data], evidence)
        self._send_requested_probes(probes, evidence)
        self._report_evidence(evidence)
        if not main_ready:
            return
        for _ in range(READ_BATCH):
            if self._stopping.is_set():
                return
            try:
                data, source = sock.recvfrom(MAX_MESSAGE_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            self._handle(data, source, deliver)

    def _handle(self, data: bytes, source: _SockAddr, deliver: DeliverFn) -> None:
        size = len(data)
        if size == 0:
            self._count("probes_received")  # a peer checking that this node's process is alive
            return
        if size > MAX_MESSAGE_SIZE:
            self._count("rejected_oversized")
            self._log.warning("rejected_oversized", "node %s: dropped an oversized (> %d bytes) datagram "
                              "from %s", self._node_id, MAX_MESSAGE_SIZE, _format(*source[:2]))
            return
        self._count("datagrams_received")
        try:
            deliver(data)
        except Exception as exc:
            self._count("deliver_errors")
            self._log.warning("deliver_error", "node %s: deliver callback raised %r; receiving goes on",
                              self._node_id, exc)

    # ---------------------------------------------------------------- probes (receive thread only)

    def _read_probe_socket(self, peer_id: int, probe: socket.socket, evidence: List[int]) -> None:
        """Read what is pending on ``peer_id``'s probe socket: a refusal may be evidence, nothing else is."""
        for _ in range(READ_BATCH):
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

    def _send_requested_probes(self, probes: Mapping[int, socket.socket], evidence: List[int]) -> None:
        """Send one empty datagram to each peer :meth:`probe` asked for since the last time, in order."""
        with self._lock:
            requested, self._probe_requests = list(self._probe_requests), {}
        for peer_id in requested:
            probe = probes.get(peer_id)
            if probe is None or self._stopping.is_set():
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
                self._count("probe_errors")
                self._log.warning(f"probe_error_{peer_id}", "node %s: cannot send a probe to node %d: %s",
                                  self._node_id, peer_id, exc)
                continue
            now = time.monotonic()
            # Only probes still within the window can be answered; the list stays short.
            sent = [at for at in self._probe_sent_at.get(peer_id, []) if now - at <= EVIDENCE_WINDOW]
            self._probe_sent_at[peer_id] = [*sent[-(_MAX_OUTSTANDING - 1):], now]
            self._count("probes_sent")

    def _refused(self, peer_id: int, evidence: List[int]) -> None:
        """A refusal (ICMP port unreachable) on ``peer_id``'s probe socket: evidence if a probe awaits one.

        Each probe is answered at most once: the oldest probe sent within ``EVIDENCE_WINDOW`` takes it.
        """
        now = time.monotonic()
        sent = [at for at in self._probe_sent_at.get(peer_id, []) if now - at <= EVIDENCE_WINDOW]
        if sent:
            self._probe_sent_at[peer_id] = sent[1:]
            evidence.append(peer_id)
        else:
            self._probe_sent_at.pop(peer_id, None)
            self._ignore(peer_id, f"a port-unreachable error with no probe sent within {EVIDENCE_WINDOW} s "
                                  "(late, stray or forged)")

    def _ignore(self, peer_id: int, what: str) -> None:
        self._count("evidence_ignored")
        self._log.warning(f"evidence_ignored_{peer_id}", "node %s: ignored %s on the probe socket for node "
                          "%d", self._node_id, what, peer_id)

    def _report_evidence(self, evidence: List[int]) -> None:
        """Hand each piece of evidence to the :meth:`watch` callback, outside the lock, unless closed."""
        if not evidence:
            return
        with self._lock:
            report = self._report
        report_deaths(report, evidence, EVIDENCE_KIND, stopping=self._stopping, count=self._count,
                      limited_log=self._log, who=f"node {self._node_id}",
                      what="ICMP port unreachable from the port")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def _drain(wake: socket.socket) -> None:
    """Read every wake-up byte pending on the receive end of the wake-up pair."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while wake.recv(4096):
            pass


def _bind(node_id: int, address: str, host: str, port: int) -> socket.socket:
    """Return a non-blocking datagram socket bound to the first usable resolution of ``host:port``.

    Raises:
        TransportError: the host cannot be resolved or no resolution can be bound; the message names
            the address and the reason (with the errno text).
    """
    try:
        candidates = _resolve(host, port)
    except socket.gaierror as exc:
        raise TransportError(
            f"cannot resolve the host of node {node_id}'s address {address!r}: {exc}"
        ) from exc
    if not candidates:
        raise TransportError(f"the host of node {node_id}'s address {address!r} has no IPv4 or IPv6 address")
    first_error: Optional[OSError] = None
    for family, sockaddr in candidates:
        sock: Optional[socket.socket] = None
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(sockaddr)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            if sock is not None:
                sock.close()
            if first_error is None:
                first_error = exc
    assert first_error is not None
    reason = _BIND_REASONS.get(first_error.errno or 0, "the operating system refused")
    raise TransportError(
        f"cannot bind node {node_id}'s UDP address {address!r}: {reason} ({first_error})"
    ) from first_error


def _routes(node_id: int, family: int, peers: Mapping[int, str],
            parsed: Mapping[int, Tuple[str, int]]) -> Dict[int, _SockAddr]:
    """Resolve each member's address for a socket of ``family``; warn about (and leave out) the others."""
    routes: Dict[int, _SockAddr] = {}
    for peer_id, (host, port) in parsed.items():
        try:
            candidates = _resolve(host, port)
        except socket.gaierror as exc:
            logger.warning("node %d: cannot resolve node %d's address %r (%s); datagrams to it will be "
                           "dropped", node_id, peer_id, peers[peer_id], exc)
            continue
        usable = [sockaddr for candidate_family, sockaddr in candidates if candidate_family == family]
        if not usable:
            logger.warning("node %d: node %d's address %r has no %s address, and this node's socket is %s; "
                           "datagrams to it will be dropped (use one address family for the whole cluster)",
                           node_id, peer_id, peers[peer_id], _family_name(family), _family_name(family))
            continue
        routes[peer_id] = usable[0]
    return routes
