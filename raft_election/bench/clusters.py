"""The clusters a benchmark runs trials on: member processes, or threaded members in this process.

Both kinds give the trial loop the same things: member events as :class:`MemberEvent` records in one
:class:`EventLog` (``became_leader`` with the moment the lease began, ``leader_changed``), ways to crash,
restart and gracefully stop a member, the election messages sent so far, and the leader's measured round
trip.  Times are ``time.monotonic()``; member processes on one machine share that clock with the caller.
"""

from __future__ import annotations

import abc
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from raft_election.config import RaftConfig
from raft_election.events import BecameLeader, Event, LeaderChanged
from raft_election.node import RaftNode
from raft_election.processes import (
    EventLog,
    MemberEvent,
    MemberProcesses,
    free_ports,
    member_event,
    write_cluster_file,
)
from raft_election.storage import MemoryStorage

__all__ = ["BenchCluster", "MemoryCluster", "ProcessCluster", "election_messages"]

#: Counters whose sum is the number of messages an election costs (pre-vote and vote rounds, repeats too).
ELECTION_COUNTERS = ("vote_requests_sent", "vote_responses_sent")

#: Called with a member id and the cluster file; gives the command line of a member that prints the same
#: JSON events as ``raft-election run --json`` (None: that command itself).
MemberCommand = Callable[[int, str], list[str]]


def election_messages(counters: Mapping[str, Any]) -> int:
    """The election messages a member has sent, from its status counters."""
    return sum(int(counters.get(name, 0)) for name in ELECTION_COUNTERS)


