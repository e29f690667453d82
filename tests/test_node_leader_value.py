"""The leader's value on threaded nodes (issue: operate a running cluster): every member knows where to
reach the leader's application, through handovers and failovers, and is told when that changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Optional

import pytest

from raft_election import RaftNode
from raft_election.errors import ConfigError
from raft_election.messages import MAX_VALUE_SIZE
from raft_election.testing import PATIENCE, ThreadedCluster


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(3)
    yield c
    c.close()


class Told:
    """Every on_leader_value call, per member."""

    def __init__(self) -> None:
        self.calls: dict[int, list[tuple[Optional[int], int, Optional[bytes]]]] = {}
        self.changed = threading.Condition()

    def callback(self, node: int):
        def told(leader: Optional[int], term: int, value: Optional[bytes]) -> None:
            with self.changed:
                self.calls.setdefault(node, []).append((leader, term, value))
                self.changed.notify_all()
        return told

    def wait_all(self, nodes, predicate) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: all(self.calls.get(n) and predicate(self.calls[n][-1])
                                                     for n in nodes), PATIENCE), self.calls


def start(cluster: ThreadedCluster, told: Told) -> None:
    for node in cluster.peers:
        cluster.start(node, value=f"http://app-{node}:8080", on_leader_value=told.callback(node),
                      on_leader_change=lambda leader, term: None)  # the two-argument callback still works


def converged(cluster: ThreadedCluster, leader: int) -> bool:
    expected = f"http://app-{leader}:8080".encode()
    return all(node.leader_value == expected for node in cluster.nodes.values() if node.status().running)


def test_every_member_knows_the_leaders_value_through_a_handover_and_a_failover(cluster):
    told = Told()
    start(cluster, told)
    first = cluster.wait_for_stable_leader()
    cluster.wait_for(lambda: converged(cluster, first), what="the first leader's value everywhere")
    told.wait_all(cluster.peers, lambda call: call[0] == first)
    # Handover: the new leader's value replaces the old one everywhere.
    second = cluster.nodes[first].transfer_leadership()
    cluster.wait_for(lambda: cluster.stable_leader() == second and converged(cluster, second),
                     what="the successor's value everywhere")
    # Failover: the leader's process dies; the survivors agree on the next leader's value.
    cluster.crash(second)
    cluster.wait_for(lambda: cluster.stable_leader() not in (None, second), what="a new leader")
    third = cluster.stable_leader()
    assert third is not None
    cluster.wait_for(lambda: converged(cluster, third), what="the third leader's value everywhere")
    with told.changed:
        for calls in told.calls.values():
            # A known leader is never reported without its value, and the leader's own is its own.
            assert all(value is not None for leader, _, value in calls if leader is not None), calls
            assert all(value == f"http://app-{leader}:8080".encode() for leader, _, value in calls
                       if leader is not None), calls


def test_a_new_value_reaches_every_member_with_the_next_heartbeat(cluster):
    told = Told()
    start(cluster, told)
    leader = cluster.wait_for_stable_leader()
    cluster.nodes[leader].set_value(b"http://moved:9090")
    assert cluster.nodes[leader].value == b"http://moved:9090"
    cluster.wait_for(lambda: all(n.leader_value == b"http://moved:9090" for n in cluster.nodes.values()),
                     what="the new value everywhere")
    told.wait_all(cluster.peers, lambda call: call == (leader, cluster.nodes[leader].term, b"http://moved:9090"))


def test_a_value_is_checked_when_given(cluster):
    transport = cluster.network.transport(1)  # never started: the node is not
    with pytest.raises(ConfigError, match="value: is 257 bytes"):
        RaftNode(cluster.config(1), transport, value=b"x" * (MAX_VALUE_SIZE + 1))
    with pytest.raises(ConfigError, match="value: must be bytes or str"):
        RaftNode(cluster.config(1), transport, value=42)  # type: ignore[arg-type]
    node = RaftNode(cluster.config(1), transport, value="café")
    assert node.value == "café".encode() and node.leader_value is None
    with pytest.raises(ConfigError):
        node.set_value("x" * 300)
    assert node.value == "café".encode()
