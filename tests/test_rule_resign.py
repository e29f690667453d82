"""SPEC §4, resign / voluntary step-down: "a leader may step down ... It gives up its lease first, then tells
its followers it resigned, so the next election need not wait out the stickiness window."

messages.Resign: "I gave up my lease and will not lead again in ``term``; elect without waiting."  A follower
that hears it from its leader drops its stickiness (thesis §4.2.3 no longer applies: no lease can count on
it) and times out within ``election_timeout_max - election_timeout_min``, spread at random so the followers do
not split the vote (Raft §5.2), instead of a full election timeout.
"""

from __future__ import annotations

import pytest

from raft_election.core import RaftCore
from raft_election.events import LeaderChanged, LostLeadership
from raft_election.messages import Heartbeat, Resign, TimeoutNow, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, ack, config_of, elect, events, grant, make_core, messages, only

START = 1.0
TERM = 5


def test_step_down_gives_up_the_lease_and_tells_every_peer():
    """SPEC §4: lease first (is_leader false at once), then Resign(term) to every peer; role FOLLOWER."""
    core = make_core(members=5, hard_state=HardState(term=TERM - 1))
    election = elect(core, now=START)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    for peer in (2, 3):
        core.receive(peer, ack(beat), election.won_at)
    at = election.won_at + STEP
    out = core.step_down(at)
    assert not core.is_leader(at) and core.role is Role.FOLLOWER
    assert core.term == election.term and out.hard_state is None
    assert sorted(o.to for o in out.messages) == list(config_of(core).peer_ids)
    assert {o.message for o in out.messages} == {Resign(term=election.term)}
    assert events(out, LostLeadership) == [LostLeadership(term=election.term, at=at, lease_end=at,
                                                          reason="step_down")]


def test_step_down_is_a_no_op_unless_leader():
    """SPEC §4: only a leader has a leadership to give up."""
    core = make_core(members=3)
    assert core.step_down(START).empty
    core.tick(core.next_deadline)
    assert core.role is Role.PRE_CANDIDATE
    assert core.step_down(core.next_deadline - STEP).empty
    assert core.role is Role.PRE_CANDIDATE


def follower_of_2(now: float = START) -> RaftCore:
    """A follower of leader 2 in TERM that heard it at ``now`` (deep inside its stickiness window)."""
    core = make_core(members=5, hard_state=HardState(term=TERM))
    core.receive(2, Heartbeat(term=TERM, round=1), now)
    assert core.leader_id == 2
    return core


@pytest.mark.parametrize("seed", range(20))
def test_a_follower_told_its_leader_resigned_times_out_within_the_spread(seed):
    """SPEC §4: the follower elects soon: its timer now ends within election_timeout_max -
    election_timeout_min, rather than a full randomized timeout."""
    core = make_core(members=5, hard_state=HardState(term=TERM), seed=seed)
    core.receive(2, Heartbeat(term=TERM, round=1), START)
    config = config_of(core)
    resigned_at = START + STEP
    out = core.receive(2, Resign(term=TERM), resigned_at)
    assert 0 <= core.next_deadline - resigned_at <= config.election_timeout_max - config.election_timeout_min
    assert core.leader_id is None and events(out, LeaderChanged) == [LeaderChanged(leader_id=None, term=TERM)]
    campaign = core.tick(core.next_deadline)
    assert core.role is Role.PRE_CANDIDATE
    assert messages(campaign, VoteRequest)


def test_the_short_timeouts_after_a_resign_are_spread_out():
    """Raft §5.2: randomized so that the followers do not all campaign at the same moment."""
    offsets = set()
    for seed in range(10):
        core = make_core(members=5, hard_state=HardState(term=TERM), seed=seed)
        core.receive(2, Heartbeat(term=TERM, round=1), START)
        core.receive(2, Resign(term=TERM), START)
        offsets.add(core.next_deadline - START)
    assert len(offsets) == 10


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_follower_told_its_leader_resigned_grants_votes_at_once(pre_vote):
    """Thesis §4.2.3 no longer applies: the leader gave up its lease, so the window is dropped."""
    core = follower_of_2()
    core.receive(2, Resign(term=TERM), START + STEP)
    out = core.receive(3, VoteRequest(term=TERM + 1, round=4, pre_vote=pre_vote), START + 2 * STEP)
    assert only(messages(out, VoteResponse, to=3)).granted
    assert core.term == (TERM if pre_vote else TERM + 1)


def test_without_a_resign_the_same_request_is_refused():
    """Thesis §4.2.3, the control: the very same pre-vote, at the same moment, without Resign, is refused."""
    core = follower_of_2()
    out = core.receive(3, VoteRequest(term=TERM + 1, round=4, pre_vote=True), START + 2 * STEP)
    assert not only(messages(out, VoteResponse, to=3)).granted


