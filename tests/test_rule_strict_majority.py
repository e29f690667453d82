"""Raft §5.2: "A candidate wins an election if it receives votes from a majority of the servers in the full
cluster for the same term."  SPEC §4: a strict majority of the *configured* members, itself included.

messages.py: "a delayed or duplicated response is never counted twice or for the wrong campaign" — every
way a response can be stale (wrong round, wrong term, wrong pre-vote flag, duplicate, unknown sender,
arriving after the campaign ended) is constructed below and must not count.  Pre-votes (thesis §9.6) need
the same strict majority.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import RaftCore
from raft_election.messages import MAX_ROUND, Heartbeat, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, config_of, grant, make_core, messages, only

START = 1.0  # when the tests start a campaign: past the start's stickiness window


def strict_majority(members: int) -> int:
    """The smallest number of members that is more than half of them."""
    return next(k for k in range(members + 1) if 2 * k > members)


def campaign(members: int, *, pre_vote: bool, term: int = 3) -> tuple[RaftCore, VoteRequest]:
    """A core of a ``members`` cluster that just started campaigning (pre-vote or vote phase)."""
    core = make_core(members=members, pre_vote=pre_vote, hard_state=HardState(term=term))
    out = core.tick(max(START, core.next_deadline))
    assert core.role is campaigning(pre_vote)
    return core, only(messages(out, VoteRequest, to=2))


def campaigning(pre_vote: bool) -> Role:
    """The role of a campaign still in its (pre-)vote phase."""
    return Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE


def next_phase(pre_vote: bool) -> Role:
    """The role a won (pre-)vote phase leads to."""
    return Role.CANDIDATE if pre_vote else Role.LEADER


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre_vote", "vote"])
@pytest.mark.parametrize("members", [2, 3, 4, 5, 6, 7])
def test_a_campaign_is_won_exactly_at_a_strict_majority(members, pre_vote):
    """Raft §5.2 / thesis §9.6: (pre-)votes from a strict majority of the configured members, self included.

    3 of 5, 3 of 4 (2 of 4 is not a majority), 2 of 2, 4 of 7, ...
    """
    core, request = campaign(members, pre_vote=pre_vote)
    peers = list(config_of(core).peer_ids)
    needed = strict_majority(members) - 1  # the campaigner's own vote counts
    won = next_phase(pre_vote)
    for granted, peer in enumerate(peers, start=1):
        core.receive(peer, grant(request), START)
        if granted < needed:
            assert core.role is not won, f"won with {granted + 1} of {members}"
        else:
            assert core.role is won
            break


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre_vote", "vote"])
def test_a_single_member_wins_at_once(pre_vote):
    """Raft §5.2: alone, the candidate's own vote is a majority: leader at the first timeout."""
    core = make_core(members=1, pre_vote=pre_vote)
    deadline = core.next_deadline
    out = core.tick(deadline)
    assert core.role is Role.LEADER and core.is_leader(deadline)
    assert core.term == 1
    assert out.messages == ()


def test_two_of_four_is_not_a_majority():
    """Raft §5.2: half of an even cluster is not a majority, so two halves cannot both elect a leader."""
    core, request = campaign(4, pre_vote=False)
    core.receive(2, grant(request), START)
    assert core.role is Role.CANDIDATE
    core.receive(3, grant(request, granted=False), START)
    core.receive(4, grant(request, granted=False), START)
    assert core.role is Role.CANDIDATE


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre_vote", "vote"])
def test_a_duplicated_grant_is_counted_once(pre_vote):
    """messages.py: a duplicated response is never counted twice."""
    core, request = campaign(5, pre_vote=pre_vote)
    for _ in range(4):
        core.receive(2, grant(request), START)
    assert core.role is campaigning(pre_vote)
    assert core.counters["rejected_duplicate_response"] == 3
    core.receive(3, grant(request), START)
    assert core.role is next_phase(pre_vote)


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre_vote", "vote"])
def test_refusals_do_not_count(pre_vote):
    """Raft §5.2: only granted votes count (a refusal carries the voter's own term, here the same)."""
    core, request = campaign(3, pre_vote=pre_vote)
    refusal = VoteResponse(term=core.term, round=request.round, granted=False, pre_vote=pre_vote)
    core.receive(2, refusal, START)
    core.receive(3, refusal, START)
    assert core.role is campaigning(pre_vote)


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre_vote", "vote"])
@pytest.mark.parametrize("shift", [1, -1, 2**31])
def test_a_grant_for_another_round_does_not_count(pre_vote, shift):
    """messages.py: responses whose round is not the campaign's are ignored."""
    core, request = campaign(3, pre_vote=pre_vote)
    wrong = VoteResponse(term=request.term, round=(request.round + shift) & MAX_ROUND, granted=True,
                         pre_vote=pre_vote)
    core.receive(2, wrong, START)
    core.receive(3, wrong, START)
    assert core.role is campaigning(pre_vote)
    assert core.counters["rejected_stale_response"] == 2


def test_pre_vote_grants_of_an_earlier_pre_campaign_do_not_count():
    """A pre-candidate that times out asks again for the *same* term; only the new round's grants count."""
    core, first = campaign(3, pre_vote=True)
    second = only(messages(core.tick(core.election_deadline), VoteRequest, to=2))
    assert second.term == first.term and second.round != first.round
    core.receive(2, grant(first), core.next_deadline - STEP)
    assert core.role is Role.PRE_CANDIDATE
    core.receive(2, grant(second), core.next_deadline - STEP)
    assert core.role is Role.CANDIDATE


