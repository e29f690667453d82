"""Cluster members as real OS processes, with their event streams: for the demo, tests and benchmarks.

:class:`MemberProcesses` starts members with ``python -m raft_election run --json``, reads every member's
JSON event lines on a thread per process, and lets the caller kill (SIGKILL), pause (SIGSTOP), resume
(SIGCONT), stop (SIGTERM) and restart members, ask for status snapshots (SIGUSR1) and wait for events.
It only ever signals processes it started, by PID, and :meth:`MemberProcesses.close` ends all of them.

Membership changes (thesis ch. 4): :class:`ClusterLayout` hands out addresses and admin addresses for
members that join later and writes the cluster files of a cluster whose members change: the operator's
file (the seed list ``raft-election members`` finds the leader through) and each joining member's own file
(the current members and itself, started with ``--join``); :meth:`MemberProcesses.start` takes a member's
own file and ``join``.  Running this module (``python -m raft_election.processes run ...``) runs a *lock
worker*: a member like ``raft-election run --json`` that also holds the cluster's
:class:`~raft_election.lock.DistributedLock` whenever it can and, while it holds it, keeps writing its
fencing token to a fenced file (:func:`fenced_write`), reporting ``acquired`` and ``write`` events.

Election groups: members started with ``shards`` (``run --shards N``) host the groups ``shard-0`` ..
``shard-{N-1}`` and report ``group_leader`` and ``group_lost`` events (see :mod:`raft_election.member`).
:func:`replay_group_events` rebuilds every named group's lease intervals from them (and from the members'
``started`` and ``stopped`` events and the kill times :meth:`MemberProcesses.kill` records in
:attr:`MemberProcesses.kills`), one :class:`~raft_election.invariants.SafetyChecker` per group, under the
rules the default group's intervals follow (:mod:`raft_election.invariants`);
:func:`group_lease_holders` says who holds each group's lease as far as the events tell, and
:func:`group_lease_findings` what broke a group's guarantees (two leaders in a term, overlapping leases,
a lease of a lower term after one of a higher).

Times in events are ``time.monotonic()`` of the member processes, which on one machine is one clock
(CLOCK_MONOTONIC), so they compare with each other and with the caller's ``time.monotonic()``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Optional, TextIO

import attrs

from raft_election.invariants import Finding, SafetyChecker

if TYPE_CHECKING:
    from raft_election.lock import DistributedLock
    from raft_election.member import EventReporter
    from raft_election.node import RaftNode

__all__ = ["LOCK_WORKER", "ClusterLayout", "EventLog", "FencedWrite", "MemberEvent", "MemberProcesses",
           "ephemeral_port_range", "fenced_write", "fenced_writes", "free_ports", "group_lease_findings",
           "group_lease_holders",
           "member_configuration", "member_event", "replay_group_events", "run_lock_worker",
           "write_cluster_file"]

#: The module to run members with (``MemberProcesses(module=...)``) to make them lock workers.
LOCK_WORKER = "raft_election.processes"


#: Where the kernel takes the local ports of outgoing connections from, if ``/proc`` does not say (Linux).
_EPHEMERAL_DEFAULT = (32768, 60999)
#: How many ports below the ephemeral range :func:`free_ports` chooses from.
_FREE_PORTS_SPAN = 16384


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (``ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as file:
            low, high = (int(part) for part in file.read().split())
        return low, high
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


def free_ports(count: int, *, kind: str = "udp", host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago (``kind``: ``udp`` or ``tcp``).

    Chosen at random below the kernel's ephemeral range (:func:`ephemeral_port_range`), and each bound once
    to check it is free.  A port from inside that range (what binding port 0 gives) can be taken before
    the member meant for it binds it, by any outgoing connection: a peer's transport reconnecting to a
    member not started yet, a death probe.  Falls back to ports the kernel picks when there is no room
    below the range.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    top = ephemeral_port_range()[0] - 1
    bottom = max(1024, top - _FREE_PORTS_SPAN)
    if top - bottom < 4 * count:
        return _kernel_ports(count, family, sock_type, host)
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(100 * count + 100):
        if len(chosen) == count:
            break
        port = rng.randint(bottom, top)
        if port in chosen:
            continue
        with socket.socket(family, sock_type) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use (or lingering): another one
        chosen.append(port)
    if len(chosen) < count:
        raise OSError(f"found only {len(chosen)} of {count} free {kind} ports on {host} in "
                      f"{bottom}-{top}")
    return chosen


def _kernel_ports(count: int, family: int, sock_type: int, host: str) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, sock_type)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_cluster_file(path: str, members: Mapping[int, str], *, transport: str = "udp",
                       admin: Optional[Mapping[int, str]] = None, **settings: Any) -> str:
    """Write a JSON cluster file for ``members`` (id -> address) and return its path.

    ``admin`` (id -> ``host:port``) becomes the file's ``[admin]`` table: where each member answers admin
    requests (``raft-election status``, ``raft-election members``); ``settings`` are more top-level keys.
    """
    document: dict[str, Any] = {"transport": transport, "members": {str(k): v for k, v in members.items()}}
    if admin:
        document["admin"] = {str(k): v for k, v in admin.items()}
    for key, value in settings.items():
        document[key] = list(value) if isinstance(value, tuple) else value
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    return path


class ClusterLayout:
    """Addresses and cluster files of a cluster on one host whose members change (thesis ch. 4).

    Each member id gets a transport address and an admin address on first use (:meth:`add`) and keeps
    them for good: a replacement for a dead member is a new id on a new port, never an old id again (a
    fresh process under an old id lacks the ``votedFor`` that id persisted and could vote twice in a term,
    Raft §5.2, Figure 2).  The files are JSON cluster files (:func:`write_cluster_file`) with the
    shared ``settings`` and an ``[admin]`` table for the members they list:

    * the operator's file (:attr:`path`, :meth:`write`): the seed list, as an operator keeps it up to date
      after each change; ``raft-election members --cluster`` finds the leader through its admin addresses;
    * a joining member's own file (:meth:`joiner_file`): the current members and itself, for
      ``raft-election run --join`` (``RaftConfig.join``).

    Args:
        directory: where the files are written.
        transport: the cluster's transport, ``udp`` or ``zmq`` (it decides the kind of port to find).
        host: the address every member and admin channel binds to.
        settings: more cluster-file keys for every file (``election_timeout``, ``cluster``, ``secret``...).
    """

    def __init__(self, directory: str, transport: str = "udp", *, host: str = "127.0.0.1",
                 **settings: Any) -> None:
        self.directory = directory
        self.transport = transport
        self.host = host
        self.settings = dict(settings)
        #: Every member id given out so far and its transport address.
        self.addresses: dict[int, str] = {}
        #: Every member id given out so far and its admin address.
        self.admin: dict[int, str] = {}
        self._taken: set[int] = set()

    @property
    def path(self) -> str:
        """The operator's cluster file."""
        return os.path.join(self.directory, "cluster.json")

    def add(self, *node_ids: int) -> None:
        """Give each new id of ``node_ids`` a transport and an admin address (known ids keep theirs)."""
        for node_id in node_ids:
            if node_id not in self.addresses:
                kind = "udp" if self.transport == "udp" else "tcp"
                self.addresses[node_id] = self._address(self._port(kind))
                self.admin[node_id] = self._address(self._port("tcp"))

    def _address(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    def _port(self, kind: str) -> int:
        """A port free a moment ago that this layout did not give out yet (the kernel may offer one twice)."""
        for _ in range(100):
            port = free_ports(1, kind=kind, host=self.host)[0]
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError(f"no fresh {kind} port on {self.host} after 100 tries")

    def members(self, node_ids: Iterable[int]) -> dict[int, str]:
        """``{id: address}`` for ``node_ids`` (given addresses first if they have none)."""
        ids = sorted(set(node_ids))
        self.add(*ids)
        return {node_id: self.addresses[node_id] for node_id in ids}

    def write(self, node_ids: Iterable[int], path: Optional[str] = None) -> str:
        """Write the operator's file (or ``path``) listing ``node_ids`` with their admin addresses."""
        members = self.members(node_ids)
        return write_cluster_file(self.path if path is None else path, members, transport=self.transport,
                                  admin={node_id: self.admin[node_id] for node_id in members},
                                  **self.settings)

    def joiner_file(self, node_id: int, current: Iterable[int]) -> str:
        """Write member ``node_id``'s own file for ``run --join``: the ``current`` members and itself."""
        return self.write({*current, node_id}, os.path.join(self.directory, f"cluster-{node_id}.json"))


@attrs.frozen(kw_only=True)
class MemberEvent:
    """One JSON event line of one member process."""

    node: int
    event: str
    term: int
    leader: Optional[int]
    monotonic: float
    record: Mapping[str, Any] = attrs.field(repr=False)
    #: The caller's ``time.monotonic()`` when the line was read.
    received: float = attrs.field(repr=False)


def member_event(node_id: int, event: str) -> Callable[[MemberEvent], bool]:
    """A predicate for :meth:`EventLog.wait_for`: member ``node_id`` reported ``event``."""
    return lambda record: record.node == node_id and record.event == event


def member_follows(node_id: int, leader: int) -> Callable[[MemberEvent], bool]:
    """A predicate for :meth:`EventLog.wait_for`: member ``node_id`` reported that it follows ``leader``."""
    return lambda record: (record.node, record.event, record.leader) == (node_id, "leader_changed", leader)


def member_configuration(node_id: Optional[int], members: Iterable[int], *,
                         committed: Optional[bool] = None) -> Callable[[MemberEvent], bool]:
    """A predicate for :meth:`EventLog.wait_for`: a ``membership`` event listing exactly ``members``.

    From member ``node_id`` (any member if None), and, if ``committed`` is given, reporting the entry as
    committed (or not) in its ``committed`` field.
    """
    wanted = frozenset(members)

    def matches(record: MemberEvent) -> bool:
        if record.event != "membership" or (node_id is not None and record.node != node_id):
            return False
        if committed is not None and bool(record.record.get("committed")) != committed:
            return False
        return frozenset(int(member) for member in record.record.get("members", {})) == wanted

    return matches


class EventLog:
    """Member events in the order they arrived, with a wait for the first one that matches.

    Shared by threads: readers of member processes (or node observers) append, the caller waits.
    """

    def __init__(self) -> None:
        self._events: list[MemberEvent] = []
        self._changed = threading.Condition()

    def append(self, event: MemberEvent) -> None:
        """Add ``event`` and wake every waiter."""
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every waiter (a stream ended)."""
        with self._changed:
            self._changed.notify_all()

    @property
    def events(self) -> list[MemberEvent]:
        """Every event so far, in the order it arrived."""
        with self._changed:
            return list(self._events)

    def mark(self) -> int:
        """An index for :meth:`wait_for`'s ``since``: only events after this call."""
        with self._changed:
            return len(self._events)

    def wait_for(self, predicate: Callable[[MemberEvent], bool], timeout: float = 30.0,
                 since: int = 0) -> MemberEvent:
        """Wait for the first event (at index ``since`` or later) satisfying ``predicate``; return it.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            index = since
            while True:
                while index < len(self._events):
                    event = self._events[index]
                    index += 1
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching member event within {timeout} s; last events: "
                                       f"{self._events[-5:]}")
                self._changed.wait(remaining)

    def wait_until(self, condition: Callable[[Sequence[MemberEvent]], bool], timeout: float = 30.0,
                   what: str = "the condition") -> None:
        """Wait until ``condition(events)`` holds for every event so far; check again as events arrive.

        For conditions on the whole history (every group has a lease holder, say) rather than on one
        event.  ``condition`` is called with a snapshot of the events, outside the log's lock.

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds (``what`` names it in the message).
        """
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            with self._changed:
                while len(self._events) == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{what} did not hold within {timeout} s; last events: "
                                           f"{self._events[-5:]}")
                    self._changed.wait(remaining)
                snapshot = list(self._events)
            seen = len(snapshot)
            if condition(snapshot):
                return


class _Member:
    def __init__(self, node_id: int, process: subprocess.Popen[str], log: IO[str]) -> None:
        self.node_id = node_id
        self.process = process
        self.log = log
        self.reader: Optional[threading.Thread] = None
        self.paused = False


class MemberProcesses:
    """Start, signal and watch member processes of one cluster file.

    A member may be started with a cluster file of its own and ``join`` (:meth:`start`): a member that
    joins a running cluster, added by the leader afterwards (thesis §4.2.1).  Both stick to the member id
    for its restarts.

    Args:
        cluster_file: the cluster file every member reads unless started with its own.
        workdir: where each member gets its data directory (``data-<id>``) and log (``member-<id>.log``).
        members: the member ids (as in the cluster file).
        python: the interpreter to run members with.
        extra_args: more arguments for ``raft-election`` before ``run`` (e.g. ``["-v"]``).
        run_args: more arguments for ``run`` (e.g. ``["--voter-only"]``).
        member_args: per-member arguments for ``run`` after those, e.g. ``lambda i: ["--value", f"app-{i}"]``.
        command_prefix: per-member words to run the command under, e.g.
            ``lambda i: ["ip", "netns", "exec", f"ns{i}"]`` (the prefix must exec the command, so that the
            PID signalled is the member's own).
        command: per-member command that replaces ``python -m raft_election run ...`` altogether: another
            program that prints the same JSON event lines (the benchmarks run PySyncObj members this way).
        module: the module run with ``python -m`` and the arguments of ``run``: ``raft_election`` (the
            command line), or :data:`LOCK_WORKER` for lock workers (give them ``--fenced FILE`` in
            ``run_args``).
        shards: start every member with ``run --shards N`` (the command line's ``run`` only: not for lock
            workers or ``command``): each hosts and stands in the groups ``shard-0`` .. ``shard-{N-1}``
            and reports ``group_leader`` and ``group_lost`` events; 0 (default): none.
    """

    def __init__(self, cluster_file: str, workdir: str, members: Iterable[int], *,
                 python: str = sys.executable, extra_args: Iterable[str] = (),
                 env: Optional[Mapping[str, str]] = None,
                 command_prefix: Optional[Callable[[int], list[str]]] = None,
                 run_args: Iterable[str] = (),
                 member_args: Optional[Callable[[int], list[str]]] = None,
                 command: Optional[Callable[[int], list[str]]] = None,
                 module: str = "raft_election", shards: int = 0) -> None:
        if type(shards) is not int or shards < 0:
            raise ValueError(f"shards must be an int, at least 0, got {shards!r}")
        self.cluster_file = cluster_file
        self.workdir = workdir
        self.member_ids = sorted(members)
        self._python = python
        self._extra = list(extra_args)
        self._env = dict(os.environ if env is None else env)
        self._prefix = command_prefix
        self._run_args = list(run_args)
        self._member_args = member_args
        self._command = command
        self._module = module
        self._shards = shards
        #: The times (``time.monotonic()``) each member was sent SIGKILL by :meth:`kill`, in order: what
        #: ``kills`` of :func:`~raft_election.invariants.replay_member_events` and
        #: :func:`replay_group_events` take.
        self.kills: dict[int, list[float]] = {}
        self._files: dict[int, str] = {}
        self._joining: set[int] = set()
        self._members: dict[int, _Member] = {}
        self._log = EventLog()
        self.garbage: list[tuple[int, str]] = []
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def data_dir(self, node_id: int) -> str:
        """The data directory member ``node_id`` keeps its term and vote in."""
        return os.path.join(self.workdir, f"data-{node_id}")

    def cluster_file_of(self, node_id: int) -> str:
        """The cluster file member ``node_id`` is started with."""
        return self._files.get(node_id, self.cluster_file)

    def start(self, node_id: int, *, cluster_file: Optional[str] = None, join: Optional[bool] = None) -> int:
        """Start member ``node_id`` (again); return its PID.

        Args:
            node_id: the member; a new id is added to :attr:`member_ids`.
            cluster_file: a cluster file of this member's own (kept for its restarts); default: the one it
                was started with before, else the shared one.
            join: start it with ``--join``, as a new member of a running cluster (kept for its restarts;
                harmless once it stored a configuration, which takes precedence).  Default: as before.
        """
        old = self._members.get(node_id)
        if old is not None and old.process.poll() is None:
            raise RuntimeError(f"member {node_id} is still running (pid {old.process.pid})")
        if cluster_file is not None:
            self._files[node_id] = cluster_file
        if join is not None:
            (self._joining.add if join else self._joining.discard)(node_id)
        if node_id not in self.member_ids:
            self.member_ids = sorted([*self.member_ids, node_id])
        log = open(os.path.join(self.workdir, f"member-{node_id}.log"), "a", encoding="utf-8")  # noqa: SIM115
        if self._command is not None:
            command = self._command(node_id)
        else:
            command = [self._python, "-m", self._module, *self._extra, "run", "--cluster",
                       self.cluster_file_of(node_id), "--id", str(node_id), "--data-dir",
                       self.data_dir(node_id), "--json",
                       *(["--shards", str(self._shards)] if self._shards else []), *self._run_args,
                       *(self._member_args(node_id) if self._member_args is not None else ()),
                       *(["--join"] if node_id in self._joining else [])]
        if self._prefix is not None:
            command = [*self._prefix(node_id), *command]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                   text=True, bufsize=1, env=self._env)
        member = _Member(node_id, process, log)
        member.reader = threading.Thread(target=self._read, args=(member,), daemon=True,
                                         name=f"member-{node_id}-reader")
        self._members[node_id] = member
        member.reader.start()
        return process.pid

    def start_all(self) -> None:
        """Start every member."""
        for node_id in self.member_ids:
            self.start(node_id)

    def pid(self, node_id: int) -> int:
        """The PID of member ``node_id``'s current process."""
        return self._members[node_id].process.pid

    def alive(self, node_id: int) -> bool:
        """Whether member ``node_id``'s current process is running (possibly paused)."""
        member = self._members.get(node_id)
        return member is not None and member.process.poll() is None

    def signal(self, node_id: int, signum: int) -> float:
        """Send ``signum`` to member ``node_id``; return the ``time.monotonic()`` just before sending."""
        member = self._members[node_id]
        if member.process.poll() is not None:
            raise RuntimeError(f"member {node_id} (pid {member.process.pid}) is not running")
        at = time.monotonic()
        os.kill(member.process.pid, signum)
        if signum == signal.SIGSTOP:
            member.paused = True
        elif signum == signal.SIGCONT:
            member.paused = False
        return at

    def kill(self, node_id: int) -> float:
        """SIGKILL member ``node_id`` and reap it; return when the signal was sent (monotonic).

        The time is also recorded in :attr:`kills`.  On return every event line the process wrote has
        been read.
        """
        at = self.signal(node_id, signal.SIGKILL)
        self.kills.setdefault(node_id, []).append(at)
        self.wait_exit(node_id)
        return at

    def terminate(self, node_id: int, timeout: float = 20.0) -> int:
        """SIGTERM member ``node_id`` (graceful stop) and wait for it; return its exit status."""
        self.signal(node_id, signal.SIGTERM)
        return self.wait_exit(node_id, timeout)

    def pause(self, node_id: int) -> float:
        """SIGSTOP member ``node_id``."""
        return self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> float:
        """SIGCONT member ``node_id``."""
        return self.signal(node_id, signal.SIGCONT)

    def wait_exit(self, node_id: int, timeout: float = 20.0) -> int:
        """Wait for member ``node_id``'s process to exit and its output to be read; return its status."""
        member = self._members[node_id]
        status = member.process.wait(timeout)
        if member.reader is not None:
            member.reader.join(timeout)
        return status

    def close(self) -> None:
        """End every member process this object started (SIGKILL; SIGCONT first if paused) and reap it."""
        self._closed = True
        for member in self._members.values():
            if member.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member.process.pid, signal.SIGKILL)
                    if member.paused:
                        os.kill(member.process.pid, signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(10)
            if member.reader is not None:
                member.reader.join(5)
            if member.process.stdout is not None:
                member.process.stdout.close()
            member.log.close()

    def __enter__(self) -> MemberProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events

    def _read(self, member: _Member) -> None:
        stream = member.process.stdout
        assert stream is not None
        for line in stream:
            received = time.monotonic()
            try:
                record = json.loads(line)
                event = MemberEvent(node=int(record["node"]), event=str(record["event"]),
                                    term=int(record["term"]), leader=record["leader"],
                                    monotonic=float(record["monotonic"]), record=record, received=received)
            except (ValueError, KeyError, TypeError):
                self.garbage.append((member.node_id, line))
                continue
            self._log.append(event)
        self._log.wake()

    @property
    def events(self) -> list[MemberEvent]:
        """Every event read so far, in the order read."""
        return self._log.events

    @property
    def log(self) -> EventLog:
        """The log every member's events are read into."""
        return self._log

    def wait_for(self, predicate: Callable[[MemberEvent], bool], timeout: float = 30.0,
                 since: int = 0) -> MemberEvent:
        """Wait for the first event (at index ``since`` or later) satisfying ``predicate``; return it.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        return self._log.wait_for(predicate, timeout, since)

    def mark(self) -> int:
        """An index for :meth:`wait_for`'s ``since``: only events read after this call."""
        return self._log.mark()

    def wait_until(self, condition: Callable[[Sequence[MemberEvent]], bool], timeout: float = 30.0,
                   what: str = "the condition") -> None:
        """Wait until ``condition(events)`` holds for the events read so far (as :meth:`EventLog.wait_until`).

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds.
        """
        self._log.wait_until(condition, timeout, what)

    def status(self, node_id: int, timeout: float = 30.0) -> Mapping[str, Any]:
        """Ask member ``node_id`` for a status snapshot (SIGUSR1) and return its record."""
        since = self.mark()
        self.signal(node_id, signal.SIGUSR1)
        event = self.wait_for(lambda e: e.node == node_id and e.event == "status", timeout, since)
        return event.record


# ---------------------------------------------------------------------------- election groups


def replay_group_events(events: Iterable[MemberEvent], *,
                        kills: Optional[Mapping[int, Iterable[float]]] = None) -> dict[str, SafetyChecker]:
    """Every named group's lease intervals, rebuilt from member events: a checker per group, by name.

    As :func:`~raft_election.invariants.replay_member_events` does for the default group: ``events`` in the
    order they were read; a ``group_leader`` begins a leadership of ``group`` (``regained``: after a lease
    gap, the same office); a ``group_lost`` of the same term ends it at its ``lease_end``; the member's
    ``stopped`` and next ``started`` end every leadership of the process before; and a kill (``kills``:
    each member's SIGKILL times, e.g. :attr:`MemberProcesses.kills`) ends the killed process's open
    leaderships at the kill, taken into account just before the member's next ``started`` (or at the
    end).  Each checker has already judged one leader per term (its ``findings``); its intervals are
    judged by :func:`group_lease_findings`.  The default group's events are not groups' events and are
    ignored here.
    """
    checkers: dict[str, SafetyChecker] = {}
    pending = {node: sorted(times) for node, times in (kills or {}).items()}

    def apply_kills(node: int, until: float) -> None:
        times = pending.get(node, [])
        while times and times[0] <= until:
            at = times.pop(0)
            for checker in checkers.values():
                checker.killed(node, at)

    for event in events:
        node, at, kind = event.node, event.monotonic, event.event
        if kind in ("group_leader", "group_lost"):
            checker = checkers.setdefault(str(event.record.get("group")), SafetyChecker())
            if kind == "group_leader":
                if event.record.get("regained"):
                    checker.lease_regained(node, event.term, at)
                else:
                    checker.became_leader(node, event.term, at)
                continue
            lease_end = event.record.get("lease_end")
            end = at if lease_end is None else float(lease_end)
            if event.record.get("reason") == "lease_lost":
                checker.lease_lost(node, event.term, end)
            else:
                checker.lost_leadership(node, event.term, end)
        elif kind == "started":
            apply_kills(node, at)
            for checker in checkers.values():
                checker.started(node, at)
        elif kind == "stopped":
            for checker in checkers.values():
                checker.stopped(node, at)
    for node in pending:
        apply_kills(node, math.inf)
    return checkers


def group_lease_holders(events: Iterable[MemberEvent], *,
                        kills: Optional[Mapping[int, Iterable[float]]] = None) -> dict[str, int]:
    """The member holding each named group's lease as far as ``events`` tell: ``{group: member}``.

    A group's holder is the member of its latest-starting leadership if that one is still open (no
    ``group_lost``, ``stopped``, restart or kill ended it yet); groups without one are left out.  Events
    tell of a lease's end only once its holder noticed it, so a lease that ran out a moment ago may still
    be shown held.
    """
    holders: dict[str, int] = {}
    for group, checker in replay_group_events(events, kills=kills).items():
        intervals = checker.intervals()
        if intervals:
            latest = max(intervals, key=lambda interval: interval.start)
            if latest.end is None:
                holders[group] = latest.node
    return holders


def group_lease_findings(events: Iterable[MemberEvent], *,
                         kills: Optional[Mapping[int, Iterable[float]]] = None,
                         end_of_run: Optional[float] = None) -> dict[str, list[Finding]]:
    """What broke a named group's guarantees in ``events``, by group (groups without findings left out).

    Per group, as the default group's are judged (:mod:`raft_election.invariants`): two members winning
    one term (``election_safety``), lease intervals of two members sharing a moment (``lease_overlap``:
    the guarantee that at no instant two members believe they lead the group), and a lease of a lower
    term beginning after one of a higher term (``lease_order``: the group's fencing tokens increase from
    one holder to the next).  An interval still open counts as lasting for ever unless ``end_of_run``
    ends it; judge a finished run (every member stopped or killed, all events read), or a live one with
    ``end_of_run`` only where a lease's end may not be reported yet.
    """
    found: dict[str, list[Finding]] = {}
    for group, checker in sorted(replay_group_events(events, kills=kills).items()):
        findings = [*checker.findings, *checker.check_intervals(end_of_run)]
        if findings:
            found[group] = findings
    return found


# ---------------------------------------------------------------------------- the fenced resource


@attrs.frozen(kw_only=True)
class FencedWrite:
    """One write the fenced resource accepted: the fencing token, the writer, its ``time.monotonic()``."""

    token: int
    node: int
    at: float


def fenced_write(path: str, token: int, node_id: int) -> bool:
    """The resource a lock protects: append ``token`` unless a higher token was accepted before.

    The check and the append happen under an exclusive ``flock`` of the file, so writers in different
    processes take turns (Kleppmann, "How to do distributed locking": the resource, not the lock holder,
    refuses a stale token).  The file holds only accepted writes, one ``token node monotonic`` line each,
    so its tokens never decrease and the last line holds the highest.

    Returns:
        Whether the write was accepted.
    """
    with open(path, "a+b") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - 256))
        lines = file.read().splitlines()
        if lines and token < int(lines[-1].split()[0]):
            return False
        file.write(f"{token} {node_id} {time.monotonic()}\n".encode("ascii"))
        return True


