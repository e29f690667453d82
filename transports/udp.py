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
on the socket and on a wake-up socket pair (so :meth:`UdpTransport.close` stops it at once) and calls
``deliver`` for each acceptable datagram, one at a time.  :meth:`UdpTransport.send` may be called from any
thread.

Untrusted input: anyone who can reach the port can send to it.  The transport only drops what cannot be a
message at all (empty or larger than ``MAX_MESSAGE_SIZE``); the codec behind ``deliver`` checks the rest
(and authenticates, when the cluster has a secret).  Nothing a datagram or the socket does can stop the
receive loop: every failure is counted (see :meth:`UdpTransport.counters`), logged at a limited rate, and
the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from raft_election._ratelimit import RateLimitedLog
from raft_election.codec import MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.transport import DeliverFn, Transport

__all__ = ["COUNTER_NAMES", "UdpTransport", "parse_address"]

logger = logging.getLogger(__name__)

#: The keys of :meth:`UdpTransport.counters`.
COUNTER_NAMES = (
    "datagrams_received",
    "rejected_oversized",
    "rejected_empty",
    "send_dropped",
    "receive_errors",
    "deliver_errors",
)

#: Datagrams read per readiness report before the loop looks at the wake-up socket again, so that a flood
#: cannot delay :meth:`UdpTransport.close` (the stop flag is also checked before each datagram).
READ_BATCH = 64

#: Longest pause of the receive loop after repeated consecutive errors (a broken socket must not turn
#: into a busy loop; the pause ends early when the transport is closed).
MAX_ERROR_BACKOFF = 0.1

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


class UdpTransport(Transport):
    """A node's UDP endpoint: a socket bound to ``peers[node_id]`` and a receive thread.

    Create one per node and hand it to :class:`~raft_election.RaftNode`, which calls :meth:`start`,
    :meth:`send` and :meth:`close`.  A transport is started once; after :meth:`close` create a new one.

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
        #: Set by :meth:`close`; the receive loop checks it before each datagram.
        self._stopping = threading.Event()
        self._log = RateLimitedLog(logger)

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
        try:
            routes = _routes(node_id, sock.family, peers, parsed)
            wake_receive, wake_send = socket.socketpair()
            wake_receive.setblocking(False)
            wake_send.setblocking(False)
            host, port = sock.getsockname()[:2]
            thread = threading.Thread(
                target=self._run, args=(sock, wake_receive, wake_send, deliver), name=f"udp-{node_id}",
                daemon=True,
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
                # Started under the lock, so that a concurrent close() finds the thread to join.
                thread.start()
                self._thread = thread
                self._state = _RUNNING
        except BaseException:
            for resource in (sock, wake_receive, wake_send):
                if resource is not None:
                    resource.close()
            raise
        logger.info("node %d: UDP transport bound to %s", node_id, _format(host, port))

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
                if self._wake_send is not None:
                    # If this fails the loop still stops: it checks _stopping before each datagram.
                    with contextlib.suppress(OSError):
                        self._wake_send.send(b"\0")
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

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
        * ``rejected_empty``: empty datagrams, dropped;
        * ``send_dropped``: datagrams that could not be sent (see :meth:`send`);
        * ``receive_errors``: errors reported by the socket (or the selector) to the receive loop;
        * ``deliver_errors``: ``deliver`` calls that raised.

        Every datagram read is in exactly one of the first three.
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
             deliver: DeliverFn) -> None:
        """Read and deliver datagrams until :meth:`close`; the thread owns and finally closes the sockets."""
        selector = selectors.DefaultSelector()
        try:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(wake_receive, selectors.EVENT_READ)
            failures = 0
            while not self._stopping.is_set():
                try:
                    self._serve(selector, sock, deliver)
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
                self._sock = None
                self._wake_send = None
                for resource in (sock, wake_receive, wake_send):
                    resource.close()
            logger.debug("node %s: UDP transport closed", self._node_id)

    def _serve(self, selector: selectors.BaseSelector, sock: socket.socket, deliver: DeliverFn) -> None:
        """Wait until the socket is readable (or the transport closes), then read a batch of datagrams."""
        ready = [key.fileobj for key, _ in selector.select()]
        if sock not in ready:
            return  # only the wake-up socket: close() was called
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
        if size == 0 or size > MAX_MESSAGE_SIZE:
            reason = "empty" if size == 0 else "oversized"
            self._count(f"rejected_{reason}")
            self._log.warning(f"rejected_{reason}", "node %s: dropped an %s datagram from %s", self._node_id,
                              reason if size == 0 else f"oversized (> {MAX_MESSAGE_SIZE} bytes)",
                              _format(*source[:2]))
            return
        self._count("datagrams_received")
        try:
            deliver(data)
        except Exception as exc:
            self._count("deliver_errors")
            self._log.warning("deliver_error", "node %s: deliver callback raised %r; receiving goes on",
                              self._node_id, exc)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


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
