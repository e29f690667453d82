"""Fast failover in the deterministic simulation: the paths taken, and what false evidence can and cannot do.

Every step is watched by the simulation's oracle (one leader per term, never two lease holders at one
instant, one vote per term), so each scenario below also checks the guarantees.
"""

from __future__ import annotations

import pytest

from raft_election.events import BecameLeader
from raft_election.sim import SimulatedCluster

SETTINGS = {"election_timeout": (0.150, 0.300), "heartbeat_interval": 0.050}
DELAY = (0.0002, 0.001)  # loopback-like


def new_leadership(cluster: SimulatedCluster, after: float) -> tuple[int, BecameLeader]:
    """The first BecameLeader reported after global time ``after``."""
    wins = sorted((at, node_id, event) for node_id in cluster.nodes for at, event in cluster.events(node_id)
                  if isinstance(event, BecameLeader) and at > after)
    assert wins, "nobody became leader"
    return wins[0][1], wins[0][2]


def settled(seed: int, **options: object) -> tuple[SimulatedCluster, int]:
    cluster = SimulatedCluster(5, seed=seed, delay=DELAY, **SETTINGS, **options)  # type: ignore[arg-type]
    cluster.wait_for_leader()
    cluster.run_for(0.5)
    leader = cluster.stable_leader()
    assert leader is not None
    return cluster, leader


@pytest.mark.parametrize("on_crash", [False, True], ids=["probe", "evidence-on-crash"])
@pytest.mark.parametrize("seed", range(5))
def test_a_crashed_leader_is_replaced_by_a_fast_election(seed, on_crash):
    cluster, old = settled(seed, evidence_on_crash=on_crash)
    crashed_at = cluster.now
    cluster.crash(old)
    cluster.run_until(lambda: cluster.leader() is not None, 5.0)
    new, event = new_leadership(cluster, crashed_at)
    assert new != old and event.fast
    assert {about for _, _, about, _ in cluster.evidence_log} == {old}


@pytest.mark.parametrize("seed", range(5))
def test_a_paused_leader_gives_no_evidence_and_is_replaced_the_slow_way(seed):
    cluster, old = settled(seed)
    paused_at = cluster.now
    cluster.pause(old)
    cluster.run_until(lambda: cluster.leader() not in (None, old), 5.0)
    _, event = new_leadership(cluster, paused_at)
    assert not event.fast and cluster.evidence_log == []
    cluster.resume(old)
    cluster.run_for(1.0)  # the old leader wakes up into a cluster that moved on: the oracle watches


@pytest.mark.parametrize("seed", range(5))
def test_with_fast_failover_off_nothing_is_probed(seed):
    cluster, old = settled(seed, fast_failover=False)
    crashed_at = cluster.now
    cluster.crash(old)
    cluster.run_until(lambda: cluster.leader() is not None, 5.0)
    _, event = new_leadership(cluster, crashed_at)
    assert not event.fast and cluster.evidence_log == []


@pytest.mark.parametrize("seed", range(5))
def test_a_restart_within_milliseconds_does_not_confuse_anyone(seed):
    """Evidence about the old incarnation may arrive after the new one runs: the new one never led, so a
    fast election over it is safe, and it rejoins as a follower."""
    cluster, old = settled(seed, evidence_on_crash=True)
    cluster.crash(old)
    cluster.run_for(0.0003)
    cluster.start(old)
    cluster.run_until(lambda: cluster.stable_leader() is not None, 5.0)
    cluster.run_for(1.0)
    assert cluster.stable_leader() is not None


@pytest.mark.parametrize("seed", range(5))
def test_false_evidence_at_one_member_about_a_live_leader_changes_nothing(seed):
    cluster, leader = settled(seed)
    forger = min(node_id for node_id in cluster.nodes if node_id != leader)
    term = cluster.terms[leader]
    cluster.forge_evidence(forger, leader)
    cluster.run_for(1.0)
    assert cluster.stable_leader() == leader and cluster.terms[leader] == term


@pytest.mark.parametrize("seed", range(5))
def test_one_fooled_member_cannot_elect_beside_a_live_leader_even_with_unsticky_voters(seed):
    """Why a fast campaign needs a majority of evidence-backed grants, not just a majority.

    The leader L still reaches F and Z, so it keeps its lease; N and X lost touch with L long ago, so they
    are outside their stickiness windows and grant any request.  F, fooled by false evidence about L,
    campaigns at once.  Counting every grant, F would win with N and X while L's lease (acknowledged by F
    and Z) still runs: two lease holders, which the oracle would report.  Counting only evidence-backed
    grants, F has its own and nobody else's.
    """
    cluster, leader = settled(seed)
    forger, _, n, x = sorted(node_id for node_id in cluster.nodes if node_id != leader)
    for far in (n, x):
        cluster.block(leader, far)
        cluster.block(far, leader)
    cluster.run_for(0.5)  # N and X are long past their windows; L still leads with F and Z
    assert cluster.leader() == leader
    term = cluster.terms[leader]
    cluster.forge_evidence(forger, leader)
    cluster.run_for(0.02)
    assert cluster.leader() == leader
    assert cluster.terms[leader] == term
    assert all(not event.fast for node_id in cluster.nodes for _, event in cluster.events(node_id)
               if isinstance(event, BecameLeader))
