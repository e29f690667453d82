"""Raft §5.2, randomized election timeouts and heartbeats.

"Raft uses randomized election timeouts to ensure that split votes are rare ... election timeouts are chosen
randomly from a fixed interval."  "If a follower receives no communication over a period of time called the
election timeout, then it assumes there is no viable leader and begins an election."  "Leaders send
periodic heartbeats ... to all followers in order to maintain their authority."

SPEC §3.1/§4: the timeout is drawn afresh from ``[election_timeout_min, election_timeout_max]`` each time the
timer is reset, from the injected ``random.Random`` only; leaders heartbeat every ``heartbeat_interval``.
"""

from __future__ import annotations

import math
import random

import pytest

from raft_election.core import RaftCore
from raft_election.messages import Heartbeat, VoteRequest
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, ack, config_of, elect, make_core, messages, only, recipients


def assert_fresh_timeout(core: RaftCore, reset_at: float) -> float:
    """Assert the election deadline was drawn from [min, max] after ``reset_at``; return the offset."""
    config = config_of(core)
    offset = core.election_deadline - reset_at
    assert config.election_timeout_min - 1e-9 <= offset <= config.election_timeout_max + 1e-9
    return offset


def heartbeat_offsets(core: RaftCore, count: int, start: float = 1.0) -> list[float]:
    """Feed ``count`` heartbeats of leader 2 at term 1, STEP apart; return each reset's timeout."""
    offsets = []
    for k in range(count):
        t = start + k * STEP
        core.receive(2, Heartbeat(term=1, round=k), t)
        offsets.append(assert_fresh_timeout(core, t))
    return offsets


def test_the_start_draws_a_timeout_from_the_range():
    """Raft §5.2: the first timer runs from the start and is drawn from [min, max]."""
    for seed in range(20):
        core = make_core(seed=seed, now=7.0)
        assert_fresh_timeout(core, 7.0)


def test_every_reset_draws_a_fresh_timeout_from_the_range():
    """Raft §5.2: each reset draws a new random timeout from [min, max] (not one value reused)."""
    core = make_core()
    config = config_of(core)
    offsets = heartbeat_offsets(core, 300)
    assert len(set(offsets)) == len(offsets), "some reset reused a previous timeout"
    spread = config.election_timeout_max - config.election_timeout_min
    # Drawn across the whole range, not from a corner of it.
    assert min(offsets) < config.election_timeout_min + 0.1 * spread
    assert max(offsets) > config.election_timeout_max - 0.1 * spread


def test_a_granted_vote_and_a_campaign_also_draw_fresh_timeouts():
    """Raft §5.2: granting a vote and starting an election both restart the randomized timer."""
    core = make_core(pre_vote=False)
    voted_at = 2.0  # past the start's stickiness window
    out = core.receive(2, VoteRequest(term=1, round=5), voted_at)
    assert core.voted_for == 2 and out.hard_state is not None
    first = assert_fresh_timeout(core, voted_at)
    campaign_at = core.next_deadline
    core.tick(campaign_at)
    assert core.role is Role.CANDIDATE
    second = assert_fresh_timeout(core, campaign_at)
    again_at = core.next_deadline
    core.tick(again_at)
    third = assert_fresh_timeout(core, again_at)
    assert len({first, second, third}) == 3


def deadline_trace(seed: int) -> list[float]:
    """The election deadlines one core goes through under a fixed script of inputs."""
    core = make_core(seed=seed, pre_vote=False)
    trace = [core.next_deadline]
    for k in range(10):
        core.receive(2, Heartbeat(term=1, round=k), 1.0 + k * STEP)
        trace.append(core.next_deadline)
    for _ in range(5):
        core.tick(core.next_deadline)  # campaigns that nobody answers
        trace.append(core.next_deadline)
    return trace


def test_same_seed_gives_the_same_deadlines_whatever_the_global_random_state():
    """SPEC §3.1: randomness comes only from the injected rng, so a seed replays a run exactly."""
    random.seed(1)
    first = deadline_trace(seed=42)
    random.seed(2)
    random.random()
    second = deadline_trace(seed=42)
    assert first == second


def test_different_seeds_give_different_deadlines():
    """Raft §5.2: servers draw different timeouts (here: differently seeded rngs)."""
    traces = {tuple(deadline_trace(seed)) for seed in range(5)}
    assert len(traces) == 5


def test_the_core_never_touches_the_global_random_module(monkeypatch):
    """SPEC §3.1: no randomness of its own; a whole election runs with the global random functions broken."""
    core = make_core(members=3)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the core used the global random module")

    for name in ("random", "uniform", "randint", "randrange", "getrandbits", "choice", "choices",
                 "shuffle", "sample", "seed", "Random", "SystemRandom", "gauss", "expovariate"):
        monkeypatch.setattr(random, name, forbidden)
    core.receive(2, Heartbeat(term=1, round=1), 1.0)
    election = elect(core, now=3.0)
    core.tick(election.won_at + config_of(core).heartbeat_interval)
    core.step_down(election.won_at + STEP * 5)
    core.tick(core.next_deadline)
    assert core.role is Role.PRE_CANDIDATE


