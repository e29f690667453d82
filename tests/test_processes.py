"""Members as real OS processes (``raft-election run --json``) on 127.0.0.1, over UDP and over ZeroMQ.

SIGKILL, restart with the data directory, SIGSTOP/SIGCONT of the leader, garbage on the live sockets,
authentication and cluster separation, and the run command's configuration errors.  Every process is
started by the test's fixture and ended by PID in its finalizer, also when the test fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

import pytest

from raft_election.codec import Codec
from raft_election.garbage import flood, garbage_messages
from raft_election.invariants import (
    LeaseInterval,
    SafetyChecker,
    lease_order,
    lease_overlaps,
    replay_member_events,
)
from raft_election.processes import (
    MemberEvent,
    MemberProcesses,
    ephemeral_port_range,
    free_ports,
    member_follows,
    write_cluster_file,
)

TRANSPORTS = ["udp", "zmq"]
TIMEOUT = (0.150, 0.300)
#: Waits that should end in well under a second; only there so a broken build fails instead of hanging.
PATIENCE = 30.0
SECRET = "a test secret that is long enough"


class Cluster:
    """A MemberProcesses with the test's bookkeeping: kill times, to close killed leaders' intervals."""

    def __init__(self, processes: MemberProcesses, members: dict[int, str], transport: str) -> None:
        self.processes = processes
        self.members = members
        self.transport = transport
        self.killed_at: dict[int, list[float]] = {}

    def leader_elected(self, since: int = 0, exclude: tuple[int, ...] = ()) -> MemberEvent:
        return self.processes.wait_for(lambda e: e.event == "became_leader" and e.node not in exclude,
                                       PATIENCE, since)

    def kill(self, node_id: int) -> float:
        at = self.processes.kill(node_id)
        self.killed_at.setdefault(node_id, []).append(at)
        return at

    def check_no_overlap(self) -> None:
        """No two members believed they held a lease at one instant (from their own event timestamps).

        With the other rules of :mod:`raft_election.invariants`: one leader per term, one vote per term.  A
        killed leader's belief ended with its process; one still leading has an open interval.
        """
        safety = replay_member_events(self.processes.events, kills=self.killed_at)
        check_safe(safety)
        terms = [lead.term for lead in safety.intervals() if not lead.resumed]  # after a gap: the same term
        assert terms == sorted(terms) and len(set(terms)) == len(terms), f"terms not increasing: {terms}"


@pytest.fixture
def cluster(tmp_path) -> Iterator[Callable[..., Cluster]]:
    made: list[MemberProcesses] = []

    def make(transport: str, size: int, *, start: bool = True, **settings: Any) -> Cluster:
        ports = free_ports(size, kind="udp" if transport == "udp" else "tcp")
        members = {i: f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
        settings.setdefault("election_timeout", TIMEOUT)
        settings.setdefault("cluster", "proc-test")
        path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport=transport, **settings)
        processes = MemberProcesses(path, str(tmp_path), members)
        made.append(processes)
        if start:
            processes.start_all()
        return Cluster(processes, members, transport)

    yield make
    for processes in made:
        processes.close()


def check_safe(safety: SafetyChecker, intervals: Optional[Iterable[LeaseInterval]] = None) -> None:
    """Nothing ``safety`` was fed broke a guarantee, and no two of ``intervals`` (default: all of its lease
    intervals, an open one lasting for ever) overlap."""
    chosen = list(safety.intervals() if intervals is None else intervals)
    findings = [*safety.findings, *lease_overlaps(chosen), *lease_order(chosen)]
    assert not findings, "\n".join(finding.message for finding in findings)


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


# ---------------------------------------------------------------------------- elections and crashes


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_three_members_elect_and_replace_a_killed_leader(cluster, transport):
    c = cluster(transport, 3)
    first = c.leader_elected()
    since = c.processes.mark()
    c.kill(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term > first.term
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_five_members_kill_restart_pause_and_resume_the_leader(cluster, transport):
    c = cluster(transport, 5)
    p = c.processes
    first = c.leader_elected()

    # SIGKILL of the leader: one new leader.
    since = p.mark()
    c.kill(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term > first.term

    # Restart of the killed member with its data dir: it rejoins as a follower, without raising the term.
    since = p.mark()
    p.start(first.node)
    p.wait_for(member_follows(first.node, second.node), PATIENCE, since)
    status = p.status(second.node)
    assert status["is_leader"] and status["term"] == second.term
    rejoined = p.status(first.node)
    assert rejoined["role"] == "follower" and rejoined["term"] == second.term
    assert rejoined["counters"].get("elections_started", 0) == 0  # pre-vote kept it from campaigning

    # SIGSTOP of the leader for 3 x election timeout: the others elect a new leader.
    since = p.mark()
    paused_at = p.pause(second.node)
    third = c.leader_elected(since, exclude=(second.node,))
    assert third.term > second.term and third.monotonic > paused_at
    time_left = paused_at + 3 * TIMEOUT[1] - time.monotonic()
    if time_left > 0:
        time.sleep(time_left)  # the fault schedule itself (stopped for 3 x election timeout), not a sync

    # SIGCONT: the old leader reports that it lost leadership, and no held intervals overlapped.
    since = p.mark()
    p.resume(second.node)
    lost = p.wait_for(lambda e: e.node == second.node and e.event == "lost_leadership", PATIENCE, since)
    assert lost.record["lease_end"] <= third.monotonic
    p.wait_for(member_follows(second.node, third.node), PATIENCE, since)
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_stops_a_leader_gracefully_with_a_handover(cluster, transport):
    c = cluster(transport, 3)
    first = c.leader_elected()
    # Wait until both followers answered a heartbeat: they told the leader they stand for election.
    while len(c.processes.status(first.node)["followers"]) < 2:
        pass  # each status() is a signal round trip
    since = c.processes.mark()
    assert c.processes.terminate(first.node) == 0
    stopped = c.processes.wait_for(lambda e: e.node == first.node and e.event == "stopped", PATIENCE, since)
    assert stopped.record["counters"]["transfers"] == 1
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term == first.term + 1
    c.check_no_overlap()


# ---------------------------------------------------------------------------- fast failover (issue 7)

#: What each transport's evidence of a dead process is.
EVIDENCE_KIND = {"udp": "port_unreachable", "zmq": "connection_refused"}


def evidence_about(c: Cluster, node_id: int, since: int) -> list[MemberEvent]:
    return [e for e in c.processes.events[since:] if e.event == "evidence" and e.record["peer"] == node_id]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_killed_leader_is_replaced_through_the_fast_path(cluster, transport):
    """The kernel refuses the dead process's port: the followers see it and elect without a timeout."""
    c = cluster(transport, 5)
    first = c.leader_elected()
    since = c.processes.mark()
    c.kill(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term > first.term and second.record["fast"] is True
    evidence = evidence_about(c, first.node, since)
    assert evidence and {e.record["kind"] for e in evidence} == {EVIDENCE_KIND[transport]}
    assert c.processes.status(second.node)["counters"]["fast_elections_won"] == 1
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_paused_leader_gives_no_evidence_and_never_overlaps(cluster, transport):
    """SIGSTOP keeps the sockets open: no evidence, the timeout path, and no two lease holders."""
    c = cluster(transport, 5)
    p = c.processes
    first = c.leader_elected()
    since = p.mark()
    p.pause(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.record["fast"] is False
    assert evidence_about(c, first.node, since) == []
    assert sum(p.status(n)["counters"].get("probes_requested", 0) for n in c.members if n != first.node) > 0
    p.resume(first.node)
    p.wait_for(member_follows(first.node, second.node), PATIENCE, since)
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_leader_restarted_on_its_port_at_once_confuses_nobody(cluster, transport):
    """Evidence about the dead process may still be in flight when its successor binds the same port."""
    c = cluster(transport, 5)
    p = c.processes
    first = c.leader_elected()
    since = p.mark()
    c.kill(first.node)
    p.start(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term > first.term
    for node_id in c.members:
        if node_id != second.node:
            p.wait_for(member_follows(node_id, second.node), PATIENCE, since)
    assert p.status(first.node)["role"] == "follower"
    c.check_no_overlap()


# ---------------------------------------------------------------------------- bad input on live sockets


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_garbage_flood_at_the_leader_changes_nothing_and_is_counted(cluster, transport):
    c = cluster(transport, 3, secret=SECRET)
    leader = c.leader_elected()
    before = c.processes.status(leader.node)
    since = c.processes.mark()
    codec = Codec("proc-test", SECRET.encode())
    count = 5000
    host, port = _address(c.members[leader.node])
    sent = flood(transport, host, port, garbage_messages(count, codec, leader.node, seed=1))
    # Wait until the member's counters show the flood was read (each status() is a signal round trip).
    deadline = time.monotonic() + PATIENCE
    while True:
        status = c.processes.status(leader.node)
        rejected = sum(v for k, v in status["counters"].items() if k.startswith("rejected_"))
        before_rejected = sum(v for k, v in before["counters"].items() if k.startswith("rejected_"))
        if rejected - before_rejected >= sent * 0.9 or time.monotonic() > deadline:
            break
    assert rejected - before_rejected >= sent * 0.9, (sent, status["counters"])
    assert status["is_leader"] and status["term"] == leader.term
    assert c.processes.alive(leader.node)
    assert not [e for e in c.processes.events[since:] if e.event in ("became_leader", "lost_leadership")]


# ---------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("intruder", ["wrong_secret", "other_cluster"])
def test_a_member_with_the_wrong_secret_or_cluster_cannot_get_votes(cluster, tmp_path, transport, intruder):
    c = cluster(transport, 4, start=False, secret=SECRET)
    for node_id in (1, 2, 3):
        c.processes.start(node_id)
    leader = c.leader_elected()
    settings: dict[str, Any] = {"election_timeout": TIMEOUT, "cluster": "proc-test", "secret": SECRET}
    if intruder == "wrong_secret":
        settings["secret"] = "quite another secret, also long"
    else:
        settings["cluster"] = "another-cluster"
    bad_file = write_cluster_file(str(tmp_path / "intruder.json"), c.members, transport=transport, **settings)
    intruder_processes = MemberProcesses(bad_file, str(tmp_path / "intruder"), [4])
    os.makedirs(intruder_processes.workdir)
    try:
        intruder_processes.start(4)
        intruder_processes.wait_for(lambda e: e.event == "started", PATIENCE)
        deadline = time.monotonic() + PATIENCE
        while intruder_processes.status(4)["counters"].get("pre_votes_started", 0) < 3:
            assert time.monotonic() < deadline, "the intruder never campaigned"
        status = c.processes.status(leader.node)
        reason = "rejected_bad_mac" if intruder == "wrong_secret" else "rejected_wrong_cluster"
        assert status["counters"].get(reason, 0) > 0, status["counters"]
        assert status["is_leader"] and status["term"] == leader.term
        intruder_status = intruder_processes.status(4)
        assert intruder_status["term"] == 0 and not intruder_status["is_leader"]
    finally:
        intruder_processes.close()


# ---------------------------------------------------------------------------- configuration errors


def _run_member(*args: str, cwd: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raft_election", "run", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd)


def _write(path: Any, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("document", "node_id", "expected"), [
    ('{"members": {"1": "127.0.0.1:1", "2": "127.0.0.1:2"}}', "3", "id: 3 is not a member"),
    ('{"members": {"1": "127.0.0.1:1", "2": "127.0.0.1:1"}}', "1", "members: address"),
    ('{"transport": "carrier-pigeon", "members": {"1": "127.0.0.1:1"}}', "1", "transport"),
    ('{"secret_file": "missing.secret", "members": {"1": "127.0.0.1:1"}}', "1", "secret_file"),
    ('{"members": {"1": "127.0.0.1:1"}, "heartbeat_interval": 1}', "1", "heartbeat_interval"),
    ('{"members": ', "1", "path"),
])
def test_configuration_errors_give_one_clear_line_and_a_non_zero_exit(tmp_path, document, node_id, expected):
    path = _write(tmp_path / "cluster.json", document)
    result = _run_member("--cluster", path, "--id", node_id, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("raft-election run: ") and expected in lines[0]
    assert not result.stdout


def test_a_missing_cluster_file_gives_one_clear_line(tmp_path):
    result = _run_member("--cluster", str(tmp_path / "nowhere.toml"), "--id", "1")
    assert result.returncode == 2
    assert "nowhere.toml" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_address_in_use_gives_one_clear_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        path = write_cluster_file(str(tmp_path / "cluster.json"), {1: f"127.0.0.1:{port}"}, transport="udp")
        result = _run_member("--cluster", path, "--id", "1", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_free_ports_are_distinct_free_and_below_the_range_outgoing_connections_use(kind: str) -> None:
    """A port the kernel may hand to an outgoing connection (a peer reconnecting to a member that is not
    up yet, a death probe) could be taken before its member binds it: free_ports never picks one."""
    low, _ = ephemeral_port_range()
    ports = free_ports(20, kind=kind)
    assert len(set(ports)) == 20
    assert all(1024 <= port < low for port in ports)
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    for port in ports:
        with socket.socket(socket.AF_INET, sock_type) as sock:
            sock.bind(("127.0.0.1", port))
