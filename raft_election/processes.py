"""Cluster members as real OS processes, with their event streams: for the demo, tests and benchmarks.

:class:`MemberProcesses` starts members with ``python -m raft_election run --json``, reads every member's
JSON event lines on a thread per process, and lets the caller kill (SIGKILL), pause (SIGSTOP), resume
(SIGCONT), stop (SIGTERM) and restart members, ask for status snapshots (SIGUSR1) and wait for events.
It only ever signals processes it started, by PID, and :meth:`MemberProcesses.close` ends all of them.

Times in events are ``time.monotonic()`` of the member processes, which on one machine is one clock
(CLOCK_MONOTONIC), so they compare with each other and with the caller's ``time.monotonic()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, Optional

import attrs

__all__ = ["EventLog", "MemberEvent", "MemberProcesses", "free_ports", "member_event", "write_cluster_file"]


def free_ports(count: int, *, kind: str = "udp", host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago (``kind``: ``udp`` or ``tcp``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
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
                       **settings: Any) -> str:
    """Write a JSON cluster file for ``members`` (id -> address) and return its path."""
    document: dict[str, Any] = {"transport": transport, "members": {str(k): v for k, v in members.items()}}
    for key, value in settings.items():
        document[key] = list(value) if isinstance(value, tuple) else value
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    return path


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


class _Member:
    def __init__(self, node_id: int, process: subprocess.Popen[str], log: IO[str]) -> None:
        self.node_id = node_id
        self.process = process
        self.log = log
        self.reader: Optional[threading.Thread] = None
        self.paused = False


class MemberProcesses:
    """Start, signal and watch member processes of one cluster file.

    Args:
        cluster_file: the cluster file every member reads.
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
    """

    def __init__(self, cluster_file: str, workdir: str, members: Iterable[int], *,
                 python: str = sys.executable, extra_args: Iterable[str] = (),
                 env: Optional[Mapping[str, str]] = None,
                 command_prefix: Optional[Callable[[int], list[str]]] = None,
                 run_args: Iterable[str] = (),
                 member_args: Optional[Callable[[int], list[str]]] = None,
                 command: Optional[Callable[[int], list[str]]] = None) -> None:
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
        self._members: dict[int, _Member] = {}
        self._log = EventLog()
        self.garbage: list[tuple[int, str]] = []
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def data_dir(self, node_id: int) -> str:
        """The data directory member ``node_id`` keeps its term and vote in."""
        return os.path.join(self.workdir, f"data-{node_id}")

    def start(self, node_id: int) -> int:
        """Start member ``node_id`` (again); return its PID."""
        old = self._members.get(node_id)
        if old is not None and old.process.poll() is None:
            raise RuntimeError(f"member {node_id} is still running (pid {old.process.pid})")
        log = open(os.path.join(self.workdir, f"member-{node_id}.log"), "a", encoding="utf-8")  # noqa: SIM115
        if self._command is not None:
            command = self._command(node_id)
        else:
            command = [self._python, "-m", "raft_election", *self._extra, "run", "--cluster",
                       self.cluster_file, "--id", str(node_id), "--data-dir", self.data_dir(node_id),
                       "--json", *self._run_args,
                       *(self._member_args(node_id) if self._member_args is not None else ())]
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
        """SIGKILL member ``node_id`` and reap it; return when the signal was sent (monotonic)."""
        at = self.signal(node_id, signal.SIGKILL)
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

    def status(self, node_id: int, timeout: float = 30.0) -> Mapping[str, Any]:
        """Ask member ``node_id`` for a status snapshot (SIGUSR1) and return its record."""
        since = self.mark()
        self.signal(node_id, signal.SIGUSR1)
        event = self.wait_for(lambda e: e.node == node_id and e.event == "status", timeout, since)
        return event.record
