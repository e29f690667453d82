"""``raft-election status`` on threaded members (the process test is tests/test_operate_processes.py): the
verdict's rules, the markers, --json and --watch."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from raft_election.clusterfile import ClusterFile
from raft_election.errors import ConfigError
from raft_election.statuscmd import check_cluster, render, run_status
from raft_election.testing import ThreadedCluster


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(3)
    for node in c.peers:
        c.start(node, admin="127.0.0.1:0")
    yield c
    c.close()


def file_of(cluster: ThreadedCluster, *, without: tuple[int, ...] = ()) -> ClusterFile:
    admin = {node: cluster.nodes[node].admin_address or "" for node in cluster.peers if node not in without}
    return ClusterFile(path="status-test.toml", members=cluster.peers, admin=admin)


def test_a_settled_cluster_is_healthy_and_every_row_says_so(cluster):
    leader = cluster.wait_for_stable_leader()
    health = check_cluster(file_of(cluster))
    assert health.healthy and health.leader == leader and health.supporters == 3 and health.lease_held
    assert health.term == cluster.nodes[leader].term and health.disagreeing == ()
    text = render(health)
    assert text.splitlines()[-1].startswith(f"healthy: member {leader} leads term {health.term}")
    rows = text.splitlines()[1:4]
    assert [row.split()[3] for row in rows].count("leader") == 1
    assert "groups led" in text.splitlines()[0] and all(row.groups_led is None for row in health.rows)


def test_a_member_without_an_admin_address_or_that_is_down_is_shown_unreachable(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    health = check_cluster(file_of(cluster, without=(follower,)))
    assert health.healthy and health.supporters == 2  # 2 of 3 is a majority
    assert f"unreachable: {follower}" in render(health)
    cluster.nodes[leader].stop()  # the leader's admin channel closes with it
    health = check_cluster(file_of(cluster), timeout=1)
    assert not (health.healthy and health.leader == leader)


def test_json_and_watch_print_the_verdict_and_the_exit_status_follows_it(cluster):
    cluster.wait_for_stable_leader()
    out = io.StringIO()
    assert run_status(file_of(cluster), json_output=True, stream=out) == 0
    document = json.loads(out.getvalue())
    assert document["healthy"] and len(document["members"]) == 3
    assert [member["groups_led"] for member in document["members"]] == [None] * 3  # no named groups
    out = io.StringIO()
    assert run_status(file_of(cluster), watch=0.01, rounds=3, stream=out) == 0
    assert out.getvalue().count("\x1b[H\x1b[2J") == 3  # redrawn in place each round
    for node in list(cluster.nodes.values())[:2]:
        node.stop()
    assert run_status(file_of(cluster), stream=io.StringIO(), timeout=1) == 1


def test_a_cluster_file_without_admin_addresses_is_a_config_error():
    members = {1: "127.0.0.1:9001", 2: "127.0.0.1:9002", 3: "127.0.0.1:9003"}
    with pytest.raises(ConfigError, match=r"admin: .* has no \[admin\] table"):
        check_cluster(ClusterFile(path="x.toml", members=members))
    with pytest.raises(ConfigError, match="4 has an admin address but is not a member"):
        ClusterFile(path="x.toml", members=members, admin={4: "127.0.0.1:9104"})
    with pytest.raises(ConfigError, match="member 1: 'nowhere' is not an address"):
        ClusterFile(path="x.toml", members=members, admin={1: "nowhere"})


def test_the_verdict_counts_the_current_configuration_not_the_files_member_list(cluster):
    """After a change the file is only the seed list: a member it lacks gets a row and counts toward the
    majority; a file member outside the configuration is named (thesis §4.1: the latest entry is used)."""
    from raft_election import RaftNode  # noqa: PLC0415
    from raft_election.config import RaftConfig  # noqa: PLC0415

    leader = cluster.wait_for_stable_leader()
    joiner = RaftNode(RaftConfig(node_id=4, peers={**cluster.peers, 4: "memory:4"}, join=True),
                      cluster.network.transport(4), admin="127.0.0.1:0")
    cluster.nodes[4] = joiner.start()  # the cluster's close() stops it
    health = check_cluster(file_of(cluster))
    assert health.not_members == () and health.configuration is not None
    admin = {node: cluster.nodes[node].admin_address or "" for node in (*cluster.peers, 4)}
    joining = ClusterFile(path="status-test.toml", members={**cluster.peers, 4: "memory:4"}, admin=admin)
    health = check_cluster(joining)
    assert health.healthy and health.not_members == (4,) and health.members == (1, 2, 3)
    assert "in the cluster file but not members: 4 (removed, or joining)" in render(health)
    assert "follower (not a member)" in render(health)

    index = cluster.nodes[leader].add_member(4, "memory:4", timeout=10)
    cluster.wait_for(lambda: joiner.status().voter, what="member 4 to learn it is one")
    health = check_cluster(file_of(cluster))  # the old file: members 1-3, admin addresses 1-3
    assert health.members == (1, 2, 3, 4) and health.not_in_file == (4,) and health.quorum == 3
    assert health.configuration is not None and health.configuration["index"] == index
    assert health.configuration["source"] == leader and health.configuration["committed"]
    rows = {row.node: row for row in health.rows}
    assert not rows[4].reachable and "not in status-test.toml" in (rows[4].error or "")
    assert health.healthy and health.supporters == 3
    text = render(health)
    assert f"configuration {index} (term " in text and "members 1, 2, 3, 4" in text
    assert text.splitlines()[-1].startswith(f"healthy: member {leader} leads") and "3 of 4 members" in text
    document = json.loads(_json_of(file_of(cluster)))
    assert document["not_in_file"] == [4] and document["configuration"]["members"]["4"] == "memory:4"


def _json_of(cluster_file: ClusterFile) -> str:
    out = io.StringIO()
    run_status(cluster_file, json_output=True, stream=out)
    return out.getvalue()
