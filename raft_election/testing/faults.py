"""Fault schedules as data: steps that apply to a simulated or a threaded cluster alike.

A schedule is a sequence of :class:`FaultStep`: a fault (or a repair), then how long the cluster runs
with it before the next step.  :func:`apply` carries a schedule out on a
:class:`~raft_election.sim.SimulatedCluster` (virtual time: seconds of cluster life in milliseconds,
replayable) or a :class:`~raft_election.testing.ThreadedCluster` (real threads, real time), with the one
fault model of :mod:`raft_election.netfaults`.  :func:`calm` then ends every fault, so a test can check that
the cluster recovers.  :func:`raft_election.testing.strategies.fault_schedules` draws schedules with
Hypothesis, which shrinks a failing one to the fewest, simplest steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

import attrs

from raft_election.sim import SimulatedCluster
from raft_election.testing.cluster import ThreadedCluster

__all__ = ["ALL_KINDS", "THREADED_KINDS", "FaultStep", "apply", "calm"]

#: Every kind of step.  ``pause``/``resume`` freeze a member (SIGSTOP-like) and exist only in the
#: simulation; the others apply to threaded clusters too.
ALL_KINDS = ("partition", "block", "isolate", "heal", "loss", "delay", "crash", "restart", "pause", "resume")
#: The kinds a threaded cluster can carry out.
THREADED_KINDS = tuple(kind for kind in ALL_KINDS if kind not in ("pause", "resume"))

Cluster = Union[SimulatedCluster, ThreadedCluster]


@attrs.frozen(kw_only=True)
class FaultStep:
    """One step of a fault schedule: ``kind`` with its arguments, then ``then`` seconds of cluster life.

    * ``partition``: ``groups`` (only members of one group talk; the others reach no one);
    * ``block``: ``nodes == (src, dst)``, what ``src`` sends to ``dst`` is lost (one way);
    * ``isolate``, ``crash``, ``restart``, ``pause``, ``resume``: ``nodes == (node,)``;
    * ``heal``: every cut ends (loss and delay stay);
    * ``loss``: ``rate``, the share of messages lost; ``delay``: ``delay == (min, max)`` seconds per message.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(ALL_KINDS))
    then: float = 0.0
    nodes: tuple[int, ...] = ()
    groups: tuple[frozenset[int], ...] = ()
    rate: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)

    def __str__(self) -> str:
        if self.kind == "partition":
            what = " | ".join(",".join(map(str, sorted(group))) for group in self.groups)
        elif self.kind == "block":
            what = f"{self.nodes[0]} -> {self.nodes[1]}"
        elif self.kind == "loss":
            what = f"{self.rate:g}"
        elif self.kind == "delay":
            what = f"{self.delay[0]:g}-{self.delay[1]:g} s"
        else:
            what = ",".join(map(str, self.nodes))
        return " ".join(part for part in (self.kind, what, f"then {self.then:g} s") if part)


def _run(cluster: Cluster, seconds: float) -> None:
    if isinstance(cluster, SimulatedCluster):
        cluster.run_for(seconds)
    elif seconds > 0:
        with cluster.changed:  # the schedule itself: the members run meanwhile, nothing is awaited
            cluster.changed.wait_for(lambda: False, seconds)


def _step(cluster: Cluster, step: FaultStep) -> None:
    kind = step.kind
    network = cluster if isinstance(cluster, SimulatedCluster) else cluster.network
    if kind == "partition":
        network.partition(*step.groups)
    elif kind == "block":
        network.block(*step.nodes)
    elif kind == "isolate":
        network.isolate(step.nodes[0])
    elif kind == "heal":
        network.heal()
    elif kind == "loss":
        network.drop_rate = step.rate
    elif kind == "delay":
        network.delay = step.delay
    elif isinstance(cluster, SimulatedCluster):
        action = {"crash": cluster.crash, "restart": cluster.restart, "pause": cluster.pause,
                  "resume": cluster.resume}[kind]
        action(step.nodes[0])
    elif kind == "crash":
        if cluster.alive(step.nodes[0]):
            cluster.crash(step.nodes[0])
    elif kind == "restart":
        cluster.restart(step.nodes[0])
    else:
        raise ValueError(f"a threaded cluster cannot {kind} a member (threads cannot be frozen); draw "
                         "schedules with fault_schedules(kinds=THREADED_KINDS) for it")


def apply(schedule: Iterable[FaultStep], cluster: Cluster) -> None:
    """Carry out ``schedule`` on ``cluster``: each step, then its ``then`` seconds of cluster life.

    Raises:
        ValueError: a ``pause`` or ``resume`` step for a threaded cluster.
    """
    for step in schedule:
        _step(cluster, step)
        _run(cluster, step.then)


def calm(cluster: Cluster) -> None:
    """End every fault: heal the network, no loss, crashed members started and paused ones resumed."""
    network = cluster if isinstance(cluster, SimulatedCluster) else cluster.network
    network.heal()
    network.drop_rate = 0.0
    network.delay = (0.0005, 0.002)
    if isinstance(cluster, SimulatedCluster):
        for node_id, node in cluster.nodes.items():
            if not node.alive:
                cluster.start(node_id)
            cluster.resume(node_id)
    else:
        for node_id in cluster.peers:
            if not cluster.alive(node_id):
                cluster.restart(node_id)
