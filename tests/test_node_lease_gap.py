"""What applications see of a lease gap, on threaded nodes over the in-memory network (issue: office and
lease are separate).

A gap is made the way a loaded host makes one: the followers' answers stop reaching the leader (one-way
blocks) while its heartbeats still reach them, so they stay sticky and nobody campaigns; the lease runs out
(after ``election_timeout_min * (1 - max_clock_drift)``) long before check-quorum would end the office
(``election_timeout_max``, 2 s here).  Lifting the blocks brings the lease back.  Every step waits for the
events it needs; the oracle checks every leadership at the end.

Decided behaviour (README "Leases, gaps and what applications see"):

* ``is_leader`` and ``leader_id`` (own id) are False/None during the gap; ``role`` stays LEADER;
* ``on_lose_leadership(term)`` at the gap and ``on_become_leader(term)`` again, same term, when it ends;
* a :class:`Leadership` handle is one unbroken lease: lost for good at the gap; ``lead()`` runs its work
  again with a new handle of the same term;
* a :class:`DistributedLock` stays held across the gap (same token, ``lost`` not set), ``held`` False
  during it, ``on_lease_lost``/``on_lease_regained`` called, ``acquire()`` waits for the lease to return.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from raft_election import DistributedLock, Leadership
from raft_election.events import BecameLeader, LeaseLost, LeaseRegained, LostLeadership
from raft_election.lock import LockError
from raft_election.roles import Role
from raft_election.testing import PATIENCE, ThreadedCluster

SETTINGS: dict[str, Any] = {"election_timeout": (0.2, 2.0), "heartbeat_interval": 0.05}


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(3, **SETTINGS)
    yield c
    c.close()


def events_of(c: ThreadedCluster, node: int, kind: type) -> list[Any]:
    with c.changed:
        return [event for i, event in c.events if i == node and isinstance(event, kind)]


def open_gap(c: ThreadedCluster, leader: int) -> None:
    """Stop the followers' answers reaching ``leader`` until its lease runs out (it keeps office)."""
    before = len(events_of(c, leader, LeaseLost))
    for node in c.peers:
        if node != leader:
            c.network.block(node, leader)
    c.wait_for(lambda: len(events_of(c, leader, LeaseLost)) > before, what="a lease gap")


def close_gap(c: ThreadedCluster, leader: int) -> None:
    before = len(events_of(c, leader, LeaseRegained))
    c.network.heal()
    c.wait_for(lambda: len(events_of(c, leader, LeaseRegained)) > before, what="the lease back")


def test_a_gap_keeps_the_office_and_is_reported_to_callbacks_and_status(cluster):
    calls: list[tuple[int, str, int]] = []
    called = threading.Condition()

    def record(node: int, kind: str):
        def callback(term: int) -> None:
            with called:
                calls.append((node, kind, term))
                called.notify_all()
        return callback

    for node in cluster.peers:
        cluster.start(node, on_become_leader=record(node, "become"), on_lose_leadership=record(node, "lose"))
    leader = cluster.wait_for_stable_leader()
    term = cluster.nodes[leader].term
    open_gap(cluster, leader)
    node = cluster.nodes[leader]
    status = node.status()
    assert status.role is Role.LEADER and status.term == term
    assert not node.is_leader and node.leader_id is None and not status.is_leader
    assert status.counters["lease_gaps"] == 1
    close_gap(cluster, leader)
    assert node.is_leader and node.term == term
    status = node.status()
    assert status.counters["leases_regained"] == 1 and status.lease_gap_seconds > 0
    with called:
        assert called.wait_for(lambda: len([c for c in calls if c[0] == leader]) == 3, PATIENCE)
        assert [c for c in calls if c[0] == leader] == [(leader, "become", term), (leader, "lose", term),
                                                       (leader, "become", term)]
        assert [c for c in calls if c[0] != leader] == []
    assert cluster.counter("became_leader") == 1
    assert events_of(cluster, leader, LostLeadership) == []


