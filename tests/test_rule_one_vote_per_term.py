"""Raft §5.2: "each server will vote for at most one candidate in a given term, on a first-come-first-served
basis", and Figure 2: votedFor is persistent state, updated on stable storage before responding to RPCs.

The core's contract (core.Output): the hard state to persist travels in the *same* Output as the messages
that depend on it, so a node can persist it before anything is sent.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import Output
from raft_election.messages import VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, config_of, make_core, messages, only

#: Past the start's stickiness window of a core started at 0 (thesis §4.2.3), with TIMINGS' min of 0.25 s.
LATER = 1.0


def test_a_granted_vote_is_persisted_in_the_same_output():
    """Raft §5.2, Figure 2: votedFor is on stable storage before the vote is sent (same Output)."""
    core = make_core(hard_state=HardState(term=2))
    out = core.receive(2, VoteRequest(term=3, round=9), LATER)
    assert only(messages(out, VoteResponse, to=2)) == (
        VoteResponse(term=3, round=9, granted=True, candidate=True)
    )
    assert out.hard_state == HardState(term=3, voted_for=2)
    assert core.voted_for == 2 and core.hard_state == HardState(term=3, voted_for=2)


def test_a_vote_in_the_current_term_is_persisted_in_the_same_output():
    """Raft §5.2: a first vote within the current term (no term change) is persisted with the grant."""
    core = make_core(hard_state=HardState(term=3))
    out = core.receive(3, VoteRequest(term=3, round=4), LATER)
    assert only(messages(out, VoteResponse, to=3)).granted
    assert out.hard_state == HardState(term=3, voted_for=3)


def test_a_candidate_persists_its_own_vote_with_its_requests():
    """Raft §5.2: a candidate votes for itself; that vote is persisted in the Output that asks for votes."""
    core = make_core(members=5, pre_vote=False, hard_state=HardState(term=6, voted_for=4))
    out = core.tick(core.next_deadline)
    assert core.role is Role.CANDIDATE
    assert out.hard_state == HardState(term=7, voted_for=core.node_id)
    assert {request.term for request in messages(out, VoteRequest)} == {7}


def test_a_second_candidate_in_the_same_term_is_refused():
    """Raft §5.2: at most one vote per term, first come first served.

    The second request arrives after the stickiness window (thesis §4.2.3), so only the one-vote rule
    can refuse it.
    """
    core = make_core(members=5)
    config = config_of(core)
    core.receive(2, VoteRequest(term=1, round=1), LATER)
    for asked_at in (LATER + STEP, LATER + config.election_timeout_min):
        out = core.receive(3, VoteRequest(term=1, round=2), asked_at)
        refusal = VoteResponse(term=1, round=2, granted=False, candidate=True)
        assert only(messages(out, VoteResponse, to=3)) == refusal
        assert out.hard_state is None
        assert core.voted_for == 2


def test_a_candidate_refuses_other_candidates_of_its_own_term():
    """Raft §5.2: a candidate has voted for itself, so it refuses a rival of the same term."""
    core = make_core(pre_vote=False)
    core.tick(core.next_deadline)
    term = core.term
    out = core.receive(2, VoteRequest(term=term, round=3), core.next_deadline - STEP)
    assert not only(messages(out, VoteResponse, to=2)).granted
    assert core.voted_for == core.node_id and core.role is Role.CANDIDATE


def test_the_same_candidate_asking_again_after_the_window_is_granted_again():
    """Raft §5.2 (votedFor is null or candidateId): the one we voted for, asking again, is granted again."""
    core = make_core()
    config = config_of(core)
    core.receive(2, VoteRequest(term=1, round=1), LATER)
    out = core.receive(2, VoteRequest(term=1, round=1), LATER + config.election_timeout_min)
    assert only(messages(out, VoteResponse, to=2)).granted
    assert out.hard_state is None  # nothing new to persist: the same vote
    assert core.voted_for == 2


def test_a_duplicated_request_from_the_candidate_voted_for_is_granted_again():
    """Raft §5.2 (grant if votedFor is null or candidateId): a duplicated request gets the same answer.

    Granting again gives nothing new away (the vote is already that candidate's and already persisted),
    so stickiness (thesis §4.2.3, which protects *another* leader's lease) has no reason to refuse it.
    """
    core = make_core()
    core.receive(2, VoteRequest(term=1, round=1), LATER)
    out = core.receive(2, VoteRequest(term=1, round=1), LATER)  # the network duplicated the request
    assert only(messages(out, VoteResponse, to=2)).granted


def test_a_restarted_core_keeps_its_vote():
    """Raft §5.2, Figure 2: votedFor survives a restart, so a restarted server cannot vote twice in a term."""
    core = make_core(members=5)
    out = core.receive(2, VoteRequest(term=4, round=1), LATER)
    persisted = out.hard_state
    assert persisted == HardState(term=4, voted_for=2)
    restart_at = 5.0
    restarted = make_core(members=5, now=restart_at, hard_state=persisted, seed=99)
    config = config_of(restarted)
    after_window = restart_at + config.election_timeout_min
    refused = restarted.receive(3, VoteRequest(term=4, round=2), after_window)
    assert not only(messages(refused, VoteResponse, to=3)).granted
    assert refused.hard_state is None and restarted.voted_for == 2
    again = restarted.receive(2, VoteRequest(term=4, round=3), after_window)
    assert only(messages(again, VoteResponse, to=2)).granted
    # A new term is a new vote.
    much_later = after_window + 2 * config.election_timeout_max
    new_term = restarted.receive(3, VoteRequest(term=5, round=4), much_later)
    assert only(messages(new_term, VoteResponse, to=3)).granted
    assert new_term.hard_state == HardState(term=5, voted_for=3)


def test_a_vote_resets_the_election_timer():
    """Raft §5.2: granting a vote restarts the election timer (a voter gives its candidate time to win)."""
    core = make_core()
    config = config_of(core)
    old_deadline = core.next_deadline
    voted_at = config.election_timeout_max  # no earlier than the first deadline, past the start window
    core.receive(2, VoteRequest(term=1, round=1), voted_at)
    assert config.election_timeout_min <= core.next_deadline - voted_at <= config.election_timeout_max
    assert old_deadline <= voted_at
    quiet = core.tick(voted_at + config.election_timeout_min - STEP)
    assert quiet.empty and core.role is Role.FOLLOWER


def test_a_refused_vote_does_not_reset_the_election_timer():
    """Raft Figure 2 (rules for followers): only a granted vote restarts the timer, a refusal does not."""
    core = make_core()
    core.receive(2, VoteRequest(term=1, round=1), LATER)
    deadline = core.next_deadline
    core.receive(3, VoteRequest(term=1, round=2), deadline - STEP)
    assert core.next_deadline == deadline


# ---------------------------------------------------------------------- property


requests = st.lists(
    st.tuples(
        st.sampled_from(["request", "request", "request", "tick", "restart"]),
        st.integers(min_value=2, max_value=5),           # sender
        st.integers(min_value=-1, max_value=2),          # term offset from the voter's current term
        st.sampled_from([0.0, STEP, 0.125, 0.25, 0.5]),  # time advance
        st.booleans(),                                   # pre_vote
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(requests)
def test_never_two_votes_in_one_term_even_across_restarts(steps):
    """Raft §5.2: whatever requests arrive, and however often the server restarts from what it persisted,
    it grants at most one vote per term, and every vote it sends (granted, or its own as candidate) was
    in the hard state handed out for persisting no later than that message."""
    now = 0.0
    core = make_core(members=5)
    persisted = HardState()
    votes: dict[int, set[int]] = {}

    def apply(out: Output) -> None:
        nonlocal persisted
        if out.hard_state is not None:
            assert out.hard_state.term >= persisted.term
            persisted = out.hard_state
        for outgoing in out.messages:
            message = outgoing.message
            if isinstance(message, VoteResponse) and message.granted and not message.pre_vote:
                assert persisted == HardState(term=message.term, voted_for=outgoing.to)
                votes.setdefault(message.term, set()).add(outgoing.to)
            if isinstance(message, VoteRequest) and not message.pre_vote:
                assert persisted == HardState(term=message.term, voted_for=core.node_id)
                votes.setdefault(message.term, set()).add(core.node_id)

    for round_, (kind, sender, offset, advance, pre_vote) in enumerate(steps):
        now += advance
        if kind == "restart":
            core = make_core(members=5, now=now, hard_state=persisted, seed=round_)
        elif kind == "tick":
            now = max(now, core.next_deadline)
            apply(core.tick(now))
        else:
            term = max(0, core.term + offset)
            apply(core.receive(sender, VoteRequest(term=term, round=round_, pre_vote=pre_vote), now))
        assert core.hard_state == persisted
    assert all(len(voters) == 1 for voters in votes.values()), votes
