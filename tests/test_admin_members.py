"""Membership operations of the admin channel (raft_election.admin): ``members``, ``add_member`` and
``remove_member`` against threaded members over the in-memory network, each answering on a loopback port.

A new member joins as the issue says (thesis §4.2.1): it runs with ``RaftConfig(join=True)`` and the current
members in its peers before the leader adds it.  Changes are validated strictly and, with a secret, only
authenticated requests change anything; a change waits in a worker thread, so the channel keeps answering.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from raft_election import RaftNode
from raft_election.admin import AdminError, query
from raft_election.config import RaftConfig
from raft_election.errors import ConfigError
from raft_election.events import Event
from raft_election.testing import ThreadedCluster
from raft_election.testing.cluster import OracleStorage

SECRET = b"admin-members-test-secret-0123456789"
OTHER_SECRET = b"another-secret-of-enough-bytes"


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ThreadedCluster]:
    secret = getattr(request, "param", None)
    c = ThreadedCluster(3, secret=secret)
    for node in c.peers:
        c.start(node, admin="127.0.0.1:0")
    yield c
    c.close()


def join(cluster: ThreadedCluster, node_id: int) -> RaftNode:
    """Start member ``node_id`` as a joining member (current members and itself in its peers); the
    cluster's close() stops it, and its events and saves go to the cluster's oracle like the others'."""

    def observe(event: Event) -> None:
        cluster.oracle.record(node_id, event)

    config = RaftConfig(node_id=node_id, peers={**cluster.peers, node_id: f"memory:{node_id}"}, join=True,
                        **cluster.settings)
    node = RaftNode(config, cluster.network.transport(node_id), OracleStorage(node_id, cluster.oracle),
                    observer=observe, admin="127.0.0.1:0")
    cluster.nodes[node_id] = node
    return node.start()


def admin(cluster: ThreadedCluster, node_id: int) -> str:
    address = cluster.nodes[node_id].admin_address
    assert address is not None
    return address


def seed_members(cluster: ThreadedCluster) -> dict[str, str]:
    return {str(node): address for node, address in cluster.peers.items()}


def unchanged(cluster: ThreadedCluster) -> bool:
    """Every member still uses the seed's member set, and no change is under way."""
    return all(dict(node.members) == dict(cluster.peers) and node.status().membership_change is None
               for node in cluster.nodes.values())


