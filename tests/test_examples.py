"""The deployment recipes in examples/ are real: the systemd unit and the compose file run commands the
command line accepts with files the library loads, and the leader-only scheduler redirects its clients to
the leader through a failover (three real processes over UDP on loopback)."""

from __future__ import annotations

import configparser
import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from raft_election import load_cluster_file
from raft_election.cli import _build_parser
from raft_election.processes import free_ports, write_cluster_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PATIENCE = 30.0


def test_the_systemd_unit_runs_a_member_with_the_command_line_it_means():
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(EXAMPLES / "systemd" / "raft-election@.service")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"].replace("%i", "3"))
    assert command[0].endswith("/raft-election")
    args = _build_parser().parse_args(command[1:])
    assert (args.command, args.id, args.json) == ("run", 3, True)
    assert args.data_dir == "/var/lib/" + service["StateDirectory"].replace("%i", "3")
    assert service["KillSignal"] == "SIGTERM"  # a graceful stop: a leader hands over first
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_compose_file_runs_three_members_of_its_cluster_file(tmp_path):
    folder = tmp_path / "compose"
    shutil.copytree(EXAMPLES / "docker-compose", folder)
    (folder / "raft.secret").write_text("0123456789abcdef" * 4 + "\n")
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    cluster = load_cluster_file(folder / "cluster.toml")
    services = compose["services"]
    assert sorted(services) == ["m1", "m2", "m3"]
    for name, service in services.items():
        args = _build_parser().parse_args(service["command"])
        assert args.command == "run" and args.cluster == "/etc/raft-election/cluster.toml"
        node = args.id
        assert cluster.members[node] == f"{name}:9001" and cluster.admin[node] == f"{name}:9101"
        assert service["hostname"] == name and args.value == f"http://{name}:8080"
        mounts = {volume.split(":")[1] for volume in service["volumes"]}
        assert {"/etc/raft-election/cluster.toml", "/etc/raft-election/raft.secret", args.data_dir} <= mounts
        assert service["stop_signal"] == "SIGTERM"
    assert cluster.secret is not None  # the admin channel listens on the network: it must be authenticated
    dockerfile = (folder / "Dockerfile").read_text()
    assert "pip install" in dockerfile and 'ENTRYPOINT ["raft-election"]' in dockerfile


