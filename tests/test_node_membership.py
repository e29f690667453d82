"""RaftNode membership API on threaded members: add, remove, callbacks, errors, the lock across a change.

The rules themselves are tested on the core (tests/test_rule_membership.py) and in simulations
(tests/test_membership_sim.py); here the contract of the blocking API: what it returns, what it raises,
which callbacks it calls, and that a restarted member keeps the configuration it stored.  Every
ThreadedCluster checks one leader per term, one vote per term and no overlapping leases on close.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from raft_election import DistributedLock, MembershipChangeError, NotLeaderError, RaftElectionError
from raft_election.testing import PATIENCE, ThreadedCluster


@pytest.fixture
def cluster():
    made: list[ThreadedCluster] = []

    def make(size: int = 3, **kwargs: Any) -> ThreadedCluster:
        made.append(ThreadedCluster(size, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


class Changes:
    """Records ``on_membership_change`` calls per member."""

    def __init__(self) -> None:
        self.calls: dict[int, list[tuple[dict[int, str], int]]] = {}
        self.changed = threading.Condition()

    def callback(self, node_id: int) -> Any:
        def record(members: Mapping[int, str], index: int) -> None:
            with self.changed:
                self.calls.setdefault(node_id, []).append((dict(members), index))
                self.changed.notify_all()
        return record

    def wait(self, node_id: int, members: set[int]) -> int:
        """Wait until ``node_id`` reported a change to ``members``; return its index."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(set(seen) == members for seen, _ in self.calls.get(node_id, [])), PATIENCE)
            assert found, f"{node_id} never reported members {members}: {self.calls.get(node_id)}"
            return next(index for seen, index in self.calls[node_id] if set(seen) == members)


def start(c: ThreadedCluster, changes: Changes) -> int:
    for node_id in c.peers:
        c.start(node_id, on_membership_change=changes.callback(node_id))
    return c.wait_for_stable_leader()


