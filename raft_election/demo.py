"""The in-memory demo behind ``raft-election demo``: elect, crash the leader a few times, hand over.

Runs real threaded :class:`~raft_election.node.RaftNode` members over an
:class:`~transports.memory.InMemoryNetwork` in one process (the benchmark's
:class:`~raft_election.bench.clusters.MemoryCluster`).  A "crash" cuts the leader off the network and stops
it (nothing it says gets out any more), like a killed process; the failover time is measured from that
instant until another member holds a lease, using the members' own event timestamps.  With member
processes instead, see :func:`run_process_demo`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Optional

import attrs

from raft_election.bench.clusters import MemoryCluster
from raft_election.processes import MemberEvent, MemberProcesses, member_event, member_follows

__all__ = ["DemoResult", "Failover", "run_memory_demo"]

#: The longest the in-memory demo waits for any one step (only reached if something is broken).
_PATIENCE = 10.0


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


def run_memory_demo(
    nodes: int = 5,
    failovers: int = 3,
    *,
    seed: Optional[int] = None,
    report: Callable[[str], object] = lambda line: None,
    **settings: object,
) -> DemoResult:
    """Run the demo and return its measurements; ``report`` receives one line per step as it happens.

    Args:
        nodes: cluster size.
        failovers: how many times to crash the leader (restarting it each time).
        seed: seeds the simulated network's delays.
        report: called with human-readable progress lines.
        settings: extra :class:`RaftConfig` fields (``election_timeout``, ``heartbeat_interval``, ...).
    """
    with MemoryCluster(nodes, seed=seed, **settings) as cluster:
        log = cluster.log
        started = time.monotonic()
        cluster.start()
        won = log.wait_for(lambda e: e.event == "became_leader", _PATIENCE)
        first = Failover(old_leader=0, new_leader=won.node, term=won.term, seconds=won.monotonic - started)
        report(f"{nodes} members started; {won.node} elected leader of term {won.term} "
               f"after {first.seconds * 1000:.1f} ms")
        leader, _ = cluster.wait_stable(_PATIENCE)
        crashes = []
        for number in range(1, failovers + 1):
            old = leader
            since = log.mark()
            crashed_at = cluster.crash(old)  # from now on nothing the old leader says gets out: it is "dead"
            won = log.wait_for(lambda e: e.event == "became_leader", _PATIENCE, since)
            crash = Failover(old_leader=old, new_leader=won.node, term=won.term,
                             seconds=won.monotonic - crashed_at)
            crashes.append(crash)
            report(f"crash {number}: leader {old} killed; {won.node} leads term {won.term} after "
                   f"{crash.seconds * 1000:.1f} ms{_path(won)}")
            cluster.restart(old)
            leader, term = cluster.wait_stable(_PATIENCE)
            report(f"         {old} restarted and follows {leader} (term still {term})")
        old = leader
        since = log.mark()
        stopped_at = cluster.stop_gracefully(old)  # graceful: transfers leadership first
        won = log.wait_for(lambda e: e.event == "became_leader", _PATIENCE, since)
        handover = Failover(old_leader=old, new_leader=won.node, term=won.term,
                            seconds=won.monotonic - stopped_at)
        report(f"graceful stop of leader {old}: {won.node} leads term {won.term} after "
               f"{handover.seconds * 1000:.1f} ms (leadership transfer)")
        return DemoResult(first_election=first, crashes=tuple(crashes), handover=handover)


def run_process_demo(
    nodes: int = 5,
    failovers: int = 3,
    *,
    transport: str = "udp",
    report: Callable[[str], object] = lambda line: None,
    **settings: object,
) -> DemoResult:
    """The demo with real member processes (``raft-election run``) on loopback over UDP or ZeroMQ.

    A crash is a SIGKILL of the leader's process; the failover time runs from the kill until another
    member's lease begins (its ``became_leader`` event), both on the machine's one monotonic clock.  Each
    killed member is restarted with its data directory and must rejoin as a follower.  Every child process
    and the temporary directory are removed at the end, also on Ctrl-C.
    """
    import tempfile  # noqa: PLC0415

    from raft_election.processes import free_ports, write_cluster_file  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="raft-election-demo-") as workdir:
        ports = free_ports(nodes, kind="udp" if transport == "udp" else "tcp")
        members = {node_id: f"127.0.0.1:{port}" for node_id, port in enumerate(ports, 1)}
        cluster_file = write_cluster_file(os.path.join(workdir, "cluster.json"), members, transport=transport,
                                          cluster="demo", **settings)
        with MemberProcesses(cluster_file, workdir, members) as processes:
            processes.start_all()
            ready = max(_started_at(processes, node_id) for node_id in members)
            won = processes.wait_for(lambda e: e.event == "became_leader")
            first = Failover(old_leader=0, new_leader=won.node, term=won.term,
                             seconds=max(0.0, won.monotonic - ready))
            pids = ", ".join(str(processes.pid(i)) for i in members)
            report(f"{nodes} member processes started (pids {pids}); {won.node} elected leader of term "
                   f"{won.term} {first.seconds * 1000:.1f} ms after the last one started")
            leader = won.node
            crashes = []
            for number in range(1, failovers + 1):
                since = processes.mark()
                killed_at = processes.kill(leader)
                won = processes.wait_for(lambda e: e.event == "became_leader", since=since)
                crash = Failover(old_leader=leader, new_leader=won.node, term=won.term,
                                 seconds=won.monotonic - killed_at)
                crashes.append(crash)
                report(f"crash {number}: leader {leader} killed (SIGKILL); {won.node} leads term {won.term} "
                       f"after {crash.seconds * 1000:.1f} ms{_path(won)}")
                since = processes.mark()
                processes.start(leader)
                rejoined = _rejoined(processes, leader, won.node, since)
                report(f"         {leader} restarted with its data directory and follows {won.node} "
                       f"(term {rejoined.term})")
                leader = won.node
            since = processes.mark()
            stopped_at = processes.signal(leader, signal.SIGTERM)
            won = processes.wait_for(lambda e: e.event == "became_leader", since=since)
            handover = Failover(old_leader=leader, new_leader=won.node, term=won.term,
                                seconds=won.monotonic - stopped_at)
            report(f"graceful stop of leader {leader} (SIGTERM): {won.node} leads term {won.term} after "
                   f"{handover.seconds * 1000:.1f} ms (leadership transfer)")
            processes.wait_exit(leader)
    return DemoResult(first_election=first, crashes=tuple(crashes), handover=handover)


def _path(won: MemberEvent) -> str:
    """How the new leader won: on death evidence (fast failover) or after an election timeout."""
    return " (fast failover)" if won.record.get("fast") else " (election timeout)"


def _started_at(processes: MemberProcesses, node_id: int) -> float:
    """When member ``node_id`` reported that it started."""
    return processes.wait_for(member_event(node_id, "started")).monotonic


def _rejoined(processes: MemberProcesses, node_id: int, leader: int, since: int) -> MemberEvent:
    """Wait until restarted member ``node_id`` follows ``leader``."""
    return processes.wait_for(member_follows(node_id, leader), since=since)
