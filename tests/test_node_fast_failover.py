"""Fast failover in threaded nodes over the in-memory network (issue 7).

A crashed member's transport is closed, so probes of it are answered with death evidence and the cluster
replaces it without waiting for an election timeout; a member that is alive but cut off gives no evidence
and is replaced the slow way.  The path taken is read from the winner's ``BecameLeader.fast`` and the
members' counters, never from timing.  Every run ends with the oracle's check that no two lease-holding
intervals overlapped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from raft_election import RaftConfig, RaftNode
from raft_election.events import BecameLeader, DeathEvidence
from raft_election.testing import PATIENCE, ThreadedCluster
from raft_election.transport import DeliverFn, Transport
from transports.memory import InMemoryNetwork

SETTINGS = {"election_timeout": (0.150, 0.300), "heartbeat_interval": 0.050}


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    members = ThreadedCluster(5, seed=3, **SETTINGS)
    try:
        yield members
    finally:
        members.close()


def next_leadership(cluster: ThreadedCluster, after: int, old: int) -> tuple[int, BecameLeader]:
    """Wait for the first BecameLeader of another member than ``old`` reported after event number ``after``
    (the old leader's own may still be on its way to the observer); return who and what."""
    found: list[tuple[int, BecameLeader]] = []

    def won() -> bool:
        found[:] = [(node_id, event) for node_id, event in cluster.events[after:]
                    if isinstance(event, BecameLeader) and node_id != old]
        return bool(found)

    cluster.wait_for(won, PATIENCE, "a new leader")
    return found[0]


def test_a_crashed_leader_is_replaced_through_the_fast_path(cluster):
    cluster.start_all()
    old = cluster.wait_for_stable_leader()
    mark = len(cluster.events)
    cluster.crash(old)
    new, event = next_leadership(cluster, mark, old)
    assert new != old and event.fast
    evidence = [e for node_id, e in cluster.events[mark:] if isinstance(e, DeathEvidence)]
    assert evidence and {e.peer for e in evidence} == {old} and all(e.kind == "closed" for e in evidence)
    assert cluster.nodes[new].status().counters["fast_elections_won"] == 1
    assert cluster.network.stats.evidence >= 2  # the winner's evidence and at least one voter's


def test_a_leader_that_is_alive_but_cut_off_is_replaced_the_slow_way(cluster):
    cluster.start_all()
    old = cluster.wait_for_stable_leader()
    mark = len(cluster.events)
    cluster.network.isolate(old)
    new, event = next_leadership(cluster, mark, old)
    assert new != old and not event.fast
    assert not any(isinstance(e, DeathEvidence) for _, e in cluster.events[mark:])
    assert cluster.network.stats.probes > 0  # the followers did ask
    cluster.network.rejoin(old)


def test_with_fast_failover_off_a_crash_takes_the_timeout_path():
    cluster = ThreadedCluster(5, seed=4, fast_failover=False, **SETTINGS)
    try:
        cluster.start_all()
        old = cluster.wait_for_stable_leader()
        mark = len(cluster.events)
        cluster.crash(old)
        new, event = next_leadership(cluster, mark, old)
        assert new != old and not event.fast
        assert cluster.counter("probes_requested") == 0 and cluster.network.stats.probes == 0
    finally:
        cluster.close()


class FailingTransport(Transport):
    """A memory transport whose ``failed`` flag the test sets, as if its receive loop had died."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.broken = False

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        self.inner.start(node_id, peers, deliver)

    def send(self, peer_id: int, data: bytes) -> None:
        self.inner.send(peer_id, data)

    def close(self) -> None:
        self.inner.close()

    @property
    def failed(self) -> bool:
        return self.broken


def test_a_node_whose_transport_failed_never_reports_leadership():
    """Its peers may already be replacing it on evidence that it is gone, so it must not claim a lease."""
    with InMemoryNetwork(seed=1) as network:
        transport = FailingTransport(network.transport(1))
        config = RaftConfig(node_id=1, peers={1: "memory:1"}, **SETTINGS)
        node = RaftNode(config, transport)
        with node:
            node.wait_for_leadership(timeout=PATIENCE)
            transport.broken = True
            status = node.status()
            assert not node.is_leader and node.leader_id is None and node.leadership() is None
            assert not status.is_leader and status.leader_id is None
            transport.broken = False
            assert node.is_leader