@pytest.mark.parametrize(("pre_vote", "role", "term_raised"), [
    (True, Role.PRE_CANDIDATE, False),
    (False, Role.CANDIDATE, True),
])
def test_a_follower_that_hears_nothing_times_out_and_campaigns(pre_vote, role, term_raised):
    """Raft §5.2 (and thesis §9.6): no communication for an election timeout starts an election.

    With pre-vote on, the election starts as a pre-vote (PRE_CANDIDATE, term unchanged); off, the follower
    becomes CANDIDATE of term + 1.
    """
    core = make_core(members=5, pre_vote=pre_vote, hard_state=HardState(term=4))
    config = config_of(core)
    deadline = core.next_deadline
    early = core.tick(math.nextafter(deadline, -math.inf))
    assert early.empty
    assert core.role is Role.FOLLOWER
    out = core.tick(deadline)
    assert core.role is role
    assert core.term == (5 if term_raised else 4)
    assert sorted(recipients(out, VoteRequest)) == list(config.peer_ids)
    assert {request.pre_vote for request in messages(out, VoteRequest)} == {pre_vote}
    assert {request.term for request in messages(out, VoteRequest)} == {5}


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_campaign_that_gets_no_answer_times_out_and_starts_again(pre_vote):
    """Raft §5.2: "if election timeout elapses: start new election" (a new round, a fresh timeout)."""
    core = make_core(pre_vote=pre_vote)
    first_out = core.tick(core.next_deadline)
    first = only(messages(first_out, VoteRequest, to=2))
    retry_at = core.election_deadline
    # Until then only repeats of the same request go out (see test_rule_vote_resend).
    before = core.tick(math.nextafter(retry_at, -math.inf))
    assert {message for message in messages(before, VoteRequest)} <= {first}
    second = only(messages(core.tick(retry_at), VoteRequest, to=2))
    assert_fresh_timeout(core, retry_at)
    assert second.round != first.round
    # A pre-vote retries for the same term (nothing was raised); a real election raises the term again.
    assert second.term == (first.term if pre_vote else first.term + 1)


def test_a_heartbeat_resets_the_timer():
    """Raft §5.2: a follower remains a follower as long as it receives heartbeats from a leader."""
    core = make_core()
    old_deadline = core.next_deadline
    heard_at = old_deadline - STEP
    core.receive(2, Heartbeat(term=1, round=1), heard_at)
    assert_fresh_timeout(core, heard_at)
    out = core.tick(old_deadline)
    assert messages(out, VoteRequest) == []
    assert core.role is Role.FOLLOWER
    assert core.leader_id == 2


def test_steady_heartbeats_keep_a_follower_from_ever_campaigning():
    """Raft §5.2: heartbeats every heartbeat_interval keep a follower following for many timeouts."""
    core = make_core()
    config = config_of(core)
    t = 0.0
    round_ = 0
    while t < 20 * config.election_timeout_max:
        core.receive(2, Heartbeat(term=1, round=round_), t)
        t += config.heartbeat_interval
        round_ += 1
        if core.next_deadline <= t:
            core.tick(core.next_deadline)
        assert core.role is Role.FOLLOWER and core.leader_id == 2


def test_a_leader_heartbeats_every_heartbeat_interval():
    """Raft §5.2: the leader sends periodic heartbeats, every heartbeat_interval, to every peer."""
    core = make_core(members=3)
    config = config_of(core)
    election = elect(core, now=1.0)
    first = only(messages(election.winning_output, Heartbeat, to=2))  # sent on taking office
    assert sorted(recipients(election.winning_output, Heartbeat)) == list(config.peer_ids)
    sent_at = election.won_at
    rounds = [first.round]
    for peer in config.peer_ids:
        core.receive(peer, ack(first), sent_at)
    for _ in range(30):  # far longer than one lease: the acknowledged heartbeats keep it leading
        due = sent_at + config.heartbeat_interval
        assert core.next_deadline == pytest.approx(due)
        assert core.tick(math.nextafter(core.next_deadline, -math.inf)).empty
        out = core.tick(core.next_deadline)
        beat = only(messages(out, Heartbeat, to=2))
        assert sorted(recipients(out, Heartbeat)) == list(config.peer_ids)
        assert beat.term == election.term
        sent_at = core.next_deadline - config.heartbeat_interval
        assert sent_at == pytest.approx(due)
        rounds.append(beat.round)
        for peer in config.peer_ids:
            core.receive(peer, ack(beat), sent_at + STEP / 4)
        assert core.role is Role.LEADER
    assert len(set(rounds)) == len(rounds), "heartbeat rounds must be told apart"


def test_late_ticks_do_not_slow_the_heartbeat_cadence():
    """A timer thread wakes a little late; the next round stays due one interval after the last *due* time,
    so heartbeats keep their rate, while a stall longer than an interval starts the rounds afresh."""
    core = make_core(members=3)
    interval = config_of(core).heartbeat_interval
    election = elect(core, now=1.0)
    due = core.next_deadline
    assert due == pytest.approx(election.won_at + interval)
    lateness = interval / 10
    for _ in range(5):
        beat = only(messages(core.tick(due + lateness), Heartbeat, to=2))
        for peer in (2, 3):
            core.receive(peer, ack(beat), due + lateness)
        assert core.next_deadline == pytest.approx(due + interval)
        due = core.next_deadline
    stalled = due + 1.5 * interval
    beat = only(messages(core.tick(stalled), Heartbeat, to=2))
    assert core.next_deadline == pytest.approx(stalled + interval)