def test_a_joined_member_is_added_reported_everywhere_and_then_votes(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    joiner = c.add_server(4, on_membership_change=changes.callback(4))
    assert not joiner.status().voter and set(joiner.members) == {1, 2, 3}

    index = c.nodes[leader].add_member(4, c.address(4), timeout=PATIENCE)

    assert set(c.nodes[leader].members) == {1, 2, 3, 4}
    assert c.nodes[leader].configuration.index == index
    for node_id in (1, 2, 3, 4):
        assert changes.wait(node_id, {1, 2, 3, 4}) == index
    c.wait_for(lambda: joiner.status().voter and joiner.leader_id == leader, what="member 4 votes, follows")
    status = c.nodes[leader].status()
    assert status.configuration_committed and status.configuration_index == index
    assert set(status.last_contact) == {1, 2, 3, 4} - {leader}
    # Adding it again (a retry after a lost answer) changes nothing.
    assert c.nodes[leader].add_member(4, c.address(4), timeout=PATIENCE) == index


def test_after_an_add_the_new_member_can_be_elected_when_the_leader_dies(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    c.add_server(4)
    c.nodes[leader].add_member(4, c.address(4), timeout=PATIENCE)
    c.wait_for(lambda: c.nodes[4].status().voter, what="member 4 votes")

    c.crash(leader)

    new = c.wait_for_stable_leader()
    assert new != leader and set(c.nodes[new].members) == {1, 2, 3, 4}
    # Three of four running: still a majority of the new configuration.  The new leader's lease counts them.
    assert len(c.nodes[new].status().followers) >= 2


def test_a_removed_member_stops_standing_and_the_rest_keep_a_leader(cluster):
    c, changes = cluster(4), Changes()
    leader = start(c, changes)
    gone = next(node_id for node_id in c.peers if node_id != leader)

    index = c.nodes[leader].remove_member(gone, timeout=PATIENCE)

    rest = set(c.peers) - {gone}
    for node_id in rest:
        assert changes.wait(node_id, rest) == index
    c.wait_for(lambda: not c.nodes[gone].status().voter, what=f"{gone} learns it was removed")
    assert gone not in c.nodes[leader].members
    # The removed member, still running, never campaigns: when the leader dies the new leader comes from the
    # two remaining members, which are a majority of the three.
    c.crash(leader)
    new = c.wait_for_stable_leader()
    assert new in rest - {leader}
    assert not c.nodes[gone].status().voter and c.nodes[gone].status().counters.get("became_leader", 0) == 0
    with pytest.raises(RaftElectionError, match="not running"):
        c.nodes[leader].remove_member(gone)  # the crashed leader


def test_the_leader_removes_itself_and_hands_over(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)

    index = c.nodes[leader].remove_member(leader, timeout=PATIENCE)

    rest = set(c.peers) - {leader}
    for node_id in rest:
        assert changes.wait(node_id, rest) == index
    c.wait_for(lambda: c.stable_leader() in rest, what="a leader among the remaining members")
    assert not c.nodes[leader].is_leader and not c.nodes[leader].status().voter


def test_a_follower_refuses_a_change_naming_the_leader(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    follower = next(node_id for node_id in c.peers if node_id != leader)
    c.wait_for(lambda: c.nodes[follower].leader_id == leader, what="the follower knows the leader")

    with pytest.raises(NotLeaderError) as refused:
        c.nodes[follower].add_member(9, c.address(9), timeout=PATIENCE)
    assert refused.value.leader_id == leader
    with pytest.raises(NotLeaderError):
        c.nodes[follower].remove_member(leader, timeout=PATIENCE)
    assert set(c.nodes[leader].members) == {1, 2, 3}


def test_a_second_change_is_refused_while_one_waits_and_a_silent_new_member_changes_nothing(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    node = c.nodes[leader]
    before = node.configuration
    failure: list[BaseException] = []

    def add_silent() -> None:
        try:
            node.add_member(7, c.address(7), timeout=1.0)  # never started: it never answers
        except BaseException as exc:  # recorded for the assertion below
            failure.append(exc)

    adding = threading.Thread(target=add_silent)
    adding.start()
    c.wait_for(lambda: node.status().membership_change == "catch-up", what="the add waits for member 7")
    with pytest.raises(MembershipChangeError, match="one change at a time"):
        node.remove_member(next(m for m in c.peers if m != leader), timeout=PATIENCE)
    adding.join(PATIENCE)

    assert len(failure) == 1 and isinstance(failure[0], TimeoutError), failure
    assert "nothing was changed" in str(failure[0])
    assert node.members == before.members and node.status().membership_change is None
    # The cluster is free for the next change at once.
    c.add_server(4)
    assert set(c.nodes[4].members) == {1, 2, 3}
    node.add_member(4, c.address(4), timeout=PATIENCE)
    assert set(node.members) == {1, 2, 3, 4}


def test_a_restarted_member_uses_its_stored_configuration_not_the_seed(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    c.add_server(4)
    c.nodes[leader].add_member(4, c.address(4), timeout=PATIENCE)
    index = c.nodes[leader].remove_member(next(m for m in (1, 2, 3) if m != leader), timeout=PATIENCE)
    members = set(c.nodes[leader].members)
    follower = next(m for m in members if m not in (leader, 4))
    c.wait_for(lambda: c.nodes[follower].configuration.index == index, what="the follower stored the entry")

    restarted = c.restart(follower)

    assert set(restarted.members) == members  # before any heartbeat: from its own storage
    assert restarted.configuration.index == index


def test_the_lock_stays_held_with_its_token_across_changes(cluster):
    c, changes = cluster(3), Changes()
    leader = start(c, changes)
    lock = DistributedLock(c.nodes[leader])
    token = lock.acquire(timeout=PATIENCE)

    c.add_server(4)
    c.nodes[leader].add_member(4, c.address(4), timeout=PATIENCE)
    c.nodes[leader].remove_member(next(m for m in (1, 2, 3) if m != leader), timeout=PATIENCE)

    assert lock.token == token and lock.leadership() is not None
    c.wait_for(lambda: lock.held, what="the lock held with the lease")
    assert c.nodes[leader].term == token
    lock.release()
