"""Thesis §6.4.1, the leader lease: the leader records the start time of each heartbeat round; once a
majority acknowledged a round sent at t, no other server can become leader until about t + election timeout
(scaled down by the clock drift bound).

SPEC §4: the leader tracks each heartbeat round's *send* time; once a majority acknowledged a round sent at
``t`` the lease is valid until ``t + election_timeout_min * (1 - max_clock_drift)``; after winning, the vote
round is the first lease round (it starts at the campaign's start); ``is_leader`` holds only inside the
lease, and a leader whose lease ran out steps down.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import Output, RaftCore
from raft_election.events import BecameLeader, LostLeadership
from raft_election.messages import MAX_ROUND, Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import (
    STEP,
    Election,
    ack,
    config_of,
    elect,
    events,
    lease_of,
    make_core,
    messages,
    only,
)

START = 1.0


def leader(members: int = 3, vote_delay: float = 0.0, **config: object) -> tuple[RaftCore, Election]:
    core = make_core(members=members, pre_vote=False, hard_state=HardState(term=1), **config)
    return core, elect(core, now=START, vote_delay=vote_delay)


def beat_at(core: RaftCore, at: float) -> Heartbeat:
    """Tick the leader at ``at`` (a heartbeat deadline) and return the round it sends."""
    return only(messages(core.tick(at), Heartbeat, to=2))


def test_the_lease_starts_when_the_winning_campaign_started_not_when_it_was_won():
    """Thesis §6.4.1: every vote was granted after the vote requests left, so the vote round (sent at the
    campaign's start) is the first lease round."""
    core, election = leader(vote_delay=5 * STEP)
    assert election.won_at > election.campaign_start == START
    assert core.lease_expiry == pytest.approx(election.campaign_start + lease_of(core))
    assert core.is_leader(election.won_at)


def test_with_pre_vote_the_lease_starts_with_the_real_vote_round():
    """Thesis §6.4.1, §9.6: pre-votes reset nobody's timer, so the lease starts with the *vote* round."""
    core = make_core(members=3)
    election = elect(core, now=START, vote_delay=3 * STEP)
    assert START < election.campaign_start < election.won_at
    assert core.lease_expiry == pytest.approx(election.campaign_start + lease_of(core))


def test_a_campaign_won_after_its_lease_would_have_run_out_is_declined():
    """Thesis §6.4.1 with events.BecameLeader ("it holds a lease from then on"): the lease of a new leader
    runs from its campaign's start, so if the deciding vote arrives later than campaign_start + lease, the
    winner holds no lease at all and must not report (nor act on) a leadership.

    This happens whenever the vote round trip lies between election_timeout_min * (1 - max_clock_drift)
    and the candidate's own retry timeout (at least election_timeout_min).
    """
    core = make_core(members=3, pre_vote=False, hard_state=HardState(term=1))
    campaign_start = max(START, core.next_deadline)
    request = only(messages(core.tick(campaign_start), VoteRequest, to=2))
    late = campaign_start + lease_of(core) + STEP  # still before the candidate's own retry
    assert late < core.election_deadline
    out = core.receive(2, VoteResponse(term=request.term, round=request.round, granted=True), late)
    assert not events(out, BecameLeader)
    assert core.role is Role.CANDIDATE and not core.is_leader(late)
    assert core.counters["late_wins_declined"] == 1
    # The election timer retries in a new term; a prompt majority there does win.
    retry = core.election_deadline
    again = only(messages(core.tick(retry), VoteRequest, to=2))
    assert again.term == request.term + 1
    out = core.receive(2, VoteResponse(term=again.term, round=again.round, granted=True), retry + STEP)
    assert events(out, BecameLeader) and core.is_leader(retry + STEP)


def test_an_acknowledgement_extends_the_lease_to_the_send_time_of_its_round():
    """Thesis §6.4.1: the lease runs from when the acknowledged round was *sent*, not when the ack arrived."""
    core, election = leader(members=3)
    config = config_of(core)
    sent_at = election.won_at + config.heartbeat_interval
    beat = beat_at(core, sent_at)
    core.receive(2, ack(beat), sent_at + 5 * STEP)
    assert core.lease_expiry == pytest.approx(sent_at + lease_of(core))


def test_the_lease_follows_the_newest_round_a_majority_acknowledged():
    """Thesis §6.4.1: with 5 members the lease starts at the newest send time s such that three members
    (the leader included) have acknowledged a round sent at s or later."""
    core, election = leader(members=5)
    h = config_of(core).heartbeat_interval
    lease = lease_of(core)
    sent = [election.won_at + k * h for k in (1, 2, 3)]
    beats = [beat_at(core, at) for at in sent]
    t = sent[-1] + STEP / 4
    core.receive(2, ack(beats[2]), t)  # 2 heard round 3; 3 and 4 still only the vote round
    assert core.lease_expiry == pytest.approx(election.campaign_start + lease)
    core.receive(3, ack(beats[0]), t)  # 1, 2, 3 all heard from the leader since round 1
    assert core.lease_expiry == pytest.approx(sent[0] + lease)
    core.receive(4, ack(beats[1]), t)  # 1, 2, 4 since round 2
    assert core.lease_expiry == pytest.approx(sent[1] + lease)
    core.receive(3, ack(beats[2]), t)  # 1, 2, 3 since round 3
    assert core.lease_expiry == pytest.approx(sent[2] + lease)
    core.receive(5, ack(beats[0]), t)  # an older round never moves the lease back
    assert core.lease_expiry == pytest.approx(sent[2] + lease)


def test_acknowledgements_of_unknown_rounds_do_not_extend_the_lease():
    """Thesis §6.4.1: an ack counts only for a round the leader sent (and knows the send time of)."""
    core, election = leader(members=3)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    expiry = core.lease_expiry
    for other in (beat.round + 1, beat.round + 1000, beat.round + 2**31):
        bogus = HeartbeatResponse(term=beat.term, round=other & MAX_ROUND, candidate=True)
        core.receive(2, bogus, election.won_at + STEP)
    assert core.lease_expiry == expiry
    assert core.counters["rejected_stale_response"] == 3


def test_acknowledgements_of_an_older_term_do_not_extend_the_lease():
    """Raft §5.1 with thesis §6.4.1: an ack from an earlier term says nothing about this leadership."""
    core, election = leader(members=3)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    expiry = core.lease_expiry
    core.receive(2, HeartbeatResponse(term=beat.term - 1, round=beat.round, candidate=True), election.won_at)
    assert core.lease_expiry == expiry


def test_is_leader_is_false_from_the_lease_expiry_on_even_before_any_tick():
    """Thesis §6.4.1: the lease is a fact about time; is_leader(now) must not wait for a tick."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    assert expiry == pytest.approx(election.campaign_start + lease_of(core))
    assert core.is_leader(math.nextafter(expiry, -math.inf))
    assert not core.is_leader(expiry)
    assert not core.is_leader(expiry + 10)
    assert core.lease_remaining(expiry) == 0.0
    assert core.role is Role.LEADER  # no tick yet: only the role lags


def test_the_leader_asks_to_be_ticked_at_its_lease_expiry_and_then_steps_down():
    """Thesis §6.4.1: a leader whose lease runs out steps down; the lease end is reported exactly."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    outputs = []
    while core.role is Role.LEADER:
        at = core.next_deadline
        assert at <= expiry
        outputs.append((at, core.tick(at)))
    at, out = outputs[-1]
    assert at == expiry
    assert events(out, LostLeadership) == [LostLeadership(term=election.term, at=expiry, lease_end=expiry,
                                                          reason="lease_expired")]


def test_a_leader_steps_down_at_the_first_tick_after_expiry():
    """Thesis §6.4.1: a late tick still reports the lease's real end, not the time of the tick."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    late = expiry + 3 * STEP
    out = core.tick(late)
    assert core.role is Role.FOLLOWER
    assert events(out, LostLeadership) == [LostLeadership(term=election.term, at=late, lease_end=expiry,
                                                          reason="lease_expired")]


def test_a_leader_steps_down_at_the_first_message_after_expiry_and_a_late_ack_does_not_revive_it():
    """Thesis §6.4.1: the lease is checked before a message is handled; an ack arriving too late is stale."""
    core, election = leader(members=3)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    expiry = core.lease_expiry
    out = core.receive(2, ack(beat), expiry)
    assert core.role is Role.FOLLOWER and not core.is_leader(expiry)
    (event,) = events(out, LostLeadership)
    assert event.lease_end == expiry and event.reason == "lease_expired"


@pytest.mark.parametrize("drift", [0.0, 0.0625, 0.125, 0.25])
def test_max_clock_drift_shortens_the_lease(drift):
    """Thesis §6.4.1: the lease lasts election_timeout_min * (1 - max_clock_drift)."""
    core, election = leader(members=3, max_clock_drift=drift)
    config = config_of(core)
    assert core.lease_expiry - election.campaign_start == pytest.approx(
        config.election_timeout_min * (1 - drift))


def test_a_single_member_cluster_renews_its_own_lease():
    """Thesis §6.4.1: alone, the leader is its own majority: each heartbeat round renews the lease."""
    core = make_core(members=1)
    config = config_of(core)
    election = elect(core, now=START)
    at = election.won_at
    while at < START + 20 * config.election_timeout_max:
        assert core.is_leader(at)
        assert core.lease_expiry == pytest.approx(at + lease_of(core))  # from the round it just sent
        assert core.next_deadline == pytest.approx(at + config.heartbeat_interval)
        at = core.next_deadline
        core.tick(at)
    assert core.role is Role.LEADER


# ---------------------------------------------------------------------- property

senders = st.integers(min_value=2, max_value=5)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("tick"), st.just(0)),
        st.tuples(st.just("deadline"), st.just(0)),
        st.tuples(st.just("ack"), senders, st.integers(min_value=0, max_value=99)),
        st.tuples(st.just("bogus"), senders),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(members=st.sampled_from([3, 4, 5]), vote_delay=st.integers(min_value=0, max_value=3), steps=actions)
def test_the_lease_for_any_order_and_timing_of_acknowledgements(members, vote_delay, steps):
    """Thesis §6.4.1, for arbitrary ack orders and timings: at every instant the lease ends at
    ``s + election_timeout_min * (1 - max_clock_drift)``, where ``s`` is the latest send time such that a
    majority (the leader included, voters counting from the vote round) acknowledged a round sent at ``s``
    or later; is_leader(now) is exactly ``now`` before that; at the first tick or message at or after
    it the leader steps down, reporting that lease end."""
    core, election = leader(members=members, vote_delay=vote_delay * STEP)
    config = config_of(core)
    majority = len(config.members) // 2 + 1
    lease = lease_of(core)
    voters = config.peer_ids[: majority - 1]
    # The newest send time each member is known to have heard from the leader.
    heard = dict.fromkeys(voters, election.campaign_start)
    sent: list[tuple[int, float]] = [(only(messages(election.winning_output, Heartbeat, to=2)).round,
                                      election.won_at)]
    heard[core.node_id] = election.won_at
    now = election.won_at

    def model_expiry() -> float:
        ranked = sorted(heard.values(), reverse=True)
        start = ranked[majority - 1] if len(ranked) >= majority else election.campaign_start
        return max(start, election.campaign_start) + lease

    def check(out: Output) -> bool:
        """Check one output against the model; return whether the leadership is over."""
        expiry = model_expiry()
        if now >= expiry:
            assert events(out, LostLeadership) == [LostLeadership(term=election.term, at=now,
                                                                  lease_end=expiry, reason="lease_expired")]
            assert core.role is Role.FOLLOWER
            return True
        assert core.role is Role.LEADER and events(out, LostLeadership) == []
        for beat in messages(out, Heartbeat, to=2):
            sent.append((beat.round, now))
            heard[core.node_id] = now
        assert core.lease_expiry == pytest.approx(model_expiry())
        return False

    for step in steps:
        kind = step[0]
        if kind == "wait":
            now += step[1] * STEP
            assert core.is_leader(now) == (now < model_expiry())
            continue
        if kind == "deadline":
            now = max(now, core.next_deadline)
        if kind in ("tick", "deadline"):
            out = core.tick(now)
        elif kind == "ack":
            round_, sent_at = sent[step[2] % len(sent)]
            if now < model_expiry() and step[1] in config.peer_ids:
                heard[step[1]] = max(heard.get(step[1], -math.inf), sent_at)
            response = HeartbeatResponse(term=election.term, round=round_, candidate=True)
            out = core.receive(step[1], response, now)
        else:
            unknown = (sent[-1][0] + 1000) & MAX_ROUND
            response = HeartbeatResponse(term=election.term, round=unknown, candidate=True)
            out = core.receive(step[1], response, now)
        if check(out):
            break
