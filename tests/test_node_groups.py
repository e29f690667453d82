"""Election groups on threaded RaftNodes over the in-memory network: the Group API and named locks.

Every group's leaderships, votes and terms go to a per-group oracle (ThreadedCluster.group_oracles): one
leader per term, one vote per term and, at close, no two lease-holding intervals overlapping in a group.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest

from raft_election import ConfigError, DistributedLock, LockError, RaftElectionError
from raft_election.group import Group
from raft_election.leadership import Leadership
from raft_election.testing import PATIENCE, ThreadedCluster


@pytest.fixture
def cluster():
    made: list[ThreadedCluster] = []

    def make(size: int = 3, **kwargs: Any) -> ThreadedCluster:
        c = ThreadedCluster(size, **kwargs)
        made.append(c)
        c.start_all()
        return c

    yield make
    for c in made:
        c.close()


def group_leaders(c: ThreadedCluster, name: str) -> list[int]:
    """Who leads ``name`` now (read through handles only: node.group() would host it again)."""
    return [node.node_id for node in c.running() if Group(node, name).is_leader]


def test_each_group_elects_one_leader_that_every_member_knows(cluster):
    c = cluster(3)
    names = [f"job-{k}" for k in range(5)]
    handles = {(node.node_id, name): node.group(name) for node in c.running() for name in names}
    assert isinstance(handles[(1, "job-0")], Group)

    def settled() -> bool:
        for name in names:
            leaders = group_leaders(c, name)
            if len(leaders) != 1:
                return False
            if any(handles[(i, name)].leader_id != leaders[0] for i in c.nodes):
                return False
        return True

    c.wait_for(settled, what="a leader per group, known to all")
    for name in names:
        leader = group_leaders(c, name)[0]
        group = handles[(leader, name)]
        assert group.term >= 1 and group.leadership() is not None
        assert group.leader_value == c.nodes[leader].value
    assert sorted(c.nodes[2].groups) == names
    assert c.nodes[1].status().groups_hosted == len(names)
    assert sum(node.status().groups_leading for node in c.running()) >= len(names)


def test_group_terms_are_independent_of_the_default_group(cluster):
    c = cluster(3)
    leader = c.wait_for_stable_leader()
    before = c.nodes[leader].term
    group = c.nodes[leader].group("reports")
    group.wait_for_leadership(PATIENCE)
    for _ in range(3):  # re-elect the group a few times; the default group's term does not move
        group.step_down()
        c.wait_for(lambda: len(group_leaders(c, "reports")) == 1, what="reports re-led")
        group = c.nodes[group_leaders(c, "reports")[0]].group("reports")
    assert all(node.term == before for node in c.running())
    assert group.term >= 3


def test_lead_runs_work_per_lease_of_the_group(cluster):
    c = cluster(3)
    node = c.nodes[1]
    ran: list[int] = []
    stop = threading.Event()

    def work(leadership: Leadership) -> None:
        ran.append(leadership.term)
        stop.set()

    node.group("cron").lead(work, until=stop)  # member 1 is the only one standing: it must win
    assert ran and ran[0] >= 1


def test_transfer_leadership_of_a_group(cluster):
    c = cluster(3)
    for node in c.running():
        node.group("sched")
    c.wait_for(lambda: len(group_leaders(c, "sched")) == 1, what="sched led")
    leader = group_leaders(c, "sched")[0]
    target = next(i for i in c.nodes if i != leader)
    term = c.nodes[leader].group("sched").term
    assert c.nodes[leader].group("sched").transfer_leadership(target) == target
    c.wait_for(lambda: group_leaders(c, "sched") == [target], what="transfer done")
    assert c.nodes[target].group("sched").term > term


def test_drop_group_gives_up_leadership_and_the_group_moves(cluster):
    c = cluster(3)
    for node in c.running():
        node.group("cache")
    c.wait_for(lambda: len(group_leaders(c, "cache")) == 1, what="cache led")
    leader = group_leaders(c, "cache")[0]
    handle = c.nodes[leader].group("cache").leadership()
    assert handle is not None
    c.nodes[leader].drop_group("cache")
    assert handle.lost.is_set() and not handle.valid()
    assert "cache" not in c.nodes[leader].groups
    with pytest.raises(RaftElectionError, match="does not host group"):
        Group(c.nodes[leader], "cache").step_down()
    c.wait_for(lambda: len([i for i in group_leaders(c, "cache") if i != leader]) == 1,
               what="another member leads cache")


def test_bad_group_names_are_config_errors(cluster):
    c = cluster(3)
    with pytest.raises(ConfigError, match="contains"):
        c.nodes[1].group("no spaces")
    with pytest.raises(ConfigError, match="at most 64"):
        DistributedLock(c.nodes[1], name="n" * 65)
    with pytest.raises(ConfigError, match="cannot be dropped"):
        c.nodes[1].drop_group("")


def test_fifty_named_locks_with_contenders_on_every_member(cluster):
    """50 locks over one member set, every member contending for every lock.

    No two holds of one name overlap (each group's oracle checks the lease intervals at close), and each
    name's holds have distinct fencing tokens (each is a leadership of its own term).
    """
    c = cluster(3)
    names = [f"lock-{k}" for k in range(50)]
    locks = {(node.node_id, name): DistributedLock(node, name=name) for node in c.running() for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}
    guard = threading.Lock()

    def contend(node_id: int, name: str) -> None:
        lock = locks[(node_id, name)]
        token = lock.acquire(timeout=PATIENCE * 2)
        with guard:
            tokens[name].append(token)
        with contextlib.suppress(LockError):  # lost meanwhile on a loaded host: nothing to release
            lock.release()

    threads = [threading.Thread(target=contend, args=(node_id, name))
               for node_id in c.nodes for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE * 4)
    assert not any(thread.is_alive() for thread in threads)
    for name in names:
        assert len(tokens[name]) == len(c.nodes), name
        assert len(set(tokens[name])) == len(c.nodes), (name, tokens[name])
    assert all(len(node.groups) == len(names) for node in c.running())
    # Every hold reached its group's oracle (events arrive on the callback thread, so wait for them).
    c.wait_for(lambda: all(len(c.group_oracle(name).leaderships) >= len(c.nodes) for name in names),
               what="every hold recorded")
