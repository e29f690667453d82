"""``RaftNode.is_leader`` is read without the state lock: the lease end it reads is published by every call.

An application asks ``is_leader`` before each step, often every millisecond (SPEC §8); taking the state
lock for it made the application wait for the node's threads and them for it.  The node now publishes the
default group's lease end under the lock after every call into the groups.  The invariant checked here:
whenever the lock is held (so no call is under way), the published end answers exactly as the core does,
at the current time and at times ahead, through elections, a partitioned leader, a lease gap, a step-down,
a transfer and a stop.  A call path that changed the lease without publishing would break it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from raft_election import RaftNode
from raft_election.roles import Role
from raft_election.testing import PATIENCE, ThreadedCluster

AHEAD = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)


class Watcher:
    """Compares, with each node's lock held, the published lease end with the default group's core."""

    def __init__(self, c: ThreadedCluster) -> None:
        self.c = c
        self.mismatches: list[tuple[int, float, bool, bool]] = []
        self.checks = 0
        self.seen_leading = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _check(self, node_id: int, node: RaftNode) -> None:
        with node._lock:
            groups = node._groups
            if groups is None:
                return
            now = node._clock()
            for ahead in AHEAD:
                at = now + ahead
                published = at < node._lease_until
                actual = groups.is_leader("", at)
                self.checks += 1
                self.seen_leading += actual
                if published != actual:
                    self.mismatches.append((node_id, ahead, published, actual))

    def _run(self) -> None:
        while not self._stop.is_set():
            for node_id, node in list(self.c.nodes.items()):
                self._check(node_id, node)
            self._stop.wait(0.0005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(PATIENCE)


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(3, election_timeout=(0.15, 0.6), heartbeat_interval=0.03)
    yield c
    c.close()


def acks(node: RaftNode) -> int:
    """Heartbeat answers ``node`` has received."""
    return node.status().counters.get("heartbeat_responses_received", 0)


def settled(c: ThreadedCluster, what: str) -> int:
    """The stable leader, once there is one."""
    found: list[int] = []

    def stable() -> bool:
        leader = c.stable_leader()
        if leader is not None:
            found.append(leader)
        return leader is not None

    c.wait_for(stable, what=what)
    return found[-1]


def test_the_published_lease_end_answers_as_the_core_through_every_kind_of_change(cluster):
    c = cluster
    c.start_all()
    watcher = Watcher(c)
    try:
        leader = c.nodes[1].wait_for_leader(timeout=PATIENCE)
        c.wait_for(lambda: c.nodes[leader].is_leader, what="a lease")
        # Steady office, with nothing to report: the lease is renewed by acknowledgements alone, round after
        # round, for several lease lengths (30 answers are 15 rounds, 0.45 s; a lease lasts 0.14 s).
        answers = acks(c.nodes[leader])
        c.wait_for(lambda: acks(c.nodes[leader]) >= answers + 30, what="15 heartbeat rounds answered")
        assert c.nodes[leader].is_leader
        # A gap: the followers' answers stop reaching the leader; it keeps office without a lease.
        for node in c.peers:
            if node != leader:
                c.network.block(node, leader)
        c.wait_for(lambda: not c.nodes[leader].is_leader and c.nodes[leader].role is Role.LEADER,
                   what="a lease gap")
        c.network.heal()
        c.wait_for(lambda: c.nodes[leader].is_leader, what="the lease back")
        # Partitioned away: the others elect someone else; the old leader's lease ends, then its office.
        c.network.isolate(leader)
        c.wait_for(lambda: any(c.nodes[n].is_leader for n in c.peers if n != leader), what="a new leader")
        assert not c.nodes[leader].is_leader
        c.network.heal()
        second = settled(c, "one leader again")
        c.nodes[second].step_down()
        assert not c.nodes[second].is_leader
        third = settled(c, "a leader after the step-down")
        target = next(n for n in c.peers if n != third)
        c.nodes[third].transfer_leadership(target)
        assert not c.nodes[third].is_leader  # it gives up its lease before the target campaigns
        fourth = settled(c, "a leader after the transfer")
        c.nodes[fourth].stop()
        assert not c.nodes[fourth].is_leader
    finally:
        watcher.close()
    assert not watcher.mismatches, watcher.mismatches[:10]
    assert watcher.checks > 1000 and watcher.seen_leading > 0
