"""RaftNode: the election core driven by threads, for ordinary blocking Python programs (SPEC §3.2).

Threads and the lock:

* One state lock, ``_lock``, guards the core and everything else the node keeps.  Every public method
  takes it briefly; no I/O ever happens while it is held.  Two conditions share it: ``_changed`` (news
  from the core, a stop or a failure) and ``_carried`` (an output was carried out).
* The **timer thread** sleeps on ``_changed`` until the core's next deadline (woken early whenever a call
  into the core moved it or reported an event), then ticks the core.
* The transport's **receive thread** decodes each datagram outside the lock (untrusted input is counted,
  logged at a limited rate and dropped: it never raises and never reaches the core) and hands valid
  messages to the core under the lock.
* With fast failover on and a transport that can tell a dead peer from a silent one
  (:class:`~raft_election.transport.DeathProbe`), the transport's threads hand death evidence to the core
  under the lock, and probes the core asks for are started after its messages are sent.
* The **callback thread** runs user callbacks in order, outside every lock, so a callback may block or call
  back into the node (``step_down()`` from ``on_become_leader`` is fine).  A callback that raises is logged.

Persist before send: each call into the core yields an :class:`~raft_election.core.Output`, appended under
the lock to a FIFO with a ticket number.  Outputs are carried out strictly in FIFO order, by one thread at a
time (whichever finds none doing it, the flag ``_carrying`` says so; it carries on until the FIFO is
empty), outside the lock: save the hard state, then send the messages, then queue the events.  A thread
that appended an output returns only once its ticket is carried out.  So no message ever leaves before the
term and vote it depends on are durable, whichever thread produced it, and a command such as
:meth:`RaftNode.transfer_leadership` has sent its messages when it returns.  If saving fails the node
halts: it sends nothing more and reports the error
(:attr:`RaftNode.failure`).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

import attrs

from raft_election.codec import Codec
from raft_election.config import RaftConfig, leader_value
from raft_election.core import RaftCore
from raft_election.errors import (
    ConfigError,
    DecodeError,
    MembershipChangeError,
    NotLeaderError,
    NoTransferTargetError,
    RaftElectionError,
    TransportError,
)
from raft_election.events import (
    BecameLeader,
    Event,
    LeaderChanged,
    LeaderValue,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    MembershipChanged,
)
from raft_election.groupname import DEFAULT_GROUP, check_group_name
from raft_election.groups import GroupOutput, GroupSet
from raft_election.hardstate import HardState
from raft_election.leadership import Leadership
from raft_election.membership import Configuration
from raft_election.messages import Envelope
from raft_election.output import Output
from raft_election.ratelimit import RateLimitedLog
from raft_election.roles import Role
from raft_election.stats import MessageStats
from raft_election.storage import MemoryStorage, Storage
from raft_election.transport import DeathProbe, Transport

if TYPE_CHECKING:
    from raft_election.admin import AdminServer
    from raft_election.group import Group

__all__ = ["NodeStatus", "RaftNode"]

logger = logging.getLogger(__name__)

_Callback = Callable[[], object]


class _Receiver:
    """What the node hands its transport as ``deliver``: a callable per datagram, with a batch form."""

    __slots__ = ("batch",)

    def __init__(self, batch: Callable[[Sequence[bytes]], None]) -> None:
        #: Datagrams read together, handled together (``raft_election.transport.batch_of``).
        self.batch = batch

    def __call__(self, data: bytes) -> None:
        self.batch((data,))


def _of(group: str) -> str:
    """`` of group 'name'`` for messages about a named group, nothing for the default one."""
    return f" of group {group!r}" if group else ""

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class NodeStatus:
    """An immutable snapshot of a node, taken atomically under its lock.

    ``counters`` holds, among others: ``elections_started``, ``pre_votes_started``, ``became_leader``
    (elections won), ``wins_without_lease`` (won by votes too slow to carry a lease), ``lease_gaps`` and
    ``leases_regained`` (a leader's lease ran out and came back while it kept office),
    ``step_downs_<reason>`` (offices left, by reason: ``check_quorum``, ``higher_term``, ``step_down``,
    ``transfer``, ``stopped``), ``messages_sent`` (and per kind: ``vote_requests_sent``,
    ``vote_responses_sent``, ``heartbeats_sent``, ...), ``vote_requests_resent``, ``messages_received``,
    ``votes_granted``; for
    fast failover ``probes_requested``, ``evidence_received``, ``fast_failovers_scheduled``,
    ``fast_campaigns_started``, ``fast_elections_won``, ``evidence_votes_granted``,
    ``vote_requests_deferred`` (and ``vote_requests_replayed`` / ``vote_requests_expired`` when the
    evidence came in time / too late to answer them); for election groups ``evidence_voided`` (a message
    of a member arrived after evidence about it), ``campaigns_postponed`` (the admission
    limit), ``campaigns_given_up`` (a named group's campaign a majority refused), ``groups_carried``,
    ``carried_groups_refused``, ``carried_leaders_silent``, ``check_quorum_waited``; and one
    ``rejected_<reason>`` per kind of bad or stale input (``rejected_bad_mac``, ``rejected_truncated``,
    ``rejected_wrong_cluster``, ``rejected_unknown_sender``, ``rejected_stale_term``, ...).
    """

    node_id: int
    #: LEADER while this member holds the office, with or without a lease (see ``is_leader``).
    role: Role
    term: int
    leader_id: Optional[int]
    voted_for: Optional[int]
    #: Whether it leads with a valid lease now: the only leadership an application may act on.
    is_leader: bool
    lease_remaining: float
    #: Peers that acknowledged this leader within election_timeout_min (empty unless leading).
    followers: tuple[int, ...]
    candidate: bool
    running: bool
    counters: Mapping[str, int]
    #: Median of this member's recent heartbeat round trips as leader, in seconds (None before the first).
    round_trip: Optional[float] = None
    #: Seconds this member spent as leader without a lease: its lease gaps (``lease_gaps`` of them) and
    #: the start of late wins, so far.
    lease_gap_seconds: float = 0.0
    #: Seconds since a valid message from each peer last reached this member (None: none yet).
    last_contact: Mapping[int, Optional[float]] = attrs.field(factory=dict)
    #: The members of the configuration this member uses now, ``{id: address}`` (thesis §4.1).
    members: Mapping[int, str] = attrs.field(factory=dict)
    #: That configuration entry's index and term (0 and 0: the seed from the cluster file or peers).
    configuration_index: int = 0
    configuration_term: int = 0
    #: Whether this member knows that entry to be committed (stored by a majority of its members).
    configuration_committed: bool = False
    #: Whether this member is in that configuration (a joining or removed member is not: it never stands).
    voter: bool = True
    #: On a leader, a membership change under way: ``"stamp"``, ``"catch-up"``, ``"pending"`` or None.
    membership_change: Optional[str] = None
    #: How many election groups besides the default one this member hosts now (see :meth:`RaftNode.group`).
    groups_hosted: int = 0
    #: How many of those named groups this member leads with a valid lease now (``is_leader`` tells about
    #: the default group).
    groups_leading: int = 0

    def rejected(self) -> int:
        """Total messages rejected for any reason."""
        return sum(count for name, count in self.counters.items() if name.startswith("rejected_"))


class RaftNode:
    """One member of a cluster: elects and follows leaders, in threads of its own.

    Args:
        config: this member's settings (``config.node_id`` is its id).
        transport: moves bytes to the peers (``InMemoryNetwork.transport(id)``, ``UdpTransport()``, ...).
        storage: where ``(term, voted_for)`` is kept.  Use :class:`~raft_election.storage.FileStorage` in
            production; the default :class:`~raft_election.storage.MemoryStorage` forgets the vote when the
            process exits, so a restarted process could vote twice in a term.  The node closes it on stop.
        on_become_leader: called with the term (the fencing token) each time this node begins to hold a
            lease: when it wins an election, and again (same term) when its lease comes back after a gap.
        on_lose_leadership: called with the term each time this node stops holding a lease: a lease gap
            (it keeps office and heartbeats on; ``on_become_leader`` follows with the same term if the lease
            comes back, and no other member held a lease in between) or leaving office (stepped down,
            transferred, higher term seen, check-quorum, stopped).  The two alternate, starting with
            ``on_become_leader``.
        on_leader_change: called with ``(leader_id or None, term)`` whenever the known leader changes.
        value: this member's value (bytes, or str as UTF-8; at most 256 bytes), published with its heartbeats
            while it leads: its application's address, say, so that followers know where to reach the
            leader's application (:attr:`leader_value`).  Change it with :meth:`set_value`.
        on_membership_change: called with ``(members, index)`` whenever the member set of the configuration
            this member uses changes (an entry created or received that lists other members than the one
            before, committed or not: thesis §4.1, each server uses its latest entry); ``members`` is a
            ``{id: address}`` mapping and ``index`` the entry's index.
        on_leader_value: called with ``(leader_id, term, value)`` when the leader this member knows of and
            its value change: when a leader's value is first heard or changes, and ``(None, term, None)``
            once no leader is known.  A new leader is reported here only once its value is heard (from its
            first heartbeat), so ``value`` is never None for a known leader.
        admin: ``host:port`` on which to answer admin requests (``raft-election status``; see
            :mod:`raft_election.admin`), authenticated with the cluster secret; None (default): no admin
            channel.  Without a secret only a loopback address is accepted, unless ``admin_allow_remote``.
        admin_allow_remote: accept a non-loopback admin address without a secret.
        observer: called with every core event (for tests and tooling), on the callback thread.
        rng: randomness for election timeouts (default: seeded from the OS).
        clock: monotonic time source in seconds (default :func:`time.monotonic`).
    """

    def __init__(
        self,
        config: RaftConfig,
        transport: Transport,
        storage: Optional[Storage] = None,
        *,
        on_become_leader: Optional[Callable[[int], object]] = None,
        on_lose_leadership: Optional[Callable[[int], object]] = None,
        on_leader_change: Optional[Callable[[Optional[int], int], object]] = None,
        value: Union[bytes, str, None] = None,
        on_leader_value: Optional[Callable[[Optional[int], int, Optional[bytes]], object]] = None,
        on_membership_change: Optional[Callable[[Mapping[int, str], int], object]] = None,
        admin: Optional[str] = None,
        admin_allow_remote: bool = False,
        observer: Optional[Callable[[Event], object]] = None,
        rng: Optional[random.Random] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._transport = transport
        self._storage = storage if storage is not None else MemoryStorage()
        self._on_become_leader = on_become_leader
        self._on_lose_leadership = on_lose_leadership
        self._on_leader_change = on_leader_change
        self._value = leader_value(value)
        self._on_leader_value = on_leader_value
        self._on_membership_change = on_membership_change
        self._reported_members: Optional[Mapping[int, str]] = None  # the member set last told to the callback
        self._admin: Optional[AdminServer] = None
        if admin is not None:
            from raft_election.admin import AdminServer  # noqa: PLC0415 (only members that answer need it)

            self._admin = AdminServer(self, admin, allow_remote=admin_allow_remote)  # checks the address
        self._observer = observer
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._codec = Codec(config.cluster, config.secret)
        self._bad_input_log = RateLimitedLog(logger)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._carried = threading.Condition(self._lock)
        self._pending: collections.deque[GroupOutput] = collections.deque()
        self._queued = 0  # tickets handed out: outputs appended to _pending so far
        self._done = 0  # outputs carried out (or dropped by a halt) so far, in ticket order
        self._carrying = False  # a thread is carrying out an output right now
        self._timer_at = -math.inf  # the deadline the timer thread sleeps until (-inf: it is not sleeping)
        self._stats = MessageStats()
        self._groups: Optional[GroupSet] = None
        self._wanted_groups: dict[str, bool] = {}  # groups asked for before start: name -> stands
        self._saved = HardState()  # the default group's state as last made durable
        self._started = False
        self._stopping = False
        self._failure: Optional[BaseException] = None
        self._counters: collections.Counter[str] = collections.Counter()
        self._candidate = config.candidate  # wanted candidacy, also before start
        # Per group: the handle of the lease held now, if handed out, and the core's (term, leases_begun)
        # of that lease.
        self._leaderships: dict[str, tuple[Leadership, tuple[int, int]]] = {}
        #: When the default group's lease runs out (-inf: not leading), published by every call into the
        #: groups (see :meth:`_push`) so that :attr:`is_leader` can be read without the state lock.
        self._lease_until = -math.inf
        self._listeners: list[Callable[[Event], object]] = []
        self._group_listeners: list[Callable[[str, Event], object]] = []

        self._callbacks: queue.SimpleQueue[Optional[_Callback]] = queue.SimpleQueue()
        self._timer_thread: Optional[threading.Thread] = None
        self._callback_thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RaftNode:
        """Load the persisted state, bind the transport and start the threads.  Idempotent.

        Returns:
            The node itself, for chaining.

        Raises:
            StorageError: the persisted state cannot be read (the node does not start: see FileStorage).
            TransportError: the transport cannot bind its address.
            RaftElectionError: the node was already stopped (create a new one to rejoin).
        """
        with self._lock:
            if self._stopping:
                raise RaftElectionError(f"node {self.node_id} was stopped; create a new RaftNode")
            if self._started:
                return self
            hard_state = self._storage.load()
            stored = self._storage.load_groups()
            now = self._clock()
            self._groups = GroupSet(self.config, hard_state, stored, now, self._rng, value=self._value)
            self._saved = hard_state
            if self._candidate != self.config.candidate:
                candidate = self._candidate
                self._push(self._groups.command(DEFAULT_GROUP, lambda core, now: core.set_candidate(
                    candidate, now), now), now)
            for name, stands in self._wanted_groups.items():
                self._push(self._groups.ensure(name, now, stand=stands), now)
            self._wanted_groups.clear()
            default = self._groups.default
            self._reported_members = default.configuration.members
            peers = self._transport_peers(default.addresses())
            self._started = True
        name = f"raft-{self.node_id}"
        self._callback_thread = threading.Thread(target=self._run_callbacks, name=f"{name}-callbacks",
                                                 daemon=True)
        self._callback_thread.start()
        try:
            self._transport.start(self.node_id, peers, _Receiver(self._on_datagrams))
        except BaseException:
            with self._lock:
                self._stopping = True
            self._callbacks.put(None)
            self._callback_thread.join()
            raise
        if self.config.fast_failover and isinstance(self._transport, DeathProbe):
            self._transport.watch(self._on_evidence)
        if self._admin is not None:
            try:
                self._admin.start()
            except BaseException:
                self.stop()
                raise
        self._timer_thread = threading.Thread(target=self._run_timer, name=f"{name}-timer", daemon=True)
        self._timer_thread.start()
        logger.info("%d started at term %d, configuration %s", self.node_id, self.term, self.configuration)
        return self

    def stop(self) -> None:
        """Leave the cluster: hand leadership over first (if leading), then stop every thread.  Idempotent.

        A leader transfers to the most responsive peer that stands for election (unless
        ``config.transfer_on_stop`` is False, or no peer qualifies, in which case it resigns), so the
        cluster has a new leader after about one round trip instead of an election timeout.
        """
        with self._lock:
            if not self._started or self._stopping:
                self._stopping = True
                return
            self._stopping = True
            groups = self._groups
            assert groups is not None
            now = self._clock()
            if self._failure is None:
                self._push(groups.each(self._hand_over, now, groups.leading), now)
            ticket = self._push(groups.stop(now), now)
            self._changed.notify_all()
        self._carry_out(ticket)
        if self._admin is not None:
            self._admin.close()
        if self._timer_thread is not None:
            self._timer_thread.join()
        self._transport.close()
        self._callbacks.put(None)
        if self._callback_thread is not None and threading.current_thread() is not self._callback_thread:
            self._callback_thread.join()
        self._storage.close()
        logger.info("%d stopped", self.node_id)

    @property
    def _core(self) -> Optional[RaftCore]:
        """The default group's core once started (the node's own election), else None."""
        return self._groups.default if self._groups is not None else None

    def _hand_over(self, core: RaftCore, now: float) -> Output:
        """A stopping leader transfers leadership (``transfer_on_stop``) or, failing that, resigns."""
        if self.config.transfer_on_stop:
            try:
                return core.transfer_leadership(now)[1]
            except NoTransferTargetError:
                pass
        return core.step_down(now)

    def __enter__(self) -> RaftNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ queries

    @property
    def node_id(self) -> int:
        """This member's id."""
        return self.config.node_id

    @property
    def role(self) -> Role:
        """The current role (FOLLOWER before start)."""
        with self._lock:
            return self._core.role if self._core is not None else Role.FOLLOWER

    @property
    def term(self) -> int:
        """The current term (0 before start)."""
        with self._lock:
            return self._core.term if self._core is not None else 0

    @property
    def leader_id(self) -> Optional[int]:
        """The leader this member knows of, or None.  Its own id only while it holds a valid lease."""
        with self._lock:
            return self._leader_locked(self._clock())

    @property
    def admin_address(self) -> Optional[str]:
        """Where this member answers admin requests (the real port once started), or None."""
        return self._admin.address if self._admin is not None else None

    @property
    def leader_value(self) -> Optional[bytes]:
        """The value the leader this member knows of publishes (its own while it leads with a lease).

        None when no leader is known (see :attr:`leader_id`) or its value has not been heard yet.
        """
        with self._lock:
            return self._leader_value_locked(self._clock(), DEFAULT_GROUP)

    @property
    def value(self) -> bytes:
        """The value this member publishes while it leads."""
        with self._lock:
            return self._value

    def set_value(self, value: Union[bytes, str, None]) -> None:
        """Publish ``value`` (bytes, or str as UTF-8; at most 256 bytes) while leading, from now on.

        Followers learn it with the next heartbeat.  May be called before :meth:`start`.

        Raises:
            ConfigError: ``value`` is not bytes or str, or is too long.
        """
        data = leader_value(value)
        with self._lock:
            self._value = data
            groups = self._groups
            if groups is None:
                return
            self._check_running_locked()
            now = self._clock()
            ticket = self._push(groups.set_value(data, now), now)
        self._carry_out(ticket)

    @property
    def members(self) -> Mapping[int, str]:
        """The members of the configuration this member uses now, ``{id: address}`` (thesis §4.1).

        The latest configuration entry it has, committed or not; before :meth:`start`, the seed from
        ``config.peers`` (without this member when it joins).
        """
        with self._lock:
            if self._core is not None:
                return self._core.configuration.members
        return self._seed_members()

    def _seed_members(self) -> Mapping[int, str]:
        return MappingProxyType({member: address for member, address in self.config.peers.items()
                                 if not (self.config.join and member == self.node_id)})

    @property
    def configuration(self) -> Configuration:
        """The configuration entry this member uses now: ``members``, ``index`` and ``term``."""
        with self._lock:
            if self._core is not None:
                return self._core.configuration
        return Configuration(members=self._seed_members())

    def add_member(self, node_id: int, address: str, timeout: Optional[float] = 10.0) -> int:
        """Add ``node_id`` at ``address`` to the cluster; on the leader only.  Blocks until committed.

        The new member must be running (started with ``RaftConfig(join=True)`` and the current members in
        its peers): the leader first has it answer a heartbeat round as a non-voting catch-up member, then
        creates the configuration entry that lists it, which commits once a majority of the new member set
        stored it (thesis §4.1, §4.2.1).  Adding a member that is already there at that address returns at
        once, so a retry after a lost answer is harmless.

        Args:
            node_id: the new member's id (a fresh one: an id is never reused for another process).
            address: its transport address.
            timeout: seconds to wait for the commit (None: forever).

        Returns:
            The index of the committed configuration entry that lists the new member.

        Raises:
            NotLeaderError: this member does not lead; ``leader_id`` names the leader if known.  Also when
                it lost leadership before the entry committed: the new leader may still commit it.
            MembershipChangeError: another change is under way, ``node_id`` is a member at another address,
                the configuration is full, or the new member never answered (nothing was changed).
            ConfigError: ``address`` is malformed or another member's.
            TimeoutError: not committed within ``timeout``.  If the new member never answered nothing was
                changed; otherwise the entry stays pending until a majority stores it.
            RaftElectionError: the node is not running.
        """
        def done(entry: Configuration) -> bool:
            return entry.members.get(node_id) == address

        return self._change_membership(
            f"add member {node_id} at {address}", node_id, timeout, done,
            lambda core, now: core.add_member(node_id, address, now))

    def remove_member(self, node_id: int, timeout: Optional[float] = 10.0) -> int:
        """Remove ``node_id`` from the cluster; on the leader only.  Blocks until committed.

        The leader may remove itself: it stops counting itself at once, and once the removal is committed
        it hands leadership to a member of the new set (or steps down), so a new leader follows about one
        round trip later (thesis §4.2.2).  Removing a member that is not there returns at once.  The
        removed member's process is not stopped: stop it once this returns.

        Returns:
            The index of the committed configuration entry without ``node_id``.

        Raises:
            NotLeaderError: this member does not lead (or lost leadership before the entry committed).
            MembershipChangeError: another change is under way, or ``node_id`` is the only member.
            TimeoutError: not committed within ``timeout`` (the entry stays pending until it is).
            RaftElectionError: the node is not running.
        """
        return self._change_membership(
            f"remove member {node_id}", node_id, timeout, lambda entry: node_id not in entry,
            lambda core, now: core.remove_member(node_id, now))

    def _change_membership(self, what: str, node_id: int, timeout: Optional[float],
                           done: Callable[[Configuration], bool],
                           propose: Callable[[RaftCore, float], Output]) -> int:
        """Propose a change on the leader's core and wait until it is committed (see add_member)."""
        deadline = None if timeout is None else self._clock() + timeout

        def remaining() -> Optional[float]:
            return None if deadline is None else deadline - self._clock()

        with self._lock:
            self._check_running_locked()
            core = self._core
            assert core is not None
            now = self._clock()
            term = core.term
            ticket = self._push(self._command_locked(DEFAULT_GROUP, propose, now), now)
            self._changed.notify_all()
        self._carry_out(ticket)
        with self._lock:
            while True:
                self._check_running_locked()
                committed = core.committed_configuration
                if committed is not None and done(committed) and (
                        committed.term >= term or committed is core.configuration):
                    # Committed by this leader (it may have handed over since, having removed itself),
                    # or there already before the request.
                    logger.info("%d: %s: committed as configuration %s", self.node_id, what, committed)
                    return committed.index
                if core.role is not Role.LEADER or core.term != term:
                    raise NotLeaderError(
                        f"{what}: {self.node_id} lost leadership before the change was committed; it may "
                        "still be committed by the next leader: check the members, then retry on the leader",
                        leader_id=core.leader_id)
                stage = core.membership_change
                if stage is None and not done(core.configuration):
                    raise MembershipChangeError(f"{what}: the change was given up before it was made")
                left = remaining()
                if left is not None and left <= 0:
                    if stage in ("stamp", "catch-up"):
                        now = self._clock()
                        ticket = self._push(self._command_locked(
                            DEFAULT_GROUP, lambda core, now: core.abandon_change(node_id, now), now), now)
                        self._lock.release()
                        try:
                            self._carry_out(ticket)
                        finally:
                            self._lock.acquire()
                        why = (f"member {node_id} did not answer (is it running, started with --join, and "
                               "reachable from the leader?)" if stage == "catch-up" else
                               f"the leader's first configuration entry of term {term} did not commit")
                        raise TimeoutError(f"{what}: {why} within {timeout} s; nothing was changed")
                    raise TimeoutError(
                        f"{what}: not committed within {timeout} s; configuration {core.configuration} stays "
                        "pending until a majority of its members stores it")
                self._changed.wait(left)

    @property
    def is_leader(self) -> bool:
        """True only while this member leads with a valid lease, computed against the clock right now.

        Read without the state lock, so an application that asks before every step (every millisecond,
        say) never waits for the node's threads, nor makes them wait: the lease's end is published under
        the lock by every call into the core (:meth:`_push`), before any message that call produced is
        sent, and read here before the clock.  A read that overlaps a call that ends the lease answers as
        a read just before that call would: nobody else can have acted on the end yet, since the messages
        that tell them leave after it.
        """
        until = self._lease_until
        return self._clock() < until and self._may_claim()

    @property
    def failure(self) -> Optional[BaseException]:
        """The error that halted this node (a storage failure), or None."""
        with self._lock:
            return self._failure

    def status(self) -> NodeStatus:
        """An immutable snapshot of role, term, leader, vote, lease and counters."""
        with self._lock:
            now = self._clock()
            core = self._core
            counters = collections.Counter(self._counters)
            counters.update(self._stats.counters)
            groups = self._groups
            if groups is not None:
                counters.update(groups.counters)
                for name in groups.names:
                    counters.update(groups.core(name).counters)  # type: ignore[union-attr]
            counters.update(self._transport.counters())
            leading = core is not None and self._is_leader_locked(now)
            return NodeStatus(
                node_id=self.node_id,
                role=core.role if core is not None else Role.FOLLOWER,
                term=core.term if core is not None else 0,
                leader_id=self._leader_locked(now),
                voted_for=core.voted_for if core is not None else None,
                is_leader=leading,
                lease_remaining=core.lease_remaining(now) if leading and core else 0.0,
                followers=core.followers(now) if leading and core else (),
                candidate=core.candidate if core is not None else self._candidate,
                running=self._started and not self._stopping and self._failure is None,
                counters=MappingProxyType(dict(counters)),
                round_trip=self._stats.round_trip(),
                lease_gap_seconds=core.unleased_seconds(now) if core is not None else 0.0,
                last_contact=MappingProxyType({
                    peer: (now - self._stats.last_heard[peer]) if peer in self._stats.last_heard else None
                    for peer in self._peer_ids_locked()}),
                **self._membership_status_locked(),
                groups_hosted=len(groups.names) - 1 if groups is not None else len(self._wanted_groups),
                groups_leading=sum(1 for name in groups.leading
                                   if name != DEFAULT_GROUP and self._is_leader_locked(now, name))
                if groups is not None else 0,
            )

    def _peer_ids_locked(self) -> list[int]:
        core = self._core
        members = core.configuration.members if core is not None else self.config.peers
        return [member for member in members if member != self.node_id]

    def _membership_status_locked(self) -> dict[str, Any]:
        core = self._core
        if core is None:
            return {"members": self._seed_members(), "voter": not self.config.join}
        config = core.configuration
        return {"members": config.members, "configuration_index": config.index,
                "configuration_term": config.term, "configuration_committed": core.configuration_committed,
                "voter": core.voter, "membership_change": core.membership_change}

    def wait_for_leader(self, timeout: Optional[float] = None) -> int:
        """Block until a leader is known (this member itself only with a valid lease); return its id.

        Args:
            timeout: seconds to wait; None means wait forever.

        Raises:
            TimeoutError: no leader within ``timeout``.
            RaftElectionError: the node is not running (not started, stopped, or halted by a failure).
        """
        def stalled() -> str:
            core = self._core
            assert core is not None
            return (f"node {self.node_id} knows no leader after {timeout} s "
                    f"(role {core.role}, term {core.term})")

        return self._wait_locked(self._leader_locked, timeout, stalled)

    def _wait_locked(self, probe: Callable[[float], Optional[_T]], timeout: Optional[float],
                     stalled: Callable[[], str]) -> _T:
        """Wait until ``probe(now)`` (called under the lock) gives a value; return it.

        ``probe`` asks for a known leader or a leadership with a valid lease.  Time alone never makes one
        appear (a lease only ever runs out between two calls into the core), and every call into the core
        that could make one appear reports an event, which wakes ``_changed``; so the wait needs no other
        wake-up than that, a stop, a failure, or the timeout.

        Raises:
            TimeoutError: with ``stalled()`` as message, when ``timeout`` (None: forever) ran out.
            RaftElectionError: the node is not running.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while True:
                self._check_running_locked()
                found = probe(self._clock())
                if found is not None:
                    return found
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(stalled())
                self._changed.wait(remaining)

    def __repr__(self) -> str:
        with self._lock:
            core = self._core
            if core is None:
                return f"<RaftNode id={self.node_id} not started>"
            return (f"<RaftNode id={self.node_id} role={core.role} term={core.term} "
                    f"leader={self._leader_locked(self._clock())}>")

    # ------------------------------------------------------------------ commands

    def step_down(self) -> None:
        """Give up leadership now (lease first, then tell followers to elect at once).  No-op unless leader.

        This member still stands for election afterwards; its followers' timers run short and its own in
        full, so one of them normally takes over.
        """
        self._command(lambda core, now: core.step_down(now))

    def transfer_leadership(self, target: Optional[int] = None) -> int:
        """Hand leadership to ``target`` (default: the most responsive candidate peer); return the target.

        This member gives up its lease and steps down at once; the target campaigns without waiting for a
        timeout, so a new leader normally holds a lease after one round trip.

        Raises:
            RaftElectionError: not leader, or ``target`` is not a peer.
            NoTransferTargetError: no peer stands for election and answered recently.
        """
        chosen: list[int] = []

        def transfer(core: RaftCore, now: float) -> Output:
            target_id, output = core.transfer_leadership(now, target)
            chosen.append(target_id)
            return output

        self._command(transfer)
        return chosen[0]

    def set_candidate(self, candidate: bool) -> None:
        """Stand for election or not (a non-candidate still votes).  Does not end a current leadership.

        May be called before :meth:`start`; it then sets the candidacy the node starts with.
        """
        with self._lock:
            self._candidate = candidate
            if self._core is None:
                return
        self._command(lambda core, now: core.set_candidate(candidate, now))

    def campaign(self) -> None:
        """Stand for election now rather than at the next election timeout (see RaftCore.campaign)."""
        self._command(lambda core, now: core.campaign(now))

    def add_listener(self, listener: Callable[[Event], object]) -> None:
        """Also call ``listener`` with every core event of the default group, on the callback thread."""
        with self._lock:
            self._listeners.append(listener)

    def add_group_listener(self, listener: Callable[[str, Event], object]) -> None:
        """Also call ``listener(group, event)`` with every event of every group, on the callback thread."""
        with self._lock:
            self._group_listeners.append(listener)

    def leadership(self) -> Optional[Leadership]:
        """The current leadership while this node leads with a valid lease, else None.

        A handle stands for one unbroken lease: after a lease gap it stays invalid for good, and the lease
        that comes back (same term, same fencing token) is a new handle.
        """
        with self._lock:
            return self._leadership_locked(self._clock(), DEFAULT_GROUP)

    def wait_for_leadership(self, timeout: Optional[float] = None) -> Leadership:
        """Block until this node leads with a valid lease; return that leadership (see :meth:`leadership`).

        Args:
            timeout: seconds to wait; None means wait forever.

        Raises:
            TimeoutError: not leader within ``timeout``.
            RaftElectionError: the node is not running.
        """
        return self._wait_for_leadership(DEFAULT_GROUP, timeout)

    def lead(self, work: Callable[[Leadership], object], *, until: Optional[threading.Event] = None) -> None:
        """Run ``work(leadership)`` at each lease this node begins, until ``until`` is set or it stops.

        Blocks the calling thread.  ``work`` must return once ``leadership.valid()`` is False (or
        ``leadership.lost`` is set); it runs in the calling thread, so it may block.  Exceptions from
        ``work`` propagate to the caller.  ``work`` runs once per unbroken lease: after it returns, the next
        call waits for the next lease, which after a lease gap is of the same term (the same fencing token,
        and no other member held a lease in between) and otherwise of a new one.

        The waits are on the node's own condition, woken by its news; a daemon thread waits for ``until``
        and wakes it too (that thread ends when ``until`` is set).
        """
        self._lead(DEFAULT_GROUP, work, until)

    # ------------------------------------------------------------------ election groups

    def group(self, name: str, *, candidate: bool = True) -> Group:
        """The election group ``name`` on this member: hosted from now on, and standing for election.

        A group is an independent election over this cluster's members, with its own term (fencing token),
        vote, lease and leader (see :mod:`raft_election.groups`).  It is created here on first use and on
        the other members by its first election message; there it only votes until their applications use
        it too.  ``name`` ``""`` is the default group, the node's own election (its handle reads the same
        state as the node's properties).  May be called before :meth:`start`.

        Args:
            name: 1 to 64 ASCII letters, digits and ``. _ - : / @``.
            candidate: stand for election in it (if this member stands at all: ``config.candidate``);
                False only votes, until :meth:`Group.set_candidate` (a lock's group is created so).

        Raises:
            ConfigError: ``name`` is not a valid group name.
            RaftElectionError: the node was stopped or halted, or hosts ``max_groups`` groups already.
        """
        from raft_election.group import Group  # noqa: PLC0415 (group.py refers back to this module)

        name = check_group_name(name)
        if name == DEFAULT_GROUP:
            return Group(self, name)
        with self._lock:
            groups = self._groups
            if groups is None:
                if self._stopping:
                    raise RaftElectionError(f"node {self.node_id} was stopped")
                self._wanted_groups[name] = self._wanted_groups.get(name, False) or candidate
                return Group(self, name)
            self._check_running_locked()
            now = self._clock()
            ticket = self._push(groups.ensure(name, now, stand=candidate), now)
        self._carry_out(ticket)
        return Group(self, name)

    @property
    def groups(self) -> tuple[str, ...]:
        """The names of the election groups this member hosts now, sorted (the default group not included).

        A group is hosted from its first use here, or its first election message from a peer, until
        :meth:`drop_group`.
        """
        with self._lock:
            if self._groups is None:
                return tuple(sorted(self._wanted_groups))
            return tuple(name for name in self._groups.names if name != DEFAULT_GROUP)

    def drop_group(self, name: str) -> None:
        """Retire group ``name`` on this member: give up its leadership (if held), stop its timers.

        Its term and vote stay in storage, so this member can never vote twice in one of its terms even if
        the group comes back (by :meth:`group`, or by a peer's election message for it).  Other members
        keep the group until they drop it too.  Dropping a group that is not hosted does nothing.

        Raises:
            ConfigError: ``name`` is not a valid group name, or is the default group.
        """
        name = check_group_name(name)
        if name == DEFAULT_GROUP:
            raise ConfigError("name", 'the default group "" cannot be dropped; stop the node instead')
        with self._lock:
            groups = self._groups
            if groups is None:
                self._wanted_groups.pop(name, None)
                return
            now = self._clock()
            ticket = self._push(groups.drop(name, now), now)
            self._changed.notify_all()
        self._carry_out(ticket)

    def _set_group_candidate(self, group: str, candidate: bool) -> None:
        """Stand in ``group`` or not (before start: remember it); never beyond ``config.candidate``."""
        if group == DEFAULT_GROUP:
            self.set_candidate(candidate)
            return
        with self._lock:
            if self._groups is None:
                self._wanted_groups[group] = candidate
                return
        stands = candidate and self.config.candidate
        self._command(lambda core, now: core.set_candidate(stands, now), group)

    def _wait_for_leadership(self, group: str, timeout: Optional[float]) -> Leadership:
        return self._wait_locked(
            lambda now: self._leadership_locked(now, group), timeout,
            lambda: f"node {self.node_id} did not become leader{_of(group)} within {timeout} s")

    def _lead(self, group: str, work: Callable[[Leadership], object],
              until: Optional[threading.Event]) -> None:
        """The loop of :meth:`lead` for ``group``."""
        if until is not None:
            threading.Thread(target=self._wake_when_set, args=(until,), daemon=True,
                             name=f"raft-{self.node_id}-lead-until").start()
        stopped = until.is_set if until is not None else (lambda: False)
        previous: Optional[Leadership] = None
        while True:
            with self._lock:
                while True:
                    if stopped() or not (self._started and not self._stopping and self._failure is None):
                        return
                    leadership = self._leadership_locked(self._clock(), group)
                    if leadership is not None and leadership is not previous:
                        break
                    self._changed.wait()
            work(leadership)
            previous = leadership

    def _wake_when_set(self, event: threading.Event) -> None:
        event.wait()
        with self._lock:
            self._changed.notify_all()

    def _core_of(self, group: str) -> Optional[RaftCore]:
        groups = self._groups
        return groups.core(group) if groups is not None else None

    def _read_group(self, group: str, read: Callable[[RaftCore, float], _T], default: _T) -> _T:
        """``read(core, now)`` of ``group``'s core under the lock, or ``default`` if it is not hosted."""
        with self._lock:
            core = self._core_of(group)
            return read(core, self._clock()) if core is not None else default

    def _leadership_locked(self, now: float, group: str) -> Optional[Leadership]:
        core = self._core_of(group)
        if core is None or not self._is_leader_locked(now, group):
            return None
        key = (core.term, core.leases_begun)
        held = self._leaderships.get(group)
        if held is not None and held[1] == key:
            return held[0]
        self._end_leadership_locked(group)
        leadership = Leadership(core.term, functools.partial(self._holds, group, key))
        self._leaderships[group] = (leadership, key)
        return leadership

    def _holds(self, group: str, key: tuple[int, int]) -> bool:
        """Whether the lease ``key`` (the core's term and leases begun) of ``group`` is still held now."""
        with self._lock:
            core = self._core_of(group)
            return (core is not None and (core.term, core.leases_begun) == key
                    and self._is_leader_locked(self._clock(), group))

    def _end_leadership_locked(self, group: str) -> None:
        """The handed-out lease of ``group`` ended (a gap, or the office): its handle is lost for good."""
        held = self._leaderships.pop(group, None)
        if held is not None:
            held[0].lost.set()
            self._changed.notify_all()  # lead() waits for the next lease

    # ------------------------------------------------------------------ internals

    def _command(self, action: Callable[[RaftCore, float], Output], group: str = DEFAULT_GROUP) -> None:
        with self._lock:
            self._check_running_locked()
            now = self._clock()
            ticket = self._push(self._command_locked(group, action, now), now)
            self._changed.notify_all()
        self._carry_out(ticket)

    def _command_locked(self, group: str, action: Callable[[RaftCore, float], Output],
                        now: float) -> GroupOutput:
        groups = self._groups
        assert groups is not None
        if groups.core(group) is None:
            raise RaftElectionError(f"node {self.node_id} does not host group {group!r} (dropped?); "
                                    "node.group(name) hosts it again")
        return groups.command(group, action, now)

    def _check_running_locked(self) -> None:
        if self._failure is not None:
            raise RaftElectionError(f"node {self.node_id} halted: {self._failure}") from self._failure
        if not self._started or self._stopping or self._core is None:
            raise RaftElectionError(f"node {self.node_id} is not running")

    def _may_claim(self) -> bool:
        """Whether this node may claim a lease at all (read without the lock).

        Not once storage failed, nor once the transport failed: a node whose transport failed may already
        look dead to its peers (fast failover).
        """
        return self._failure is None and not self._transport.failed

    def _is_leader_locked(self, now: float, group: str = DEFAULT_GROUP) -> bool:
        groups = self._groups
        return groups is not None and self._may_claim() and groups.is_leader(group, now)

    def _leader_locked(self, now: float, group: str = DEFAULT_GROUP) -> Optional[int]:
        core = self._core_of(group)
        if core is None or self._failure is not None:
            return None
        if core.role is Role.LEADER:
            return core.node_id if self._is_leader_locked(now, group) else None
        return core.leader_id

    def _leader_value_locked(self, now: float, group: str) -> Optional[bytes]:
        core = self._core_of(group)
        if core is None or self._leader_locked(now, group) is None:
            return None
        return core.leader_value

    def _run_timer(self) -> None:
        """Tick the groups at their deadlines until stopped."""
        while True:
            with self._lock:
                while True:
                    groups = self._groups
                    if self._stopping or self._failure is not None or groups is None:
                        return
                    now = self._clock()
                    deadline = groups.next_deadline
                    if deadline <= now:
                        ticket = self._push(groups.tick(now), now)
                        self._changed.notify_all()
                        break
                    self._timer_at = deadline
                    try:
                        self._changed.wait(deadline - now)
                    finally:
                        self._timer_at = -math.inf
            self._carry_out(ticket)

    def _on_datagrams(self, datas: Sequence[bytes]) -> None:
        """Transport callback: decode untrusted bytes and hand valid messages to the groups.  Never raises.

        A datagram is one message or a frame of several (see the codec); each is checked on its own.
        Datagrams read together (``transport.batch_of``) are handled as one batch: one output, so one
        durable write for every term and vote they change, and one datagram per peer for the answers.
        """
        envelopes: list[Envelope] = []
        for data in datas:
            try:
                decoded = self._codec.decode_frame(data)
            except Exception as exc:  # a codec bug must not stop the receive loop either
                logger.exception("%d: unexpected error decoding %d bytes", self.node_id, len(data))
                self._reject("decode_failure", "dropped a message: %r", exc)
                continue
            for item in decoded:
                if isinstance(item, DecodeError):
                    self._reject(item.reason, "dropped a message: %s", item)
                elif item.recipient != self.node_id:
                    self._reject("wrong_recipient", "dropped a message: addressed to %d", item.recipient)
                else:
                    envelopes.append(item)
        if not envelopes:
            return

        def receive(groups: GroupSet, now: float) -> GroupOutput:
            members = groups.default.configuration
            for envelope in envelopes:
                if envelope.sender in members:  # the core counts and drops the others
                    self._stats.received(envelope.sender, envelope.message, now)
            return groups.receive_many(((envelope.sender, envelope.group, envelope.message)
                                        for envelope in envelopes), now)

        try:
            self._feed(receive)
        except Exception:
            logger.exception("%d: error handling %r", self.node_id, envelopes)
            self._reject("handling_failure", "error handling a message from %d", envelopes[0].sender)

    def _on_evidence(self, peer: int, kind: str) -> None:
        """Transport callback: evidence that ``peer``'s process is gone.  Never raises."""
        try:
            self._feed(lambda groups, now: groups.evidence(peer, kind, now))
        except Exception:
            logger.exception("%d: error handling death evidence about %d", self.node_id, peer)

    def _feed(self, step: Callable[[GroupSet, float], GroupOutput]) -> None:
        """Hand the groups something from a transport thread (ignored unless running), then carry it out.

        Wakes the timer and any waiter only for news: an event, or a deadline earlier than the one the
        timer sleeps until (a busy timer looks at the deadlines again anyway).  A heartbeat that merely
        pushes the deadlines back (most messages) wakes nobody.
        """
        with self._lock:
            groups = self._groups
            if self._stopping or self._failure is not None or groups is None:
                return
            now = self._clock()
            output = step(groups, now)
            ticket = self._push(output, now)
            if output.events or groups.next_deadline < self._timer_at:
                self._changed.notify_all()
        self._carry_out(ticket)

    def _reject(self, reason: str, message: str, *args: object) -> None:
        with self._lock:
            self._counters[f"rejected_{reason}"] += 1
        self._bad_input_log.warning(reason, f"%d {message}", self.node_id, *args)

    def _push(self, output: GroupOutput, now: float) -> int:
        """Append ``output`` (produced at ``now``) to the FIFO, with the lock held; return its ticket.

        A handed-out lease that ended in the call that produced ``output`` is marked lost here, at once,
        not when the events are carried out: by then a new lease may already be held.  Only the handles of
        groups that ``output`` reports on are looked at (every handle when it reports on the default group,
        whose membership all groups share): a lease never ends silently, its core reports the gap or the end
        of office (``LeaseLost``, ``LostLeadership``) in the call that sees it, so looking at every handle
        on every call (hundreds, for a member leading hundreds of shards) would find nothing more.  A
        handle's ``valid()`` checks the lease itself in any case.
        """
        groups = self._groups
        default = groups.default if groups is not None else None
        self._lease_until = (default.lease_expiry if default is not None and default.role is Role.LEADER
                             else -math.inf)
        leaderships = self._leaderships
        if leaderships:
            touched = {group for group, _ in output.events}
            touched.update(output.hard_states)
            if DEFAULT_GROUP not in touched:
                leaderships = {group: leaderships[group] for group in touched if group in leaderships}
        for group, (_, key) in list(leaderships.items()):
            core = groups.core(group) if groups is not None else None
            if (core is None or (core.term, core.leases_begun) != key
                    or not groups.is_leader(group, now)):  # type: ignore[union-attr]
                self._end_leadership_locked(group)
        if output.messages:
            self._stats.sent([outgoing for _, outgoing in output.messages], now)
        if any(isinstance(event, LostLeadership) and not group for group, event in output.events):
            self._stats.leadership_ended()
        self._pending.append(output)
        self._queued += 1
        return self._queued

    def _carry_out(self, ticket: int) -> None:
        """Return once output ``ticket`` is carried out (or the node halted), carrying out outputs if need be.

        One thread at a time carries out outputs, outside the lock, in FIFO order: the one that finds
        nobody doing it.  It takes whatever the FIFO holds at once, its own output and whatever other
        threads appended meanwhile, and carries it out as one batch (one durable write for every term and
        vote in it, then one datagram per peer), so a message another thread produced leaves at once,
        without waiting for that thread to be scheduled again; the others wait on ``_carried`` until their
        output is done.
        """
        with self._lock:
            while self._carrying and self._done < ticket and self._failure is None:
                self._carried.wait()
            if self._done >= ticket or self._failure is not None:
                return
            self._carrying = True
            batch = self._take_pending_locked()
        while batch:
            performed = False
            try:
                self._perform(batch)
                performed = True
            finally:
                with self._lock:
                    self._done += len(batch)
                    # If _perform raised, the next thread to come carries out what waits.
                    batch = self._take_pending_locked() if performed else []
                    if not batch:
                        self._carrying = False
                    self._carried.notify_all()

    def _take_pending_locked(self) -> list[GroupOutput]:
        """Take every output waiting to be carried out (none once the node halted)."""
        if not self._pending or self._failure is not None:
            return []
        batch = list(self._pending)
        self._pending.clear()
        return batch

    def _perform(self, batch: list[GroupOutput]) -> None:
        """Carry out outputs: persist (one write), hand over peers, send, probe, report."""
        default: Optional[HardState] = None
        named: dict[str, HardState] = {}
        peers: Optional[Mapping[int, str]] = None
        for output in batch:
            for group, state in output.hard_states.items():
                if group == DEFAULT_GROUP:
                    default = state
                else:
                    named[group] = state
            if output.peers is not None:
                peers = output.peers
        if default is not None or named:
            try:
                if named:
                    self._storage.save_groups(default if default is not None else self._saved, named)
                else:
                    assert default is not None
                    self._storage.save(default)
            except Exception as exc:
                self._halt(exc)
                return
            if default is not None:
                self._saved = default
        if peers is not None:
            self._set_transport_peers(peers)
        self._send_batch(batch)
        probes = {peer: None for output in batch for peer in output.probes}
        if probes and isinstance(self._transport, DeathProbe):
            for peer in probes:
                try:
                    self._transport.probe(peer)
                except Exception:
                    logger.exception("%d: transport failed to probe %d", self.node_id, peer)
        if not any(output.events for output in batch):
            return
        calls: list[_Callback] = []
        with self._lock:
            group_listeners = list(self._group_listeners)
            listeners = list(self._listeners)
        for output in batch:
            for group, event in output.events:
                self._dispatch(group, event, calls, group_listeners, listeners)
        if len(calls) == 1:
            self._callbacks.put(calls[0])
        elif calls:
            # One item for the whole batch: a failover of hundreds of groups has thousands of events, and a
            # queue item each would wake the callback thread that often, while the node is busiest.
            self._callbacks.put(functools.partial(self._call_each, calls))

    def _send_batch(self, batch: list[GroupOutput]) -> None:
        """Send every message of ``batch``, those to one peer together (one datagram while they fit)."""
        by_peer: dict[int, list[Envelope]] = {}
        for output in batch:
            for group, outgoing in output.messages:
                by_peer.setdefault(outgoing.to, []).append(
                    Envelope(sender=self.node_id, recipient=outgoing.to, message=outgoing.message,
                             group=group))
        for peer, envelopes in by_peer.items():
            for data in self._codec.encode_frames(envelopes):
                try:
                    self._transport.send(peer, data)
                except Exception:
                    logger.exception("%d: transport failed to send to %d", self.node_id, peer)
                    with self._lock:
                        self._counters["send_errors"] += 1

    def _transport_peers(self, addresses: Mapping[int, str]) -> dict[int, str]:
        """The transport's peer map: every member the core may talk to, and this member at its own address."""
        return {**addresses, self.node_id: self.config.peers[self.node_id]}

    def _set_transport_peers(self, addresses: Mapping[int, str]) -> None:
        """Tell the transport the members it may now reach (a membership change); never raises."""
        try:
            self._transport.set_peers(self._transport_peers(addresses))
        except (NotImplementedError, TransportError) as exc:
            logger.error("%d: the transport cannot follow the membership change: %s", self.node_id, exc)
            with self._lock:
                self._counters["set_peers_errors"] += 1
        except Exception:
            logger.exception("%d: the transport failed to take the new members", self.node_id)
            with self._lock:
                self._counters["set_peers_errors"] += 1

    def _halt(self, exc: BaseException) -> None:
        """Storage failed: send nothing more (the state it should have made durable is not)."""
        logger.critical("%d halts: cannot persist its term and vote: %s", self.node_id, exc)
        with self._lock:
            self._failure = exc
            self._pending.clear()
            self._changed.notify_all()
            self._carried.notify_all()
            for group in list(self._leaderships):
                self._end_leadership_locked(group)
            core = self._core
            was_leader = core is not None and core.is_leader(self._clock())
            term = core.term if core is not None else 0
        if was_leader and self._on_lose_leadership is not None:
            callback = self._on_lose_leadership
            self._callbacks.put(lambda: callback(term))

    def _dispatch(self, group: str, event: Event, calls: list[_Callback],
                  group_listeners: list[Callable[[str, Event], object]],
                  listeners: list[Callable[[Event], object]]) -> None:
        """Add the user callbacks for one core event of ``group`` to ``calls`` (for the callback thread).

        They run later, in order.  Every event goes to the group listeners.  Of the default group's events,
        a lease beginning (a win, or the end of a gap) calls ``on_become_leader``; a lease ending (a gap, or
        leaving office while still holding it) calls ``on_lose_leadership``.
        """
        for hears in group_listeners:
            calls.append(functools.partial(hears, group, event))
        if group != DEFAULT_GROUP:
            return
        if self._observer is not None:
            calls.append(functools.partial(self._observer, event))
        for listener in listeners:
            calls.append(functools.partial(listener, event))
        began = isinstance(event, (BecameLeader, LeaseRegained))
        ended = isinstance(event, LeaseLost) or (isinstance(event, LostLeadership) and event.had_lease)
        if began and self._on_become_leader is not None:
            become = self._on_become_leader
            calls.append(lambda: become(event.term))
        elif ended and self._on_lose_leadership is not None:
            lose = self._on_lose_leadership
            calls.append(lambda: lose(event.term))
        elif isinstance(event, LeaderChanged) and self._on_leader_change is not None:
            change = self._on_leader_change
            calls.append(lambda: change(event.leader_id, event.term))
        elif isinstance(event, LeaderValue) and self._on_leader_value is not None:
            told = self._on_leader_value
            calls.append(lambda: told(event.leader_id, event.term, event.value))
        elif isinstance(event, MembershipChanged) and event.configuration.members != self._reported_members:
            # Only one thread carries out outputs at a time, so this is never raced.
            self._reported_members = members = event.configuration.members
            if self._on_membership_change is not None:
                changed = self._on_membership_change
                index = event.configuration.index
                calls.append(lambda: changed(members, index))

    def _run_callbacks(self) -> None:
        while True:
            callback = self._callbacks.get()
            if callback is None:
                return
            self._call(callback)

    def _call_each(self, calls: list[_Callback]) -> None:
        """Run ``calls`` in order, each on its own (see :meth:`_call`)."""
        for callback in calls:
            self._call(callback)

    def _call(self, callback: _Callback) -> None:
        """Run one user callback; what it raises is logged and counted, and the node carries on."""
        try:
            callback()
        except Exception:
            logger.exception("%d: a callback raised; the node carries on", self.node_id)
            with self._lock:
                self._counters["callback_errors"] += 1
