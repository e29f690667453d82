"""The one network-fault model (raft_election.netfaults) and the three injectors that apply it.

* the semantics of overlapping cuts, as the module docstring states them, on the value itself;
* a Hypothesis test that drives the simulation, the in-memory network and an independent reference model
  with the same random sequence of partition / isolate / rejoin / block / unblock / heal and compares
  ``can_reach`` for every pair after every step, and each member's nemesis share (``LinkFaults.of``) too;
* the checkers: each invalid field raises ConfigError naming the field, the value and the fix, wherever the
  value comes in (the value type, the simulation, the in-memory network, the nemesis faults file);
* the random draws, whose order the simulation's seeds depend on;
* the nemesis transport applying a member's share, and the public delay-scheduler wait.
"""

from __future__ import annotations

import ast
import heapq
import inspect
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raft_election.netfaults as netfaults_module
from raft_election.delays import wait_until_due
from raft_election.errors import ConfigError
from raft_election.nemesis.faults import NO_FAULTS, FaultyTransport, LinkFaults
from raft_election.netfaults import (
    NO_NETWORK_FAULTS,
    REORDER_MIN_WINDOW,
    NetworkFaults,
    check_delay,
    check_node_id,
    check_node_ids,
    check_probability,
)
from raft_election.sim import SimulatedCluster
from raft_election.transport import DeliverFn, Transport
from tests.conftest import examples
from transports.memory import InMemoryNetwork

IDS = (1, 2, 3, 4, 5)


def reachable_pairs(can_reach: object) -> set[tuple[int, int]]:
    assert callable(can_reach)
    return {(a, b) for a in IDS for b in IDS if can_reach(a, b)}


# ---------------------------------------------------------------------------- overlapping cuts


def test_a_partition_lets_only_nodes_of_one_group_talk_and_a_node_in_no_group_reaches_no_one():
    faults = NO_NETWORK_FAULTS.partitioned({1, 2}, {3, 4})
    assert faults.can_reach(1, 2) and faults.can_reach(4, 3)
    assert not faults.can_reach(1, 3) and not faults.can_reach(3, 1)
    assert not faults.can_reach(5, 1) and not faults.can_reach(1, 5)
    assert faults.can_reach(5, 5)
    everyone_alone = NO_NETWORK_FAULTS.partitioned()
    assert reachable_pairs(everyone_alone.can_reach) == {(n, n) for n in IDS}


def test_a_new_partition_replaces_the_previous_one_and_keeps_isolations_and_blocks():
    faults = NO_NETWORK_FAULTS.with_isolated(3).with_blocked(1, 2).partitioned({1, 2, 3}, {4, 5})
    faults = faults.partitioned({1, 2, 3, 4, 5})  # replaces {1, 2, 3} | {4, 5}
    assert faults.can_reach(1, 4)
    assert not faults.can_reach(3, 1) and not faults.can_reach(1, 3), "the isolation stays"
    assert not faults.can_reach(1, 2) and faults.can_reach(2, 1), "the block stays"


def test_an_isolation_stays_until_rejoin_and_rejoin_keeps_the_other_cuts():
    faults = NO_NETWORK_FAULTS.with_isolated(2).partitioned({1, 2}, {3, 4, 5}).with_blocked(4, 5)
    assert not faults.can_reach(1, 2)
    faults = faults.rejoined(2)
    assert faults.can_reach(1, 2) and faults.can_reach(2, 1)
    assert not faults.can_reach(2, 3), "the partition stays"
    assert not faults.can_reach(4, 5) and faults.can_reach(5, 4), "the block stays"
    assert faults.unblocked(4, 5).can_reach(4, 5)


def test_heal_removes_every_cut_and_keeps_the_random_faults():
    noisy = NetworkFaults(drop_rate=0.2, duplicate_rate=0.1, reorder_rate=0.3, delay=(0.01, 0.02))
    cut = noisy.partitioned({1}, {2}).with_isolated(3).with_blocked(4, 4)
    healed = cut.healed()
    assert healed == noisy
    assert reachable_pairs(healed.can_reach) == {(a, b) for a in IDS for b in IDS}


def test_a_node_is_cut_off_from_itself_only_by_an_explicit_block():
    faults = NO_NETWORK_FAULTS.partitioned({1}, {2}).with_isolated(3)
    assert all(faults.can_reach(n, n) for n in IDS)
    assert not faults.with_blocked(3, 3).can_reach(3, 3)


def test_the_cuts_spelt_out_and_one_members_share():
    faults = NO_NETWORK_FAULTS.partitioned({1, 2}, {3, 4, 5}).with_blocked(3, 4)
    assert faults.cut_from(1, IDS) == {3, 4, 5}
    assert faults.cut_from(3, IDS) == {1, 2, 4}
    assert faults.cuts(IDS) == {(a, b) for a in IDS for b in IDS if not faults.can_reach(a, b)}


