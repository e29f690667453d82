"""Thesis §6.4.1, the leader lease: the leader records the start time of each heartbeat round; once a
majority acknowledged a round sent at t, no other server can become leader until about t + election timeout
(scaled down by the clock drift bound).

SPEC §4: the leader tracks each heartbeat round's *send* time; once a majority acknowledged a round sent at
``t`` the lease is valid until ``t + election_timeout_min * (1 - max_clock_drift)``; after winning, the vote
round is the first lease round (it starts at the campaign's start); ``is_leader`` holds only inside the
lease.  Office and lease are separate: a leader whose lease runs out keeps its office, heartbeats on and
holds a lease again once a majority acknowledges a round whose lease has not run out; a win whose votes
took longer than a lease takes office without one.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import Output, RaftCore
from raft_election.events import (
    BecameLeader,
    LeaderChanged,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    TermChanged,
)
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


def test_a_late_win_takes_office_without_a_lease_and_claims_at_the_first_acknowledged_round():
    """Thesis §6.4.1: the lease of a new leader runs from its campaign's start, so if the deciding vote
    arrives later than campaign_start + lease, the winner holds no lease.  It takes office anyway (throwing
    the win away would cost a new term, whose votes a loaded cluster answers as slowly), heartbeats at once
    and reports nothing it could act on: BecameLeader (``late``) comes when a majority acknowledges a round
    of its own, with the lease of that round.

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
    assert core.role is Role.LEADER and core.term == request.term and not core.is_leader(late)
    assert events(out, LeaderChanged) == [LeaderChanged(leader_id=core.node_id, term=request.term)]
    assert core.counters["wins_without_lease"] == 1
    beat = only(messages(out, Heartbeat, to=2))  # at once, not at the next heartbeat deadline
    acked = late + STEP
    out = core.receive(2, ack(beat), acked)
    assert events(out, BecameLeader) == [BecameLeader(term=request.term, at=acked, late=True)]
    assert core.is_leader(acked)
    assert core.lease_expiry == pytest.approx(late + lease_of(core))
    assert core.unleased_seconds(acked) == pytest.approx(acked - late)


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


def test_the_leader_asks_to_be_ticked_at_its_lease_expiry_and_keeps_office():
    """Thesis §6.4.1: the lease end is reported exactly, as a gap (LeaseLost); the leader keeps its role and
    term and asks to be ticked next at its heartbeat deadline, not again at the lapsed expiry."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    outputs = []
    while not events([out for _, out in outputs], LeaseLost):
        at = core.next_deadline
        assert at <= expiry
        outputs.append((at, core.tick(at)))
    at, out = outputs[-1]
    assert at == expiry
    assert events(out, LeaseLost) == [LeaseLost(term=election.term, at=expiry, lease_end=expiry)]
    assert events(out, LostLeadership) == []
    assert core.role is Role.LEADER and core.term == election.term and not core.is_leader(expiry)
    assert expiry < core.next_deadline <= expiry + config_of(core).heartbeat_interval
    assert core.counters["lease_gaps"] == 1


def test_a_late_tick_reports_the_lease_end_not_the_time_of_the_tick():
    """Thesis §6.4.1: a late tick still reports the lease's real end, and the leader heartbeats on."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    late = expiry + 3 * STEP
    out = core.tick(late)
    assert core.role is Role.LEADER
    assert events(out, LeaseLost) == [LeaseLost(term=election.term, at=late, lease_end=expiry)]
    assert messages(out, Heartbeat, to=2) and messages(out, Heartbeat, to=3)


def test_a_late_acknowledgement_restores_the_lease_of_its_round_if_that_has_not_run_out():
    """Thesis §6.4.1: the lease is checked before a message is handled, so the gap is reported first; an
    acknowledgement then gives the lease of the round it answers (from that round's send time), which holds
    again only if it has not run out too."""
    core, election = leader(members=3)
    h = config_of(core).heartbeat_interval
    first_expiry = core.lease_expiry
    old = beat_at(core, election.won_at + h)
    fresh = beat_at(core, first_expiry)  # sent as the first lease runs out
    core.tick(first_expiry)
    stale_at = election.won_at + h + lease_of(core)  # the lease of ``old`` has run out by then
    assert stale_at > first_expiry
    out = core.receive(2, ack(old), stale_at)
    assert events(out, LeaseRegained) == [] and not core.is_leader(stale_at)
    assert core.lease_expiry == pytest.approx(stale_at)
    at = stale_at + STEP
    out = core.receive(2, ack(fresh), at)
    assert events(out, LeaseRegained) == [LeaseRegained(term=election.term, at=at)]
    assert core.is_leader(at) and core.lease_expiry == pytest.approx(first_expiry + lease_of(core))
    assert core.counters["leases_regained"] == 1
    assert core.unleased_seconds(at) == pytest.approx(at - first_expiry)


