"""Fast failover: replacing a dead leader on death evidence instead of waiting for an election timeout.

This library's extension of Raft's leader election ("signing off" the old leader, in a form that cannot
block when the old leader is really gone).  A process that crashed on a host that stays up leaves no lease
behind, and its host's kernel says so at once: nothing listens on its port any more (see
:class:`~raft_election.transport.DeathProbe`).  The stickiness that protects a live leader's lease
(thesis §4.2.3, §6.4.1) then has nothing to protect, so:

* a follower whose leader's heartbeat is :data:`PROBE_LATENESS` of an interval overdue asks the transport
  to probe the leader, and again every :data:`PROBE_REPEAT` of an interval until its election timer fires;
* a follower with death evidence about its leader campaigns at once (staggered by id, see
  :data:`FAST_STAGGER`) instead of waiting for its election timer, naming the leader as the ``suspect``
  of its vote requests;
* a voter lifts its stickiness for such a request only if it holds evidence of its own about the suspect
  (see :meth:`FastFailover.lifts_stickiness` for why that suffices); without it, it probes the suspect and
  answers again once evidence comes (:meth:`FastFailover.await_evidence`);
* the campaign (pre-vote and vote) wins only with a strict majority of evidence-backed grants
  (:meth:`FastFailover.counts`).

Evidence is void once any message from the peer arrives after it, and stale after
``election_timeout_max``.  Election safety (one leader per term) never depends on it: votes are still one
per term.  The lease guarantee rests on evidence being true (a process whose transport is closed never
claims a lease), and with the majority rule it survives false evidence at fewer than a majority of members
at once: a live leader's lease majority shares a member with the fast campaign's evidence majority, and
that member granted inside its window, so fooling it alone is not enough.

:class:`FastFailover` is deterministic and sans-I/O like the core: it never reads a clock (every hook takes
``now``) and draws no random numbers.  The core owns one (``RaftConfig.fast_failover``, on by default) and
consults it at the hooks below; without it, everything is classic Raft with pre-vote and stickiness.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable
from typing import Optional

from raft_election.messages import VoteRequest, VoteResponse

__all__ = ["FAST_STAGGER", "GROUP_FAST_RESEND", "GROUP_FAST_STAGGER", "PROBE_LATENESS", "PROBE_REPEAT",
           "FastFailover"]

logger = logging.getLogger(__name__)

#: A follower probes its leader for death evidence once the leader's heartbeat is this fraction of
#: ``heartbeat_interval`` overdue (a heartbeat is due every interval) ...
PROBE_LATENESS = 0.25
#: ... and again every this fraction of ``heartbeat_interval`` until the election timer fires.
PROBE_REPEAT = 0.5
#: Members that learn of a leader's death at the same moment start their fast campaigns this fraction of
#: ``heartbeat_interval`` apart, in id order, so the first one's requests reach the others before they
#: start their own: simultaneous campaigns would split the vote and fall back to the election timeout.
FAST_STAGGER = 0.1
#: The same for election groups: a member that led hundreds of groups dies, and each survivor has dozens of
#: fast campaigns to run at once, so the first in a group's order needs longer than a few milliseconds to
#: reach the others; a rival started meanwhile would split the votes of both.  A survivor that grants the
#: first one's pre-vote in time drops its own (see the core), so the next in order campaigns only if the
#: first did not within about three intervals.  (Measured with 1,000 groups over five processes on two
#: cores: the first one's pre-votes take 30-60 ms to come back; with one interval between them the second
#: in order often started its own meanwhile, the votes split, and the groups waited for election timeouts.)
GROUP_FAST_STAGGER = 3.0
#: An election group's fast campaign repeats its request after this many heartbeat intervals (then doubling),
#: not after one as the default group's does.  A voter that lacks evidence keeps the request and answers it
#: when evidence comes (it is replayed), so the repeat is only for a message lost on the way; meanwhile every
#: survivor runs dozens of campaigns and votes in the others', and answers take 40-100 ms to come back
#: (measured as above): a repeat after one interval reached voters whose answer was on its way, and doubled
#: the work of the members that were slowest already.
GROUP_FAST_RESEND = 2.0


class FastFailover:
    """One server's death evidence, probes and evidence-waiting vote requests (see the module docstring).

    Args:
        node_id: this server.
        members: every member's id, this server's included (for the stagger).
        heartbeat_interval: the cluster's heartbeat interval, seconds.
        election_timeout_max: evidence older than this is stale.
        counters: the core's counters, which this component adds its own to.
    """

    def __init__(self, *, node_id: int, members: Iterable[int], heartbeat_interval: float,
                 election_timeout_max: float, counters: collections.Counter[str]) -> None:
        self._id = node_id
        self._members = tuple(sorted(members))
        self._interval = heartbeat_interval
        self._stale_after = election_timeout_max
        self._counters = counters
        self._heard_from: dict[int, float] = {}  # when each peer's latest message arrived
        self._evidence: dict[int, float] = {}  # when death evidence about each peer arrived
        self._probe_deadline = math.inf  # when to probe the leader next (its heartbeat is overdue)
        self._deferred: dict[int, tuple[VoteRequest, float]] = {}  # fast requests awaiting our evidence
        self._probes: list[int] = []
        self._order: tuple[int, ...] = ()  # a group's order of preference (placement.py), if any
        #: How far apart (a fraction of ``heartbeat_interval``) members start their fast campaigns: an
        #: election group's core uses :data:`GROUP_FAST_STAGGER` (see there).
        self.stagger = FAST_STAGGER
        #: After how many ``heartbeat_interval`` a fast candidate repeats its request: a request deferred for
        #: want of evidence is answered when evidence comes only if it came sooner (later, the repeat is
        #: answered).  An election group's core uses :data:`GROUP_FAST_RESEND`.
        self.resend = 1.0
        #: Whether a follower probes its overdue leader itself.  An election group's core does not: its
        #: member probes once for all the groups a silent leader led (see raft_election.groups).
        self.probing = True

    # ------------------------------------------------------------------ evidence

    def set_order(self, order: Iterable[int]) -> None:
        """Stagger fast campaigns in this order (a group's preference) instead of in id order."""
        self._order = tuple(order)

    def set_members(self, members: Iterable[int]) -> None:
        """The configuration changed (thesis §4.1): stagger fast campaigns among its members from now on."""
        self._members = tuple(sorted(members))

    def heard_from(self, peer: int, now: float) -> None:
        """A message from ``peer`` arrived: it was alive when it sent it, so earlier evidence is void."""
        self._heard_from[peer] = now

    def has_evidence(self, peer: int, now: float) -> bool:
        """Whether this server holds fresh death evidence about ``peer``."""
        at = self._evidence.get(peer)
        return at is not None and now - at < self._stale_after and at > self._heard_from.get(peer, -math.inf)

    def evidence(self, peer: int, now: float) -> list[tuple[int, VoteRequest]]:
        """Death evidence about ``peer`` arrived; return the ``(sender, request)`` pairs to handle again.

        Those are the fast requests naming ``peer`` that waited for it (:meth:`await_evidence`) for less
        than their candidate's repeat interval (``resend``); older ones were repeated, or given up, by now.
        """
        self._counters["evidence_received"] += 1
        self._evidence[peer] = now
        replay: list[tuple[int, VoteRequest]] = []
        for sender, (request, at) in list(self._deferred.items()):
            if request.suspect != peer:
                continue
            del self._deferred[sender]
            if now - at < self.resend * self._interval:
                self._counters["vote_requests_replayed"] += 1
                replay.append((sender, request))
            else:
                self._counters["vote_requests_expired"] += 1
        return replay

    # ------------------------------------------------------------------ the follower of a dead leader

    def leader_heard(self, now: float) -> None:
        """A heartbeat of the followed leader arrived: probe only once the next one is overdue."""
        self._probe_deadline = now + (1.0 + PROBE_LATENESS) * self._interval

    def next_deadline(self, leader: Optional[int]) -> float:
        """When a follower of ``leader`` (None: it knows of none) wants a tick for its next probe."""
        return self._probe_deadline if leader is not None and self.probing else math.inf

    def tick(self, leader: Optional[int], now: float) -> None:
        """A follower's tick before its election timer fires: probe ``leader`` if its heartbeat is overdue."""
        if leader is not None and self.probing and now >= self._probe_deadline:
            self._probe(leader)
            self._probe_deadline = now + PROBE_REPEAT * self._interval

    def hasten(self, leader: int, kind: str, now: float, election_deadline: float) -> float:
        """Evidence about the followed ``leader`` came: the election deadline to campaign at instead.

        At once for the first member in id order, or in the group's order of preference if it has one (the
        dead leader left out), :data:`FAST_STAGGER` of an interval later for each one after it; never later
        than ``election_deadline``.
        """
        order = [member for member in self._order if member in self._members]
        if len(order) != len(self._members):
            order = list(self._members)
        rank = [member for member in order if member != leader].index(self._id)
        start = now + rank * self.stagger * self._interval
        if start >= election_deadline:
            return election_deadline
        self._counters["fast_failovers_scheduled"] += 1
        logger.info("%d has evidence (%s) that its leader %d is gone; campaigns in %.1f ms",
                    self._id, kind, leader, (start - now) * 1000)
        return start

    def suspect(self, leader: Optional[int], now: float) -> int:
        """The followed ``leader`` if we hold evidence that it is gone, else 0 (campaign normally)."""
        if leader is not None and leader != self._id and self.has_evidence(leader, now):
            return leader
        return 0

    # ------------------------------------------------------------------ the voter

    def lifts_stickiness(self, request: VoteRequest, now: float, *, term: int, leader_id: Optional[int],
                         leading: bool) -> bool:
        """Whether our own evidence lifts our stickiness for this fast ``request``.

        The request's suspect is the leader of term ``request.term - 1`` (the candidate followed it in that
        term).  Our window protects the lease of whichever leader we last heard from or voted for, or, after
        a restart, one we may not know; its lease counted on us only in a term up to our own ``term``.  A
        grant also needs ``request.term`` above our term, so that leader's term is at most ``request.term -
        1``: if equal, it *is* the suspect (one leader per term), whose process we found gone; if lower, the
        suspect led a later term, and no lease of an earlier leader outlives a later leader's (the lease
        guarantee), so nothing we promised is still live.  Hence evidence of our own about the suspect
        suffices, also in a window opened by our own start or by a vote we granted.  As a guard against a
        confused candidate, a voter that knows another leader (``leader_id``) of the suspect's term refuses,
        and a voter that leads never lifts its stickiness.
        """
        suspect = request.suspect
        if suspect == 0 or leading:
            return False
        other_leader = term == request.term - 1 and leader_id not in (None, suspect)
        return not other_leader and self.has_evidence(suspect, now)

    def await_evidence(self, sender: int, request: VoteRequest, now: float) -> None:
        """If ``request`` is a fast one and we hold no evidence about its suspect, keep it and probe.

        When evidence arrives, :meth:`evidence` hands the request back to be handled again: a voter inside
        its stickiness window may then grant it, and one outside grants it again, now backed by evidence.
        A candidate also repeats its request every heartbeat interval, so a lost probe costs at most that.
        """
        suspect = request.suspect
        if suspect == 0 or self.has_evidence(suspect, now):
            return
        self._deferred[sender] = (request, now)
        self._counters["vote_requests_deferred"] += 1
        self._probe(suspect)

    def backs(self, request: VoteRequest, now: float) -> bool:
        """Whether a grant of ``request`` is backed by evidence of ours about its suspect (we say so)."""
        return request.suspect != 0 and self.has_evidence(request.suspect, now)

    def lifted_grant(self) -> None:
        """We granted a (pre-)vote that only our evidence let us grant."""
        self._counters["evidence_votes_granted"] += 1

    # ------------------------------------------------------------------ the fast candidate

    def campaign_started(self, request: VoteRequest) -> None:
        """A campaign asking ``request`` started (counted when it is a fast one)."""
        if request.suspect:
            self._counters["fast_campaigns_started"] += 1

    @staticmethod
    def counts(request: VoteRequest, response: VoteResponse) -> bool:
        """Whether a grant counts toward the majority: in a fast campaign only evidence-backed ones do."""
        return request.suspect == 0 or response.evidence

    # ------------------------------------------------------------------ output

    def take_probes(self) -> tuple[int, ...]:
        """The peers to probe since the last call, each once, in the order first asked for."""
        probes = tuple(dict.fromkeys(self._probes))
        self._probes.clear()
        return probes

    def _probe(self, peer: int) -> None:
        self._probes.append(peer)
        self._counters["probes_requested"] += 1
