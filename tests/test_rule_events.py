"""SPEC §3.1/§5: the core reports leadership and term changes as events, which the node turns into user
callbacks in the order the core produced them (events.py).

The rule: BecameLeader, LeaseLost, LeaseRegained, LostLeadership, LeaderChanged and TermChanged are emitted
exactly once per change and in causal order; in particular a leader deposed by a higher term reports
LostLeadership (of its old term) before TermChanged, so an application never sees "term t+1" while it still
believes it leads term t.  A lease gap is reported (LeaseLost, then LeaseRegained), never silent, and is not
a loss of office.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from raft_election.core import RaftCore
from raft_election.events import (
    BecameLeader,
    LeaderChanged,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    TermChanged,
    VoteGranted,
)
from raft_election.messages import Heartbeat, HeartbeatResponse, TimeoutNow, VoteRequest
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import (
    STEP,
    Election,
    ack,
    actions,
    drive,
    elect,
    events,
    leader_events,
    make_core,
    messages,
    only,
)

START = 1.0
TERM = 4


def leader(members: int = 3) -> tuple[RaftCore, Election]:
    core = make_core(members=members, hard_state=HardState(term=TERM))
    return core, elect(core, now=START)


def test_winning_reports_term_then_leadership_then_leader_once_each():
    """A campaign that wins reports TermChanged, BecameLeader, LeaderChanged(self), once each, in order."""
    core, election = leader()
    term = TERM + 1
    assert leader_events(election.outputs) == [
        TermChanged(term=term),
        BecameLeader(term=term, at=election.won_at),
        LeaderChanged(leader_id=core.node_id, term=term),
    ]
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    later = [core.receive(2, ack(beat), election.won_at), core.tick(core.next_deadline)]
    assert leader_events(later) == []


def test_a_pre_vote_phase_reports_nothing():
    """Thesis §9.6: a pre-vote changes neither term nor leader, so it reports neither."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    assert leader_events(core.tick(core.next_deadline)) == []


@pytest.mark.parametrize(("message", "new_leader"), [
    (Heartbeat(term=TERM + 3, round=1), 2),
    (HeartbeatResponse(term=TERM + 3, round=1, candidate=True), None),
], ids=["heartbeat", "heartbeat_response"])
def test_a_leader_deposed_by_a_higher_term_reports_lost_leadership_before_term_changed(message, new_leader):
    """Raft §5.1: LostLeadership (old term), then TermChanged, then the new leader (if known), once each."""
    core, election = leader()
    at = election.won_at + STEP
    out = core.receive(2, message, at)
    assert leader_events(out) == [
        LostLeadership(term=election.term, at=at, lease_end=at, reason="higher_term"),
        TermChanged(term=TERM + 3),
        LeaderChanged(leader_id=new_leader, term=TERM + 3),
    ]


def test_a_follower_reports_its_leader_once_and_each_new_one():
    """LeaderChanged once per change: repeated heartbeats of the same leader report nothing more."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    outs = [core.receive(2, Heartbeat(term=TERM, round=k), START + k * STEP) for k in range(5)]
    assert leader_events(outs) == [LeaderChanged(leader_id=2, term=TERM)]
    out = core.receive(3, Heartbeat(term=TERM + 1, round=9), START + 6 * STEP)
    assert leader_events(out) == [TermChanged(term=TERM + 1), LeaderChanged(leader_id=3, term=TERM + 1)]


def test_a_timeout_reports_the_loss_of_the_leader_once():
    """Raft §5.2: the timeout means "no viable leader": LeaderChanged(None) once, not at every retry."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    core.receive(2, Heartbeat(term=TERM, round=1), START)
    outs = [core.tick(core.election_deadline) for _ in range(4)]
    assert leader_events(outs) == [LeaderChanged(leader_id=None, term=TERM)]


def test_a_lease_gap_is_reported_once_and_so_is_its_end():
    """Thesis §6.4.1: LeaseLost at the first tick after expiry and not again; the office (and so the known
    leader) stays; an acknowledgement of a round sent since reports LeaseRegained, once."""
    core, election = leader()
    expiry = core.lease_expiry
    outs = [core.tick(expiry + k * STEP) for k in range(4)]
    assert leader_events(outs) == [LeaseLost(term=election.term, at=expiry, lease_end=expiry)]
    beats = [beat for out in outs for beat in messages(out, Heartbeat, to=2)]
    assert beats, "the leader heartbeats on through the gap"
    at = expiry + 4 * STEP
    outs = [core.receive(2, ack(beats[-1]), at), core.receive(2, ack(beats[-1]), at + STEP)]
    assert leader_events(outs) == [LeaseRegained(term=election.term, at=at)]


@pytest.mark.parametrize("command", ["step_down", "transfer", "stop"])
def test_giving_up_leadership_is_reported_once(command):
    """SPEC §4: step_down, transfer and stop each end the leadership with one LostLeadership."""
    core, election = leader()
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    core.receive(2, ack(beat), election.won_at)
    at = election.won_at + STEP
    if command == "step_down":
        outs = [core.step_down(at), core.step_down(at + STEP)]
    elif command == "transfer":
        outs = [core.transfer_leadership(at)[1]]
    else:
        outs = [core.stop(at), core.stop(at + STEP)]
    reason = {"step_down": "step_down", "transfer": "transfer", "stop": "stopped"}[command]
    assert leader_events(outs) == [
        LostLeadership(term=election.term, at=at, lease_end=at, reason=reason),
        LeaderChanged(leader_id=None, term=election.term),
    ]
    assert core.role is Role.FOLLOWER and core.term == election.term


