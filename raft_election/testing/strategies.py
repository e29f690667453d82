"""Hypothesis strategies for partition tests: fault schedules and cluster settings (needs ``hypothesis``).

* :func:`fault_schedules` draws lists of :class:`~raft_election.testing.faults.FaultStep` (partitions,
  one-way blocks, isolations, heals, loss, delay, crashes, restarts, pauses) with the time each lasts.
  Hypothesis shrinks a failing schedule towards fewer steps, earlier kinds in :data:`ALL_KINDS` (heal
  first), lower member ids and shorter durations, so the counterexample it reports is small.
* :func:`cluster_configs` draws valid :class:`~raft_election.config.RaftConfig` settings: timeouts, heartbeat,
  clock drift, pre-vote and fast failover, every combination the configuration accepts.

Carry a schedule out with :func:`~raft_election.testing.faults.apply`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from raft_election.testing.faults import ALL_KINDS, FaultStep

__all__ = ["cluster_configs", "fault_steps", "fault_schedules"]

#: How long a step lasts, in seconds, by default: short ones mostly, some longer than election timeouts.
DURATIONS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


def fault_steps(nodes: int = 5, *, kinds: Sequence[str] = ALL_KINDS,
                durations: Sequence[float] = DURATIONS) -> st.SearchStrategy[FaultStep]:
    """One step of the ``kinds`` given, for members ``1..nodes``, lasting one of ``durations``."""
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(ALL_KINDS)}, got {list(kinds)}")
    member = st.integers(min_value=1, max_value=nodes)
    then = st.sampled_from(sorted(durations))
    heal_first = ["heal", *(kind for kind in kinds if kind != "heal")] if "heal" in kinds else list(kinds)

    def build(kind: str) -> st.SearchStrategy[FaultStep]:
        if kind == "partition":
            groups = st.lists(st.integers(0, 2), min_size=nodes, max_size=nodes).map(
                lambda sides: tuple(frozenset(i + 1 for i, side in enumerate(sides) if side == group)
                                    for group in range(3)))
            return st.builds(FaultStep, kind=st.just(kind), then=then, groups=groups)
        if kind == "block":
            return st.builds(FaultStep, kind=st.just(kind), then=then, nodes=st.tuples(member, member))
        if kind == "heal":
            return st.builds(FaultStep, kind=st.just(kind), then=then)
        if kind == "loss":
            return st.builds(FaultStep, kind=st.just(kind), then=then, rate=st.sampled_from([0.0, 0.1, 0.3]))
        if kind == "delay":
            delays = st.sampled_from([(0.0005, 0.002), (0.001, 0.01), (0.005, 0.04)])
            return st.builds(FaultStep, kind=st.just(kind), then=then, delay=delays)
        return st.builds(FaultStep, kind=st.just(kind), then=then, nodes=st.tuples(member))

    return st.sampled_from(heal_first).flatmap(build)


Schedule = list[FaultStep]


def fault_schedules(nodes: int = 5, *, kinds: Sequence[str] = ALL_KINDS, min_steps: int = 1,
                    max_steps: int = 8,
                    durations: Sequence[float] = DURATIONS) -> st.SearchStrategy[Schedule]:
    """Schedules of ``min_steps`` to ``max_steps`` steps (see :func:`fault_steps`)."""
    return st.lists(fault_steps(nodes, kinds=kinds, durations=durations), min_size=min_steps,
                    max_size=max_steps)


def cluster_configs() -> st.SearchStrategy[dict[str, Any]]:
    """Valid :class:`RaftConfig` settings (all but ``node_id`` and ``peers``), as keyword arguments."""

    def settings(minimum: float, spread: float, beats: int, *, drift: float, pre_vote: bool,
                 fast_failover: bool) -> dict[str, Any]:
        return {"election_timeout": (minimum, round(minimum * spread, 6)),
                "heartbeat_interval": math.floor(minimum / beats * 1e6) / 1e6, "max_clock_drift": drift,
                "pre_vote": pre_vote, "fast_failover": fast_failover}

    return st.builds(settings, minimum=st.sampled_from([0.05, 0.1, 0.15, 0.3]),
                     spread=st.sampled_from([1.5, 2.0, 3.0]), beats=st.integers(3, 6),
                     drift=st.sampled_from([0.0, 0.05, 0.1]), pre_vote=st.booleans(),
                     fast_failover=st.booleans())