def test_a_leadership_handle_is_one_unbroken_lease_and_lead_runs_again_after_a_gap(cluster):
    cluster.start_all()
    leader = cluster.wait_for_stable_leader()
    node = cluster.nodes[leader]
    handles: list[Leadership] = []
    ran = threading.Condition()
    stop = threading.Event()

    def work(leadership: Leadership) -> None:
        with ran:
            handles.append(leadership)
            ran.notify_all()
        leadership.lost.wait(PATIENCE)

    worker = threading.Thread(target=node.lead, args=(work,), kwargs={"until": stop}, daemon=True)
    worker.start()
    with ran:
        assert ran.wait_for(lambda: len(handles) == 1, PATIENCE)
    first = handles[0]
    assert first.valid()
    open_gap(cluster, leader)
    assert first.lost.is_set() and not first.valid()
    close_gap(cluster, leader)
    with ran:
        assert ran.wait_for(lambda: len(handles) == 2, PATIENCE)
    second = handles[1]
    assert second is not first and second.term == first.term and second.valid()
    assert not first.valid()  # checked before the gap: it stays invalid, so the gap is never silent
    assert node.leadership() is second
    stop.set()
    second.lost.set()  # let work() return so lead() sees ``until``
    worker.join(PATIENCE)
    assert not worker.is_alive()


def test_a_lock_is_held_through_a_gap_with_the_same_token_and_tells_of_it(cluster):
    gaps: list[tuple[str, int]] = []
    told = threading.Condition()

    def tell(kind: str):
        def callback(token: int) -> None:
            with told:
                gaps.append((kind, token))
                told.notify_all()
        return callback

    for node in cluster.peers:
        cluster.start(node)
    locks = {node: DistributedLock(cluster.nodes[node], on_lease_lost=tell("lost"),
                                   on_lease_regained=tell("regained")) for node in cluster.peers}
    lock = locks[1]
    token = lock.acquire(timeout=PATIENCE)
    assert lock.held and lock.token == token
    before = lock.leadership()
    assert before is not None and before.term == token
    open_gap(cluster, 1)
    assert not lock.held and lock.token is None and lock.leadership() is None
    assert not lock.lost.is_set()
    with told:
        assert told.wait_for(lambda: gaps == [("lost", token)], PATIENCE)
    # acquire() inside the gap waits for the lease to come back, with the same token.
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(lock.acquire(timeout=PATIENCE)), daemon=True)
    waiter.start()
    close_gap(cluster, 1)
    waiter.join(PATIENCE)
    assert result == [token]
    assert lock.held and lock.token == token and not lock.lost.is_set()
    assert not before.valid()  # the handle from before the gap tells code that checked then
    with told:
        assert told.wait_for(lambda: gaps == [("lost", token), ("regained", token)], PATIENCE)
    lock.release()
    assert not lock.held
    assert [e for e in events_of(cluster, 1, BecameLeader)] == [BecameLeader(
        term=token, at=events_of(cluster, 1, BecameLeader)[0].at)]


def test_a_lock_whose_office_ends_during_a_gap_is_lost(cluster):
    lost: list[int] = []
    for node in cluster.peers:
        cluster.start(node)
    locks = {node: DistributedLock(cluster.nodes[node], on_lost=lost.append) for node in cluster.peers}
    lock = locks[1]
    token = lock.acquire(timeout=PATIENCE)
    open_gap(cluster, 1)
    assert not lock.lost.is_set()
    # Answers never come back: check-quorum ends the office after election_timeout_max.
    assert lock.lost.wait(PATIENCE)
    (event,) = events_of(cluster, 1, LostLeadership)
    assert event.reason == "check_quorum" and not event.had_lease
    cluster.wait_for(lambda: lost == [token], what="on_lost")
    assert not lock.held
    with pytest.raises(LockError, match="was lost"):
        lock.release()
