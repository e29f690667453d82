"""What the UDP and ZeroMQ transports share: the wake-up pair, the counters, the receive thread's guards.

Both transports run one receive thread that waits on its sockets and on the read end of a :class:`WakeUp`
socket pair, hands each acceptable message to ``deliver``, sends death probes and reports their evidence.
:class:`SocketTransport` holds the parts of that which are the same logic in both, written once: the state
lock and the stop flag, the counters, the deliver guard (a ``deliver`` call that raises is counted and
logged, and receiving goes on), the report of death evidence to the :meth:`SocketTransport.watch`
callback, the queue of probe requests, the error guard of the receive loop and what the loop does when it
ends (:attr:`SocketTransport.failed`), and the bookkeeping of a membership change
(:meth:`SocketTransport.set_peers`: checking the new map, keeping this node's own address, working out who
was added, removed or moved, and saying so in the log).  What differs (sockets, addresses, how a probe is
made and answered, who closes what, how a change of peers reaches the sockets) stays in each transport.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Tuple

from raft_election.errors import TransportError
from raft_election.ratelimit import RateLimitedLog
from raft_election.transport import DeathProbe, DeliverFn, EvidenceFn, Transport, batch_of

__all__ = ["CLOSED", "CREATED", "Counters", "PeerChanges", "SocketTransport", "WakeUp"]

#: The state of a transport before :meth:`~raft_election.transport.Transport.start`.
CREATED = "created"
#: The state of a transport once :meth:`~raft_election.transport.Transport.close` was called.
CLOSED = "closed"


class WakeUp:
    """A connected pair of non-blocking sockets that wakes a thread waiting in ``select``/``poll``.

    The waiting thread registers this object (it has a :meth:`fileno`, the read end's) with its selector
    or ``zmq.Poller`` and calls :meth:`drain` when it is readable; any thread calls :meth:`wake`.  A plain
    socket pair works with both kinds of poller, and, unlike a flag, it ends a wait at once.

    :meth:`wake` and :meth:`close` are serialised by a lock of their own, so a wake-up racing with
    :meth:`close` is simply dropped: it can never write to a closed (and perhaps reused) descriptor.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._receive, self._send = socket.socketpair()
        self._receive.setblocking(False)
        self._send.setblocking(False)

    def fileno(self) -> int:
        """The read end's descriptor, for a selector or ``zmq.Poller`` (which reports it back as an int)."""
        return self._receive.fileno()

    def wake(self) -> None:
        """Make the read end readable.  Never blocks, never raises; does nothing once closed."""
        with self._lock:
            if self._closed:
                return
            # OSError: the pair's buffer is full, so a wake-up is pending anyway.
            with contextlib.suppress(OSError):
                self._send.send(b"\0")

    def drain(self) -> None:
        """Read every wake-up byte pending on the read end (called by the waiting thread only)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._receive.recv(4096):
                pass

    def close(self) -> None:
        """Close both ends.  Idempotent; later :meth:`wake` calls do nothing."""
        with self._lock:
            self._closed = True
            self._receive.close()
            self._send.close()


class Counters:
    """Named event counters that any thread may bump; every name is present from the start.

    The lock is a leaf: it is never held while anything else is taken, so a counter may be bumped with any
    other lock held.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, count: int = 1) -> None:
        """Count ``count`` (one) ``name`` events.

        Raises:
            KeyError: ``name`` is not one of the names given at construction (a bug in the transport).
        """
        with self._lock:
            self._counts[name] += count

    def snapshot(self) -> Dict[str, int]:
        """A new dict of every counter's value."""
        with self._lock:
            return dict(self._counts)


