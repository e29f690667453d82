"""Fast failover: death evidence from the transport, confirmed by a majority of voters (issue 7).

The rules (see ``RaftCore.evidence``):

* a follower whose leader's heartbeat is overdue by ``PROBE_LATENESS`` of an interval asks the transport to
  probe the leader, and again every ``PROBE_REPEAT`` of an interval;
* with death evidence about its leader it campaigns at once, staggered by id, naming the leader as
  ``suspect``;
* a voter grants such a request inside its stickiness window only with evidence of its own about the
  suspect (the leader of the term before the one asked for); without it, it probes and answers once
  evidence comes;
* a fast campaign wins (pre-vote and vote) only with a strict majority of evidence-backed grants;
* evidence is void once the suspect is heard from again, and stale after ``election_timeout_max``.

Every test below is about one member of five whose leader is member 5, in term 3.
"""

from __future__ import annotations

import attrs
import pytest

from raft_election.core import RaftCore
from raft_election.events import BecameLeader, DeathEvidence, VoteGranted
from raft_election.fastfailover import FAST_STAGGER, PROBE_LATENESS, PROBE_REPEAT
from raft_election.messages import Heartbeat, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, config_of, events, grant, make_core, messages, only, recipients

TERM = 3
LEADER = 5
START = 1.0  # past every start-up window of the tests' cores
KIND = "port_unreachable"


def follower(node_id: int = 1, **overrides: object) -> RaftCore:
    """Member ``node_id`` of five, following leader 5 in term 3 since a heartbeat at START."""
    core = make_core(node_id=node_id, members=5, hard_state=HardState(term=TERM), **overrides)
    core.receive(LEADER, Heartbeat(term=TERM, round=1), START)
    assert core.leader_id == LEADER and core.role is Role.FOLLOWER
    return core


def interval(core: RaftCore) -> float:
    return config_of(core).heartbeat_interval


def fast_request(pre_vote: bool = True, term: int = TERM + 1, round_: int = 9) -> VoteRequest:
    return VoteRequest(term=term, round=round_, pre_vote=pre_vote, suspect=LEADER)


def answer(output: object, to: int = 1) -> VoteResponse:
    return only(messages(output, VoteResponse, to=to))  # type: ignore[arg-type]


def fast_pre_candidate() -> tuple[RaftCore, float, VoteRequest]:
    """Member 1 (first in line) that got evidence at START + STEP and started its fast pre-vote.

    Also returns when, and the request it sent.
    """
    core = follower(1)
    now = START + STEP
    core.evidence(LEADER, KIND, now)
    request = only(messages(core.tick(now), VoteRequest, to=2))
    assert core.role is Role.PRE_CANDIDATE
    return core, now, request


def backed(request: VoteRequest, evidence: bool = True) -> VoteResponse:
    """A grant of ``request``, with or without the voter's own death evidence."""
    return attrs.evolve(grant(request), evidence=evidence)


# ---------------------------------------------------------------- probing


def test_an_overdue_heartbeat_makes_the_follower_probe_its_leader_and_repeat():
    core = follower()
    h = interval(core)
    due = START + (1 + PROBE_LATENESS) * h
    assert core.next_deadline == pytest.approx(due)
    out = core.tick(due)
    assert out.probes == (LEADER,) and out.messages == ()
    assert core.next_deadline == pytest.approx(due + PROBE_REPEAT * h)
    assert core.tick(core.next_deadline).probes == (LEADER,)
    assert core.counters["probes_requested"] == 2


def test_each_heartbeat_postpones_the_probe():
    core = follower()
    h = interval(core)
    core.receive(LEADER, Heartbeat(term=TERM, round=2), START + h)
    assert core.next_deadline == pytest.approx(START + h + (1 + PROBE_LATENESS) * h)
    assert core.tick(START + (1 + PROBE_LATENESS) * h).probes == ()


def test_without_fast_failover_nothing_is_probed_and_evidence_is_ignored():
    core = follower(fast_failover=False)
    assert core.next_deadline == core.election_deadline
    deadline = core.election_deadline
    out = core.evidence(LEADER, KIND, START + STEP)
    assert out.empty and core.election_deadline == deadline
    assert core.counters["evidence_ignored_disabled"] == 1


def test_a_leader_and_a_follower_without_leader_never_probe():
    core = make_core(node_id=1, members=5, hard_state=HardState(term=TERM))
    assert core.leader_id is None and core.next_deadline == core.election_deadline