def test_a_resign_with_a_stale_term_is_ignored():
    """Raft §5.1: a Resign of an older term is about a leadership that is already over: nothing changes."""
    core = follower_of_2()
    deadline = core.next_deadline
    out = core.receive(2, Resign(term=TERM - 1), START + STEP)
    assert out.empty
    assert core.leader_id == 2 and core.next_deadline == deadline
    refused = core.receive(3, VoteRequest(term=TERM + 1, round=4, pre_vote=True), START + 2 * STEP)
    assert not only(messages(refused, VoteResponse, to=3)).granted


def test_a_resign_from_a_server_that_is_not_our_leader_is_ignored():
    """SPEC §4: only the leader can give up the lease this follower's stickiness protects."""
    core = follower_of_2()
    deadline = core.next_deadline
    out = core.receive(3, Resign(term=TERM), START + STEP)
    assert out.empty
    assert core.leader_id == 2 and core.next_deadline == deadline


def test_followers_elect_a_new_leader_soon_after_a_resign():
    """SPEC §4: after step_down, a follower's pre-vote and vote succeed at once, well within one election
    timeout of the resignation, and the old leader votes for it too."""
    members = 3
    old = make_core(node_id=1, members=members, hard_state=HardState(term=TERM - 1))
    followers = {n: make_core(node_id=n, members=members, hard_state=HardState(term=TERM - 1), seed=n)
                 for n in (2, 3)}
    election = elect(old, now=START)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    at = election.won_at
    for follower in followers.values():
        follower.receive(1, beat, at)
    out = old.step_down(at)
    for message in messages(out, Resign, to=2):
        followers[2].receive(1, message, at)
    # Follower 2 campaigns at its short deadline; everyone else is still inside its own timer.
    campaign_at = followers[2].next_deadline
    config = config_of(old)
    assert campaign_at - at <= config.election_timeout_max - config.election_timeout_min
    pre = only(messages(followers[2].tick(campaign_at), VoteRequest, to=1))
    answer = only(messages(old.receive(2, pre, campaign_at), VoteResponse, to=2))
    assert answer.granted
    vote = only(messages(followers[2].receive(1, answer, campaign_at), VoteRequest, to=1))
    granted = only(messages(old.receive(2, vote, campaign_at), VoteResponse, to=2))
    followers[2].receive(1, granted, campaign_at)
    assert followers[2].is_leader(campaign_at) and followers[2].term == election.term + 1


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_leader_that_steps_down_votes_at_once(pre_vote):
    """SPEC §4: the resigning leader gave up its lease, so nothing is left for its own stickiness to protect:
    it grants the next election's (pre-)votes at once, even right after it heard from the previous leader.

    (Node 2 follows leader 1, takes over by transfer, and resigns, all well inside one election_timeout_min.)
    """
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    core.receive(1, Heartbeat(term=TERM, round=1), START)
    request = only(messages(core.receive(1, TimeoutNow(term=TERM), START + STEP), VoteRequest, to=3))
    core.receive(3, grant(request), START + STEP)
    assert core.is_leader(START + STEP)
    core.step_down(START + 2 * STEP)
    # 3 stored the configuration entry 2 created on taking office (thesis §4.1), so it is as up to date.
    config = core.configuration
    out = core.receive(3, VoteRequest(term=TERM + 2, round=9, pre_vote=pre_vote, config_term=config.term,
                                      config_index=config.index), START + 3 * STEP)
    assert only(messages(out, VoteResponse, to=3)).granted


@pytest.mark.parametrize("successor", [0, 3])
def test_a_heartbeat_overtaken_by_its_senders_resign_is_ignored(successor):
    """A leader that resigned (or handed over) never leads that term again, so its heartbeat arriving after
    its Resign was sent before it: following it again would name a gone leader and renew stickiness.

    Regression: found by the lock simulation, where such a reordered heartbeat kept a member from
    acquiring a just-released lock for a whole election timeout.
    """
    core = make_core(members=3, hard_state=HardState(term=4))
    config = config_of(core)
    at = config.election_timeout_min + STEP
    core.receive(2, Heartbeat(term=4, round=1), at)
    core.receive(2, Resign(term=4, successor=successor), at + STEP)
    assert core.leader_id is None
    out = core.receive(2, Heartbeat(term=4, round=2), at + 2 * STEP)  # reordered: sent before the Resign
    assert core.leader_id is None and not messages(out, Heartbeat) and not out.messages
    assert core.counters["rejected_stale_heartbeat"] == 1
    out = core.receive(2, Heartbeat(term=5, round=3), at + 3 * STEP)  # it may lead a later term
    assert core.leader_id == 2
