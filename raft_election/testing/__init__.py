"""A testing kit for applications that depend on who leads: clusters, fault schedules, a state machine.

Everything here exercises the real library (the real core, the real threaded node) under faults, with the
library's own oracle checking its guarantees, so a user's test only has to state what *its* code must do:

* :class:`ThreadedCluster`: threaded members over the in-memory network (``raft_cluster`` fixture);
* :class:`~raft_election.sim.SimulatedCluster`, re-exported: the deterministic simulation (``sim_cluster``
  fixture);
* :class:`FaultStep`, :func:`apply` and :func:`calm`: fault schedules as data, for either kind of cluster;
* :func:`fault_schedules`, :func:`fault_steps`, :func:`cluster_configs`: Hypothesis strategies;
* :class:`LeaderDependentMachine`: a Hypothesis state machine to subclass, which owns a simulated cluster
  and its faults and calls the user's hooks;
* a pytest plugin (:mod:`raft_election.testing.plugin`, registered as ``raft_election``) with the fixtures
  ``memory_network``, ``raft_cluster`` and ``sim_cluster``.

The strategies and the state machine need ``hypothesis``; they are imported when first used, so the rest
works without it.
"""

from __future__ import annotations

from typing import Any

from raft_election.sim import SimulatedCluster
from raft_election.testing.cluster import PATIENCE, OracleStorage, ThreadedCluster
from raft_election.testing.faults import ALL_KINDS, THREADED_KINDS, FaultStep, apply, calm

__all__ = [
    "ALL_KINDS",
    "PATIENCE",
    "THREADED_KINDS",
    "FaultStep",
    "LeaderDependentMachine",
    "OracleStorage",
    "SimulatedCluster",
    "ThreadedCluster",
    "apply",
    "calm",
    "cluster_configs",
    "fault_schedules",
    "fault_steps",
]

_NEEDS_HYPOTHESIS = {
    "LeaderDependentMachine": "raft_election.testing.machine",
    "cluster_configs": "raft_election.testing.strategies",
    "fault_schedules": "raft_election.testing.strategies",
    "fault_steps": "raft_election.testing.strategies",
}


def __getattr__(name: str) -> Any:
    """Import the Hypothesis-based parts when they are first asked for."""
    module = _NEEDS_HYPOTHESIS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(module), name)
