"""Raft §5.1, terms: "Current terms are exchanged whenever servers communicate; if one server's current term
is smaller than the other's, then it updates its current term to the larger value.  If a candidate or leader
discovers that its term is out of date, it immediately reverts to follower state.  If a server receives a
request with a stale term number, it rejects the request."

Exceptions (tested in their own modules too): pre-vote traffic never changes the receiver's term (thesis
§9.6), and a vote request inside the stickiness window is ignored without adopting its term (thesis
§4.2.3).  Roles change only along the allowed transitions (etcd: a follower never becomes leader without an
election, a leader never campaigns without stepping down); network input never makes the core raise.
"""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings

from raft_election.core import RaftCore
from raft_election.errors import IllegalTransitionError
from raft_election.events import LostLeadership, TermChanged
from raft_election.messages import (
    MESSAGE_TYPES,
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
from tests.coretools import STEP, actions, any_message, drive, elect, events, make_core, messages, only

LATER = 1.0  # past the start's stickiness window
TERM = 4
HIGHER = TERM + 2

#: (message with a higher term from node 2, the vote expected afterwards, the leader expected afterwards)
HIGHER_TERM_MESSAGES: list[tuple[Message, Optional[int], Optional[int]]] = [
    (Heartbeat(term=HIGHER, round=1), None, 2),
    (HeartbeatResponse(term=HIGHER, round=1, candidate=True), None, None),
    (VoteRequest(term=HIGHER, round=1), 2, None),  # adopted, then the (free) vote of the new term granted
    (VoteResponse(term=HIGHER, round=1, granted=False), None, None),
    (VoteResponse(term=HIGHER, round=1, granted=True), None, None),
    (VoteResponse(term=HIGHER, round=1, granted=False, pre_vote=True), None, None),
    (TimeoutNow(term=HIGHER), None, 2),
    (Resign(term=HIGHER), None, None),
]


@pytest.mark.parametrize(("message", "vote", "leader"), HIGHER_TERM_MESSAGES,
                         ids=[type(m).__name__ + str(i) for i, (m, _, _) in enumerate(HIGHER_TERM_MESSAGES)])
def test_a_follower_adopts_a_higher_term_from_any_message(message, vote, leader):
    """Raft §5.1: adopt the larger term, clear the vote of the old term, report it, persist it.

    (The receiver does not stand for election, so a TimeoutNow is adopted but not acted on.)
    """
    core = make_core(members=3, candidate=False, hard_state=HardState(term=TERM, voted_for=3))
    out = core.receive(2, message, LATER)
    assert core.term == HIGHER and core.role is Role.FOLLOWER
    assert core.voted_for == vote
    assert core.leader_id == leader
    assert out.hard_state == HardState(term=HIGHER, voted_for=vote)
    assert events(out, TermChanged) == [TermChanged(term=HIGHER)]


@pytest.mark.parametrize("pre_vote", [True, False])
@pytest.mark.parametrize("message", [
    Heartbeat(term=HIGHER, round=1),
    HeartbeatResponse(term=HIGHER, round=1, candidate=True),
    VoteResponse(term=HIGHER, round=1, granted=False),
    Resign(term=HIGHER),
], ids=lambda m: type(m).__name__)
def test_a_candidate_that_discovers_a_higher_term_reverts_to_follower(message, pre_vote):
    """Raft §5.1: a (pre-)candidate with an out-of-date term immediately reverts to follower."""
    core = make_core(members=3, pre_vote=pre_vote, hard_state=HardState(term=TERM))
    core.tick(core.next_deadline)
    assert core.role is (Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE)
    out = core.receive(2, message, core.next_deadline - STEP)
    assert core.role is Role.FOLLOWER and core.term == HIGHER and core.voted_for is None
    assert out.hard_state == HardState(term=HIGHER, voted_for=None)
    assert events(out, TermChanged) == [TermChanged(term=HIGHER)]


@pytest.mark.parametrize("message", [
    Heartbeat(term=HIGHER, round=1),
    HeartbeatResponse(term=HIGHER, round=1, candidate=True),
    VoteResponse(term=HIGHER, round=1, granted=False),
    Resign(term=HIGHER),
    VoteRequest(term=HIGHER, round=1, transfer=True),
], ids=lambda m: type(m).__name__)
def test_a_leader_that_discovers_a_higher_term_reverts_to_follower(message):
    """Raft §5.1: a leader with an out-of-date term steps down at once (and stops claiming the lease)."""
    core = make_core(members=3, hard_state=HardState(term=TERM - 1))
    election = elect(core, now=LATER)
    at = election.won_at + STEP
    out = core.receive(2, message, at)
    assert core.role is Role.FOLLOWER and core.term == HIGHER and not core.is_leader(at)
    assert [type(e) for e in events(out) if isinstance(e, (LostLeadership, TermChanged))] == [
        LostLeadership, TermChanged]
    assert out.hard_state is not None and out.hard_state.term == HIGHER


@pytest.mark.parametrize("message", [
    VoteRequest(term=HIGHER, round=1, pre_vote=True),                 # thesis §9.6
    VoteResponse(term=HIGHER, round=1, granted=True, pre_vote=True),  # thesis §9.6: echoes a proposal
], ids=["pre_vote_request", "pre_vote_grant"])
def test_pre_vote_traffic_never_changes_the_receivers_term(message):
    """Thesis §9.6: the exception to §5.1: pre-vote messages carry proposed terms, not current ones."""
    core = make_core(members=3, hard_state=HardState(term=TERM, voted_for=3))
    out = core.receive(2, message, LATER)
    assert core.term == TERM and core.voted_for == 3
    assert out.hard_state is None and events(out, TermChanged) == []


def test_a_lower_term_heartbeat_is_answered_with_the_current_term():
    """Raft §5.1: reject the stale request, and tell the stale leader the current term so it steps down."""
    core = make_core(members=3, hard_state=HardState(term=TERM, voted_for=3))
    core.receive(3, Heartbeat(term=TERM, round=1), LATER)
    out = core.receive(2, Heartbeat(term=TERM - 1, round=6), LATER + STEP)
    assert [(o.to, o.message) for o in out.messages] == [
        (2, HeartbeatResponse(term=TERM, round=6, candidate=True))]
    assert out.hard_state is None and out.events == ()
    assert core.leader_id == 3 and core.term == TERM
    assert core.counters["rejected_stale_term"] == 1


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_lower_term_vote_request_is_refused_with_the_current_term(pre_vote):
    """Raft §5.1/§5.2: a stale candidate is refused and learns the current term."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    out = core.receive(2, VoteRequest(term=TERM - 1, round=6, pre_vote=pre_vote), LATER)
    assert [(o.to, o.message) for o in out.messages] == [
        (2, VoteResponse(term=TERM, round=6, granted=False, pre_vote=pre_vote, candidate=True))]
    assert core.voted_for is None and out.hard_state is None


@pytest.mark.parametrize("message", [
    HeartbeatResponse(term=TERM - 1, round=1, candidate=True),
    VoteResponse(term=TERM - 1, round=1, granted=True),
    VoteResponse(term=TERM - 1, round=1, granted=True, pre_vote=True),
    TimeoutNow(term=TERM - 1),
    Resign(term=TERM - 1),
], ids=lambda m: type(m).__name__)
def test_lower_term_responses_and_notices_are_dropped_and_counted(message):
    """Raft §5.1: anything else with a stale term is dropped (and counted), changing nothing."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    core.receive(3, Heartbeat(term=TERM, round=1), LATER)
    deadline = core.next_deadline
    out = core.receive(2, message, LATER + STEP)
    assert out.empty
    assert (core.role, core.term, core.leader_id, core.next_deadline) == (Role.FOLLOWER, TERM, 3, deadline)
    assert core.counters["rejected_stale_term"] == 1


def test_a_stale_leader_steps_down_when_a_follower_answers_with_a_higher_term():
    """Raft §5.1, end to end: the current-term answer to a stale heartbeat deposes the stale leader."""
    stale = make_core(node_id=1, members=3, hard_state=HardState(term=TERM - 2))
    election = elect(stale, now=LATER)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    follower = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    answer = only(messages(follower.receive(1, beat, LATER), HeartbeatResponse, to=1))
    stale.receive(2, answer, election.won_at)
    assert stale.role is Role.FOLLOWER and stale.term == TERM


@settings(max_examples=150)
@given(script=actions(members=3, max_term=8))
def test_terms_never_decrease_and_network_input_never_raises(script):
    """Raft §5.1: "terms increase monotonically" whatever arrives, in any order; every change of term is
    reported once, is persisted, and a vote is only ever cast afresh in a new term or from none."""
    core = make_core(members=3)
    term, vote = core.term, core.voted_for
    persisted = core.hard_state
    for _, out in drive(core, script):
        assert core.term >= term
        changes = events(out, TermChanged)
        assert [change.term for change in changes] == sorted({change.term for change in changes})
        assert all(change.term > term for change in changes)
        if core.term > term:
            assert changes and changes[-1].term == core.term
        else:
            assert changes == []
            assert vote is None or core.voted_for == vote  # a vote is never changed within a term
        if out.hard_state is not None:
            assert out.hard_state.term >= persisted.term
            persisted = out.hard_state
        assert persisted == core.hard_state
        term, vote = core.term, core.voted_for


def test_a_leader_never_acts_on_a_heartbeat_of_its_own_term():
    """Raft §5.2 (election safety: at most one leader per term): a same-term heartbeat at a leader can only
    come from a misconfigured peer; the leader counts it and changes nothing."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    election = elect(core, now=LATER)
    before = (core.role, core.term, core.voted_for, core.leader_id, core.next_deadline)
    out = core.receive(2, Heartbeat(term=election.term, round=3), election.won_at)
    assert out.messages == () and out.events == () and out.hard_state is None
    assert_untouched(core, before)
    assert core.counters["rejected_duplicate_leader"] == 1


# ---------------------------------------------------------------------- role transitions


def test_a_follower_cannot_become_leader_without_an_election():
    """etcd-style transition table: FOLLOWER -> LEADER is illegal and raises, leaving the core untouched."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    with pytest.raises(IllegalTransitionError, match="leader"):
        core._transition(Role.LEADER)
    with pytest.raises(IllegalTransitionError):
        core._become_leader(LATER)
    assert core.role is Role.FOLLOWER and not core.is_leader(LATER)
    assert core.tick(LATER).hard_state is None  # nothing half-done was left to flush


@pytest.mark.parametrize("role", [Role.CANDIDATE, Role.PRE_CANDIDATE])
def test_a_leader_cannot_campaign_without_stepping_down(role):
    """etcd-style transition table: LEADER -> (PRE_)CANDIDATE is illegal and raises."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    election = elect(core, now=LATER)
    with pytest.raises(IllegalTransitionError):
        core._transition(role)
    with pytest.raises(IllegalTransitionError):
        core._become_candidate(election.won_at, transfer=False)
    assert core.role is Role.LEADER and core.term == election.term


def assert_untouched(core: RaftCore, before: tuple[object, ...]) -> None:
    assert (core.role, core.term, core.voted_for, core.leader_id, core.next_deadline) == before


@pytest.mark.parametrize("sender", [1, 4, 99])
@pytest.mark.parametrize("message", [
    Heartbeat(term=HIGHER, round=1),
    HeartbeatResponse(term=HIGHER, round=1, candidate=True),
    VoteRequest(term=HIGHER, round=1),
    VoteRequest(term=HIGHER, round=1, transfer=True),
    VoteResponse(term=HIGHER, round=1, granted=True),
    TimeoutNow(term=HIGHER),
    Resign(term=HIGHER),
], ids=lambda m: type(m).__name__)
def test_a_message_from_an_unknown_sender_is_ignored_and_counted(message, sender):
    """SPEC §6: input from a non-member (or claiming to be this server) changes nothing and never raises."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    before = (core.role, core.term, core.voted_for, core.leader_id, core.next_deadline)
    out = core.receive(sender, message, LATER)
    assert out.empty
    assert_untouched(core, before)
    assert core.counters["rejected_unknown_sender"] == 1


@settings(max_examples=100)
@given(message=any_message(max_term=2**63 - 1))
def test_no_message_from_a_stranger_changes_a_leader(message):
    """SPEC §6: whatever a stranger sends, even absurd terms, the leader is unaffected."""
    core = make_core(members=3)
    election = elect(core, now=LATER)
    before = (core.role, core.term, core.voted_for, core.leader_id, core.next_deadline)
    assert core.receive(7, message, election.won_at).empty
    assert_untouched(core, before)


def _in_role(role: Role) -> RaftCore:
    """A core of three in ``role`` at term TERM or just above (a campaign raises it)."""
    if role is Role.LEADER:
        core = make_core(members=3, hard_state=HardState(term=TERM))
        elect(core, now=LATER)
        return core
    core = make_core(members=3, pre_vote=role is Role.PRE_CANDIDATE, hard_state=HardState(term=TERM))
    if role is not Role.FOLLOWER:
        core.tick(max(LATER, core.next_deadline))
    assert core.role is role
    return core


def _of_term(kind: type, term: int) -> Message:
    """A message of type ``kind`` in ``term``."""
    fields: dict[str, object] = {"term": term}
    if kind in (Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse):
        fields["round"] = 1
    if kind is HeartbeatResponse:
        fields["candidate"] = True
    if kind is VoteResponse:
        fields["granted"] = True
    return kind(**fields)  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", list(Role), ids=str)
@pytest.mark.parametrize("kind", MESSAGE_TYPES, ids=lambda kind: kind.__name__)
def test_every_role_handles_every_message_type_of_its_own_term(role, kind):
    """etcd-style dispatch: each role has a step for every message type, and no catch-all.

    A message of the receiver's own term passes phase 1, so it reaches the role's step (or, for a vote
    request, the handling shared by all roles); none may go unhandled or raise.
    """
    core = _in_role(role)
    term = core.term
    core.receive(2, _of_term(kind, term), LATER + STEP)
    transfer = kind is TimeoutNow and role is not Role.LEADER  # the step campaigns at once (thesis §3.10)
    assert core.term == term + transfer  # its own term: phase 1 raised nothing