# ---------------------------------------------------------------- the follower that learns of the death


def test_evidence_about_the_leader_starts_a_fast_pre_vote_at_once():
    """The dead leader is not asked: its process is gone, so a request (and each repeat) is wasted work."""
    core = follower(1)
    now = START + STEP
    out = core.evidence(LEADER, KIND, now)
    assert events(out, DeathEvidence) == [DeathEvidence(term=TERM, peer=LEADER, kind=KIND, leader=True)]
    assert core.election_deadline == now  # member 1 is first in line
    out = core.tick(now)
    assert core.role is Role.PRE_CANDIDATE and core.term == TERM
    assert sorted(recipients(out, VoteRequest)) == [2, 3, 4]
    out = core.tick(now + interval(core))  # no answer came: the request is repeated, still not to it
    assert core.role is Role.PRE_CANDIDATE
    assert sorted(recipients(out, VoteRequest)) == [2, 3, 4]
    assert {request.suspect for request in messages(out, VoteRequest)} == {LEADER}
    assert all(request.pre_vote for request in messages(out, VoteRequest))
    assert core.counters["fast_campaigns_started"] == 1


@pytest.mark.parametrize(("node_id", "rank"), [(2, 1), (3, 2), (4, 3)])
def test_fast_campaigns_are_staggered_by_id(node_id, rank):
    core = follower(node_id)
    now = START + STEP
    core.evidence(LEADER, KIND, now)
    assert core.election_deadline == pytest.approx(now + rank * FAST_STAGGER * interval(core))


def test_the_stagger_skips_the_dead_leader():
    core = make_core(node_id=2, members=5, hard_state=HardState(term=TERM))
    core.receive(1, Heartbeat(term=TERM, round=1), START)
    core.evidence(1, KIND, START + STEP)
    assert core.election_deadline == START + STEP  # 2 is first in line once 1 is gone


def test_evidence_about_a_peer_that_does_not_lead_changes_nothing():
    core = follower(1)
    deadline = core.election_deadline
    out = core.evidence(2, KIND, START + STEP)
    assert events(out, DeathEvidence) == [DeathEvidence(term=TERM, peer=2, kind=KIND, leader=False)]
    assert core.election_deadline == deadline and core.role is Role.FOLLOWER


def test_evidence_about_an_unknown_member_is_counted_and_ignored():
    core = follower(1)
    deadline = core.election_deadline
    assert core.evidence(77, KIND, START + STEP).empty
    assert core.election_deadline == deadline
    assert core.counters["rejected_evidence_unknown_peer"] == 1


def test_a_non_candidate_keeps_evidence_but_does_not_campaign():
    core = follower(1, candidate=False)
    deadline = core.election_deadline
    core.evidence(LEADER, KIND, START + STEP)
    assert core.election_deadline == deadline
    # ... but it may back someone else's fast campaign with it.
    assert answer(core.receive(2, fast_request(), START + 2 * STEP), to=2).evidence


def test_a_heartbeat_after_the_evidence_voids_it():
    core = follower(2)
    now = START + STEP
    core.evidence(LEADER, KIND, now)
    core.receive(LEADER, Heartbeat(term=TERM, round=2), now + STEP / 8)
    assert core.election_deadline >= now + config_of(core).election_timeout_min
    assert not answer(core.receive(1, fast_request(), now + STEP / 4)).granted


def test_any_message_from_the_suspect_voids_the_evidence_and_the_scheduled_campaign_waits():
    """Not only heartbeats: a stale response proves the process lives too; the follower then keeps out of
    its own stickiness window (its vote may be part of the live leader's lease)."""
    core = follower(2)
    now = START + STEP
    core.evidence(LEADER, KIND, now)
    core.receive(LEADER, VoteResponse(term=TERM, round=1, granted=False), now + STEP / 8)
    core.tick(core.election_deadline)
    assert core.role is Role.FOLLOWER
    assert core.election_deadline >= START + config_of(core).election_timeout_min
    assert core.counters["fast_failovers_cancelled"] == 1


def test_campaign_stands_at_once_on_evidence_inside_the_window():
    """The lock's campaign(): inside the window only with evidence about the leader."""
    waiting = follower(1)
    waiting.campaign(START + STEP)
    assert waiting.role is Role.FOLLOWER
    core = follower(1)
    core.evidence(LEADER, KIND, START + STEP)
    out = core.campaign(START + STEP)
    assert core.role is Role.PRE_CANDIDATE
    assert {request.suspect for request in messages(out, VoteRequest)} == {LEADER}


