"""Scenario tests: the same fault stories on the deterministic simulation and on threaded nodes.

The simulated versions may assert virtual-time bounds (they are exact and replayable); the threaded ones
assert the path taken (terms, counters, who leads), never wall-clock durations.
"""

from __future__ import annotations

from typing import Any

import pytest

from raft_election.events import BecameLeader, LeaseLost, LostLeadership
from raft_election.roles import Role
from raft_election.sim import SimulatedCluster
from raft_election.testing import ThreadedCluster

SEEDS = [1, 2, 3, 4, 5]
TIMEOUT_MIN, TIMEOUT_MAX = 0.150, 0.300
LEASE = TIMEOUT_MIN * (1 - 0.05)


@pytest.fixture
def threaded():
    made: list[ThreadedCluster] = []

    def make(size: int = 5, **kwargs: Any) -> ThreadedCluster:
        made.append(ThreadedCluster(size, **kwargs))
        made[-1].start_all()
        return made[-1]

    yield make
    for each in made:
        each.close()


def _others(cluster_ids: Any, *excluded: int) -> list[int]:
    return [node_id for node_id in cluster_ids if node_id not in excluded]


# ---------------------------------------------------------------------------- isolated leader


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_isolated_leader_stops_claiming_within_its_lease_leaves_office_and_the_majority_elects_another(
        seed):
    cluster = SimulatedCluster(5, seed=seed)
    old = cluster.wait_for_leader()
    cut_at = cluster.now
    cluster.isolate(old)
    cluster.run_until(lambda: not cluster.nodes[old].core.is_leader(cluster.nodes[old].local(cluster.now)),
                      timeout=LEASE + 0.001)
    # It stopped believing within one lease (a gap: it keeps office until check-quorum) ...
    assert cluster.now - cut_at <= LEASE
    assert cluster.nodes[old].core.role is Role.LEADER
    # ... and left office once election_timeout_max passed without a majority (checked at a heartbeat).
    cluster.run_until(lambda: cluster.nodes[old].core.role is Role.FOLLOWER, timeout=TIMEOUT_MAX + 0.06)
    cluster.run_until(lambda: cluster.leader() not in (None, old), timeout=3 * TIMEOUT_MAX)
    new = cluster.leader()
    assert new is not None and new != old
    lost = [e for _, e in cluster.events(old) if isinstance(e, LostLeadership)]
    assert lost and lost[-1].reason == "check_quorum" and not lost[-1].had_lease
    assert [e for _, e in cluster.events(old) if isinstance(e, LeaseLost)]


def test_threaded_isolated_leader_steps_down_and_the_majority_elects_another(threaded):
    c = threaded(5)
    old = c.wait_for_stable_leader()
    term = c.nodes[old].term
    c.network.isolate(old)
    c.wait_for(lambda: not c.nodes[old].is_leader and c.nodes[old].role is Role.FOLLOWER, what="step down")
    c.wait_for(lambda: any(n.is_leader for i, n in c.nodes.items() if i != old), what="a new leader")
    new = next(i for i, n in c.nodes.items() if n.is_leader)
    assert new != old and c.nodes[new].term > term

    def reasons() -> list[str]:  # events reach the observer on the callback thread, a moment later
        return [e.reason for i, e in c.events if i == old and isinstance(e, LostLeadership)]

    c.wait_for(lambda: bool(reasons()), what="the old leader's LostLeadership event")
    assert reasons()[-1] == "check_quorum"


# ---------------------------------------------------------------------------- rejoining follower


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_follower_isolated_for_many_timeouts_rejoins_without_raising_the_term(seed):
    cluster = SimulatedCluster(5, seed=seed)
    leader = cluster.wait_for_leader()
    term = cluster.terms[leader]
    follower = _others(cluster.nodes, leader)[0]
    cluster.isolate(follower)
    cluster.run_for(20 * TIMEOUT_MAX)
    assert cluster.nodes[follower].core.counters["pre_votes_started"] >= 10
    assert cluster.terms[follower] == term
    cluster.heal()
    cluster.run_for(3 * 0.05)
    assert cluster.stable_leader() == leader and cluster.terms[leader] == term


