"""Real network partitions: members in their own network namespaces, joined by veth pairs and a bridge.

Topology (all in namespaces this test creates; nothing touches the host's own network): a "switch"
namespace holding a bridge, and one namespace per member whose ``eth0`` is a veth pair with the other end
on the bridge; members get addresses in a /24 that exists only inside these namespaces.  Faults are real
kernel behaviour: ``ip link set eth0 down`` cuts a member off; a blackhole route in one namespace cuts one
direction only.

Needs root (``ip netns``).  Where that is not permitted the tests skip with the reason, except under CI
(``CI=true``), where they must run and fail instead.
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from raft_election.processes import MemberProcesses, write_cluster_file
from tests.test_processes import PATIENCE, TIMEOUT, Cluster

TRANSPORTS = ["udp", "zmq"]
PORT = 9400


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _netns_permitted() -> str:
    """Empty if namespaces can be made here, else the reason they cannot."""
    probe = f"re-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return f"cannot create network namespaces here ({detail}); run as root with iproute2"
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True, timeout=30)
    return ""


class Lab:
    """Namespaces for ``size`` members and a switch; every name carries a unique tag."""

    def __init__(self, size: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.switch = f"re{tag}sw"
        self.hosts = {i: f"re{tag}h{i}" for i in range(1, size + 1)}
        self.subnet = f"10.231.{random.randint(1, 254)}"
        self.created: list[str] = []

    def address(self, node_id: int) -> str:
        return f"{self.subnet}.{node_id}"

    def build(self) -> None:
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for node_id, host in self.hosts.items():
            _ip("netns", "add", host)
            self.created.append(host)
            _ip("-n", host, "link", "set", "lo", "up")
            _ip("-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{node_id}",
                "netns", self.switch)
            _ip("-n", host, "addr", "add", f"{self.address(node_id)}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", self.switch, "link", "set", f"p{node_id}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p{node_id}", "up")

    def destroy(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)

    def link(self, node_id: int, up: bool) -> None:
        """Plug (``up``) or unplug member ``node_id``'s cable."""
        _ip("-n", self.hosts[node_id], "link", "set", "eth0", "up" if up else "down")

    def blackhole(self, src: int, dst: int, present: bool) -> None:
        """Drop everything ``src`` sends to ``dst`` (one way), or stop dropping it."""
        action = "add" if present else "del"
        _ip("-n", self.hosts[src], "route", action, "blackhole", f"{self.address(dst)}/32")

    def prefix(self, node_id: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[node_id]]


@pytest.fixture
def lab_cluster(tmp_path) -> Iterator[Callable[..., tuple[Lab, Cluster]]]:
    reason = _netns_permitted()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"network namespace tests must run in CI: {reason}")
        pytest.skip(reason)
    labs: list[Lab] = []
    made: list[MemberProcesses] = []

    def make(transport: str, size: int, **settings: Any) -> tuple[Lab, Cluster]:
        lab = Lab(size)
        labs.append(lab)
        lab.build()
        members = {i: f"{lab.address(i)}:{PORT}" for i in lab.hosts}
        settings.setdefault("election_timeout", TIMEOUT)
        settings.setdefault("cluster", "netns-test")
        path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport=transport, **settings)
        processes = MemberProcesses(path, str(tmp_path), members, command_prefix=lab.prefix)
        made.append(processes)
        processes.start_all()
        return lab, Cluster(processes, members, transport)

    try:
        yield make
    finally:
        for processes in made:
            processes.close()
        for lab in labs:
            lab.destroy()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_leader_whose_link_goes_down_is_replaced_and_rejoins_as_follower(lab_cluster, transport):
    lab, c = lab_cluster(transport, 3)
    p = c.processes
    first = c.leader_elected()
    since = p.mark()
    lab.link(first.node, up=False)
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.term > first.term
    lost = p.wait_for(lambda e: e.node == first.node and e.event == "lost_leadership", PATIENCE, since)
    assert lost.record["reason"] in ("lease_expired", "check_quorum")
    assert lost.record["lease_end"] <= second.monotonic
    cut_off = p.status(first.node)
    assert cut_off["term"] == first.term  # pre-vote: cut off, it never raised its term
    since = p.mark()
    lab.link(first.node, up=True)
    p.wait_for(lambda e: e.node == first.node and e.event == "leader_changed" and e.leader == second.node,
               PATIENCE, since)
    status = p.status(second.node)
    assert status["is_leader"] and status["term"] == second.term
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_one_way_cut_from_the_leader_does_not_unseat_it(lab_cluster, transport):
    lab, c = lab_cluster(transport, 3)
    p = c.processes
    leader = c.leader_elected()
    follower = next(i for i in c.members if i != leader.node)
    p.wait_for(lambda e: e.node == follower and e.event == "leader_changed" and e.leader == leader.node,
               PATIENCE)
    since = p.mark()
    lab.blackhole(leader.node, follower, present=True)  # the follower no longer hears the leader
    deadline_pre_votes = 3
    while p.status(follower)["counters"].get("pre_votes_started", 0) < deadline_pre_votes:
        pass  # each status() is a signal round trip; the follower's pre-votes keep being refused
    status = p.status(leader.node)
    assert status["is_leader"] and status["term"] == leader.term
    assert p.status(follower)["term"] == leader.term
    assert not [e for e in p.events[since:] if e.event == "became_leader"]
    since = p.mark()
    lab.blackhole(leader.node, follower, present=False)
    p.wait_for(lambda e: e.node == follower and e.event == "leader_changed" and e.leader == leader.node,
               PATIENCE, since)
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_one_way_cut_towards_the_leader_keeps_it_with_the_majority(lab_cluster, transport):
    lab, c = lab_cluster(transport, 3)
    p = c.processes
    leader = c.leader_elected()
    follower = next(i for i in c.members if i != leader.node)
    since = p.mark()
    lab.blackhole(follower, leader.node, present=True)  # the leader no longer hears this follower
    sent = p.status(leader.node)["counters"]["messages_sent"]
    while p.status(leader.node)["counters"]["messages_sent"] < sent + 60:
        pass  # 30 heartbeat rounds to two followers: several election timeouts
    status = p.status(leader.node)
    assert status["is_leader"] and status["term"] == leader.term
    assert not [e for e in p.events[since:] if e.event in ("became_leader", "lost_leadership")]
    lab.blackhole(follower, leader.node, present=False)
    c.check_no_overlap()