class Schedulers:
    def __init__(self, tmp_path: Path) -> None:
        ports = free_ports(3)
        self.http = dict(zip((1, 2, 3), free_ports(3, kind="tcp")))
        members = {node: f"127.0.0.1:{port}" for node, port in zip((1, 2, 3), ports)}
        self.cluster = write_cluster_file(str(tmp_path / "cluster.json"), members, cluster="scheduler")
        self.tmp_path = tmp_path
        self.processes: dict[int, subprocess.Popen[str]] = {}
        for node in members:
            self.start(node)

    def start(self, node: int) -> None:
        log = open(self.tmp_path / f"scheduler-{node}.log", "a")  # noqa: SIM115 (closed with the process)
        command = [sys.executable, str(EXAMPLES / "leader_scheduler.py"), "--cluster", self.cluster,
                   "--id", str(node), "--http", f"127.0.0.1:{self.http[node]}",
                   "--data-dir", str(self.tmp_path / f"data-{node}")]
        self.processes[node] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                                env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
        log.close()
        assert json.loads(self.processes[node].stdout.readline())["ready"]  # type: ignore[union-attr]

    def get(self, node: int) -> tuple[int, Optional[str], bytes]:
        """GET / from ``node``'s HTTP server: status, Location, body (without following redirects)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http[node], timeout=5)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            return response.status, response.getheader("Location"), response.read()
        finally:
            connection.close()

    def settled(self, alive: list[int]) -> Optional[int]:
        """The leader if exactly one of ``alive`` answers 200 and every other one redirects to it."""
        answers = {node: self.get(node) for node in alive}
        leaders = [node for node, (status, _, _) in answers.items() if status == 200]
        if len(leaders) != 1:
            return None
        url = f"http://127.0.0.1:{self.http[leaders[0]]}/"
        if all(answer[:2] == (307, url) for node, answer in answers.items() if node != leaders[0]):
            return leaders[0]
        return None

    def wait_settled(self, alive: list[int]) -> int:
        deadline = time.monotonic() + PATIENCE
        while (leader := self.settled(alive)) is None:
            assert time.monotonic() < deadline, {node: self.get(node) for node in alive}
            time.sleep(0.05)  # polling HTTP answers: there is no event to wait on from outside
        return leader

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def schedulers(tmp_path) -> Iterator[Schedulers]:
    s = Schedulers(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_followers_redirect_to_the_leader_and_follow_a_failover(schedulers):
    first = schedulers.wait_settled([1, 2, 3])
    status, _, body = schedulers.get(first)
    assert status == 200 and json.loads(body)["leader"] == first
    schedulers.processes[first].send_signal(signal.SIGKILL)
    schedulers.processes[first].wait(10)
    alive = [node for node in (1, 2, 3) if node != first]
    second = schedulers.wait_settled(alive)
    state = json.loads(schedulers.get(second)[2])
    assert second != first and state["term"] > json.loads(body)["term"]
    # A graceful stop of the new leader hands over to the last member, which then answers itself.
    schedulers.processes[second].send_signal(signal.SIGTERM)
    assert schedulers.processes[second].wait(PATIENCE) == 0
    last = next(node for node in alive if node != second)
    assert schedulers.get(last)[0] in (200, 503)  # alone it cannot hold a lease for long, or at all


class ShardedWorkers:
    """Three processes of examples/sharded_worker.py over UDP on loopback, 12 shards."""

    SHARDS = 12

    def __init__(self, tmp_path: Path) -> None:
        members = {node: f"127.0.0.1:{port}" for node, port in zip((1, 2, 3), free_ports(3))}
        self.cluster = write_cluster_file(str(tmp_path / "cluster.json"), members, cluster="shards")
        self.out = tmp_path / "shards"
        self.tmp_path = tmp_path
        self.processes: dict[int, subprocess.Popen[str]] = {}
        for node in members:
            log = open(tmp_path / f"worker-{node}.log", "a")  # noqa: SIM115 (closed with the process)
            command = [sys.executable, str(EXAMPLES / "sharded_worker.py"), "--cluster", self.cluster,
                       "--id", str(node), "--shards", str(self.SHARDS), "--out", str(self.out),
                       "--step", "0.02"]
            self.processes[node] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                                    env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
            log.close()

    def writes(self) -> dict[int, list[tuple[int, int]]]:
        """Every shard's accepted writes so far: ``(token, member)``, in order."""
        found: dict[int, list[tuple[int, int]]] = {}
        for shard in range(self.SHARDS):
            path = self.out / f"shard-{shard}.log"
            if path.exists():
                found[shard] = [(int(line.split()[0]), int(line.split()[1]))
                                for line in path.read_text().splitlines() if line.strip()]
        return found

    def wait_for(self, predicate: Any, what: str) -> dict[int, list[tuple[int, int]]]:
        deadline = time.monotonic() + PATIENCE
        while not predicate(writes := self.writes()):
            assert time.monotonic() < deadline, f"{what}: {writes}"
            time.sleep(0.05)  # polling files: there is no event to wait on from outside
        return writes

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def workers(tmp_path) -> Iterator[ShardedWorkers]:
    w = ShardedWorkers(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_each_shard_has_one_worker_per_token_and_a_killed_workers_shards_move(workers):
    every = range(ShardedWorkers.SHARDS)
    writes = workers.wait_for(lambda w: all(w.get(shard) for shard in every), "every shard worked on")
    owners = {shard: writes[shard][-1][1] for shard in every}
    assert len(set(owners.values())) >= 2  # the shards spread over the members
    victim = max(set(owners.values()), key=lambda node: list(owners.values()).count(node))
    moved = [shard for shard, owner in owners.items() if owner == victim]
    workers.processes[victim].send_signal(signal.SIGKILL)
    workers.processes[victim].wait(10)
    last = {shard: writes[shard][-1][0] for shard in moved}
    writes = workers.wait_for(
        lambda w: all(w[shard][-1][0] > last[shard] and w[shard][-1][1] != victim for shard in moved),
        "the killed worker's shards taken over")
    for shard in every:
        by_token: dict[int, set[int]] = {}
        for token, member in writes[shard]:
            by_token.setdefault(token, set()).add(member)
        # One leadership of a shard is one member: a token is never shared.
        assert all(len(members) == 1 for members in by_token.values()), (shard, by_token)
        tokens = [token for token, _ in writes[shard]]
        assert tokens == sorted(tokens)  # the fenced file never accepted a stale holder
