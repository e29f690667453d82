"""A lease gap under application load, with real member processes over UDP on loopback.

Each member is an ordinary application (the benchmarks' harness, ``benchmarks/app_thread``): a thread reads
``is_leader`` every millisecond and another holds the GIL for about 400 ms at random moments, as a long
call into a C extension does.  Nothing of the node runs meanwhile.  The settings make such a stall of the
leader longer than its lease (``0.5 s × (1 − 0.4) = 0.3 s``) but shorter than the followers' election
timeouts (0.5-1 s), so the leader's lease lapses and, since office and lease are separate, comes back in
the same term: the member reports ``lease_lost`` then ``lease_regained``.  Before office and lease were
separated, the leader stepped down at the first lapse ("lease expired") and never reported a lease coming
back, so this test would wait in vain.  The members' own events are checked with the invariant checker.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from benchmarks.appload import app_env
from raft_election.invariants import replay_member_events
from raft_election.processes import MemberProcesses, free_ports, write_cluster_file

PATIENCE = 90.0


@pytest.fixture
def loaded(tmp_path) -> Iterator[MemberProcesses]:
    ports = free_ports(3)
    members = {node: f"127.0.0.1:{port}" for node, port in enumerate(ports, 1)}
    path = write_cluster_file(str(tmp_path / "cluster.json"), members, transport="udp", cluster="gap-test",
                              election_timeout=(0.5, 1.0), heartbeat_interval=0.02, max_clock_drift=0.4)
    env = app_env(read_ms=1, gil_ms=400, gil_every=(1.0, 1.5))
    processes = MemberProcesses(path, str(tmp_path), members, env=env)
    try:
        processes.start_all()
        yield processes
    finally:
        processes.close()


def test_a_leader_stalled_by_its_application_past_its_lease_keeps_office_and_its_token(loaded):
    p = loaded
    p.wait_for(lambda e: e.event == "became_leader", PATIENCE)
    regained = p.wait_for(lambda e: e.event == "lease_regained", PATIENCE)
    events = p.events
    # The lease came back to a member still in the office it won: same term, no office lost in between.
    won = [e for e in events if e.node == regained.node and e.event == "became_leader"
           and e.term == regained.term]
    lost = [e for e in events if e.node == regained.node and e.event == "lease_lost"
            and e.term == regained.term and e.monotonic <= regained.monotonic]
    assert won and lost
    assert not [e for e in events if e.node == regained.node and e.event == "lost_leadership"
                and e.term == regained.term and e.monotonic <= regained.monotonic]
    assert lost[-1].record["lease_end"] < regained.monotonic
    for node in p.member_ids:
        p.signal(node, signal.SIGTERM)
    for node in p.member_ids:
        p.wait_exit(node)
    safety = replay_member_events(p.events)
    findings = [*safety.findings, *safety.check_intervals()]
    assert not findings, "\n".join(finding.message for finding in findings)
