"""Thesis §9.6, pre-vote: "a candidate would first ask other servers whether its log was up-to-date enough
to get their vote.  Only if the candidate believed it could get votes from a majority of the cluster would
it increment its term and start a normal election."

SPEC §4: a node that times out first asks whether it *would* win, without raising any term; pre-vote traffic
never changes the receiver's term; a node that was partitioned away and comes back does not disrupt a
healthy leader.
"""

from __future__ import annotations

import pytest

from raft_election.events import TermChanged
from raft_election.messages import Heartbeat, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.sim import SimulatedCluster
from raft_election.storage import HardState
from tests.coretools import STEP, config_of, events, grant, make_core, messages, only, recipients

LATER = 1.0  # past the start's stickiness window (thesis §4.2.3)


def test_a_pre_candidate_does_not_raise_its_term():
    """Thesis §9.6: the pre-vote phase changes neither the term nor the vote, so nothing is persisted."""
    core = make_core(members=5, hard_state=HardState(term=4, voted_for=3))
    out = core.tick(core.next_deadline)
    assert core.role is Role.PRE_CANDIDATE
    assert core.term == 4 and core.voted_for == 3
    assert out.hard_state is None
    assert events(out, TermChanged) == []


def test_pre_vote_requests_carry_the_next_term():
    """Thesis §9.6: the pre-vote asks about the term the node *would* campaign in: its term + 1."""
    core = make_core(members=5, hard_state=HardState(term=4))
    out = core.tick(core.next_deadline)
    requests = messages(out, VoteRequest)
    assert sorted(recipients(out, VoteRequest)) == list(config_of(core).peer_ids)
    assert {(request.term, request.pre_vote, request.transfer) for request in requests} == {(5, True, False)}
    assert len({request.round for request in requests}) == 1


@pytest.mark.parametrize("proposed_shift", [1, 2, 10])
def test_a_receiver_grants_a_pre_vote_without_adopting_its_term(proposed_shift):
    """Thesis §9.6: granting a pre-vote records nothing: no term change, no vote, no timer reset."""
    core = make_core(hard_state=HardState(term=4, voted_for=2))
    deadline = core.next_deadline
    proposed = 4 + proposed_shift
    out = core.receive(3, VoteRequest(term=proposed, round=8, pre_vote=True), LATER)
    assert only(messages(out, VoteResponse, to=3)) == VoteResponse(term=proposed, round=8, granted=True,
                                                                   pre_vote=True, candidate=True)
    assert core.term == 4 and core.voted_for == 2
    assert out.hard_state is None and events(out) == []
    assert core.next_deadline == deadline


def test_a_granted_pre_vote_is_not_a_vote():
    """Thesis §9.6: after granting 2 a pre-vote for term t, the real vote of term t is still free."""
    core = make_core(hard_state=HardState(term=4))
    core.receive(2, VoteRequest(term=5, round=1, pre_vote=True), LATER)
    out = core.receive(3, VoteRequest(term=5, round=2), LATER)
    assert only(messages(out, VoteResponse, to=3)).granted
    assert core.voted_for == 3


def test_a_refused_pre_vote_does_not_change_the_receivers_term():
    """Thesis §9.6 with §4.2.3: a pre-vote refused for stickiness leaves the receiver's term alone."""
    core = make_core(hard_state=HardState(term=4))
    core.receive(2, Heartbeat(term=4, round=1), LATER)
    out = core.receive(3, VoteRequest(term=9, round=2, pre_vote=True), LATER + STEP)
    assert only(messages(out, VoteResponse, to=3)) == VoteResponse(term=4, round=2, granted=False,
                                                                   pre_vote=True, candidate=True)
    assert core.term == 4 and out.hard_state is None and events(out) == []


def test_a_pre_vote_for_a_term_not_above_the_receivers_is_refused_with_its_term():
    """Thesis §9.6: a receiver would not vote in a term it has already reached; it answers with its term."""
    core = make_core(hard_state=HardState(term=5))
    out = core.receive(3, VoteRequest(term=5, round=2, pre_vote=True), LATER)
    assert only(messages(out, VoteResponse, to=3)) == VoteResponse(term=5, round=2, granted=False,
                                                                   pre_vote=True, candidate=True)


