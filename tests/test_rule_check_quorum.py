"""Thesis §6.2, check-quorum: "a leader steps down if an election timeout elapses without a successful round
of heartbeats to a majority of its cluster."

SPEC §4: a leader that has not heard from a majority (itself included) within the window a follower would
need before electing someone else (``election_timeout_max``) leaves office by itself, so an isolated old
leader does not hold the office forever.  Its lease (thesis §6.4.1) runs out long before; that is a gap,
not a loss of office, and a slow majority that still answers keeps the leader in office.
"""

from __future__ import annotations

from collections.abc import Callable

from raft_election.core import Output, RaftCore
from raft_election.events import LeaseLost, LostLeadership
from raft_election.messages import Heartbeat, HeartbeatResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import STEP, Election, ack, config_of, elect, make_core, messages, only

START = 1.0


def lead(
    core: RaftCore,
    election: Election,
    until: float,
    answering: Callable[[int], set[int]],
) -> list[tuple[float, Output]]:
    """Run a leader by its own deadlines until ``until`` or until it stops leading.

    Heartbeat round ``k`` (0 is the one sent on taking office) is acknowledged, STEP/4 after it left, by
    the peers in ``answering(k)``.  Returns every (time, output) of the run.
    """
    outputs: list[tuple[float, Output]] = []
    out, sent_at, k = election.winning_output, election.won_at, 0
    while True:
        beats = messages(out, Heartbeat)
        if beats:
            for peer in sorted(answering(k)):
                outputs.append((sent_at, core.receive(peer, ack(beats[0]), sent_at + STEP / 4)))
            k += 1
        if core.role is not Role.LEADER or core.next_deadline > until:
            return outputs
        sent_at = core.next_deadline
        out = core.tick(sent_at)
        outputs.append((sent_at, out))


def lost(outputs: list[tuple[float, Output]]) -> list[tuple[float, LostLeadership]]:
    return [(at, event) for at, out in outputs for event in out.events if isinstance(event, LostLeadership)]


def test_a_leader_that_hears_from_a_majority_stays_leader():
    """Thesis §6.2: two of four peers answering (3 of 5 with the leader) keeps the leader in office."""
    core = make_core(members=5)
    election = elect(core, now=START)
    until = START + 20 * config_of(core).election_timeout_max
    run = lead(core, election, until, lambda k: {2, 3})
    assert lost(run) == []
    assert core.role is Role.LEADER and core.is_leader(until)


def test_a_majority_need_not_answer_the_same_heartbeat():
    """SPEC §4: what counts is hearing from a majority within election_timeout_min, not one round's acks."""
    core = make_core(members=5)
    election = elect(core, now=START)
    until = START + 20 * config_of(core).election_timeout_max
    run = lead(core, election, until, lambda k: {2} if k % 2 else {3})
    assert lost(run) == []
    assert core.role is Role.LEADER


def test_a_leader_that_hears_from_a_minority_steps_down():
    """Thesis §6.2: one of four peers answering every heartbeat is not a majority: the leader leaves office
    once election_timeout_max passed without a majority (the votes that elected it were the last), at the
    first heartbeat tick after that; its lease ran out long before, as a gap."""
    core = make_core(members=5, hard_state=HardState(term=2))
    config = config_of(core)
    election = elect(core, now=START)
    run = lead(core, election, START + 10 * config.election_timeout_max, lambda k: {2})
    (at, event), = lost(run)
    assert event.term == election.term and event.reason == "check_quorum" and not event.had_lease
    assert election.won_at + config.election_timeout_max <= at
    assert at <= election.won_at + config.election_timeout_max + config.heartbeat_interval
    (gap,) = [e for _, out in run for e in out.events if isinstance(e, LeaseLost)]
    assert gap.lease_end < at
    assert core.role is Role.FOLLOWER and core.leader_id is None and core.term == election.term