def test_stop_on_a_follower_reports_nothing():
    """RaftCore.stop: only a leadership has an end to report."""
    core = make_core(members=3)
    assert core.stop(START).empty


def test_a_vote_for_another_term_reports_term_changed_once():
    """Raft §5.1: adopting a term through a vote request is one term change, reported once."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    out = core.receive(2, VoteRequest(term=TERM + 2, round=1), START)
    assert leader_events(out) == [TermChanged(term=TERM + 2)]


@settings(max_examples=200)
@given(script=actions(members=3, max_term=6))
def test_events_match_the_state_changes_they_report(script):
    """For any run: the claim events alternate, opening (BecameLeader once per term, terms rising, then
    LeaseRegained in the same term) and closing (LeaseLost, or LostLeadership while a claim is open, with
    ``had_lease`` saying which); after every call a claim is open exactly when the core holds a lease;
    LostLeadership ends the office the core held, before any TermChanged in the same output; TermChanged
    rises and ends at the core's term; LeaderChanged always names a different leader than the previous
    one and ends at the core's leader."""
    core = make_core(members=3)
    claimed = False  # a lease claim is open
    office_term = None  # the term of the office held before the current call
    last_won = -1
    known_leader = core.leader_id
    term = core.term
    for now, out in drive(core, script):
        seen = leader_events(out)
        kinds = [type(event) for event in seen]
        if LostLeadership in kinds and TermChanged in kinds:
            assert kinds.index(LostLeadership) < kinds.index(TermChanged)
        for event in seen:
            if isinstance(event, BecameLeader):
                assert not claimed and event.term > last_won
                claimed, last_won = True, event.term
            elif isinstance(event, LeaseRegained):
                assert not claimed and event.term == last_won == core.term
                claimed = True
            elif isinstance(event, LeaseLost):
                assert claimed and event.term == last_won and event.lease_end <= event.at
                claimed = False
            elif isinstance(event, LostLeadership):
                assert office_term == event.term and event.had_lease == claimed
                assert event.lease_end <= event.at
                claimed, office_term = False, None
            elif isinstance(event, TermChanged):
                assert event.term > term
                term = event.term
            elif isinstance(event, LeaderChanged):
                assert event.leader_id != known_leader
                known_leader = event.leader_id
        assert term == core.term
        assert known_leader == core.leader_id
        assert claimed == core.is_leader(now)
        if core.role is Role.LEADER:
            assert core.leader_id == core.node_id
            assert office_term in (None, core.term)
            office_term = core.term
        else:
            assert office_term is None


def test_the_same_leader_in_a_new_term_is_a_new_leadership():
    """A follower that learns its leader won again in a higher term reports LeaderChanged for that term:
    callers tracking (leader, term), e.g. for fencing tokens, must hear of every leadership."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    core.receive(2, Heartbeat(term=TERM, round=1), START)
    out = core.receive(2, Heartbeat(term=TERM + 1, round=2), START + STEP)
    assert leader_events(out) == [TermChanged(term=TERM + 1), LeaderChanged(leader_id=2, term=TERM + 1)]


@pytest.mark.parametrize("command", ["step_down", "transfer", "stop"])
def test_giving_up_office_in_a_lease_gap_reports_the_gap_first(command):
    """Thesis §6.4.1: a lease that ran out before the command is reported as a gap at its expiry; the
    office it still held then ends with ``had_lease`` False (the claim had already ended), and a leader in
    a gap may still hand over (its lease is already gone, which is what a transfer gives up first)."""
    core, election = leader()
    expiry = core.lease_expiry
    late = expiry + STEP
    if command == "step_down":
        out = core.step_down(late)
    elif command == "transfer":
        _, out = core.transfer_leadership(late, target=2)
        assert messages(out, TimeoutNow, to=2)
    else:
        out = core.stop(late)
    reason = {"step_down": "step_down", "transfer": "transfer", "stop": "stopped"}[command]
    assert leader_events(out) == [
        LeaseLost(term=election.term, at=late, lease_end=expiry),
        LostLeadership(term=election.term, at=late, lease_end=expiry, reason=reason, had_lease=False),
        LeaderChanged(leader_id=None, term=election.term),
    ]


def test_every_vote_cast_is_reported_after_its_term_and_pre_votes_are_not():
    """VoteGranted (an audit event): a candidate's vote for itself, each grant to a peer (again for a repeated
    request), never a pre-vote or a refusal."""
    core = make_core(members=3, hard_state=HardState(term=TERM))
    assert events(core.tick(core.next_deadline), VoteGranted) == []  # the pre-vote phase
    voter = make_core(node_id=3, members=3, pre_vote=False, hard_state=HardState(term=TERM))
    at = START + 10.0  # past the voter's start-up stickiness
    pre_vote = VoteRequest(term=TERM + 1, round=1, pre_vote=True)
    assert events(voter.receive(2, pre_vote, at), VoteGranted) == []
    granted = voter.receive(2, VoteRequest(term=TERM + 1, round=1), at)
    assert events(granted, VoteGranted) == [VoteGranted(term=TERM + 1, candidate=2)]
    assert granted.hard_state is not None  # reported with the output that persists it
    assert events(voter.receive(2, VoteRequest(term=TERM + 1, round=1), at), VoteGranted) == [
        VoteGranted(term=TERM + 1, candidate=2)]
    assert events(voter.receive(1, VoteRequest(term=TERM + 1, round=1), at), VoteGranted) == []
    campaign = voter.tick(voter.election_deadline)
    assert voter.role is Role.CANDIDATE
    assert events(campaign, (TermChanged, VoteGranted)) == [TermChanged(term=TERM + 2),
                                                            VoteGranted(term=TERM + 2, candidate=3)]
