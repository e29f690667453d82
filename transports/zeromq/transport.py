"""The ZeroMQ transport itself: the node's ``PULL`` socket, a ``PUSH`` socket per peer, the receive thread.

:class:`ZmqTransport` binds one ``PULL`` socket on its own address and connects one ``PUSH`` socket to each
peer's address; ZeroMQ does the framing, connects lazily and reconnects by itself when a peer restarts.
The options of those sockets and why they are set are in :mod:`transports.zeromq.options`, CURVE in
:mod:`transports.zeromq.curve`, the death probes in :mod:`transports.zeromq.probe`, and what this transport
shares with the UDP one (wake-up pair, counters, deliver guard, evidence report, the receive loop's end) in
:mod:`transports.socketbase`.
"""

from __future__ import annotations

import errno
import itertools
import logging
import threading
from collections.abc import Mapping
from typing import Dict, List, Optional, Tuple

import zmq

from raft_election.codec import MAX_FRAME_SIZE
from raft_election.errors import TransportError
from raft_election.transport import DeliverFn, as_bytes
from transports.socketbase import CLOSED, CREATED, PeerChanges, SocketTransport, WakeUp
from transports.zeromq.addresses import normalize_address
from transports.zeromq.curve import Curve, CurveKey, ZapHandler
from transports.zeromq.options import configure_pull, configure_push
from transports.zeromq.probe import EVIDENCE_KIND, TcpProbes

__all__ = ["ZmqTransport"]

#: The package's logger: the ZeroMQ transport logs as ``transports.zeromq``, whichever module writes the line.
logger = logging.getLogger(__package__)

#: Frames handled per wake-up before checking for close, connection events and probes again.  Few: a frame
#: of a failover's vote traffic can take milliseconds to handle, and a connection drop or a probe's answer
#: (death evidence) queued behind a long batch would wait for all of it.
_RECEIVE_BATCH = 8
_POLLIN = int(zmq.POLLIN)
#: Pause after an unexpected error in the receive loop, so a persistent fault cannot spin a CPU.
_ERROR_BACKOFF = 0.05

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
_STARTED = "started"
_transport_numbers = itertools.count(1)