def test_a_leader_cut_off_from_everyone_steps_down():
    """Thesis §6.2: an isolated leader does not lead forever; it becomes a follower with a fresh timer."""
    core = make_core(members=3)
    config = config_of(core)
    election = elect(core, now=START)
    run = lead(core, election, START + 10 * config.election_timeout_max, lambda k: set())
    (at, event), = lost(run)
    assert event.reason == "check_quorum"
    assert at <= election.won_at + config.election_timeout_max + config.heartbeat_interval
    assert core.role is Role.FOLLOWER and not core.is_leader(at)
    assert config.election_timeout_min <= core.next_deadline - at <= config.election_timeout_max


def test_a_majority_that_answers_too_slowly_for_a_lease_keeps_the_leader_in_office():
    """Thesis §6.2 against §6.4.1: answers that each arrive after their round's lease ran out give no lease,
    but they are answers: the leader keeps office, without a lease, instead of forcing an election."""
    core = make_core(members=3)
    config = config_of(core)
    election = elect(core, now=START)
    slow = config.election_timeout_min * (1 - config.max_clock_drift) + STEP
    assert slow < config.election_timeout_max
    until = START + 20 * config.election_timeout_max
    first = messages(election.winning_output, Heartbeat, to=2)
    in_flight = [(election.won_at + slow, beat) for beat in first]
    outputs = []
    now = election.won_at
    while now < until:
        now = min([core.next_deadline, *(at for at, _ in in_flight)])
        if in_flight and in_flight[0][0] == now:
            out = core.receive(2, ack(in_flight.pop(0)[1]), now)
        else:
            out = core.tick(now)
            in_flight += [(now + slow, beat) for beat in messages(out, Heartbeat, to=2)]
        outputs.append((now, out))
    assert lost(outputs) == []
    assert core.role is Role.LEADER and not core.is_leader(now)
    assert core.counters["lease_gaps"] == 1 and core.counters["leases_regained"] == 0


def test_a_leader_whose_majority_stops_answering_steps_down_within_the_timeout():
    """Thesis §6.2: after a partition cuts the leader from its majority, it steps down within
    election_timeout_max (plus one heartbeat interval, when it checks) of the last majority answer."""
    core = make_core(members=5)
    config = config_of(core)
    election = elect(core, now=START)
    cut_at = START + 5 * config.election_timeout_max
    answered: list[float] = []

    def answering(k: int) -> set[int]:
        if election.won_at + k * config.heartbeat_interval < cut_at:
            answered.append(election.won_at + k * config.heartbeat_interval + STEP / 4)
            return {2, 3, 4, 5}
        return set()

    run = lead(core, election, START + 20 * config.election_timeout_max, answering)
    (at, event), = lost(run)
    assert event.reason == "check_quorum"
    assert answered[-1] + config.election_timeout_max <= at
    assert at <= answered[-1] + config.election_timeout_max + config.heartbeat_interval


def test_check_quorum_counts_the_leader_and_the_peers_heard_within_election_timeout_max():
    """Thesis §6.2, the count itself (white box: ``_check_quorum`` runs at each heartbeat tick, where the
    boundary falls between ticks, so the count is exercised directly here).

    A 5-member leader last heard from peers 2 and 3 at ``a``: with itself that is a majority until
    ``a + election_timeout_max``, and not from then on.
    """
    core = make_core(members=5)
    config = config_of(core)
    election = elect(core, now=START)
    beat = only(messages(election.winning_output, Heartbeat, to=2))
    heard = election.won_at + STEP
    for peer in (2, 3):
        core.receive(peer, HeartbeatResponse(term=beat.term, round=beat.round, candidate=True), heard)
    core._check_quorum(heard + config.election_timeout_max - STEP)
    assert core.role is Role.LEADER
    out_at = heard + config.election_timeout_max
    core._check_quorum(out_at)
    assert core.role is Role.FOLLOWER
    assert core.counters["step_downs_check_quorum"] == 1
