"""Three processes contend for the lock over UDP and ZeroMQ on 127.0.0.1, writing to a fenced file.

The held intervals come from each member's own lease events (``time.monotonic``, one clock for all
processes on a machine).  A holder stopped with SIGSTOP past its lease must find, on SIGCONT, that its
interval ended before the next holder's began and that the fenced file refuses its late write; after a
SIGKILL of the holder another contender acquires.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from raft_election.processes import free_ports, write_cluster_file
from tests.test_processes import check_intervals

TRANSPORTS = ["udp", "zmq"]
PATIENCE = 60.0
CONTENDER = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "lock_contender.py")


class Contenders:
    def __init__(self, tmp_path: Any, transport: str, hold: float, rounds: int) -> None:
        ports = free_ports(3, kind="udp" if transport == "udp" else "tcp")
        members = {i: f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
        self.cluster_file = write_cluster_file(str(tmp_path / "cluster.json"), members, transport=transport,
                                               cluster="contend")
        self.fenced = str(tmp_path / "fenced.txt")
        self.records: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self.logs = []
        for node_id in members:
            log = open(tmp_path / f"contender-{node_id}.log", "w")  # noqa: SIM115 (closed in close())
            self.logs.append(log)
            data_dir = str(tmp_path / f"data-{node_id}")
            process = subprocess.Popen(
                [sys.executable, CONTENDER, self.cluster_file, str(node_id), data_dir, self.fenced, str(hold),
                 str(rounds)], stdout=subprocess.PIPE, stderr=log, text=True)
            self.processes[node_id] = process
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            record = json.loads(line)
            with self.arrived:
                self.records.append(record)
                self.arrived.notify_all()

    def next(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first record (of all so far, in arrival order) that satisfies ``predicate``; waits for it."""
        deadline = time.monotonic() + PATIENCE
        with self.arrived:
            while True:
                for record in self.records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching record in {PATIENCE} s: {self.records[-10:]}"
                self.arrived.wait(remaining)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.wait(30)
        for log in self.logs:
            log.close()

    def leases(self) -> list[tuple[float, float, int, int]]:
        starts: dict[tuple[int, int], float] = {}
        result = []
        for record in self.records:
            key = (record.get("node"), record.get("term"))
            if record["event"] == "lease_start":
                starts[key] = record["at"]
            elif record["event"] == "lease_end" and key in starts:
                result.append((starts.pop(key), record["at"], key[0], key[1]))
        return sorted(result)

    def check_no_overlap(self) -> None:
        """The lock was never held twice at one instant (and each token had one holder)."""
        check_intervals(self.leases())


@pytest.fixture
def contenders(tmp_path) -> Iterator[Callable[..., Contenders]]:
    made: list[Contenders] = []

    def make(transport: str, hold: float = 0.05, rounds: int = 1000) -> Contenders:
        made.append(Contenders(tmp_path, transport, hold, rounds))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_contenders_stopped_past_the_lease_are_fenced_off(contenders, transport):
    c = contenders(transport, hold=0.3)
    holder = c.next(lambda r: r["event"] == "acquired")
    c.processes[holder["node"]].send_signal(signal.SIGSTOP)
    # Another contender takes the lock while the holder sleeps through its lease.
    successor = c.next(lambda r: r["event"] == "acquired" and r["node"] != holder["node"])
    assert successor["token"] > holder["token"]
    c.next(lambda r: r["event"] == "write" and r["token"] == successor["token"])
    c.processes[holder["node"]].send_signal(signal.SIGCONT)
    late = c.next(lambda r: r["event"] == "write" and r["token"] == holder["token"])
    assert late["accepted"] is False, "the fenced file accepted a stale holder's write"
    c.next(lambda r: r["event"] == "lease_end" and r["node"] == holder["node"]
           and r["term"] == holder["token"])
    c.check_no_overlap()
    with open(c.fenced) as fenced:
        tokens = [int(line.split()[0]) for line in fenced]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_after_the_holder_is_killed_another_contender_acquires(contenders, transport):
    c = contenders(transport, hold=0.3)
    holder = c.next(lambda r: r["event"] == "acquired")
    killed_at = time.monotonic()
    c.processes[holder["node"]].kill()
    successor = c.next(lambda r: r["event"] == "acquired" and r["node"] != holder["node"])
    assert successor["token"] > holder["token"]
    # Bounded: the lease (under 0.15 s) plus an election (at most 0.3 s, plus pre-vote and vote rounds);
    # the bound is generous so that only a real failure to fail over trips it, not a loaded machine.
    assert successor["at"] - killed_at < 5.0, successor["at"] - killed_at
    c.check_no_overlap()
