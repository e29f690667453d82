"""A ZeroMQ transport for nodes on different hosts (SPEC §3.3, §5).

Topology: every node binds one ``PULL`` socket on its own address and connects one ``PUSH`` socket to each
peer's address.  ZeroMQ does the framing, connects lazily and reconnects by itself when a peer restarts.

Threads:

* The **receive thread** owns the ``PULL`` socket.  It polls it together with the read end of a wake-up
  socket pair (``zmq.Poller`` polls plain file descriptors too), so :meth:`ZmqTransport.close` wakes it at
  once; it reads frames without blocking, drops bad ones (counted, logged at a limited rate) and hands the
  others to ``deliver``, one at a time.  Nothing a peer sends can stop the loop.
* :meth:`ZmqTransport.send` may be called from any thread.  The ``PUSH`` sockets are guarded by one lock:
  libzmq sockets are not thread-safe, but may be used by several threads one after the other provided a
  full memory barrier separates the uses, which taking and releasing a lock is.  A send is a non-blocking
  ``zmq_send`` under that lock, so it takes microseconds and never waits for the network.

Stale messages.  A message for a peer that is down is **dropped**, never queued and delivered late (a burst
of stale heartbeats after a reconnect would be a bug).  What makes that so:

* ``ZMQ_IMMEDIATE=1`` on the ``PUSH`` sockets: "messages shall be queued only to completed connections".
  While a peer is down its socket has no pipe at all, so ``zmq_send(ZMQ_DONTWAIT)`` fails with ``EAGAIN``
  and the message is dropped (``send_dropped``).  With the default (0) libzmq would queue up to the high
  water mark on a pipe created at connect time and flush it on the next connection.
* With ``ZMQ_IMMEDIATE=1`` libzmq also *terminates* the pipe of a connection that breaks, discarding what it
  still held, instead of keeping it for the next connection: messages sent in the instant between a peer's
  death and its detection die with that connection.
* ``ZMQ_SNDHWM`` is small (:data:`SEND_HWM`) and so are the kernel buffers (``ZMQ_SNDBUF``/``ZMQ_RCVBUF``,
  :data:`KERNEL_BUFFER`), so a peer that is connected but not reading can only ever have a few dozen
  messages waiting for it; the rest are dropped at the sender.  ``ZMQ_RCVHWM`` (:data:`RECEIVE_HWM`) bounds
  what libzmq reads ahead of this node's own receive thread when ``deliver`` is slow; beyond it TCP flow
  control pushes back and the *sender* drops.
* ``ZMQ_TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux, :data:`TCP_MAXRT_MS`) aborts a connection whose data
  stays unacknowledged (a partition, a vanished host), discarding the kernel's backlog for it instead of
  retransmitting it for minutes and delivering it when the path heals; libzmq then reconnects.
* ``ZMQ_LINGER=0``: closing a socket discards whatever it still holds, so a restarted node never sends what
  its previous incarnation queued.

ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL``/``_TIMEOUT``) are deliberately **not** used: in libzmq 4.3.x a
heartbeat (our timer, or a PONG owed to a peer's PING) on a connection whose input was paused by the receive
high-water mark can hit ``Assertion failed: !_io_error (stream_engine_base.cpp)`` and abort the whole
process (zeromq/libzmq#4364, #3937, #3596).  We reproduced it with a SIGSTOPped receiver.  Dead peers are
found instead by the kernel: ``TCP_MAXRT`` for connections with data in flight, TCP keepalive
(:data:`TCP_KEEPALIVE`) for idle ones, and connection refusal/reset for restarted processes.

What can still arrive late, honestly: what the kernels already accepted.  A peer that is *paused* (SIGSTOP,
a frozen VM) keeps its TCP connection, and its kernel keeps acknowledging data until its receive buffer is
full.  Those bytes - about 40 messages of 100 bytes with :data:`KERNEL_BUFFER`, measured on Linux loopback -
are read when it resumes, plus at most ``SEND_HWM`` more from the sender's pipe if the connection survived;
the rest were dropped at the sender.  The same holds for a partition shorter than ``TCP_MAXRT``.  A
*sender* that is paused may likewise flush up to ``SEND_HWM`` messages it queued before the pause.  Raft
tolerates this (every message carries its term; a stale one is rejected by term or is harmless), and the
codec's cluster id and MAC still apply; the transport bounds it, it cannot prevent it.

Untrusted input: ``ZMQ_MAXMSGSIZE`` (:data:`MAX_FRAME_SIZE`, a little above the codec's
``MAX_MESSAGE_SIZE``) makes libzmq disconnect a peer that announces a larger frame before it allocates it;
smaller frames that are still too long, empty frames and multipart messages are dropped by the receive loop
and counted (``rejected_oversized``, ``rejected_empty``, ``rejected_multipart``).  Everything else goes to
``deliver`` unjudged: the codec authenticates and validates it.  Anyone who can reach the port can connect
and send; configure the codec's shared secret on untrusted networks, and keep the port behind a firewall:
libzmq has had assertion failures reachable from the wire, and a flood is a flood.

"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import logging
import re
import socket
import threading
from collections.abc import Mapping
from typing import Dict, Optional

import zmq

from raft_election._ratelimit import RateLimitedLog
from raft_election.codec import MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.transport import DeliverFn, Transport

__all__ = [
    "KERNEL_BUFFER",
    "MAX_FRAME_SIZE",
    "RECEIVE_HWM",
    "RECONNECT_IVL_MAX_MS",
    "RECONNECT_IVL_MS",
    "SEND_HWM",
    "TCP_KEEPALIVE",
    "TCP_MAXRT_MS",
    "ZmqTransport",
    "normalize_address",
]

logger = logging.getLogger(__name__)

#: ``ZMQ_SNDHWM`` of each per-peer ``PUSH`` socket: at most this many messages wait in libzmq for one peer
#: that is connected but not reading; further sends are dropped.  Raft sends a peer a handful of messages
#: per heartbeat interval, so a healthy connection never comes near it.
SEND_HWM = 16
#: ``ZMQ_RCVHWM`` of the ``PULL`` socket (per connected peer): how many messages libzmq reads ahead of the
#: receive thread.  Beyond it libzmq stops reading, TCP flow control pushes back and the sender drops.
RECEIVE_HWM = 32
#: ``ZMQ_SNDBUF`` (``SO_SNDBUF``) of the ``PUSH`` sockets and ``ZMQ_RCVBUF`` (``SO_RCVBUF``) of the ``PULL``
#: socket, in bytes (Linux doubles it for bookkeeping).  Small on purpose: what sits in kernel buffers can
#: reach a paused peer late, and election traffic needs only a few hundred bytes per round trip.
KERNEL_BUFFER = 4096
#: ``ZMQ_RECONNECT_IVL``: first retry this long after a connection fails or breaks (libzmq adds a random
#: jitter of up to the same amount) ...
RECONNECT_IVL_MS = 100
#: ... doubling on every failure up to ``ZMQ_RECONNECT_IVL_MAX``, so a restarted peer is reached within
#: about a second without hammering one that stays down.
RECONNECT_IVL_MAX_MS = 1000
#: ``ZMQ_CONNECT_TIMEOUT``: give up a TCP connect that got no answer (a dead host drops SYNs) and retry,
#: rather than wait for the kernel's own timeout of about two minutes.
CONNECT_TIMEOUT_MS = 2000
#: ``ZMQ_HANDSHAKE_IVL``: a connection that does not finish the ZMTP handshake in time is closed, so clients
#: that connect and say nothing (or garbage) do not hold resources.
HANDSHAKE_IVL_MS = 5000
#: ``ZMQ_TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux): abort a connection whose sent data stayed unacknowledged
#: this long - a partition, a vanished host - discarding what the kernel still held for it; the socket then
#: reconnects.  Without it, TCP retransmits for many minutes and delivers the backlog when the path heals.
TCP_MAXRT_MS = 2000
#: ``ZMQ_TCP_KEEPALIVE_IDLE``/``_INTVL``/``_CNT`` (seconds, seconds, probes): the kernel probes idle
#: connections, so the receiving side of a connection whose sender's host vanished closes it rather than
#: keeping it forever.
TCP_KEEPALIVE = (5, 2, 3)

#: ``ZMQ_MAXMSGSIZE`` of every socket: a peer announcing a longer frame is disconnected by libzmq before the
#: frame is read.  A little above the codec's limit so that moderately oversized frames are still seen,
#: counted and logged by the receive loop.
MAX_FRAME_SIZE = 8 * MAX_MESSAGE_SIZE

#: Upper bound on one wait of the receive thread (it is woken at once on close; this is a safety net).
_POLL_TIMEOUT_MS = 1000
#: Frames handled per wake-up before checking for close again.
_RECEIVE_BATCH = 64
#: Pause after an unexpected error in the receive loop, so a persistent fault cannot spin a CPU.
_ERROR_BACKOFF = 0.05

_ADDRESS = re.compile(
    r"(?:tcp://)?(?:\[(?P<v6>[^\[\]\s/]+)\]|(?P<host>[^\[\]\s/:]+)):(?P<port>[0-9]{1,5})",
    re.ASCII,
)
_COUNTER_NAMES = (
    "frames_received",
    "frames_sent",
    "rejected_oversized",
    "rejected_multipart",
    "rejected_empty",
    "send_dropped",
    "send_errors",
    "receive_errors",
    "deliver_errors",
)
_BIND_HINTS = {
    errno.EADDRINUSE: "the port is already in use (by another process, or another socket of this one)",
    errno.EADDRNOTAVAIL: "the address is not local: no network interface of this host has it",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.ENODEV: "no such network interface",
}
_transport_numbers = itertools.count(1)


def normalize_address(address: str) -> str:
    """Return ``address`` as a ZeroMQ TCP endpoint: ``tcp://host:port`` or ``tcp://[v6]:port``.

    Accepts ``tcp://host:port``, ``host:port`` and ``[v6]:port`` (IPv6 literals must be bracketed); the
    host is an IPv4 or bracketed IPv6 literal or a DNS name (resolved by libzmq on every connect attempt, so
    a peer whose address changes is found again).

    Raises:
        ValueError: the address has another form, another scheme, or a port outside 1..65535.
    """
    if not isinstance(address, str):
        raise ValueError(f"a ZeroMQ address must be a str like 'tcp://10.0.0.1:9001', got {address!r}")
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ValueError(
            f"{address!r} is not a TCP address; use 'tcp://host:port', 'host:port' or '[ipv6]:port'"
        )
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is outside 1..65535")
    v6 = match["v6"]
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise ValueError(f"{address!r}: {v6!r} in brackets is not an IPv6 address") from None
        return f"tcp://[{v6}]:{port}"
    return f"tcp://{match['host']}:{port}"


def _is_ipv6(endpoint: str) -> bool:
    return endpoint.startswith("tcp://[")


def _to_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")


class ZmqTransport(Transport):
    """Moves opaque byte strings between nodes over ZeroMQ ``PUSH``/``PULL`` sockets on TCP.

    Args:
        context: the ``zmq.Context`` to create sockets in.  ``None`` (the default) creates a private one,
            terminated by :meth:`close`; a context passed in is left running.
        ipv6: enable ``ZMQ_IPV6`` on every socket (needed for DNS names that resolve to IPv6 addresses).
            ``None`` (default) enables it only on sockets whose address is a bracketed IPv6 literal.

    The addresses given to :meth:`start` are those of :func:`normalize_address`.  Counters (see
    :meth:`counters`) are kept from start to close and stay readable afterwards.
    """

    def __init__(
        self,
        context: Optional[zmq.Context[zmq.Socket[bytes]]] = None,
        *,
        ipv6: Optional[bool] = None,
    ) -> None:
        self._given_context = context
        self._ipv6 = ipv6
        self._name = f"ZmqTransport-{next(_transport_numbers)}"
        self._log = RateLimitedLog(logger)

        #: Serialises start() and close() (never held while waiting for the receive thread).
        self._lifecycle = threading.Lock()
        #: Guards the state and the PUSH sockets; every use of a PUSH socket happens under it.
        self._lock = threading.Lock()
        self._state = "created"  # -> "started" -> "closed"; "closed" also directly from "created"
        self._node_id: Optional[int] = None
        self._address: Optional[str] = None
        self._context: Optional[zmq.Context[zmq.Socket[bytes]]] = None
        self._push: Dict[int, zmq.Socket[bytes]] = {}
        # Owned by the receive thread once it runs; released by it when it exits.
        self._pull: Optional[zmq.Socket[bytes]] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._deliver: Optional[DeliverFn] = None
        self._thread: Optional[threading.Thread] = None
        #: Set by close(); the receive thread stops delivering as soon as it sees it.
        self._stopping = threading.Event()
        #: True when close() ran on the receive thread itself, which then releases the context on exit.
        self._release_on_exit = False

        self._counters_lock = threading.Lock()
        self._counters: Dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)

    # ---------------------------------------------------------------- Transport interface

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Bind ``peers[node_id]``, connect to every other peer and start the receive thread.

        Connections are made in the background: a peer that is down now is reached when it comes up.

        Raises:
            TransportError: the transport was already started or closed; ``node_id`` has no address; an
                address is malformed; or this node's address cannot be bound (the message names the
                address and the reason: port in use, address not local, ...).  After a bind failure the
                transport is closed: create a new one to try again.
        """
        with self._lifecycle:
            with self._lock:
                if self._state != "created":
                    raise TransportError(f"{self._name} is already {self._state}; create a new ZmqTransport")
            endpoints = self._endpoints(node_id, peers)
            try:
                self._open(node_id, endpoints, deliver)
            except BaseException:
                self._release_all()
                with self._lock:
                    self._state = "closed"
                raise
            thread = threading.Thread(target=self._run, name=f"zmq-transport-{node_id}-receive", daemon=True)
            with self._lock:
                self._state = "started"
                self._thread = thread
            # Thread.start is a memory barrier: from here on only the receive thread uses the PULL socket.
            thread.start()
        logger.info("%s: node %d listening on %s, %d peers", self._name, node_id, self._address,
                    len(endpoints) - 1)

    def send(self, peer_id: int, data: bytes) -> None:
        """Queue ``data`` for ``peer_id`` if it is connected and keeping up; otherwise drop it.  Never blocks.

        Drops (counted as ``send_dropped``, never raised): the peer is unknown, down, still connecting or
        not reading fast enough (``SEND_HWM`` reached), or the transport is not started or closed.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ValueError: ``data`` is empty or longer than the codec's ``MAX_MESSAGE_SIZE`` (a peer would drop
                it); both are programming errors, not network conditions.
        """
        payload = _to_bytes(data)
        if not 0 < len(payload) <= MAX_MESSAGE_SIZE:
            raise ValueError(f"a message must be 1 to {MAX_MESSAGE_SIZE} bytes long, got {len(payload)}")
        error: Optional[zmq.ZMQError] = None
        with self._lock:
            push = self._push.get(peer_id)
            if push is not None:
                try:
                    if not self._send_now(push, payload):
                        push = None
                except zmq.ZMQError as exc:
                    error = exc
        if error is not None:
            self._count("send_errors")
            self._log.warning("send", "%s: sending to node %d failed: %s", self._name, peer_id, error)
        elif push is None:
            self._count("send_dropped")
        else:
            self._count("frames_sent")

    @staticmethod
    def _send_now(push: zmq.Socket[bytes], payload: bytes) -> bool:
        """Hand ``payload`` to libzmq without blocking; return False if it had to be dropped.

        Called with the lock held.  A socket learns that its connection drained the pipe through internal
        commands, which the send path processes at most about once a millisecond; until then a pipe that
        is in fact empty may still look full to it.  Reading ``ZMQ_EVENTS`` processes pending commands at
        once, so on ``EAGAIN`` the send is retried once if the socket then reports ``POLLOUT``.
        """
        try:
            push.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            events = push.getsockopt(zmq.EVENTS)
            if not (isinstance(events, int) and events & zmq.POLLOUT):
                return False
        try:
            push.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        """Stop the receive thread, close every socket (discarding what they hold) and end the context.

        Idempotent.  Joins the receive thread, so ``deliver`` is not running and will not be called once
        this returns; called from inside ``deliver`` it cannot wait for itself, and the receive thread
        then finishes the clean-up as soon as the callback returns.  Sends afterwards are dropped.
        """
        with self._lifecycle, self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            thread = self._thread
            push, self._push = self._push, {}
            for sock in push.values():
                sock.close(linger=0)
        self._stopping.set()
        if thread is None:
            self._release_all()
            return
        self._wake()
        if thread is threading.current_thread():
            self._release_on_exit = True
            return
        thread.join()
        self._release_all()
        logger.info("%s: node %s closed", self._name, self._node_id)

    def counters(self) -> Dict[str, int]:
        """A snapshot of the transport's counters (a new dict; every key is always present).

        * ``frames_received`` - frames handed to ``deliver`` (the node counts the messages it accepts
          separately, as ``messages_received``);
        * ``frames_sent`` - frames accepted by libzmq for a connected peer;
        * ``rejected_oversized``, ``rejected_multipart``, ``rejected_empty`` - incoming frames dropped by
          this transport (frames above :data:`MAX_FRAME_SIZE` never arrive: libzmq disconnects the sender);
        * ``send_dropped`` - sends dropped because the peer was unknown, down or not keeping up, or the
          transport was not running;
        * ``send_errors``, ``receive_errors`` - unexpected ZeroMQ errors (logged);
        * ``deliver_errors`` - ``deliver`` calls that raised (logged; delivery goes on).
        """
        with self._counters_lock:
            return dict(self._counters)

    # ---------------------------------------------------------------- introspection

    @property
    def address(self) -> Optional[str]:
        """The endpoint this transport is bound to (``tcp://host:port``), or None before start."""
        return self._address

    @property
    def node_id(self) -> Optional[int]:
        """The node id given to :meth:`start`, or None before."""
        return self._node_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (or :meth:`start` failed)."""
        with self._lock:
            return self._state == "closed"

    def __repr__(self) -> str:
        with self._lock:
            state = self._state
            peers = sorted(self._push)
        where = "" if self._address is None else f" on {self._address}"
        return f"<ZmqTransport {self._name} node_id={self._node_id} {state}{where} peers={peers}>"

    # ---------------------------------------------------------------- setup and teardown

    def _endpoints(self, node_id: int, peers: Mapping[int, str]) -> Dict[int, str]:
        if node_id not in peers:
            raise TransportError(f"node {node_id} has no address in peers ({sorted(peers)})")
        endpoints = {}
        for peer_id, address in peers.items():
            try:
                endpoints[peer_id] = normalize_address(address)
            except ValueError as exc:
                raise TransportError(f"address of node {peer_id}: {exc}") from None
        return endpoints

    def _open(self, node_id: int, endpoints: Mapping[int, str], deliver: DeliverFn) -> None:
        """Create the context (if ours), bind the PULL socket and connect one PUSH socket per peer."""
        self._node_id = node_id
        self._deliver = deliver
        context = self._given_context if self._given_context is not None else zmq.Context()
        self._context = context
        own = endpoints[node_id]
        pull = context.socket(zmq.PULL)
        self._pull = pull
        self._configure(pull, own)
        pull.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        pull.setsockopt(zmq.RCVBUF, KERNEL_BUFFER)
        try:
            pull.bind(own)
        except zmq.ZMQError as exc:
            hint = _BIND_HINTS.get(exc.errno or 0, exc.strerror)
            raise TransportError(f"node {node_id} cannot bind {own}: {hint} ({exc.strerror})") from exc
        self._address = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        for peer_id, endpoint in endpoints.items():
            if peer_id == node_id:
                continue
            push = context.socket(zmq.PUSH)
            with self._lock:
                self._push[peer_id] = push
            self._configure(push, endpoint)
            push.setsockopt(zmq.IMMEDIATE, 1)
            push.setsockopt(zmq.SNDHWM, SEND_HWM)
            push.setsockopt(zmq.RCVHWM, 1)
            push.setsockopt(zmq.SNDBUF, KERNEL_BUFFER)
            push.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            push.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
            push.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
            try:
                push.connect(endpoint)
            except zmq.ZMQError as exc:
                raise TransportError(f"node {node_id} cannot connect to node {peer_id} at {endpoint}: "
                                     f"{exc.strerror}") from exc

    def _configure(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        """Options shared by every socket (see the module docstring for why)."""
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_SIZE)
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        sock.setsockopt(zmq.TCP_MAXRT, TCP_MAXRT_MS)
        idle, interval, count = TCP_KEEPALIVE
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, interval)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, count)
        if self._ipv6 or (self._ipv6 is None and _is_ipv6(endpoint)):
            sock.setsockopt(zmq.IPV6, 1)

    def _release_all(self) -> None:
        """Close the PULL socket, the wake-up pair and any PUSH socket left, then end our own context.

        Runs once no other thread uses these: after the receive thread was joined (or never started).
        """
        with self._lock:
            push, self._push = self._push, {}
            for sock in push.values():
                sock.close(linger=0)
        pull, self._pull = self._pull, None
        if pull is not None:
            pull.close(linger=0)
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()
        self._wake_r = self._wake_w = None
        context, self._context = self._context, None
        if context is not None and context is not self._given_context:
            context.term()

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is not None:
            # OSError: the pair's buffer is full, so the receive thread has a wake-up pending anyway.
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    # ---------------------------------------------------------------- receive thread

    def _run(self) -> None:
        """Receive frames until close.  Never lets an exception end the loop early."""
        pull, wake = self._pull, self._wake_r
        assert pull is not None and wake is not None
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        in_multipart = False
        try:
            while not self._stopping.is_set():
                try:
                    ready = dict(poller.poll(_POLL_TIMEOUT_MS))
                    if pull in ready:
                        in_multipart = self._receive_batch(pull, in_multipart)
                except zmq.ContextTerminated:
                    if not self._stopping.is_set():
                        logger.error("%s: the zmq context was terminated under the transport; node %s "
                                     "receives nothing more", self._name, self._node_id)
                    return
                except Exception as exc:
                    self._count("receive_errors")
                    self._log.warning("receive", "%s: receive loop error (continuing): %r", self._name, exc)
                    self._stopping.wait(_ERROR_BACKOFF)
        finally:
            if self._release_on_exit:
                self._release_all()

    def _receive_batch(self, pull: zmq.Socket[bytes], in_multipart: bool) -> bool:
        """Read up to ``_RECEIVE_BATCH`` frames without blocking; return whether a multipart is open.

        Frames are read one at a time (never a whole multipart message at once), so a sender cannot make
        this thread hold more than one frame of at most :data:`MAX_FRAME_SIZE` bytes.
        """
        for _ in range(_RECEIVE_BATCH):
            if self._stopping.is_set():
                break
            try:
                frame = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            more = bool(pull.getsockopt(zmq.RCVMORE))
            if in_multipart or more:
                # Every frame of a multipart message is discarded; it is counted once, at its first frame.
                if not in_multipart:
                    self._reject("multipart", "a multipart message")
                in_multipart = more
                continue
            if not frame:
                self._reject("empty", "an empty frame")
            elif len(frame) > MAX_MESSAGE_SIZE:
                self._reject("oversized", f"a {len(frame)}-byte frame (limit {MAX_MESSAGE_SIZE})")
            else:
                self._count("frames_received")
                self._deliver_one(frame)
        return in_multipart

    def _deliver_one(self, frame: bytes) -> None:
        deliver = self._deliver
        assert deliver is not None
        try:
            deliver(frame)
        except Exception as exc:
            self._count("deliver_errors")
            self._log.warning("deliver", "%s: deliver callback of node %s raised %r", self._name,
                              self._node_id, exc)

    def _reject(self, reason: str, what: str) -> None:
        self._count(f"rejected_{reason}")
        self._log.warning(reason, "%s: node %s dropped %s", self._name, self._node_id, what)

    def _count(self, name: str) -> None:
        with self._counters_lock:
            self._counters[name] += 1
