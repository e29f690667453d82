"""Thesis §3.10, leadership transfer: the leader "sends it a TimeoutNow request.  This request has the same
effect as the target server's election timer firing: the target server starts a new election (incrementing
its term and becoming a candidate)."

SPEC §4: the leader gives up its own lease *before* TimeoutNow leaves; the target campaigns at once,
without pre-vote, with requests flagged as a transfer that voters grant even inside their stickiness
window (thesis §4.2.3).  The default target is the peer that stands for election and was heard from most
recently.
"""

from __future__ import annotations

import copy

import pytest

from raft_election.core import NoTransferTargetError, RaftCore
from raft_election.errors import RaftElectionError
from raft_election.events import BecameLeader, LostLeadership
from raft_election.messages import Heartbeat, HeartbeatResponse, Resign, TimeoutNow, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import (
    STEP,
    Election,
    Wire,
    ack,
    config_of,
    elect,
    events,
    grant,
    make_core,
    messages,
    only,
)

START = 1.0
TERM = 4


def leader(members: int = 3, **config: object) -> tuple[RaftCore, Election, Heartbeat]:
    """A leader of term TERM + 1 that has just sent its first heartbeat round (returned)."""
    core = make_core(members=members, hard_state=HardState(term=TERM), **config)
    election = elect(core, now=START)
    return core, election, only(messages(election.winning_output, Heartbeat, to=2))


def test_transfer_gives_up_the_lease_first_and_sends_timeout_now_to_the_target_only():
    """Thesis §3.10: TimeoutNow(term) to the target alone; the leader's lease ends before it leaves."""
    core, election, beat = leader(members=5)
    for peer in (2, 3, 4, 5):
        core.receive(peer, ack(beat), election.won_at)
    at = election.won_at + STEP
    target, out = core.transfer_leadership(at, target=4)
    assert target == 4
    assert [(o.to, o.message) for o in out.messages if isinstance(o.message, TimeoutNow)] == [
        (4, TimeoutNow(term=election.term))]
    # Anything else is the notice to the other peers that the leadership moves to 4 (never to 4 itself).
    others = [(o.to, o.message) for o in out.messages if not isinstance(o.message, TimeoutNow)]
    assert others == [(peer, Resign(term=election.term, successor=4)) for peer in (2, 3, 5)]
    assert not core.is_leader(at)
    assert core.role is Role.FOLLOWER and core.term == election.term
    assert events(out, LostLeadership) == [LostLeadership(term=election.term, at=at, lease_end=at,
                                                          reason="transfer")]
    assert out.hard_state is None


def test_the_target_campaigns_at_once_without_pre_vote():
    """Thesis §3.10: TimeoutNow acts like the election timer firing, and skips pre-vote (§9.6)."""
    target = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    target.receive(1, Heartbeat(term=TERM, round=1), START)
    deadline = target.next_deadline
    out = target.receive(1, TimeoutNow(term=TERM), START + STEP)
    assert deadline > START + STEP  # well before its own timer
    assert target.role is Role.CANDIDATE and target.term == TERM + 1
    assert out.hard_state == HardState(term=TERM + 1, voted_for=2)
    requests = messages(out, VoteRequest)
    assert sorted(o.to for o in out.messages if isinstance(o.message, VoteRequest)) == [1, 3]
    assert {(r.term, r.pre_vote, r.transfer) for r in requests} == {(TERM + 1, False, True)}


def test_a_timeout_now_with_a_higher_term_is_followed_then_acted_on():
    """Raft §5.1 then thesis §3.10: a TimeoutNow from a newer term is adopted, then obeyed."""
    target = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    target.receive(1, TimeoutNow(term=TERM + 2), START)
    assert target.role is Role.CANDIDATE and target.term == TERM + 3


def test_a_stale_timeout_now_is_ignored():
    """Raft §5.1: a TimeoutNow from an older term is from a leadership that is over."""
    target = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    out = target.receive(1, TimeoutNow(term=TERM - 1), START)
    assert target.role is Role.FOLLOWER and target.term == TERM and out.messages == ()


