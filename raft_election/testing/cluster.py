"""Threaded members over the in-memory network, every leadership checked by the global oracle.

:class:`ThreadedCluster` starts real :class:`~raft_election.node.RaftNode` threads over one
:class:`~transports.memory.InMemoryNetwork` (the network is also the fault injector), with storage that
reports every saved term and vote to an :class:`~raft_election.oracle.ElectionOracle`, and every core event
too: one leader per term, one vote per term and terms that never go back are checked as they happen, and
:meth:`ThreadedCluster.close` checks after the fact that no two lease-holding intervals overlapped.  The
``raft_cluster`` fixture of the pytest plugin gives tests one.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from raft_election.config import RaftConfig
from raft_election.events import Event
from raft_election.hardstate import HardState
from raft_election.node import RaftNode
from raft_election.oracle import ElectionOracle
from raft_election.storage import MemoryStorage

__all__ = ["PATIENCE", "OracleStorage", "ThreadedCluster"]

#: Generous limit for waits that should finish in well under a second: only there to avoid hanging.
PATIENCE = 20.0


class OracleStorage(MemoryStorage):
    """MemoryStorage that reports every save to the oracle (one vote per term, monotonic terms)."""

    def __init__(self, node_id: int, oracle: ElectionOracle, log: Optional[list[tuple[Any, ...]]] = None,
                 lock: Optional[threading.Lock] = None) -> None:
        super().__init__()
        self._node_id = node_id
        self._oracle = oracle
        self._log = log
        self._log_lock = lock

    #: Set by :class:`ThreadedCluster`: the oracle of each named election group, by name.
    group_oracles: Optional[Callable[[str], ElectionOracle]] = None

    def save(self, state: HardState) -> None:
        super().save(state)
        self._oracle.persisted(self._node_id, state)
        if self._log is not None and self._log_lock is not None:
            with self._log_lock:
                self._log.append(("saved", self._node_id, state))

    def save_groups(self, state: HardState, groups: Mapping[str, HardState]) -> None:
        super().save_groups(state, groups)
        self._oracle.persisted(self._node_id, state)
        if self.group_oracles is not None:
            for name, group_state in groups.items():
                self.group_oracles(name).persisted(self._node_id, group_state)


class ThreadedCluster:
    """Threaded members over one InMemoryNetwork; every leadership goes to an ElectionOracle.

    Leaderships are recorded with the members' own timestamps (``BecameLeader.at``, ``LeaseLost.lease_end``
    and so on, all ``time.monotonic``), so :meth:`check` can verify after the fact that no two lease-holding
    intervals overlapped.
    """

    def __init__(self, size: int = 5, *, seed: int = 0, delay: tuple[float, float] = (0.0002, 0.002),
                 **settings: Any) -> None:
        """``size`` members (ids 1..size, none started yet), ``settings``: RaftConfig fields for all."""
        from transports.memory import InMemoryNetwork  # noqa: PLC0415 (the library never imports transports)

        self.network = InMemoryNetwork(seed=seed, delay=delay)
        self.oracle = ElectionOracle()
        self.peers = {node_id: f"memory:{node_id}" for node_id in range(1, size + 1)}
        self.settings = settings
        self.oracle.seed(self.peers)
        #: The oracle of each named election group (the default group's is :attr:`oracle`).
        self.group_oracles: collections.defaultdict[str, ElectionOracle] = collections.defaultdict(
            ElectionOracle)
        self._oracles_lock = threading.Lock()
        self.storages = {node_id: self._storage(node_id) for node_id in self.peers}
        self.joiners: dict[int, dict[int, str]] = {}
        self.nodes: dict[int, RaftNode] = {}
        self.events: list[tuple[int, Event]] = []
        self.changed = threading.Condition()
        self._seed = seed

    def config(self, node_id: int) -> RaftConfig:
        """Member ``node_id``'s configuration (a server added by :meth:`add_server` joins)."""
        if node_id in self.joiners:
            return RaftConfig(node_id=node_id, peers=self.joiners[node_id], join=True, **self.settings)
        return RaftConfig(node_id=node_id, peers=self.peers, **self.settings)

    def address(self, node_id: int) -> str:
        """Member ``node_id``'s transport address on the in-memory network."""
        return f"memory:{node_id}"

    def add_server(self, node_id: int, **callbacks: Any) -> RaftNode:
        """Start a brand-new member ``node_id`` that joins (``RaftConfig(join=True)``); return it.

        It knows the members of the configuration a running member uses now, as a new member started from
        an up-to-date cluster file would, and stays a non-voting catch-up member until the leader's
        :meth:`~raft_election.node.RaftNode.add_member` lists it.

        Raises:
            ValueError: ``node_id`` was started before.
        """
        if node_id in self.nodes:
            raise ValueError(f"member {node_id} exists already")
        known = next((dict(node.members) for node in self.running()), dict(self.peers))
        self.joiners[node_id] = {**known, node_id: self.address(node_id)}
        self.storages[node_id] = self._storage(node_id)
        return self.start(node_id, **callbacks)

    def _storage(self, node_id: int) -> OracleStorage:
        storage = OracleStorage(node_id, self.oracle)
        storage.group_oracles = self.group_oracle
        return storage

    def group_oracle(self, name: str) -> ElectionOracle:
        """The oracle of election group ``name`` (``""``: :attr:`oracle`)."""
        if not name:
            return self.oracle
        with self._oracles_lock:
            return self.group_oracles[name]

    def start(self, node_id: int, **callbacks: Any) -> RaftNode:
        """Start member ``node_id`` (``callbacks``: more :class:`RaftNode` arguments); return it."""

        def observe(event: Event) -> None:
            self.oracle.record(node_id, event)
            with self.changed:
                self.events.append((node_id, event))
                self.changed.notify_all()

        def observe_group(group: str, event: Event) -> None:
            if group:
                self.group_oracle(group).record(node_id, event)
                with self.changed:
                    self.changed.notify_all()

        node = RaftNode(self.config(node_id), self.network.transport(node_id), self.storages[node_id],
                        observer=observe, **callbacks)
        node.add_group_listener(observe_group)
        self.nodes[node_id] = node
        return node.start()

    def start_all(self) -> None:
        """Start every member of the seed configuration."""
        for node_id in self.peers:
            self.start(node_id)

    def crash(self, node_id: int) -> None:
        """Kill a member: cut it off first so nothing it says on the way down gets out, then stop it."""
        self.network.isolate(node_id)
        self.nodes[node_id].stop()
        self.network.rejoin(node_id)

    def restart(self, node_id: int) -> RaftNode:
        """Crash member ``node_id`` if it runs, then start it again with its stored term and vote."""
        node = self.nodes.get(node_id)
        if node is not None and node.status().running:
            self.crash(node_id)
        return self.start(node_id)

    def alive(self, node_id: int) -> bool:
        """Whether member ``node_id`` was started and runs."""
        node = self.nodes.get(node_id)
        return node is not None and node.status().running

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = PATIENCE, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds; re-checked on every event (and every 20 ms, for lease lapses)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what} not reached within {timeout} s: {self.describe()}")
                self.changed.wait(min(remaining, 0.02))

    def running(self) -> list[RaftNode]:
        """The members that run now."""
        return [node for node in self.nodes.values() if node.status().running]

    def stable_leader(self) -> Optional[int]:
        """The member that holds a lease and that every running member of its configuration follows."""
        running = self.running()
        holders = [node for node in running if node.is_leader]
        if len(holders) != 1:
            return None
        leader = holders[0]
        members = leader.members
        if all(node.leader_id == leader.node_id for node in running if node.node_id in members):
            return leader.node_id
        return None

    def wait_for_stable_leader(self, timeout: float = PATIENCE) -> int:
        """Wait until one member leads with a lease and every running member follows it; return it."""
        self.wait_for(lambda: self.stable_leader() is not None, timeout, "a stable leader")
        leader = self.stable_leader()
        assert leader is not None
        return leader

    def describe(self) -> str:
        """Every member's repr, for failure messages."""
        return ", ".join(repr(node) for node in self.nodes.values())

    def counter(self, name: str) -> int:
        """Sum of one status counter over all members (running or stopped)."""
        return sum(node.status().counters.get(name, 0) for node in self.nodes.values())

    def stop_all(self) -> None:
        """Stop every member (each stop is idempotent)."""
        for node in self.nodes.values():
            node.stop()

    def close(self) -> None:
        """Stop everything and run the after-the-fact overlap check."""
        try:
            self.stop_all()
        finally:
            self.network.close()
        self.oracle.check_intervals()
        with self._oracles_lock:
            oracles = list(self.group_oracles.values())
        for oracle in oracles:
            oracle.check_intervals()
