"""What ``raft-election demo`` does: elect, crash the leader a few times, hand over gracefully.

One scenario (:func:`run_demo`) over any :class:`~raft_election.bench.clusters.BenchCluster`, the clusters
the benchmark runs its trials on: member processes on loopback (:func:`run_process_demo`: a crash is a
SIGKILL of the leader's process, the graceful stop a SIGTERM) or threaded members over the in-memory
network in this process (:func:`run_memory_demo`: a crash cuts the leader off the network and stops it, so
nothing it says gets out any more).  Each failover time runs from the crash until another member's lease
began, from that member's own event timestamp (``time.monotonic()``, one clock for every process of a
machine); each crashed member is restarted with its stored term and vote and must rejoin as a follower.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any, Optional

import attrs

from raft_election.bench.clusters import BenchCluster, MemoryCluster, ProcessCluster
from raft_election.processes import MemberEvent

__all__ = ["DemoResult", "Failover", "run_demo", "run_memory_demo", "run_process_demo"]

#: The longest the demo waits for any one step (only reached if something is broken).
_PATIENCE = 30.0


@attrs.frozen(kw_only=True)
class Failover:
    """One leader change: who led, who took over, in which term, and how long the cluster had no lease."""

    old_leader: int
    new_leader: int
    term: int
    seconds: float


@attrs.frozen(kw_only=True)
class DemoResult:
    """What the demo measured."""

    first_election: Failover
    crashes: tuple[Failover, ...]
    handover: Failover


def run_demo(cluster: BenchCluster, failovers: int = 3, *,
             report: Callable[[str], object] = lambda line: None) -> DemoResult:
    """Run the demo on ``cluster`` (not started yet) and return its measurements.

    Args:
        cluster: the members; the caller closes it.
        failovers: how many times to crash the leader (restarting it each time).
        report: called with one human-readable line per step, as it happens.
    """
    log = cluster.log
    since = log.mark()
    started = cluster.start()
    won = log.wait_for(_became_leader, _PATIENCE, since)
    first = Failover(old_leader=0, new_leader=won.node, term=won.term,
                     seconds=max(0.0, won.monotonic - started))
    report(f"{cluster.describe()}; {won.node} elected leader of term {won.term} "
           f"{first.seconds * 1000:.1f} ms after a majority had started")
    leader, _ = cluster.wait_stable(_PATIENCE)
    crashes = []
    for number in range(1, failovers + 1):
        since = log.mark()
        crashed_at = cluster.crash(leader)  # from now on nothing the old leader says gets out: it is "dead"
        won = log.wait_for(_became_leader, _PATIENCE, since)
        crash = Failover(old_leader=leader, new_leader=won.node, term=won.term,
                         seconds=won.monotonic - crashed_at)
        crashes.append(crash)
        report(f"crash {number}: leader {leader} killed{cluster.crash_how}; {won.node} leads term {won.term} "
               f"after {crash.seconds * 1000:.1f} ms{_path(won)}")
        cluster.restart(leader)
        old = leader
        leader, term = cluster.wait_stable(_PATIENCE)
        report(f"         {old} restarted with its stored term and vote and follows {leader} (term {term})")
    since = log.mark()
    stopped_at = cluster.stop_gracefully(leader)  # graceful: transfers leadership first
    won = log.wait_for(_became_leader, _PATIENCE, since)
    handover = Failover(old_leader=leader, new_leader=won.node, term=won.term,
                        seconds=won.monotonic - stopped_at)
    report(f"graceful stop of leader {leader}{cluster.stop_how}: {won.node} leads term {won.term} after "
           f"{handover.seconds * 1000:.1f} ms (leadership transfer)")
    cluster.wait_stopped(leader)
    return DemoResult(first_election=first, crashes=tuple(crashes), handover=handover)


def run_memory_demo(nodes: int = 5, failovers: int = 3, *, seed: Optional[int] = None,
                    report: Callable[[str], object] = lambda line: None, **settings: Any) -> DemoResult:
    """:func:`run_demo` on threaded members over the in-memory network (``seed``: its delays).

    ``settings`` are :class:`~raft_election.config.RaftConfig` fields (``election_timeout``, ...).
    """
    with MemoryCluster(nodes, seed=seed, **settings) as cluster:
        return run_demo(cluster, failovers, report=report)


def run_process_demo(nodes: int = 5, failovers: int = 3, *, transport: str = "udp",
                     election_timeout: tuple[float, float] = (0.150, 0.300),
                     heartbeat_interval: float = 0.050,
                     report: Callable[[str], object] = lambda line: None) -> DemoResult:
    """:func:`run_demo` on member processes (``raft-election run``) on loopback over UDP or ZeroMQ.

    Every child process and the temporary directory are removed at the end, also on Ctrl-C.
    """
    with tempfile.TemporaryDirectory(prefix="raft-election-demo-") as workdir, ProcessCluster(
            nodes, workdir, transport=transport, election_timeout=election_timeout,
            heartbeat_interval=heartbeat_interval, name="demo") as cluster:
        return run_demo(cluster, failovers, report=report)


def _became_leader(event: MemberEvent) -> bool:
    return event.event == "became_leader"


def _path(won: MemberEvent) -> str:
    """How the new leader won: on death evidence (fast failover) or after an election timeout."""
    return " (fast failover)" if won.record.get("fast") else " (election timeout)"
