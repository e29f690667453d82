"""Lock contenders as processes: for tests/test_lock_processes.py and benchmarks/lock_handover.py.

Run as a script (``python benchmarks/lock_contender.py CLUSTER ID DATA_DIR FENCED HOLD ROUNDS``), one
contender loops: acquire the lock, wait ``hold`` seconds holding it, write its token to the fenced file,
release.  It prints one JSON line per fact on stdout: ``acquired``, ``write`` (accepted or refused by the
fenced file), ``released``, and ``lease_start`` / ``lease_end`` (from the member's own events: a lease
begins with a win or at the end of a lease gap, and ends at a gap or with the office).

:class:`Contenders` starts three such processes on 127.0.0.1 and collects their records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Optional

from raft_election import DistributedLock, FileStorage, RaftNode, load_cluster_file
from raft_election.events import BecameLeader, DeathEvidence, Event, LeaseLost, LeaseRegained, LostLeadership
from raft_election.invariants import SafetyChecker
from raft_election.lock import LockError
from raft_election.member import make_transport
from raft_election.processes import free_ports, write_cluster_file

_OUTPUT = threading.Lock()


def emit(**record: object) -> None:
    """One JSON line; from the main thread and the node's callback thread, so under a lock."""
    line = json.dumps(record) + "\n"
    with _OUTPUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def fenced_write(path: str, token: int) -> bool:
    """The protected resource: refuses a token lower than the highest it has accepted."""
    with open(path, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        tokens = [int(line.split()[0]) for line in file if line.strip()]
        if tokens and token < max(tokens):
            return False
        file.write(f"{token} {time.monotonic()}\n")
        return True


def main() -> None:
    cluster_file, node_id, data_dir, fenced, hold, rounds = sys.argv[1:7]
    cluster = load_cluster_file(cluster_file)
    config = cluster.config_for(int(node_id))
    node = RaftNode(config, make_transport(cluster.transport), FileStorage(data_dir))
    lock = DistributedLock(node)

    def on_event(event: Event) -> None:
        if isinstance(event, BecameLeader):
            emit(event="lease_start", node=int(node_id), term=event.term, at=event.at, fast=event.fast)
        elif isinstance(event, LeaseRegained):
            emit(event="lease_start", node=int(node_id), term=event.term, at=event.at, resumed=True)
        elif isinstance(event, (LeaseLost, LostLeadership)):
            emit(event="lease_end", node=int(node_id), term=event.term, at=event.lease_end)
        elif isinstance(event, DeathEvidence):
            emit(event="evidence", node=int(node_id), peer=event.peer, at=time.monotonic())

    node.add_listener(on_event)
    with node:
        emit(event="started", node=int(node_id))
        for _ in range(int(rounds)):
            token = lock.acquire()
            emit(event="acquired", node=int(node_id), token=token, at=time.monotonic())
            time.sleep(float(hold))  # holding (a test may SIGSTOP us here)
            accepted = fenced_write(fenced, token)
            emit(event="write", node=int(node_id), token=token, accepted=accepted, at=time.monotonic())
            with contextlib.suppress(LockError):  # lost meanwhile; in a lease gap it is still ours to release
                lock.release()
            emit(event="released", node=int(node_id), token=token, at=time.monotonic())



class Contenders:
    """Three contender processes on 127.0.0.1 over ``transport``, and every record they printed.

    Each keeps its data directory and its log (stderr) in ``workdir``; they share ``workdir/fenced.txt``.
    """

    def __init__(self, transport: str, workdir: str, *, hold: float, rounds: int = 1_000_000) -> None:
        ports = free_ports(3, kind="udp" if transport == "udp" else "tcp")
        members = {i: f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
        self.cluster_file = write_cluster_file(os.path.join(workdir, "cluster.json"), members,
                                               transport=transport, cluster="contend")
        self.workdir = workdir
        self.fenced = os.path.join(workdir, "fenced.txt")
        self.hold = hold
        self.rounds = rounds
        self.records: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self._logs: list[IO[str]] = []
        for node_id in members:
            self.start(node_id)

    def start(self, node_id: int) -> None:
        """Start (or restart) contender ``node_id`` with its data directory."""
        log = open(os.path.join(self.workdir, f"contender-{node_id}.log"), "a")  # noqa: SIM115 (see close)
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.cluster_file, str(node_id),
             os.path.join(self.workdir, f"data-{node_id}"), self.fenced, str(self.hold), str(self.rounds)],
            stdout=subprocess.PIPE, stderr=log, text=True)
        self.processes[node_id] = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            record = json.loads(line)
            with self.changed:
                self.records.append(record)
                self.changed.notify_all()

    def mark(self) -> int:
        """An index for :meth:`wait`'s ``since``: only records read after this call."""
        with self.changed:
            return len(self.records)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], since: int = 0,
             timeout: float = 60.0) -> dict[str, Any]:
        """The first record from index ``since`` on (in arrival order) satisfying ``predicate``.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for record in self.records[since:]:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching contender record in {timeout} s: {self.records[-10:]}")
                self.changed.wait(remaining)

    def safety(self, kills: Optional[Mapping[int, float]] = None) -> SafetyChecker:
        """A checker fed with every lease the members reported so far and ``kills`` (id -> SIGKILL time).

        Leases come from the members' own events (``lease_start``, ``lease_end``), each contender's in the
        order it printed them.
        """
        with self.changed:
            records = list(self.records)
        safety = SafetyChecker()
        for record in records:
            if record["event"] == "lease_start" and record.get("resumed"):
                safety.lease_regained(record["node"], record["term"], record["at"])
            elif record["event"] == "lease_start":
                safety.became_leader(record["node"], record["term"], record["at"])
            elif record["event"] == "lease_end":
                safety.lost_leadership(record["node"], record["term"], record["at"])
        for node_id, at in (kills or {}).items():
            safety.killed(node_id, at)
        return safety

    def close(self) -> None:
        """End every contender (SIGCONT first, in case one is stopped) and close the logs."""
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.wait(30)
        for log in self._logs:
            log.close()

if __name__ == "__main__":
    main()