def test_the_value_is_normalised_immutable_hashable_and_equal_by_content():
    faults = NetworkFaults(partition=[[1, 2], [], [3]], isolated=[4], blocked=[[1, 2]], delay=[0, 1])
    assert faults.partition == (frozenset({1, 2}), frozenset({3}))  # empty groups are dropped
    assert faults.isolated == frozenset({4}) and faults.blocked == frozenset({(1, 2)})
    assert faults.delay == (0.0, 1.0) and all(isinstance(x, float) for x in faults.delay)
    same = NetworkFaults(partition=[{1, 2}, {3}], isolated={4}, blocked={(1, 2)}, delay=(0, 1))
    assert faults == same and hash(faults) == hash(same)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        faults.drop_rate = 0.5  # type: ignore[misc]


# ---------------------------------------------------------------------------- the injectors agree


class Reference:
    """The documented semantics, written out independently of the library's code."""

    def __init__(self) -> None:
        self.groups: Optional[list[set[int]]] = None
        self.isolated: set[int] = set()
        self.blocked: set[tuple[int, int]] = set()

    def apply(self, op: str, args: tuple[Any, ...]) -> None:
        if op == "partition":
            self.groups = [set(group) for group in args]
        elif op == "isolate":
            self.isolated.add(args[0])
        elif op == "rejoin":
            self.isolated.discard(args[0])
        elif op == "block":
            self.blocked.add((args[0], args[1]))
        elif op == "unblock":
            self.blocked.discard((args[0], args[1]))
        else:
            self.groups, self.isolated, self.blocked = None, set(), set()

    def can_reach(self, src: int, dst: int) -> bool:
        ends = {src, dst}
        split = self.groups is not None and not any(ends <= group for group in self.groups)
        alone = bool(ends & self.isolated)
        return (src, dst) not in self.blocked and (src == dst or not (split or alone))


node = st.sampled_from(IDS)
operations = st.one_of(
    st.lists(st.sampled_from((0, 1, 2, None)), min_size=len(IDS), max_size=len(IDS)).map(
        lambda assignment: ("partition", tuple(
            frozenset(n for n, g in zip(IDS, assignment) if g == k) for k in (0, 1, 2)))),
    st.tuples(st.just("isolate"), st.tuples(node)),
    st.tuples(st.just("rejoin"), st.tuples(node)),
    st.tuples(st.just("block"), st.tuples(node, node)),
    st.tuples(st.just("unblock"), st.tuples(node, node)),
    st.just(("heal", ())),
)


@settings(max_examples=examples(150, 2000))
@given(steps=st.lists(operations, min_size=1, max_size=25))
def test_the_simulation_the_in_memory_network_and_the_nemesis_shares_agree(steps):
    cluster = SimulatedCluster(IDS, seed=0)
    reference = Reference()
    with InMemoryNetwork(seed=0) as network:
        for op, args in steps:
            getattr(cluster, op)(*args)
            getattr(network, op)(*args)
            reference.apply(op, args)
            expected = reachable_pairs(reference.can_reach)
            assert reachable_pairs(cluster.can_reach) == expected, (op, args)
            assert reachable_pairs(network.can_reach) == expected, (op, args)
            for member in IDS:  # what each member process would drop, as the nemesis writes it
                share = LinkFaults.of(network.faults, member, IDS)
                assert share.drop_to == {dst for dst in IDS if (member, dst) not in expected}
        assert cluster.faults == attrs.evolve(network.faults, delay=cluster.delay)


def test_the_simulation_keeps_isolations_and_blocks_through_a_partition():
    """The one point where the simulation's model changed: its partition() used to wipe every other cut."""
    cluster = SimulatedCluster(5, seed=1)
    cluster.isolate(5)
    cluster.block(1, 2)
    cluster.partition({1, 2, 3, 4, 5})
    assert not cluster.can_reach(5, 1) and not cluster.can_reach(1, 5)
    assert not cluster.can_reach(1, 2) and cluster.can_reach(2, 1)
    cluster.rejoin(5)
    cluster.unblock(1, 2)
    assert cluster.can_reach(5, 1) and cluster.can_reach(1, 2)


def test_an_isolated_simulated_leader_stays_cut_off_through_a_partition_and_is_replaced():
    cluster = SimulatedCluster(5, seed=3)
    old = cluster.wait_for_leader()
    cluster.isolate(old)
    cluster.partition(set(cluster.nodes))  # one group of everyone: the isolation still holds
    cluster.run_for(1.0)
    assert cluster.leader() not in (None, old)
    cluster.rejoin(old)
    cluster.run_for(1.0)
    assert cluster.stable_leader() not in (None, old)


