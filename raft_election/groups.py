"""Election groups: many named elections over one member set, driven as one sans-I/O object.

A member hosts any number of named *election groups*.  Each is an independent Raft election - its own term,
vote, lease, fencing token (the term) and leader - run by its own :class:`~raft_election.core.RaftCore`, so
every rule of the core (pre-vote, stickiness, check-quorum, leases, transfer, resignation, fast failover)
holds per group, and the safety argument of one election applies to each group unchanged: a group's votes
and acknowledgements are its own, and a member's vote in one group says nothing about another.

What the groups share:

* **The member set.**  The default group ``""`` (the cluster's one election of old) keeps the configuration
  (thesis ch. 4): only it replicates, stores and commits entries.  Every other group's core uses whatever
  entry the default group holds on the same server (``RaftCore(group=True)`` and
  :meth:`~raft_election.core.RaftCore.follow_configuration`), so a membership change applies to every group
  at once and each server still uses its latest entry for every majority (§4.1).  A group's vote requests
  carry the configuration version as the default group's do, and a voter holding a newer entry refuses a
  candidate with an older one; the candidate then waits for its own server's default group to catch up
  (one heartbeat of that group's leader) instead of taking the entry from the refusal.
* **The traffic.**  The leaders of one server heartbeat together: when one group's round is due, every
  group this server leads sends its round too (:meth:`~raft_election.core.RaftCore.heartbeat_early`), so the
  node can put all of them for one peer into one datagram (the codec's frames), and the answers go back the
  same way.  Vote traffic stays per group.
* **Death evidence.**  Evidence that a member's process is gone (see :mod:`raft_election.fastfailover`)
  reaches every group at once: each group that member led starts its fast failover.
* **Storage.**  One output carries every group's changed term and vote, so the node persists them in one
  write (:meth:`~raft_election.storage.Storage.save_groups`).

Groups come and go: a group is created on this member by the application (it then stands for election,
if this member may) or by the first election message of a peer for it (it then only votes, until the
application here uses it too).  Dropping a group retires its core; its term and vote are kept, so if the
group comes back (a peer still campaigns in it) this member cannot vote twice in one of its terms.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import math
import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Callable, Optional

import attrs

from raft_election.campaign import ResendPace
from raft_election.carrier import LeaderRounds, View
from raft_election.core import RaftCore
from raft_election.errors import ConfigError, RaftElectionError
from raft_election.events import DeathEvidence, Event, MembershipChanged
from raft_election.fastfailover import PROBE_LATENESS, PROBE_REPEAT
from raft_election.groupname import DEFAULT_GROUP, check_group_name
from raft_election.hardstate import HardState
from raft_election.messages import MAX_ENTRIES_SIZE as _REFUSALS_BUDGET
from raft_election.messages import (
    Beat,
    BeatAck,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
    VoteRequest,
    WireMessage,
    entry_size,
)
from raft_election.output import Outgoing, Output
from raft_election.placement import preference
from raft_election.roles import Role

if TYPE_CHECKING:
    from raft_election.config import RaftConfig

__all__ = ["MAX_GROUPS", "GroupOutput", "GroupSet"]

logger = logging.getLogger(__name__)

#: How many groups one member hosts at most, by default: a bound on what peers' messages can make it
#: create (each group costs a core, timers and a line of storage).
MAX_GROUPS = 10_000

#: How many named groups one member campaigns in at once, by default.  More wait a heartbeat interval
#: or so: a thousand groups starting (or a dead member's hundreds failing over) at once would otherwise
#: flood every member with vote traffic, delay the answers past the campaigns' repeats and timeouts,
#: and make each campaign cost several.
MAX_CAMPAIGNS = 8

#: How often the balancer looks for leaderships to move to their preferred member (seconds), and how many it
#: moves each time at most: slowly, so that moving never costs more than a few round trips at a time.
BALANCE_PERIOD = 1.0
BALANCE_BATCH = 8
#: The balancer moves a leadership only once it has lasted this long (seconds), and not within this long of
#: death evidence about any member: a leadership just taken over may be the one the dead member left.
BALANCE_SETTLE = 3.0

#: Check-quorum of the carried groups waits up to this many windows (``election_timeout_max``) for answers
#: to the member's rounds while a majority still sends other messages (see GroupSet._overloaded).
CHECK_QUORUM_PATIENCE = 3

#: A silent chunk's view is forgotten after this many ``election_timeout_max`` without a round of it.
_VIEW_KEPT = 20

#: The messages that create a group a member does not host yet: a peer campaigns in it, leads it or hands
#: it over.  Answers and resignations for an unknown group are stale and dropped.
_CREATING = (VoteRequest, Heartbeat, TimeoutNow)


@attrs.frozen(kw_only=True)
class GroupOutput:
    """What one call into a :class:`GroupSet` asks the node to do, in this order (as for ``Output``).

    1. Persist ``hard_states`` (the changed groups' states, the default group ``""`` among them) in one
       durable write.
    2. Hand the transport ``peers`` (if not None), from a membership change.
    3. Send ``messages``, each ``(group, outgoing)``.
    4. Probe ``probes`` for death evidence; report ``events``, each ``(group, event)``.
    """

    hard_states: Mapping[str, HardState] = attrs.field(factory=dict)
    messages: tuple[tuple[str, Outgoing], ...] = ()
    events: tuple[tuple[str, Event], ...] = ()
    probes: tuple[int, ...] = ()
    peers: Optional[Mapping[int, str]] = None

    @property
    def empty(self) -> bool:
        """True if there is nothing to do."""
        return (not self.hard_states and not self.messages and not self.events and not self.probes
                and self.peers is None)


class GroupSet:
    """The election groups of one member: a core per group, their timers, and what they share.

    Deterministic like the core: time is passed in, and the one injected ``rng`` is shared by every group's
    core (so a seeded run replays exactly).

    Args:
        config: this member's settings; ``config.candidate`` False means it stands in no group.
        hard_state: the default group's persisted state (term, vote, configuration entry).
        stored: every other group's persisted state (term and vote), by name, as loaded from storage.
        now: the current time.
        rng: the only source of randomness.
        value: the value this member publishes while it leads a group.
        max_groups: the most groups this member hosts (peers' messages for more are dropped and counted).
        stamp_first: passed to the default group's core (see :class:`RaftCore`).
        max_campaigns: how many named groups campaign at once here; a group whose election timer fires
            while that many do waits its turn (liveness only: waiting is always safe).  Fast failover's
            campaigns (a dead leader's groups) never wait: a rival staggered a few milliseconds later
            would otherwise split their votes.
        balance: move leaderships to their preferred members (:meth:`_balance`).
        carry: coalesce the steady state of the named groups into member rounds (see
            :mod:`raft_election.carrier`); False gives every group its own heartbeats (for comparison).
    """

    def __init__(self, config: RaftConfig, hard_state: HardState, stored: Mapping[str, HardState],
                 now: float, rng: random.Random, *, value: bytes = b"", max_groups: int = MAX_GROUPS,
                 stamp_first: bool = True, carry: bool = True, max_campaigns: int = MAX_CAMPAIGNS,
                 balance: bool = True) -> None:
        self._config = config
        self._voting = config.evolve(candidate=False)  # a group stands only once the application uses it
        self._rng = rng
        self._value = value
        self._max_groups = max_groups
        self._within = config.heartbeat_interval / 2
        #: Group decisions taken, by name (``groups_created_by_peers``, ``rejected_unknown_group``, ...).
        self.counters: collections.Counter[str] = collections.Counter()
        self._stored: dict[str, HardState] = {name: check_hard_state(name, state) for name, state
                                              in stored.items()}
        default = RaftCore(config, hard_state, now, rng, value=value, stamp_first=stamp_first)
        self._default = default
        self._cores: dict[str, RaftCore] = {DEFAULT_GROUP: default}
        self._wanted: set[str] = set()  # groups the application here uses: they stand for election
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._leading: set[str] = set()
        self._campaigning: set[str] = set()
        # Groups whose election timer fired while max_campaigns campaigned: they campaign as campaigns end,
        # in the order of their ranks (see _Waiting), each with the deadline its core had when parked (a core
        # that moved it leaves).
        self._waiting = _Waiting()
        self._max_campaigns = max_campaigns
        self._followed = (default.configuration, default.configuration_committed)
        self._known = frozenset(default.addresses())
        self._pending = _Collector()
        # Coalesced rounds (raft_election.carrier): the leader's side and the follower's side.
        self._carry = carry
        #: How long the named groups' campaigns wait for answers before asking again (measured round trips).
        self._pace = ResendPace(config.heartbeat_interval)
        self._interval = config.heartbeat_interval
        self._timeout_min = config.election_timeout_min
        self._quorum_window = config.election_timeout_max
        self._lease_duration = config.election_timeout_min * (1.0 - config.max_clock_drift)
        self._rounds = LeaderRounds(rng.getrandbits(32))
        self._round_deadline = math.inf
        self._rounds_since = math.inf  # when the member rounds began (after a pause without any)
        self._holdoff: dict[str, float] = {}  # leaders not to carry again before then (a refusal)
        self._unheld: set[str] = set()  # carried leaders whose lease lapsed: revived by acknowledgements
        self._views: dict[tuple[int, int], View] = {}  # (leader, chunk) -> what this member made of it
        self._following: dict[str, tuple[int, int]] = {}  # carried followers -> their (leader, chunk)
        self._probe_at: dict[int, float] = {}  # silent leaders to probe for death evidence, and when
        self._voters_cache: tuple[object, tuple[frozenset[int], int, bool]] = (None, (frozenset(), 1, True))
        self._balance = balance and config.balance_groups
        self._balance_at = now + BALANCE_PERIOD
        self._evidence_at = -math.inf  # when death evidence about some member last came
        #: Death evidence about each member: its kind, when it came, and the groups told of it so far.
        self._evidence: dict[int, tuple[str, float, set[str]]] = {}
        self._carried_at: dict[str, float] = {}  # when each carried leadership began to be carried
        self._spoke: dict[int, float] = {}  # when a message of each member (any kind) last arrived
        self._revive_tried: dict[str, float] = {}  # lapsed carried leases -> the round start last tried
        # Carried leaders whose lease rests on their chunk's shared start alone (see _watch): the chunk's
        # deadline stands for all of theirs, so a steady round costs nothing per group.
        self._watched: dict[int, dict[str, None]] = {}  # chunk -> its watched groups
        self._watched_in: dict[str, int] = {}  # watched group -> its chunk
        self._watched_joined: dict[int, int] = {}  # chunk -> the newest version a watched group joined at
        self._track(DEFAULT_GROUP)

    # ------------------------------------------------------------------ read-only state

    @property
    def default(self) -> RaftCore:
        """The default group's core: the cluster's one election of old, and the keeper of the members."""
        return self._default

    def core(self, name: str) -> Optional[RaftCore]:
        """The core of group ``name`` if this member hosts it now, else None."""
        return self._cores.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The groups hosted now, sorted (the default group ``""`` first)."""
        return tuple(sorted(self._cores))

    @property
    def leading(self) -> frozenset[str]:
        """The groups this member is in office for now (with or without a lease)."""
        return frozenset(self._leading)

    def stored(self, name: str) -> Optional[HardState]:
        """The last state of ``name`` handed out for storage (also of a dropped group), or None."""
        core = self._cores.get(name)
        return core.hard_state if core is not None else self._stored.get(name)

    @property
    def next_deadline(self) -> float:
        """The earliest time at which some group, or the member's rounds, want a tick."""
        heap, deadlines = self._heap, self._deadlines
        while heap and deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        earliest = heap[0][0] if heap else math.inf
        if self._waiting and len(self._campaigning) < self._max_campaigns:
            earliest = min(earliest, self._waiting.first_deadline())
        earliest = min(earliest, self._round_deadline)
        for view in self._views.values():
            if not view.silent:
                earliest = min(earliest, view.heard + self._timeout_min)
        for at in self._probe_at.values():
            earliest = min(earliest, at)
        for chunk in self._watched:
            earliest = min(earliest, self._watch_deadline(chunk))
        return earliest

    def is_leader(self, name: str, now: float) -> bool:
        """Whether this member leads group ``name`` with a valid lease at ``now`` (carried or not).

        A carried leader's lease rests on its own rounds and on the member rounds that covered it; a lease
        that lapsed counts again only once the core has observed it coming back (so a handle of the lease
        before the gap never turns valid again).
        """
        core = self._cores.get(name)
        if core is None or core.role is not Role.LEADER:
            return False
        if name not in self._rounds:
            return core.is_leader(now)
        return core.lease_held and now < self.lease_expiry(name)

    def lease_expiry(self, name: str) -> float:
        """When group ``name``'s lease here runs out unless renewed (-inf when not leading it)."""
        core = self._cores.get(name)
        if core is None or core.role is not Role.LEADER:
            return -math.inf
        if name not in self._rounds:
            return core.lease_expiry
        return max(core.lease_expiry, self._carried_start(name) + self._lease_duration)

    @property
    def carried(self) -> tuple[int, int]:
        """How many groups the member rounds carry now: ``(as leader, as follower)``."""
        return len(self._rounds), len(self._following)

    def __repr__(self) -> str:
        return (f"<GroupSet id={self._config.node_id} groups={len(self._cores)} "
                f"leading={len(self._leading)}>")

    # ------------------------------------------------------------------ groups

    def ensure(self, name: str, now: float, *, stand: bool = True) -> GroupOutput:
        """Host group ``name`` (creating it if need be); with ``stand``, this member stands in it.

        Raises:
            ConfigError: ``name`` is not a valid group name.
            RaftElectionError: creating it would exceed ``max_groups``.
        """
        name = check_group_name(name)
        if name not in self._cores:
            if len(self._cores) - 1 >= self._max_groups:
                raise RaftElectionError(f"member {self._config.node_id} already hosts {len(self._cores) - 1} "
                                        f"named groups, the most it may (max_groups); drop some first")
            self._create(name, now)
        if stand and name != DEFAULT_GROUP and name not in self._wanted:
            self._wanted.add(name)
            self._call(name, now, lambda core: core.set_candidate(self._config.candidate, now))
        return self._pending.take()

    def drop(self, name: str, now: float) -> GroupOutput:
        """Retire group ``name`` here: resign its leadership (if any), stop its timers, keep its term/vote.

        Raises:
            ConfigError: ``name`` is the default group, which cannot be dropped.
        """
        if name == DEFAULT_GROUP:
            raise ConfigError("name", "the default group \"\" cannot be dropped; stop the node instead")
        core = self._cores.get(name)
        if core is not None:
            self._uncarry(name, now, refuse=True)
            self._call(name, now, lambda core: core.step_down(now))
            self._call(name, now, lambda core: core.stop(now))
            self._stored[name] = core.hard_state
            del self._cores[name]
            self._deadlines.pop(name, None)
            self._unwatch(name)
            self._leading.discard(name)
            self._campaigning.discard(name)
            self._waiting.remove(name)
            self._wanted.discard(name)
            logger.info("%d dropped group %r at term %d", self._config.node_id, name, core.term)
        return self._pending.take()

    def _create(self, name: str, now: float) -> RaftCore:
        stored = self._stored.pop(name, HardState())
        default = self._default
        core = RaftCore(self._voting, HardState(term=stored.term, voted_for=stored.voted_for,
                                                config=default.configuration),
                        now, self._rng, value=self._value, group=True, pace=self._pace)
        self._cores[name] = core
        core.set_order(preference(name, default.configuration.members), restart=now)
        self._track(name)
        if default.configuration_committed:
            self._call(name, now, lambda core: core.follow_configuration(default.configuration, True, now))
        logger.debug("%d hosts group %r at term %d", self._config.node_id, name, core.term)
        return core

    # ------------------------------------------------------------------ entry points

    def tick(self, now: float) -> GroupOutput:
        """Advance time to ``now``: the member's duties first, then every group whose deadline passed."""
        self._carried_duties(now)
        heap, deadlines = self._heap, self._deadlines
        for chunk in [chunk for chunk in self._watched if self._watch_deadline(chunk) <= now]:
            # The chunk's shared lease ran out (or no longer covers every group watched): each group's
            # own deadline decides again, now.
            self._watched_joined.pop(chunk, None)
            for name in self._watched.pop(chunk):
                del self._watched_in[name]
                deadlines[name] = now
                heapq.heappush(heap, (now, name))
        while self._waiting and len(self._campaigning) < self._max_campaigns:
            name = self._waiting.pop()
            if name in self._cores:
                self._call(name, now, lambda core: core.tick(now))
        due: list[str] = []
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            if deadlines.get(name) == deadline:
                deadlines.pop(name)
                due.append(name)
        cores = self._cores
        beat = any(name in self._leading and name not in self._rounds
                   and cores[name].heartbeat_deadline <= now for name in due)
        for name in due:
            if name in self._rounds and now < self.lease_expiry(name):
                self._track(name)  # the member rounds renewed it meanwhile: nothing to observe yet
                continue
            core = cores[name]
            if (name != DEFAULT_GROUP and len(self._campaigning) >= self._max_campaigns
                    and core.role is Role.FOLLOWER and core.candidate and now >= core.election_deadline
                    and not core.suspects(now)):
                self.counters["campaigns_postponed"] += 1
                self._waiting.park(name, core.rank, core.next_deadline)
                self._deadlines[name] = math.inf
                continue
            self._call(name, now, lambda core: core.tick(now))
        if beat:
            self._align(now, ticked=set(due))
        return self._pending.take()

    def receive(self, sender: int, group: str, message: WireMessage, now: float) -> GroupOutput:
        """Handle one decoded message of ``group`` from ``sender`` (untrusted: see ``RaftCore.receive``).

        A message for a group this member does not host creates it if it is election traffic from a
        member (only voting, see the module docstring) and ``max_groups`` allows; otherwise it is counted
        and dropped.
        """
        self._receive(sender, group, message, now)
        return self._pending.take()

    def receive_many(self, messages: Iterable[tuple[int, str, WireMessage]], now: float) -> GroupOutput:
        """Handle several ``(sender, group, message)`` (one datagram's frame) as :meth:`receive`, together."""
        for sender, group, message in messages:
            self._receive(sender, group, message, now)
        return self._pending.take()

    def _receive(self, sender: int, group: str, message: WireMessage, now: float) -> None:
        if sender in self._known:
            self._spoke[sender] = now
        if sender in self._evidence:
            del self._evidence[sender]  # it speaks: it was alive when it sent this (see fastfailover.py)
            self.counters["evidence_voided"] += 1
        if isinstance(message, (Beat, BeatAck)):
            if sender == self._config.node_id or sender not in self._known:
                self.counters["rejected_unknown_sender"] += 1
            elif isinstance(message, Beat):
                self._on_beat(sender, message, now)
            else:
                self._on_beat_ack(sender, message, now)
            return
        if group not in self._cores:
            if (not isinstance(message, _CREATING) or sender not in self._known
                    or sender == self._config.node_id):
                self.counters["rejected_unknown_group"] += 1
                return
            if len(self._cores) - 1 >= self._max_groups:
                self.counters["rejected_too_many_groups"] += 1
                return
            self.counters["groups_created_by_peers"] += 1
            self._create(group, now)
        if (isinstance(message, VoteRequest) and message.suspect in self._evidence
                and now - self._evidence[message.suspect][1] < self._quorum_window):
            self._tell_evidence(group, message.suspect, now)
        self._call(group, now, lambda core: core.receive(sender, message, now))

    def evidence(self, peer: int, kind: str, now: float) -> GroupOutput:
        """Death evidence about ``peer``: the groups it led hear it at once (each fails over fast).

        The other groups hear it when it matters to them: before a fast vote request naming ``peer`` as the
        dead leader reaches them (a voter lifts its stickiness on evidence of its own, see
        :mod:`raft_election.fastfailover`).  So one piece of evidence costs a call per group ``peer`` led,
        not per group hosted.
        """
        self._evidence_at = now
        self._evidence[peer] = (kind, now, set())
        for key in [key for key in self._views if key[0] == peer]:
            self._forget_view(key, now)
        self._probe_at.pop(peer, None)
        for name in [name for name, core in self._cores.items()
                     if name == DEFAULT_GROUP or core.leader_id == peer]:
            self._tell_evidence(name, peer, now)
        return self._pending.take()

    def _tell_evidence(self, name: str, peer: int, now: float) -> None:
        """Hand group ``name`` the evidence about ``peer`` (once per piece of evidence)."""
        kind, _, told = self._evidence[peer]
        if name not in told:
            told.add(name)
            self._call(name, now, lambda core: core.evidence(peer, kind, now))

    def command(self, name: str, action: Callable[[RaftCore, float], Output], now: float) -> GroupOutput:
        """Run ``action(core, now)`` on group ``name``'s core (which must be hosted); collect its output."""
        self._call(name, now, lambda core: action(core, now))
        return self._pending.take()

    def each(self, action: Callable[[RaftCore, float], Output], now: float,
             names: Optional[Iterable[str]] = None) -> GroupOutput:
        """Run ``action`` on every hosted group (or on ``names``) and collect the outputs together."""
        for name in list(self._cores) if names is None else list(names):
            if name in self._cores:
                self._call(name, now, lambda core: action(core, now))
        return self._pending.take()

    def set_value(self, value: bytes, now: float) -> GroupOutput:
        """Publish ``value`` in every group this member leads, and in the groups it will lead."""
        self._value = value
        return self.each(lambda core, now: core.set_value(value, now), now)

    def stop(self, now: float) -> GroupOutput:
        """Report the end of every leadership: the member is stopping."""
        return self.each(lambda core, now: core.stop(now), now)

    # ------------------------------------------------------------------ internals

    def _call(self, name: str, now: float, step: Callable[[RaftCore], Output],
              drop_answers_to: Optional[int] = None) -> None:
        """Run ``step`` on one core, collect its output and keep timers, roles and the members current.

        A carried core is first brought up to date with what the member rounds did for it since the last
        call, and afterwards carried or handed back its own timers as its state now requires.
        """
        core = self._cores[name]
        self._sync(name, core)
        output = step(core)
        if drop_answers_to is not None and output.messages:
            output = attrs.evolve(output, messages=tuple(
                outgoing for outgoing in output.messages
                if not (outgoing.to == drop_answers_to and isinstance(outgoing.message, HeartbeatResponse))))
        self._pending.add(name, output)
        if name != DEFAULT_GROUP:
            self._recheck(name, core, now)
        self._track(name)
        if name == DEFAULT_GROUP:
            self._follow_default(now)

    def _track(self, name: str) -> None:
        core = self._cores.get(name)
        if core is None:
            return
        deadline = core.next_deadline
        parked = self._waiting.get(name)
        if parked is not None:
            if deadline == parked:
                deadline = math.inf  # still waiting for its turn to campaign
            else:
                self._waiting.remove(name)  # its timer moved (a leader spoke, say): it no longer waits
        if name in self._rounds:
            # A carried leader: wake when its lease may run out (renewals only ever move that later).
            if core.lease_held:
                self._unheld.discard(name)
                self._revive_tried.pop(name, None)
                deadline = self.lease_expiry(name)
                if self._watch(name, core, deadline):
                    deadline = math.inf
            else:
                self._unheld.add(name)
                self._unwatch(name)
        elif name in self._watched_in:
            self._unwatch(name)
        if self._deadlines.get(name) != deadline:
            self._deadlines[name] = deadline
            heapq.heappush(self._heap, (deadline, name))
            if len(self._heap) > 4 * len(self._deadlines) + 64:
                self._heap = [(d, n) for n, d in self._deadlines.items()]
                heapq.heapify(self._heap)
        if core.role is Role.LEADER:
            self._leading.add(name)
        else:
            self._leading.discard(name)
        if core.role is Role.PRE_CANDIDATE or core.role is Role.CANDIDATE:
            self._campaigning.add(name)
        else:
            self._campaigning.discard(name)

    def _watch(self, name: str, core: RaftCore, expiry: float) -> bool:
        """Let its chunk's deadline watch carried leader ``name``'s lease; return whether it is watched now.

        Only if the chunk's shared start is all that lease rests on: the group joined no later than every
        voter's acknowledged version, and its core's own lease ends no later.
        """
        chunk = self._rounds.chunk_of(name)
        voters, quorum, counts_self = self._voters()
        floor, start = self._rounds.shared_start(chunk, voters, quorum, counts_self)
        joined = self._rounds.joined(name)
        if joined > floor or expiry != start + self._lease_duration:
            self._unwatch(name)
            return False
        previous = self._watched_in.get(name)
        if previous != chunk:
            if previous is not None:
                self._unwatch(name)
            self._watched.setdefault(chunk, {})[name] = None
            self._watched_in[name] = chunk
        if joined > self._watched_joined.get(chunk, -1):
            self._watched_joined[chunk] = joined
        return True

    def _unwatch(self, name: str) -> None:
        chunk = self._watched_in.pop(name, None)
        if chunk is not None:
            names = self._watched[chunk]
            del names[name]
            if not names:
                del self._watched[chunk]
                self._watched_joined.pop(chunk, None)

    def _watch_deadline(self, chunk: int) -> float:
        """When the leases of ``chunk``'s watched groups run out.

        -inf if the shared start no longer covers them all: then each must be looked at now.
        """
        voters, quorum, counts_self = self._voters()
        floor, start = self._rounds.shared_start(chunk, voters, quorum, counts_self)
        if self._watched_joined.get(chunk, -1) > floor:
            return -math.inf
        return start + self._lease_duration

    def _follow_default(self, now: float) -> None:
        """After the default group moved: hand a changed configuration entry to every other group."""
        default = self._default
        current = (default.configuration, default.configuration_committed)
        if current[0] is self._followed[0] and current[1] == self._followed[1]:
            return
        self._followed = current
        self._known = frozenset(default.addresses())
        entry, committed = current
        for name in list(self._cores):
            if name != DEFAULT_GROUP:
                self._cores[name].set_order(preference(name, entry.members))
                self._call(name, now, lambda core: core.follow_configuration(entry, committed, now))

    def _align(self, now: float, ticked: set[str]) -> None:
        """A round was due: send now the rounds of the groups led here that are due within half an interval.

        Half, so that rounds just sent are not sent again; a group whose round is due later than that
        joins at the next aligned round instead (its own deadline then lies within half an interval of it),
        so every group led here shares one cadence after at most one interval.  The groups just ticked
        sent their round (or kept their cadence after a late tick) already, and the default group keeps its
        own cadence: only uncarried named groups are aligned (carried ones share the member's rounds).
        """
        for name in list(self._leading):
            core = self._cores[name]
            if (name != DEFAULT_GROUP and name not in ticked and not core.carried
                    and core.heartbeat_deadline - now <= self._within):
                self._call(name, now, lambda core: core.heartbeat_early(now, self._within))

    # ------------------------------------------------------------------ coalesced rounds (carrier.py)

    def _voters(self) -> tuple[frozenset[int], int, bool]:
        """The members whose answers count, the majority, and whether this member counts itself."""
        config = self._default.configuration
        cached = self._voters_cache
        if cached[0] is not config:
            me = self._config.node_id
            cached = (config, (frozenset(member for member in config.members if member != me), config.quorum,
                               me in config))
            self._voters_cache = cached
        return cached[1]

    def _carried_start(self, name: str) -> float:
        voters, quorum, counts_self = self._voters()
        return self._rounds.start(name, voters, quorum, counts_self)

    def _sync(self, name: str, core: RaftCore) -> None:
        """Bring a carried core up to date with what the member rounds did for it since it was last called."""
        if name in self._rounds:
            core.carried_acks(self._carried_start(name), self._rounds.answered(name))
        else:
            key = self._following.get(name)
            if key is not None:
                core.carried_contact(key[0], self._views[key].heard)

    def _recheck(self, name: str, core: RaftCore, now: float) -> None:
        """After a call: carry a leader that is not carried yet, hand back a core whose state moved on."""
        if name in self._rounds:
            if core.role is not Role.LEADER or core.term != self._rounds.term(name):
                self._uncarry(name, now)
            return
        key = self._following.get(name)
        if key is not None:
            view = self._views[key]
            term, candidate = view.accepted[name]
            if not (core.role is Role.FOLLOWER and core.leader_id == key[0] and core.term == term
                    and core.candidate == candidate):
                self._uncarry(name, now, refuse=True)
            return
        if self._carry and core.role is Role.LEADER and not core.carried and name not in self._holdoff:
            self._rounds.add(name, core.term)
            self._carried_at[name] = now
            core.carry()
            self.counters["groups_carried"] += 1
            if self._round_deadline == math.inf:
                self._round_deadline = now + self._interval
                self._rounds_since = now

    def _uncarry(self, name: str, now: float, *, refuse: bool = False, holdoff: float = 0.0,
                 keep: bool = False) -> None:
        """Hand a carried core back its own timers; a follower refuses the group in its next answers."""
        core = self._cores[name]
        if name in self._rounds:
            self._sync(name, core)
            self._rounds.remove(name)
            self._carried_at.pop(name, None)
            if holdoff:
                self._holdoff[name] = now + holdoff
        key = self._following.pop(name, None)
        if key is not None:
            view = self._views[key]
            core.carried_contact(key[0], view.heard)
            if not keep:
                view.accepted.pop(name, None)
            if refuse:
                view.refused[name] = core.term
        self._unheld.discard(name)
        self._unwatch(name)
        self._revive_tried.pop(name, None)
        core.uncarry(now)

    def _silence(self, key: tuple[int, int], now: float) -> None:
        """A chunk's leader went silent: its carried followers run their own timers again.

        Each from its last contact (Raft §5.2).  The view stays, so the groups that still follow when the
        rounds resume are carried again without taking the list anew.
        """
        view = self._views[key]
        view.silent = True
        for name in list(view.accepted):
            if self._following.get(name) == key:
                self._uncarry(name, now, keep=True)
                self._track(name)

    def _resume(self, key: tuple[int, int], view: View) -> None:
        """Rounds of a silent chunk came again: carry the accepted groups that still follow its leader."""
        view.silent = False
        leader = key[0]
        for name, (term, candidate) in list(view.accepted.items()):
            core = self._cores.get(name)
            if (core is not None and not core.carried and name not in self._following
                    and name not in self._rounds and core.role is Role.FOLLOWER
                    and core.leader_id == leader and core.term == term and core.candidate == candidate):
                self._following[name] = key
                core.carried_contact(leader, view.heard)
                core.carry()
                self._track(name)
            else:
                del view.accepted[name]
                view.refused[name] = core.term if core is not None else 0

    def _forget_view(self, key: tuple[int, int], now: float) -> None:
        """The leader of a chunk died (death evidence): its carried followers run their own timers again.

        The view goes too: a restarted leader's chunks are new ones.
        """
        view = self._views[key]
        for name in list(view.accepted):
            if self._following.get(name) == key:
                self._uncarry(name, now)
                self._track(name)
        del self._views[key]

    def _carried_duties(self, now: float) -> None:
        """The member's deadlines: its round, silent leaders, probes, and leaders to carry again."""
        for key in [key for key, view in self._views.items()
                    if not view.silent and now >= view.heard + self._timeout_min]:
            self.counters["carried_leaders_silent"] += 1
            self._silence(key, now)
        for key in [key for key, view in self._views.items()
                    if view.silent and now >= view.heard + _VIEW_KEPT * self._quorum_window]:
            del self._views[key]  # a chunk of a restarted or long-gone leader
        for leader in [leader for leader, at in self._probe_at.items() if now >= at]:
            self._pending.probe(leader)
            self._probe_at[leader] = now + PROBE_REPEAT * self._interval
        default = self._default
        # The default group's leader sends its own heartbeats; they and the member round go out together
        # (one datagram per peer) when either is due and the other is due within half an interval.
        beat_due = default.role is Role.LEADER and default.heartbeat_deadline <= now
        if now >= self._round_deadline or (beat_due and self._round_deadline - now < self._within):
            self._round(now)
        for name in [name for name, until in self._holdoff.items() if now >= until]:
            del self._holdoff[name]  # its wait is over: a call carries it again if it still leads
            if name in self._cores:
                self._call(name, now, lambda core: core.observe(now))

    def _round(self, now: float) -> None:
        """The member round, with the default group's heartbeat if it is due within half an interval."""
        self._member_round(now)
        default = self._default
        if default.role is Role.LEADER and default.heartbeat_deadline - now < self._within:
            self._call(DEFAULT_GROUP, now, lambda core: core.heartbeat_early(now, self._within))
        if self._balance and now >= self._balance_at:
            self._balance_at = now + BALANCE_PERIOD
            self._move_to_preferred(now)

    def _member_round(self, now: float) -> None:
        """One heartbeat round for every group carried as leader: one Beat per chunk and peer."""
        voters, quorum, counts_self = self._voters()
        window_start = now - self._quorum_window
        if (self._rounds and window_start >= self._rounds_since
                and not self._rounds.quorum_heard(voters, quorum, counts_self, window_start)
                and not self._overloaded(voters, quorum, counts_self, now)):
            # Check-quorum (thesis §6.2): no majority answered the member's rounds within the window, so
            # no majority answered any carried group's: each leaves office as its own rounds would make it.
            for name in list(self._rounds.names()):
                self._call(name, now, lambda core: core.check_quorum(now))
        if not self._rounds:
            self._round_deadline = self._rounds_since = math.inf
            return
        if now < self._round_deadline:
            self._round_deadline = now + self._interval  # early, with the default group's heartbeat
        else:
            due = self._round_deadline + self._interval  # keep the cadence after a late tick
            self._round_deadline = due if now < due else now + self._interval
        peers = sorted(voters | {peer for peer in self._known if peer != self._config.node_id
                                 and peer in self._default.configuration})
        for peer, beat in self._rounds.round(now, peers, self._value, self._default.configuration.version):
            self._pending.send(peer, beat)

    def _overloaded(self, voters: frozenset[int], quorum: int, counts_self: bool, now: float) -> bool:
        """Whether a majority's answers to the rounds are only late, not gone: check-quorum waits then.

        They are late if a majority's members still send this member other messages within the window
        and answered some round within :data:`CHECK_QUORUM_PATIENCE` windows.  When a member that led
        hundreds of groups dies, every survivor runs dozens of campaigns at once; on a small machine the
        answers to the rounds can then queue for longer than the window, and stepping down from every
        carried group at once would start hundreds of elections, making the queues longer still (one run
        re-elected 900 groups that way, taking seconds).  Waiting is only for liveness, never safety: a
        lease still needs answers in time (is_leader stays False meanwhile), and a leader whose rounds
        a majority cannot hear is deposed by the higher term they elect, or steps down after the patience.
        """
        spoke = self._spoke
        window_start = now - self._quorum_window
        talking = int(counts_self) + sum(1 for peer in voters if spoke.get(peer, -math.inf) >= window_start)
        if talking < quorum:
            return False
        waits = self._rounds.quorum_heard(voters, quorum, counts_self,
                                          now - CHECK_QUORUM_PATIENCE * self._quorum_window)
        if waits:
            self.counters["check_quorum_waited"] += 1
        return waits

    def _move_to_preferred(self, now: float) -> None:
        """The balancer: hand a few leaderships to the members that prefer them (placement.py).

        Only while the cluster is healthy: the configuration committed, every member answering this
        member's rounds within ``election_timeout_min``, and no campaign of this member under way.  Each
        move is a leadership transfer (thesis §3.10) to a member that ranks before this one in the group's
        order and stands for election in it; the group has a new leader one round trip later.
        """
        voters, _, _ = self._voters()
        if (not self._rounds or self._campaigning or self._waiting
                or now - self._evidence_at < BALANCE_SETTLE or not self._default.configuration_committed
                or any(self._rounds.heard.get(peer, -math.inf) < now - self._timeout_min for peer in voters)):
            return
        me = self._config.node_id
        moved = 0
        for name in list(self._rounds.names()):
            core = self._cores[name]
            order = [member for member in core.order if member in voters or member == me]
            if not order or order[0] == me or now - self._carried_at.get(name, now) < BALANCE_SETTLE:
                continue
            target = next((member for member in order[:order.index(me)]
                           if core.peer_stands(member) or self._rounds.stands(member, name)), None)
            if target is None:
                continue
            self.counters["balancer_transfers"] += 1
            self._call(name, now, functools.partial(_transfer, target=target, now=now))
            moved += 1
            if moved >= BALANCE_BATCH:
                return

    def _on_beat(self, leader: int, beat: Beat, now: float) -> None:
        """A member round of ``leader`` for one chunk: take its list if it brings one, then answer."""
        key = (leader, beat.chunk)
        view = self._views.get(key)
        config = self._default.configuration.version
        if beat.listed and (view is None or view.version != beat.version
                            or view.listed != dict(beat.entries)):
            view = self._take_list(key, view, beat, now)
        elif view is None or view.version != beat.version:
            self._pending.send(leader, BeatAck(round=beat.round, chunk=beat.chunk, version=beat.version,
                                               need=True, config_term=config[0], config_index=config[1]))
            return
        view.heard = now
        if view.silent:
            self._resume(key, view)
        if self._config.fast_failover:
            self._probe_at[leader] = now + (1.0 + PROBE_LATENESS) * self._interval
        refused: list[tuple[str, int]] = []
        budget = _REFUSALS_BUDGET
        for name, term in view.refused.items():
            budget -= entry_size(name)
            if budget < 0:
                break
            refused.append((name, term))
        stands = view.stands()
        self._pending.send(leader, BeatAck(round=beat.round, chunk=beat.chunk, version=beat.version,
                                           refused=tuple(refused), stands=stands, config_term=config[0],
                                           config_index=config[1]))
        if self._round_deadline - now < self._within:
            # Phase alignment: a round of this member's due soon goes now, with this answer (one datagram to
            # the leader, one wake-up for both).  Members that lead groups so fall into step with the
            # earliest of them, and each receives its peers' rounds close together.
            self._round(now)

    def _take_list(self, key: tuple[int, int], old: Optional[View], beat: Beat, now: float) -> View:
        """A new list of one chunk: take each listed group as its leader's heartbeat, carry what follows."""
        leader = key[0]
        listed = dict(beat.entries)
        view = View(version=beat.version, listed=listed)
        if old is not None:
            for name in list(old.accepted):
                if listed.get(name) != old.accepted[name][0] and self._following.get(name) == key:
                    self._uncarry(name, now)
                    self._track(name)
        self._views[key] = view
        for name, term in listed.items():
            kept = old.accepted.get(name) if old is not None else None
            if kept is not None and kept[0] == term and self._following.get(name) == key:
                view.accepted[name] = kept
                continue
            core = self._cores.get(name)
            if (core is not None and core.role is Role.FOLLOWER and core.leader_id == leader
                    and core.term == term and not core.carried and name not in self._following):
                # It follows this leader in this term already (its own heartbeats, or an earlier list).
                view.accepted[name] = (term, core.candidate)
                self._following[name] = key
                core.carried_contact(leader, now)
                core.carry()
                self._track(name)
                continue
            heartbeat = Heartbeat(term=term, round=beat.round, value=beat.value)
            self._receive_heartbeat(leader, name, heartbeat, now)
            core = self._cores.get(name)
            if (core is not None and core.role is Role.FOLLOWER and core.leader_id == leader
                    and core.term == term and name not in self._following and name not in self._rounds):
                view.accepted[name] = (term, core.candidate)
                self._following[name] = key
                core.carry()
                self._track(name)
            elif core is None or self._following.get(name) != key:
                view.refused[name] = core.term if core is not None else 0
        return view

    def _receive_heartbeat(self, leader: int, name: str, heartbeat: Heartbeat, now: float) -> None:
        """One group's share of a listed chunk, as that group's heartbeat (its answer is the BeatAck)."""
        if name not in self._cores:
            if len(self._cores) - 1 >= self._max_groups:
                self.counters["rejected_too_many_groups"] += 1
                return
            self.counters["groups_created_by_peers"] += 1
            self._create(name, now)
        self._call(name, now, lambda core: core.receive(leader, heartbeat, now), drop_answers_to=leader)

    def _on_beat_ack(self, peer: int, ack: BeatAck, now: float) -> None:
        """A peer answered a member round: refusals first, then the leases it extends.

        The refused groups leave the chunk before the answer is recorded, so it never counts for a group
        its sender did not follow (an answer covers the groups of its chunk only while they are in it).
        """
        sent_at = self._rounds.sent_at(ack.round)
        if sent_at is None:
            self.counters["rejected_stale_response"] += 1
            return
        self._pace.sample(now - sent_at)
        for name, term in ack.refused:
            if not self._rounds.carries(ack.chunk, name):
                continue
            core = self._cores[name]
            if term > core.term:
                answer = HeartbeatResponse(term=term, round=0, candidate=False)
                self._call(name, now, functools.partial(_answer, sender=peer, message=answer, now=now))
            else:
                self.counters["carried_groups_refused"] += 1
                self._uncarry(name, now, holdoff=2 * self._interval)
                self._track(name)
        if (ack.config_term, ack.config_index) > self._default.configuration.version:
            # As RaftCore._acknowledged: no answer from a member whose configuration entry is newer.
            self.counters["acks_ignored_newer_configuration"] += 1
            return
        if not self._rounds.acknowledged(peer, ack, now):
            self.counters["rejected_stale_response"] += 1
            return
        if not self._unheld:
            return
        voters, quorum, counts_self = self._voters()
        if now >= self._rounds.best_start(ack.chunk, voters, quorum, counts_self) + self._lease_duration:
            return  # not even the chunk's longest-carried group has a majority-answered round in time
        # A lapsed lease may hold again: it observes it (LeaseRegained, thesis §6.4.1), once per round a
        # majority answered for it; and in the first ``election_timeout_max`` of a gap only with a heartbeat
        # interval of it left: on a machine so loaded that answers take nearly a lease to come back,
        # reviving leases that would lapse again before the next answer costs two calls and two events per
        # group and answer, and keeps the machine that loaded.  Later in a gap any answer in time revives
        # it (answers that stay that late must not keep a leader without a lease for good: check-quorum
        # waits while they come, see _overloaded).  A leadership's first lease (a win whose votes came too
        # late to carry one) is taken as soon as it holds: that is when a new leader may begin work.
        tried = self._revive_tried
        for name in [name for name in self._unheld if self._rounds.carries(ack.chunk, name)]:
            start = self._carried_start(name)
            core = self._cores[name]
            fresh_gap = core.lease_ever_held and now - core.lease_gap_since < self._quorum_window
            margin = self._interval if fresh_gap else 0.0
            if now + margin < start + self._lease_duration and start > tried.get(name, -math.inf):
                tried[name] = start
                self._call(name, now, lambda core: core.observe(now))

def _transfer(core: RaftCore, *, target: int, now: float) -> Output:
    return core.transfer_leadership(now, target)[1]


def _answer(core: RaftCore, *, sender: int, message: HeartbeatResponse, now: float) -> Output:
    return core.receive(sender, message, now)


def check_hard_state(name: str, state: HardState) -> HardState:
    """A stored group's state: a valid name and no configuration entry (the default group keeps that)."""
    check_group_name(name, "stored group")
    if not name or state.config is not None:
        raise ValueError(f"stored group {name!r} must be a named group without a configuration entry")
    return state


class _Waiting:
    """The groups waiting for their turn to campaign (the admission limit): lowest rank first, then oldest.

    Rank first, so that when many groups start at once (a member set starting, a member back after a
    partition) each member's campaigns for the groups it is the preferred leader of come before its
    campaigns for groups whose preferred leader may still win them: by the time those come up, most have
    a leader, and their timers moved (which takes them out of the queue).  A queue in the order the timers
    fired would pit several members' campaigns for one group against each other, splitting its votes.
    """

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}
        self._queued: dict[str, int] = {}  # name -> its entry's sequence number in the heap
        self._heap: list[tuple[int, int, str]] = []  # (rank, sequence, name); stale entries are skipped
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._deadlines)

    def get(self, name: str) -> Optional[float]:
        """The deadline ``name`` had when parked, or None if it does not wait."""
        return self._deadlines.get(name)

    def park(self, name: str, rank: int, deadline: float) -> None:
        """``name`` (of ``rank`` in its group's order) waits, its core's timer at ``deadline``."""
        self._sequence += 1
        self._deadlines[name] = deadline
        self._queued[name] = self._sequence
        heapq.heappush(self._heap, (rank, self._sequence, name))

    def remove(self, name: str) -> None:
        """``name`` no longer waits (if it did)."""
        if self._deadlines.pop(name, None) is not None:
            del self._queued[name]

    def pop(self) -> str:
        """Take the next group to campaign out of the queue (the queue must not be empty)."""
        while True:
            _, sequence, name = heapq.heappop(self._heap)
            if self._queued.get(name) == sequence:
                del self._queued[name]
                del self._deadlines[name]
                return name

    def first_deadline(self) -> float:
        """The deadline of the group parked longest ago: past, like every parked one (each fired)."""
        return next(iter(self._deadlines.values()))


class _Collector:
    """Gathers the outputs of several cores into one :class:`GroupOutput`."""

    def __init__(self) -> None:
        self._hard_states: dict[str, HardState] = {}
        self._messages: list[tuple[str, Outgoing]] = []
        self._events: list[tuple[str, Event]] = []
        self._probes: dict[int, None] = {}
        self._peers: Optional[Mapping[int, str]] = None

    def add(self, name: str, output: Output) -> None:
        if output.hard_state is not None:
            self._hard_states[name] = output.hard_state
        self._messages.extend((name, outgoing) for outgoing in output.messages)
        if name == DEFAULT_GROUP:
            self._events.extend((name, event) for event in output.events)
            if output.peers is not None:
                self._peers = output.peers
        else:
            # A group's configuration and death-evidence events repeat the default group's.
            self._events.extend((name, event) for event in output.events
                                if not isinstance(event, (MembershipChanged, DeathEvidence)))
        self._probes.update(dict.fromkeys(output.probes))

    def send(self, to: int, message: WireMessage) -> None:
        """A member-level message (a Beat or BeatAck), in the default group's envelope."""
        self._messages.append((DEFAULT_GROUP, Outgoing(to=to, message=message)))  # type: ignore[arg-type]

    def probe(self, peer: int) -> None:
        self._probes[peer] = None

    def take(self) -> GroupOutput:
        output = GroupOutput(hard_states=self._hard_states, messages=tuple(self._messages),
                             events=tuple(self._events), probes=tuple(self._probes), peers=self._peers)
        self._hard_states = {}
        self._messages = []
        self._events = []
        self._probes = {}
        self._peers = None
        return output
