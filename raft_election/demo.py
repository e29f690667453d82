"""The in-memory demo behind ``raft-election demo``: elect, crash the leader a few times, hand over.

Runs real threaded :class:`~raft_election.node.RaftNode` members over an
:class:`~transports.memory.InMemoryNetwork` in one process.  A "crash" cuts the leader off the network and
stops it (nothing it says gets out any more), like a killed process; the failover time is measured from
that instant until another member holds a lease, using the members' own event timestamps.

Like the command line, this is an application of the library: it is the one place in ``raft_election``
that imports a transport, and only when the demo runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Optional

import attrs

from raft_election.config import RaftConfig
from raft_election.events import BecameLeader, Event
from raft_election.node import RaftNode
from raft_election.processes import MemberEvent, MemberProcesses
from raft_election.storage import MemoryStorage

__all__ = ["DemoResult", "Failover", "run_memory_demo"]


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


class _Cluster:
    """Members over one in-memory network, with a log of every election won."""

    def __init__(self, size: int, seed: Optional[int], settings: dict[str, object]) -> None:
        from transports.memory import InMemoryNetwork  # noqa: PLC0415 (applications pick transports)

        self.network = InMemoryNetwork(seed=seed, delay=(0.0002, 0.001))
        peers = {node_id: f"memory:{node_id}" for node_id in range(1, size + 1)}
        self.configs = {node_id: RaftConfig(node_id=node_id, peers=peers, **settings)  # type: ignore[arg-type]
                        for node_id in peers}
        self.storages = {node_id: MemoryStorage() for node_id in peers}
        self.nodes: dict[int, RaftNode] = {}
        self._won: list[tuple[int, BecameLeader]] = []
        self._changed = threading.Condition()

    def start(self, node_id: int) -> None:
        def observe(event: Event) -> None:
            if isinstance(event, BecameLeader):
                with self._changed:
                    self._won.append((node_id, event))
                    self._changed.notify_all()

        node = RaftNode(self.configs[node_id], self.network.transport(node_id), self.storages[node_id],
                        observer=observe)
        self.nodes[node_id] = node.start()

    def next_election_after(self, since: float, timeout: float = 10.0) -> tuple[int, BecameLeader]:
        """Wait for an election won at or after monotonic time ``since``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for node_id, event in self._won:
                    if event.at >= since:
                        return node_id, event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no leader elected within {timeout} s")
                self._changed.wait(remaining)

    def wait_until_stable(self, leader: int, timeout: float = 10.0) -> None:
        """Wait until every member follows ``leader``."""
        deadline = time.monotonic() + timeout
        while any(node.leader_id != leader for node in self.nodes.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"members did not all follow {leader} within {timeout} s")
            time.sleep(0.005)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.network.close()


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
    cluster = _Cluster(nodes, seed, dict(settings))
    try:
        started = time.monotonic()
        for node_id in cluster.configs:
            cluster.start(node_id)
        leader, won = cluster.next_election_after(started)
        first = Failover(old_leader=0, new_leader=leader, term=won.term, seconds=won.at - started)
        report(f"{nodes} members started; {leader} elected leader of term {won.term} "
               f"after {first.seconds * 1000:.1f} ms")
        cluster.wait_until_stable(leader)
        crashes = []
        for number in range(1, failovers + 1):
            old = leader
            crashed_at = time.monotonic()
            cluster.network.isolate(old)  # from now on nothing the old leader says gets out: it is "dead"
            cluster.nodes[old].stop()
            leader, won = cluster.next_election_after(crashed_at)
            crash = Failover(old_leader=old, new_leader=leader, term=won.term, seconds=won.at - crashed_at)
            crashes.append(crash)
            report(f"crash {number}: leader {old} killed; {leader} leads term {won.term} after "
                   f"{crash.seconds * 1000:.1f} ms")
            cluster.network.rejoin(old)
            cluster.start(old)
            cluster.wait_until_stable(leader)
            report(f"         {old} restarted and follows {leader} (term still {won.term})")
        old = leader
        stopped_at = time.monotonic()
        cluster.nodes[old].stop()  # graceful: transfers leadership first
        leader, won = cluster.next_election_after(stopped_at)
        handover = Failover(old_leader=old, new_leader=leader, term=won.term, seconds=won.at - stopped_at)
        report(f"graceful stop of leader {old}: {leader} leads term {won.term} after "
               f"{handover.seconds * 1000:.1f} ms (leadership transfer)")
        return DemoResult(first_election=first, crashes=tuple(crashes), handover=handover)
    finally:
        cluster.close()


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
                       f"after {crash.seconds * 1000:.1f} ms")
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


def _started_at(processes: MemberProcesses, node_id: int) -> float:
    """When member ``node_id`` reported that it started."""
    return processes.wait_for(lambda e: e.node == node_id and e.event == "started").monotonic


def _rejoined(processes: MemberProcesses, node_id: int, leader: int, since: int) -> MemberEvent:
    """Wait until restarted member ``node_id`` follows ``leader``."""
    return processes.wait_for(
        lambda e: e.node == node_id and e.event == "leader_changed" and e.leader == leader, since=since)
