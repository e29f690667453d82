"""Lease gaps on the deterministic simulation: a slow host costs the lease for a moment, never the office.

Thesis §6.4.1 with §6.2: the lease is what keeps two servers from believing they lead at once; office is
kept through a lapse of the lease and lost only to a higher term, a step-down or transfer, or check-quorum
(no majority heard within ``election_timeout_max``).  Slow servers (``SimulatedCluster.slow``: every input
handled late, in order, as on a loaded host) make leases lapse without any fault on the network.  The
cluster's oracle checks every step (never two lease holders) and, at the end, every recorded lease
interval: no overlaps, and leases never going back to a lower term.
"""

from __future__ import annotations

import pytest

from raft_election.events import BecameLeader, LeaseLost, LeaseRegained, LostLeadership
from raft_election.roles import Role
from raft_election.sim import SimulatedCluster

SEEDS = [1, 2, 3, 4, 5, 6]
TIMEOUT = (0.150, 0.300)
HEARTBEAT = 0.050


def cluster_of(seed: int, **settings: object) -> SimulatedCluster:
    return SimulatedCluster(5, seed=seed, delay=(0.0005, 0.002), clock_drift=0.05, election_timeout=TIMEOUT,
                            heartbeat_interval=HEARTBEAT, max_clock_drift=0.05, **settings)


def kinds(cluster: SimulatedCluster, node: int, *types: type) -> list[object]:
    return [event for _, event in cluster.events(node) if isinstance(event, types)]


def holders_inside_gaps(cluster: SimulatedCluster) -> list[tuple[object, object]]:
    """Pairs (gap, lease) where another server's lease shared a moment with a gap that ended in the same
    token: the fencing rule "a token shared by a gap and its recovery had no other holder in between"."""
    intervals = cluster.oracle.leaderships
    found = []
    for after in (i for i in intervals if i.resumed):
        before = max((i for i in intervals if i.node == after.node and i.term == after.term
                      and i.start < after.start), key=lambda i: i.start)
        found += [((before, after), other) for other in intervals if other.node != after.node
                  and other.start < after.start and other.held_until > before.held_until]
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_slow_followers_cost_the_leader_its_lease_at_times_but_never_its_office(seed):
    """Three of four followers answer 100-140 ms late: rounds come back near the end of their lease (142.5
    ms), so the lease lapses and comes back over and over.  The leader keeps its office and term through
    every gap, nobody else is elected, and the lease intervals are clean."""
    cluster = cluster_of(seed)
    leader = cluster.wait_for_leader()
    term = cluster.terms[leader]
    followers = [node for node in cluster.nodes if node != leader]
    for node in followers[:3]:
        cluster.slow(node, (0.100, 0.140))
    cluster.run_for(10.0)
    core = cluster.nodes[leader].core
    assert core is not None and core.role is Role.LEADER and core.term == term
    assert all(terms == term for terms in cluster.terms.values())
    gaps = kinds(cluster, leader, LeaseLost)
    regained = kinds(cluster, leader, LeaseRegained)
    assert len(gaps) >= 5 and len(regained) >= len(gaps) - 1
    assert core.counters["lease_gaps"] == len(gaps)
    assert kinds(cluster, leader, LostLeadership) == []
    assert [n for n in cluster.nodes if n != leader and kinds(cluster, n, BecameLeader)] == []
    assert sum(1 for i in cluster.oracle.leaderships if i.resumed) == len(regained)
    assert holders_inside_gaps(cluster) == []
    cluster.oracle.check_intervals()
    assert cluster.oracle.violations == []


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_leader_keeps_office_through_its_own_lease_gaps(seed):
    """The leader itself handles everything 30-80 ms late (its heartbeats go out late, the answers are
    counted late): lease gaps, but the same leader and term throughout, and no overlaps."""
    cluster = cluster_of(seed)
    leader = cluster.wait_for_leader()
    term = cluster.terms[leader]
    cluster.slow(leader, (0.030, 0.080))
    cluster.run_for(10.0)
    core = cluster.nodes[leader].core
    assert core is not None and core.role is Role.LEADER and core.term == term
    assert kinds(cluster, leader, LeaseLost) and kinds(cluster, leader, LeaseRegained)
    assert all(terms == term for terms in cluster.terms.values())
    assert holders_inside_gaps(cluster) == []
    cluster.oracle.check_intervals()


@pytest.mark.parametrize("seed", SEEDS)
def test_votes_slower_than_a_lease_still_elect_a_leader_that_takes_its_lease_later(seed):
    """Every follower answers 150-200 ms late, longer than a lease (142.5 ms): each win is late.  It takes
    office without a lease and holds one once a majority answers a heartbeat round in time; before this
    change the win was declined and the cluster retried in new terms, as slowly, for ever."""
    cluster = cluster_of(seed)
    for node in cluster.nodes:
        cluster.slow(node, (0.150, 0.200))
    cluster.run_until(lambda: any(core.counters["wins_without_lease"]
                                  for core in (n.core for n in cluster.nodes.values()) if core is not None),
                      timeout=20.0)
    late = [node for node, n in cluster.nodes.items() if n.core is not None and n.core.role is Role.LEADER]
    assert len(late) == 1
    cluster.oracle.check_lease_order()
    assert not cluster.oracle.violations


@pytest.mark.parametrize("seed", SEEDS)
def test_a_majority_that_stops_answering_ends_the_office_by_check_quorum_after_the_gap(seed):
    """Thesis §6.2 at the new window: cut from every follower, the leader first loses its lease (a gap, at
    most a lease after the last answered round), then its office, once ``election_timeout_max`` passed
    without hearing from a majority; by then the others have elected a new leader."""
    cluster = cluster_of(seed)
    leader = cluster.wait_for_leader()
    cut = cluster.now
    cluster.isolate(leader)
    cluster.run_until(lambda: cluster.nodes[leader].core is not None
                      and cluster.nodes[leader].core.role is Role.FOLLOWER, timeout=2 * TIMEOUT[1])
    (gap,) = kinds(cluster, leader, LeaseLost)
    (lost,) = kinds(cluster, leader, LostLeadership)
    assert lost.reason == "check_quorum" and not lost.had_lease
    node = cluster.nodes[leader]
    assert node.to_global(gap.lease_end) <= cut + TIMEOUT[0]
    assert node.to_global(lost.at) >= cut + TIMEOUT[1] - HEARTBEAT
    cluster.heal()
    new = cluster.wait_for_leader()
    assert new != leader
    cluster.oracle.check_intervals()