def raw(address: str, data: bytes) -> dict[str, Any]:
    """Send ``data`` as is and return the JSON answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    result: dict[str, Any] = json.loads(answer)
    return result


def test_members_answers_the_configuration_and_the_leader_and_status_carries_it_too(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    record = query(admin(cluster, follower), "members")
    configuration = cluster.nodes[follower].configuration
    assert record["node_id"] == follower and record["leader_id"] == leader
    assert record["members"] == seed_members(cluster) and record["voter"] is True
    assert record["configuration"]["index"] == configuration.index
    assert record["configuration"]["term"] == configuration.term
    assert record["configuration"]["committed"] == cluster.nodes[follower].status().configuration_committed
    assert query(admin(cluster, leader), "members")["leader_id"] == leader
    status = query(admin(cluster, follower))
    assert status["members"] == record["members"] and status["configuration"] == record["configuration"]
    assert status["voter"] is True and status["membership_change"] is None


def test_a_joining_member_is_added_and_removed_through_the_leaders_channel(cluster):
    leader = cluster.wait_for_stable_leader()
    joiner = join(cluster, 4)
    before = query(joiner.admin_address or "", "members")
    assert before["voter"] is False and "4" not in before["members"]

    add = {"id": 4, "address": "memory:4", "timeout": 10}
    added = query(admin(cluster, leader), "add_member", params=add)
    assert added["ok"] and added["members"] == {**seed_members(cluster), "4": "memory:4"}
    leading = cluster.nodes[leader]
    assert added["index"] == leading.configuration.index and leading.status().configuration_committed
    cluster.wait_for(lambda: joiner.status().voter and joiner.configuration.index == added["index"],
                     what="the new member to learn that it is one")
    again = query(admin(cluster, leader), "add_member", params=add)
    assert again["index"] == added["index"]  # a retry (after a lost answer, say) changes nothing

    removed = query(admin(cluster, leader), "remove_member", params={"id": 4, "timeout": 10})
    assert removed["members"] == seed_members(cluster) and removed["index"] > added["index"]
    assert 4 not in leading.members and leading.status().configuration_committed
    assert query(admin(cluster, leader))["counters"]["admin_changes"] == 3


def test_a_follower_answers_not_leader_naming_the_leader_and_changes_nothing(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    with pytest.raises(AdminError) as caught:
        query(admin(cluster, follower), "remove_member", params={"id": follower, "timeout": 5})
    assert caught.value.kind == "not_leader" and caught.value.leader_id == leader
    assert "not_leader" in str(caught.value)
    assert unchanged(cluster)


def test_one_change_at_a_time_and_the_channel_answers_while_a_change_waits(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    outcome: dict[str, Optional[AdminError]] = {}

    def add_a_member_that_is_not_running() -> None:
        try:
            query(admin(cluster, leader), "add_member", params={"id": 5, "address": "memory:5", "timeout": 2})
            outcome["error"] = None
        except AdminError as exc:
            outcome["error"] = exc

    waiting = threading.Thread(target=add_a_member_that_is_not_running)
    waiting.start()
    try:
        cluster.wait_for(lambda: cluster.nodes[leader].status().membership_change == "catch-up",
                         what="the leader waiting for member 5's catch-up round")
        assert query(admin(cluster, leader))["membership_change"] == "catch-up"  # status is answered
        assert query(admin(cluster, follower), "members")["leader_id"] == leader
        with pytest.raises(AdminError) as caught:
            query(admin(cluster, leader), "remove_member", params={"id": follower, "timeout": 5})
        assert caught.value.kind == "membership_change" and caught.value.leader_id == leader
    finally:
        waiting.join(30)
    error = outcome["error"]
    assert error is not None and error.kind == "timeout" and "did not answer" in (error.detail or "")
    assert unchanged(cluster)
    counters = query(admin(cluster, leader))["counters"]
    assert counters["admin_changes_refused"] == 1 and counters["admin_changes_failed_timeout"] == 1


def test_a_change_waiting_when_the_leader_stops_is_answered_not_running(cluster):
    leader = cluster.wait_for_stable_leader()
    outcome: list[AdminError] = []

    def add() -> None:
        try:
            query(admin(cluster, leader), "add_member",
                  params={"id": 5, "address": "memory:5", "timeout": 30})
        except AdminError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=add)
    waiting.start()
    cluster.wait_for(lambda: cluster.nodes[leader].status().membership_change == "catch-up",
                     what="the change under way")
    cluster.nodes[leader].stop()
    waiting.join(30)
    assert not waiting.is_alive() and [error.kind for error in outcome] == ["not_running"]


def _request(op: str, **fields: Any) -> dict[str, Any]:
    return {"op": op, "time": time.time(), "nonce": time.time_ns().to_bytes(16, "big").hex(), **fields}


@pytest.mark.parametrize(("op", "fields", "problem"), [
    ("add_member", {"id": "4", "address": "memory:4", "timeout": 5}, "id must be"),
    ("add_member", {"id": True, "address": "memory:4", "timeout": 5}, "id must be"),
    ("remove_member", {"id": 0, "timeout": 5}, "id must be"),
    ("remove_member", {"id": 2**32, "timeout": 5}, "id must be"),
    ("remove_member", {"timeout": 5}, "id must be"),
    ("add_member", {"id": 4, "address": 4, "timeout": 5}, "address must be"),
    ("add_member", {"id": 4, "address": "", "timeout": 5}, "address must be"),
    ("add_member", {"id": 4, "address": "x" * 201, "timeout": 5}, "address must be"),
    ("add_member", {"id": 4, "timeout": 5}, "address must be"),
    ("remove_member", {"id": 2, "timeout": 0}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": -1}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": 61}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": "5"}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": float("inf")}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": float("nan")}, "timeout must be"),
    ("remove_member", {"id": 2, "timeout": 5, "force": True}, "not force"),
    ("remove_member", {"id": 2, "timeout": 5, "address": "memory:2"}, "not address"),
    ("add_member", {"id": 4, "address": "memory:4", "timeout": 5, "ok": True, "result": {}},
     "not ok, result"),
])
def test_malformed_change_requests_are_refused_and_change_nothing(cluster, op, fields, problem):
    leader = cluster.wait_for_stable_leader()
    answer = raw(admin(cluster, leader), json.dumps(_request(op, **fields)).encode() + b"\n")
    assert (answer["ok"], answer["error"]) == (False, "bad_field") and problem in answer["detail"]
    assert unchanged(cluster)
    assert query(admin(cluster, leader))["counters"]["admin_rejected_bad_field"] == 1


def test_query_keeps_the_envelope_fields_for_itself():
    for name in ("op", "time", "nonce", "mac"):
        with pytest.raises(ConfigError, match=f"params: {name} cannot be given"):
            query("127.0.0.1:1", "members", params={name: 1})


@pytest.mark.parametrize("cluster", [SECRET], indirect=True)
def test_with_a_secret_only_authenticated_changes_are_made_and_refusals_are_authenticated(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    for secret in (None, OTHER_SECRET):
        with pytest.raises(AdminError) as caught:
            query(admin(cluster, leader), "remove_member", secret=secret,
                  params={"id": follower, "timeout": 5})
        assert caught.value.kind == "bad_mac" and caught.value.leader_id is None
    assert unchanged(cluster)
    with pytest.raises(AdminError) as caught:  # a follower's refusal is authenticated: its leader believed
        query(admin(cluster, follower), "remove_member", secret=SECRET, params={"id": follower, "timeout": 5})
    assert caught.value.kind == "not_leader" and caught.value.leader_id == leader
    removed = query(admin(cluster, leader), "remove_member", secret=SECRET,
                    params={"id": follower, "timeout": 10})
    assert str(follower) not in removed["members"] and follower not in cluster.nodes[leader].members


def test_a_refusal_that_is_not_authenticated_is_not_believed():
    """A forged ``not_leader`` (no MAC) must not send a client holding the secret to another member."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def forge() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(json.dumps({"ok": False, "error": "not_leader", "detail": "go to 9",
                                               "leader_id": 9}).encode() + b"\n")

        forger = threading.Thread(target=forge)
        forger.start()
        with pytest.raises(AdminError) as caught:
            query(f"127.0.0.1:{server.getsockname()[1]}", "remove_member", secret=SECRET,
                  params={"id": 2, "timeout": 1})
        forger.join(10)
    assert caught.value.kind == "bad_answer" and caught.value.leader_id is None


def test_without_a_secret_changes_are_accepted_from_this_host_only(cluster):
    """With allow_remote and no secret, anyone may read the status, but a change needs a loopback client."""
    leader = cluster.wait_for_stable_leader()
    from raft_election.admin import AdminServer  # noqa: PLC0415

    server = AdminServer(cluster.nodes[leader], "0.0.0.0:0", allow_remote=True)  # not started: asked directly
    change = _request("remove_member", id=2, timeout=5)
    refusal = server._refusal(change, ("192.0.2.7", 40000))
    assert refusal is not None and refusal[0] == "unauthenticated"
    assert server._refusal(_request("status"), ("192.0.2.7", 40001)) is None
    assert server._refusal(dict(change, nonce="ab" * 16), ("127.0.0.1", 40002)) is None
    assert server._refusal(dict(change, nonce="cd" * 16), ("::ffff:127.0.0.1", 40003, 0, 0)) is None