class PeerChanges(NamedTuple):
    """What a new ``{node id: address}`` map changes for this node, addresses in the transport's own form.

    This node's own id is never in it: a running node keeps the address it is bound to.
    """

    #: Peers that were not members, with their addresses.
    added: Dict[int, str]
    #: Peers that are no longer members, with the addresses they had.
    removed: Dict[int, str]
    #: Peers whose address changed, with ``(old, new)``.
    moved: Dict[int, Tuple[str, str]]

    @classmethod
    def between(cls, node_id: int, old: Mapping[int, str], new: Mapping[int, str]) -> PeerChanges:
        """The changes from the map ``old`` to the map ``new``, leaving ``node_id`` out."""
        return cls(
            added={peer: address for peer, address in new.items() if peer not in old and peer != node_id},
            removed={peer: address for peer, address in old.items() if peer not in new and peer != node_id},
            moved={peer: (old[peer], address) for peer, address in new.items()
                   if peer in old and old[peer] != address and peer != node_id},
        )

    @property
    def empty(self) -> bool:
        """Whether nothing changes."""
        return not (self.added or self.removed or self.moved)

    @property
    def targets(self) -> Dict[int, str]:
        """The peers that get a new address: the added ones and the moved ones, with their new address."""
        return {**self.added, **{peer: new for peer, (_, new) in self.moved.items()}}

    def describe(self) -> str:
        """The changes in words, for the log: ``"added node 4 (h:1); removed node 3 (h:2); ..."``."""
        parts = [f"added node {peer} ({address})" for peer, address in sorted(self.added.items())]
        parts += [f"removed node {peer} ({address})" for peer, address in sorted(self.removed.items())]
        parts += [f"node {peer} moved from {old} to {new}" for peer, (old, new) in sorted(self.moved.items())]
        return "; ".join(parts) or "no change"