def test_threaded_follower_isolated_for_many_timeouts_rejoins_without_raising_the_term(threaded):
    c = threaded(5)
    leader = c.wait_for_stable_leader()
    term = c.nodes[leader].term
    follower = _others(c.nodes, leader)[0]
    c.network.isolate(follower)
    c.wait_for(lambda: c.nodes[follower].status().counters.get("pre_votes_started", 0) >= 5,
               what="five pre-vote rounds by the isolated follower")
    assert c.nodes[follower].term == term
    c.network.rejoin(follower)
    c.wait_for(lambda: c.nodes[follower].leader_id == leader, what="follower rejoined")
    assert c.stable_leader() == leader and c.nodes[leader].term == term
    assert c.counter("became_leader") == 1


# ---------------------------------------------------------------------------- partial connectivity


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_partial_connectivity_keeps_a_stable_leader(seed):
    cluster = SimulatedCluster(3, seed=seed)
    leader = cluster.wait_for_leader()
    a, b = _others(cluster.nodes, leader)
    cluster.block(a, b)  # a and b each reach only the leader
    cluster.block(b, a)
    term = cluster.terms[leader]
    cluster.run_for(30 * TIMEOUT_MAX)
    assert cluster.stable_leader() == leader and set(cluster.terms.values()) == {term}


def test_threaded_partial_connectivity_keeps_a_stable_leader(threaded):
    c = threaded(3)
    leader = c.wait_for_stable_leader()
    a, b = _others(c.nodes, leader)
    c.network.block(a, b)
    c.network.block(b, a)
    term = c.nodes[leader].term
    sent = c.nodes[leader].status().counters["messages_sent"]
    pre_votes = c.counter("pre_votes_started")
    # Let several election timeouts pass (60 heartbeat rounds to two followers is 3 s at the defaults);
    # both followers keep hearing the leader and never campaign.
    c.wait_for(lambda: c.nodes[leader].status().counters["messages_sent"] - sent >= 120,
               what="60 heartbeat rounds")
    assert c.counter("pre_votes_started") == pre_votes
    assert c.stable_leader() == leader and {n.term for n in c.nodes.values()} == {term}


# ---------------------------------------------------------------------------- one-way links


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_one_way_link_from_the_leader_keeps_it_in_office(seed):
    cluster = SimulatedCluster(5, seed=seed)
    leader = cluster.wait_for_leader()
    follower = _others(cluster.nodes, leader)[0]
    term = cluster.terms[leader]
    cluster.block(leader, follower)  # the follower never hears the leader, the leader hears it
    cluster.run_for(30 * TIMEOUT_MAX)
    assert cluster.leader() == leader and cluster.terms[leader] == term
    assert cluster.terms[follower] == term  # its pre-votes were refused by sticky peers
    cluster.heal()
    cluster.run_for(0.1)
    assert cluster.stable_leader() == leader


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_one_way_link_to_the_leader_keeps_it_in_office(seed):
    cluster = SimulatedCluster(5, seed=seed)
    leader = cluster.wait_for_leader()
    follower = _others(cluster.nodes, leader)[0]
    term = cluster.terms[leader]
    cluster.block(follower, leader)  # the leader never hears the follower; a majority still answers
    cluster.run_for(30 * TIMEOUT_MAX)
    assert cluster.stable_leader() == leader and cluster.terms[leader] == term