def test_a_pre_vote_rejected_with_a_higher_term_makes_the_pre_candidate_follow_that_term():
    """Raft §5.1 via thesis §9.6: a refusal carrying a higher term updates the pre-candidate's term."""
    core = make_core(hard_state=HardState(term=4, voted_for=1))
    request = only(messages(core.tick(core.next_deadline), VoteRequest, to=2))
    out = core.receive(2, VoteResponse(term=7, round=request.round, granted=False, pre_vote=True), LATER)
    assert core.role is Role.FOLLOWER
    assert core.term == 7 and core.voted_for is None
    assert out.hard_state == HardState(term=7, voted_for=None)
    assert events(out, TermChanged) == [TermChanged(term=7)]


def test_a_pre_candidate_with_a_majority_starts_the_real_election():
    """Thesis §9.6: only once a majority would vote does it raise its term and ask for real votes."""
    core = make_core(members=3, hard_state=HardState(term=4))
    pre = only(messages(core.tick(core.next_deadline), VoteRequest, to=2))
    out = core.receive(2, grant(pre), LATER)
    assert core.role is Role.CANDIDATE and core.term == 5
    assert out.hard_state == HardState(term=5, voted_for=core.node_id)
    assert {(request.term, request.pre_vote) for request in messages(out, VoteRequest)} == {(5, False)}


def test_a_pre_candidate_that_hears_the_leader_goes_back_to_following():
    """Thesis §9.6: a pre-candidate that rejoins a live leader's term simply follows it, term unchanged."""
    core = make_core(hard_state=HardState(term=4))
    core.tick(core.next_deadline)
    assert core.role is Role.PRE_CANDIDATE
    core.receive(2, Heartbeat(term=4, round=3), LATER)
    assert core.role is Role.FOLLOWER and core.leader_id == 2 and core.term == 4


def test_an_isolated_node_keeps_its_term_through_many_timeouts():
    """Thesis §9.6: with nobody answering, every timeout starts a new pre-vote, never an election."""
    core = make_core(hard_state=HardState(term=4))
    for _ in range(50):
        out = core.tick(core.next_deadline)
        assert core.role is Role.PRE_CANDIDATE
        assert {request.term for request in messages(out, VoteRequest)} == {5}
        assert out.hard_state is None
    assert core.term == 4


def test_without_pre_vote_the_term_rises_on_every_timeout():
    """Raft §5.2 (pre_vote=False): each timeout starts an election, raising the term each time."""
    core = make_core(hard_state=HardState(term=4), pre_vote=False)
    for timeouts in range(1, 51):
        out = core.tick(core.election_deadline)
        assert core.role is Role.CANDIDATE
        assert core.term == 4 + timeouts
        assert out.hard_state == HardState(term=4 + timeouts, voted_for=core.node_id)


def partitioned_follower_rejoins(pre_vote: bool) -> tuple[SimulatedCluster, int, int, int]:
    """Run a 5-member cluster, cut one follower off for many election timeouts, heal; return the cluster,
    the leader and term before the cut, and the follower."""
    cluster = SimulatedCluster(5, seed=7, pre_vote=pre_vote)
    leader = cluster.wait_for_leader()
    term = cluster.terms[leader]
    follower = next(node for node in sorted(cluster.nodes) if node != leader)
    cluster.isolate(follower)
    cluster.run_for(20 * cluster.configs[follower].election_timeout_max)
    assert cluster.terms[leader] == term and cluster.leader() == leader
    return cluster, leader, term, follower


def term_changes(cluster: SimulatedCluster) -> int:
    """How many TermChanged events all servers reported so far."""
    return sum(isinstance(event, TermChanged) for node in cluster.nodes for _, event in cluster.events(node))


def test_a_partitioned_node_keeps_its_term_and_does_not_disrupt_the_leader_on_rejoin():
    """Thesis §9.6: a node partitioned for many timeouts keeps its term, and rejoining does not depose or
    re-elect the healthy leader, nor raise anybody's term."""
    cluster, leader, term, follower = partitioned_follower_rejoins(pre_vote=True)
    assert cluster.terms[follower] == term
    elections_before = term_changes(cluster)
    cluster.heal()
    cluster.run_for(10 * cluster.configs[follower].election_timeout_max)
    assert cluster.stable_leader() == leader
    assert set(cluster.terms.values()) == {term}
    assert term_changes(cluster) == elections_before


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader():
    """Thesis §9.6's motivation, the control experiment: without pre-vote the partitioned node's term climbs
    and, on rejoin, forces the cluster into a higher term."""
    cluster, _, term, follower = partitioned_follower_rejoins(pre_vote=False)
    assert cluster.terms[follower] > term
    cluster.heal()
    cluster.run_for(10 * cluster.configs[follower].election_timeout_max)
    assert min(cluster.terms.values()) > term