def test_voters_grant_a_transfer_inside_their_stickiness_window():
    """Thesis §3.10/§4.2.3: the transfer's requests bypass stickiness; the target wins in one round trip."""
    old, election, beat = leader(members=3)
    others = [make_core(node_id=n, members=3, hard_state=HardState(term=TERM)) for n in (2, 3)]
    wire = Wire([old, *others])
    at = election.won_at
    for other in others:  # followers heard the leader just now: deep inside their window
        wire.post(other.node_id, other.receive(1, beat, at))
    wire.deliver(at)
    wire.queue.clear()
    at += STEP
    _, out = old.transfer_leadership(at, target=2)
    wire.post(1, out)
    wire.deliver(at)
    new = others[0]
    assert new.role is Role.LEADER and new.term == election.term + 1 and new.is_leader(at)
    assert others[1].voted_for == 2 and others[1].term == election.term + 1
    grants = [m for sender, o in wire.log if sender != 2 for m in messages(o, VoteResponse, to=2)]
    assert grants and all(g.granted for g in grants)


def test_the_default_target_is_the_candidate_peer_heard_from_most_recently():
    """SPEC §4 (thesis §3.10 leaves the choice open): pick a peer that will campaign and is reachable."""
    core, election, beat = leader(members=5)
    t = election.won_at
    core.receive(3, ack(beat), t + STEP)
    core.receive(2, ack(beat), t + 2 * STEP)
    core.receive(5, ack(beat, candidate=False), t + 3 * STEP)  # the latest, but it does not stand
    target, out = core.transfer_leadership(t + 4 * STEP)
    assert target == 2
    assert [o.to for o in out.messages if isinstance(o.message, TimeoutNow)] == [2]


def test_without_a_candidate_peer_heard_recently_the_transfer_fails_and_changes_nothing():
    """SPEC §5: NoTransferTargetError when no peer stands for election and answered within
    election_timeout_min; the leader keeps leading."""
    core, election, beat = leader(members=5)
    config = config_of(core)
    t = election.won_at
    with pytest.raises(NoTransferTargetError):  # nobody has answered a heartbeat yet
        core.transfer_leadership(t)
    assert core.is_leader(t)
    core.receive(2, ack(beat, candidate=False), t + STEP)
    core.receive(3, ack(beat, candidate=False), t + STEP)
    core.receive(4, ack(beat, candidate=True), t + STEP)  # stands, then falls silent
    expires = t + STEP + config.election_timeout_min  # 4 is too long ago from here on
    while core.next_deadline < expires:  # keep leading with the non-candidates 2 and 3
        sent_at = core.next_deadline
        beat_k = only(messages(core.tick(sent_at), Heartbeat, to=2))
        for peer in (2, 3):
            core.receive(peer, ack(beat_k, candidate=False), sent_at + STEP / 4)
    assert copy.deepcopy(core).transfer_leadership(expires - STEP)[0] == 4  # still eligible just before
    with pytest.raises(NoTransferTargetError):
        core.transfer_leadership(expires)
    assert core.is_leader(expires) and core.role is Role.LEADER


def test_a_non_candidate_target_ignores_timeout_now():
    """SPEC §4 (candidacy): a server that does not stand for election never campaigns, even when told to."""
    target = make_core(node_id=2, members=3, candidate=False, hard_state=HardState(term=TERM))
    out = target.receive(1, TimeoutNow(term=TERM), START)
    assert out.empty
    assert target.role is Role.FOLLOWER and target.term == TERM
    assert target.counters["rejected_timeout_now"] == 1


def test_a_leader_ignores_timeout_now():
    """Thesis §3.10: TimeoutNow is for a follower; a leader of the same term is not affected."""
    core, election, _ = leader(members=3)
    out = core.receive(2, TimeoutNow(term=election.term), election.won_at)
    assert core.role is Role.LEADER and core.term == election.term and out.messages == ()


def test_only_a_leader_can_transfer():
    """Thesis §3.10: only a leader has leadership to transfer."""
    follower = make_core(members=3)
    with pytest.raises(RaftElectionError):
        follower.transfer_leadership(START, target=2)
    candidate = make_core(members=3, pre_vote=False)
    candidate.tick(candidate.next_deadline)
    with pytest.raises(RaftElectionError):
        candidate.transfer_leadership(candidate.next_deadline - STEP, target=2)


@pytest.mark.parametrize("target", [1, 9])
def test_the_target_must_be_a_peer(target):
    """Thesis §3.10: leadership goes to another member; a bad target changes nothing."""
    core, election, _ = leader(members=3)
    with pytest.raises(RaftElectionError):
        core.transfer_leadership(election.won_at, target=target)
    assert core.is_leader(election.won_at)


