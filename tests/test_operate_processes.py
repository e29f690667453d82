"""Operating a running cluster of real member processes: ``raft-election status``, Prometheus metrics and
the leader's value, through a follower's death, a failover and the loss of the majority.

Five members over UDP on loopback, each with an admin address in the cluster file (authenticated with the
cluster's secret) and ``--value http://app-N``; member 5 also serves metrics.  ``raft-election status`` is
run as a user runs it, as a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from raft_election.processes import MemberProcesses, free_ports, write_cluster_file

PATIENCE = 30.0
SECRET = "operate-test-secret-0123456789"


class Operated:
    def __init__(self, processes: MemberProcesses, cluster_file: str, metrics_port: int) -> None:
        self.processes = processes
        self.cluster_file = cluster_file
        self.metrics_port = metrics_port

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "raft_election", "status", "--cluster", self.cluster_file,
                   "--timeout", "3", *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def status_json(self) -> tuple[int, dict[str, Any]]:
        done = self.status("--json")
        return done.returncode, json.loads(done.stdout)

    def healthy_status(self) -> tuple[int, dict[str, Any]]:
        """``status --json`` once it reports a healthy cluster (a new leader's first rounds may still be
        under way when its survivors learn of it), or its last answer after the patience ran out."""
        deadline = time.monotonic() + PATIENCE
        while True:
            code, report = self.status_json()
            if code == 0 or time.monotonic() > deadline:
                return code, report

    def leader(self, since: int = 0, exclude: tuple[int, ...] = ()) -> int:
        return self.processes.wait_for(lambda e: e.event == "became_leader" and e.node not in exclude,
                                       PATIENCE, since).node

    def values_known(self, leader: int, since: int, members: list[int]) -> None:
        for node in members:
            self.processes.wait_for(
                lambda e, node=node: (e.node, e.event, e.leader) == (node, "leader_value", leader)
                and e.record["value"] == f"http://app-{leader}", PATIENCE, since)


@pytest.fixture
def operated(tmp_path) -> Iterator[Operated]:
    ports = free_ports(5)
    admin = free_ports(6, kind="tcp")
    members = {node: f"127.0.0.1:{port}" for node, port in enumerate(ports, 1)}
    path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport="udp", cluster="operate",
                              secret=SECRET, admin={node: f"127.0.0.1:{admin[node - 1]}" for node in members})
    metrics_port = admin[5]

    def member_args(node: int) -> list[str]:
        extra = ["--value", f"http://app-{node}"]
        return extra + (["--metrics", f"127.0.0.1:{metrics_port}"] if node == 5 else [])

    processes = MemberProcesses(path, str(tmp_path), members, member_args=member_args)
    try:
        processes.start_all()
        yield Operated(processes, path, metrics_port)
    finally:
        processes.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_status_metrics_and_the_leaders_value_through_a_death_and_a_failover(operated):
    p = operated.processes
    first = operated.leader()
    operated.values_known(first, 0, [n for n in p.member_ids])
    code, report = operated.healthy_status()
    assert code == 0 and report["healthy"] and report["leader"] == first and report["supporters"] == 5
    rows = {row["node"]: row for row in report["members"]}
    assert all(row["reachable"] for row in rows.values())
    assert {row["status"]["leader_value"] for row in rows.values()} == {f"http://app-{first}"}
    assert rows[first]["status"]["is_leader"] and rows[first]["status"]["lease_remaining"] > 0

    metrics = scrape(operated.metrics_port)
    assert metrics[("raft_election_term", ())] == rows[5]["status"]["term"]
    assert metrics[("raft_election_is_leader", ())] == (1.0 if first == 5 else 0.0)
    assert metrics[("raft_election_role", (("role", "leader" if first == 5 else "follower"),))] == 1.0
    # A follower hears from its leader (and voters during elections), a leader from every follower.
    peers = {labels[0][1] for name, labels in metrics if name == "raft_election_peer_last_contact_seconds"}
    assert peers == {"1", "2", "3", "4"} if first == 5 else str(first) in peers
    received = sum(value for (name, _), value in metrics.items()
                   if name == "raft_election_messages_received_total")
    assert received > 0

    # A follower dies: still healthy, and the table says which member does not answer.
    follower = next(node for node in p.member_ids if node not in (first, 5))
    p.kill(follower)
    assert operated.healthy_status()[0] == 0
    done = operated.status()
    print(done.stdout)  # the real output, for the record (pytest -s)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "address", "reachable"]
    assert [line.split()[2] for line in lines[1:6]].count("NO") == 1
    assert f"unreachable: {follower}" in lines[-1] and lines[-1].startswith("healthy")

    # The leader dies: a new one, whose value every survivor learns.
    since = p.mark()
    p.kill(first)
    second = operated.leader(since, exclude=(first,))
    survivors = [node for node in p.member_ids if node not in (first, follower)]
    operated.values_known(second, since, [node for node in survivors if node != second])
    code, report = operated.healthy_status()
    assert code == 0 and report["leader"] == second and report["supporters"] == 3
    if first != 5:  # member 5, which serves metrics, is still running: it saw both leaders
        metrics = scrape(operated.metrics_port)
        assert metrics[("raft_election_leader_changes_total", ())] >= 2
        assert metrics[("raft_election_failover_seconds_count", ())] >= 1

    # Without a majority there is no healthy cluster: exit status 1.
    for node in survivors:
        if node != 5:
            p.kill(node)
    code, report = operated.status_json()
    assert code == 1 and not report["healthy"]
    assert os.path.exists(operated.cluster_file)
