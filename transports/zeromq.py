"""A ZeroMQ transport for nodes on different hosts (SPEC §3.3, §5).

Topology: every node binds one ``PULL`` socket on its own address and connects one ``PUSH`` socket to each
peer's address.  ZeroMQ does the framing, connects lazily and reconnects by itself when a peer restarts.

Threads:

* The **receive thread** owns the ``PULL`` socket (and, with CURVE, the ZAP handler's ``REP`` socket), the
  ``PUSH`` sockets' monitors and the probes' TCP sockets (see "Death probes" below).  It polls them together
  with the read end of a wake-up socket pair (``zmq.Poller`` polls plain file descriptors too), so
  :meth:`ZmqTransport.close` and :meth:`ZmqTransport.probe` wake it at once; it reads frames without
  blocking, drops bad ones (counted, logged at a limited rate) and hands the others to ``deliver``, one at a
  time.  Nothing a peer sends can stop the loop.
* :meth:`ZmqTransport.send` and :meth:`ZmqTransport.probe` may be called from any thread.  The ``PUSH``
  sockets are guarded by one lock: libzmq sockets are not thread-safe, but may be used by several threads
  one after the other provided a full memory barrier separates the uses, which taking and releasing a lock
  is.  A send is a non-blocking ``zmq_send`` under that lock, so it takes microseconds and never waits for
  the network.

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
full; those bytes are read when it resumes.  If the pause outlasts ``TCP_MAXRT`` once the window is full,
the sender's side is aborted and its own backlog discarded; otherwise the sender's send buffer and up to
``SEND_HWM`` messages from its pipe follow too.  Measured on Linux loopback with 100-byte messages at 20 per
second: a 6 s pause delivers ~50 stale messages on resume (~120 without ``TCP_MAXRT``, ~8,000 of a flood
with 1 MiB buffers); every other message sent meanwhile is dropped.  The same holds for a partition shorter
than ``TCP_MAXRT``.  A *sender* that is paused may likewise flush what it queued before the pause.  Raft
tolerates this (every message carries its term; a stale one is rejected by term or is harmless), and the
codec's cluster id and MAC still apply: the transport bounds late delivery, it cannot rule it out.

Untrusted input: ``ZMQ_MAXMSGSIZE`` (:data:`MAX_FRAME_SIZE`, a little above the codec's
``MAX_MESSAGE_SIZE``) makes libzmq disconnect a peer that announces a larger frame before it allocates it;
smaller frames that are still too long, empty frames and multipart messages are dropped by the receive loop
and counted (``rejected_oversized``, ``rejected_empty``, ``rejected_multipart``).  Everything else goes to
``deliver`` unjudged: the codec authenticates and validates it.  Without CURVE anyone who can reach the port
can connect and send: configure the codec's shared secret on untrusted networks and keep the port behind a
firewall (libzmq has had assertion failures reachable from the wire, and a flood is a flood).  With CURVE
keys (see :class:`ZmqTransport`) only members complete the handshake; nobody else's bytes get past it.
Without CURVE, bytes that do not start with the ZMTP 3 signature are read as legacy ZMTP 1.0
(length-prefixed frames, no handshake), so raw TCP garbage may reach ``deliver`` as frames; that is no
different from any other bad input.

Death probes (:class:`~raft_election.transport.DeathProbe`).  When a peer's process dies on a host that stays
up, its kernel closes the connections and refuses new ones to the port.  The transport asks for both:

* :meth:`ZmqTransport.probe` has the receive thread open a plain, non-blocking TCP connection (not ZeroMQ)
  to the peer's host and port.  Refused (``ECONNREFUSED``) within
  :data:`~raft_election.transport.EVIDENCE_WINDOW` seconds: the receive thread reports
  ``(peer_id, "connection_refused")`` to the callback given to :meth:`ZmqTransport.watch`.  Connected: the
  connection is closed at once and nothing is reported (a paused peer's kernel completes the handshake too,
  so it never yields evidence).  No answer within :data:`PROBE_TIMEOUT`, host or network unreachable, or
  anything else: nothing is reported (counted as ``evidence_ignored``).  One probe per peer is in flight at
  a time; further requests meanwhile are dropped.  A DNS name is resolved by a short-lived helper thread,
  so neither the caller nor the receive thread waits for DNS.
* Each ``PUSH`` socket is monitored (``zmq_socket_monitor``, read by the receive thread).  When its
  connection drops the peer is probed at once, and again whenever libzmq's reconnection fails, for
  :data:`DISCONNECT_WATCH` seconds or until there is evidence or the connection is back; a dead peer is so
  reported without anyone calling :meth:`ZmqTransport.probe`.  (The repeats cover the instant in which the
  dying process has closed its connections but not yet its listening socket.)
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import logging
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Set, Tuple, Union

import zmq
from zmq.utils import z85

from raft_election.codec import MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.ratelimit import RateLimitedLog
from raft_election.transport import (
    EVIDENCE_WINDOW,
    DeathProbe,
    DeliverFn,
    EvidenceFn,
    Transport,
    as_bytes,
    report_deaths,
)

__all__ = [
    "CurveKey",
    "DISCONNECT_WATCH",
    "EVIDENCE_KIND",
    "KERNEL_BUFFER",
    "MAX_FRAME_SIZE",
    "PROBE_TIMEOUT",
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
#: that is connected but not reading; further sends are dropped.  libzmq's reader acknowledges in batches of
#: half the mark, so a burst of up to ``SEND_HWM // 2`` to a peer that keeps up is always accepted; Raft
#: sends a peer two or three messages at a time.
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
RECONNECT_IVL_MS = 50
#: ... doubling on every failure up to ``ZMQ_RECONNECT_IVL_MAX``.  Short, so that members started a moment
#: apart are all connected before their first election is over (with a 1 s cap a vote answered by a member
#: that started first could be dropped, its connection to the candidate still waiting to retry), and a
#: restarted peer is reached within a few hundred milliseconds.  A retry against a live host is one SYN
#: answered by one RST; against a vanished one, ``CONNECT_TIMEOUT_MS`` bounds each attempt.
RECONNECT_IVL_MAX_MS = 200
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

#: Longest wait for the answer to one probe's TCP connection, in seconds: a host that drops the SYN (it is
#: down, or partitioned away) says nothing about the peer's process, and the probe is given up.
PROBE_TIMEOUT = 1.0
#: After a connection to a peer dropped, every failed reconnection by libzmq is probed too, for this many
#: seconds (or until there is evidence, or the connection is back).
DISCONNECT_WATCH = 2.0
#: The ``kind`` this transport reports to :meth:`ZmqTransport.watch`'s callback.
EVIDENCE_KIND = "connection_refused"
#: The events each PUSH socket's monitor reports (see "Death probes" in the module docstring).
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED

#: Upper bound on one wait of the receive thread (it is woken at once on close; this is a safety net).
_POLL_TIMEOUT_MS = 1000
#: Frames handled per wake-up before checking for close again.
_RECEIVE_BATCH = 64
#: Pause after an unexpected error in the receive loop, so a persistent fault cannot spin a CPU.
_ERROR_BACKOFF = 0.05

#: Where libzmq looks for the ZAP handler (ZeroMQ RFC 27) of a context; one per context.
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: A CURVE key in Z85 text (ZeroMQ RFC 32): 40 characters of the Z85 alphabet.
_Z85_KEY = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")

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
    "rejected_unauthenticated",
    "disconnects",
    "probes_sent",
    "death_evidence",
    "evidence_ignored",
    "probe_errors",
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


def _split_endpoint(endpoint: str) -> Tuple[str, int]:
    """``(host, port)`` of an endpoint made by :func:`normalize_address` (an IPv6 host without brackets)."""
    match = _ADDRESS.fullmatch(endpoint)
    assert match is not None, endpoint
    return match["v6"] or match["host"], int(match["port"])


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


#: A background name resolution's result: the family and address to connect to, or why there is none.
_Resolution = Union[Tuple[int, Tuple[Any, ...]], OSError]


#: A CURVE key as accepted by :class:`ZmqTransport`: 40 Z85 characters (``str`` or ``bytes``) or 32 raw bytes.
CurveKey = Union[str, bytes]


class _Curve(NamedTuple):
    """CURVE settings, keys in Z85 text."""

    secret: bytes
    public: bytes
    keys: Dict[int, bytes]
    #: The members' public keys as the 32 raw bytes a ZAP request carries.
    members: FrozenSet[bytes]


def _curve_key(name: str, key: object) -> bytes:
    """Return a CURVE key given as 40 Z85 characters or 32 raw bytes in Z85 form, or raise ValueError."""
    if isinstance(key, str):
        text = key.encode("ascii", "replace")
        if _Z85_KEY.fullmatch(text):
            return text
    elif isinstance(key, (bytes, bytearray)):
        key = bytes(key)
        if len(key) == 32:
            return z85.encode(key)
        if _Z85_KEY.fullmatch(key):
            return key
    raise ValueError(f"{name} is not a CURVE key: give 40 Z85 characters or 32 bytes, as made by "
                     "zmq.curve_keypair()")


class ZmqTransport(Transport, DeathProbe):
    """Moves opaque byte strings between nodes over ZeroMQ ``PUSH``/``PULL`` sockets on TCP.

    Args:
        context: the ``zmq.Context`` to create sockets in.  ``None`` (the default) creates a private one,
            terminated by :meth:`close`; a context passed in is left running.
        ipv6: enable ``ZMQ_IPV6`` on every socket (needed for DNS names that resolve to IPv6 addresses).
            ``None`` (default) enables it only on sockets whose address is a bracketed IPv6 literal.
        curve_secret_key: this node's CURVE secret key.  Together with ``curve_public_keys`` it turns on
            CURVE (ZeroMQ RFC 26) for every connection: traffic is encrypted, this node connects only to
            peers that prove they hold the secret key matching the public key listed for them, and it
            accepts connections only from clients whose public key is one of the members' (checked by a ZAP
            handler, RFC 27, that the receive thread answers between frames, so a handshake waits while
            ``deliver`` runs; refusals are counted as ``rejected_unauthenticated``).  Nothing from anyone
            else ever reaches the receive loop.  Keys are never shown by ``repr``.
        curve_public_keys: every member's CURVE public key by node id, this node's included (the same
            mapping serves every member).  Keys are 40 Z85 characters (``str`` or ``bytes``) or 32 raw bytes,
            as made by ``zmq.curve_keypair()``.

    Raises:
        ValueError: only one of the CURVE settings is given, a key is malformed, or this libzmq has no CURVE.

    With CURVE the transport needs a context of its own (the default): a context has one ZAP handler.  The
    codec's HMAC (``RaftConfig.secret``) still applies on top of CURVE.

    The addresses given to :meth:`start` are those of :func:`normalize_address`.  Counters (see
    :meth:`counters`) are kept from start to close and stay readable afterwards.  :meth:`watch` and
    :meth:`probe` give evidence that a peer's process died (see "Death probes" in the module docstring).
    """

    def __init__(
        self,
        context: Optional[zmq.Context[zmq.Socket[bytes]]] = None,
        *,
        ipv6: Optional[bool] = None,
        curve_secret_key: Optional[CurveKey] = None,
        curve_public_keys: Optional[Mapping[int, CurveKey]] = None,
    ) -> None:
        self._given_context = context
        self._ipv6 = ipv6
        self._curve: Optional[_Curve] = None
        if (curve_secret_key is None) != (curve_public_keys is None):
            raise ValueError("curve_secret_key and curve_public_keys go together: give both or neither")
        if curve_secret_key is not None and curve_public_keys is not None:
            if not zmq.has("curve"):
                raise ValueError("this libzmq was built without CURVE; drop the CURVE keys or rebuild it")
            secret = _curve_key("curve_secret_key", curve_secret_key)
            keys = {node_id: _curve_key(f"curve_public_keys[{node_id!r}]", key)
                    for node_id, key in curve_public_keys.items()}
            self._curve = _Curve(secret=secret, public=zmq.curve_public(secret), keys=keys,
                                 members=frozenset(z85.decode(key) for key in keys.values()))
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
        # Used by the receive thread only, once it runs.
        self._pull: Optional[zmq.Socket[bytes]] = None
        self._zap: Optional[zmq.Socket[bytes]] = None
        self._in_multipart = False
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

        # Death probes.  Guarded by _lock: the callback, the requests and the background resolutions.
        self._report: Optional[EvidenceFn] = None
        #: Peers to probe, in request order (a dict used as an ordered set).
        self._probe_requests: Dict[int, None] = {}
        self._resolved: List[Tuple[int, _Resolution]] = []
        #: Set when the receive thread ended before close() (see :attr:`failed`).
        self._failed = False
        # Fixed at start, before the receive thread runs.
        self._probe_targets: Dict[int, _ProbeTarget] = {}
        #: Each PUSH socket's monitor (a PAIR socket), read by the receive thread only.
        self._monitors: Dict[int, zmq.Socket[bytes]] = {}
        # Used by the receive thread only.
        self._attempts: Dict[int, _Attempt] = {}
        self._resolving: Set[int] = set()
        #: Peers whose connection dropped, with the end of their watch (``time.monotonic``).
        self._watching: Dict[int, float] = {}

    # ---------------------------------------------------------------- Transport interface

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Bind ``peers[node_id]``, connect to every other peer and start the receive thread.

        Connections are made in the background: a peer that is down now is reached when it comes up.

        Raises:
            TransportError: the transport was already started or closed; ``node_id`` has no address; an
                address is malformed; a member has no CURVE key, or this node's key pair does not match;
                or this node's address cannot be bound (the message names the address and the reason:
                port in use, address not local, ...), or, with CURVE, the context already has a ZAP
                handler.  After a failure to bind the transport is closed: create a new one to try again.
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
            name = f"{self._name}-node{node_id}-receive"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
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
        payload = as_bytes(data)
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
            for peer_id, sock in push.items():
                self._close_push(peer_id, sock)
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
        * ``deliver_errors`` - ``deliver`` calls that raised (logged; delivery goes on);
        * ``disconnects`` - connections to peers that dropped (each one triggers a probe);
        * ``probes_sent`` - TCP connections opened by probes (see :meth:`probe`);
        * ``death_evidence`` - refusals reported to the :meth:`watch` callback;
        * ``evidence_ignored`` - probes answered with anything but a completed connection or evidence: a
          refusal later than ``EVIDENCE_WINDOW``, no answer within :data:`PROBE_TIMEOUT`, host or network
          unreachable, other errors;
        * ``probe_errors`` - probes that could not be made (no socket, a DNS name that did not resolve).
        """
        with self._counters_lock:
            return dict(self._counters)

    # ---------------------------------------------------------------- death probes

    def watch(self, report: EvidenceFn) -> None:
        """From now on, call ``report(peer_id, "connection_refused")`` with every piece of death evidence.

        ``report`` runs on the receive thread, outside the transport's locks, one call at a time, never
        after :meth:`close` has returned; what it raises is logged, and receiving goes on.
        """
        with self._lock:
            self._report = report

    def probe(self, peer_id: int) -> None:
        """Ask the receive thread to try a TCP connection to ``peer_id``'s port; never blocks, never raises.

        Refused: the callback given to :meth:`watch` gets ``(peer_id, "connection_refused")`` (on loopback or
        a LAN within a millisecond or so).  Connected, no answer, unreachable: nothing happens.  Ignored
        while a probe to the same peer is in flight, for this node itself and unknown peers, before
        :meth:`start` and after :meth:`close`.
        """
        with self._lock:
            if self._state != "started" or peer_id not in self._probe_targets:
                return
            self._probe_requests[peer_id] = None
        self._wake()

    @property
    def failed(self) -> bool:
        """True if the receive thread ended before :meth:`close` (e.g. the zmq context was terminated)."""
        with self._lock:
            return self._failed

    # ---------------------------------------------------------------- introspection

    @property
    def address(self) -> Optional[str]:
        """The endpoint this transport is bound to (``tcp://host:port``), or None before start."""
        return self._address

    @property
    def name(self) -> str:
        """The transport's unique name; its receive thread's name starts with it."""
        return self._name

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
        curve = " curve" if self._curve is not None else ""
        return f"<ZmqTransport {self._name} node_id={self._node_id} {state}{where} peers={peers}{curve}>"

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
        curve = self._curve
        if curve is not None:
            missing = sorted(set(peers) - set(curve.keys))
            if missing:
                raise TransportError(f"curve_public_keys has no key for node(s) {missing}; every member "
                                     "needs one")
            if curve.keys[node_id] != curve.public:
                raise TransportError(f"curve_public_keys[{node_id}] is not the public key of "
                                     f"curve_secret_key; node {node_id} was given someone else's key pair")
        return endpoints

    def _open(self, node_id: int, endpoints: Mapping[int, str], deliver: DeliverFn) -> None:
        """Create the context (if ours), bind the PULL socket and connect one PUSH socket per peer."""
        self._node_id = node_id
        self._deliver = deliver
        context = self._given_context if self._given_context is not None else zmq.Context()
        self._context = context
        own = endpoints[node_id]
        if self._curve is not None:
            self._zap = self._bind_zap_handler(context)
        pull = context.socket(zmq.PULL)
        self._pull = pull
        self._configure(pull, own)
        pull.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        pull.setsockopt(zmq.RCVBUF, KERNEL_BUFFER)
        if self._curve is not None:
            pull.setsockopt(zmq.CURVE_SERVER, 1)
            pull.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret)
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
            if peer_id != node_id:
                self._probe_targets[peer_id] = self._probe_target(endpoint)
                push = self._connect(context, peer_id, endpoint)
                with self._lock:  # published only once set up: send() may run in other threads already
                    self._push[peer_id] = push

    def _probe_target(self, endpoint: str) -> _ProbeTarget:
        """Where probes for the peer at ``endpoint`` connect; a numeric host is resolved now (no DNS)."""
        host, port = _split_endpoint(endpoint)
        family = socket.AF_UNSPEC if self._ipv6 or _is_ipv6(endpoint) else socket.AF_INET
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:  # a DNS name, as libzmq resolves it again on every connect
            return _ProbeTarget(host, port, family, None)
        return _ProbeTarget(host, port, infos[0][0], infos[0][4])

    def _connect(self, context: zmq.Context[zmq.Socket[bytes]], peer_id: int,
                 endpoint: str) -> zmq.Socket[bytes]:
        """A PUSH socket connecting (in the background, again and again) to ``peer_id`` at ``endpoint``."""
        push = context.socket(zmq.PUSH)
        try:
            self._configure(push, endpoint)
            push.setsockopt(zmq.IMMEDIATE, 1)
            push.setsockopt(zmq.SNDHWM, SEND_HWM)
            push.setsockopt(zmq.RCVHWM, 1)  # a PUSH socket never reads; its peer has nothing to send
            push.setsockopt(zmq.SNDBUF, KERNEL_BUFFER)
            push.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            push.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
            push.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
            if self._curve is not None:
                push.setsockopt(zmq.CURVE_SERVERKEY, self._curve.keys[peer_id])
                push.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public)
                push.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret)
            self._monitor(push, peer_id)
            push.connect(endpoint)
        except zmq.ZMQError as exc:
            self._close_push(peer_id, push)
            raise TransportError(f"node {self._node_id} cannot connect to node {peer_id} at {endpoint}: "
                                 f"{exc.strerror}") from exc
        return push

    def _monitor(self, push: zmq.Socket[bytes], peer_id: int) -> None:
        """Have libzmq report ``push``'s connection events to a PAIR socket that the receive thread reads.

        Without a monitor the peer can still be probed; only the probe on disconnection is lost.
        """
        try:
            monitor = push.get_monitor_socket(_MONITOR_EVENTS, f"inproc://{self._name}-monitor-{peer_id}")
        except zmq.ZMQError as exc:
            logger.warning("%s: cannot monitor the connection to node %d (%s); a drop of it will not trigger "
                           "a probe", self._name, peer_id, exc.strerror)
            return
        self._monitors[peer_id] = monitor

    def _close_push(self, peer_id: int, push: zmq.Socket[bytes]) -> None:
        """Stop ``push``'s monitor (if it has one), then close it, discarding what it holds."""
        if peer_id in self._monitors:
            with contextlib.suppress(zmq.ZMQError):
                push.disable_monitor()
        push.close(linger=0)

    def _bind_zap_handler(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        """The REP socket on which libzmq asks this transport whether a CURVE client may connect."""
        zap = context.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        try:
            zap.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            zap.close(linger=0)
            raise TransportError(f"the zmq context already has a ZAP handler ({exc.strerror}); a transport "
                                 "with CURVE keys needs a context of its own: leave context=None") from exc
        return zap

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
            for peer_id, sock in push.items():
                self._close_push(peer_id, sock)
        monitors, self._monitors = self._monitors, {}
        for monitor in monitors.values():
            monitor.close(linger=0)
        attempts, self._attempts = self._attempts, {}
        for attempt in attempts.values():
            attempt.sock.close()
        for own in (self._pull, self._zap):
            if own is not None:
                own.close(linger=0)
        self._pull = self._zap = None
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
        """Receive frames and run probes until close.  Never lets an exception end the loop early."""
        pull, wake, zap = self._pull, self._wake_r, self._zap
        assert pull is not None and wake is not None
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
        monitors = [(peer_id, monitor) for peer_id, monitor in self._monitors.items()]
        for _, monitor in monitors:
            poller.register(monitor, zmq.POLLIN)
        explained = False
        try:
            while not self._stopping.is_set():
                try:
                    ready = dict(poller.poll(self._poll_timeout_ms()))
                    if wake.fileno() in ready:  # plain sockets come back from zmq_poll as their fds
                        _drain(wake)
                    if zap is not None and zap in ready:
                        self._answer_zap(zap)
                    for peer_id, monitor in monitors:
                        if monitor in ready:
                            self._read_monitor(peer_id, monitor)
                    self._report_evidence(self._run_probes(poller, ready))
                    if pull in ready:
                        self._receive_batch(pull)
                except zmq.ContextTerminated:
                    if not self._stopping.is_set():
                        explained = True
                        logger.error("%s: the zmq context was terminated under the transport; node %s "
                                     "receives nothing more", self._name, self._node_id)
                    return
                except Exception as exc:
                    self._count("receive_errors")
                    self._log.warning("receive", "%s: receive loop error (continuing): %r", self._name, exc)
                    self._stopping.wait(_ERROR_BACKOFF)
        finally:
            with self._lock:
                failed = self._failed = self._state != "closed"
            if failed and not explained:
                logger.error("%s: the receive thread of node %s ended before close(); it receives nothing "
                             "more", self._name, self._node_id)
            if self._release_on_exit:
                self._release_all()

    # ---------------------------------------------------------------- probes (receive thread only)

    def _poll_timeout_ms(self) -> int:
        """How long the receive thread may wait: until the earliest probe in flight must be given up."""
        if not self._attempts:
            return _POLL_TIMEOUT_MS
        due = min(attempt.started for attempt in self._attempts.values()) + PROBE_TIMEOUT
        return max(0, min(_POLL_TIMEOUT_MS, math.ceil((due - time.monotonic()) * 1000)))

    def _read_monitor(self, peer_id: int, monitor: zmq.Socket[bytes]) -> None:
        """Read the connection events of the PUSH socket to ``peer_id``; a drop asks for a probe."""
        for _ in range(_RECEIVE_BATCH):
            try:
                message = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(message) != 2 or len(message[0]) != 6:
                continue  # not an event of libzmq 4's format: [uint16 event, uint32 value], endpoint
            event = struct.unpack("=HI", message[0])[0]
            now = time.monotonic()
            if event == zmq.EVENT_DISCONNECTED:
                self._count("disconnects")
                self._watching[peer_id] = now + DISCONNECT_WATCH
                self._request_probe(peer_id)
            elif event == zmq.EVENT_CONNECT_RETRIED and peer_id in self._watching:
                # libzmq's reconnection failed: refused (evidence) or unanswered (not).
                if now < self._watching[peer_id]:
                    self._request_probe(peer_id)
                else:
                    del self._watching[peer_id]
            elif event == zmq.EVENT_CONNECTED:
                self._watching.pop(peer_id, None)

    def _request_probe(self, peer_id: int) -> None:
        with self._lock:
            self._probe_requests[peer_id] = None

    def _run_probes(self, poller: zmq.Poller, ready: Mapping[Any, int]) -> List[int]:
        """Conclude the probes that were answered or timed out, start those asked for; return the evidence.

        ``ready`` is what ``zmq_poll`` reported: a plain socket appears as its file descriptor.
        """
        evidence: List[int] = []
        now = time.monotonic()
        for peer_id, attempt in list(self._attempts.items()):
            answered = attempt.sock.fileno() in ready
            if answered or now - attempt.started >= PROBE_TIMEOUT:
                del self._attempts[peer_id]
                poller.unregister(attempt.sock)
                if answered:
                    outcome = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                else:
                    outcome = errno.ETIMEDOUT
                self._conclude(peer_id, attempt, outcome, evidence)
        with self._lock:
            resolved, self._resolved = self._resolved, []
            requested, self._probe_requests = list(self._probe_requests), {}
        for peer_id, resolution in resolved:
            self._resolving.discard(peer_id)
            if isinstance(resolution, OSError):
                self._count("probe_errors")
                self._log.warning(f"resolve_{peer_id}", "%s: cannot probe node %d: its host name does not "
                                  "resolve (%s)", self._name, peer_id, resolution)
            else:
                self._connect_probe(poller, peer_id, *resolution, evidence)
        for peer_id in requested:
            target = self._probe_targets.get(peer_id)
            busy = peer_id in self._attempts or peer_id in self._resolving
            if target is None or busy or peer_id in evidence:
                continue  # one probe per peer in flight; evidence found just now answers this request too
            if target.sockaddr is not None:
                self._connect_probe(poller, peer_id, target.family, target.sockaddr, evidence)
            else:
                self._resolving.add(peer_id)
                threading.Thread(target=self._resolve, args=(peer_id, target), daemon=True,
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
        with self._lock:
            if self._state != "started":
                return
            self._resolved.append((peer_id, result))
        self._wake()

    def _connect_probe(self, poller: zmq.Poller, peer_id: int, family: int, sockaddr: Tuple[Any, ...],
                       evidence: List[int]) -> None:
        """Start a non-blocking TCP connection to ``sockaddr``; conclude at once if the kernel knows."""
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._count("probe_errors")
            self._log.warning("probe_socket", "%s: cannot make a probe socket: %s", self._name, exc)
            return
        sock.setblocking(False)
        attempt = _Attempt(sock, time.monotonic())
        self._count("probes_sent")
        try:
            outcome = sock.connect_ex(sockaddr)
        except OSError as exc:
            outcome = exc.errno or errno.EINVAL
        if outcome in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self._attempts[peer_id] = attempt
            poller.register(sock, zmq.POLLOUT)
        else:
            self._conclude(peer_id, attempt, outcome, evidence)

    def _conclude(self, peer_id: int, attempt: _Attempt, outcome: int, evidence: List[int]) -> None:
        """Close a probe's connection; a refusal within ``EVIDENCE_WINDOW`` is evidence, nothing else is."""
        attempt.sock.close()
        if outcome == 0:
            return  # something listens: the peer's process is alive (perhaps paused)
        if outcome == errno.ECONNREFUSED and time.monotonic() - attempt.started <= EVIDENCE_WINDOW:
            self._watching.pop(peer_id, None)
            evidence.append(peer_id)
            return
        self._count("evidence_ignored")
        if outcome == errno.ECONNREFUSED:
            self._log.warning(f"late_{peer_id}", "%s: ignored a refusal by node %d that came more than %s s "
                              "after the probe", self._name, peer_id, EVIDENCE_WINDOW)
        else:
            logger.debug("%s: probe of node %d: %s (not evidence)", self._name, peer_id, os.strerror(outcome))

    def _report_evidence(self, evidence: List[int]) -> None:
        """Hand each piece of evidence to the :meth:`watch` callback, outside the locks, unless closed."""
        if not evidence:
            return
        with self._lock:
            report = self._report
        report_deaths(report, evidence, EVIDENCE_KIND, stopping=self._stopping, count=self._count,
                      limited_log=self._log, who=self._name, what="a refused connection to the port")

    def _receive_batch(self, pull: zmq.Socket[bytes]) -> None:
        """Read up to ``_RECEIVE_BATCH`` frames without blocking, and deliver the good ones.

        Frames are read one at a time (never a whole multipart message at once), so a sender cannot make
        this thread hold more than one frame of at most :data:`MAX_FRAME_SIZE` bytes.  Whether the last
        frame read announced more parts is kept across calls (and errors) in ``_in_multipart``.
        """
        for _ in range(_RECEIVE_BATCH):
            if self._stopping.is_set():
                break
            try:
                frame = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            more = bool(pull.getsockopt(zmq.RCVMORE))
            if self._in_multipart or more:
                # Every frame of a multipart message is discarded; it is counted once, at its first frame.
                if not self._in_multipart:
                    self._reject("multipart", "a multipart message")
                self._in_multipart = more
                continue
            if not frame:
                self._reject("empty", "an empty frame")
            elif len(frame) > MAX_MESSAGE_SIZE:
                self._reject("oversized", f"a {len(frame)}-byte frame (limit {MAX_MESSAGE_SIZE})")
            else:
                self._count("frames_received")
                self._deliver_one(frame)

    def _answer_zap(self, zap: zmq.Socket[bytes]) -> None:
        """Answer pending ZAP requests (RFC 27): admit CURVE clients that hold a member's key, refuse others.

        A request is ``[version, request id, domain, address, identity, mechanism, credentials...]``; for
        CURVE the one credential is the client's 32-byte public key.  Every request gets a reply, or the
        REP socket would stop answering.
        """
        curve = self._curve
        assert curve is not None
        for _ in range(_RECEIVE_BATCH):
            try:
                request = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request_id = request[1] if len(request) > 1 else b""
            mechanism = request[5] if len(request) > 5 else b""
            credentials = request[6:]
            if mechanism == b"CURVE" and len(credentials) == 1 and credentials[0] in curve.members:
                reply = [b"200", b"OK"]
            else:
                peer = request[3].decode("ascii", "replace") if len(request) > 3 else "?"
                self._reject("unauthenticated", f"a {mechanism.decode('ascii', 'replace') or '?'} client "
                             f"at {peer} whose key is not a member's")
                reply = [b"400", b"not a member of this cluster"]
            zap.send_multipart([b"1.0", request_id, *reply, b"", b""])

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


def _drain(wake: socket.socket) -> None:
    """Read every wake-up byte pending on the receive end of the wake-up pair."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while wake.recv(4096):
            pass
