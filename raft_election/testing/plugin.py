"""The pytest plugin of :mod:`raft_election.testing` (registered through the ``pytest11`` entry point).

Installed with the package and inert unless a test asks for one of its fixtures:

* ``memory_network``: an :class:`~transports.memory.InMemoryNetwork` seeded from the test's node id (so a
  failure replays with the same message delays), closed after the test;
* ``raft_cluster``: a factory, ``raft_cluster(n=5, **config)``, of started
  :class:`~raft_election.testing.ThreadedCluster` s (threaded members, ``MemoryStorage`` reporting to an
  oracle); after the test every member is stopped and every leadership checked: a violation of the
  library's guarantees fails the test;
* ``sim_cluster``: a factory, ``sim_cluster(n=5, seed=None, **config)``, of deterministic
  :class:`~raft_election.sim.SimulatedCluster` s (the seed defaults to one derived from the test's node id);
  after the test the leases are checked once more.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

import pytest

if TYPE_CHECKING:
    from raft_election.sim import SimulatedCluster
    from raft_election.testing.cluster import ThreadedCluster
    from transports.memory import InMemoryNetwork

__all__ = ["memory_network", "raft_cluster", "sim_cluster", "seed_of"]


def seed_of(request: pytest.FixtureRequest) -> int:
    """A seed derived from the test's node id: the same test gets the same seed on every run."""
    return zlib.crc32(request.node.nodeid.encode("utf-8"))


@pytest.fixture
def memory_network(request: pytest.FixtureRequest) -> Iterator[InMemoryNetwork]:
    """An in-memory network seeded from the test's id, closed after the test."""
    from transports.memory import InMemoryNetwork  # noqa: PLC0415 (only tests that ask load it)

    network = InMemoryNetwork(seed=seed_of(request))
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def raft_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., ThreadedCluster]]:
    """``raft_cluster(n=5, **config)``: started threaded members; stopped and checked after the test."""
    from raft_election.testing.cluster import ThreadedCluster  # noqa: PLC0415

    made: list[ThreadedCluster] = []

    def make(n: int = 5, **config: Any) -> ThreadedCluster:
        cluster = ThreadedCluster(n, seed=seed_of(request) + len(made), **config)
        made.append(cluster)
        cluster.start_all()
        return cluster

    yield make
    for cluster in made:
        cluster.close()  # raises SafetyViolation (an AssertionError) if two leases overlapped


@pytest.fixture
def sim_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., SimulatedCluster]]:
    """``sim_cluster(n=5, seed=None, **config)``: a deterministic simulated cluster, checked afterwards."""
    from raft_election.sim import SimulatedCluster  # noqa: PLC0415

    made: list[SimulatedCluster] = []

    def make(n: int = 5, seed: Optional[int] = None, **config: Any) -> SimulatedCluster:
        cluster = SimulatedCluster(n, seed=seed_of(request) + len(made) if seed is None else seed, **config)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        for name, oracle in cluster.oracles.items():  # the default group's, and each election group's
            oracle.check_lease_order()
            assert not oracle.violations, (name, oracle.violations)