def test_threaded_one_way_link_from_the_leader_keeps_it_in_office(threaded):
    c = threaded(5)
    leader = c.wait_for_stable_leader()
    follower = _others(c.nodes, leader)[0]
    term = c.nodes[leader].term
    c.network.block(leader, follower)
    c.wait_for(lambda: c.nodes[follower].status().counters.get("pre_votes_started", 0) >= 3,
               what="the cut-off follower tried pre-votes")
    assert c.nodes[leader].is_leader and c.nodes[leader].term == term
    assert c.nodes[follower].term == term
    c.network.heal()
    c.wait_for(lambda: c.stable_leader() == leader, what="follower back with the same leader")


# ---------------------------------------------------------------------------- split votes


def test_sim_split_votes_resolve():
    """Raft §5.2: split votes are resolved by fresh randomized timeouts.

    A 10 ms randomization window (shorter than two message delays) and no pre-vote make members time out
    nearly together, so votes split often; every run must still end with one leader, and some runs must
    have gone through split (winnerless) terms first.  (With a 1 ms window elections take tens of seconds,
    the Raft paper's Figure 16 point.)
    """
    splits = 0
    for seed in range(20):
        cluster = SimulatedCluster(4, seed=seed, delay=(0.004, 0.006), election_timeout=(0.150, 0.160),
                                   pre_vote=False)
        leader = cluster.wait_for_leader(timeout=60.0)
        won = [e.term for n in cluster.nodes.values() for _, e in n.events if isinstance(e, BecameLeader)]
        assert won == [cluster.terms[leader]]  # one winner, in the final term
        splits += cluster.terms[leader] > 1
    assert splits >= 3, f"only {splits} of 20 runs had a split vote"


def test_threaded_split_votes_resolve(threaded):
    """Raft §5.2: with the cluster split in halves nobody can win (2 of 4 is no majority), terms rise in
    both halves; once healed, one leader emerges in a single term."""
    c = threaded(4, pre_vote=False, election_timeout=(0.150, 0.160), delay=(0.004, 0.006))
    c.wait_for_stable_leader()
    before = {i: n.status().counters.get("elections_started", 0) for i, n in c.nodes.items()}
    c.network.partition({1, 2}, {3, 4})
    c.wait_for(lambda: all(n.status().counters.get("elections_started", 0) >= before[i] + 2
                           for i, n in c.nodes.items()), what="every member campaigned in vain, twice")
    assert not any(n.is_leader for n in c.nodes.values())
    c.network.heal()
    leader = c.wait_for_stable_leader()
    assert len({n.term for n in c.nodes.values()}) == 1
    assert c.nodes[leader].is_leader


# ---------------------------------------------------------------------------- graceful stop


@pytest.mark.parametrize("seed", SEEDS)
def test_sim_graceful_handover_is_faster_than_an_election_timeout(seed):
    cluster = SimulatedCluster(5, seed=seed)
    old = cluster.wait_for_leader()
    cluster.run_for(0.2)
    started = cluster.now
    target = cluster.transfer_leadership(old)
    cluster.run_until(lambda: cluster.leader() == target, timeout=TIMEOUT_MIN)
    assert cluster.now - started < TIMEOUT_MIN
    assert cluster.terms[target] == cluster.terms[old]


def test_threaded_graceful_stop_of_the_leader_hands_over_without_an_election_timeout(threaded):
    c = threaded(5)
    old = c.wait_for_stable_leader()
    # Heartbeat answers tell the leader which followers stand for election; wait until it has them all.
    c.wait_for(lambda: len(c.nodes[old].status().followers) == 4, what="answers from all four followers")
    term = c.nodes[old].term
    pre_votes = c.counter("pre_votes_started")
    c.nodes[old].stop()
    c.wait_for(lambda: any(n.is_leader for i, n in c.nodes.items() if i != old), what="a new leader")
    new = next(i for i, n in c.nodes.items() if n.is_leader)
    # The path: one transfer by the old leader, the target's campaign in term + 1, and no pre-vote round
    # (a pre-vote would mean somebody's election timeout fired).
    assert c.nodes[old].status().counters["transfers"] == 1
    assert c.nodes[new].term == term + 1
    assert c.counter("pre_votes_started") == pre_votes
