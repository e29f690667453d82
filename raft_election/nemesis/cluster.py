"""Member processes of a cluster whose members change: fresh ids and ports, cluster files, who leads.

:class:`ChangingCluster` runs ``raft-election run --json`` member processes (through
:class:`~raft_election.processes.MemberProcesses`) the way an operator runs a cluster that grows, shrinks
and replaces hosts (thesis ch. 4):

* the original members share one cluster file; a fresh member (:meth:`ChangingCluster.spawn`) gets a new
  id, a new port and an admin port, and a cluster file of its own listing the members it joins and
  itself, and is started with ``run --join`` (``RaftConfig.join``: a non-voting catch-up member until a
  configuration that lists it reaches it).  Restarted later, it runs the same command: its stored
  configuration, not the file, then says who the members are;
* with ``admin``, every member answers on an admin channel (the ``[admin]`` table of its cluster file), so
  changes go through the leader's admin channel (:class:`~raft_election.nemesis.changes.ChangeDriver`,
  :attr:`ChangingCluster.changes`);
* :meth:`ChangingCluster.leader` rebuilds who holds a lease now from the members' own events and the kills
  made here (:mod:`raft_election.invariants`).

Used by the nemesis runner and by ``benchmarks/membership.py``.  Every process is ended by PID at
:meth:`ChangingCluster.close`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from raft_election.invariants import current_holder, replay_member_events
from raft_election.nemesis.changes import ChangeDriver
from raft_election.processes import MemberEvent, MemberProcesses, free_ports, member_event, write_cluster_file

__all__ = ["ChangingCluster", "entry_created"]


def entry_created(leader: Optional[int], member: int) -> Callable[[MemberEvent], bool]:
    """A predicate for :meth:`EventLog.wait_for`: ``leader`` reported creating an entry listing ``member``.

    ``leader`` None: any member.  That is its ``membership`` event with a ``parent``: the entry exists,
    and is not committed before a majority of its members stored it (thesis §4.1).
    """
    def match(event: MemberEvent) -> bool:
        record = event.record
        return (leader in (None, event.node) and event.event == "membership"
                and record.get("parent") is not None and str(member) in (record.get("members") or {}))
    return match


class ChangingCluster:
    """Member processes ``1..nodes`` on 127.0.0.1 (or at ``addresses``), and fresh members added later.

    Args:
        workdir: where cluster files, data directories and member logs go.
        transport: ``udp`` or ``zmq``.
        nodes: the original members' count (ids ``1..nodes``), on free ports of 127.0.0.1.
        addresses: the original members' addresses instead (then no admin channel: the ports are not
            ours to pick).
        admin: give every member an admin channel on 127.0.0.1 (needed for changes).
        secret: the cluster secret (messages and admin requests are authenticated with it).
        run_args: more arguments for every member's ``run``.
        env: the members' environment (default: this process's).
        command_prefix: per-member words to run the command under (network namespaces).
        change_timeout: seconds the leader is given to commit each change request.
    """

    def __init__(self, workdir: str, *, transport: str, election_timeout: tuple[float, float],
                 heartbeat_interval: float, nodes: int = 0, addresses: Optional[Mapping[int, str]] = None,
                 admin: bool = True, secret: Optional[str] = None, name: str = "cluster",
                 run_args: Iterable[str] = (), env: Optional[Mapping[str, str]] = None,
                 command_prefix: Optional[Callable[[int], list[str]]] = None,
                 change_timeout: float = 10.0) -> None:
        self.workdir = workdir
        self.transport = transport
        self.election_timeout = election_timeout
        self.heartbeat_interval = heartbeat_interval
        self.secret = secret
        self.name = name
        self.run_args = list(run_args)
        self.with_admin = admin and addresses is None
        #: Every member's address and admin address, of every member that ever ran.
        self.addresses: dict[int, str] = {}
        self.admin: dict[int, str] = {}
        if addresses is not None:
            self.addresses.update(addresses)
        else:
            for node, (port, admin_port) in enumerate(self.ports(nodes), 1):
                self.addresses[node] = f"127.0.0.1:{port}"
                if admin_port is not None:
                    self.admin[node] = f"127.0.0.1:{admin_port}"
        #: The members of the cluster's configuration, as the caller last learned it.
        self.members = tuple(sorted(self.addresses))
        self.next_id = max(self.members) + 1
        path = self.cluster_file("cluster.json", self.addresses)
        #: Each member's cluster file: the original one, or for a fresh member its own.
        self.cluster_files = dict.fromkeys(self.members, path)
        #: Members started with ``run --join``.
        self.joined: set[int] = set()
        self.processes = MemberProcesses(path, workdir, self.members, env=env, command_prefix=command_prefix,
                                         command=self.member_command)
        #: Guards ``kills`` and ``start_marks``: a change's thread reads them while a leader is killed.
        self.lock = threading.Lock()
        #: SIGKILL times per member.
        self.kills: dict[int, list[float]] = {}
        #: Event index at each member's latest start: its events from there on describe the running process.
        self.start_marks = dict.fromkeys(self.members, 0)
        self.changes = ChangeDriver(self.admin, secret=None if secret is None else secret.encode(),
                                    leader=self.leader, poll=heartbeat_interval, timeout=change_timeout)

    # ------------------------------------------------------------------ files and commands

    def ports(self, count: int) -> list[tuple[int, Optional[int]]]:
        """``count`` pairs of free ports: the transport's, and the admin channel's (None without admin)."""
        kind = "udp" if self.transport == "udp" else "tcp"
        if not self.with_admin:
            return [(port, None) for port in free_ports(count, kind=kind)]
        if kind == "tcp":  # both on TCP: draw them together, so that they differ
            ports = free_ports(2 * count, kind="tcp")
            return list(zip(ports[:count], ports[count:]))
        return list(zip(free_ports(count, kind="udp"), free_ports(count, kind="tcp")))

    def cluster_file(self, name: str, members: Mapping[int, str]) -> str:
        """Write a cluster file listing ``members`` (with their admin addresses, if any); return its path."""
        extra: dict[str, Any] = {}
        if self.admin:
            extra["admin"] = {str(member): self.admin[member] for member in members}
        if self.secret is not None:
            extra["secret"] = self.secret
        return write_cluster_file(os.path.join(self.workdir, name), members, transport=self.transport,
                                  cluster=self.name, election_timeout=self.election_timeout,
                                  heartbeat_interval=self.heartbeat_interval, **extra)

    def member_command(self, node: int) -> list[str]:
        """How member ``node`` is started (again): its own cluster file, and ``--join`` for a fresh member."""
        return [sys.executable, "-m", "raft_election", "run", "--cluster", self.cluster_files[node],
                "--id", str(node), "--data-dir", self.processes.data_dir(node), "--json", *self.run_args,
                *(["--join"] if node in self.joined else [])]

    # ------------------------------------------------------------------ processes

    def start(self, node: int) -> None:
        """Start member ``node`` (again)."""
        with self.lock:
            self.start_marks[node] = self.processes.mark()
        self.processes.start(node)

    def start_all(self) -> None:
        """Start every original member."""
        for node in self.members:
            self.start(node)

    def kill(self, node: int) -> float:
        """SIGKILL member ``node`` and reap it; return when the signal was sent."""
        at = self.processes.kill(node)
        with self.lock:
            self.kills.setdefault(node, []).append(at)
        return at

    def stop(self, node: int, how: str = "term") -> None:
        """End member ``node``: by SIGTERM (``term``; SIGKILL if it hangs), or by SIGKILL (``kill``)."""
        if how == "term":
            try:
                self.processes.terminate(node)
                return
            except subprocess.TimeoutExpired:
                pass
        self.kill(node)

    def running(self) -> list[int]:
        """Every member id whose process runs now."""
        return [node for node in self.addresses if self.processes.alive(node)]

    def wait_started(self, node: int, since: int, timeout: float = 30.0) -> bool:
        """Wait until member ``node`` reported ``started`` (event index ``since`` on); False if it exited."""
        deadline = time.monotonic() + timeout
        while self.processes.alive(node) and time.monotonic() < deadline:
            try:
                self.processes.wait_for(member_event(node, "started"), 0.5, since)
                return True
            except TimeoutError:
                continue
        return False

    def spawn(self, members: Optional[Mapping[int, str]] = None) -> int:
        """Start a fresh member (new id, new ports) that joins ``members`` (default: :attr:`members`).

        Returns its id once it reported ``started`` (or exited: a change then finds nobody there).
        """
        if not self.with_admin:
            raise RuntimeError("fresh members need admin channels (a cluster on 127.0.0.1 with admin=True)")
        node = self.next_id
        self.next_id += 1
        ((port, admin_port),) = self.ports(1)
        assert admin_port is not None
        self.addresses[node] = f"127.0.0.1:{port}"
        self.admin[node] = f"127.0.0.1:{admin_port}"
        listed = {member: self.addresses[member] for member in (members or self.members)}
        listed[node] = self.addresses[node]
        self.cluster_files[node] = self.cluster_file(f"cluster-{node}.json", listed)
        self.joined.add(node)
        since = self.processes.mark()
        self.start(node)
        self.wait_started(node, since)
        return node

    def leader(self) -> Optional[int]:
        """The member that most recently took office, if it still runs and its lease interval is open."""
        with self.lock:
            kills = {node: tuple(times) for node, times in self.kills.items()}
        intervals = replay_member_events(self.processes.events, kills=kills).intervals()
        return current_holder(intervals, self.processes.alive)

    def close(self) -> None:
        """End every member process started here."""
        self.processes.close()
