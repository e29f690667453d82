"""DistributedLock and leadership handles on threaded RaftNodes over the in-memory network."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from raft_election import DistributedLock, LockError, RaftElectionError
from raft_election.testing import PATIENCE, ThreadedCluster


@pytest.fixture
def locks():
    made: list[ThreadedCluster] = []

    def make(size: int = 3, **kwargs: Any) -> tuple[ThreadedCluster, dict[int, DistributedLock]]:
        cluster = ThreadedCluster(size, **kwargs)
        made.append(cluster)
        handles = {}
        for node_id in cluster.peers:
            node = cluster.start(node_id)
            handles[node_id] = DistributedLock(node)
        return cluster, handles

    yield make
    for cluster in made:
        cluster.close()  # also checks that no two lease (= lock) intervals overlapped


def test_acquire_returns_the_term_as_token_and_only_the_holder_stands(locks):
    c, lock = locks(3)
    token = lock[2].acquire(timeout=PATIENCE)
    assert lock[2].held and lock[2].token == token == c.nodes[2].term
    assert c.nodes[2].is_leader
    assert not lock[1].held and not lock[3].held
    assert not c.nodes[1].status().candidate and not c.nodes[3].status().candidate
    assert c.nodes[2].status().candidate


def test_a_waiting_member_gets_a_released_lock_by_direct_handover(locks):
    c, lock = locks(3)
    first = lock[1].acquire(timeout=PATIENCE)
    got: dict[str, int] = {}
    waiter = threading.Thread(target=lambda: got.setdefault("token", lock[3].acquire(timeout=PATIENCE)))
    waiter.start()
    # The holder learns from heartbeat answers that 3 now stands: wait for two rounds of answers after it.
    c.wait_for(lambda: c.nodes[3].status().candidate, what="3 waiting")
    answers = c.nodes[1].status().counters["messages_received"]
    c.wait_for(lambda: c.nodes[1].status().counters["messages_received"] >= answers + 4, what="2 rounds")
    lock[1].release()
    waiter.join(PATIENCE)
    assert got["token"] > first
    assert lock[3].held and not lock[1].held
    assert c.nodes[1].status().counters["transfers"] == 1  # handed over, not resigned
    assert not c.nodes[1].status().candidate


def test_tokens_strictly_increase_over_many_handovers(locks):
    _, lock = locks(3)
    tokens = []
    for round_ in range(9):
        member = lock[round_ % 3 + 1]
        tokens.append(member.acquire(timeout=PATIENCE))
        assert member.held
        member.release()
        assert not member.held
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_the_context_manager_holds_inside_and_releases_after(locks):
    c, lock = locks(3)
    with lock[1] as token:
        assert lock[1].held and lock[1].token == token
    assert not lock[1].held and not c.nodes[1].status().candidate
    with lock[2] as second:
        assert second > token


def test_acquire_times_out_while_another_member_holds_and_stops_standing(locks):
    c, lock = locks(3)
    lock[1].acquire(timeout=PATIENCE)
    with pytest.raises(TimeoutError):
        lock[2].acquire(timeout=0.5)
    assert not c.nodes[2].status().candidate
    assert lock[1].held


def test_held_is_computed_against_the_clock_without_waiting_for_a_tick(locks):
    c, lock = locks(3)
    lock[1].acquire(timeout=PATIENCE)
    node = c.nodes[1]
    lease_left = node.status().lease_remaining
    assert lease_left > 0
    real_clock = node._clock
    node._clock = lambda: real_clock() + lease_left + 0.001  # the lease ran out, no tick has run yet
    try:
        assert not lock[1].held and lock[1].token is None
    finally:
        node._clock = real_clock


def test_a_holder_cut_off_loses_the_lock_the_event_is_set_and_on_lost_called(locks):
    c = ThreadedCluster(3)
    lost_tokens: list[int] = []
    try:
        nodes = {i: c.start(i) for i in c.peers}
        lock = {i: DistributedLock(n, on_lost=lost_tokens.append) for i, n in nodes.items()}
        token = lock[1].acquire(timeout=PATIENCE)
        c.network.isolate(1)
        assert lock[1].lost.wait(PATIENCE)
        assert not lock[1].held and lost_tokens == [token]
        assert not nodes[1].status().candidate  # a lost lock is not re-acquired behind the caller's back
        second = lock[2].acquire(timeout=PATIENCE)
        assert second > token
        with pytest.raises(LockError, match="does not hold"):
            lock[1].release()
    finally:
        c.close()


def test_misuse_gives_clear_errors(locks):
    c, lock = locks(3)
    with pytest.raises(LockError, match="does not hold"):
        lock[1].release()
    lock[1].acquire(timeout=PATIENCE)
    with pytest.raises(LockError, match="not re-entrant"):
        lock[1].acquire(timeout=1)
    lock[1].release()
    with pytest.raises(LockError, match="does not hold"):
        lock[1].release()
    c.nodes[3].stop()
    with pytest.raises(RaftElectionError, match="not running"):
        lock[3].acquire(timeout=1)


# ---------------------------------------------------------------------------- leadership handles


def test_leadership_handle_is_valid_while_leading_and_lost_after(locks):
    c, lock = locks(3)
    assert c.nodes[1].leadership() is None
    lock[1].acquire(timeout=PATIENCE)
    leadership = c.nodes[1].leadership()
    assert leadership is not None and leadership.valid() and leadership.term == c.nodes[1].term
    assert c.nodes[1].leadership() is leadership  # one handle per leadership
    lock[1].release()
    assert leadership.lost.wait(PATIENCE) and not leadership.valid()
    assert c.nodes[1].leadership() is None


def test_lead_runs_the_work_once_per_leadership_and_it_stops_when_leadership_is_lost():
    c = ThreadedCluster(3, candidate=False)
    try:
        nodes = {i: c.start(i) for i in c.peers}
        terms: list[int] = []
        steps = {"count": 0}
        stop = threading.Event()

        def work(leadership: Any) -> None:
            terms.append(leadership.term)
            if len(terms) == 2:
                stop.set()  # second leadership: enough, let lead() return
                return
            while leadership.valid():  # the leader loop: one step at a time while the lease holds
                steps["count"] += 1
                leadership.lost.wait(0.01)

        worker = threading.Thread(target=nodes[1].lead, args=(work,), kwargs={"until": stop})
        worker.start()
        nodes[1].set_candidate(True)
        c.wait_for(lambda: len(terms) == 1, what="first leadership")
        nodes[1].step_down()  # ends the first leadership; 1 is the only candidate, so it wins again
        worker.join(PATIENCE)
        assert not worker.is_alive()
        assert len(terms) == 2 and terms[1] > terms[0] and steps["count"] > 0
    finally:
        c.close()


def test_the_fencing_pattern_refuses_a_stale_holder(locks):
    """A resource that remembers the highest token it saw refuses writes with a lower one."""
    c, lock = locks(3)

    class FencedResource:
        def __init__(self) -> None:
            self.highest = 0
            self.writes: list[tuple[int, str]] = []

        def write(self, token: int, value: str) -> bool:
            if token < self.highest:
                return False
            self.highest = token
            self.writes.append((token, value))
            return True

    resource = FencedResource()
    old = lock[1].acquire(timeout=PATIENCE)
    c.network.isolate(1)  # the old holder is cut off (or paused) and does not know yet
    assert lock[1].lost.wait(PATIENCE)
    new = lock[2].acquire(timeout=PATIENCE)
    assert resource.write(new, "from the new holder")
    assert not resource.write(old, "late write from the old holder")
    assert resource.writes == [(new, "from the new holder")]
