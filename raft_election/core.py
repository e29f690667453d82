"""The sans-I/O election core: every decision of the algorithm, and nothing else.

:class:`RaftCore` is a deterministic state machine.  It never reads a clock, never draws a random number
of its own (a seeded :class:`random.Random` is injected), never touches a socket and never starts a thread.
It is driven by :meth:`RaftCore.tick` and :meth:`RaftCore.receive` (plus :meth:`RaftCore.evidence` and a
few commands such as :meth:`RaftCore.step_down`), each taking the current time, and each returning an
:class:`Output`: the hard state to persist, the messages to send *after* it is persisted, and the events to
report.  The time at which the core next wants a tick is :attr:`RaftCore.next_deadline`.

Rules implemented (section numbers: Raft paper 2014 and Ongaro's thesis 2014):

* Randomized election timeouts, heartbeats, one vote per term, strict majority (Raft §5.2).
* Pre-vote: ask whether an election would be won before raising the term (thesis §9.6).
* Leader stickiness: ignore (pre-)vote requests within ``election_timeout_min`` of hearing from a leader,
  except for a leadership transfer (thesis §4.2.3).  Starting up and granting a vote count as hearing from
  a leader, so neither a fast restart nor a fresh vote can undercut a live leader's lease.  All of it is in
  one section of :class:`RaftCore` ("leader stickiness").
* Check-quorum: a leader that has not heard from a majority within ``election_timeout_max`` steps down
  (thesis §6.2; see :meth:`RaftCore._check_quorum` for the window).
* Leader lease: valid until ``t + election_timeout_min * (1 - max_clock_drift)`` where ``t`` is the send
  time of the latest round (heartbeat round, or the winning vote round) a majority acknowledged
  (thesis §6.4.1).  ``is_leader`` holds only inside the lease.  Office and lease are separate: a leader
  whose lease runs out keeps its role and term and heartbeats on (a lease gap, reported as ``LeaseLost``
  and ``LeaseRegained``), and a win whose votes took longer than a lease takes office without one; the
  argument that at most one server holds a lease at any instant, gaps included, is in
  :mod:`raft_election.lease`.
* Leadership transfer with TimeoutNow, giving up the lease first (thesis §3.10), and resignation.
* Membership changes, one server at a time, with the configuration as a log of one entry (thesis ch. 4):
  the rules and the lease argument across changes are in :mod:`raft_election.membership`; the core uses
  its latest entry for every majority, carries the entry in heartbeats, and refuses votes to candidates
  whose entry is older than its own.
* Fast failover on death evidence, this library's extension, lives in
  :mod:`raft_election.fastfailover`; the core consults it (when ``fast_failover`` is on) at a few named
  hooks: whether a voter's evidence lifts its stickiness for a request, whether a request waits for
  evidence, which grants count, the probe deadline, and what arrived evidence changes.

Structure, as in etcd's raft: :meth:`RaftCore.receive` handles every message in three phases - the term
rules common to every message, then vote requests (the case shared by all roles), then the role's own step
function, picked from a table by role and message type.  Ticks go to the role's tick function in the same
way (``_tick_election`` for followers and candidates, ``_tick_heartbeat`` for the leader), and which role
may follow which is a table too.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import attrs

from raft_election.campaign import Campaign, ResendPace
from raft_election.errors import (
    ConfigError,
    IllegalTransitionError,
    MembershipChangeError,
    NotLeaderError,
    NoTransferTargetError,
    RaftElectionError,
)
from raft_election.events import (
    BecameLeader,
    DeathEvidence,
    Event,
    LeaderChanged,
    LeaderValue,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    MembershipChanged,
    RoleChanged,
    TermChanged,
    VoteGranted,
)
from raft_election.fastfailover import GROUP_FAST_RESEND, GROUP_FAST_STAGGER, FastFailover
from raft_election.hardstate import HardState
from raft_election.lease import Lease
from raft_election.membership import Configuration, Membership, Version
from raft_election.messages import (
    MAX_MEMBERS,
    MAX_ROUND,
    Heartbeat,
    HeartbeatResponse,
    Message,
    Resign,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from raft_election.output import Outgoing, Output
from raft_election.roles import Role

if TYPE_CHECKING:
    from raft_election.config import RaftConfig

__all__ = ["NoTransferTargetError", "Outgoing", "Output", "RaftCore"]

logger = logging.getLogger(__name__)

_NEVER = -math.inf

#: Which role may follow which (h11-style: transitions are data).  Anything else is a bug and raises
#: IllegalTransitionError: a follower never becomes leader without an election, and a leader never
#: campaigns without first stepping down.
_TRANSITIONS: Mapping[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE}),
    Role.PRE_CANDIDATE: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE}),
    Role.CANDIDATE: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER}),
    Role.LEADER: frozenset({Role.FOLLOWER}),
}

#: A role's handler for one type of message (phase 3 of :meth:`RaftCore.receive`).
_Step = Callable[[int, Any, float], None]


class RaftCore:
    """One server's election state machine.

    Args:
        config: the validated cluster settings; ``config.node_id`` is this server.
        hard_state: the persisted ``(term, voted_for)`` loaded from storage.
        now: the current time (seconds, any monotonic origin); the start counts as having heard from a
            leader, so a restarted server does not hand out votes within ``election_timeout_min``.
        rng: the only source of randomness (election timeouts, round numbers); seed it to replay a run.
        value: the value this server publishes with its heartbeats while it leads (see :meth:`set_value`).
        stamp_first: a new leader commits an entry of its own term before any membership change (thesis
            §4.1 erratum).  Only the test that shows the bug this prevents turns it off.
        group: this core is a named election group's (see :mod:`raft_election.groups`), not a cluster's
            own election: it keeps no configuration of its own (it never sends, takes, stores or commits an
            entry, and uses whatever entry the default group holds on its server, handed to it with
            :meth:`follow_configuration`); its campaigns repeat their requests at doubling intervals,
            and its fast failover does not probe a silent leader itself (its member does, once for every
            group that leader led), so that many groups campaigning or failing over at once do not
            flood the members.
        configures: whether this core keeps the configuration (the default group's core, and a core on
            its own).  The core of a named election group does not: it never sends, takes, stores or
            commits an entry, and uses whatever entry the default group holds on its server, handed to it
            with :meth:`follow_configuration` (see :mod:`raft_election.groups`).
    """

    def __init__(self, config: RaftConfig, hard_state: HardState, now: float, rng: random.Random, *,
                 value: bytes = b"", stamp_first: bool = True, configures: bool = True,
                 group: bool = False, pace: Optional[ResendPace] = None) -> None:
        self._id = config.node_id
        self._pace = pace  # a named group's repeat interval for vote requests (shared by the member's groups)
        seed = Configuration(members={member: address for member, address in config.peers.items()
                                      if not (config.join and member == self._id)})
        self._seed = seed
        self._membership = Membership(self._id, seed, hard_state.config)
        self._stamp_first = stamp_first
        self._configures = configures and not group
        self._group = group
        self._timeout_min = config.election_timeout_min
        self._timeout_max = config.election_timeout_max
        self._heartbeat_interval = config.heartbeat_interval
        self._lease_duration = config.election_timeout_min * (1.0 - config.max_clock_drift)
        self._quorum_window = config.election_timeout_max
        self._pre_vote = config.pre_vote
        self._rng = rng
        #: Decisions taken, by name (``votes_granted``, ``rejected_stale_term``, ...).
        self.counters: collections.Counter[str] = collections.Counter()
        self._ff = FastFailover(node_id=self._id, members=self._membership.config.members,
                                heartbeat_interval=self._heartbeat_interval,
                                election_timeout_max=self._timeout_max,
                                counters=self.counters) if config.fast_failover else None
        if self._ff is not None and group:
            self._ff.probing = False
            self._ff.stagger = GROUP_FAST_STAGGER
            self._ff.resend = GROUP_FAST_RESEND

        self._term = hard_state.term
        self._voted_for = hard_state.voted_for
        self._persisted = hard_state if self._configures else attrs.evolve(hard_state, config=None)
        self._addresses = self._membership.addresses()  # what the transport was last told
        self._role = Role.FOLLOWER
        self._leader_id: Optional[int] = None
        self._leader_term = self._term  # the term in which _leader_id was learned
        self._value = value
        self._leader_value: Optional[bytes] = None  # _leader_id's value, once heard
        self._reported_value: tuple[Optional[int], Optional[bytes]] = (None, None)
        self._resigned: tuple[int, int] = (0, -1)  # (leader, term) that resigned: its heartbeats are stale
        self._candidate = config.candidate
        # Thesis §4.2.3 stickiness; starting up counts as hearing from a leader (see module docstring).
        self._last_leader_contact = now
        self._election_deadline = now
        self._rank = 0
        self._rank_delay = 0.0  # added to every election timeout: this member's place in the group's order
        self._order: tuple[int, ...] = ()
        self._reset_election_timer(now)
        self._round = rng.getrandbits(32)
        self._campaign: Optional[Campaign] = None
        self._carried = False  # the GroupSet runs this core's steady state (see carry())

        # Leader state.
        self._heartbeat_deadline = _NEVER
        self._lease: Optional[Lease] = None
        self._fast_win = False  # the office was won by fast failover
        self._leases_begun = 0
        self._unleased = 0.0  # seconds spent in office without a lease, over every office

        self._outbox: list[Outgoing] = []
        self._events: list[Event] = []

        # Phase 3 of receive(): each role's step, by message type (vote requests are phase 2, for all).
        following: dict[type[Message], _Step] = {
            Heartbeat: self._follow_heartbeat, HeartbeatResponse: self._stale_heartbeat_response,
            VoteResponse: self._stale_vote_response, TimeoutNow: self._campaign_on_timeout_now,
            Resign: self._leader_resigned,
        }
        campaigning = {**following, VoteResponse: self._count_vote}
        leading: dict[type[Message], _Step] = {
            Heartbeat: self._second_leader, HeartbeatResponse: self._acknowledged,
            VoteResponse: self._stale_vote_response, TimeoutNow: self._refuse_timeout_now,
            Resign: self._ignore_resign,
        }
        self._steps: Mapping[Role, Mapping[type[Message], _Step]] = {
            Role.FOLLOWER: following, Role.PRE_CANDIDATE: campaigning, Role.CANDIDATE: campaigning,
            Role.LEADER: leading}
        self._ticks: Mapping[Role, Callable[[float], None]] = {
            Role.FOLLOWER: self._tick_election, Role.PRE_CANDIDATE: self._tick_election,
            Role.CANDIDATE: self._tick_election, Role.LEADER: self._tick_heartbeat}

    # ------------------------------------------------------------------ read-only state

    @property
    def node_id(self) -> int:
        """This server's id."""
        return self._id

    @property
    def role(self) -> Role:
        """The current role.  A LEADER holds the office; whether it may claim it is :meth:`is_leader`."""
        return self._role

    @property
    def term(self) -> int:
        """The current term (persisted before anything depending on it is sent)."""
        return self._term

    @property
    def voted_for(self) -> Optional[int]:
        """Whom this server voted for in the current term."""
        return self._voted_for

    @property
    def leader_id(self) -> Optional[int]:
        """The leader this server knows of in the current term, or None."""
        return self._leader_id

    @property
    def leader_value(self) -> Optional[bytes]:
        """The value of :attr:`leader_id` (this server's own while it leads), or None if not heard yet."""
        return self._leader_value

    @property
    def candidate(self) -> bool:
        """Whether this server wants to stand for election (it does only while it is also a voter)."""
        return self._candidate

    @property
    def voter(self) -> bool:
        """Whether this server is a member of the configuration it uses (else it never campaigns)."""
        return self._membership.voter

    @property
    def configuration(self) -> Configuration:
        """The latest configuration entry this server has: the one it uses, committed or not."""
        return self._membership.config

    @property
    def configuration_committed(self) -> bool:
        """Whether this server knows its latest configuration entry to be committed."""
        return self._membership.is_committed

    @property
    def committed_configuration(self) -> Optional[Configuration]:
        """The latest entry this server knows to be committed, if it has it (its latest or an earlier one).

        A leader that removed itself hands over as its removal commits, and may adopt its successor's
        newer, not yet committed entry at once: this still says what it committed.
        """
        return self._membership.committed_entry

    def addresses(self) -> dict[int, str]:
        """Every server this one may exchange messages with, and its address (what the transport needs)."""
        return self._membership.addresses()

    @property
    def catching_up(self) -> Optional[int]:
        """The member a leader is catching up before it adds it (see :meth:`add_member`), or None."""
        learner = self._membership.learner
        return learner[0] if learner is not None and self._role is Role.LEADER else None

    @property
    def membership_change(self) -> Optional[str]:
        """What a leader is doing to its configuration, or None (not leading, or nothing).

        ``"stamp"``: this leader's first entry of its term is not committed yet (a change waits for it,
        thesis §4.1); ``"catch-up"``: waiting for a new member to answer; ``"pending"``: an entry of this
        term that changes the members, not yet committed.
        """
        membership = self._membership
        if self._role is not Role.LEADER:
            return None
        if membership.wanted is not None:
            return "stamp"
        if membership.learner is not None:
            return "catch-up"
        if membership.config.term == self._term and not membership.is_committed:
            return "stamp" if membership.stamping else "pending"
        return None

    @property
    def hard_state(self) -> HardState:
        """The state that must be durable before messages depending on it leave."""
        return HardState(term=self._term, voted_for=self._voted_for, config=self._durable_config)

    @property
    def _durable_config(self) -> Optional[Configuration]:
        """The entry to store: None while it is still the seed from ``RaftConfig.peers`` (nothing to keep)."""
        config = self._membership.config
        return None if config is self._seed or not self._configures else config

    @property
    def _stands(self) -> bool:
        """Whether this server stands for election: it wants to, and it is a member (thesis §4.2.2)."""
        return self._candidate and self._membership.voter

    @property
    def next_deadline(self) -> float:
        """The time at which the core wants :meth:`tick` called next (never, while carried)."""
        if self._carried:
            return math.inf
        if self._role is Role.LEADER:
            assert self._lease is not None
            return min(self._heartbeat_deadline, self._lease.expiry if self._lease.held else math.inf)
        if self._campaign is not None:
            return min(self._election_deadline, self._campaign.resend_at)
        if self._ff is not None and self._role is Role.FOLLOWER:
            return min(self._election_deadline, self._ff.next_deadline(self._leader_id))
        return self._election_deadline

    @property
    def election_deadline(self) -> float:
        """When the election timer fires unless reset (meaningless while leading)."""
        return self._election_deadline

    @property
    def lease_expiry(self) -> float:
        """When the current lease runs out (``-inf`` when not leading)."""
        return self._lease.expiry if self._lease is not None else _NEVER

    @property
    def lease_held(self) -> bool:
        """Whether this leader held its lease when the lease was last observed (at the last call into it)."""
        return self._lease is not None and self._lease.held

    @property
    def lease_gap_since(self) -> float:
        """A leader without a lease: when its current lease gap began (as last observed); else inf."""
        lease = self._lease
        return lease.unheld_since if lease is not None and not lease.held else math.inf

    @property
    def lease_ever_held(self) -> bool:
        """A leader: whether this office has held a lease yet (False for a win whose votes came too late)."""
        return self._lease is not None and self._lease.begun > 0

    @property
    def leases_begun(self) -> int:
        """How many leases this server has begun so far: one per win with a lease and per gap that ended.

        Two instants with the same count and a valid lease at both lie in one unbroken lease.
        """
        return self._leases_begun

    def unleased_seconds(self, now: float) -> float:
        """Seconds spent as leader without a lease so far (lease gaps, and late wins before their lease)."""
        lease = self._lease
        current = now - lease.unheld_since if lease is not None and not lease.held else 0.0
        return self._unleased + max(0.0, current)

    def is_leader(self, now: float) -> bool:
        """True only while this server leads with a valid lease (thesis §6.4.1), computed against ``now``."""
        return self._role is Role.LEADER and now < self.lease_expiry

    def followers(self, now: float) -> tuple[int, ...]:
        """The peers that acknowledged this leader within ``election_timeout_min`` (empty unless leader)."""
        return self._lease.followers(now) if self._lease is not None else ()

    def lease_remaining(self, now: float) -> float:
        """Seconds of lease left at ``now`` (0 when not leading)."""
        return max(0.0, self.lease_expiry - now) if self._role is Role.LEADER else 0.0

    def __repr__(self) -> str:
        return f"<RaftCore id={self._id} role={self._role} term={self._term} leader={self._leader_id}>"

    # ------------------------------------------------------------------ entry points

    def tick(self, now: float) -> Output:
        """Advance time to ``now``: fire whatever deadline has passed."""
        self._observe_lease(now)
        self._ticks[self._role](now)
        return self._flush()

    def receive(self, sender: int, message: Message, now: float) -> Output:
        """Handle one decoded message from ``sender``.

        Network input is untrusted: a sender this server never knew as a member is counted and ignored
        (unless it is a leader whose heartbeat carries a configuration listing it and either this server or,
        while this server is no voter, not: that is how a member started from an old list, a joining member
        being caught up, or a removed member being added back first hears of a leader it did not know), a
        (pre-)vote request from a server outside the latest configuration is ignored (thesis §4.2.3), and
        no message ever makes this method raise.
        """
        self._observe_lease(now)  # time has passed, whatever the message turns out to be
        introduced = False
        if isinstance(message, Heartbeat) and message.members:
            listed = dict(message.members).keys()
            introduced = sender in listed and (self._id in listed or not self._membership.voter)
        if sender == self._id or not (self._membership.known(sender) or introduced):
            self.counters["rejected_unknown_sender"] += 1
            return self._flush()
        if isinstance(message, VoteRequest) and sender not in self._membership.config:
            self.counters["rejected_vote_from_non_member"] += 1
            return self._flush()
        self.counters["messages_received"] += 1
        if self._ff is not None:
            self._ff.heard_from(sender, now)
        self._handle(sender, message, now)
        return self._flush()

    def evidence(self, peer: int, kind: str, now: float) -> Output:
        """The transport found that nothing listens on ``peer``'s address any more: its process is gone.

        Handed to fast failover (see :mod:`raft_election.fastfailover`): a follower of ``peer`` that stands
        for election campaigns soon, and the fast vote requests that waited for this evidence are handled
        again.  Evidence about a member that is not a peer, and all evidence while fast failover is off, is
        counted and ignored.
        """
        self._observe_lease(now)
        if peer == self._id or not self._membership.known(peer):
            self.counters["rejected_evidence_unknown_peer"] += 1
        elif self._ff is None:
            self.counters["evidence_ignored_disabled"] += 1
        else:
            replay = self._ff.evidence(peer, now)
            following = self._role is Role.FOLLOWER and self._leader_id == peer
            self._events.append(DeathEvidence(term=self._term, peer=peer, kind=kind, leader=following))
            if following and self._stands:
                self._election_deadline = self._ff.hasten(peer, kind, now, self._election_deadline)
            for sender, request in replay:
                self._handle(sender, request, now)
        return self._flush()

    def step_down(self, now: float) -> Output:
        """Give up leadership: drop the lease, then tell followers they may elect at once.

        The server keeps standing for election (see :meth:`set_candidate`), but its own election timer
        restarts in full while the followers' restart short, so one of them normally wins.  No-op unless
        leader.
        """
        self._observe_lease(now)
        if self._role is Role.LEADER:
            self._resign(now)
        return self._flush()

    def _resign(self, now: float) -> None:
        term = self._term
        recipients = self._membership.recipients(now)
        self._become_follower(now, term, None, reason="step_down")
        self._last_leader_contact = _NEVER
        for peer in recipients:
            self._send(peer, Resign(term=term))

    def transfer_leadership(self, now: float, target: Optional[int] = None) -> tuple[int, Output]:
        """Hand leadership to ``target`` (or the best peer) with TimeoutNow (thesis §3.10).

        The lease is given up *before* TimeoutNow leaves, and this server steps down at once and for the
        rest of the term, so a delayed TimeoutNow can never let the target's transfer campaign (which
        bypasses stickiness) overlap a lease of ours.  The other peers get a Resign naming the successor,
        so they stop naming this server as their leader.

        Returns:
            The target's id and the output to carry out.

        Raises:
            RaftElectionError: this server is not leader, or ``target`` is not a peer.
            NoTransferTargetError: ``target`` is None and no peer stands for election and answered within
                ``election_timeout_min``.
        """
        self._observe_lease(now)
        if self._role is not Role.LEADER:
            raise RaftElectionError(f"{self._id} cannot transfer leadership: it is {self._role}, not leader")
        if target is None:
            target = self._pick_transfer_target(now)
        elif target not in self._membership.voters():
            raise RaftElectionError(f"transfer target {target!r} is not a peer of {self._id}")
        self._transfer(now, target)
        return target, self._flush()

    def _transfer(self, now: float, target: int) -> None:
        term = self._term
        logger.info("%d transfers leadership of term %d to %d", self._id, term, target)
        self.counters["transfers"] += 1
        recipients = self._membership.recipients(now)
        self._become_follower(now, term, None, reason="transfer")
        self._last_leader_contact = _NEVER
        self._send(target, TimeoutNow(term=term))
        for peer in recipients:
            if peer != target:
                self._send(peer, Resign(term=term, successor=target))

    def add_member(self, node_id: int, address: str, now: float) -> Output:
        """Begin adding ``node_id`` at ``address`` (thesis §4.1, §4.2.1); the leader only.

        If this leader has not yet committed an entry of its own term, it first creates one (a stamp of its
        configuration) and begins the change once that commits.  The new member then has to answer a
        heartbeat round as a non-voting catch-up member; only then does the leader create the entry that
        lists it, which commits once a majority of the new member set stored it (watch
        :attr:`configuration`, :attr:`configuration_committed` and :attr:`membership_change`).  Asking
        again for the same member and address while that is under way, or once it is done, changes
        nothing.

        Raises:
            NotLeaderError: this server does not lead (``leader_id`` says who does, if known).
            MembershipChangeError: another change is under way (one at a time), ``node_id`` is a member at
                another address, or the configuration is full.
            ConfigError: ``address`` is not a valid address or is another member's.
        """
        self._observe_lease(now)
        self._check_change("add", node_id)
        membership = self._membership
        members = membership.config.members
        if members.get(node_id) == address or ("add", node_id, address) in (membership.wanted,
                                                                            membership.learner_change):
            return self._flush()  # already there, or on its way
        if node_id in members:
            raise MembershipChangeError(
                f"member {node_id} is already in the configuration, at {members[node_id]}; remove it first, "
                "or add the new process under a new id")
        if len(members) >= MAX_MEMBERS:
            raise MembershipChangeError(f"the configuration already has {len(members)} members, the most "
                                        f"one configuration can hold ({MAX_MEMBERS})")
        self._check_not_busy()
        Configuration(members={**members, node_id: address})  # raises ConfigError for a bad address
        self._begin_change(("add", node_id, address), now)
        return self._flush()

    def remove_member(self, node_id: int, now: float) -> Output:
        """Begin removing ``node_id`` (thesis §4.1); the leader only.

        As for :meth:`add_member`, a leader without a committed entry of its own term first commits one.
        The leader may remove itself (§4.2.2): it stops counting itself in majorities as soon as the entry
        exists, and hands leadership to a member of the new set (or steps down) once it commits.  Asking to
        remove a member that the latest entry no longer lists changes nothing.

        Raises:
            NotLeaderError: this server does not lead.
            MembershipChangeError: another change is under way, or ``node_id`` is the last member.
        """
        self._observe_lease(now)
        self._check_change("remove", node_id)
        membership = self._membership
        members = membership.config.members
        if node_id not in members or membership.wanted == ("remove", node_id, ""):
            return self._flush()
        if len(members) == 1:
            raise MembershipChangeError(f"{node_id} is the only member; a cluster needs at least one")
        self._check_not_busy()
        self._begin_change(("remove", node_id, ""), now)
        return self._flush()

    def abandon_change(self, node_id: int, now: float) -> Output:
        """Give up a change about ``node_id`` that has not created its entry yet: nothing changes.

        That is, a change still waiting for this leader's first entry of its term, or for the new member to
        answer.  Entries themselves are never taken back.
        """
        self._observe_lease(now)
        membership = self._membership
        if membership.abandon(node_id):
            logger.info("%d gives up the change of member %d before making it", self._id, node_id)
            self.counters["membership_changes_abandoned"] += 1
        return self._flush()

    def _check_change(self, what: str, node_id: int) -> None:
        if not self._configures:
            raise MembershipChangeError(f"cannot {what} member {node_id} through an election group: the "
                                        "default group keeps the configuration every group shares")
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} cannot {what} member {node_id}: it is {self._role}, not leader"
                                 + (f"; {self._leader_id} leads" if self._leader_id is not None else ""),
                                 leader_id=self._leader_id)

    def _check_not_busy(self) -> None:
        """One change at a time (thesis §4.1)."""
        membership = self._membership
        busy = self.membership_change
        if busy is None and (self._stamp_first or membership.is_committed):
            return
        if busy == "stamp" and membership.wanted is None:
            return  # only this leader's first entry is pending: the change waits for it
        change = membership.wanted or membership.learner_change
        what = (f"{change[0]} member {change[1]}" if change is not None
                else f"the change to {membership.config} (not committed yet)")
        raise MembershipChangeError(f"another membership change is under way: {what}; one change at a time "
                                    "(wait for it to finish or time out)")

    def _begin_change(self, change: tuple[str, int, str], now: float) -> None:
        """Make ``change``, or first commit an entry of this term if there is none (thesis §4.1 erratum)."""
        membership = self._membership
        if self._stamp_first and membership.committed[0] != self._term:
            membership.wanted = change
            if membership.config.term != self._term:
                logger.info("%d commits an entry of term %d before changing the configuration", self._id,
                            self._term)
                self._create(dict(membership.config.members), now)
            return
        kind, node_id, address = change
        if kind == "add":
            membership.catch_up(node_id, address)
            logger.info("%d catches up %d at %s before adding it", self._id, node_id, address)
            self._broadcast_heartbeat(now)
        else:
            self._create({member: where for member, where in membership.config.members.items()
                          if member != node_id}, now)

    def follow_configuration(self, entry: Configuration, committed: bool, now: float) -> Output:
        """Use ``entry``, the latest entry the default group holds on this server (election groups only).

        Each server uses its latest entry for every majority (thesis §4.1); the groups of one server all use
        the same one, so a change applies to every group at once.  A leader whose server the entry leaves
        out stops counting itself, as the default group's does (§4.2.2), and steps down once the entry is
        committed in the default group, at once in a group (a group's leader drives no commit); a follower it
        leaves out stops standing.  A follower starts its stickiness window afresh: it grants no vote in the
        group for ``election_timeout_min`` after a change.

        Raises:
            RaftElectionError: this core keeps its own configuration (``configures=True``).
        """
        if self._configures:
            raise RaftElectionError("follow_configuration() is for the core of an election group")
        self._observe_lease(now)
        if self._membership.follow(entry, committed):
            self._configuration_changed(now, parent=None)
            if self._role is not Role.LEADER:
                # A new entry may make this server part of majorities it was not part of, and the group's
                # leader may not have the entry yet: vote for nobody in this group for a lease's length,
                # as if a leader had just spoken (thesis §4.2.3), so no lease of that leader is undercut.
                self._last_leader_contact = max(self._last_leader_contact, now)
        if self._role is Role.LEADER and not self._membership.voter:
            # It drives no commit (the default group does): leave at once (thesis §4.2.2).
            self._resign(now)
        return self._flush()

    # ------------------------------------------------------------------ carried by a GroupSet

    @property
    def carried(self) -> bool:
        """Whether the member's coalesced rounds run this core's steady state (see :meth:`carry`)."""
        return self._carried

    def carry(self) -> None:
        """Hand the steady state of a leader, or of a follower of a known leader, to the member's rounds.

        Election groups (:mod:`raft_election.groups`) exchange one round per member and peer instead of one
        per group.  A carried leader sends no heartbeat rounds of its own: the member's rounds cover it,
        and their acknowledgements reach its lease through :meth:`carried_acks`.  A carried follower runs
        no election timer and no probes: the member watches its leader's rounds, and
        :meth:`carried_contact` keeps its stickiness window current.  :attr:`next_deadline` is infinite
        meanwhile; whoever carries the core must call :meth:`uncarry` before the leader's rounds could stop
        covering it, and bring it up to date (the two methods above) before every other call into it.

        Raises:
            IllegalTransitionError: this core is neither a leader nor a plain follower of a known leader.
        """
        if not (self._role is Role.LEADER or (self._role is Role.FOLLOWER and self._leader_id is not None)):
            raise IllegalTransitionError(f"{self._id} cannot be carried as {self._role} without a leader")
        self._carried = True

    def uncarry(self, now: float) -> None:
        """Run this core's own timers again: a leader's rounds at once, a follower's timer from its contact.

        A follower's election timer restarts from the last time it heard from its leader (Raft §5.2), so
        the followers of a silent leader still time out at spread-out moments.
        """
        if not self._carried:
            return
        self._carried = False
        if self._role is Role.LEADER:
            self._heartbeat_deadline = min(self._heartbeat_deadline, now)
        elif self._last_leader_contact > _NEVER:
            self._reset_election_timer(self._last_leader_contact)
            if self._ff is not None:
                self._ff.leader_heard(self._last_leader_contact)

    def check_quorum(self, now: float) -> Output:
        """A leader leaves office now if fewer than a majority answered within the window (thesis §6.2).

        What the heartbeat timer does at every round; a carried leader's member asks for it at its rounds.
        """
        self._observe_lease(now)
        if self._role is Role.LEADER:
            self._check_quorum(now)
        return self._flush()

    def observe(self, now: float) -> Output:
        """Report a lease that began or ran out by ``now`` (what every call into the core does first)."""
        self._observe_lease(now)
        return self._flush()

    def carried_contact(self, leader: int, at: float) -> None:
        """A carried follower's leader covered it in a member round that arrived at ``at``.

        Counts as hearing from that leader (Raft §5.2; stickiness, thesis §4.2.3), exactly as one of its
        heartbeats arriving then would, had it been sent alone.
        """
        if self._role is Role.FOLLOWER and self._leader_id == leader and at > self._last_leader_contact:
            self._last_leader_contact = at
            if self._ff is not None:
                self._ff.heard_from(leader, at)

    def carried_acks(self, start: float, heard: Mapping[int, float]) -> None:
        """A carried leader: a majority acknowledged a member round covering it, sent at ``start``.

        ``heard`` is when each peer last answered a member round covering it.  The lease rests on the
        latest round a majority acknowledged, whichever message carried it (thesis §6.4.1); check-quorum
        and the choice of a transfer target use the answers too.
        """
        if self._role is Role.LEADER and self._lease is not None:
            self._lease.carried(start, heard)

    def set_order(self, order: Sequence[int], restart: Optional[float] = None) -> None:
        """The members in this group's order of preference, first the preferred leader (placement.py).

        Timing only, never safety: each member's election timeouts start its rank times the spread of
        the timeout later (``election_timeout_max - election_timeout_min``), so that of many groups
        starting or failing over at once each normally has a single candidate; and fast failover staggers
        its campaigns in this order, so a dead leader's groups spread over the survivors.  The default group
        has no order (rank 0 everywhere: plain Raft timing).  With ``restart`` (the time now), a follower
        draws its running election timer afresh with its rank (a core just created).
        """
        self._order = tuple(order)
        rank = order.index(self._id) if self._id in order else 0
        self._rank = rank
        self._rank_delay = rank * (self._timeout_max - self._timeout_min)
        if self._ff is not None:
            self._ff.set_order(order)
        if restart is not None and self._role is Role.FOLLOWER and not self._carried:
            self._reset_election_timer(restart)

    @property
    def rank(self) -> int:
        """This member's place in the group's order (0: the preferred leader, or no order)."""
        return self._rank

    @property
    def order(self) -> tuple[int, ...]:
        """The group's order of preference over the members (see :meth:`set_order`; empty: none)."""
        return self._order

    def peer_stands(self, peer: int) -> bool:
        """A leader: whether ``peer`` stands for election, as its latest answer said (False if unknown)."""
        return self._lease is not None and self._lease.stands(peer)

    def heartbeat_early(self, now: float, within: float) -> Output:
        """Send the next heartbeat round now if it is due in less than ``within`` seconds (a leader only).

        The groups a server leads heartbeat together, so that one datagram per peer carries every group's
        round (see :mod:`raft_election.groups`): when one group's round is due, the others due soon go along
        and keep that cadence from then on.  Sending a round early never shortens a lease (thesis §6.4.1:
        the lease counts from a round's send time).
        """
        self._observe_lease(now)
        if self._role is Role.LEADER and not self._carried and self._heartbeat_deadline - now < within:
            self._heartbeat_deadline = now  # the round is due now: the cadence restarts from it
            self._tick_heartbeat(now)
        return self._flush()

    @property
    def heartbeat_deadline(self) -> float:
        """When the leader's next heartbeat round is due (``-inf`` when not leading)."""
        return self._heartbeat_deadline

    def set_value(self, value: bytes, now: float) -> Output:
        """Publish ``value`` with this server's heartbeats from now on (followers learn it at the next)."""
        self._observe_lease(now)
        self._value = value
        if self._role is Role.LEADER:
            self._leader_value = value
            self._report_value()
        return self._flush()

    def set_candidate(self, candidate: bool, now: float) -> Output:
        """Stand for election or not.  Dropping candidacy abandons a campaign but not a leadership."""
        self._observe_lease(now)
        self._candidate = candidate
        if not candidate and self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            self._become_follower(now, self._term, None, reason="candidacy_dropped")
        return self._flush()

    def campaign(self, now: float) -> Output:
        """Stand now instead of at the next election timeout (used when a lock is wanted).

        Starts pre-vote (or, with pre-vote off, an election) unless this server leads or does not stand.
        Inside its own stickiness window it instead moves its election timer to the end of that window
        (see :meth:`_postpone_inside_window`), unless fast failover names a dead leader to replace.
        """
        self._observe_lease(now)
        if self._role is Role.LEADER or not self._stands:
            return self._flush()
        suspect = self._suspect(now)
        if not suspect and self._postpone_inside_window(now):
            return self._flush()
        self._stand(now, suspect)
        return self._flush()

    def stop(self, now: float) -> Output:
        """Report the end of a leadership because the server is stopping (no messages are sent)."""
        self._observe_lease(now)
        if self._role is Role.LEADER:
            self._become_follower(now, self._term, None, reason="stopped")
        return self._flush()

    def _handle(self, sender: int, message: Message, now: float) -> None:
        """Handle one message from a peer in three phases (etcd's ``Step``): terms, vote requests, role."""
        lifted = False
        if isinstance(message, VoteRequest) and self._ff is not None:
            lifted = self._ff.lifts_stickiness(message, now, term=self._term, leader_id=self._leader_id,
                                               leading=self._role is Role.LEADER)
            if message.term >= self._term:  # one that phase 1 answers as stale needs no evidence
                self._ff.await_evidence(sender, message, now)
        if not self._handle_term(sender, message, now, lifted):
            return
        if isinstance(message, VoteRequest):
            self._handle_vote_request(sender, message, now, lifted)
        else:
            self._steps[self._role][type(message)](sender, message, now)

    # ------------------------------------------------------------------ phase 1: terms

    def _handle_term(self, sender: int, message: Message, now: float, lifted: bool) -> bool:
        """Apply the term rules common to every message; return whether to handle it further (Raft §5.1).

        A higher term makes this server adopt it and follow, except pre-vote traffic, which never changes
        the receiver's term (thesis §9.6), and sticky vote requests (see :meth:`_sticky`), which are ignored
        without adopting their term (thesis §4.2.3).  A lower-term request is answered with the current term
        so its stale sender catches up; a lower-term response is dropped.
        """
        term = message.term
        if term > self._term:
            if isinstance(message, VoteRequest):
                if message.pre_vote:
                    return True
                if self._sticky(sender, message, now, lifted):
                    self.counters["votes_ignored_sticky"] += 1
                    logger.debug("%d ignores vote request from %d for term %d: heard from a leader recently",
                                 self._id, sender, term)
                    return False
                self._become_follower(now, term, None, reason="higher_term")
                return True
            if isinstance(message, VoteResponse) and message.pre_vote and message.granted:
                return True  # echoes the term we proposed; we have not raised ours
            leader = sender if isinstance(message, (Heartbeat, TimeoutNow)) else None
            self._become_follower(now, term, leader, reason="higher_term")
            return True
        if term < self._term:
            self.counters["rejected_stale_term"] += 1
            if isinstance(message, Heartbeat):
                self._send(sender, self._heartbeat_response(message.round))
            elif isinstance(message, VoteRequest):
                self._send(sender, VoteResponse(term=self._term, round=message.round, granted=False,
                                                pre_vote=message.pre_vote, candidate=self._stands,
                                                config_term=self._membership.config.term,
                                                config_index=self._membership.config.index))
            return False
        return True

    # ------------------------------------------------------------------ leader stickiness (thesis §4.2.3)

    def _in_lease_window(self, now: float) -> bool:
        """Whether a current leader may hold a lease that counts on this server (thesis §4.2.3, §6.4.1).

        The window is ``election_timeout_min`` from the last time this server heard from a leader, granted
        a vote, or started; a leader is always inside its own.
        """
        return self._role is Role.LEADER or now - self._last_leader_contact < self._timeout_min

    def _sticky(self, sender: int, request: VoteRequest, now: float, lifted: bool) -> bool:
        """Whether to refuse (or, for a higher term, ignore) ``request`` because a leader may be alive.

        Inside the lease window a (pre-)vote would let a candidate undercut the lease of a leader we
        acknowledged, so it is refused, except: a leadership transfer (the old leader gave up its lease
        first, thesis §3.10); a repeat of the request we granted in this term (Raft §5.2: votedFor is
        candidateId); and a fast-failover request whose suspect our own evidence shows dead (``lifted``).
        """
        if request.transfer or lifted:
            return False
        if (not request.pre_vote and request.term == self._term and self._voted_for == sender
                and self._role is Role.FOLLOWER):
            return False
        return self._in_lease_window(now)

    def _postpone_inside_window(self, now: float) -> bool:
        """Inside our own stickiness window, move the election timer to its end and return True.

        Inside the window (we heard from a leader, granted a vote, or just started) our own vote may be part
        of a live leader's lease, so we must not vote for ourselves yet either (thesis §6.4.1).  We campaign
        as soon as the window closes instead of at the full timeout.
        """
        window_end = self._last_leader_contact + self._timeout_min
        if now >= window_end:
            return False
        at = window_end + self._rng.uniform(0.0, self._heartbeat_interval)
        # An election timer that has fired moves on to the window's end; one still running only comes earlier.
        self._election_deadline = at if self._election_deadline <= now else min(self._election_deadline, at)
        return True

    # ------------------------------------------------------------------ phase 2: vote requests

    def _handle_vote_request(self, sender: int, request: VoteRequest, now: float, lifted: bool) -> None:
        """Grant or refuse a (pre-)vote (Raft §5.2, §5.4.1; thesis §4.1, §9.6).

        One vote per term, none while sticky, none to a candidate whose configuration entry is older than
        ours.
        """
        sticky = self._sticky(sender, request, now, lifted)
        current = self._membership.up_to_date((request.config_term, request.config_index))
        if not current:
            self.counters["votes_refused_older_configuration"] += 1
        if request.pre_vote:
            # Would we vote for it in the term it proposes?  We record nothing (thesis §9.6).
            granted = request.term > self._term and not sticky and current
            self.counters["pre_votes_granted" if granted else "pre_votes_refused"] += 1
        else:
            granted = (not sticky and current and self._role is not Role.LEADER
                       and self._voted_for in (None, sender))
            if granted:
                self._vote(sender, now)
            self.counters["votes_granted" if granted else "votes_refused"] += 1
        if granted and lifted:
            assert self._ff is not None
            self._ff.lifted_grant()
            if request.pre_vote:  # let this fast campaign run rather than start a rival one
                self._reset_election_timer(now)
        backed = granted and self._ff is not None and self._ff.backs(request, now)
        config = self._membership.config
        self._send(sender, VoteResponse(term=request.term if granted and request.pre_vote else self._term,
                                        round=request.round, granted=granted, pre_vote=request.pre_vote,
                                        candidate=self._stands, evidence=backed, config_term=config.term,
                                        config_index=config.index,
                                        members=() if current or not self._configures
                                        else config.as_pairs()))

    def _vote(self, candidate: int, now: float) -> None:
        """Vote for ``candidate`` in the current term; the vote is persisted before the answer leaves."""
        if self._role is not Role.FOLLOWER:
            self._become_follower(now, self._term, None, reason="voted")
        self._voted_for = candidate
        self._events.append(VoteGranted(term=self._term, candidate=candidate))
        # A granted vote may become part of the winner's lease: count it as hearing from a leader.
        self._last_leader_contact = now
        self._reset_election_timer(now)
        logger.debug("%d votes for %d in term %d", self._id, candidate, self._term)

    # ------------------------------------------------------------------ phase 3: followers and candidates

    def _follow_heartbeat(self, sender: int, message: Heartbeat, now: float) -> None:
        """The term's leader speaks: follow it, reset the election timer and acknowledge (Raft §5.2)."""
        if self._resigned == (sender, self._term):
            self.counters["rejected_stale_heartbeat"] += 1  # overtaken by its sender's Resign
            return
        if self._role is not Role.FOLLOWER or self._leader_id != sender:
            self._become_follower(now, self._term, sender, reason="heartbeat")
        self._last_leader_contact = now
        self._reset_election_timer(now)
        if self._ff is not None:
            self._ff.leader_heard(now)
        self._leader_value = message.value
        self._report_value()
        self._replicate(message, now)
        self._send(sender, self._heartbeat_response(message.round))

    def _replicate(self, message: Heartbeat, now: float) -> None:
        """Take the configuration entry the leader sent, and learn whether its entry is committed (§4.1)."""
        if not self._configures:
            return
        membership = self._membership
        entry = self._carried_entry(message)
        if entry is not None and membership.adopt(entry, self._term):
            self._configuration_changed(now, parent=None)
        if message.committed and membership.learn_committed((message.config_term, message.config_index)):
            self._report_configuration(now, parent=None)

    def _carried_entry(self, message: Union[Heartbeat, VoteResponse]) -> Optional[Configuration]:
        """The configuration entry ``message`` carries whole, or None: none carried, or an invalid one.

        An invalid entry (two members at one address, say) comes from a broken or hostile sender: it is
        counted and ignored.
        """
        if not message.members:
            return None
        try:
            return Configuration(term=message.config_term, index=message.config_index,
                                 members=dict(message.members))
        except ConfigError as exc:
            self.counters["rejected_bad_configuration"] += 1
            logger.warning("%d ignores the configuration entry of a %s: %s", self._id,
                           type(message).__name__, exc)
            return None

    def _heartbeat_response(self, round_: int) -> HeartbeatResponse:
        config = self._membership.config
        return HeartbeatResponse(term=self._term, round=round_, candidate=self._stands,
                                 config_term=config.term, config_index=config.index)

    def _learn_from_refusal(self, message: VoteResponse, now: float) -> bool:
        """Take the newer configuration entry a voter refused us with; True if ours changed.

        A candidate that missed a change can otherwise never win: every voter that stored the change
        refuses it (Raft §5.4.1), and the leader that would have sent it the entry may be gone.  The entry
        was created by a leader, and its version is greater than ours, so it descends from every entry
        committed that we hold (leader completeness); holding it is as safe as having received it late
        from its leader.
        """
        if not self._configures:
            return False
        entry = self._carried_entry(message)
        if entry is None or entry.version <= self._membership.config.version:
            return False
        self._membership.take_newer(entry)
        self.counters["configurations_learned_from_voters"] += 1
        logger.info("%d learned configuration %s from a voter that refused it", self._id, entry)
        self._configuration_changed(now, parent=None)
        return True

    def _count_vote(self, sender: int, message: VoteResponse, now: float) -> None:
        """A (pre-)candidate counts a grant of its current campaign; anything else is stale.

        A refusal that carries a newer configuration entry is learned from (see
        :meth:`_learn_from_refusal`); a pre-candidate then asks again with it at once (pre-votes change
        no term), and a server the entry leaves out stops campaigning.
        """
        campaign = self._campaign
        if self._learn_from_refusal(message, now):
            if not self._stands:
                self._become_follower(now, self._term, None, reason="not_a_member")
            elif self._role is Role.PRE_CANDIDATE:
                self._become_pre_candidate(now, campaign.request.suspect if campaign is not None else 0)
            return
        if campaign is None or not campaign.answers(message, pre_vote=self._role is Role.PRE_CANDIDATE):
            self._stale_vote_response(sender, message, now)
        elif message.granted:
            if self._pace is not None and campaign.first_send and sender not in campaign.granted:
                self._pace.sample(now - campaign.started)
            counts = self._ff is None or self._ff.counts(campaign.request, message)
            if campaign.add(sender, message, counts=counts):
                self._maybe_win(now)
            else:
                self.counters["rejected_duplicate_response"] += 1
        else:
            if self._pace is not None and campaign.first_send and sender not in campaign.refused:
                self._pace.sample(now - campaign.started)
            campaign.refuse(sender)
            if self._gives_up(campaign) and not campaign.can_win(self._membership.config.members,
                                                                  self._membership.quorum):
                self._give_up(now)

    def _gives_up(self, campaign: Campaign) -> bool:
        """Whether ``campaign`` ends as soon as it cannot win, and asks no one again who refused it.

        A named group's plain campaign does (many groups start at once: a lost one keeps its place in the
        member's admission limit and its repeats load every member, see groups.py).  The default group's
        and every fast or transfer campaign keep asking until their timer: a voter that refused them may
        grant a moment later (its stickiness ends, or its own death evidence arrives).
        """
        return self._group and not campaign.request.suspect and not campaign.request.transfer

    def _give_up(self, now: float) -> None:
        """A majority refused this campaign: back to follower in the same term, the election timer kept.

        Leaving candidacy without a leader is always safe (Raft §5.2 lets a candidate wait out its timer
        instead; a candidate keeps the vote it gave itself, so it grants no other in this term).  It
        campaigns again when the timer it drew at the start fires (with its rank delay: retrying sooner
        brought back the storm of a thousand groups starting at once, all of them failing).
        """
        deadline = self._election_deadline
        self.counters["campaigns_given_up"] += 1
        logger.debug("%d gives up its campaign at term %d: refused by a majority", self._id, self._term)
        self._become_follower(now, self._term, None, reason="campaign_lost")
        self._election_deadline = deadline

    def _campaign_on_timeout_now(self, sender: int, message: TimeoutNow, now: float) -> None:
        """Campaign at once, skipping pre-vote and stickiness: the leader gave up its lease (thesis §3.10)."""
        if not self._stands:
            self._refuse_timeout_now(sender, message, now)
            return
        logger.info("%d got TimeoutNow from %d in term %d", self._id, sender, self._term)
        self._become_candidate(now, transfer=True)

    def _leader_resigned(self, sender: int, message: Resign, now: float) -> None:
        """The term's leader gave up its lease.

        With a successor (a leadership transfer is under way) just forget the old leader: the successor's
        campaign bypasses stickiness anyway, and staying sticky keeps others from competing with it.
        Without one, no lease can count on us any more, so drop stickiness and elect soon.
        """
        if self._leader_id not in (None, sender):
            return
        # It will not lead again in this term: a heartbeat of its that arrives later was sent earlier.
        self._resigned = (sender, self._term)
        if message.successor:
            self._set_leader(None)
            return
        self._become_follower(now, self._term, None, reason="resign")
        self._last_leader_contact = _NEVER
        # Elect soon, but spread the followers out so they do not split the vote.
        self._election_deadline = (now + self._rng.uniform(0.0, self._timeout_max - self._timeout_min)
                                   + self._rank_delay)

    def _stale_heartbeat_response(self, sender: int, message: HeartbeatResponse, now: float) -> None:
        self.counters["rejected_stale_response"] += 1

    def _stale_vote_response(self, sender: int, message: VoteResponse, now: float) -> None:
        """A vote answer for no campaign of ours: a refusal's newer entry is learned, except by a leader.

        A leader never takes another server's entry (Raft §5.3, Leader Append-Only): the refusing voter
        held an entry that never committed (a committed one would have kept this leader from winning), and
        takes this leader's entry with its next heartbeat, as followers take their leader's (Raft §5.3).
        """
        if message.granted or self._role is Role.LEADER:
            self.counters["rejected_stale_response"] += 1
        else:
            self._learn_from_refusal(message, now)

    # ------------------------------------------------------------------ phase 3: the leader

    def _acknowledged(self, sender: int, message: HeartbeatResponse, now: float) -> None:
        """A follower answered a heartbeat round: it counts for check-quorum and perhaps the lease.

        A group's leader counts no answer from a follower whose configuration entry is newer than its own:
        its server missed a change that follower took, and majorities of the newer member set, which may
        be electing another leader of the group, need not include this leader's majority.
        """
        assert self._lease is not None
        newer = (message.config_term, message.config_index) > self._membership.config.version
        if not self._configures and newer:
            self.counters["acks_ignored_newer_configuration"] += 1
            self._observe_lease(now)
            return
        if not self._lease.acknowledged(sender, message.round, message.candidate, now):
            self.counters["rejected_stale_response"] += 1
            self._observe_lease(now)
            return
        self._observe_lease(now)
        membership = self._membership
        if not self._configures:
            return
        if membership.acknowledged(sender, (message.config_term, message.config_index)):
            self._entry_committed(now)
        elif membership.learner is not None and membership.learner[0] == sender:
            # The new member answered its catch-up round: create the entry that lists it (§4.2.1).
            node_id, address = membership.learner
            membership.forget_learner()
            self._create({**membership.config.members, node_id: address}, now)

    def _second_leader(self, sender: int, message: Heartbeat, now: float) -> None:
        """A heartbeat of our own term from another: a misconfigured peer (two members with one id).

        Two leaders in one term would break election safety, so never act on it.
        """
        self.counters["rejected_duplicate_leader"] += 1
        logger.error("%d is leader of term %d but got a heartbeat from %d for the same term",
                     self._id, self._term, sender)

    def _refuse_timeout_now(self, sender: int, message: TimeoutNow, now: float) -> None:
        self.counters["rejected_timeout_now"] += 1

    def _ignore_resign(self, sender: int, message: Resign, now: float) -> None:
        """A leader has no leader of its term to forget."""

    # ------------------------------------------------------------------ timers

    def _tick_election(self, now: float) -> None:
        """Followers and candidates: the election timer (Raft §5.2), else a campaign's resends or a probe."""
        if now >= self._election_deadline:
            self._election_timeout(now)
        elif self._campaign is not None:
            if now >= self._campaign.resend_at:
                self._resend_vote_requests(now)
        elif self._ff is not None and self._role is Role.FOLLOWER:
            self._ff.tick(self._leader_id, now)

    def _tick_heartbeat(self, now: float) -> None:
        """The leader: every heartbeat interval, check-quorum (thesis §6.2) and then a heartbeat round."""
        if now >= self._heartbeat_deadline:
            self._check_quorum(now)
            if self._role is Role.LEADER:
                self._broadcast_heartbeat(now)

    def _reset_election_timer(self, now: float, *, ranked: bool = True) -> None:
        """Draw a fresh randomized election timeout (Raft §5.2), after this member's turn (see set_order)."""
        self._election_deadline = (now + self._rng.uniform(self._timeout_min, self._timeout_max)
                                   + (self._rank_delay if ranked else 0.0))

    def _election_timeout(self, now: float) -> None:
        suspect = self._suspect(now)
        if not self._stands:
            if self._leader_id is not None:
                self._set_leader(None)
            self._reset_election_timer(now)
        elif not suspect and self._postpone_inside_window(now):
            # Only fast failover moves the timer inside the window; its evidence has since been voided.
            self.counters["fast_failovers_cancelled"] += 1
        else:
            self._stand(now, suspect)

    def suspects(self, now: float) -> int:
        """The dead leader a campaign started now would replace by fast failover, or 0 (a normal one)."""
        return self._suspect(now)

    def _suspect(self, now: float) -> int:
        """The dead leader a campaign started now would replace (fast failover), or 0."""
        if self._ff is None or self._role is not Role.FOLLOWER:
            return 0
        return self._ff.suspect(self._leader_id, now)

    # ------------------------------------------------------------------ campaigns

    def _stand(self, now: float, suspect: int) -> None:
        """Start pre-vote (or, with pre-vote off, an election); ``suspect`` is a dead leader or 0."""
        if self._pre_vote:
            self._become_pre_candidate(now, suspect)
        else:
            self._become_candidate(now, transfer=False, suspect=suspect)

    def _become_pre_candidate(self, now: float, suspect: int) -> None:
        """Ask whether we would win term + 1, without raising our term (thesis §9.6)."""
        self._transition(Role.PRE_CANDIDATE)
        self._set_leader(None)
        self.counters["pre_votes_started"] += 1
        logger.debug("%d became pre-candidate at term %d", self._id, self._term)
        self._ask_for_votes(now, term=self._term + 1, pre_vote=True, transfer=False, suspect=suspect)

    def _become_candidate(self, now: float, *, transfer: bool, suspect: int = 0) -> None:
        """Raise the term, vote for ourselves and ask for votes (Raft §5.2)."""
        self._transition(Role.CANDIDATE)
        self._term += 1
        self._voted_for = self._id
        self._events.append(TermChanged(term=self._term))
        self._events.append(VoteGranted(term=self._term, candidate=self._id))
        self._set_leader(None)
        self.counters["elections_started"] += 1
        logger.info("%d became candidate at term %d%s", self._id, self._term,
                    " (leadership transfer)" if transfer else
                    f" (fast failover: {suspect} is gone)" if suspect else "")
        self._ask_for_votes(now, term=self._term, pre_vote=False, transfer=transfer, suspect=suspect)

    def _ask_for_votes(self, now: float, *, term: int, pre_vote: bool, transfer: bool, suspect: int) -> None:
        """Start a campaign: ask every peer, and again every heartbeat interval those that did not grant."""
        round_ = self._next_round()
        # A fast or transfer campaign that fails retries after a plain timeout: the members before this one
        # in the group's order had their turn already (their rank delay is for a leader that went silent).
        self._reset_election_timer(now, ranked=not (suspect or transfer))
        config = self._membership.config
        request = VoteRequest(term=term, round=round_, pre_vote=pre_vote, transfer=transfer, suspect=suspect,
                              config_term=config.term, config_index=config.index)
        # A named group's plain campaign waits for the measured round trip before asking again (see
        # ResendPace); its fast campaign at least GROUP_FAST_RESEND intervals (see there); a transfer
        # campaign, and the default group's, ask again after an interval.
        resend = self._heartbeat_interval
        if self._pace is not None and not transfer:
            resend = self._pace.interval
            if suspect:
                resend = max(resend, GROUP_FAST_RESEND * self._heartbeat_interval)
        self._campaign = Campaign(self._id, request, now, resend, backoff=self._group)
        if self._ff is not None:
            self._ff.campaign_started(request)
        for peer in self._asked(request):
            self._send(peer, request)
        self._maybe_win(now)

    def _asked(self, request: VoteRequest) -> list[int]:
        """The peers a campaign asks: every voter but, in a fast campaign, the dead leader it names.

        The suspect's process is gone (our evidence says so): a request to it, and every repeat of it, is
        work for nothing, on a machine that a failover of many groups keeps busy already.
        """
        return [peer for peer in sorted(self._membership.voters()) if peer != request.suspect]

    def _resend_vote_requests(self, now: float) -> None:
        """Repeat this campaign's request to the peers whose grant has not counted (Raft §5.1: retry RPCs).

        A request or its answer lost on the way (a datagram dropped, a connection still being made) would
        otherwise cost a whole election timeout and a new term.  The repeat carries the same term and round,
        so a voter answers it as it answered the first (a vote already granted to us is granted again) and
        the lease of a win still starts when the campaign did, before any voter's grant.
        """
        campaign = self._campaign
        assert campaign is not None
        for peer in campaign.repeat_to(self._asked(campaign.request), now,
                                       skip_refused=self._gives_up(campaign)):
            self._send(peer, campaign.request)
            self.counters["vote_requests_resent"] += 1

    def _maybe_win(self, now: float) -> None:
        """Win with a strict majority, in the latest configuration, of the grants that count (Raft §5.2)."""
        campaign = self._campaign
        assert campaign is not None
        if len(campaign.counted & self._membership.config.members.keys()) < self._membership.quorum:
            return
        if self._role is Role.PRE_CANDIDATE:
            self._become_candidate(now, transfer=False, suspect=campaign.request.suspect)
        elif self._role is Role.CANDIDATE:
            self._become_leader(now)

    # ------------------------------------------------------------------ leader duties

    def _become_leader(self, now: float) -> None:
        """Take office, with the winning vote round as the first lease round (thesis §6.4.1).

        Every vote granted in that round reset its voter's stickiness no earlier than the campaign started.
        Votes that took longer than a lease leave nothing of it: the new leader takes office without a
        lease, heartbeats at once, and holds its first lease when a majority acknowledges one of its rounds
        (throwing the win away instead would cost a new term, whose votes a loaded cluster answers as
        slowly).
        """
        self._transition(Role.LEADER)
        campaign = self._campaign
        assert campaign is not None
        membership = self._membership
        self._lease = Lease(quorum=membership.quorum, members=membership.voters(), counts_self=True,
                            duration=self._lease_duration, window=self._timeout_min,
                            quorum_window=self._quorum_window, won_round=campaign.request.round,
                            started=campaign.started, voters=campaign.voters(), now=now)
        self._fast_win = campaign.request.suspect != 0  # it replaced a dead leader (fast failover)
        self._campaign = None
        self.counters["became_leader"] += 1
        if self._fast_win:
            self.counters["fast_elections_won"] += 1
        if not self._lease.late:
            logger.info("%d became leader at term %d%s", self._id, self._term,
                        " (fast failover)" if self._fast_win else "")
        else:
            self.counters["wins_without_lease"] += 1
            logger.info("%d became leader at term %d without a lease: its votes took %.3f s, longer than "
                        "the %.3f s lease", self._id, self._term, now - campaign.started,
                        self._lease_duration)
        self._observe_lease(now)
        self._set_leader(self._id)
        membership.took_office(self._term)
        if self._configures and self._stamp_first and not membership.is_committed:
            # The entry it inherited may never have committed (its creator died, or handed over as it
            # committed): a leader commits an earlier term's entry only through one of its own (Raft
            # §5.4.2), so it creates that entry now, the same members at the next index, like Raft's no-op
            # at the start of a term (thesis §6.4).  A change asked for meanwhile waits for it.
            self._create(dict(membership.config.members), now)
        else:
            self._broadcast_heartbeat(now)

    # ------------------------------------------------------------------ membership: the leader

    def _create(self, members: Mapping[int, str], now: float) -> None:
        """Make the entry of this term that lists ``members`` the latest, and send it (thesis §4.1).

        Its lease and majorities follow the new entry at once (each server uses its latest entry); the
        members of the old and the new set all get it with the next heartbeat round, sent now.
        """
        membership = self._membership
        parent = membership.config
        entry = parent.child(self._term, members)
        committed = membership.create(entry, now)
        self.counters["configurations_created"] += 1
        logger.info("%d created configuration %s", self._id, entry)
        self._configuration_changed(now, parent=parent.version)
        if committed:
            self._entry_committed(now)
        if self._role is Role.LEADER:
            self._broadcast_heartbeat(now)

    def _configuration_changed(self, now: float, parent: Optional[Version]) -> None:
        """The latest entry changed (created with ``parent``, or taken from a leader): use it from now on."""
        membership = self._membership
        config = membership.config
        if self._ff is not None:
            self._ff.set_members(config.members)
        if self._lease is not None:
            self._lease.reconfigure(quorum=membership.quorum, members=membership.voters(),
                                    counts_self=membership.voter)
            self._observe_lease(now)
        self._report_configuration(now, parent)

    def _report_configuration(self, now: float, parent: Optional[Version]) -> None:
        self._events.append(MembershipChanged(term=self._term, at=now, configuration=self._membership.config,
                                              committed=self._membership.is_committed, parent=parent))

    def _entry_committed(self, now: float) -> None:
        """A majority of its members stored the latest entry: report it, and hand over if we left the set."""
        membership = self._membership
        membership.committed_at(now, linger=self._timeout_max)
        logger.info("%d: configuration %s is committed", self._id, membership.config)
        self._report_configuration(now, parent=None)
        if self._role is not Role.LEADER:
            return
        if not membership.voter:
            # Thesis §4.2.2: a leader that removed itself steps aside once the removal is committed.
            target = self._lease.transfer_target(now) if self._lease is not None else None
            if target is not None:
                self._transfer(now, target)
            else:
                self._resign(now)
        elif membership.wanted is not None:
            # A change waited for this leader's first entry (its stamp); that entry is the one committed.
            change, membership.wanted = membership.wanted, None
            self._begin_change(change, now)

    def _broadcast_heartbeat(self, now: float) -> None:
        assert self._lease is not None
        round_ = self._next_round()
        self._lease.sent(round_, now)
        # Keep the cadence: a tick that came late (the timer thread's wake-up delay) must not push every
        # later round back too; after a longer stall the rounds start afresh from now.  An extra round
        # between two ticks (a membership change sends its entry at once) leaves the cadence alone: moving
        # the deadline for it would delay the next regular round past the lease.
        if now >= self._heartbeat_deadline:
            due = self._heartbeat_deadline + self._heartbeat_interval
            self._heartbeat_deadline = due if now < due else now + self._heartbeat_interval
        membership = self._membership
        config = membership.config
        plain = Heartbeat(term=self._term, round=round_, value=self._value, config_term=config.term,
                          config_index=config.index, committed=membership.is_committed)
        full = attrs.evolve(plain, members=config.as_pairs())
        for peer in membership.recipients(now):
            self._send(peer, full if self._configures and membership.needs_entry(peer) else plain)
        self._observe_lease(now)

    def _check_quorum(self, now: float) -> None:
        """Leave office if fewer than a majority answered within ``election_timeout_max`` (thesis §6.2).

        Check-quorum is not what keeps leases apart (the lease does that, and it lapses on its own); it
        frees an office that a cut-off or failing leader can no longer use, so that its followers stop
        being sticky and the cluster elects a leader that can.  The window is the time a follower may
        itself wait before it campaigns: a follower that heard nothing for ``election_timeout_max`` has
        certainly timed out, so a leader that heard from no majority for that long has lost the cluster
        (with pre-vote the majority is electing someone else), while a shorter silence may be one slow round
        trip on a loaded host, which the leader rides out in office, without a lease, instead of forcing an
        election.
        """
        assert self._lease is not None
        heard = self._lease.heard(now)
        if heard < self._membership.quorum:
            logger.info("%d steps down in term %d: heard from %d of %d within %.3f s", self._id, self._term,
                        heard, self._membership.quorum, self._quorum_window)
            self._become_follower(now, self._term, None, reason="check_quorum")

    def _observe_lease(self, now: float) -> None:
        """Report a leader's lease beginning or running out since the last call (office stays the same).

        Called on every entry into the core, before anything else happens, so a lease that ran out
        between two calls is reported before whatever the call does; and again wherever a round was sent
        or acknowledged, so a lease that began is reported at once.
        """
        lease = self._lease
        if self._role is not Role.LEADER or lease is None:
            return
        began = lease.observe(now)
        if began is None:
            return
        if not began:
            self.counters["lease_gaps"] += 1
            logger.info("%d lost its lease in term %d at %.6f; it stays leader without one", self._id,
                        self._term, lease.expiry)
            self._events.append(LeaseLost(term=self._term, at=now, lease_end=lease.expiry))
            return
        self._leases_begun += 1
        if lease.begun == 1:
            if lease.late:
                self._unleased += now - lease.unheld_since
            self._events.append(BecameLeader(term=self._term, at=now, fast=self._fast_win, late=lease.late))
            return
        self.counters["leases_regained"] += 1
        self._unleased += now - lease.unheld_since
        logger.info("%d holds its lease again in term %d after %.6f s", self._id, self._term,
                    now - lease.unheld_since)
        self._events.append(LeaseRegained(term=self._term, at=now))

    def _pick_transfer_target(self, now: float) -> int:
        """The candidate peer heard from most recently within ``election_timeout_min``."""
        assert self._lease is not None
        target = self._lease.transfer_target(now)
        if target is None:
            raise NoTransferTargetError(
                f"{self._id} has no peer that stands for election and answered within "
                f"{self._timeout_min} s to transfer leadership to")
        return target

    # ------------------------------------------------------------------ role changes

    def _transition(self, role: Role) -> None:
        if role not in _TRANSITIONS[self._role]:
            raise IllegalTransitionError(
                f"{self._id} cannot become {role} from {self._role} at term {self._term}")
        if role is not self._role:
            self._role = role
            self._events.append(RoleChanged(role=role, term=self._term))

    def _become_follower(self, now: float, term: int, leader_id: Optional[int], *, reason: str) -> None:
        was_leader = self._role is Role.LEADER
        if was_leader:
            lease = self._lease
            assert lease is not None
            if not lease.held:
                self._unleased += max(0.0, now - lease.unheld_since)
            self._events.append(LostLeadership(term=self._term, at=now, lease_end=min(now, lease.expiry),
                                               reason=reason, had_lease=lease.held))
            self.counters[f"step_downs_{reason}"] += 1
            self._heartbeat_deadline = _NEVER
            self._lease = None
            self._membership.left_office()
        if term > self._term:
            self._term = term
            self._voted_for = None
            self._events.append(TermChanged(term=term))
        self._transition(Role.FOLLOWER)
        self._campaign = None
        self._set_leader(leader_id)
        self._reset_election_timer(now)
        if was_leader:
            logger.info("%d became follower at term %d (%s)", self._id, self._term, reason)

    def _set_leader(self, leader_id: Optional[int]) -> None:
        """Record the known leader; a new leadership (another leader, or a new term) is an event."""
        if leader_id != self._leader_id or (leader_id is not None and self._leader_term != self._term):
            self._leader_id = leader_id
            self._leader_term = self._term
            self._leader_value = self._value if leader_id == self._id else None
            self._events.append(LeaderChanged(leader_id=leader_id, term=self._term))
            self._report_value()

    def _report_value(self) -> None:
        """Report the known leader and its value when they changed (not a leader whose value is unheard)."""
        current = (self._leader_id, self._leader_value)
        if current != self._reported_value and (self._leader_id is None or self._leader_value is not None):
            self._reported_value = current
            self._events.append(LeaderValue(leader_id=self._leader_id, term=self._term,
                                            value=self._leader_value))

    # ------------------------------------------------------------------ output

    def _next_round(self) -> int:
        self._round = (self._round + 1) & MAX_ROUND
        return self._round

    def _send(self, to: int, message: Message) -> None:
        self._outbox.append(Outgoing(to=to, message=message))

    def _flush(self) -> Output:
        hard_state = None
        config = self._durable_config
        persisted = self._persisted
        if (self._term != persisted.term or self._voted_for != persisted.voted_for
                or config is not persisted.config):
            hard_state = HardState(term=self._term, voted_for=self._voted_for, config=config)
            self._persisted = hard_state
        addresses = self._membership.addresses()
        peers = None
        if addresses != self._addresses:
            self._addresses = peers = addresses
        probes = self._ff.take_probes() if self._ff is not None else ()
        output = Output(hard_state=hard_state, messages=tuple(self._outbox), events=tuple(self._events),
                        probes=probes, peers=peers)
        self._outbox.clear()
        self._events.clear()
        return output
