"""Election groups between real member processes on 127.0.0.1, over UDP and over ZeroMQ.

Five members started with ``raft-election run --json --shards 40`` each host and stand in the groups
``shard-0`` .. ``shard-39``.  Once every shard has a lease holder, the member leading the most shards is
killed (SIGKILL); every shard it led must get a new lease holder among the survivors.  Then the survivors
stop (SIGTERM, so that each reports the end of every lease it held) and the whole history is judged per
shard, from the members' own ``group_leader`` and ``group_lost`` events and the kill time
(:func:`raft_election.processes.replay_group_events`): one leader per term, no two lease intervals of one
shard overlapping, and the fencing tokens (terms) of successive holders increasing.  The default group's
events are judged the same way, and ``raft-election status`` (its ``groups led`` column) sees every member
host every shard.

Also: the helpers that judge groups' events, on made-up histories; the status table's column; one sharded
member's own reports (a ``group_leader`` per shard, the ``status`` counts, a ``group_lost`` per shard when
it stops), its human-readable summary instead of a line per group, and a shard count out of range.  Every
process is started by the test's fixture (or the test) and ended by PID, also when the test fails.  No
assertion is on timing: the deadlines only keep a broken build from hanging.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest

from raft_election.clusterfile import load_cluster_file
from raft_election.events import BecameLeader, LostLeadership
from raft_election.invariants import replay_member_events
from raft_election.member import MAX_SHARDS, EventReporter
from raft_election.processes import (
    MemberEvent,
    MemberProcesses,
    free_ports,
    group_lease_findings,
    group_lease_holders,
    replay_group_events,
    write_cluster_file,
)
from raft_election.statuscmd import ClusterHealth, MemberRow, check_cluster, render, to_json
from tests.test_processes import check_safe

TRANSPORTS = ["udp", "zmq"]
TIMEOUT = (0.150, 0.300)
MEMBERS = 5
SHARDS = 40
NAMES = frozenset(f"shard-{shard}" for shard in range(SHARDS))
#: Generous: five processes start and elect 40 groups on a loaded machine; only there to fail, not hang.
PATIENCE = 60.0


@pytest.fixture
def sharded(tmp_path) -> Iterator[Callable[[str], MemberProcesses]]:
    made: list[MemberProcesses] = []

    def make(transport: str) -> MemberProcesses:
        ports = free_ports(2 * MEMBERS, kind="tcp")  # distinct: ZeroMQ and the admin channels are on TCP
        if transport == "udp":
            ports[:MEMBERS] = free_ports(MEMBERS, kind="udp")
        members = {node: f"127.0.0.1:{port}" for node, port in enumerate(ports[:MEMBERS], 1)}
        admin = {node: f"127.0.0.1:{port}" for node, port in enumerate(ports[MEMBERS:], 1)}
        path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport=transport, admin=admin,
                                  election_timeout=TIMEOUT, cluster="groups-test")
        processes = MemberProcesses(path, str(tmp_path), members, shards=SHARDS)
        made.append(processes)
        processes.start_all()
        return processes

    yield make
    for processes in made:
        processes.close()


def every_shard_held(kills: dict[int, list[float]]) -> Callable[[Sequence[MemberEvent]], bool]:
    return lambda events: set(group_lease_holders(events, kills=kills)) >= NAMES


def event(node: int, kind: str, term: int, at: float, **record: Any) -> MemberEvent:
    """A member event line as MemberProcesses reads it (for the helpers' own tests)."""
    record = {"event": kind, "node": node, "term": term, "monotonic": at, **record}
    return MemberEvent(node=node, event=kind, term=term, leader=None, monotonic=at, record=record,
                       received=at)


def won(node: int, group: str, term: int, at: float, *, regained: bool = False) -> MemberEvent:
    return event(node, "group_leader", term, at, group=group, regained=regained)


def ended(node: int, group: str, term: int, at: float, lease_end: float,
          reason: str = "lease_lost") -> MemberEvent:
    return event(node, "group_lost", term, at, group=group, lease_end=lease_end, reason=reason)


# ---------------------------------------------------------------------------- the event helpers


def test_the_helpers_judge_each_group_on_its_own_and_end_a_killed_members_leases_at_the_kill():
    events = [
        event(1, "started", 0, 0.0), event(2, "started", 0, 0.0), event(3, "started", 0, 0.0),
        won(1, "a", 1, 1.0), won(2, "b", 1, 1.0),  # two groups: one leader each, same term: fine
        ended(1, "a", 1, 2.5, lease_end=2.0), won(2, "a", 2, 2.0),  # touching: fine
        won(1, "a", 2, 2.2, regained=True),  # another member's lease of a's term 2: two leaders
        won(3, "b", 2, 3.0),  # 2's lease of b still open: an overlap, unless 2 was killed before
    ]
    assert group_lease_holders(events) == {"a": 1, "b": 3}
    findings = group_lease_findings(events)
    assert set(findings) == {"a", "b"}
    assert {finding.kind for finding in findings["a"]} == {"election_safety", "lease_overlap"}
    assert [finding.kind for finding in findings["b"]] == ["lease_overlap"]
    killed = group_lease_findings(events, kills={2: [2.9]})  # 2's leases ended at its kill
    assert set(killed) == {"a"} and group_lease_holders(events[:6], kills={2: [2.9]}) == {}
    b = replay_group_events(events, kills={2: [2.9]})["b"].intervals()
    assert [(lease.node, lease.end, lease.ended_by) for lease in b] == [(2, 2.9, "kill"), (3, None, None)]
    # Going back to a lower term after another member's higher one breaks the order of fencing tokens.
    back = [won(1, "c", 5, 1.0), ended(1, "c", 5, 1.5, lease_end=1.5, reason="transfer"),
            won(2, "c", 4, 2.0)]
    assert [finding.kind for finding in group_lease_findings(back)["c"]] == ["lease_order"]
    # A member's stop and restart end whatever its process believed; default-group events are not groups'.
    calm = [won(1, "d", 1, 1.0), event(1, "stopped", 1, 1.5), event(1, "became_leader", 1, 1.0),
            won(2, "d", 2, 2.0), event(2, "started", 2, 2.5), won(3, "d", 3, 3.0)]
    assert group_lease_findings(calm) == {} and group_lease_holders(calm) == {"d": 3}
    assert set(replay_group_events(calm)) == {"d"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_shards_of_a_killed_member_move_to_the_survivors_without_overlapping_leases(sharded, transport):
    p = sharded(transport)
    p.wait_until(every_shard_held(p.kills), PATIENCE, "a lease holder for every shard")
    # What an operator sees: every member hosts every shard; "groups led" shows how many it leads.
    health = check_cluster(load_cluster_file(p.cluster_file), timeout=PATIENCE)
    hosted = [(row.node, row.error, row.status and row.status.get("groups_hosted")) for row in health.rows]
    assert [row.groups_led[1] if row.groups_led else None for row in health.rows] == [SHARDS] * MEMBERS, \
        hosted
    table = render(health).splitlines()
    assert "groups led" in table[0]
    assert all(re.search(rf" \d+/{SHARDS} ", row) for row in table[1:MEMBERS + 1]), table

    held = group_lease_holders(p.events)
    victim = collections.Counter(held.values()).most_common(1)[0][0]
    lost = {group for group, holder in held.items() if holder == victim}  # the shards it leads
    p.kill(victim)
    survivors = [node for node in p.member_ids if node != victim]

    def re_led(events: Sequence[MemberEvent]) -> bool:
        holders = group_lease_holders(events, kills=p.kills)
        return all(holders.get(group) in survivors for group in lost)

    p.wait_until(re_led, PATIENCE, f"a new lease holder for each shard member {victim} led ({len(lost)})")

    # Stop the survivors (each reports the end of every lease it still held) so that the history is whole.
    for node in survivors:
        p.signal(node, signal.SIGTERM)
    for node in survivors:
        assert p.wait_exit(node, PATIENCE) == 0
    events = p.events
    findings = group_lease_findings(events, kills=p.kills)
    assert not findings, "\n".join(f"{group}: {finding.message}" for group, found in findings.items()
                                   for finding in found)
    checkers = replay_group_events(events, kills=p.kills)
    assert set(checkers) == NAMES
    for group, checker in checkers.items():
        leases = checker.intervals()  # by start; every one ended (stopped, lost or killed)
        assert all(lease.end is not None for lease in leases), (group, leases)
        terms = [lease.term for lease in leases if not lease.resumed]  # after a gap: the same token
        assert terms == sorted(terms) and len(set(terms)) == len(terms), (group, leases)
        if group in lost:  # a survivor took it over, with a higher fencing token
            last = [lease for lease in leases if lease.node == victim][-1]
            after = [lease for lease in leases if lease.start >= last.start and lease.node != victim]
            assert after and after[0].term > last.term, (group, leases)
    check_safe(replay_member_events(events, kills=p.kills))  # the default group's election too


def test_the_status_table_shows_the_named_groups_each_member_leads_of_those_it_hosts():
    def row(node: int, **status: Any) -> MemberRow:
        return MemberRow(node=node, address=f"127.0.0.1:{9000 + node}", admin="-",
                         status={"role": "follower", "term": 3, "leader": 1, "version": "x", **status})

    rows = (row(1, groups_leading=203, groups_hosted=1000), row(2, groups_leading=0, groups_hosted=0),
            row(3), MemberRow(node=4, address="127.0.0.1:9004", admin="-", error="down"))
    health = ClusterHealth(rows=rows, leader=1, term=3, lease_held=True, supporters=3, quorum=3, healthy=True,
                           disagreeing=())
    table = render(health).splitlines()
    column = table[0].index("groups led")
    assert [line[column:].split()[0] for line in table[1:5]] == ["203/1000", "-", "-", "-"]
    assert [member["groups_led"] for member in to_json(health)["members"]] == [
        {"leading": 203, "hosted": 1000}, None, None, None]


def test_a_members_events_before_its_started_line_are_written_after_it():
    out = io.StringIO()
    reporter = EventReporter(1, out, json_lines=True)
    reporter.hold()
    reporter.group_event("shard-0", BecameLeader(term=2, at=1.5))
    reporter.group_event("", BecameLeader(term=3, at=1.6))  # the default group's: core_event reports it
    assert out.getvalue() == ""
    reporter.report_first("started", term=0, leader=None)
    reporter.group_event("shard-0", LostLeadership(term=2, at=2.0, lease_end=1.9, reason="step_down"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["event"], line.get("group")) for line in lines] == [
        ("started", None), ("group_leader", "shard-0"), ("group_lost", "shard-0")]
    assert (lines[1]["term"], lines[1]["monotonic"], lines[1]["regained"]) == (2, 1.5, False)
    assert (lines[2]["lease_end"], lines[2]["reason"], lines[2]["leader"]) == (1.9, "step_down", None)


# ---------------------------------------------------------------------------- one sharded member


@pytest.fixture
def single(tmp_path) -> Iterator[Callable[[int], MemberProcesses]]:
    """A one-member cluster over UDP started with ``--shards``: it leads every shard by itself."""
    made: list[MemberProcesses] = []

    def make(shards: int) -> MemberProcesses:
        path = write_cluster_file(str(tmp_path / "single.json"), {1: f"127.0.0.1:{free_ports(1)[0]}"},
                                  election_timeout=TIMEOUT, cluster="groups-single")
        processes = MemberProcesses(path, str(tmp_path), [1], shards=shards)
        made.append(processes)
        processes.start_all()
        return processes

    yield make
    for processes in made:
        processes.close()


def test_a_sharded_member_reports_each_groups_lease_its_status_and_each_lease_end_at_a_stop(single):
    p = single(3)
    names = {"shard-0", "shard-1", "shard-2"}
    p.wait_until(lambda events: set(group_lease_holders(events)) == names, PATIENCE, "every shard led")
    started = p.events[0]
    assert started.event == "started" and started.record["shards"] == 3
    wins = {e.record["group"]: e for e in p.events if e.event == "group_leader"}
    assert set(wins) == names
    assert all(e.node == e.leader == 1 and e.term >= 1 and not e.record["regained"] for e in wins.values())
    # Reported once the win was known, after the lease began (its vote round began it: thesis §6.4.1).
    assert all(e.monotonic <= e.record["reported"] <= e.received for e in wins.values())
    p.wait_for(lambda e: e.event == "became_leader", PATIENCE)  # it leads the default group as well
    status = p.status(1)
    assert status["groups_hosted"] == 3
    assert status["groups_leading"] == 3  # the default group, which it leads too, is not counted
    assert status["is_leader"]
    assert p.terminate(1) == 0
    ends = {e.record["group"]: e for e in p.events if e.event == "group_lost"}
    assert set(ends) == names
    for group, end in ends.items():
        assert end.term == wins[group].term and end.leader is None
        assert wins[group].monotonic <= end.record["lease_end"] <= end.monotonic
    assert p.events[-1].event == "stopped"
    assert group_lease_holders(p.events) == {} and group_lease_findings(p.events) == {}


def test_without_json_a_sharded_member_prints_a_summary_instead_of_a_line_per_group(tmp_path):
    path = write_cluster_file(str(tmp_path / "single.json"), {1: f"127.0.0.1:{free_ports(1)[0]}"},
                              election_timeout=TIMEOUT, cluster="groups-human")
    process = subprocess.Popen(
        [sys.executable, "-m", "raft_election", "run", "--cluster", path, "--id", "1", "--data-dir",
         str(tmp_path / "data"), "--shards", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    summary = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "member 1 leads 3 of 3 shards" in line:
                summary.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert summary.wait(PATIENCE), "".join(lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(PATIENCE) == 0
        reader.join(PATIENCE)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    text = "".join(lines)
    assert "shard-" not in text, text  # no line per group
    assert "member 1 started" in text and "member 1 stopped" in text


@pytest.mark.parametrize("shards", ["-1", str(MAX_SHARDS + 1)])
def test_a_shard_count_out_of_range_gives_one_clear_line(tmp_path, shards):
    path = write_cluster_file(str(tmp_path / "cluster.json"), {1: "127.0.0.1:1"})
    result = subprocess.run([sys.executable, "-m", "raft_election", "run", "--cluster", path, "--id", "1",
                             "--data-dir", str(tmp_path / "data"), "--shards", shards],
                            capture_output=True, text=True, timeout=PATIENCE, check=False)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip().splitlines() == [
        f"raft-election run: shards: shards must be an int from 0 (none) to {MAX_SHARDS}, got {shards}"]
    assert not os.path.exists(tmp_path / "data")  # refused before anything started
