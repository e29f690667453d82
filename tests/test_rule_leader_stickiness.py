"""Thesis §4.2.3, disruptive servers: "if a server receives a RequestVote request within the minimum
election timeout of hearing from a current leader, it does not update its term or grant its vote."

SPEC §4: this applies to vote and pre-vote requests alike, except leadership transfers; a node that just
started treats its start as having heard from a leader, and granting a vote counts too (the vote round is
the start of the winner's lease, thesis §6.4.1).  A leader itself never grants.
"""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import Output, RaftCore
from raft_election.messages import Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, ack, config_of, elect, make_core, messages, only

HEARD_AT = 2.0  # when the follower last heard its leader (node 2) in the tests below
TERM = 3


def follower_of_2() -> RaftCore:
    """A follower of term 3 that heard from its leader, node 2, at HEARD_AT."""
    core = make_core(members=5, hard_state=HardState(term=TERM))
    core.receive(2, Heartbeat(term=TERM, round=1), HEARD_AT)
    assert core.leader_id == 2
    return core


def window(core: RaftCore) -> float:
    return config_of(core).election_timeout_min


def assert_ignored(core: RaftCore, out: Output, *, term: int, voted_for: Optional[int]) -> None:
    """Nothing answered, nothing persisted, nothing reported, term and vote unchanged."""
    assert out.empty
    assert core.term == term and core.voted_for == voted_for


@pytest.mark.parametrize("after", [0.0, STEP, 0.125, 0.25 - STEP])
def test_a_vote_request_soon_after_a_heartbeat_is_ignored_without_adopting_its_term(after):
    """Thesis §4.2.3: within election_timeout_min of hearing from the leader: no new term, no vote."""
    core = follower_of_2()
    assert after < window(core)
    deadline = core.next_deadline
    out = core.receive(3, VoteRequest(term=TERM + 1, round=5), HEARD_AT + after)
    assert_ignored(core, out, term=TERM, voted_for=None)
    assert core.leader_id == 2 and core.role is Role.FOLLOWER
    assert core.next_deadline == deadline
    assert core.counters["votes_ignored_sticky"] == 1


def test_a_pre_vote_soon_after_a_heartbeat_is_refused():
    """Thesis §4.2.3 with §9.6: a pre-vote inside the window is refused (with the receiver's own term)."""
    core = follower_of_2()
    out = core.receive(3, VoteRequest(term=TERM + 1, round=5, pre_vote=True), HEARD_AT + window(core) - STEP)
    assert only(messages(out, VoteResponse, to=3)) == VoteResponse(term=TERM, round=5, granted=False,
                                                                   pre_vote=True, candidate=True)
    assert core.term == TERM and out.hard_state is None


def test_a_same_term_vote_request_soon_after_a_heartbeat_is_refused():
    """Thesis §4.2.3: even with no vote cast in this term yet, the window keeps the vote."""
    core = follower_of_2()
    assert core.voted_for is None
    out = core.receive(3, VoteRequest(term=TERM, round=5), HEARD_AT + STEP)
    assert not only(messages(out, VoteResponse, to=3)).granted
    assert core.voted_for is None and out.hard_state is None


@pytest.mark.parametrize("pre_vote", [True, False])
def test_after_the_window_requests_are_granted(pre_vote):
    """Thesis §4.2.3: once election_timeout_min has passed without the leader, the follower may vote."""
    core = follower_of_2()
    out = core.receive(3, VoteRequest(term=TERM + 1, round=5, pre_vote=pre_vote), HEARD_AT + window(core))
    assert only(messages(out, VoteResponse, to=3)).granted
    assert core.term == (TERM if pre_vote else TERM + 1)


@settings(max_examples=60)
@given(steps=st.integers(min_value=0, max_value=64), pre_vote=st.booleans())
def test_the_window_is_exactly_election_timeout_min(steps, pre_vote):
    """Thesis §4.2.3: a request is granted if and only if election_timeout_min has passed since the leader
    was last heard from."""
    core = follower_of_2()
    elapsed = steps * STEP
    out = core.receive(3, VoteRequest(term=TERM + 1, round=5, pre_vote=pre_vote), HEARD_AT + elapsed)
    answers = messages(out, VoteResponse, to=3)
    granted = bool(answers) and answers[0].granted
    assert granted == (elapsed >= window(core))


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_node_that_just_started_counts_as_having_heard_from_a_leader(pre_vote):
    """SPEC §4 (thesis §4.2.3, §6.4.1): a fast restart must not hand out a vote that breaks a live lease."""
    started = 5.0
    core = make_core(members=5, now=started, hard_state=HardState(term=TERM))
    request = VoteRequest(term=TERM + 1, round=5, pre_vote=pre_vote)
    early = core.receive(3, request, started + window(core) - STEP)
    assert not any(answer.granted for answer in messages(early, VoteResponse))
    assert core.term == TERM and early.hard_state is None
    late = core.receive(3, VoteRequest(term=TERM + 1, round=6, pre_vote=pre_vote), started + window(core))
    assert only(messages(late, VoteResponse, to=3)).granted


