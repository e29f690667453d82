"""Tests of the counter service with raft-election's testing kit (run with pytest; needs hypothesis).

``COUNTER_SERVICE=unfenced pytest`` runs the same tests against the broken service, which ignores the
fencing token: they fail, with a shrunk counterexample that replays.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from counter_service import CounterService, FencedStore, UnfencedCounterService
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import invariant

from raft_election.testing import (
    FaultStep,
    LeaderDependentMachine,
    SimulatedCluster,
    ThreadedCluster,
    apply,
    calm,
    fault_schedules,
)

Service = UnfencedCounterService if os.environ.get("COUNTER_SERVICE") == "unfenced" else CounterService


def never_goes_back(store: FencedStore) -> None:
    for index, (before, after) in enumerate(zip(store.accepted, store.accepted[1:]), 1):
        assert after > before, f"the counter went back from {before} to {after} (write {index + 1})"


class CounterMachine(LeaderDependentMachine):
    """Random faults, members' services ticking every 10 ms of virtual time."""

    def setup(self) -> None:
        self.store = FencedStore()
        self.services = {node: Service(self.store) for node in self.cluster.nodes}

    def on_restart(self, node_id: int) -> None:
        self.services[node_id] = Service(self.store)  # a new process: nothing pending

    def on_step(self, now: float) -> None:
        for node, service in self.services.items():
            if self.running(node):
                service.tick(leads=self.leads(node), token=self.term(node))

    @invariant()
    def the_counter_never_goes_back(self) -> None:
        if hasattr(self, "store"):
            never_goes_back(self.store)


TestCounterMachine = CounterMachine.TestCase


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=fault_schedules(3, max_steps=6))
def test_the_counter_survives_fault_schedules(sim_cluster: Callable[..., SimulatedCluster],
                                              schedule: list[FaultStep]) -> None:
    """The same service, under schedules the kit draws, on the sim_cluster fixture's simulation."""
    cluster = sim_cluster(3)
    store = FencedStore()
    services = {node: Service(store) for node in cluster.nodes}

    def run(seconds: float) -> None:
        for _ in range(round(seconds / 0.01)):
            cluster.run_for(0.01)
            for node_id, node in cluster.nodes.items():
                if node.alive and not node.paused:
                    core = node.core
                    services[node_id].tick(leads=core.is_leader(node.local(cluster.now)), token=core.term)

    for step in schedule:
        apply([step], cluster)
        run(0.05)
    calm(cluster)
    run(2.0)
    never_goes_back(store)
    assert store.value > 0, "nobody ever led"


def test_the_counter_on_threaded_members(raft_cluster: Callable[..., ThreadedCluster]) -> None:
    """Real threads over the in-memory network: the leader counts, and hands over on a graceful stop."""
    cluster = raft_cluster(3)
    leader = cluster.wait_for_stable_leader()
    store = FencedStore()
    services = {node: Service(store) for node in cluster.nodes}
    stop = threading.Event()

    def loop(node_id: int) -> None:
        node = cluster.nodes[node_id]
        while not stop.wait(0.005):
            services[node_id].tick(leads=node.is_leader, token=node.term)

    threads = [threading.Thread(target=loop, args=(node,), daemon=True) for node in cluster.nodes]
    for thread in threads:
        thread.start()
    cluster.wait_for(lambda: store.value >= 20, what="twenty increments")
    cluster.nodes[leader].stop()
    cluster.wait_for(lambda: cluster.stable_leader() not in (None, leader), what="a new leader")
    counted = store.value
    cluster.wait_for(lambda: store.value >= counted + 20, what="twenty more increments")
    stop.set()
    for thread in threads:
        thread.join()
    never_goes_back(store)