def test_the_old_leader_does_not_regain_leadership_in_that_term():
    """Thesis §3.10 (core docstring): after a transfer the old leader steps down for the rest of the term;
    late grants of its winning campaign and late acks cannot make it leader of that term again."""
    core = make_core(members=5, pre_vote=False, hard_state=HardState(term=TERM))
    election = elect(core, now=START, voters=[2, 3])
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    at = election.won_at + STEP
    core.transfer_leadership(at, target=2)
    assert election.request is not None
    later = [core.receive(peer, grant(election.request), at) for peer in (4, 5)]
    later += [core.receive(peer, ack(beat), at) for peer in (3, 4)]
    later.append(core.tick(at + STEP))
    assert events(later, BecameLeader) == []
    assert core.role is Role.FOLLOWER and not core.is_leader(at + STEP)
    assert core.term == election.term
    # Its next campaign, if any, is for a later term.
    campaign = core.tick(core.next_deadline)
    assert {request.term for request in messages(campaign, VoteRequest)} == {election.term + 1}


def test_the_old_leader_votes_at_once_if_the_transfer_fails():
    """Thesis §3.10: the old leader gave up its lease, so if the target never campaigns, the old leader
    does not hold up the next election with its own stickiness, even if it heard another leader recently.

    (Node 2 follows leader 1, takes over by transfer, and transfers on to 3, all well inside one
    election_timeout_min; the TimeoutNow to 3 is lost, and 1 asks for a pre-vote.)
    """
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    core.receive(1, Heartbeat(term=TERM, round=1), START)
    request = only(messages(core.receive(1, TimeoutNow(term=TERM), START + STEP), VoteRequest, to=3))
    core.receive(3, grant(request), START + STEP)
    assert core.is_leader(START + STEP)
    core.transfer_leadership(START + 2 * STEP, target=3)
    # 1 stored the configuration entry 2 created on taking office (thesis §4.1), so it is as up to date.
    config = core.configuration
    out = core.receive(1, VoteRequest(term=core.term + 1, round=9, pre_vote=True, config_term=config.term,
                                      config_index=config.index), START + 3 * STEP)
    assert only(messages(out, VoteResponse, to=1)).granted


def test_the_other_followers_forget_the_old_leader_but_stay_sticky():
    """Thesis §3.10 with §4.2.3: a follower told that leadership moves to a successor stops naming the old
    leader, but keeps its stickiness (only the successor's transfer campaign may bypass it), and its timer.

    (Five members: 1 leads and hands over to 2; follower 3 hears of it; 4 tries to compete.)
    """
    follower = make_core(node_id=3, members=5, hard_state=HardState(term=TERM))
    follower.receive(1, Heartbeat(term=TERM, round=1), START)
    deadline = follower.election_deadline
    out = follower.receive(1, Resign(term=TERM, successor=2), START + STEP)
    assert follower.leader_id is None and follower.election_deadline == deadline
    assert follower.role is Role.FOLLOWER and follower.term == TERM and out.messages == ()
    rival = follower.receive(4, VoteRequest(term=TERM + 1, round=5, pre_vote=True), START + STEP)
    assert not only(messages(rival, VoteResponse, to=4)).granted
    successor = follower.receive(2, VoteRequest(term=TERM + 1, round=6, transfer=True), START + 2 * STEP)
    assert only(messages(successor, VoteResponse, to=2)).granted


def test_a_late_heartbeat_response_after_transfer_is_stale():
    """Thesis §3.10: a response to the old leadership's heartbeat counts for nothing after the transfer."""
    core, election, beat = leader(members=3)
    core.transfer_leadership(election.won_at, target=3)
    core.receive(2, HeartbeatResponse(term=beat.term, round=beat.round, candidate=True), election.won_at)
    assert core.counters["rejected_stale_response"] == 1
    assert core.role is Role.FOLLOWER


@pytest.mark.parametrize("voter_stands", [True, False])
def test_a_new_leader_can_hand_over_to_a_voter_before_any_heartbeat_is_answered(voter_stands):
    """Thesis §3.10 with candidacy from the votes: a leader stopped right after winning still transfers.

    Voters report whether they stand for election with their vote, so the target is known before the
    first heartbeat round is answered; a voter that does not stand is never chosen.
    """
    core = make_core(members=3, pre_vote=False)
    at = core.next_deadline
    request = only(messages(core.tick(at), VoteRequest, to=2))
    core.receive(2, VoteResponse(term=request.term, round=request.round, granted=True,
                                 candidate=voter_stands), at + STEP)
    assert core.role is Role.LEADER
    if voter_stands:
        target, out = core.transfer_leadership(at + 2 * STEP)
        assert target == 2 and only(messages(out, TimeoutNow, to=2)).term == request.term
    else:
        with pytest.raises(NoTransferTargetError):
            core.transfer_leadership(at + 2 * STEP)
