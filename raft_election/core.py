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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from raft_election.campaign import Campaign
from raft_election.errors import IllegalTransitionError, NoTransferTargetError, RaftElectionError
from raft_election.events import (
    BecameLeader,
    DeathEvidence,
    Event,
    LeaderChanged,
    LeaderValue,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    RoleChanged,
    TermChanged,
    VoteGranted,
)
from raft_election.fastfailover import FastFailover
from raft_election.hardstate import HardState
from raft_election.lease import Lease
from raft_election.messages import (
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
    """

    def __init__(self, config: RaftConfig, hard_state: HardState, now: float, rng: random.Random, *,
                 value: bytes = b"") -> None:
        self._id = config.node_id
        self._peers: tuple[int, ...] = tuple(config.peer_ids)
        self._quorum = config.quorum
        self._timeout_min = config.election_timeout_min
        self._timeout_max = config.election_timeout_max
        self._heartbeat_interval = config.heartbeat_interval
        self._lease_duration = config.election_timeout_min * (1.0 - config.max_clock_drift)
        self._quorum_window = config.election_timeout_max
        self._pre_vote = config.pre_vote
        self._rng = rng
        #: Decisions taken, by name (``votes_granted``, ``rejected_stale_term``, ...).
        self.counters: collections.Counter[str] = collections.Counter()
        self._ff = FastFailover(node_id=self._id, members=config.members,
                                heartbeat_interval=self._heartbeat_interval,
                                election_timeout_max=self._timeout_max,
                                counters=self.counters) if config.fast_failover else None

        self._term = hard_state.term
        self._voted_for = hard_state.voted_for
        self._persisted = hard_state
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
        self._reset_election_timer(now)
        self._round = rng.getrandbits(32)
        self._campaign: Optional[Campaign] = None

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
        """Whether this server stands for election."""
        return self._candidate

    @property
    def hard_state(self) -> HardState:
        """The state that must be durable before messages depending on it leave."""
        return HardState(term=self._term, voted_for=self._voted_for)

    @property
    def next_deadline(self) -> float:
        """The time at which the core wants :meth:`tick` called next."""
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

        Network input is untrusted: a sender that is not a configured peer is counted and ignored, and no
        message ever makes this method raise.
        """
        self._observe_lease(now)  # time has passed, whatever the message turns out to be
        if sender not in self._peers:
            self.counters["rejected_unknown_sender"] += 1
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
        if peer not in self._peers:
            self.counters["rejected_evidence_unknown_peer"] += 1
        elif self._ff is None:
            self.counters["evidence_ignored_disabled"] += 1
        else:
            replay = self._ff.evidence(peer, now)
            following = self._role is Role.FOLLOWER and self._leader_id == peer
            self._events.append(DeathEvidence(term=self._term, peer=peer, kind=kind, leader=following))
            if following and self._candidate:
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
            term = self._term
            self._become_follower(now, term, None, reason="step_down")
            self._last_leader_contact = _NEVER
            for peer in self._peers:
                self._send(peer, Resign(term=term))
        return self._flush()

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
        elif target not in self._peers:
            raise RaftElectionError(f"transfer target {target!r} is not a peer of {self._id}")
        term = self._term
        logger.info("%d transfers leadership of term %d to %d", self._id, term, target)
        self.counters["transfers"] += 1
        self._become_follower(now, term, None, reason="transfer")
        self._last_leader_contact = _NEVER
        self._send(target, TimeoutNow(term=term))
        for peer in self._peers:
            if peer != target:
                self._send(peer, Resign(term=term, successor=target))
        return target, self._flush()

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
        if self._role is Role.LEADER or not self._candidate:
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
                self._send(sender, HeartbeatResponse(term=self._term, round=message.round,
                                                     candidate=self._candidate))
            elif isinstance(message, VoteRequest):
                self._send(sender, VoteResponse(term=self._term, round=message.round, granted=False,
                                                pre_vote=message.pre_vote, candidate=self._candidate))
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
        """Grant or refuse a (pre-)vote: one vote per term, none while sticky (Raft §5.2, thesis §9.6)."""
        sticky = self._sticky(sender, request, now, lifted)
        if request.pre_vote:
            # Would we vote for it in the term it proposes?  We record nothing (thesis §9.6).
            granted = request.term > self._term and not sticky
            self.counters["pre_votes_granted" if granted else "pre_votes_refused"] += 1
        else:
            granted = not sticky and self._role is not Role.LEADER and self._voted_for in (None, sender)
            if granted:
                self._vote(sender, now)
            self.counters["votes_granted" if granted else "votes_refused"] += 1
        if granted and lifted:
            assert self._ff is not None
            self._ff.lifted_grant()
            if request.pre_vote:  # let this fast campaign run rather than start a rival one
                self._reset_election_timer(now)
        backed = granted and self._ff is not None and self._ff.backs(request, now)
        self._send(sender, VoteResponse(term=request.term if granted and request.pre_vote else self._term,
                                        round=request.round, granted=granted, pre_vote=request.pre_vote,
                                        candidate=self._candidate, evidence=backed))

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
        self._send(sender, HeartbeatResponse(term=self._term, round=message.round, candidate=self._candidate))

    def _count_vote(self, sender: int, message: VoteResponse, now: float) -> None:
        """A (pre-)candidate counts a grant of its current campaign; anything else is stale."""
        campaign = self._campaign
        if campaign is None or not campaign.answers(message, pre_vote=self._role is Role.PRE_CANDIDATE):
            self._stale_vote_response(sender, message, now)
        elif message.granted:
            counts = self._ff is None or self._ff.counts(campaign.request, message)
            if campaign.add(sender, message, counts=counts):
                self._maybe_win(now)
            else:
                self.counters["rejected_duplicate_response"] += 1

    def _campaign_on_timeout_now(self, sender: int, message: TimeoutNow, now: float) -> None:
        """Campaign at once, skipping pre-vote and stickiness: the leader gave up its lease (thesis §3.10)."""
        if not self._candidate:
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
        self._election_deadline = now + self._rng.uniform(0.0, self._timeout_max - self._timeout_min)

    def _stale_heartbeat_response(self, sender: int, message: HeartbeatResponse, now: float) -> None:
        self.counters["rejected_stale_response"] += 1

    def _stale_vote_response(self, sender: int, message: VoteResponse, now: float) -> None:
        if message.granted:
            self.counters["rejected_stale_response"] += 1

    # ------------------------------------------------------------------ phase 3: the leader

    def _acknowledged(self, sender: int, message: HeartbeatResponse, now: float) -> None:
        """A follower answered a heartbeat round: it counts for check-quorum and perhaps the lease."""
        assert self._lease is not None
        if not self._lease.acknowledged(sender, message.round, message.candidate, now):
            self.counters["rejected_stale_response"] += 1
        self._observe_lease(now)

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

    def _reset_election_timer(self, now: float) -> None:
        """Draw a fresh randomized election timeout (Raft §5.2)."""
        self._election_deadline = now + self._rng.uniform(self._timeout_min, self._timeout_max)

    def _election_timeout(self, now: float) -> None:
        suspect = self._suspect(now)
        if not self._candidate:
            if self._leader_id is not None:
                self._set_leader(None)
            self._reset_election_timer(now)
        elif not suspect and self._postpone_inside_window(now):
            # Only fast failover moves the timer inside the window; its evidence has since been voided.
            self.counters["fast_failovers_cancelled"] += 1
        else:
            self._stand(now, suspect)

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
        self._reset_election_timer(now)
        request = VoteRequest(term=term, round=round_, pre_vote=pre_vote, transfer=transfer, suspect=suspect)
        self._campaign = Campaign(self._id, request, now, self._heartbeat_interval)
        if self._ff is not None:
            self._ff.campaign_started(request)
        for peer in self._peers:
            self._send(peer, request)
        self._maybe_win(now)

    def _resend_vote_requests(self, now: float) -> None:
        """Repeat this campaign's request to the peers whose grant has not counted (Raft §5.1: retry RPCs).

        A request or its answer lost on the way (a datagram dropped, a connection still being made) would
        otherwise cost a whole election timeout and a new term.  The repeat carries the same term and round,
        so a voter answers it as it answered the first (a vote already granted to us is granted again) and
        the lease of a win still starts when the campaign did, before any voter's grant.
        """
        campaign = self._campaign
        assert campaign is not None
        for peer in campaign.repeat_to(self._peers, now):
            self._send(peer, campaign.request)
            self.counters["vote_requests_resent"] += 1

    def _maybe_win(self, now: float) -> None:
        """Win with a strict majority of the grants that count (Raft §5.2)."""
        campaign = self._campaign
        assert campaign is not None
        if len(campaign.counted) < self._quorum:
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
        self._lease = Lease(quorum=self._quorum, duration=self._lease_duration, window=self._timeout_min,
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
        self._broadcast_heartbeat(now)

    def _broadcast_heartbeat(self, now: float) -> None:
        assert self._lease is not None
        round_ = self._next_round()
        self._lease.sent(round_, now)
        # Keep the cadence: a tick that came late (the timer thread's wake-up delay) must not push every
        # later round back too; after a longer stall the rounds start afresh from now.
        due = self._heartbeat_deadline + self._heartbeat_interval
        self._heartbeat_deadline = due if now < due else now + self._heartbeat_interval
        for peer in self._peers:
            self._send(peer, Heartbeat(term=self._term, round=round_, value=self._value))
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
        if heard < self._quorum:
            logger.info("%d steps down in term %d: heard from %d of %d within %.3f s", self._id, self._term,
                        heard, self._quorum, self._quorum_window)
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
        if self._term != self._persisted.term or self._voted_for != self._persisted.voted_for:
            hard_state = HardState(term=self._term, voted_for=self._voted_for)
            self._persisted = hard_state
        probes = self._ff.take_probes() if self._ff is not None else ()
        output = Output(hard_state=hard_state, messages=tuple(self._outbox), events=tuple(self._events),
                        probes=probes)
        self._outbox.clear()
        self._events.clear()
        return output
