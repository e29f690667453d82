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

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from raft_election.nemesis.checker import check, format_report
from raft_election.nemesis.netns import NetnsLab as Lab
from raft_election.nemesis.netns import netns_permitted
from raft_election.nemesis.runner import NemesisSettings, run_nemesis
from raft_election.processes import MemberProcesses, member_follows, write_cluster_file
from tests.test_processes import PATIENCE, TIMEOUT, Cluster

TRANSPORTS = ["udp", "zmq"]
PORT = 9400


def require_netns() -> None:
    """Skip the test with the reason when namespaces cannot be made here; under CI, fail instead."""
    reason = netns_permitted()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"network namespace tests must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def lab_cluster(tmp_path) -> Iterator[Callable[..., tuple[Lab, Cluster]]]:
    require_netns()
    labs: list[Lab] = []
    made: list[MemberProcesses] = []

    def make(transport: str, size: int, *, names: bool = False, operated: bool = False,
             **settings: Any) -> tuple[Lab, Cluster]:
        """A cluster of ``size`` members in namespaces; with ``names`` they know each other by host name,
        with ``operated`` they also answer admin requests (authenticated) and publish values, as the
        docker-compose example's members do."""
        lab = Lab(size)
        labs.append(lab)
        lab.build()
        hosts = lab.name_hosts() if names else {i: lab.address(i) for i in lab.hosts}
        members = {i: f"{hosts[i]}:{PORT}" for i in lab.hosts}
        settings.setdefault("election_timeout", TIMEOUT)
        settings.setdefault("cluster", "netns-test")
        if operated:
            settings["secret"] = "netns-test-secret-0123456789"
            settings["admin"] = {i: f"{hosts[i]}:{PORT + 100}" for i in lab.hosts}
        path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport=transport, **settings)
        processes = MemberProcesses(path, str(tmp_path), members, command_prefix=lab.prefix,
                                    member_args=(lambda i: ["--value", f"http://{hosts[i]}:8080"])
                                    if operated else None)
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
    assert lost.record["reason"] == "check_quorum"
    assert lost.record["lease_end"] <= second.monotonic
    cut_off = p.status(first.node)
    assert cut_off["term"] == first.term  # pre-vote: cut off, it never raised its term
    since = p.mark()
    lab.link(first.node, up=True)
    p.wait_for(member_follows(first.node, second.node), PATIENCE, since)
    status = p.status(second.node)
    assert status["is_leader"] and status["term"] == second.term
    c.check_no_overlap()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_one_way_cut_from_the_leader_does_not_unseat_it(lab_cluster, transport):
    lab, c = lab_cluster(transport, 3)
    p = c.processes
    leader = c.leader_elected()
    follower = next(i for i in c.members if i != leader.node)
    p.wait_for(member_follows(follower, leader.node), PATIENCE)
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
    p.wait_for(member_follows(follower, leader.node), PATIENCE, since)
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


def test_a_nemesis_run_with_real_link_cuts_between_namespaces_has_no_violation():
    """``raft-election nemesis --netns``: partitions, one-way and partial cuts as blackhole routes."""
    require_netns()
    settings = NemesisSettings(nodes=5, transport="udp", duration=20, seed=5, netns=True,
                               kinds=("partition", "one_way", "partial", "kill", "flood"))
    history = run_nemesis(settings)
    result = check(history)
    assert result.ok, format_report(history, result)
    cuts = [record for record in history.faults if record.kind in ("partition", "one_way", "partial")]
    assert cuts and all(record.detail["cuts"] for record in cuts)
    # The faults forced new elections, and the checker saw them.
    assert sum(e.event == "became_leader" for e in history.events) >= 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_members_named_by_host_name_follow_a_member_that_moves_to_a_new_address(lab_cluster, transport):
    """Cluster files may name members by host name (as a docker-compose network does): each member resolves
    the names at start and again later (UDP every few seconds, ZeroMQ on every reconnect), so a member
    replaced on a new address under the same name is reached there: it follows the leader again, and when
    the leader dies the two left, the moved one included, elect a new one."""
    lab, c = lab_cluster(transport, 3, names=True, operated=True)
    p = c.processes
    first = c.leader_elected()
    moved = next(i for i in c.members if i != first.node)
    c.kill(moved)
    lab.move(moved, 100 + moved)  # a new address for the same name (the hosts files say so now)
    since = p.mark()
    p.start(moved)
    p.wait_for(member_follows(moved, first.node), PATIENCE, since)
    since = p.mark()
    c.kill(first.node)
    second = c.leader_elected(since, exclude=(first.node,))
    other = next(i for i in c.members if i not in (first.node, second.node))
    p.wait_for(member_follows(other, second.node), PATIENCE, since)
    assert moved in (second.node, other)
    # The operator's view from inside the network: every member by name, the leader's value, healthy.
    command = [*lab.prefix(moved), sys.executable, "-m", "raft_election", "status", "--cluster",
               p.cluster_file, "--json"]
    report = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    health = json.loads(report.stdout)
    assert health["leader"] == second.node and health["supporters"] == 2
    known = {row["node"]: row["status"]["leader_value"] for row in health["members"] if row["reachable"]}
    assert known == {i: f"http://{lab.names[second.node]}:8080" for i in (second.node, other)}
    c.check_no_overlap()