# ---------------------------------------------------------------- the voter


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_sticky_voter_with_evidence_of_its_own_grants_and_says_so(pre_vote):
    voter = follower(2)
    voter.evidence(LEADER, KIND, START + STEP)
    response = answer(voter.receive(1, fast_request(pre_vote), START + 2 * STEP))
    assert response.granted and response.evidence
    assert voter.counters["evidence_votes_granted"] == 1
    if not pre_vote:
        assert voter.term == TERM + 1 and voter.voted_for == 1


def test_a_sticky_voter_without_evidence_refuses_a_fast_pre_vote_probes_and_grants_when_evidence_comes():
    voter = follower(2)
    out = voter.receive(1, fast_request(), START + STEP)
    assert not answer(out).granted
    assert out.probes == (LEADER,)
    out = voter.evidence(LEADER, KIND, START + STEP + STEP / 8)
    response = answer(out)
    assert response.granted and response.evidence and response.round == 9
    assert voter.counters["vote_requests_replayed"] == 1


def test_a_sticky_voter_without_evidence_ignores_a_fast_vote_until_evidence_comes():
    voter = follower(2)
    out = voter.receive(1, fast_request(pre_vote=False), START + STEP)
    assert messages(out, VoteResponse) == [] and out.probes == (LEADER,)
    assert voter.term == TERM  # ignored without adopting the term (thesis §4.2.3)
    out = voter.evidence(LEADER, KIND, START + STEP + STEP / 8)
    assert answer(out).granted and answer(out).evidence
    assert voter.term == TERM + 1 and voter.voted_for == 1
    assert events(out, VoteGranted) == [VoteGranted(term=TERM + 1, candidate=1)]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_deferred_request_older_than_a_heartbeat_interval_is_not_answered(pre_vote):
    """The candidate repeats its request every interval; an older one is superseded or abandoned."""
    voter = follower(2)
    voter.receive(1, fast_request(pre_vote=pre_vote), START + STEP)
    out = voter.evidence(LEADER, KIND, START + STEP + interval(voter))
    assert messages(out, VoteResponse) == []
    assert voter.counters["vote_requests_expired"] == 1 and voter.counters["vote_requests_replayed"] == 0


@pytest.mark.parametrize("pre_vote", [True, False])
def test_evidence_never_lifts_stickiness_for_a_normal_request(pre_vote):
    voter = follower(2)
    voter.evidence(LEADER, KIND, START + STEP)
    request = VoteRequest(term=TERM + 1, round=9, pre_vote=pre_vote)
    out = voter.receive(1, request, START + 2 * STEP)
    assert not any(response.granted for response in messages(out, VoteResponse))
    assert voter.voted_for is None


def test_evidence_about_a_suspect_that_did_not_lead_the_term_does_not_lift_stickiness():
    """The voter knows 5 leads term 3, so a request naming 4 as term 3's leader is confused: refused."""
    voter = follower(2)
    voter.evidence(4, KIND, START + STEP)
    request = VoteRequest(term=TERM + 1, round=9, pre_vote=True, suspect=4)
    assert not answer(voter.receive(1, request, START + 2 * STEP)).granted


def test_a_just_started_voter_lifts_its_start_window_only_on_evidence_of_its_own():
    """The start window protects a lease of some leader of a term up to the voter's own; the request is for
    a later term and names that term's leader, so evidence that the suspect is gone covers it too."""
    voter = make_core(node_id=2, members=5, now=START, hard_state=HardState(term=TERM))
    out = voter.receive(1, fast_request(), START + STEP)
    assert not answer(out).granted and out.probes == (LEADER,)
    response = answer(voter.evidence(LEADER, KIND, START + STEP + STEP / 8))
    assert response.granted and response.evidence


def test_a_voter_that_just_voted_lifts_that_window_on_evidence_about_the_suspect():
    voter = make_core(node_id=2, members=5, hard_state=HardState(term=TERM))
    assert answer(voter.receive(3, VoteRequest(term=TERM, round=1), START), to=3).granted
    voter.evidence(LEADER, KIND, START + STEP)
    normal = VoteRequest(term=TERM + 1, round=9, pre_vote=True)
    assert not answer(voter.receive(1, normal, START + STEP)).granted  # sticky: it just voted
    response = answer(voter.receive(1, fast_request(), START + 2 * STEP))
    assert response.granted and response.evidence