def test_the_whole_faults_value_can_be_assigned_and_read_back():
    faults = NetworkFaults(partition=[{1, 2}, {3}], isolated={4}, blocked={(2, 1)}, drop_rate=0.25,
                           duplicate_rate=0.5, reorder_rate=0.125, delay=(0.001, 0.002))
    cluster = SimulatedCluster(4, seed=0)
    with InMemoryNetwork(seed=0) as network:
        for injector in (cluster, network):
            injector.faults = faults
            assert injector.faults == faults
            assert (injector.drop_rate, injector.duplicate_rate, injector.reorder_rate) == (0.25, 0.5, 0.125)
            assert injector.delay == (0.001, 0.002)
            assert not injector.can_reach(2, 1) and injector.can_reach(1, 2)
            with pytest.raises(TypeError, match="NetworkFaults"):
                injector.faults = {"drop_rate": 0.5}  # type: ignore[assignment]
            assert injector.faults == faults


# ---------------------------------------------------------------------------- checkers


#: ``(field, invalid value, what the message must show of it)``.
INVALID_FIELDS = [
    ("partition", 3, "got 3"),
    ("partition", "12", "got '12'"),
    ("partition", [{1, 2}, {2, 3}], "node 2 appears in more than one group"),
    ("partition", [{1}, {0}], "got 0"),
    ("isolated", [True], "got True"),
    ("isolated", "1", "got '1'"),
    ("isolated", [2**32], f"got {2**32}"),
    ("blocked", [(1,)], "got (1,)"),
    ("blocked", [(1, "2")], "got '2'"),
    ("blocked", 7, "got 7"),
    ("drop_rate", -0.1, "got -0.1"),
    ("drop_rate", float("nan"), "got nan"),
    ("duplicate_rate", True, "got True"),
    ("duplicate_rate", "0.5", "got '0.5'"),
    ("reorder_rate", 1.5, "got 1.5"),
    ("delay", (0.2, 0.1), "got (0.2, 0.1)"),
    ("delay", (0.0, float("inf")), "got (0.0, inf)"),
    ("delay", 0.1, "got 0.1"),
    ("delay", (0.1, 0.2, 0.3), "got (0.1, 0.2, 0.3)"),
]


@pytest.mark.parametrize(("field", "value", "shown"), INVALID_FIELDS)
def test_each_invalid_field_raises_config_error_naming_the_field_and_the_value(field, value, shown):
    with pytest.raises(ConfigError) as info:
        NetworkFaults(**{field: value})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{field}: ")
    assert shown in str(info.value)


@pytest.mark.parametrize(("check", "value", "words"), [
    (check_probability, 2, "probability between 0 and 1"),
    (check_delay, (1, 0), "use (0, 0) for no delay"),
    (check_node_id, 0, "ints in [1, "),
    (check_node_ids, 5, "collection of node ids such as [2, 3]"),
])
def test_each_checker_says_how_to_fix_the_value(check, value, words):
    with pytest.raises(ConfigError) as info:
        check("some_field", value)
    assert info.value.field == "some_field"
    assert words in str(info.value) and repr(value) in str(info.value)


def test_the_checkers_normalise_what_they_accept():
    assert check_probability("p", 1) == 1.0 and isinstance(check_probability("p", 1), float)
    assert check_delay("d", [0, 1]) == (0.0, 1.0)
    assert check_node_id("n", 7) == 7
    assert check_node_ids("n", [3, 2, 3]) == frozenset({2, 3})


@pytest.mark.parametrize(("field", "value"), [
    ("drop_rate", 1.5), ("duplicate_rate", -1), ("reorder_rate", "x"), ("delay", (1, 0))])
def test_the_simulation_checks_its_settings_like_the_in_memory_network(field, value):
    with pytest.raises(ConfigError) as info:
        SimulatedCluster(3, **{field: value})
    assert info.value.field == field
    cluster = SimulatedCluster(3, seed=0)
    before = getattr(cluster, field)
    with pytest.raises(ConfigError, match=field):
        setattr(cluster, field, value)
    assert getattr(cluster, field) == before


@pytest.mark.parametrize(("call", "field"), [
    (lambda i: i.isolate(0), "isolated"),
    (lambda i: i.block(1, True), "blocked"),
    (lambda i: i.partition({1, 2}, {2, 3}), "partition"),
    (lambda i: i.partition("12"), "partition"),
])
def test_a_bad_control_raises_and_changes_nothing(call, field):
    cluster = SimulatedCluster(3, seed=0)
    cluster.isolate(3)
    with InMemoryNetwork(seed=0) as network:
        network.isolate(3)
        for injector in (cluster, network):
            before = injector.faults
            with pytest.raises(ConfigError) as info:
                call(injector)
            assert info.value.field == field
            assert injector.faults == before