def fenced_writes(path: str) -> list[FencedWrite]:
    """Every write the fenced resource at ``path`` accepted, in the order it accepted them."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="ascii") as file:
        fcntl.flock(file, fcntl.LOCK_SH)
        rows = [line.split() for line in file if line.strip()]
    return [FencedWrite(token=int(token), node=int(node), at=float(at)) for token, node, at in rows]


# ---------------------------------------------------------------------------- the lock worker


#: Signals a lock worker takes synchronously, like ``raft-election run``: SIGTERM and SIGINT stop it
#: (a leader hands over first), SIGUSR1 reports a status snapshot.
_WORKER_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})


def _worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {LOCK_WORKER}",
        description="Run one member like 'raft-election run --json' that also holds the cluster's lock "
                    "whenever it can and, while it holds it, writes its fencing token to FENCED every "
                    "INTERVAL seconds.")
    parser.add_argument("command", choices=("run",))
    parser.add_argument("--cluster", required=True, metavar="FILE", help="cluster file (TOML or JSON)")
    parser.add_argument("--id", required=True, type=int, metavar="N", help="this member's id in the file")
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="where the term and vote are kept")
    parser.add_argument("--json", action="store_true", help="accepted for MemberProcesses; always JSON")
    parser.add_argument("--join", action="store_true", help="a new member joining a running cluster")
    parser.add_argument("--admin", metavar="ADDR", help="admin address (default: the file's [admin] entry)")
    parser.add_argument("--fenced", required=True, metavar="FILE", help="the fenced resource's file")
    parser.add_argument("--interval", type=float, default=0.02, metavar="S",
                        help="seconds between two writes while holding the lock (default 0.02)")
    return parser


def run_lock_worker(argv: Optional[Sequence[str]] = None, stream: TextIO = sys.stdout) -> int:
    """Run a lock worker until SIGTERM or SIGINT (see the module docstring); return the exit status.

    Its events are those of ``raft-election run --json`` (the same reporter), plus ``acquired`` (the
    lock, ``token``), ``write`` (``token``, ``accepted``) and ``lock_lapsed`` (``token``, ``lost``: the
    office ended, else a lease gap), with ``term`` the token.  Like ``run``, it takes its signals with
    ``sigwait`` on the main thread and works on another.
    """
    from raft_election.admin import members_json  # noqa: PLC0415 (members only)
    from raft_election.clusterfile import load_cluster_file  # noqa: PLC0415
    from raft_election.lock import DistributedLock  # noqa: PLC0415
    from raft_election.member import EventReporter, make_transport, report_status  # noqa: PLC0415
    from raft_election.node import RaftNode  # noqa: PLC0415
    from raft_election.storage import FileStorage  # noqa: PLC0415

    args = _worker_parser().parse_args(argv)
    cluster = load_cluster_file(args.cluster)
    config = cluster.config_for(args.id, join=args.join)
    reporter = EventReporter(args.id, stream, json_lines=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)  # for every thread started from here on
    node = RaftNode(config, make_transport(cluster.transport), FileStorage(args.data_dir),
                    observer=reporter.core_event, admin=args.admin or cluster.admin.get(args.id))
    lock = DistributedLock(node)
    reporter.hold()  # no event line before "started" (see EventReporter.hold)
    node.start()
    status = node.status()
    reporter.report_first("started", term=status.term, leader=None, pid=os.getpid(),
                          address=config.peers[args.id], transport=cluster.transport,
                          voted_for=status.voted_for, admin=node.admin_address,
                          members=members_json(status.members), voter=status.voter, join=args.join)
    worker = threading.Thread(target=_hold_and_write, args=(node, lock, reporter, args.fenced, args.interval),
                              name=f"lock-worker-{args.id}", daemon=True)
    worker.start()
    try:
        while signal.sigwait(_WORKER_SIGNALS) == signal.SIGUSR1:
            report_status(reporter, node)
        return 0
    finally:
        node.stop()  # wakes the worker out of acquire() with RaftElectionError
        worker.join(10)
        status = node.status()
        reporter.report("stopped", term=status.term, leader=None, counters=dict(status.counters))


def _hold_and_write(node: RaftNode, lock: DistributedLock, reporter: EventReporter, fenced: str,
                    interval: float) -> None:
    """Acquire the lock, write the token to ``fenced`` while the lease holds, again after each lapse."""
    from raft_election.errors import RaftElectionError  # noqa: PLC0415
    from raft_election.lock import LockError  # noqa: PLC0415

    while True:
        if lock.token is None:
            try:
                token = lock.acquire()
            except LockError:
                continue  # a lease gap ended between the check and acquire(): held again
            except RaftElectionError:
                return  # the node stopped
            reporter.report("acquired", term=token, leader=node.node_id, token=token)
        leadership = lock.leadership()
        if leadership is None:
            continue
        token = leadership.term
        # The pattern of raft_election.leadership: check the lease, then act with the token.
        while leadership.valid():
            accepted = fenced_write(fenced, token, node.node_id)
            reporter.report("write", term=token, leader=node.node_id, token=token, accepted=accepted)
            leadership.lost.wait(interval)
        reporter.report("lock_lapsed", term=token, leader=None, token=token, lost=lock.lost.is_set())


if __name__ == "__main__":
    sys.exit(run_lock_worker())