def test_no_evidence_lifts_stickiness_for_a_request_of_a_term_not_above_the_voters():
    voter = follower(2)
    voter.evidence(LEADER, KIND, START + STEP)
    assert not answer(voter.receive(1, fast_request(term=TERM), START + 2 * STEP)).granted


def test_evidence_is_stale_after_the_longest_election_timeout():
    voter = follower(2)
    voter.evidence(LEADER, KIND, START + STEP)
    later = START + STEP + config_of(voter).election_timeout_max
    voter.receive(LEADER, Heartbeat(term=TERM, round=2), later - STEP)  # still sticky at `later`
    response = answer(voter.receive(1, fast_request(), later))
    assert not response.granted


def test_a_voter_that_backs_a_fast_pre_vote_holds_its_own_campaign_back():
    voter = follower(2)
    now = START + STEP
    voter.evidence(LEADER, KIND, now)
    assert voter.election_deadline == pytest.approx(now + FAST_STAGGER * interval(voter))
    assert answer(voter.receive(1, fast_request(), now + STEP / 16)).granted
    assert voter.election_deadline >= now + config_of(voter).election_timeout_min


def test_fast_pre_candidates_with_the_same_suspect_back_each_other():
    """Two members that started at the same instant must not refuse each other into a stalemate."""
    rival = follower(2)
    now = START + STEP
    rival.evidence(LEADER, KIND, now)
    rival.tick(rival.election_deadline)
    assert rival.role is Role.PRE_CANDIDATE
    response = answer(rival.receive(1, fast_request(), rival.election_deadline))
    assert response.granted and response.evidence


# ---------------------------------------------------------------- the fast candidate


def test_a_fast_campaign_counts_only_evidence_backed_grants():
    core, now, request = fast_pre_candidate()
    for voter in (2, 3, 4):
        core.receive(voter, backed(request, evidence=False), now)
    assert core.role is Role.PRE_CANDIDATE  # three grants, but only its own evidence: no majority
    core.receive(2, backed(request), now)
    assert core.role is Role.PRE_CANDIDATE
    out = core.receive(3, backed(request), now)
    assert core.role is Role.CANDIDATE and core.term == TERM + 1
    requests = messages(out, VoteRequest)
    assert requests and all(r.suspect == LEADER and not r.pre_vote for r in requests)


def test_a_fast_election_is_won_with_a_majority_of_evidence_and_reported_as_fast():
    core, now, request = fast_pre_candidate()
    core.receive(2, backed(request), now)
    out = core.receive(3, backed(request), now)
    vote = only(messages(out, VoteRequest, to=2))
    assert core.role is Role.CANDIDATE and vote.suspect == LEADER
    core.receive(2, backed(vote), now)
    core.receive(4, backed(vote, evidence=False), now)
    assert core.role is Role.CANDIDATE  # 4's grant is not backed by evidence
    out = core.receive(3, backed(vote), now)
    assert core.role is Role.LEADER and core.is_leader(now)
    assert events(out, BecameLeader) == [BecameLeader(term=TERM + 1, at=now, fast=True)]
    assert core.counters["fast_elections_won"] == 1


def test_a_grant_backed_later_counts_once_the_evidence_arrives():
    core, now, request = fast_pre_candidate()
    core.receive(2, backed(request, evidence=False), now)
    core.receive(3, backed(request, evidence=False), now)
    assert core.role is Role.PRE_CANDIDATE
    core.receive(2, backed(request), now)
    core.receive(3, backed(request), now)
    assert core.role is Role.CANDIDATE


def test_a_fast_campaign_repeats_its_request_to_voters_whose_grant_lacks_evidence():
    core, now, request = fast_pre_candidate()
    core.receive(2, backed(request, evidence=False), now)
    core.receive(3, backed(request), now)
    out = core.tick(now + interval(core))
    assert sorted(recipients(out, VoteRequest)) == [2, 4]  # not the dead leader 5


def test_evidence_backing_is_ignored_in_a_normal_campaign():
    """A normal campaign counts grants as always: the evidence flag cannot help or hurt it."""
    core = make_core(node_id=1, members=5, hard_state=HardState(term=TERM))
    request = only(messages(core.tick(core.election_deadline), VoteRequest, to=2))
    assert core.role is Role.PRE_CANDIDATE and request.suspect == 0
    core.receive(2, backed(request), core.election_deadline)
    core.receive(3, backed(request, evidence=False), core.election_deadline)
    assert core.role is Role.CANDIDATE
    assert core.counters["fast_campaigns_started"] == 0
