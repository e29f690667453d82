"""The sans-I/O election core: every decision of the algorithm, and nothing else.

:class:`RaftCore` is a deterministic state machine.  It never reads a clock, never draws a random number
of its own (a seeded :class:`random.Random` is injected), never touches a socket and never starts a thread.
It is driven by :meth:`RaftCore.tick` and :meth:`RaftCore.receive` (plus a few commands such as
:meth:`RaftCore.step_down`), each taking the current time, and each returning an :class:`Output`: the hard
state to persist, the messages to send *after* it is persisted, and the events to report.  The time at which
the core next wants a tick is :attr:`RaftCore.next_deadline`.

Rules implemented (section numbers: Raft paper 2014 and Ongaro's thesis 2014):

* Randomized election timeouts, heartbeats, one vote per term, strict majority (Raft §5.2).
* Pre-vote: ask whether an election would be won before raising the term (thesis §9.6).
* Leader stickiness: ignore (pre-)vote requests within ``election_timeout_min`` of hearing from a leader,
  except for a leadership transfer (thesis §4.2.3).  Starting up and granting a vote count as hearing from
  a leader, so neither a fast restart nor a fresh vote can undercut a live leader's lease.
* Check-quorum: a leader that has not heard from a majority within ``election_timeout_min`` steps down
  (thesis §6.2).
* Leader lease: valid until ``t + election_timeout_min * (1 - max_clock_drift)`` where ``t`` is the send
  time of the latest round (heartbeat round, or the winning vote round) a majority acknowledged
  (thesis §6.4.1).  ``is_leader`` holds only inside the lease.
* Leadership transfer with TimeoutNow, giving up the lease first (thesis §3.10), and resignation.
* Fast failover on death evidence (this library's extension; see :meth:`RaftCore.evidence`): a follower
  whose transport reports that the leader's process is gone campaigns at once, and a voter grants such a
  campaign inside its stickiness window only on death evidence of its own about that leader; it wins only with
  a
  majority of evidence-backed grants.  Without evidence everything is as above.

Message handling follows the three phases of etcd's ``Step``: term handling common to every message, then
vote requests (shared by all roles), then the role's own handling.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional

import attrs

from raft_election.errors import IllegalTransitionError, RaftElectionError
from raft_election.events import (
    BecameLeader,
    DeathEvidence,
    Event,
    LeaderChanged,
    LostLeadership,
    RoleChanged,
    TermChanged,
    VoteGranted,
)
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
from raft_election.roles import Role
from raft_election.storage import HardState

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

#: How many heartbeat rounds a leader remembers the send time of; acknowledgements of older rounds
#: cannot extend the lease any more and are ignored.
_ROUNDS_KEPT = 64

#: How many recent heartbeat round trips :meth:`RaftCore.round_trip` takes the median of.
ROUND_TRIP_SAMPLES = 32

#: A follower probes its leader for death evidence once the leader's heartbeat is this fraction of
#: ``heartbeat_interval`` overdue (a heartbeat is due every interval) ...
PROBE_LATENESS = 0.25
#: ... and again every this fraction of ``heartbeat_interval`` until the election timer fires.
PROBE_REPEAT = 0.5
#: Members that learn of a leader's death at the same moment start their fast campaigns this fraction of
#: ``heartbeat_interval`` apart, in id order, so the first one's requests reach the others before they
#: start their own: simultaneous campaigns would split the vote and fall back to the election timeout.
FAST_STAGGER = 0.1

#: The counter each kind of message sent adds to, besides ``messages_sent`` (messages per election are
#: the vote requests and responses sent).
_SENT_COUNTER: Mapping[type[Message], str] = {
    VoteRequest: "vote_requests_sent",
    VoteResponse: "vote_responses_sent",
    Heartbeat: "heartbeats_sent",
    HeartbeatResponse: "heartbeat_responses_sent",
    TimeoutNow: "timeout_nows_sent",
    Resign: "resigns_sent",
}


class NoTransferTargetError(RaftElectionError):
    """A leadership transfer found no peer that stands for election and answered recently."""


@attrs.frozen(kw_only=True)
class Outgoing:
    """A message for one peer."""

    to: int
    message: Message


@attrs.frozen(kw_only=True)
class Output:
    """What one call into the core asks the node to do, in this order.

    1. Persist ``hard_state`` (if not None) durably.
    2. Only then send ``messages``: they may depend on it (a granted vote must be on disk first).
    3. Report ``events``.
    """

    hard_state: Optional[HardState] = None
    messages: tuple[Outgoing, ...] = ()
    events: tuple[Event, ...] = ()
    #: Peers to probe for death evidence (see :class:`~raft_election.transport.DeathProbe`), after sending.
    probes: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """True if there is nothing to do."""
        return self.hard_state is None and not self.messages and not self.events and not self.probes


class RaftCore:
    """One server's election state machine.

    Args:
        config: the validated cluster settings; ``config.node_id`` is this server.
        hard_state: the persisted ``(term, voted_for)`` loaded from storage.
        now: the current time (seconds, any monotonic origin); the start counts as having heard from a
            leader, so a restarted server does not hand out votes within ``election_timeout_min``.
        rng: the only source of randomness (election timeouts, round numbers); seed it to replay a run.
    """

    def __init__(self, config: RaftConfig, hard_state: HardState, now: float, rng: random.Random) -> None:
        self._id = config.node_id
        self._peers: tuple[int, ...] = tuple(config.peer_ids)
        self._quorum = config.quorum
        self._timeout_min = config.election_timeout_min
        self._timeout_max = config.election_timeout_max
        self._heartbeat_interval = config.heartbeat_interval
        self._lease_duration = config.election_timeout_min * (1.0 - config.max_clock_drift)
        self._pre_vote = config.pre_vote
        self._fast = config.fast_failover
        self._members = tuple(sorted(config.members))
        self._rng = rng

        self._term = hard_state.term
        self._voted_for = hard_state.voted_for
        self._persisted = hard_state
        self._role = Role.FOLLOWER
        self._leader_id: Optional[int] = None
        self._leader_term = self._term  # the term in which _leader_id was learned
        self._resigned: tuple[int, int] = (0, -1)  # (leader, term) that resigned: its heartbeats are stale
        self._candidate = config.candidate
        # Thesis §4.2.3 stickiness; starting up counts as hearing from a leader (see module docstring).
        self._last_leader_contact = now
        self._election_deadline = now
        self._reset_election_timer(now)
        self._round = rng.getrandbits(32)

        # Campaign state (PRE_CANDIDATE and CANDIDATE).
        self._campaign_round = -1
        self._campaign_started = _NEVER
        self._votes: set[int] = set()
        self._voter_candidate: dict[int, bool] = {}  # candidacy reported with the votes of this campaign
        self._campaign_request: Optional[VoteRequest] = None  # what this campaign asks, for resends
        self._resend_deadline = _NEVER
        self._suspect = 0  # fast failover: the dead leader this campaign replaces (0: a normal campaign)
        self._evidence_votes: set[int] = set()  # grants backed by the voter's own death evidence

        # Fast failover (see evidence()).
        self._heard_from: dict[int, float] = {}  # when each peer's latest message arrived
        self._evidence: dict[int, float] = {}  # when death evidence about each peer arrived
        self._probe_deadline = math.inf  # when to probe the leader next (its heartbeat is overdue)
        self._deferred: dict[int, tuple[VoteRequest, float]] = {}  # fast requests awaiting our evidence
        self._probes: list[int] = []

        # Leader state.
        self._heartbeat_deadline = _NEVER
        self._round_sent: dict[int, float] = {}
        self._acked_at: dict[int, float] = {}
        self._last_heard: dict[int, float] = {}
        self._peer_candidate: dict[int, bool] = {}
        self._lease_start = _NEVER
        #: Recent heartbeat round trips (send to acknowledgement), for status and the benchmarks.
        self._round_trips: collections.deque[float] = collections.deque(maxlen=ROUND_TRIP_SAMPLES)

        self._outbox: list[Outgoing] = []
        self._events: list[Event] = []
        self.counters: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ read-only state

    @property
    def node_id(self) -> int:
        """This server's id."""
        return self._id

    @property
    def role(self) -> Role:
        """The current role.  A LEADER whose lease ran out stays LEADER until the next tick."""
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
            return min(self._heartbeat_deadline, self.lease_expiry)
        if self._campaign_request is not None:
            return min(self._election_deadline, self._resend_deadline)
        if self._probing():
            return min(self._election_deadline, self._probe_deadline)
        return self._election_deadline

    @property
    def election_deadline(self) -> float:
        """When the election timer fires unless reset (meaningless while leading)."""
        return self._election_deadline

    @property
    def lease_expiry(self) -> float:
        """When the current lease runs out (``-inf`` when not leading)."""
        if self._role is not Role.LEADER:
            return _NEVER
        return self._lease_start + self._lease_duration

    def is_leader(self, now: float) -> bool:
        """True only while this server leads with a valid lease (thesis §6.4.1), computed against ``now``."""
        return self._role is Role.LEADER and now < self.lease_expiry

    def followers(self, now: float) -> tuple[int, ...]:
        """The peers that acknowledged this leader within ``election_timeout_min`` (empty unless leader)."""
        if self._role is not Role.LEADER:
            return ()
        return tuple(sorted(peer for peer, heard in self._last_heard.items()
                            if now - heard < self._timeout_min))

    def round_trip(self) -> Optional[float]:
        """The median of this server's recent heartbeat round trips as leader, in seconds (None before any).

        Send to acknowledgement, over the last :data:`ROUND_TRIP_SAMPLES`; the benchmarks' model uses it.
        """
        return statistics.median(self._round_trips) if self._round_trips else None

    def lease_remaining(self, now: float) -> float:
        """Seconds of lease left at ``now`` (0 when not leading)."""
        return max(0.0, self.lease_expiry - now) if self._role is Role.LEADER else 0.0

    def __repr__(self) -> str:
        return f"<RaftCore id={self._id} role={self._role} term={self._term} leader={self._leader_id}>"

    # ------------------------------------------------------------------ entry points

    def tick(self, now: float) -> Output:
        """Advance time to ``now``: fire whatever deadline has passed."""
        self._expire_leadership(now)
        if self._role is Role.LEADER:
            if now >= self._heartbeat_deadline:
                self._check_quorum(now)
            if self._role is Role.LEADER and now >= self._heartbeat_deadline:
                self._broadcast_heartbeat(now)
        elif now >= self._election_deadline:
            self._on_election_timeout(now)
        elif self._campaign_request is not None and now >= self._resend_deadline:
            self._resend_vote_requests(now)
        elif self._probing() and now >= self._probe_deadline:
            self._probe_leader(now)
        return self._flush()

    def receive(self, sender: int, message: Message, now: float) -> Output:
        """Handle one decoded message from ``sender``.

        Network input is untrusted: a sender that is not a configured peer is counted and ignored, and no
        message ever makes this method raise.
        """
        self._expire_leadership(now)  # time has passed, whatever the message turns out to be
        if sender not in self._peers:
            self.counters["rejected_unknown_sender"] += 1
            return self._flush()
        self.counters["messages_received"] += 1
        self._heard_from[sender] = now  # it was alive when it sent this: earlier death evidence is void
        self._handle(sender, message, now)
        return self._flush()

    def evidence(self, peer: int, kind: str, now: float) -> Output:
        """The transport found that nothing listens on ``peer``'s address any more: its process is gone.

        Fast failover (an extension of this library; "signing off" the old leader, in a form that cannot
        block when the old leader is really gone).  A crashed process leaves no lease behind, so the
        stickiness that protects a live leader's lease (thesis §4.2.3, §6.4.1) has nothing to protect:

        * a follower with evidence about its leader campaigns at once (staggered by id, see
          :data:`FAST_STAGGER`) instead of waiting for its election timer, naming the leader as ``suspect``;
        * a voter grants such a request inside its stickiness window only if it holds evidence of its own
          about the suspect (see :meth:`_evidence_override` for why that suffices); without it, it probes
          the suspect and answers once evidence comes;
        * the campaign (pre-vote and vote) wins only with a strict majority of evidence-backed grants.

        Evidence is void once any message from ``peer`` arrives after it, and stale after
        ``election_timeout_max``.  Election safety (one leader per term) never depends on it: votes are
        still one per term.  The lease guarantee rests on evidence being true (a process whose transport
        is closed never claims a lease), and with the majority rule it survives false evidence at fewer than
        a majority of members at once.  Evidence about a member that is not a peer is counted and ignored.
        """
        self._expire_leadership(now)
        if peer not in self._peers:
            self.counters["rejected_evidence_unknown_peer"] += 1
            return self._flush()
        if not self._fast:
            self.counters["evidence_ignored_disabled"] += 1
            return self._flush()
        self.counters["evidence_received"] += 1
        self._evidence[peer] = now
        following = self._role is Role.FOLLOWER and self._leader_id == peer
        self._events.append(DeathEvidence(term=self._term, peer=peer, kind=kind, leader=following))
        if following and self._candidate:
            start = now + self._fast_delay(peer)
            if start < self._election_deadline:
                self._election_deadline = start
                self.counters["fast_failovers_scheduled"] += 1
                logger.info("%d has evidence (%s) that its leader %d is gone; campaigns in %.1f ms",
                            self._id, kind, peer, (start - now) * 1000)
        self._answer_deferred(peer, now)
        return self._flush()

    def _handle(self, sender: int, message: Message, now: float) -> None:
        """Handle one message from a peer (also a deferred vote request replayed by evidence())."""
        override = isinstance(message, VoteRequest) and self._evidence_override(message, now)
        if self._handle_term(sender, message, now, override):
            if isinstance(message, VoteRequest):
                self._handle_vote_request(sender, message, now, override)
            elif isinstance(message, Heartbeat):
                self._handle_heartbeat(sender, message, now)
            elif isinstance(message, HeartbeatResponse):
                self._handle_heartbeat_response(sender, message, now)
            elif isinstance(message, VoteResponse):
                self._handle_vote_response(sender, message, now)
            elif isinstance(message, TimeoutNow):
                self._handle_timeout_now(sender, message, now)
            else:
                self._handle_resign(sender, message, now)

    def step_down(self, now: float) -> Output:
        """Give up leadership: drop the lease, then tell followers they may elect at once.

        The server keeps standing for election (see :meth:`set_candidate`), but its own election timer
        restarts in full while the followers' restart short, so one of them normally wins.  No-op unless
        leader.
        """
        self._expire_leadership(now)
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
        self._expire_leadership(now)
        if self._role is not Role.LEADER:
            # (A step-down for an expired lease stays buffered and leaves with the next output.)
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

    def set_candidate(self, candidate: bool, now: float) -> Output:
        """Stand for election or not.  Dropping candidacy abandons a campaign but not a leadership."""
        self._candidate = candidate
        if not candidate and self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            self._become_follower(now, self._term, None, reason="candidacy_dropped")
        return self._flush()

    def campaign(self, now: float) -> Output:
        """Stand now instead of at the next election timeout (used when a lock is wanted).

        Starts pre-vote (or, with pre-vote off, an election) unless this server leads or does not stand.
        Inside its own stickiness window (it heard from a leader, granted a vote or started within
        ``election_timeout_min``) it instead moves its election timer to the end of that window: its own
        vote may be part of a live leader's lease, so voting for itself earlier would break the lease.
        """
        self._expire_leadership(now)
        if self._role is Role.LEADER or not self._candidate:
            return self._flush()
        suspect = self._fast_suspect(now)
        if not suspect and self._postpone_inside_window(now):
            return self._flush()
        self._stand(now, suspect)
        return self._flush()

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

    def _stand(self, now: float, suspect: int) -> None:
        """Start pre-vote (or, with pre-vote off, an election); ``suspect`` is a dead leader or 0."""
        if self._pre_vote:
            self._become_pre_candidate(now, suspect)
        else:
            self._become_candidate(now, transfer=False, suspect=suspect)

    def stop(self, now: float) -> Output:
        """Report the end of a leadership because the server is stopping (no messages are sent)."""
        if self._role is Role.LEADER:
            self._become_follower(now, self._term, None, reason="stopped")
        return self._flush()

    # ------------------------------------------------------------------ phase 1: terms

    def _handle_term(self, sender: int, message: Message, now: float, override: bool) -> bool:
        """Apply the term rules common to every message; return whether to handle it further (Raft §5.1).

        A higher term makes this server adopt it and follow, except pre-vote traffic, which never changes
        the receiver's term (thesis §9.6), and vote requests inside the stickiness window, which are
        ignored without adopting their term (thesis §4.2.3) unless ``override`` (death evidence about the
        leader, see :meth:`evidence`).  A lower-term request is answered with the current term so its stale
        sender catches up; a lower-term response is dropped.
        """
        term = message.term
        if term > self._term:
            if isinstance(message, VoteRequest):
                if message.pre_vote:
                    return True
                if not message.transfer and not override and self._in_lease_window(now):
                    self._defer_for_evidence(sender, message, now)
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

    def _in_lease_window(self, now: float) -> bool:
        """Whether a current leader may hold a lease that counts on this server (thesis §4.2.3, §6.4.1)."""
        return self._role is Role.LEADER or now - self._last_leader_contact < self._timeout_min

    # ------------------------------------------------------------------ fast failover

    def _has_evidence(self, peer: int, now: float) -> bool:
        """Whether this server holds fresh death evidence about ``peer`` (see :meth:`evidence`)."""
        at = self._evidence.get(peer)
        return (at is not None and now - at < self._timeout_max
                and at > self._heard_from.get(peer, _NEVER))

    def _evidence_override(self, request: VoteRequest, now: float) -> bool:
        """Whether our own death evidence lifts our stickiness for this fast-failover ``request``.

        The request's suspect is the leader of term ``request.term - 1`` (the candidate followed it in that
        term).  Our window protects the lease of whichever leader we last heard from or voted for, or, after
        a restart, one we may not know; its lease counted on us only in a term up to our own.  A grant also
        needs ``request.term`` above our term, so that leader's term is at most ``request.term - 1``: if
        equal, it *is* the suspect (one leader per term), whose process we found gone; if lower, the suspect
        led a later term, and no lease of an earlier leader outlives a later leader's (the lease guarantee),
        so nothing we promised is still live.  Hence evidence of our own about the suspect suffices, also in
        a window opened by our own start or by a vote we granted.  As a guard against a confused candidate,
        a voter that knows another leader of the suspect's term refuses.
        """
        suspect = request.suspect
        if not self._fast or suspect == 0 or self._role is Role.LEADER:
            return False
        other_leader = self._term == request.term - 1 and self._leader_id not in (None, suspect)
        return not other_leader and self._has_evidence(suspect, now)

    def _fast_suspect(self, now: float) -> int:
        """The leader we follow if we hold death evidence about it and fast failover is on, else 0."""
        leader = self._leader_id
        if (self._fast and self._role is Role.FOLLOWER and leader is not None and leader != self._id
                and self._has_evidence(leader, now)):
            return leader
        return 0

    def _fast_delay(self, suspect: int) -> float:
        """How long to wait before a fast campaign: :data:`FAST_STAGGER` per member of lower id."""
        rank = [member for member in self._members if member != suspect].index(self._id)
        return rank * FAST_STAGGER * self._heartbeat_interval

    def _probing(self) -> bool:
        """Whether the probe deadline applies: a follower that knows its leader, with fast failover on."""
        return (self._fast and self._role is Role.FOLLOWER and self._leader_id is not None
                and self._leader_id != self._id)

    def _probe_leader(self, now: float) -> None:
        """The leader's heartbeat is overdue: ask the transport whether its process still exists."""
        assert self._leader_id is not None
        self._probe(self._leader_id)
        self._probe_deadline = now + PROBE_REPEAT * self._heartbeat_interval

    def _probe(self, peer: int) -> None:
        self._probes.append(peer)
        self.counters["probes_requested"] += 1

    def _defer_for_evidence(self, sender: int, request: VoteRequest, now: float) -> None:
        """If ``request`` is a fast one and we hold no evidence about its suspect, keep it and probe.

        When evidence arrives, :meth:`_answer_deferred` handles the request again: a voter inside its
        stickiness window may then grant it, and one outside grants it again, now backed by evidence.  A
        candidate also repeats its request every heartbeat interval, so a lost probe costs at most that.
        """
        suspect = request.suspect
        if not self._fast or suspect == 0 or self._has_evidence(suspect, now):
            return
        self._deferred[sender] = (request, now)
        self.counters["vote_requests_deferred"] += 1
        self._probe(suspect)

    def _answer_deferred(self, peer: int, now: float) -> None:
        """Evidence about ``peer`` arrived: handle again the fast requests that waited for it."""
        for sender, (request, at) in list(self._deferred.items()):
            if request.suspect != peer:
                continue
            del self._deferred[sender]
            if now - at < self._heartbeat_interval:  # older ones were repeated, or given up, by now
                self.counters["vote_requests_replayed"] += 1
                self._handle(sender, request, now)

    # ------------------------------------------------------------------ phase 2: vote requests

    def _handle_vote_request(self, sender: int, message: VoteRequest, now: float, override: bool) -> None:
        """Grant or refuse a (pre-)vote: one vote per term, none inside the stickiness window (Raft §5.2).

        ``override``: our own death evidence about the leader lifts the stickiness (see :meth:`evidence`).
        A fast request we cannot grant yet for lack of evidence waits for it (see
        :meth:`_defer_for_evidence`); one we grant without evidence is answered again when evidence comes,
        since a fast campaign counts only evidence-backed grants.
        """
        sticky = not message.transfer and not override and self._in_lease_window(now)
        evidence = message.suspect != 0 and self._has_evidence(message.suspect, now)
        self._defer_for_evidence(sender, message, now)  # a fast request, and we lack evidence: probe
        if message.pre_vote:
            # Would we vote for it in the term it proposes?  We record nothing (thesis §9.6).
            granted = message.term > self._term and not sticky
            self.counters["pre_votes_granted" if granted else "pre_votes_refused"] += 1
            if granted and override:
                self.counters["evidence_votes_granted"] += 1
                self._reset_election_timer(now)  # let this campaign run rather than start a rival one
            self._send(sender, VoteResponse(term=message.term if granted else self._term, round=message.round,
                                            granted=granted, pre_vote=True, candidate=self._candidate,
                                            evidence=granted and evidence))
            return
        if self._voted_for == sender and self._role is Role.FOLLOWER:
            sticky = False  # a repeat of the request we granted (Raft §5.2: votedFor is candidateId)
        granted = (not sticky and self._role is not Role.LEADER
                   and self._voted_for in (None, sender))
        if granted:
            if self._role is not Role.FOLLOWER:
                self._become_follower(now, self._term, None, reason="voted")
            self._voted_for = sender
            self._events.append(VoteGranted(term=self._term, candidate=sender))
            # A granted vote may become part of the winner's lease: count it as hearing from a leader.
            self._last_leader_contact = now
            self._reset_election_timer(now)
            logger.debug("%d votes for %d in term %d", self._id, sender, self._term)
            if override:
                self.counters["evidence_votes_granted"] += 1
        self.counters["votes_granted" if granted else "votes_refused"] += 1
        self._send(sender, VoteResponse(term=self._term, round=message.round, granted=granted,
                                        candidate=self._candidate, evidence=granted and evidence))

    # ------------------------------------------------------------------ phase 3: the rest

    def _handle_heartbeat(self, sender: int, message: Heartbeat, now: float) -> None:
        if self._role is Role.LEADER:
            # Two leaders in one term would break election safety; it cannot happen unless a peer is
            # misconfigured (two members with one id).  Never act on it.
            self.counters["rejected_duplicate_leader"] += 1
            logger.error("%d is leader of term %d but got a heartbeat from %d for the same term",
                         self._id, self._term, sender)
            return
        if self._resigned == (sender, self._term):
            self.counters["rejected_stale_heartbeat"] += 1  # overtaken by its sender's Resign
            return
        if self._role is not Role.FOLLOWER or self._leader_id != sender:
            self._become_follower(now, self._term, sender, reason="heartbeat")
        self._last_leader_contact = now
        self._reset_election_timer(now)
        self._probe_deadline = now + (1.0 + PROBE_LATENESS) * self._heartbeat_interval
        self._send(sender, HeartbeatResponse(term=self._term, round=message.round, candidate=self._candidate))

    def _handle_heartbeat_response(self, sender: int, message: HeartbeatResponse, now: float) -> None:
        if self._role is not Role.LEADER:
            self.counters["rejected_stale_response"] += 1
            return
        sent_at = self._round_sent.get(message.round)
        if sent_at is None:
            self.counters["rejected_stale_response"] += 1
            return
        self._last_heard[sender] = max(self._last_heard.get(sender, _NEVER), now)
        self._round_trips.append(now - sent_at)
        self._peer_candidate[sender] = message.candidate
        if sent_at > self._acked_at.get(sender, _NEVER):
            self._acked_at[sender] = sent_at
            self._extend_lease()

    def _handle_vote_response(self, sender: int, message: VoteResponse, now: float) -> None:
        if message.pre_vote:
            expected_role, expected_term = Role.PRE_CANDIDATE, self._term + 1
        else:
            expected_role, expected_term = Role.CANDIDATE, self._term
        if (self._role is not expected_role or message.term != expected_term
                or message.round != self._campaign_round):
            if message.granted:
                self.counters["rejected_stale_response"] += 1
            return
        if not message.granted:
            return
        backed = self._suspect != 0 and message.evidence
        if sender in self._votes and (not backed or sender in self._evidence_votes):
            self.counters["rejected_duplicate_response"] += 1
            return
        self._votes.add(sender)
        if backed:
            self._evidence_votes.add(sender)
        self._voter_candidate[sender] = message.candidate
        self._maybe_win(now)

    def _handle_timeout_now(self, sender: int, message: TimeoutNow, now: float) -> None:
        """Campaign at once, skipping pre-vote and stickiness: the leader gave up its lease (thesis §3.10)."""
        if self._role is Role.LEADER or not self._candidate:
            self.counters["rejected_timeout_now"] += 1
            return
        logger.info("%d got TimeoutNow from %d in term %d", self._id, sender, self._term)
        self._become_candidate(now, transfer=True)

    def _handle_resign(self, sender: int, message: Resign, now: float) -> None:
        """The term's leader gave up its lease.

        With a successor (a leadership transfer is under way) just forget the old leader: the successor's
        campaign bypasses stickiness anyway, and staying sticky keeps others from competing with it.
        Without one, no lease can count on us any more, so drop stickiness and elect soon.
        """
        if self._role is Role.LEADER or self._leader_id not in (None, sender):
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

    # ------------------------------------------------------------------ timers

    def _reset_election_timer(self, now: float) -> None:
        """Draw a fresh randomized election timeout (Raft §5.2)."""
        self._election_deadline = now + self._rng.uniform(self._timeout_min, self._timeout_max)

    def _on_election_timeout(self, now: float) -> None:
        suspect = self._fast_suspect(now)
        if not self._candidate:
            if self._leader_id is not None:
                self._set_leader(None)
            self._reset_election_timer(now)
        elif not suspect and self._postpone_inside_window(now):
            # A fast failover was scheduled, but its evidence has since been voided (the leader spoke).
            self.counters["fast_failovers_cancelled"] += 1
        else:
            self._stand(now, suspect)

    # ------------------------------------------------------------------ leader duties

    def _broadcast_heartbeat(self, now: float) -> None:
        round_ = self._next_round()
        self._round_sent[round_] = now
        if len(self._round_sent) > _ROUNDS_KEPT:
            del self._round_sent[next(iter(self._round_sent))]
        # Keep the cadence: a tick that came late (the timer thread's wake-up delay) must not push every
        # later round back too; after a longer stall the rounds start afresh from now.
        due = self._heartbeat_deadline + self._heartbeat_interval
        self._heartbeat_deadline = due if now < due else now + self._heartbeat_interval
        for peer in self._peers:
            self._send(peer, Heartbeat(term=self._term, round=round_))
        self._extend_lease()  # a one-member cluster is its own majority

    def _extend_lease(self) -> None:
        """Move the lease start to the latest round a majority acknowledged (thesis §6.4.1).

        The leader acknowledges its own latest round at once; a peer's acknowledgement time is the *send*
        time of the newest round it answered, which is no later than the moment it reset its own
        stickiness window.
        """
        own = max(self._round_sent.values(), default=self._lease_start)
        acked = sorted([own, *self._acked_at.values()], reverse=True)
        if len(acked) >= self._quorum:
            self._lease_start = max(self._lease_start, acked[self._quorum - 1])

    def _check_quorum(self, now: float) -> None:
        """Step down if fewer than a majority answered within ``election_timeout_min`` (thesis §6.2)."""
        heard = 1 + sum(1 for t in self._last_heard.values() if now - t < self._timeout_min)
        if heard < self._quorum:
            logger.info("%d steps down in term %d: heard from %d of %d within the election timeout",
                        self._id, self._term, heard, self._quorum)
            self._become_follower(now, self._term, None, reason="check_quorum")

    def _expire_leadership(self, now: float) -> None:
        if self._role is Role.LEADER and now >= self.lease_expiry:
            logger.info("%d steps down in term %d: lease expired", self._id, self._term)
            self._become_follower(now, self._term, None, reason="lease_expired")

    def _pick_transfer_target(self, now: float) -> int:
        """The candidate peer heard from most recently within ``election_timeout_min``."""
        eligible = [(heard, peer) for peer, heard in self._last_heard.items()
                    if self._peer_candidate.get(peer, False) and now - heard < self._timeout_min]
        if not eligible:
            raise NoTransferTargetError(
                f"{self._id} has no peer that stands for election and answered within "
                f"{self._timeout_min} s to transfer leadership to")
        return max(eligible)[1]

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
            lease_end = min(now, self.lease_expiry)
            self._events.append(LostLeadership(term=self._term, at=now, lease_end=lease_end, reason=reason))
            self.counters[f"step_downs_{reason}"] += 1
            self._clear_leader_state()
        if term > self._term:
            self._term = term
            self._voted_for = None
            self._events.append(TermChanged(term=term))
        self._transition(Role.FOLLOWER)
        self._end_campaign()
        self._set_leader(leader_id)
        self._reset_election_timer(now)
        if was_leader:
            logger.info("%d became follower at term %d (%s)", self._id, self._term, reason)

    def _become_pre_candidate(self, now: float, suspect: int) -> None:
        """Ask whether we would win term + 1, without raising our term (thesis §9.6)."""
        self._transition(Role.PRE_CANDIDATE)
        self._set_leader(None)
        self._start_campaign(now, suspect)
        self.counters["pre_votes_started"] += 1
        logger.debug("%d became pre-candidate at term %d", self._id, self._term)
        self._ask_for_votes(now, VoteRequest(term=self._term + 1, round=self._campaign_round, pre_vote=True,
                                             suspect=suspect))

    def _become_candidate(self, now: float, *, transfer: bool, suspect: int = 0) -> None:
        """Raise the term, vote for ourselves and ask for votes (Raft §5.2)."""
        self._transition(Role.CANDIDATE)
        self._term += 1
        self._voted_for = self._id
        self._events.append(TermChanged(term=self._term))
        self._events.append(VoteGranted(term=self._term, candidate=self._id))
        self._set_leader(None)
        self._start_campaign(now, suspect)
        self.counters["elections_started"] += 1
        logger.info("%d became candidate at term %d%s", self._id, self._term,
                    " (leadership transfer)" if transfer else
                    f" (fast failover: {suspect} is gone)" if suspect else "")
        self._ask_for_votes(now, VoteRequest(term=self._term, round=self._campaign_round, transfer=transfer,
                                             suspect=suspect))

    def _ask_for_votes(self, now: float, request: VoteRequest) -> None:
        """Send ``request`` to every peer, and again every heartbeat interval to those that did not grant."""
        self._campaign_request = request
        self._resend_deadline = now + self._heartbeat_interval
        for peer in self._peers:
            self._send(peer, request)
        self._maybe_win(now)

    def _resend_vote_requests(self, now: float) -> None:
        """Repeat this campaign's request to the peers that have not granted it (Raft §5.1: retry RPCs).

        A request or its answer lost on the way (a datagram dropped, a connection still being made) would
        otherwise cost a whole election timeout and a new term.  The repeat carries the same term and round,
        so a voter answers it as it answered the first (a vote already granted to us is granted again) and
        the lease of a win still starts when the campaign did, before any voter's grant.
        """
        request = self._campaign_request
        assert request is not None
        self._resend_deadline = now + self._heartbeat_interval
        counted = self._evidence_votes if self._suspect else self._votes
        for peer in self._peers:
            if peer not in counted:
                self._send(peer, request)
                self.counters["vote_requests_resent"] += 1

    def _start_campaign(self, now: float, suspect: int) -> None:
        self._campaign_round = self._next_round()
        self._campaign_started = now
        self._votes = {self._id}
        self._suspect = suspect
        self._evidence_votes = {self._id} if suspect else set()
        self._voter_candidate = {}
        self._reset_election_timer(now)
        if suspect:
            self.counters["fast_campaigns_started"] += 1

    def _end_campaign(self) -> None:
        self._votes = set()
        self._evidence_votes = set()
        self._suspect = 0
        self._campaign_round = -1
        self._campaign_request = None
        self._resend_deadline = _NEVER

    def _maybe_win(self, now: float) -> None:
        """Win with a strict majority of grants; a fast campaign counts only evidence-backed ones.

        The majority rule for fast campaigns keeps the lease guarantee even if some members were fooled by
        false evidence about a live leader: its lease majority shares a member with ours, and that member
        granted inside its window, so fooling it alone is not enough; a majority must be fooled at once.
        """
        if len(self._evidence_votes if self._suspect else self._votes) < self._quorum:
            return
        if self._role is Role.PRE_CANDIDATE:
            self._become_candidate(now, transfer=False, suspect=self._suspect)
        elif self._role is Role.CANDIDATE:
            if now >= self._campaign_started + self._lease_duration:
                # The lease of the winning round (which starts when the campaign did) has already run
                # out: taking office would mean leading without a lease.  Votes this slow cannot carry a
                # lease anyway; the election timer retries in a new term.
                self.counters["late_wins_declined"] += 1
                logger.warning("%d declines term %d: its votes took %.3f s, longer than the %.3f s lease",
                               self._id, self._term, now - self._campaign_started, self._lease_duration)
                self._end_campaign()
                return
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        """Take office, with the winning vote round as the first lease round (thesis §6.4.1).

        Every vote granted in that round reset its voter's stickiness no earlier than the campaign started.
        """
        self._transition(Role.LEADER)
        voters = self._votes - {self._id}
        self._round_sent = {self._campaign_round: self._campaign_started}
        self._acked_at = dict.fromkeys(voters, self._campaign_started)
        self._last_heard = dict.fromkeys(voters, now)
        self._peer_candidate = {voter: self._voter_candidate.get(voter, False) for voter in voters}
        self._lease_start = self._campaign_started
        fast = self._suspect != 0
        self._end_campaign()
        self.counters["became_leader"] += 1
        if fast:
            self.counters["fast_elections_won"] += 1
        logger.info("%d became leader at term %d%s", self._id, self._term, " (fast failover)" if fast else "")
        self._events.append(BecameLeader(term=self._term, at=now, fast=fast))
        self._set_leader(self._id)
        self._broadcast_heartbeat(now)

    def _clear_leader_state(self) -> None:
        self._heartbeat_deadline = _NEVER
        self._round_sent = {}
        self._acked_at = {}
        self._last_heard = {}
        self._lease_start = _NEVER

    def _set_leader(self, leader_id: Optional[int]) -> None:
        """Record the known leader; a new leadership (another leader, or a new term) is an event."""
        if leader_id != self._leader_id or (leader_id is not None and self._leader_term != self._term):
            self._leader_id = leader_id
            self._leader_term = self._term
            self._events.append(LeaderChanged(leader_id=leader_id, term=self._term))

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
        output = Output(hard_state=hard_state, messages=tuple(self._outbox), events=tuple(self._events),
                        probes=tuple(dict.fromkeys(self._probes)))
        self._outbox.clear()
        self._events.clear()
        self._probes.clear()
        self.counters["messages_sent"] += len(output.messages)
        for outgoing in output.messages:
            self.counters[_SENT_COUNTER[type(outgoing.message)]] += 1
        return output
