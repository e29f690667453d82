"""``raft-election lock -- COMMAND`` end to end: real processes over UDP on 127.0.0.1.

Two always-on voters (``run --voter-only``) and two lock clients (members 3 and 4) that come and go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Callable

import pytest

from raft_election.lockcmd import EXIT_LOST, EXIT_TIMEOUT
from raft_election.processes import MemberProcesses, free_ports, write_cluster_file

PATIENCE = 60.0

#: A command that appends "start <token> <monotonic>" and "end <token> <monotonic>" around a sleep.
RECORD = ("import os, sys, time\n"
          "log = open(sys.argv[1], 'a')\n"
          "token = os.environ['RAFT_FENCING_TOKEN']\n"
          "log.write(f'start {token} {time.monotonic()}\\n'); log.flush()\n"
          "time.sleep(float(sys.argv[2]))\n"
          "log.write(f'end {token} {time.monotonic()}\\n'); log.flush()\n")


@pytest.fixture
def lock_cluster(tmp_path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    ports = free_ports(4)
    members = {i: f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
    path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport="udp", cluster="lockcmd")
    voters = MemberProcesses(path, str(tmp_path), [1, 2], run_args=["--voter-only"])
    started: list[subprocess.Popen[str]] = []

    def lock(node_id: int, *command: str, timeout: float | None = None) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "raft_election", "lock", "--cluster", path, "--id", str(node_id),
                "--data-dir", str(tmp_path / f"data-{node_id}"), "--grace", "1"]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        process = subprocess.Popen([*args, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        started.append(process)
        return process

    try:
        voters.start_all()
        for node_id in (1, 2):
            voters.wait_for(lambda e, i=node_id: e.node == i and e.event == "started", PATIENCE)
        yield lock
    finally:
        for process in started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.communicate(timeout=30)
        voters.close()


def _intervals(log: str) -> list[tuple[float, float, int]]:
    starts: dict[int, float] = {}
    result = []
    with open(log) as file:
        for line in file:
            kind, token, at = line.split()
            if kind == "start":
                starts[int(token)] = float(at)
            else:
                result.append((starts.pop(int(token)), float(at), int(token)))
    return sorted(result)


def test_two_instances_never_run_their_commands_at_the_same_time(lock_cluster, tmp_path):
    log = str(tmp_path / "runs.log")
    for _ in range(3):
        first = lock_cluster(3, sys.executable, "-c", RECORD, log, "0.3")
        second = lock_cluster(4, sys.executable, "-c", RECORD, log, "0.3")
        assert first.wait(PATIENCE) == 0 and second.wait(PATIENCE) == 0, (first.stderr, second.stderr)
    runs = _intervals(log)
    assert len(runs) == 6
    for (_, e1, t1), (s2, _, t2) in zip(runs, runs[1:]):
        assert e1 <= s2, f"commands with tokens {t1} and {t2} overlapped"
        assert t2 > t1, "fencing tokens must increase from one holder to the next"


def test_the_exit_status_is_the_commands_and_the_timeout_has_its_own(lock_cluster):
    assert lock_cluster(3, "sh", "-c", "exit 7").wait(PATIENCE) == 7
    holder = lock_cluster(3, "sleep", "30")
    waiting = lock_cluster(4, "true", timeout=1.0)
    assert waiting.wait(PATIENCE) == EXIT_TIMEOUT
    assert "not acquired within 1.0 s" in waiting.communicate()[1]
    holder.send_signal(signal.SIGTERM)  # forwarded: sleep dies of SIGTERM
    assert holder.wait(PATIENCE) == 128 + signal.SIGTERM


def test_losing_the_lock_terminates_the_command(lock_cluster, tmp_path):
    log = str(tmp_path / "runs.log")
    holder = lock_cluster(3, sys.executable, "-c", RECORD, log, "30")
    while not _contains(log, "start"):
        assert holder.poll() is None, holder.communicate()
    holder.send_signal(signal.SIGSTOP)  # past its lease: the other client acquires meanwhile
    try:
        successor = lock_cluster(4, sys.executable, "-c", RECORD, log, "0.1")
        assert successor.wait(PATIENCE) == 0
    finally:
        holder.send_signal(signal.SIGCONT)
    assert holder.wait(PATIENCE) == EXIT_LOST
    assert "the lock was lost" in holder.communicate()[1]
    with open(log) as file:
        lines = file.read().split("\n")
    first_token = lines[0].split()[1]
    assert not any(line.startswith(f"end {first_token} ") for line in lines), "the old command finished"


def _contains(path: str, text: str) -> bool:
    if not os.path.exists(path):
        return False
    with open(path) as file:
        return text in file.read()