class BenchCluster(abc.ABC):
    """A cluster of ``size`` members (ids 1..size) under test."""

    #: How :meth:`crash` and :meth:`stop_gracefully` end a member, for reports (e.g. `` (SIGKILL)``).
    crash_how = ""
    stop_how = ""

    def __init__(self, size: int, log: EventLog) -> None:
        self.members = tuple(range(1, size + 1))
        self.log = log
        self.down: set[int] = set()
        #: Event index at each member's latest start: only its events from there on describe it.
        self.start_marks = dict.fromkeys(self.members, 0)

    @abc.abstractmethod
    def start(self) -> float:
        """Start every member; return the monotonic time at which a quorum of them had started."""

    def describe(self) -> str:
        """What was started, for reports."""
        return f"{len(self.members)} members started"

    def crash(self, node_id: int) -> float:
        """End ``node_id`` abruptly (nothing it says gets out afterwards); return when (monotonic)."""
        self.down.add(node_id)
        return self._crash(node_id)

    def stop_gracefully(self, node_id: int) -> float:
        """Stop ``node_id`` the way an operator would (a leader hands over first); return when."""
        self.down.add(node_id)
        return self._stop_gracefully(node_id)

    def restart(self, node_id: int) -> None:
        """Start ``node_id`` again (with its stored term and vote)."""
        self.start_marks[node_id] = self.log.mark()
        self._restart(node_id)
        self.down.discard(node_id)

    def wait_stable(self, patience: float) -> tuple[int, int]:
        """Wait until the latest leader runs and every other running member follows it; return both.

        Returns the leader and its term.  A member counts as following once it reported that leader after
        its own latest start.

        Raises:
            TimeoutError: not stable within ``patience`` seconds.
        """
        deadline = time.monotonic() + patience
        while True:
            mark = self.log.mark()
            events = self.log.events[:mark]
            elected = [e for e in events if e.event == "became_leader"]
            if elected and elected[-1].node not in self.down:
                leader, term = elected[-1].node, elected[-1].term
                follows = {e.node for index, e in enumerate(events) if e.event == "leader_changed"
                           and e.leader == leader and e.term == term and index >= self.start_marks[e.node]}
                if all(m in follows for m in self.members if m != leader and m not in self.down):
                    return leader, term
            self.log.wait_for(lambda e: True, max(0.0, deadline - time.monotonic()), mark)

    @abc.abstractmethod
    def _crash(self, node_id: int) -> float: ...

    @abc.abstractmethod
    def _stop_gracefully(self, node_id: int) -> float: ...

    @abc.abstractmethod
    def _restart(self, node_id: int) -> None: ...

    @abc.abstractmethod
    def wait_stopped(self, node_id: int) -> None:
        """Wait until a gracefully stopped ``node_id`` has ended."""

    @abc.abstractmethod
    def election_messages(self) -> Optional[dict[int, int]]:
        """Election messages sent so far by each running member (None: this cluster cannot tell)."""

    @abc.abstractmethod
    def round_trip(self, leader: int) -> Optional[float]:
        """The leader's recent median heartbeat round trip in seconds (None: unknown)."""

    @abc.abstractmethod
    def close(self) -> None:
        """End every member and free what the cluster holds."""

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProcessCluster(BenchCluster):
    """Members as OS processes (``raft-election run --json``, or ``member_command``) on loopback.

    A crash is a SIGKILL; a graceful stop a SIGTERM.  Every process is ended by :meth:`close`, and the
    cluster file (cluster ``name``) and data directories live in ``workdir``.
    """

    crash_how = " (SIGKILL)"
    stop_how = " (SIGTERM)"

    def __init__(self, size: int, workdir: str, *, transport: str, election_timeout: tuple[float, float],
                 heartbeat_interval: float, member_command: Optional[MemberCommand] = None,
                 fast_failover: bool = True, name: str = "bench") -> None:
        # Other member programs (PySyncObj) listen on TCP whatever the file says.
        ports = free_ports(size, kind="udp" if transport == "udp" and member_command is None else "tcp")
        self.addresses = {node_id: f"127.0.0.1:{port}" for node_id, port in enumerate(ports, 1)}
        self.cluster_file = write_cluster_file(
            os.path.join(workdir, "cluster.json"), self.addresses, transport=transport, cluster=name,
            election_timeout=election_timeout, heartbeat_interval=heartbeat_interval,
            fast_failover=fast_failover)
        command = None
        if member_command is not None:
            path = self.cluster_file
            command = lambda node_id: member_command(node_id, path)  # noqa: E731
        members = range(1, size + 1)
        self.processes = MemberProcesses(self.cluster_file, workdir, members, command=command)
        super().__init__(size, self.processes.log)  # one log: the processes' readers fill it
        self._counts = member_command is None  # only our members report counters

    def start(self) -> float:
        since = self.log.mark()
        self.processes.start_all()
        started = sorted(self.log.wait_for(member_event(node_id, "started"), since=since).monotonic
                         for node_id in self.members)
        return started[len(self.members) // 2]

    def describe(self) -> str:
        pids = ", ".join(str(self.processes.pid(node_id)) for node_id in self.members)
        return f"{len(self.members)} member processes started (pids {pids})"

    def _crash(self, node_id: int) -> float:
        return self.processes.kill(node_id)

    def _stop_gracefully(self, node_id: int) -> float:
        return self.processes.signal(node_id, signal.SIGTERM)

    def wait_stopped(self, node_id: int) -> None:
        self.processes.wait_exit(node_id)

    def _restart(self, node_id: int) -> None:
        self.processes.start(node_id)

    def election_messages(self) -> Optional[dict[int, int]]:
        if not self._counts:
            return None
        return {i: election_messages(self.processes.status(i)["counters"])
                for i in self.members if i not in self.down}

    def round_trip(self, leader: int) -> Optional[float]:
        if not self._counts:
            return None
        value = self.processes.status(leader).get("round_trip")
        return float(value) if value is not None else None

    def close(self) -> None:
        self.processes.close()


class MemoryCluster(BenchCluster):
    """Threaded :class:`RaftNode` members over an in-memory network (0.2-1 ms delays) in this process.

    A crash cuts the member off the network, then stops it: nothing it says gets out any more, as with a
    killed process.  Then it is reachable again but closed, so a probe finds it gone (a killed process's
    port is refused).  Its :class:`MemoryStorage` survives for the restart.
    """

    def __init__(self, size: int, *, seed: Optional[int] = None, **settings: Any) -> None:
        """``settings``: :class:`RaftConfig` fields every member gets (``election_timeout``, ...)."""
        from transports.memory import InMemoryNetwork  # noqa: PLC0415 (applications pick transports)

        super().__init__(size, EventLog())
        self.network = InMemoryNetwork(seed=seed, delay=(0.0002, 0.001))
        peers = {node_id: f"memory:{node_id}" for node_id in self.members}
        self.configs = {node_id: RaftConfig(node_id=node_id, peers=peers, **settings)
                        for node_id in self.members}
        self.storages = {node_id: MemoryStorage() for node_id in self.members}
        self.nodes: dict[int, RaftNode] = {}

    def _observer(self, node_id: int) -> Callable[[Event], None]:
        def observe(event: Event) -> None:
            now = time.monotonic()
            if isinstance(event, BecameLeader):
                record = MemberEvent(node=node_id, event="became_leader", term=event.term, leader=node_id,
                                     monotonic=event.at, record={"fast": event.fast}, received=now)
            elif isinstance(event, LeaderChanged):
                record = MemberEvent(node=node_id, event="leader_changed", term=event.term,
                                     leader=event.leader_id, monotonic=now, record={}, received=now)
            else:
                return
            self.log.append(record)

        return observe

    def _start(self, node_id: int) -> None:
        node = RaftNode(self.configs[node_id], self.network.transport(node_id), self.storages[node_id],
                        observer=self._observer(node_id))
        self.nodes[node_id] = node.start()

    def start(self) -> float:
        started = []
        for node_id in self.members:
            self._start(node_id)
            started.append(time.monotonic())
        return started[len(self.members) // 2]

    def _crash(self, node_id: int) -> float:
        at = time.monotonic()
        self.network.isolate(node_id)
        self.nodes[node_id].stop()
        self.network.rejoin(node_id)
        return at

    def _stop_gracefully(self, node_id: int) -> float:
        at = time.monotonic()
        self.nodes[node_id].stop()
        return at

    def wait_stopped(self, node_id: int) -> None:
        """``stop()`` returns once the member has stopped."""

    def _restart(self, node_id: int) -> None:
        self._start(node_id)

    def election_messages(self) -> Optional[dict[int, int]]:
        return {i: election_messages(self.nodes[i].status().counters) for i in self.members
                if i not in self.down}

    def round_trip(self, leader: int) -> Optional[float]:
        return self.nodes[leader].status().round_trip

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.network.close()

