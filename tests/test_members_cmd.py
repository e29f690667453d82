"""``raft-election members`` against real member processes over UDP, run as a user runs it.

Three members (``raft-election run`` via :class:`MemberProcesses`) with admin addresses and a secret in
the cluster file.  Members 1 and 2 run ``--voter-only``, so member 3 leads, and the first admin address in
the file (member 1's) is always a follower's: the command must follow the leader it names (a redirect).  A
fourth member joins with ``run --join`` and a file that lists the current members and itself.  Member
processes are only ever signalled by PID, through the MemberProcesses that started them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from raft_election.processes import MemberEvent, MemberProcesses, free_ports, write_cluster_file

PATIENCE = 30.0
SECRET = "members-cmd-test-secret-0123456789"


@attrs.define
class Cluster:
    processes: MemberProcesses
    seed_file: str
    join_file: str
    joiner_address: str
    directory: str


def members(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raft_election", "members", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("members")
    ports = free_ports(4)
    admin_ports = free_ports(4, kind="tcp")
    addresses = {node: f"127.0.0.1:{port}" for node, port in enumerate(ports, 1)}
    admin = {node: f"127.0.0.1:{port}" for node, port in enumerate(admin_ports, 1)}
    seed = {node: addresses[node] for node in (1, 2, 3)}
    seed_file = write_cluster_file(str(directory / "cluster.json"), seed, cluster="members-cmd",
                                   secret=SECRET, admin={str(node): admin[node] for node in seed})
    join_file = write_cluster_file(str(directory / "join.json"), addresses, cluster="members-cmd",
                                   secret=SECRET, admin={"4": admin[4]})
    processes = MemberProcesses(seed_file, str(directory), seed,
                                member_args=lambda node: ["--voter-only"] if node in (1, 2) else [])
    try:
        processes.start_all()
        processes.wait_for(lambda e: e.event == "became_leader" and e.node == 3, PATIENCE)
        yield Cluster(processes, seed_file, join_file, addresses[4], str(directory))
    finally:
        processes.close()


def membership(node: int, index: int) -> Any:
    return lambda e: (e.node, e.event) == (node, "membership") and e.record["index"] == index \
        and e.record["committed"]


def test_list_add_and_remove_a_joining_member_through_the_leader(cluster):
    done = members("list", "--cluster", cluster.seed_file)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("configuration ") and "committed), from leader 3:" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"] and "(leader)" in lines[3]
    done = members("list", "--cluster", cluster.seed_file, "--json")
    listed = json.loads(done.stdout)
    assert listed["ok"] and listed["leader"] == 3
    assert listed["asked"] == [1, 3]  # member 1 named 3, asked next: not member 2
    assert set(listed["members"]) == {"1", "2", "3"}

    # The new member runs first, with --join and a file listing the current members and itself.
    joining = MemberProcesses(cluster.join_file, cluster.directory, [4], run_args=["--join"])
    try:
        since = joining.mark()
        joining.start(4)
        started = joining.wait_for(lambda e: e.event == "started", PATIENCE, since)
        assert started.record["voter"] is False and started.record["join"] is True
        assert set(started.record["members"]) == {"1", "2", "3"}

        mark = cluster.processes.mark()
        done = members("add", "4", cluster.joiner_address, "--cluster", cluster.seed_file, "--json")
        assert done.returncode == 0, done.stderr
        added = json.loads(done.stdout)
        assert added["ok"] and added["changed"] and added["leader"] == 3 and added["asked"] == [1, 3]
        assert added["members"]["4"] == cluster.joiner_address
        # Every member reports the committed entry that lists 4 as a membership event.
        for node in (1, 2, 3):
            event: MemberEvent = cluster.processes.wait_for(membership(node, added["index"]), PATIENCE, mark)
            assert event.record["members"]["4"] == cluster.joiner_address and event.record["voter"]
        event = joining.wait_for(lambda e: e.event == "membership" and e.record["voter"], PATIENCE, since)
        assert event.record["index"] == added["index"]

        done = members("add", "4", cluster.joiner_address, "--cluster", cluster.seed_file)
        assert done.returncode == 0 and "member 4 is already a member" in done.stdout, done.stderr
        done = members("list", "--cluster", cluster.seed_file)
        assert f"4  {cluster.joiner_address}  (not in {cluster.seed_file})" in done.stdout, done.stdout

        mark = cluster.processes.mark()
        done = members("remove", "4", "--cluster", cluster.seed_file)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("removed member 4: configuration ") and "members 1, 2, 3" in done.stdout
        removed_at = int(done.stdout.split("configuration ")[1].split()[0])
        event = cluster.processes.wait_for(membership(3, removed_at), PATIENCE, mark)
        assert set(event.record["members"]) == {"1", "2", "3"}
        assert joining.terminate(4) == 0
    finally:
        joining.close()
    done = members("remove", "4", "--cluster", cluster.seed_file)
    assert done.returncode == 0 and "member 4 is not a member: nothing to do" in done.stdout


def test_refusals_and_failures_exit_1_naming_the_reason_and_what_to_do(cluster, tmp_path):
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-cluster-secret-0123456789\n")
    done = members("list", "--cluster", cluster.seed_file, "--secret-file", str(wrong))
    assert done.returncode == 1 and not done.stdout
    assert "not authenticated with the cluster's secret" in done.stderr and "--secret-file" in done.stderr
    right = tmp_path / "right.secret"
    right.write_text(SECRET + "\n")
    assert members("list", "--cluster", cluster.seed_file, "--secret-file", str(right)).returncode == 0

    # A member that is not running never answers its catch-up round: nothing changes.
    port = free_ports(1)[0]
    done = members("add", "5", f"127.0.0.1:{port}", "--cluster", cluster.seed_file, "--timeout", "1",
                   "--json")
    assert done.returncode == 1
    failure = json.loads(done.stdout)
    assert failure["ok"] is False and failure["error"] == "timeout" and failure["leader"] == 3
    assert "member 5 did not answer" in done.stderr and "--join" in done.stderr
    assert "nothing was changed" in done.stderr
    listed = json.loads(members("list", "--cluster", cluster.seed_file, "--json").stdout)
    assert set(listed["members"]) == {"1", "2", "3"} and listed["configuration"]["committed"]

    # No member answers at the file's admin addresses.
    dead = write_cluster_file(str(tmp_path / "dead.json"), {1: "127.0.0.1:1", 2: "127.0.0.1:2"},
                              cluster="members-cmd", admin={"1": f"127.0.0.1:{free_ports(1, kind='tcp')[0]}"})
    done = members("list", "--cluster", dead, "--timeout", "0.3")
    assert done.returncode == 1 and "no member answered at its admin address" in done.stderr


@pytest.mark.parametrize("args", [
    ["add", "5"],  # no address
    ["add", "five", "127.0.0.1:9005"],
    ["add", "0", "127.0.0.1:9005"],
    ["remove"],
    ["rename", "5"],
    ["list"],  # no --cluster
])
def test_bad_arguments_exit_2(args):
    done = members(*args, *([] if args == ["list"] else ["--cluster", "nowhere.json"]))
    assert done.returncode == 2 and "usage: raft-election members" in done.stderr


def test_bad_values_and_a_file_without_admin_addresses_exit_2(cluster, tmp_path):
    done = members("add", "5", " 127.0.0.1:9005", "--cluster", cluster.seed_file)
    assert done.returncode == 2 and "raft-election members: address:" in done.stderr
    done = members("remove", "2", "--cluster", cluster.seed_file, "--timeout", "0")
    assert done.returncode == 2 and "timeout" in done.stderr
    plain = write_cluster_file(str(tmp_path / "plain.json"), {1: "127.0.0.1:9001"})
    done = members("list", "--cluster", plain)
    assert done.returncode == 2 and "has no [admin] table" in done.stderr
    assert os.path.exists(cluster.seed_file)


def test_help_names_the_subcommands_and_run_has_join():
    done = members("--help")
    assert done.returncode == 0 and all(action in done.stdout for action in ("list", "add", "remove"))
    assert "run --join" in done.stdout
    done = subprocess.run([sys.executable, "-m", "raft_election", "run", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert "--join" in done.stdout


# ---------------------------------------------------------------------------- the library, on threads


@pytest.fixture
def threaded() -> Iterator[Any]:
    from raft_election.testing import ThreadedCluster  # noqa: PLC0415

    c = ThreadedCluster(3)
    for node in c.peers:
        c.start(node, admin="127.0.0.1:0")
    yield c
    c.close()


def _file(threaded: Any, admin_of: tuple[int, ...]) -> Any:
    from raft_election.clusterfile import ClusterFile  # noqa: PLC0415

    return ClusterFile(path="threaded.toml", members=threaded.peers,
                       admin={node: threaded.nodes[node].admin_address for node in admin_of})


def test_a_change_that_meets_a_former_leader_follows_to_the_leader(threaded, monkeypatch):
    """Leadership may move between finding the leader and asking it: the ``not_leader`` answer names the
    new one, and the change is sent there (a repeated change is harmless: it is idempotent)."""
    from raft_election import memberscmd  # noqa: PLC0415

    leader = threaded.wait_for_stable_leader()
    follower = next(node for node in threaded.peers if node != leader)
    cluster = _file(threaded, tuple(threaded.peers))
    real = memberscmd.find_leader
    calls: list[Any] = []

    def stale_first(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        calls.append(kwargs.get("prefer"))
        if len(calls) > 1:
            return found
        return attrs.evolve(found, node_id=follower, admin=threaded.nodes[follower].admin_address)

    monkeypatch.setattr(memberscmd, "find_leader", stale_first)
    result = memberscmd.change_members(cluster, "remove", follower, timeout=10)
    assert calls == [None, leader]  # the second search asked the leader the follower named first
    assert result["changed"] and result["leader"] == leader and str(follower) not in result["members"]
    assert follower not in threaded.nodes[leader].members


def test_a_leader_without_an_admin_address_in_the_file_is_named(threaded):
    from raft_election.memberscmd import MembersCommandError, list_members  # noqa: PLC0415

    leader = threaded.wait_for_stable_leader()
    followers = tuple(node for node in threaded.peers if node != leader)
    with pytest.raises(MembersCommandError) as caught:
        list_members(_file(threaded, followers), patience=0.2)
    assert caught.value.reason == "leader_unlisted" and caught.value.leader_id == leader
    assert f"member {leader} leads, but threaded.toml has no admin address for it" in str(caught.value)