def test_votes_of_an_earlier_election_do_not_count():
    """Raft §5.2: votes are for one term; grants for the previous election's term are dropped."""
    core, first = campaign(3, pre_vote=False)
    core.tick(core.election_deadline)  # the first election times out; a new one, one term higher
    assert core.term == first.term + 1
    core.receive(2, grant(first), core.next_deadline - STEP)
    core.receive(3, grant(first), core.next_deadline - STEP)
    assert core.role is Role.CANDIDATE
    assert core.counters["rejected_stale_term"] == 2


@pytest.mark.parametrize("term_shift", [-1, 1, 5])
def test_a_pre_vote_grant_for_another_term_does_not_count(term_shift):
    """Thesis §9.6: a pre-vote grant counts only for the term the pre-candidate proposed (its term + 1)."""
    core, request = campaign(3, pre_vote=True)
    odd = VoteResponse(term=request.term + term_shift, round=request.round, granted=True, pre_vote=True)
    core.receive(2, odd, START)
    core.receive(3, odd, START)
    assert core.role is Role.PRE_CANDIDATE
    assert core.term == request.term - 1  # a pre-vote grant never raises the term


def test_pre_vote_grants_do_not_count_as_votes():
    """Thesis §9.6: the real election needs its own majority of real votes, even from the same voters.

    The late pre-vote grants (same term as the election, stale round and flag) must not count either.
    """
    core, pre = campaign(5, pre_vote=True)
    core.receive(2, grant(pre), START)
    out = core.receive(3, grant(pre), START)
    assert core.role is Role.CANDIDATE
    vote_request = only(messages(out, VoteRequest, to=2))
    assert vote_request.term == pre.term == core.term
    core.receive(4, grant(pre), START)  # a late pre-vote grant: same term, but a pre-vote
    forged = VoteResponse(term=core.term, round=vote_request.round, granted=True, pre_vote=True)
    core.receive(5, forged, START)      # right round and term, wrong flag
    assert core.role is Role.CANDIDATE
    core.receive(2, grant(vote_request), START)
    assert core.role is Role.CANDIDATE  # 2 of 5
    core.receive(3, grant(vote_request), START)
    assert core.role is Role.LEADER


def test_a_real_vote_does_not_count_as_a_pre_vote():
    """Thesis §9.6: a pre-candidate counts only pre-vote grants (a vote for its current term is stale)."""
    core, request = campaign(3, pre_vote=True)
    stale = VoteResponse(term=core.term, round=request.round, granted=True, pre_vote=False)
    core.receive(2, stale, START)
    core.receive(3, stale, START)
    assert core.role is Role.PRE_CANDIDATE


@pytest.mark.parametrize("sender", [1, 9])
def test_grants_from_non_members_do_not_count(sender):
    """Raft §5.2: a majority of the configured members; the candidate itself and strangers are not voters."""
    core, request = campaign(3, pre_vote=False)
    core.receive(sender, grant(request), START)
    assert core.role is Role.CANDIDATE
    assert core.counters["rejected_unknown_sender"] == 1


def test_grants_arriving_after_the_campaign_was_lost_do_not_count():
    """Raft §5.2: a candidate that hears from the term's leader returns to follower; late grants are void."""
    core, request = campaign(3, pre_vote=False)
    core.receive(3, Heartbeat(term=core.term, round=77), START)
    assert core.role is Role.FOLLOWER and core.leader_id == 3
    core.receive(2, grant(request), START)
    assert core.role is Role.FOLLOWER


def test_grants_arriving_after_a_candidacy_was_dropped_do_not_count():
    """A campaign abandoned by set_candidate(False) cannot be won by its late grants."""
    core, request = campaign(3, pre_vote=False)
    core.set_candidate(False, START)
    core.receive(2, grant(request), START)
    assert core.role is Role.FOLLOWER


# ---------------------------------------------------------------------- property

responses = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3, 4, 5, 9]),  # sender: itself, peers, a stranger
        st.integers(min_value=-1, max_value=2),  # term relative to what the phase expects
        st.sampled_from([0, 0, 1, -1]),          # round relative to the campaign's
        st.booleans(),                           # pre_vote flag
        st.booleans(),                           # granted
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(pre_vote_phase=st.booleans(), replies=responses)
def test_only_distinct_valid_grants_of_a_majority_win(pre_vote_phase, replies):
    """Raft §5.1/§5.2, thesis §9.6: whatever mix of stale, duplicated, forged and foreign responses arrives,
    the phase is won exactly when distinct members' valid grants (right term, round and flag) plus the
    campaigner's own make a strict majority; a response with a higher term (other than a pre-vote grant,
    which merely echoes the proposed term) makes it follow that term instead.
    """
    core, request = campaign(5, pre_vote=pre_vote_phase, term=3)
    members = config_of(core).members
    term = core.term
    expected_term = term + 1 if pre_vote_phase else term
    counted: set[int] = set()
    outcome = "campaigning"
    for sender, term_shift, round_shift, flag, granted in replies:
        round_ = (request.round + round_shift) & MAX_ROUND
        message = VoteResponse(term=expected_term + term_shift, round=round_, granted=granted, pre_vote=flag)
        core.receive(sender, message, START)
        if outcome != "campaigning" or sender not in members or sender == core.node_id:
            continue
        if message.term > term and not (flag and granted):
            outcome = "deposed"
            deposed_term = message.term
        elif (granted and flag == pre_vote_phase and message.term == expected_term
              and message.round == request.round):
            counted.add(sender)
            if len(counted) + 1 >= strict_majority(len(members)):
                outcome = "won"
        if outcome == "campaigning":
            assert core.role is campaigning(pre_vote_phase)
            assert core.term == term
        elif outcome == "won":
            # Won this phase; a pre-vote win starts the real election at once.
            assert core.role is next_phase(pre_vote_phase)
            assert core.term == expected_term
            break
        else:
            assert core.role is Role.FOLLOWER
            assert core.term == deposed_term
            break