def test_the_nemesis_file_uses_the_same_checkers():
    with pytest.raises(ConfigError) as info:
        LinkFaults.from_json({"loss": 2})
    assert info.value.field == "loss" and "probability between 0 and 1" in str(info.value)
    with pytest.raises(ConfigError) as info:
        LinkFaults(delay=(1, 0))
    assert "use (0, 0) for no delay" in str(info.value)


def test_netfaults_imports_nothing_with_io():
    tree = ast.parse(inspect.getsource(netfaults_module))
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "abc", "math", "random", "collections.abc", "typing", "attrs",
                        "raft_election.errors", "raft_election.messages"}, imported


# ---------------------------------------------------------------------------- random draws


def test_the_draws_are_loss_duplication_then_a_delay_per_copy_and_reordering_only_when_on():
    """The simulation's seeds replay as before only if this order holds (regression seeds rely on it)."""
    faults = NetworkFaults(drop_rate=0.3, duplicate_rate=0.4, delay=(0.001, 0.005))
    rng, replay = random.Random(9), random.Random(9)
    for _ in range(200):
        delays = faults.copy_delays(rng)
        if replay.random() < 0.3:
            assert delays == ()
            continue
        copies = 2 if replay.random() < 0.4 else 1
        assert delays == tuple(replay.uniform(0.001, 0.005) for _ in range(copies))
    assert rng.random() == replay.random()


def test_reordering_draws_once_per_copy_and_holds_it_back_within_the_window():
    faults = NetworkFaults(reorder_rate=0.5)
    rng, replay = random.Random(4), random.Random(4)
    held = 0
    for _ in range(200):
        (delay,) = faults.copy_delays(rng)
        replay.random(), replay.random()  # loss and duplication
        expected = replay.uniform(0.0, 0.0)
        if replay.random() < 0.5:
            expected += replay.uniform(0.0, REORDER_MIN_WINDOW)
            held += 1
        assert delay == expected and 0.0 <= delay <= REORDER_MIN_WINDOW
    assert 0 < held < 200


# ---------------------------------------------------------------------------- the nemesis share applied


class Recording(Transport):
    """Records the peers sent to (FaultyTransport sends an undelayed message on the caller's thread)."""

    def __init__(self) -> None:
        self.peers: list[int] = []

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        pass

    def send(self, peer_id: int, data: bytes) -> None:
        self.peers.append(peer_id)

    def close(self) -> None:
        pass


def test_member_processes_applying_their_shares_cut_exactly_the_links_the_model_cuts():
    faults = NO_NETWORK_FAULTS.partitioned({1, 2}, {3, 4, 5}).with_isolated(4).with_blocked(3, 5)
    delivered: set[tuple[int, int]] = set()
    for member in IDS:
        inner = Recording()
        with FaultyTransport(inner, seed=member) as faulty:
            faulty.start(member, {n: f"m:{n}" for n in IDS}, lambda data: None)
            faulty.set_faults(LinkFaults.of(faults, member, IDS))
            for peer in IDS:
                if peer != member:
                    faulty.send(peer, b"x")
        delivered |= {(member, peer) for peer in inner.peers}
    assert delivered == {(a, b) for a in IDS for b in IDS if a != b and faults.can_reach(a, b)}


def test_a_share_carries_loss_and_delay_and_refuses_what_processes_cannot_do():
    noisy = NetworkFaults(drop_rate=0.1, delay=(0.0, 0.02)).with_blocked(1, 2)
    assert LinkFaults.of(noisy, 1, IDS) == LinkFaults(drop_to={2}, loss=0.1, delay=(0.0, 0.02))
    assert LinkFaults.of(noisy.healed(), 1, IDS) == LinkFaults(loss=0.1, delay=(0.0, 0.02))
    assert LinkFaults.of(NO_NETWORK_FAULTS, 3, IDS) == NO_FAULTS
    for field in ("duplicate_rate", "reorder_rate"):
        with pytest.raises(ConfigError) as info:
            LinkFaults.of(NetworkFaults(**{field: 0.5}), 1, IDS)
        assert info.value.field == field


# ---------------------------------------------------------------------------- the delay schedulers' wait


def test_wait_until_due_returns_once_the_first_entry_is_due_and_none_once_closed():
    cond = threading.Condition()
    heap: list[tuple[float, int]] = []
    closed = False
    with cond:
        due = time.monotonic() + 0.05
        heapq.heappush(heap, (due, 1))
        now = wait_until_due(cond, heap, lambda: closed)
        assert now is not None and now >= due

    def close() -> None:
        nonlocal closed
        with cond:
            closed = True
            cond.notify_all()

    with cond:
        heap.clear()
        closer = threading.Thread(target=close)
        closer.start()  # it can only close once wait_until_due releases the lock to wait
        assert wait_until_due(cond, heap, lambda: closed) is None
    closer.join(10.0)
