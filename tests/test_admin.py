"""The admin channel (raft_election.admin): answers, authentication, and bad requests that change nothing.

Threaded members over the in-memory network, each answering admin requests on a loopback TCP port of its
own (port 0: the kernel picks one).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from raft_election import RaftNode
from raft_election.admin import MAX_REQUEST_SIZE, AdminError, AdminServer, _mac, query
from raft_election.errors import ConfigError
from raft_election.testing import ThreadedCluster

SECRET = b"admin-test-secret-0123456789"


@pytest.fixture
def cluster(request) -> Iterator[ThreadedCluster]:
    secret = getattr(request, "param", None)
    c = ThreadedCluster(3, secret=secret)
    for node in c.peers:
        c.start(node, admin="127.0.0.1:0", value=f"app-{node}")
    yield c
    c.close()


def raw(address: str, data: bytes) -> dict[str, Any]:
    """Send ``data`` as is and return the JSON answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return json.loads(answer)


def snapshot(node: RaftNode) -> tuple[Any, ...]:
    status = node.status()
    return (status.role, status.term, status.leader_id, status.voted_for, node.leader_value,
            {k: v for k, v in status.counters.items() if k.startswith(("votes", "elections", "became"))})


def test_a_member_reports_its_status_with_its_configuration_and_the_leaders_value(cluster):
    leader = cluster.wait_for_stable_leader()
    cluster.wait_for(lambda: all(n.leader_value == f"app-{leader}".encode() for n in cluster.nodes.values()),
                     what="the leader's value everywhere")
    follower = next(node for node in cluster.peers if node != leader)
    record = query(cluster.nodes[follower].admin_address)
    assert record["node"] == follower and record["role"] == "follower" and record["leader"] == leader
    assert record["term"] == cluster.nodes[follower].term and record["members"] == {
        str(node): address for node, address in cluster.peers.items()}
    assert record["value"] == f"app-{follower}" and record["leader_value"] == f"app-{leader}"
    assert set(record["last_contact"]) == {str(node) for node in cluster.peers if node != follower}
    assert record["last_contact"][str(leader)] is not None
    assert record["counters"]["admin_requests"] == 1
    assert record["groups_hosted"] == 0 and record["groups_leading"] == 0
    leading = query(cluster.nodes[leader].admin_address)
    assert leading["is_leader"] and leading["lease_remaining"] > 0 and leading["role"] == "leader"
    assert leading["groups_leading"] == 0  # named groups only: the default group it leads is not counted


@pytest.mark.parametrize("cluster", [SECRET], indirect=True)
def test_with_a_secret_only_authenticated_fresh_requests_are_answered(cluster):
    leader = cluster.wait_for_stable_leader()
    node = cluster.nodes[leader]
    before = snapshot(node)
    assert query(node.admin_address, secret=SECRET)["node"] == leader
    with pytest.raises(AdminError, match="bad_mac"):
        query(node.admin_address)
    with pytest.raises(AdminError, match="bad_mac"):
        query(node.admin_address, secret=b"another-secret-of-enough-bytes")
    request = {"op": "status", "time": time.time(), "nonce": "ab" * 16}
    request["mac"] = _mac(SECRET, request)
    assert raw(node.admin_address, json.dumps(request).encode() + b"\n")["ok"]
    replayed = raw(node.admin_address, json.dumps(request).encode() + b"\n")
    assert (replayed["ok"], replayed["error"]) == (False, "replayed")
    old = {"op": "status", "time": time.time() - 3600, "nonce": "cd" * 16}
    old["mac"] = _mac(SECRET, old)
    assert raw(node.admin_address, json.dumps(old).encode() + b"\n")["error"] == "stale"
    tampered = dict(request, nonce="ef" * 16)
    assert raw(node.admin_address, json.dumps(tampered).encode() + b"\n")["error"] == "bad_mac"
    assert snapshot(node) == before
    counters = node.status().counters  # the node's own; the channel counts in its answers
    assert query(node.admin_address, secret=SECRET)["counters"]["admin_rejected_bad_mac"] == 3
    assert "admin_rejected_bad_mac" not in counters


@pytest.mark.parametrize(("data", "reason"), [
    (b"not json\n", "not_json"),
    (b"[1, 2, 3]\n", "not_an_object"),
    (b'{"op": "shutdown", "time": 1, "nonce": "0123456789abcdef"}\n', "unknown_op"),
    (b'{"op": "status", "time": "now", "nonce": "0123456789abcdef"}\n', "bad_field"),
    (b'{"op": "status", "time": 1e400, "nonce": "0123456789abcdef"}\n', "bad_field"),
    (b'{"op": "status", "time": 0, "nonce": "short"}\n', "bad_field"),
    (b'{"op": "status", "time": 0, "nonce": "0123456789abcdef"}\n', "stale"),
    (b"\xff\xfe garbage \x00\n", "not_json"),
    (b"{" + b" " * MAX_REQUEST_SIZE + b"}\n", "unreadable"),
])
def test_malformed_requests_get_an_error_answer_and_change_nothing(cluster, data, reason):
    leader = cluster.wait_for_stable_leader()
    node = cluster.nodes[leader]
    before = snapshot(node)
    answer = raw(node.admin_address, data)
    assert (answer["ok"], answer["error"]) == (False, reason)
    assert snapshot(node) == before
    assert query(node.admin_address)["counters"][f"admin_rejected_{reason}"] == 1  # and it still answers


def test_a_client_that_never_finishes_does_not_block_the_channel_for_long(cluster):
    leader = cluster.wait_for_stable_leader()
    host, port = cluster.nodes[leader].admin_address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as idle:
        idle.sendall(b'{"op": ')  # and then nothing: the server gives up after its request timeout
        assert query(cluster.nodes[leader].admin_address, timeout=10)["node"] == leader


def test_without_a_secret_the_channel_binds_to_loopback_only_unless_allowed(cluster):
    node = cluster.nodes[1]
    with pytest.raises(ConfigError, match=r"admin: 0\.0\.0\.0:0 is not a loopback address"):
        AdminServer(node, "0.0.0.0:0")
    with pytest.raises(ConfigError, match=r"admin: 'localhost' is not an address of the form host:port"):
        AdminServer(node, "localhost")
    AdminServer(node, "0.0.0.0:0", allow_remote=True)  # told otherwise: accepted (not started)
    AdminServer(node, "localhost:0")  # a name that resolves to loopback
    with pytest.raises(ConfigError, match="not a loopback address"):
        RaftNode(cluster.config(1), cluster.network, admin="0.0.0.0:7001")  # type: ignore[arg-type]


def test_a_member_that_closes_without_answering_is_reported_unreachable_not_as_a_bad_answer() -> None:
    """A member that dies while it works on a request closes the connection with nothing written."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def close_after_the_request() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(MAX_REQUEST_SIZE)

        server = threading.Thread(target=close_after_the_request)
        server.start()
        with pytest.raises(AdminError, match="closed the connection without answering") as failed:
            query(f"127.0.0.1:{port}", timeout=5.0)
        server.join(5.0)
    assert failed.value.kind == "unreachable"