class SocketTransport(Transport, DeathProbe):
    """The state, counters and receive-thread guards shared by the UDP and ZeroMQ transports.

    Args:
        logger: the transport's logger; every line logged here goes to it, so a transport's records all
            carry its own logger name.
        counter_names: the keys of the transport's counters (``deliver_errors``, ``receive_errors`` and
            ``death_evidence`` among them, and ``rejected_<reason>`` for each reason given to
            :meth:`_reject`).

    A subclass sets the class attributes below (its running state's name, its evidence kind and how it
    knows, the counter of messages handed to ``deliver``); it implements :meth:`_label` and
    :meth:`_can_probe`; it sets ``_state`` (under ``_lock``), ``_node_id``, ``_deliver``, ``_wakeup`` and
    ``_thread`` as it starts; its receive loop calls :meth:`_receive_ended` as it ends, and its
    :meth:`close` calls :meth:`_stop_receiving`.  To support :meth:`set_peers` it also implements
    :meth:`_canonical_address` and :meth:`_change_peers` (and :meth:`_check_members` if it has more to
    check), and sets ``_addresses`` (from :meth:`_checked_addresses`) as it starts.
    """

    #: The name of the state in which the transport is started and not closed.
    _running: ClassVar[str]
    #: The ``kind`` of evidence reported to the :meth:`watch` callback.
    _evidence_kind: ClassVar[str]
    #: How the transport knows, in its log lines (``"ICMP port unreachable from the port"``).
    _evidence_how: ClassVar[str]
    #: The counter of messages handed to ``deliver`` (including calls that raised).
    _delivered: ClassVar[str]

    def __init__(self, logger: logging.Logger, counter_names: Iterable[str]) -> None:
        #: Guards ``_state``, ``_node_id``, ``_failed``, ``_report`` and ``_probe_requests`` (and, in a
        #: subclass, whatever it says).
        self._lock = threading.Lock()
        self._state = CREATED
        self._node_id: Optional[int] = None
        self._logger = logger
        self._log = RateLimitedLog(logger)
        self._counters = Counters(counter_names)
        #: Called with each message that arrives; set by start.
        self._deliver: Optional[DeliverFn] = None
        #: Wakes the receive thread (:meth:`close`, :meth:`probe`); set by start.
        self._wakeup: Optional[WakeUp] = None
        self._thread: Optional[threading.Thread] = None
        #: Set by :meth:`close`; the receive thread checks it before each message and each report.
        self._stopping = threading.Event()
        #: Set when the receive thread ended before :meth:`close` (see :attr:`failed`).
        self._failed = False
        #: Called with death evidence; set by :meth:`watch`.
        self._report: Optional[EvidenceFn] = None
        #: Peers whose probe :meth:`probe` asked for and the receive thread has not taken yet, in request
        #: order (a dict used as an ordered set: repeated requests before the receive thread gets to them
        #: are one probe).
        self._probe_requests: Dict[int, None] = {}
        #: Every member's address in the transport's own form (see :meth:`_canonical_address`), this node's
        #: included; set by start, replaced by :meth:`set_peers`.
        self._addresses: Dict[int, str] = {}
        #: Serialises :meth:`set_peers` calls (taken before any other lock, never by the receive thread).
        self._membership = threading.Lock()

    # ---------------------------------------------------------------- for the subclass

    @abc.abstractmethod
    def _label(self) -> str:
        """Who this transport is, at the start of its log lines (for example ``"node 3"``)."""

    @abc.abstractmethod
    def _can_probe(self, peer_id: int) -> bool:
        """Whether ``peer_id`` is a peer this transport can probe (called with ``_lock`` held)."""

    def _canonical_address(self, address: str) -> str:
        """``address`` in the one form this transport compares and stores (parsed; never resolved).

        Raises:
            TransportError: ``address`` is malformed; the message quotes it and says what is wrong.
            NotImplementedError: the transport cannot change its peers while running (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot change its peers while running")

    def _check_members(self, node_id: int, members: Mapping[int, str]) -> None:
        """Refuse a member set this transport cannot serve (called by :meth:`set_peers` before any change).

        ``members`` is the new map, checked and in canonical form.  The default accepts every set.

        Raises:
            TransportError: the message names the member and what it lacks.
        """

    def _change_peers(self, node_id: int, members: Mapping[int, str], changes: PeerChanges) -> bool:
        """Make the sockets follow ``changes`` (``members`` is the whole new map, own address included).

        Called by :meth:`set_peers` on the caller's thread, with no lock held and only while no other
        :meth:`set_peers` runs; it must not block for long (no name resolution).  Returns False if the
        transport was closed meanwhile (then nothing was changed).  Must not raise for network conditions.

        Raises:
            TransportError: an address that passed :meth:`_canonical_address` was still refused (the
                message names the member and the address); nothing was changed.
            NotImplementedError: the transport cannot change its peers while running (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot change its peers while running")

    # ---------------------------------------------------------------- membership

    def _checked_addresses(self, peers: Mapping[int, str]) -> Dict[int, str]:
        """Every address of ``peers`` in canonical form (see :meth:`_canonical_address`).

        Raises:
            TransportError: an address is malformed; the message names the member and quotes the address.
        """
        checked: Dict[int, str] = {}
        for peer_id, address in peers.items():
            try:
                checked[peer_id] = self._canonical_address(address)
            except TransportError as exc:
                raise TransportError(f"address of node {peer_id}: {exc}") from None
        return checked

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the ``{node id: address}`` map given to :meth:`start` (a membership change, thesis ch. 4).

        New ids are reachable as soon as this returns (a host name: once resolved in the background), ids
        no longer listed are no longer sent to (sends to them are dropped and counted as for any unknown
        peer), a changed address is used from now on, and probes (:meth:`probe`) follow: an added peer can
        be probed, a removed one cannot, and an answer from a peer's old address is never evidence.  This
        node's own id keeps the address it is bound to: a different one in ``peers`` is ignored with a
        warning (a running node never rebinds; restart it to move it), and ``peers`` need not list it.

        Every address is checked before anything changes, so a malformed one leaves the transport as it
        was.  Never blocks for long (no name resolution on the caller's thread) and never raises for
        network conditions.  Calls before :meth:`start` or after :meth:`close` are ignored.  Safe to call
        from any thread, concurrently with :meth:`send`, :meth:`probe` and the receive thread; concurrent
        calls take effect one after the other.  The change is logged (at INFO), naming each peer added,
        removed or moved.

        Raises:
            TransportError: an address is malformed (the message names the member and the address), or
                the transport refuses a member (ZeroMQ with CURVE: a member without a public key).
        """
        with self._membership:
            with self._lock:
                running = self._state == self._running
                node_id = self._node_id
                current = dict(self._addresses)
            if not running or node_id is None:
                self._logger.debug("%s: set_peers ignored: the transport is not running", self._label())
                return
            wanted = self._checked_addresses(peers)
            self._check_members(node_id, wanted)
            own = current[node_id]
            given = wanted.pop(node_id, own)
            if given != own:
                self._logger.warning("%s: set_peers gives this node the address %s, but it is bound to %s "
                                     "and a running node never rebinds; the new address is ignored (restart "
                                     "the node to move it)", self._label(), given, own)
            members = {**wanted, node_id: own}
            changes = PeerChanges.between(node_id, current, members)
            if changes.empty:
                self._logger.debug("%s: set_peers: the peers are unchanged", self._label())
                return
            if not self._change_peers(node_id, members, changes):
                return
            with self._lock:
                if self._state != self._running:
                    return
                self._addresses = members
        self._logger.info("%s: peers changed: %s", self._label(), changes.describe())

    @property
    def peers(self) -> Dict[int, str]:
        """Every member's address (this node's included) as the transport uses it; empty before start."""
        with self._lock:
            return dict(self._addresses)

    # ---------------------------------------------------------------- observation

    @property
    def failed(self) -> bool:
        """True if the receive thread ended before :meth:`close` was called (it then never restarts)."""
        with self._lock:
            return self._failed

    @property
    def node_id(self) -> Optional[int]:
        """The node id given to :meth:`start`; ``None`` before."""
        with self._lock:
            return self._node_id

    @property
    def closed(self) -> bool:
        """Whether the transport is closed: :meth:`close` has been called (or a failed start closed it)."""
        with self._lock:
            return self._state == CLOSED

    def counters(self) -> Mapping[str, int]:
        """A snapshot of the transport's counters (a new dict; every key is always present)."""
        return self._counters.snapshot()

    # ---------------------------------------------------------------- death probes

    def watch(self, report: EvidenceFn) -> None:
        """From now on, call ``report(peer_id, kind)`` with every piece of death evidence.

        ``kind`` is the transport's ``EVIDENCE_KIND``.  ``report`` runs on the receive thread, outside the
        transport's locks, one call at a time, never after :meth:`close` has returned; what it raises is
        logged (at a limited rate) and receiving goes on.
        """
        with self._lock:
            self._report = report

    def probe(self, peer_id: int) -> None:
        """Ask the receive thread to probe ``peer_id`` (see the transport's class docstring for how).

        Never blocks and never raises.  If nothing listens on the peer's address any more, the callback
        given to :meth:`watch` gets ``(peer_id, kind)`` soon after (on loopback or a LAN within a
        millisecond or so); a live, paused or unreachable peer yields nothing.  Requests for this node
        itself, for peers it cannot probe, before :meth:`start` and after :meth:`close` are ignored;
        requests made before the receive thread got to the previous one for the same peer are one probe.
        """
        with self._lock:
            if self._state != self._running or not self._can_probe(peer_id):
                return
            self._probe_requests[peer_id] = None
        self._wake()

    def _request_probe(self, peer_id: int) -> None:
        """Queue a probe of ``peer_id`` from the receive thread itself (no wake-up needed)."""
        with self._lock:
            self._probe_requests[peer_id] = None

    def _take_probe_requests(self) -> List[int]:
        """The peers to probe now, in request order; the queue is left empty (receive thread only)."""
        with self._lock:
            requested, self._probe_requests = list(self._probe_requests), {}
        return requested

    def _report_evidence(self, evidence: Sequence[int]) -> None:
        """Hand each peer of ``evidence`` to the :meth:`watch` callback as ``(peer, kind)`` (receive thread).

        Stops as soon as the transport is closing (perhaps closed by the callback itself), so nothing is
        reported after :meth:`close` has returned.  Each piece is counted as ``death_evidence`` and logged at
        a limited rate (saying :attr:`_evidence_how`).
        The callback runs outside the locks; what it raises is logged, never raised, so receiving goes on.
        """
        if not evidence:
            return
        with self._lock:
            report = self._report
        label = self._label()
        for peer_id in evidence:
            if self._stopping.is_set():
                return
            self._counters.add("death_evidence")
            self._log.warning(f"evidence_{peer_id}", "%s: %s of node %d: its process is gone",
                              label, self._evidence_how, peer_id)
            if report is None:
                continue
            try:
                report(peer_id, self._evidence_kind)
            except Exception as exc:
                self._log.warning("report_error", "%s: the death evidence callback raised %r; receiving "
                                  "goes on", label, exc)

    # ---------------------------------------------------------------- the receive thread

    def _guarded(self, call: Callable[[Any], None], argument: object, count: int) -> None:
        """Count ``count`` delivered and ``call(argument)``; what it raises is counted and logged."""
        self._counters.add(self._delivered, count)
        try:
            call(argument)
        except Exception as exc:
            self._counters.add("deliver_errors")
            self._log.warning("deliver_error", "%s: deliver callback raised %r; receiving goes on",
                              self._label(), exc)

    def _deliver_many(self, datas: list[bytes]) -> None:
        """Count ``datas`` as delivered and hand them to ``deliver``: the deliver guard.

        Datagrams read together go to ``deliver``'s batch form (:func:`~raft_election.transport.batch_of`)
        in one call, else one by one.  What ``deliver`` raises is counted (``deliver_errors``) and logged at
        a limited rate, and receiving goes on.
        """
        deliver = self._deliver
        assert deliver is not None
        batch = batch_of(deliver)
        if batch is None or len(datas) == 1:
            for data in datas:
                self._guarded(deliver, data, 1)
        else:
            self._guarded(batch, datas, len(datas))

    def _reject(self, reason: str, what: str, *args: object) -> None:
        """Count input dropped by the transport itself as ``rejected_<reason>``; log ``what % args``."""
        self._counters.add(f"rejected_{reason}")
        self._log.warning(f"rejected_{reason}", "%s: dropped " + what, self._label(), *args)

    def _receive_error(self, exc: Exception, pause: float) -> None:
        """An unexpected error in one round of the receive loop: count it, log it, pause, go on.

        The pause (ended early by :meth:`close`) keeps a persistent fault from spinning a CPU.
        """
        self._counters.add("receive_errors")
        self._log.warning("receive_error", "%s: receive error (%r); receiving goes on", self._label(), exc)
        if pause > 0:
            self._stopping.wait(pause)

    def _receive_ended(self, cause: str = "") -> None:
        """Called by the receive thread as it ends: if :meth:`close` was not called, the transport failed.

        A transport whose receive thread ended by itself receives nothing more (see :attr:`failed`); that is
        logged as an error, with ``cause`` when the transport knows it.
        """
        with self._lock:
            failed = self._failed = self._state != CLOSED
        if failed:
            because = f" ({cause})" if cause else ""
            self._logger.error("%s: the receive thread ended before close()%s; this node receives nothing "
                               "more", self._label(), because)

    def _stop_receiving(self, thread: Optional[threading.Thread]) -> bool:
        """Stop the receive thread and wait for it (for :meth:`close`, after the state became closed).

        Returns False if called on the receive thread itself (from inside ``deliver`` or the evidence
        callback): it cannot wait for itself, and stops as soon as that callback returns.
        """
        self._stopping.set()
        self._wake()
        if thread is None:
            return True
        if thread is threading.current_thread():
            return False
        thread.join()
        return True

    def _wake(self) -> None:
        """Wake the receive thread, if there is one.  Never blocks, never raises."""
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.wake()

    def _is_running(self) -> bool:
        """Whether the transport is started and not closed (takes ``_lock``)."""
        with self._lock:
            return self._state == self._running