class ZmqTransport(SocketTransport):
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
            as made by ``zmq.curve_keypair()``.  This mapping is the roster of every node this one will
            ever trust, fixed for the transport's life: list the keys of the nodes that may join later
            too (see :meth:`set_peers`).

    Raises:
        ValueError: only one of the CURVE settings is given, a key is malformed, or this libzmq has no CURVE.

    With CURVE the transport needs a context of its own (the default): a context has one ZAP handler.  The
    codec's HMAC (``RaftConfig.secret``) still applies on top of CURVE.

    The addresses given to :meth:`start` and :meth:`set_peers` are those of
    :func:`~transports.zeromq.normalize_address`.
    Counters (see :meth:`counters`) are kept from start to close and stay readable afterwards.  :meth:`watch`
    and :meth:`probe` give evidence that a peer's process died (see
    :class:`~transports.zeromq.probe.TcpProbes`).  :meth:`set_peers` changes the peers while the transport
    runs (with CURVE, among the nodes whose keys it was given).

    Threads:

    * The **receive thread** owns the ``PULL`` socket (and, with CURVE, the ZAP handler's ``REP`` socket),
      the ``PUSH`` sockets' monitors and the probes' TCP sockets.  It polls them together with the read end
      of a wake-up socket pair (``zmq.Poller`` polls plain file descriptors too), so :meth:`close` and
      :meth:`probe` wake it at once; it reads frames without blocking, drops bad ones (counted, logged at a
      limited rate) and hands the others to ``deliver``, one at a time.  Nothing a peer sends can stop the
      loop.
    * :meth:`send` and :meth:`probe` may be called from any thread.  The ``PUSH`` sockets are guarded by one
      lock: libzmq sockets are not thread-safe, but may be used by several threads one after the other
      provided a full memory barrier separates the uses, which taking and releasing a lock is.  A send is a
      non-blocking ``zmq_send`` under that lock, so it takes microseconds and never waits for the network.

    Untrusted input: ``ZMQ_MAXMSGSIZE`` (:data:`~transports.zeromq.options.ZMQ_MAX_MESSAGE`, a little above
    the codec's ``MAX_FRAME_SIZE``) makes libzmq disconnect a peer that announces a larger frame before it
    allocates it; smaller frames that are still longer than ``MAX_FRAME_SIZE``, empty frames and multipart
    messages are dropped by the receive loop and counted (``rejected_oversized``, ``rejected_empty``,
    ``rejected_multipart``).  Everything else goes to ``deliver`` unjudged: the codec authenticates and
    validates it.  Without CURVE anyone who can reach the port can connect and send: configure the codec's
    shared secret on untrusted networks and keep the port behind a firewall (libzmq has had assertion
    failures reachable from the wire, and a flood is a flood).  With CURVE keys only members complete the
    handshake; nobody else's bytes get past it.  Without CURVE, bytes that do not start with the ZMTP 3
    signature are read as legacy ZMTP 1.0 (length-prefixed frames, no handshake), so raw TCP garbage may
    reach ``deliver`` as frames; that is no different from any other bad input.
    """

    _running = _STARTED
    _evidence_kind = EVIDENCE_KIND
    _evidence_how = "a refused connection to the port"
    _delivered = "frames_received"

    def __init__(
        self,
        context: Optional[zmq.Context[zmq.Socket[bytes]]] = None,
        *,
        ipv6: Optional[bool] = None,
        curve_secret_key: Optional[CurveKey] = None,
        curve_public_keys: Optional[Mapping[int, CurveKey]] = None,
    ) -> None:
        # ``_lock`` (see SocketTransport) also guards the PUSH sockets: every use of one happens under it.
        super().__init__(logger, _COUNTER_NAMES)
        self._given_context = context
        self._ipv6 = ipv6
        self._curve = Curve.from_settings(curve_secret_key, curve_public_keys)
        self._name = f"ZmqTransport-{next(_transport_numbers)}"
        #: Serialises start() and close() (never held while waiting for the receive thread).
        self._lifecycle = threading.Lock()
        # The state goes "created" -> "started" -> "closed"; "closed" also directly from "created".
        self._address: Optional[str] = None
        self._context: Optional[zmq.Context[zmq.Socket[bytes]]] = None
        self._push: Dict[int, zmq.Socket[bytes]] = {}
        # Used by the receive thread only, once it runs.
        self._pull: Optional[zmq.Socket[bytes]] = None
        self._zap: Optional[ZapHandler] = None
        self._in_multipart = False
        #: True when close() ran on the receive thread itself, which then releases the context on exit.
        self._release_on_exit = False
        self._probes = TcpProbes(self._name, ipv6, self._counters, self._log, request=self._request_probe,
                                 wake=self._wake, running=self._is_running)

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
                if self._state != CREATED:
                    raise TransportError(f"{self._name} is already {self._state}; create a new ZmqTransport")
            endpoints = self._endpoints(node_id, peers)
            try:
                self._open(node_id, endpoints, deliver)
            except BaseException:
                self._release_all()
                with self._lock:
                    self._state = CLOSED
                raise
            name = f"{self._name}-node{node_id}-receive"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            with self._lock:
                self._state = _STARTED
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
            ValueError: ``data`` is empty or longer than the codec's ``MAX_FRAME_SIZE`` (a peer would drop
                it); both are programming errors, not network conditions.
        """
        payload = as_bytes(data)
        if not 0 < len(payload) <= MAX_FRAME_SIZE:
            raise ValueError(f"a message must be 1 to {MAX_FRAME_SIZE} bytes long "
                             f"(raft_election.codec.MAX_FRAME_SIZE), got {len(payload)}")
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
            self._counters.add("send_errors")
            self._log.warning("send", "%s: sending to node %d failed: %s", self._name, peer_id, error)
        elif push is None:
            self._counters.add("send_dropped")
        else:
            self._counters.add("frames_sent")

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

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the peers while running (see :meth:`SocketTransport.set_peers` for the rules).

        An added peer gets a PUSH socket (and its monitor) connecting to it in the background, a removed
        peer's socket is closed, discarding what it still holds, and a moved peer's is replaced by one
        connecting to the new address: a message is sent to the new address only, once that connection is
        up (until then sends to it are dropped, as for any peer still connecting).  Death probes follow.

        With CURVE, the ``curve_public_keys`` given at creation are the roster of every node this one
        trusts: a member must have its public key there, or the call raises :class:`TransportError` naming
        the member and changes nothing (list the keys of nodes that may join later up front, or restart the
        node with the key added).  The ZAP handler keeps admitting every key of the roster, members or not:
        a Raft server must still hear servers outside its own configuration (thesis §4.1), such as a node
        that is being added, or removed, and has not learnt it yet.

        Raises:
            TransportError: an address is malformed, or (CURVE) a member has no public key; the message
                names the member.
        """
        super().set_peers(peers)

    def close(self) -> None:
        """Stop the receive thread, close every socket (discarding what they hold) and end the context.

        Idempotent.  Joins the receive thread, so ``deliver`` is not running and will not be called once
        this returns; called from inside ``deliver`` it cannot wait for itself, and the receive thread
        then finishes the clean-up as soon as the callback returns.  Sends afterwards are dropped.
        """
        with self._lifecycle, self._lock:
            if self._state == CLOSED:
                return
            self._state = CLOSED
            thread = self._thread
            push, self._push = self._push, {}
            for sock in push.values():
                self._close_push(sock)
        if not self._stop_receiving(thread):
            self._release_on_exit = True
            return
        self._release_all()
        if thread is not None:
            logger.info("%s: node %s closed", self._name, self._node_id)

    def counters(self) -> Dict[str, int]:
        """A snapshot of the transport's counters (a new dict; every key is always present).

        * ``frames_received`` - frames handed to ``deliver`` (the node counts the messages it accepts
          separately, as ``messages_received``);
        * ``frames_sent`` - frames accepted by libzmq for a connected peer;
        * ``rejected_oversized``, ``rejected_multipart``, ``rejected_empty`` - incoming frames dropped by
          this transport (``rejected_oversized``: longer than the codec's ``MAX_FRAME_SIZE``; frames above
          :data:`~transports.zeromq.options.ZMQ_MAX_MESSAGE` never arrive: libzmq disconnects the sender);
        * ``send_dropped`` - sends dropped because the peer was unknown, down or not keeping up, or the
          transport was not running;
        * ``send_errors``, ``receive_errors`` - unexpected ZeroMQ errors (logged);
        * ``deliver_errors`` - ``deliver`` calls that raised (logged; delivery goes on);
        * ``disconnects`` - connections to peers that dropped (each one triggers a probe);
        * ``probes_sent`` - TCP connections opened by probes (see :meth:`probe`);
        * ``death_evidence`` - refusals reported to the :meth:`watch` callback;
        * ``evidence_ignored`` - probes answered with anything but a completed connection or evidence: a
          refusal later than ``EVIDENCE_WINDOW``, no answer within ``PROBE_TIMEOUT``, host or network
          unreachable, other errors;
        * ``probe_errors`` - probes that could not be made (no socket, a DNS name that did not resolve).
        """
        return self._counters.snapshot()

    def _can_probe(self, peer_id: int) -> bool:
        return self._probes.knows(peer_id)

    # ---------------------------------------------------------------- introspection

    @property
    def address(self) -> Optional[str]:
        """The endpoint this transport is bound to (``tcp://host:port``), or None before start."""
        return self._address

    @property
    def name(self) -> str:
        """The transport's unique name; its receive thread's name starts with it."""
        return self._name

    def __repr__(self) -> str:
        with self._lock:
            state = self._state
            peers = sorted(self._push)
        where = "" if self._address is None else f" on {self._address}"
        curve = " curve" if self._curve is not None else ""
        return f"<ZmqTransport {self._name} node_id={self._node_id} {state}{where} peers={peers}{curve}>"

    def _label(self) -> str:
        return f"{self._name} (node {self._node_id})"

    # ---------------------------------------------------------------- setup and teardown

    def _endpoints(self, node_id: int, peers: Mapping[int, str]) -> Dict[int, str]:
        if node_id not in peers:
            raise TransportError(f"node {node_id} has no address in peers ({sorted(peers)})")
        endpoints = self._checked_addresses(peers)
        if self._curve is not None:
            self._curve.check_members(node_id, peers)
        return endpoints

    def _open(self, node_id: int, endpoints: Mapping[int, str], deliver: DeliverFn) -> None:
        """Create the context (if ours), bind the PULL socket and connect one PUSH socket per peer."""
        with self._lock:
            self._node_id = node_id
        self._deliver = deliver
        context = self._given_context if self._given_context is not None else zmq.Context()
        self._context = context
        own = endpoints[node_id]
        if self._curve is not None:
            self._zap = ZapHandler(context, self._curve.members)
        pull = context.socket(zmq.PULL)
        self._pull = pull
        configure_pull(pull, own, self._ipv6)
        if self._curve is not None:
            self._curve.serve(pull)
        try:
            pull.bind(own)
        except zmq.ZMQError as exc:
            hint = _BIND_HINTS.get(exc.errno or 0, exc.strerror)
            raise TransportError(f"node {node_id} cannot bind {own}: {hint} ({exc.strerror})") from exc
        self._address = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wakeup = WakeUp()
        with self._lock:
            self._addresses = dict(endpoints)
        for peer_id, endpoint in endpoints.items():
            if peer_id != node_id:
                target = self._probes.target(endpoint)
                push, monitor = self._connect(context, peer_id, endpoint)
                with self._lock:  # published only once set up: send() may run in other threads already
                    self._push[peer_id] = push
                    self._probes.set_peer(peer_id, target, monitor)

    def _connect(self, context: zmq.Context[zmq.Socket[bytes]], peer_id: int,
                 endpoint: str) -> Tuple[zmq.Socket[bytes], Optional[zmq.Socket[bytes]]]:
        """A PUSH socket connecting (in the background, again and again) to ``peer_id`` at ``endpoint``.

        Returns it with its monitor (``None`` if it could not be monitored), for :meth:`TcpProbes.set_peer`.
        Never waits for the network: libzmq connects, and resolves a host name, on its own I/O thread.

        Raises:
            TransportError: libzmq refused the socket or the endpoint (nothing is left open).
        """
        push = context.socket(zmq.PUSH)
        monitor: Optional[zmq.Socket[bytes]] = None
        try:
            configure_push(push, endpoint, self._ipv6)
            if self._curve is not None:
                self._curve.connect_as_client(push, peer_id)
            monitor = self._probes.open_monitor(push, peer_id)
            push.connect(endpoint)
        except zmq.ZMQError as exc:
            self._close_push(push)
            if monitor is not None:
                monitor.close(linger=0)
            raise TransportError(f"node {self._node_id} cannot connect to node {peer_id} at {endpoint}: "
                                 f"{exc.strerror}") from exc
        return push, monitor

    def _close_push(self, push: zmq.Socket[bytes]) -> None:
        """Stop ``push``'s monitor (if it has one), then close it, discarding what it holds."""
        self._probes.unmonitor(push)
        push.close(linger=0)

    # ---------------------------------------------------------------- membership changes

    def _canonical_address(self, address: str) -> str:
        try:
            return normalize_address(address)
        except ValueError as exc:
            raise TransportError(str(exc)) from None

    def _check_members(self, node_id: int, members: Mapping[int, str]) -> None:
        """With CURVE, refuse members whose public key this transport was not given (see set_peers)."""
        if self._curve is not None:
            self._curve.check_new_members(node_id, members)

    def _change_peers(self, node_id: int, members: Mapping[int, str], changes: PeerChanges) -> bool:
        """Close the PUSH sockets of removed and moved peers, connect new ones to added and moved peers.

        The new sockets are all made first (libzmq checks each endpoint as it connects), so a refusal
        leaves everything as it was; then, under the lock, they replace the old ones at once.  Closing a
        socket discards what it still holds (``ZMQ_LINGER=0``): nothing queued for an old address is
        delivered later.  Holds ``_lifecycle``, so :meth:`close` waits for this (a few microseconds per
        socket: nothing here waits for the network).
        """
        with self._lifecycle:
            context = self._context
            with self._lock:
                if self._state != _STARTED or context is None:
                    return False
            endpoints = changes.targets
            targets = {peer_id: self._probes.target(endpoint) for peer_id, endpoint in endpoints.items()}
            made: Dict[int, Tuple[zmq.Socket[bytes], Optional[zmq.Socket[bytes]]]] = {}
            try:
                for peer_id, endpoint in endpoints.items():
                    made[peer_id] = self._connect(context, peer_id, endpoint)
            except BaseException:
                for push, monitor in made.values():
                    self._close_push(push)
                    if monitor is not None:
                        monitor.close(linger=0)
                raise
            with self._lock:
                old: List[zmq.Socket[bytes]] = []
                for peer_id in (*changes.removed, *made):
                    if peer_id in self._push:
                        old.append(self._push.pop(peer_id))
                for peer_id in changes.removed:
                    self._probes.remove_peer(peer_id)
                for peer_id, (push, monitor) in made.items():
                    self._push[peer_id] = push
                    self._probes.set_peer(peer_id, targets[peer_id], monitor)
                # Closed under the lock, as send() uses the PUSH sockets under it.
                for push in old:
                    self._close_push(push)
        self._wake()  # the receive thread takes up the new monitors and closes the old ones
        return True

    def _release_all(self) -> None:
        """Close the PULL socket, the wake-up pair and any PUSH socket left, then end our own context.

        Runs once no other thread uses these: after the receive thread was joined (or never started).
        """
        with self._lock:
            push, self._push = self._push, {}
            for sock in push.values():
                self._close_push(sock)
        self._probes.close()
        if self._pull is not None:
            self._pull.close(linger=0)
        if self._zap is not None:
            self._zap.close()
        self._pull = self._zap = None
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.close()
        context, self._context = self._context, None
        if context is not None and context is not self._given_context:
            context.term()

    # ---------------------------------------------------------------- receive thread

    def _run(self) -> None:
        """Receive frames and run probes until close.  Never lets an exception end the loop early."""
        pull, wakeup, zap = self._pull, self._wakeup, self._zap
        assert pull is not None and wakeup is not None
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(wakeup, zmq.POLLIN)
        if zap is not None:
            poller.register(zap.socket, zmq.POLLIN)
        cause = ""
        try:
            while not self._stopping.is_set():
                try:
                    monitors = self._probes.poll_monitors(poller)  # the peers may have changed
                    ready = dict(poller.poll(self._probes.poll_timeout_ms()))
                    if wakeup.fileno() in ready:  # plain sockets come back from zmq_poll as their fds
                        wakeup.drain()
                    if zap is not None and zap.socket in ready:
                        zap.answer(self._refused_client)
                    for peer_id, monitor in monitors:
                        if monitor in ready:
                            self._probes.read_monitor(peer_id, monitor)
                    self._report_evidence(self._probes.run(poller, ready, self._take_probe_requests()))
                    if pull in ready:
                        self._receive_batch(pull)
                except zmq.ContextTerminated:
                    cause = "the zmq context was terminated under the transport"
                    return
                except Exception as exc:
                    self._receive_error(exc, _ERROR_BACKOFF)
        finally:
            self._receive_ended(cause)
            if self._release_on_exit:
                self._release_all()

    def _receive_batch(self, pull: zmq.Socket[bytes]) -> None:
        """Read up to ``_RECEIVE_BATCH`` frames without blocking, and deliver the good ones.

        Frames are read one at a time (never a whole multipart message at once), so a sender cannot make
        this thread hold more than one frame of at most :data:`~transports.zeromq.options.ZMQ_MAX_MESSAGE`
        bytes.  Whether the last frame read announced more parts is kept across calls (and errors) in
        ``_in_multipart``.
        """
        good: list[bytes] = []
        try:
            self._read_batch(pull, good)
        finally:
            if good:
                self._deliver_many(good)  # what arrived together is handled together

    def _read_batch(self, pull: zmq.Socket[bytes], good: list[bytes]) -> None:
        """:meth:`_receive_batch`'s reading: append the frames fit to deliver to ``good``."""
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
            elif len(frame) > MAX_FRAME_SIZE:
                self._reject("oversized", "a %d-byte frame (limit %d)", len(frame), MAX_FRAME_SIZE)
            else:
                good.append(frame)
            # Nothing more queued: asking is cheaper than having recv raise zmq.Again (and int() keeps
            # the test off the slow enum operators).
            if not int(pull.getsockopt(zmq.EVENTS)) & _POLLIN:
                break

    def _refused_client(self, mechanism: str, address: str) -> None:
        """The ZAP handler refused a client: count and log it (``rejected_unauthenticated``)."""
        self._reject("unauthenticated", "a %s client at %s whose key is not a member's", mechanism, address)