@pytest.mark.parametrize("pre_vote", [True, False])
def test_granting_a_vote_counts_as_hearing_from_a_leader(pre_vote):
    """SPEC §4 (thesis §6.4.1): the vote round starts the winner's lease, so a voter is sticky after it."""
    core = make_core(members=5, hard_state=HardState(term=TERM))
    voted_at = 3.0
    core.receive(2, VoteRequest(term=TERM + 1, round=1), voted_at)
    assert core.voted_for == 2
    rival = VoteRequest(term=TERM + 2, round=5, pre_vote=pre_vote)
    early = core.receive(4, rival, voted_at + window(core) - STEP)
    assert not any(answer.granted for answer in messages(early, VoteResponse))
    assert core.term == TERM + 1 and core.voted_for == 2
    late = core.receive(4, VoteRequest(term=TERM + 2, round=6, pre_vote=pre_vote), voted_at + window(core))
    assert only(messages(late, VoteResponse, to=4)).granted


def test_a_leadership_transfer_request_bypasses_the_window():
    """Thesis §3.10/§4.2.3: a transfer's vote request is granted even right after a heartbeat (the old
    leader gave up its lease before asking for it)."""
    core = follower_of_2()
    out = core.receive(3, VoteRequest(term=TERM + 1, round=5, transfer=True), HEARD_AT + STEP)
    assert only(messages(out, VoteResponse, to=3)) == (
        VoteResponse(term=TERM + 1, round=5, granted=True, candidate=True)
    )
    assert core.term == TERM + 1 and core.voted_for == 3
    assert out.hard_state == HardState(term=TERM + 1, voted_for=3)


def test_a_leader_refuses_every_vote_and_pre_vote():
    """Thesis §4.2.3: a leader is its own current leader: it never grants, and ignores higher terms."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    election = elect(core, now=HEARD_AT)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    for peer in (2, 3):
        core.receive(peer, ack(beat), election.won_at)
    term = core.term
    at = election.won_at + STEP
    ignored = core.receive(2, VoteRequest(term=term + 1, round=5), at)
    assert_ignored(core, ignored, term=term, voted_for=core.node_id)
    pre = core.receive(2, VoteRequest(term=term + 1, round=6, pre_vote=True), at)
    assert only(messages(pre, VoteResponse, to=2)) == VoteResponse(term=term, round=6, granted=False,
                                                                   pre_vote=True, candidate=True)
    same = core.receive(3, VoteRequest(term=term, round=7), at)
    assert not only(messages(same, VoteResponse, to=3)).granted
    assert core.role is Role.LEADER and core.is_leader(at)


def test_an_ignored_request_leaves_the_follower_following_its_leader():
    """Thesis §4.2.3: the disruptive request changes nothing, so the leader's next heartbeat is accepted."""
    core = follower_of_2()
    core.receive(3, VoteRequest(term=TERM + 5, round=5), HEARD_AT + STEP)
    out = core.receive(2, Heartbeat(term=TERM, round=2), HEARD_AT + 2 * STEP)
    assert only(messages(out, HeartbeatResponse, to=2)).term == TERM
    assert core.leader_id == 2 and core.term == TERM


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_server_never_votes_for_itself_inside_its_own_window(pre_vote):
    """Thesis §4.2.3 with §6.4.1: a vote this server granted may be part of the winner's lease, so it may not
    vote for itself (start an election) within election_timeout_min of that grant either, even when asked
    to campaign at once (a lock's acquire()); it campaigns as soon as the window closes instead.

    Regression: found by the lock simulation, where a waiter that had just voted for the new holder (and
    not yet heard its first heartbeat) campaigned at once and won a second lease alongside the holder's.
    """
    core = make_core(members=3, pre_vote=pre_vote, now=0.0)
    config = config_of(core)
    granted_at = config.election_timeout_min + STEP  # past the start-up window
    out = core.receive(2, VoteRequest(term=1, round=3), granted_at)
    assert only(messages(out, VoteResponse, to=2)).granted
    out = core.campaign(granted_at + STEP)
    assert not messages(out, VoteRequest) and core.term == 1 and core.voted_for == 2
    window_end = granted_at + config.election_timeout_min
    assert window_end <= core.next_deadline <= window_end + config.heartbeat_interval
    out = core.tick(core.next_deadline)
    request = only(messages(out, VoteRequest, to=3))
    assert request.pre_vote is pre_vote
