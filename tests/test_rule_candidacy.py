"""SPEC §4, candidacy: "a node may be a voter that never stands for election (``candidate=False``); the lock
toggles this."  RaftCore.set_candidate: "Dropping candidacy abandons a campaign but not a leadership."

A non-candidate still does everything a voter does (Raft §5.2: votes, follows, times out and forgets a
silent leader), it just never starts a (pre-)campaign; HeartbeatResponse.candidate tells the leader which
peers would campaign, for leadership transfer (thesis §3.10).
"""

from __future__ import annotations

import pytest

from raft_election.events import LeaderChanged
from raft_election.messages import Heartbeat, HeartbeatResponse, TimeoutNow, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, config_of, elect, events, grant, make_core, messages, only

START = 1.0
TERM = 3


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_non_candidate_never_campaigns_on_timeout(pre_vote):
    """SPEC §4: candidate=False: timeouts pass without any (pre-)campaign, term unchanged."""
    core = make_core(members=3, candidate=False, pre_vote=pre_vote, hard_state=HardState(term=TERM))
    config = config_of(core)
    for _ in range(30):
        at = core.next_deadline
        out = core.tick(at)
        assert core.role is Role.FOLLOWER and core.term == TERM
        assert out.messages == () and out.hard_state is None
        # The timer is re-armed with a fresh randomized timeout (Raft §5.2).
        assert config.election_timeout_min <= core.next_deadline - at <= config.election_timeout_max


def test_a_non_candidate_forgets_a_silent_leader_on_timeout():
    """Raft §5.2: a timeout means "no viable leader"; a non-candidate clears its known leader too."""
    core = make_core(members=3, candidate=False, hard_state=HardState(term=TERM))
    core.receive(2, Heartbeat(term=TERM, round=1), START)
    assert core.leader_id == 2
    out = core.tick(core.election_deadline)
    assert core.leader_id is None
    assert events(out, LeaderChanged) == [LeaderChanged(leader_id=None, term=TERM)]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_non_candidate_still_votes(pre_vote):
    """SPEC §4: a non-candidate is a voter: it grants (pre-)votes like anyone else."""
    core = make_core(members=3, candidate=False, hard_state=HardState(term=TERM))
    out = core.receive(2, VoteRequest(term=TERM + 1, round=7, pre_vote=pre_vote), START)
    assert only(messages(out, VoteResponse, to=2)).granted
    if not pre_vote:
        assert core.voted_for == 2 and out.hard_state == HardState(term=TERM + 1, voted_for=2)


def test_a_non_candidate_ignores_timeout_now():
    """SPEC §4 with thesis §3.10: told to campaign, a non-candidate still does not."""
    core = make_core(members=3, candidate=False, hard_state=HardState(term=TERM))
    assert core.receive(1, TimeoutNow(term=TERM), START).empty
    assert core.role is Role.FOLLOWER


@pytest.mark.parametrize("pre_vote", [True, False])
def test_set_candidate_false_abandons_a_campaign(pre_vote):
    """RaftCore.set_candidate: dropping candidacy ends a (pre-)campaign at once; late grants are void."""
    core = make_core(members=3, pre_vote=pre_vote, hard_state=HardState(term=TERM))
    request = only(messages(core.tick(core.next_deadline), VoteRequest, to=2))
    term = core.term
    at = core.next_deadline - STEP
    core.set_candidate(False, at)
    assert core.role is Role.FOLLOWER and not core.candidate
    core.receive(2, grant(request), at)
    core.receive(3, grant(request), at)
    assert core.role is Role.FOLLOWER and core.term == term
    core.tick(core.next_deadline)
    assert core.role is Role.FOLLOWER


def test_set_candidate_false_does_not_abandon_a_leadership():
    """RaftCore.set_candidate: a leader keeps leading (the lock releases with step_down, not this)."""
    core = make_core(members=3)
    election = elect(core, now=START)
    out = core.set_candidate(False, election.won_at)
    assert out.empty and core.role is Role.LEADER and core.is_leader(election.won_at)


def test_set_candidate_true_resumes_campaigning_at_the_next_timeout():
    """SPEC §4: a voter that starts standing again campaigns at its next election timeout."""
    core = make_core(members=3, candidate=False, hard_state=HardState(term=TERM))
    core.tick(core.next_deadline)
    deadline = core.next_deadline
    out = core.set_candidate(True, deadline - STEP)
    assert out.empty and core.candidate
    assert core.next_deadline == deadline  # no campaign before the timer fires
    campaign = core.tick(deadline)
    assert core.role is Role.PRE_CANDIDATE
    assert {request.term for request in messages(campaign, VoteRequest)} == {TERM + 1}


def test_heartbeat_responses_report_candidacy():
    """HeartbeatResponse.candidate tells the leader whether this server stands (thesis §3.10 targets)."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    first = core.receive(2, Heartbeat(term=TERM, round=1), START)
    assert only(messages(first, HeartbeatResponse, to=2)).candidate is True
    core.set_candidate(False, START + STEP)
    second = core.receive(2, Heartbeat(term=TERM, round=2), START + 2 * STEP)
    assert only(messages(second, HeartbeatResponse, to=2)) == HeartbeatResponse(term=TERM, round=2,
                                                                                candidate=False)
    stale = core.receive(2, Heartbeat(term=TERM - 1, round=3), START + 3 * STEP)
    assert only(messages(stale, HeartbeatResponse, to=2)).candidate is False
    core.set_candidate(True, START + 4 * STEP)
    third = core.receive(2, Heartbeat(term=TERM, round=4), START + 5 * STEP)
    assert only(messages(third, HeartbeatResponse, to=2)).candidate is True


def test_a_non_candidate_is_never_chosen_as_transfer_target():
    """Thesis §3.10 with SPEC §4: the leader learns candidacy from heartbeat responses and skips voters."""
    voter = make_core(node_id=2, members=3, candidate=False)
    leader = make_core(node_id=1, members=3)
    election = elect(leader, now=START)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    t = election.won_at
    leader.receive(3, HeartbeatResponse(term=beat.term, round=beat.round, candidate=True), t)
    answer = only(messages(voter.receive(1, beat, t), HeartbeatResponse, to=1))
    leader.receive(2, answer, t + STEP)  # the most recent answer, but from a voter only
    target, _ = leader.transfer_leadership(t + 2 * STEP)
    assert target == 3