def test_a_higher_term_during_a_gap_deposes_the_leader():
    """Raft §5.1: a leader in a lease gap still holds office in its term, and a higher term ends it; the
    claim had already ended with the gap (``had_lease`` False)."""
    core, election = leader(members=3)
    expiry = core.lease_expiry
    core.tick(expiry)
    at = expiry + STEP
    out = core.receive(3, Heartbeat(term=election.term + 1, round=7), at)
    assert [e for e in events(out) if isinstance(e, (LostLeadership, TermChanged, LeaderChanged))] == [
        LostLeadership(term=election.term, at=at, lease_end=expiry, reason="higher_term", had_lease=False),
        TermChanged(term=election.term + 1),
        LeaderChanged(leader_id=3, term=election.term + 1)]
    assert core.role is Role.FOLLOWER and core.counters["step_downs_higher_term"] == 1


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


@settings(max_examples=300)
@given(members=st.sampled_from([3, 4, 5]), vote_delay=st.integers(min_value=0, max_value=3), steps=actions)
def test_the_lease_for_any_order_and_timing_of_acknowledgements(members, vote_delay, steps):
    """Thesis §6.4.1, for arbitrary ack orders and timings: at every instant the lease ends at
    ``s + election_timeout_min * (1 - max_clock_drift)``, where ``s`` is the latest send time such that a
    majority (the leader included, voters counting from the vote round) acknowledged a round sent at ``s``
    or later, whenever the acknowledgements came; is_leader(now) is exactly ``now`` before that; every call
    reports a lease that ran out (LeaseLost, at its end) or began again (LeaseRegained) since the last one;
    and the office ends only by check-quorum (thesis §6.2): at a heartbeat tick, fewer than a majority heard
    within election_timeout_max."""
    core, election = leader(members=members, vote_delay=vote_delay * STEP)
    config = config_of(core)
    majority = len(config.members) // 2 + 1
    lease = lease_of(core)
    voters = config.peer_ids[: majority - 1]
    # The newest send time each member is known to have heard from the leader, and when each peer last
    # answered a round the leader knows.
    heard = dict.fromkeys(voters, election.campaign_start)
    answered = dict.fromkeys(voters, election.won_at)
    sent: list[tuple[int, float]] = [(only(messages(election.winning_output, Heartbeat, to=2)).round,
                                      election.won_at)]
    heard[core.node_id] = election.won_at
    now = election.won_at
    held = True

    def model_expiry() -> float:
        ranked = sorted(heard.values(), reverse=True)
        start = ranked[majority - 1] if len(ranked) >= majority else election.campaign_start
        return max(start, election.campaign_start) + lease

    def in_touch() -> int:
        return 1 + sum(1 for at in answered.values() if now - at < config.election_timeout_max)

    def check(out: Output) -> bool:
        """Check one output against the model; return whether the office is over."""
        nonlocal held
        lost = events(out, LostLeadership)
        if lost:
            (event,) = lost
            assert event.reason == "check_quorum" and in_touch() < majority
            assert event.had_lease == (now < model_expiry()) and core.role is Role.FOLLOWER
            return True
        assert core.role is Role.LEADER
        valid = now < model_expiry()
        gaps, regained = events(out, LeaseLost), events(out, LeaseRegained)
        if held and not valid:
            assert gaps == [LeaseLost(term=election.term, at=now, lease_end=model_expiry())] and not regained
        elif not held and valid:
            assert regained == [LeaseRegained(term=election.term, at=now)] and not gaps
        else:
            assert gaps == regained == []
        held = valid
        beats = messages(out, Heartbeat, to=2)
        if beats:
            assert in_touch() >= majority  # the tick's check-quorum passed
        for beat in beats:
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
            if step[1] in config.peer_ids:
                heard[step[1]] = max(heard.get(step[1], -math.inf), sent_at)
                answered[step[1]] = now
            response = HeartbeatResponse(term=election.term, round=round_, candidate=True)
            out = core.receive(step[1], response, now)
        else:
            unknown = (sent[-1][0] + 1000) & MAX_ROUND
            response = HeartbeatResponse(term=election.term, round=unknown, candidate=True)
            out = core.receive(step[1], response, now)
        if check(out):
            break
