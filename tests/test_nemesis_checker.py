"""The nemesis checker and timeline on hand-built histories: every violation kind, the lease-interval rules,
the statistics on a small exact example, the JSON round trip and the PNG.

No processes, no sleeps: histories are built from events with chosen times.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs
import pytest

from raft_election.nemesis.checker import (
    CheckResult,
    check,
    format_report,
    history_from_json,
    history_to_json,
    leaderships,
    result_to_json,
)
from raft_election.nemesis.history import FaultRecord, History, LockRecord
from raft_election.nemesis.timeline import plot_timeline
from raft_election.processes import MemberEvent

T0 = 100.0  # the run's start on the monotonic clock; builder times are seconds after it
TIMEOUT = (0.15, 0.3)  # W = 2 × 0.3 = 0.6 s; liveness window after a heal: 3 × 0.3 = 0.9 s


class Builder:
    """A history by hand: every time is given in seconds since the start of the run."""

    def __init__(self, *, nodes: int = 3, duration: float = 10.0, seed: int = 7, transport: str = "udp"):
        self.nodes, self.duration, self.seed, self.transport = nodes, duration, seed, transport
        self.events: list[MemberEvent] = []
        self.faults: list[FaultRecord] = []
        self.kills: dict[int, list[float]] = {}
        self.locks: list[LockRecord] = []
        self.healed: Optional[float] = None

    def event(self, node: int, event: str, term: int, at: float, leader: Optional[int] = None,
              **extra: Any) -> Builder:
        record = {"event": event, "node": node, "term": term, "leader": leader, "monotonic": T0 + at,
                  "wall": 1.7e9 + at, **extra}
        self.events.append(MemberEvent(node=node, event=event, term=term, leader=leader, monotonic=T0 + at,
                                       record=record, received=T0 + at + 0.001))
        return self

    def started(self, node: int, term: int, at: float, voted_for: Optional[int] = None) -> Builder:
        return self.event(node, "started", term, at, voted_for=voted_for, pid=1000 + node)

    def leads(self, node: int, term: int, at: float) -> Builder:
        return self.event(node, "became_leader", term, at, leader=node)

    def lost(self, node: int, term: int, at: float, lease_end: float,
             reason: str = "check_quorum") -> Builder:
        return self.event(node, "lost_leadership", term, at, lease_end=T0 + lease_end, reason=reason)

    def gap(self, node: int, term: int, lease_end: float, regained: Optional[float] = None) -> Builder:
        """A lease gap of ``node``'s office: its lease ran out at ``lease_end`` (noticed at once), and came
        back at ``regained`` (if given)."""
        self.event(node, "lease_lost", term, lease_end, lease_end=T0 + lease_end)
        return self if regained is None else self.event(node, "lease_regained", term, regained, leader=node)

    def voted(self, node: int, term: int, candidate: int, at: float) -> Builder:
        return self.event(node, "voted", term, at, candidate=candidate)

    def stopped(self, node: int, term: int, at: float) -> Builder:
        return self.event(node, "stopped", term, at, counters={})

    def kill(self, node: int, at: float) -> Builder:
        self.kills.setdefault(node, []).append(T0 + at)
        return self

    def fault(self, kind: str, start: float, end: float, *targets: int) -> Builder:
        self.faults.append(FaultRecord(kind=kind, start=T0 + start, end=T0 + end, targets=targets,
                                       detail={"note": kind}))
        self.healed = T0 + end
        return self

    def write(self, at: float, node: int, token: int, accepted: bool = True) -> Builder:
        self.locks.append(LockRecord(at=T0 + at, node=node, token=token, accepted=accepted))
        return self

    def all_started(self) -> Builder:
        for node in range(1, self.nodes + 1):
            self.started(node, 0, 0.0)
        return self

    def build(self) -> History:
        return History(nodes=self.nodes, transport=self.transport, seed=self.seed, election_timeout=TIMEOUT,
                       heartbeat_interval=0.05, started=T0, ended=T0 + self.duration,
                       events=tuple(self.events),
                       faults=tuple(self.faults), kills={k: tuple(v) for k, v in self.kills.items()},
                       locks=tuple(self.locks), healed=self.healed)


def kinds(result: CheckResult) -> list[str]:
    return [finding.kind for finding in result.findings]


def clean() -> Builder:
    """Leader 1 in term 1, killed; leader 2 in term 2 to the end; votes and fenced writes all in order."""
    b = Builder().all_started()
    b.voted(1, 1, 1, 0.40).voted(2, 1, 1, 0.41).voted(3, 1, 1, 0.41).voted(3, 1, 1, 0.42).leads(1, 1, 0.45)
    b.write(1.0, 1, 1).fault("kill", 3.0, 3.5, 1).kill(1, 3.0)
    b.voted(2, 2, 2, 3.38).voted(3, 2, 2, 3.39).leads(2, 2, 3.4).write(4.0, 2, 2).write(4.1, 1, 1, False)
    b.started(1, 1, 3.5, voted_for=1).event(1, "leader_changed", 2, 3.6, leader=2)
    return b


# ------------------------------------------------------------------------------------------------ violations


def test_elections_won_by_fast_failover_are_counted_and_reported():
    b = clean()
    b.events[-5:] = [attrs.evolve(e, record={**e.record, "fast": True}) if e.event == "became_leader" else e
                     for e in b.events[-5:]]
    history = b.build()
    result = check(history)
    assert result.ok and result.elections == 2 and result.fast_elections == 1
    assert result.stats["fast_elections"] == 1
    assert "elections: 2 (1 by fast failover)" in format_report(history, result)


def test_a_clean_history_has_no_violations_and_reports_so():
    history = clean().build()
    result = check(history)
    assert result.ok and result.violations == () and result.findings == ()
    report = format_report(history, result)
    assert "no violations" in report and "replay:" not in report


def test_two_members_leading_the_same_term_is_an_election_safety_violation():
    b = Builder().all_started().leads(1, 3, 1.0).lost(1, 3, 2.0, lease_end=1.5).leads(2, 3, 2.5)
    result = check(b.build())
    assert kinds(result) == ["election_safety"]
    (message,) = result.violations
    assert "term 3" in message and "member 1 at t=1.000s" in message and "member 2 at t=2.500s" in message


def test_overlapping_leases_of_different_leaderships_are_a_violation_and_touching_ones_are_not():
    overlap = Builder().all_started().leads(1, 1, 0.5).leads(2, 2, 1.5).lost(1, 1, 2.2, lease_end=2.0)
    result = check(overlap.build())
    assert kinds(result) == ["lease_overlap"]
    (message,) = result.violations
    assert "member 1 term 1" in message and "member 2 term 2" in message and "500.0 ms" in message
    assert "t=1.500s" in message and "t=2.000s" in message
    finding = result.findings[0]
    assert finding.at == pytest.approx(T0 + 1.5) and finding.until == pytest.approx(T0 + 2.0)

    touching = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 2.2, lease_end=2.0).leads(2, 2, 2.0)
    assert check(touching.build()).ok


def test_a_leadership_that_never_held_a_lease_overlaps_nothing():
    b = Builder().all_started().leads(1, 1, 0.5).leads(2, 2, 1.0).lost(2, 2, 1.0, lease_end=0.9)
    second = leaderships(b.build())[1]
    assert second.start == second.end == pytest.approx(T0 + 1.0)  # lease_end before start: empty
    assert check(b.build()).ok


def test_a_lease_interval_ends_at_lost_leaderships_lease_end_not_when_it_was_reported():
    b = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 3.0, lease_end=2.0)
    (lead,) = leaderships(b.build())
    assert (lead.node, lead.term, lead.ended_by) == (1, 1, "lost_leadership")
    assert lead.start == pytest.approx(T0 + 0.5) and lead.end == pytest.approx(T0 + 2.0)


def test_a_lost_leadership_of_another_term_does_not_end_the_interval():
    b = Builder().all_started().leads(1, 2, 0.5).lost(1, 1, 1.0, lease_end=0.9)
    (lead,) = leaderships(b.build())
    assert lead.ended_by == "end_of_run" and lead.end == pytest.approx(T0 + 10.0)


def test_a_killed_leaders_interval_ends_at_its_first_kill_after_it_began():
    b = Builder().all_started().kill(1, 0.1).started(1, 0, 0.2).leads(1, 1, 0.5).kill(1, 2.0)
    b.started(1, 1, 2.5, voted_for=1).kill(1, 4.0)
    (lead,) = leaderships(b.build())
    assert lead.ended_by == "kill" and lead.end == pytest.approx(T0 + 2.0)
    # A successor just after the kill is fine; one just before it overlaps.
    assert check(b.leads(2, 2, 2.05).build()).ok
    late = Builder().all_started().leads(1, 1, 0.5).kill(1, 2.0).leads(2, 2, 1.9)
    assert kinds(check(late.build())) == ["lease_overlap"]


def test_a_stopped_leaders_interval_ends_at_stopped_and_an_unended_one_at_the_end_of_the_run():
    b = Builder().all_started().leads(1, 1, 0.5).stopped(1, 1, 4.0).leads(2, 2, 4.5)
    first, second = leaderships(b.build())
    assert (first.ended_by, first.end) == ("stopped", pytest.approx(T0 + 4.0))
    assert (second.ended_by, second.end) == ("end_of_run", pytest.approx(T0 + 10.0))
    assert check(b.build()).ok
    # Member 3's term-3 lease overlaps both; member 2's term-2 lease then begins after a term-3 one.
    assert kinds(check(b.leads(3, 3, 3.9).build())) == ["lease_overlap", "lease_overlap", "lease_order"]


def test_a_leader_whose_process_restarted_without_a_recorded_kill_ends_at_the_restart():
    b = Builder().all_started().leads(1, 1, 0.5).started(1, 1, 2.0, voted_for=1).leads(2, 2, 2.1)
    first, _ = leaderships(b.build())
    assert (first.ended_by, first.end) == ("restarted", pytest.approx(T0 + 2.0))
    assert check(b.build()).ok


def test_a_paused_leader_reporting_late_with_an_early_lease_end_is_no_violation():
    b = Builder().all_started().leads(1, 1, 0.3).fault("pause", 1.0, 3.0, 1)
    b.voted(2, 2, 2, 1.45).voted(3, 2, 2, 1.46).leads(2, 2, 1.5)
    b.lost(1, 1, 3.05, lease_end=1.15, reason="higher_term")  # reported after resuming
    result = check(b.build())
    assert result.ok, result.violations
    paused = next(lead for lead in result.leaderships if lead.node == 1)
    assert paused.end == pytest.approx(T0 + 1.15)
    # Had it still believed it led past its successor's start, that would be a violation.
    b.events[-1] = attrs.evolve(b.events[-1], record={**b.events[-1].record, "lease_end": T0 + 1.6})
    assert kinds(check(b.build())) == ["lease_overlap"]


def test_voting_for_two_candidates_in_one_term_is_a_violation():
    b = Builder().all_started().voted(3, 4, 1, 1.0).voted(3, 4, 1, 1.1).voted(3, 5, 2, 2.0)
    assert check(b.build()).ok  # repeats for the same candidate, another term: fine
    b.voted(3, 4, 2, 1.2)
    result = check(b.build())
    assert kinds(result) == ["double_vote"]
    (message,) = result.violations
    assert "member 3 voted in term 4 for 1" in message and "for 2" in message and "t=1.200s" in message


def test_a_restart_reporting_a_different_stored_vote_is_a_violation():
    agreeing = Builder().all_started().voted(3, 4, 1, 1.0).kill(3, 1.5).started(3, 4, 2.0, voted_for=1)
    agreeing.started(2, 4, 2.0, voted_for=None)
    assert check(agreeing.build()).ok
    forgot = Builder().all_started().voted(3, 4, 1, 1.0).kill(3, 1.5).started(3, 4, 2.0, voted_for=2)
    result = check(forgot.build())
    assert kinds(result) == ["double_vote"]
    assert "started at t=2.000s" in result.violations[0]
    # The stored vote counts before later votes too.
    restarted = Builder().started(3, 6, 0.0, voted_for=2).voted(3, 6, 1, 0.5)
    assert kinds(check(restarted.build())) == ["double_vote"]


def test_fencing_lower_token_after_a_higher_one_and_one_token_from_two_members_are_violations():
    fine = Builder().write(1.0, 1, 1).write(1.5, 1, 1).write(2.0, 2, 2).write(2.5, 1, 1, accepted=False)
    assert check(fine.build()).ok  # refused stale writes and repeats by the same member are fine
    stale = Builder().write(1.0, 1, 1).write(2.0, 2, 2).write(2.5, 1, 1)
    result = check(stale.build())
    assert kinds(result) == ["fencing"]
    assert "token 1" in result.violations[0] and "after token 2" in result.violations[0]
    shared = Builder().write(1.0, 2, 2).write(2.0, 3, 2)
    result = check(shared.build())
    assert kinds(result) == ["fencing"]
    assert "token 2 accepted from member 2" in result.violations[0] and "member 3" in result.violations[0]


def partition_healed_at_5() -> Builder:
    """Leader 1 loses its lease at 1.5 s in a partition healed at 5.0 s: a leader is due by 5.9 s."""
    b = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 1.5, lease_end=1.5)
    return b.fault("partition", 1.0, 5.0, 1)


def test_liveness_after_the_heal():
    assert check(partition_healed_at_5().leads(2, 2, 5.8).build()).ok  # within [5.0, 5.9]

    still = Builder().all_started().leads(1, 1, 0.5).fault("loss", 1.0, 5.0, 2)
    assert check(still.build()).ok  # elected before the heal, still leading

    result = check(partition_healed_at_5().leads(2, 2, 6.0).build())
    assert kinds(result) == ["liveness"]
    assert "t=5.000s" in result.violations[0] and "t=5.900s" in result.violations[0]

    ended_before = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 4.9, lease_end=4.9)
    ended_before.fault("delay", 1.0, 5.0, 3).leads(2, 2, 6.0)
    assert kinds(check(ended_before.build())) == ["liveness"]

    no_faults = Builder().all_started()
    assert check(no_faults.build()).ok  # nothing healed: no liveness requirement


# ------------------------------------------------------------------------------------------------ statistics


def exact() -> Builder:
    """Gaps: [0, 0.5) startup, [3.0, 3.4) kill, [6.0, 6.3) partition (healed at 5.8), [8.0, 8.2) none."""
    b = Builder().all_started()
    b.leads(1, 1, 0.5).fault("kill", 3.0, 3.5, 1).kill(1, 3.0)
    b.leads(2, 2, 3.4).started(1, 1, 3.5, voted_for=1).fault("partition", 5.0, 5.8, 2)
    b.lost(2, 2, 6.0, lease_end=6.0).leads(3, 3, 6.3)
    b.lost(3, 3, 8.1, lease_end=8.0, reason="stepped_down").leads(1, 4, 8.2)
    b.healed = T0 + 5.8
    return b


def test_statistics_on_an_exact_example():
    history = exact().build()
    result = check(history)
    assert result.ok, result.violations
    assert result.elections == 4 and result.leader_changes == 3 and result.highest_term == 4
    assert result.duration == pytest.approx(10.0)
    assert [(gap.start - T0, gap.end - T0, gap.kinds, gap.failover) for gap in result.gaps] == [
        (0.0, pytest.approx(0.5), ("startup",), False),
        (pytest.approx(3.0), pytest.approx(3.4), ("kill",), True),
        (pytest.approx(6.0), pytest.approx(6.3), ("partition",), True),
        (pytest.approx(8.0), pytest.approx(8.2), ("none",), True),
    ]
    assert result.unavailable_seconds == pytest.approx(1.4)
    assert dict(result.unavailable_by_kind) == pytest.approx(
        {"startup": 0.5, "kill": 0.4, "partition": 0.3, "none": 0.2})
    assert result.first_leader == pytest.approx(0.5)
    failover = result.failover
    assert failover is not None and failover.count == 3
    assert (failover.min, failover.median, failover.p90, failover.max) == pytest.approx((0.2, 0.3, 0.4, 0.4))
    assert {kind: (s.count, s.seconds, s.unavailable_seconds) for kind, s in result.faults.items()} == {
        "kill": (1, pytest.approx(0.5), pytest.approx(0.4)),
        "partition": (1, pytest.approx(0.8), pytest.approx(0.3)),
    }
    # Only member 1's term-4 election had no fault in the 0.6 s before it.
    assert [(lead.node, lead.term) for lead in result.spurious] == [(1, 4)]
    assert result.spurious_elections == 1
    stats = result.stats
    assert stats["spurious_elections"] == 1 and stats["faults"]["kill"]["count"] == 1
    assert stats["failover"]["median"] == pytest.approx(0.3)


def test_a_gap_is_blamed_on_a_fault_started_shortly_before_it_but_not_on_one_long_over():
    b = Builder().all_started().leads(1, 1, 0.5).fault("flood", 2.5, 2.7, 1).lost(1, 1, 3.0, lease_end=3.0)
    b.leads(2, 2, 3.2).fault("delay", 4.0, 4.1).lost(2, 2, 5.0, lease_end=5.0).leads(3, 3, 5.3)
    b.fault("starve", 5.4, 9.8)
    result = check(b.build())
    assert [gap.kinds for gap in result.gaps] == [("startup",), ("flood",), ("none",)]
    assert [(lead.node, lead.term) for lead in result.spurious] == [(3, 3)]


def test_a_gap_at_the_end_of_the_run_is_unavailability_but_not_a_failover():
    b = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 9.0, lease_end=9.0)
    result = check(b.build())
    assert result.unavailable_seconds == pytest.approx(1.5)
    assert result.failover is None and [gap.failover for gap in result.gaps] == [False, False]
    assert result.leader_changes == 0 and result.spurious == ()


def test_a_member_re_elected_after_itself_is_an_election_but_not_a_leader_change():
    b = Builder().all_started().leads(1, 1, 0.5).lost(1, 1, 2.0, lease_end=2.0).fault("loss", 1.8, 2.2)
    b.leads(1, 2, 2.3).lost(1, 2, 4.0, lease_end=4.0).fault("delay", 3.8, 4.2).leads(2, 3, 4.3)
    result = check(b.build())
    assert result.ok and result.elections == 3 and result.leader_changes == 1 and result.spurious == ()


def test_elections_after_the_run_ended_are_not_counted():
    b = Builder().all_started().leads(1, 1, 0.5).stopped(1, 1, 10.2).leads(2, 2, 10.3)
    result = check(b.build())
    assert result.elections == 1 and result.leader_changes == 0 and result.spurious == ()
    assert result.unavailable_seconds == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- report, JSON


def test_report_lists_settings_faults_figures_violations_and_the_replay_command():
    history = exact().write(9.0, 1, 4).write(9.5, 2, 2).build()
    result = check(history)
    assert kinds(result) == ["fencing"]
    report = format_report(history, result)
    assert "3 nodes, transport udp, seed 7, election timeout 150-300 ms" in report
    assert "| kill | 1 | 0.50 | 0.400 |" in report and "| partition | 1 | 0.80 | 0.300 |" in report
    assert "elections: 4 (0 by fast failover), leader changes: 3, highest term: 4" in report
    assert "median 300.0, p90 400.0, p99 400.0, max 400.0" in report
    assert "spurious elections" in report and "member 1 term 4" in report
    assert result.violations[0] in report
    assert "replay: raft-election nemesis --seed 7 --nodes 3 --transport udp" in report
    assert "no violations" not in report


def test_history_json_round_trip_gives_an_equal_history_and_the_same_result():
    builder = exact().write(9.0, 1, 4).write(9.5, 2, 2, accepted=False).voted(3, 4, 2, 8.1)
    history = builder.build()
    text = json.dumps(history_to_json(history))
    again = history_from_json(json.loads(text))
    assert again == history
    assert check(again) == check(history)
    document = json.loads(json.dumps(result_to_json(history, check(history))))
    assert document["ok"] is True and document["violations"] == []
    assert document["stats"]["elections"] == 4
    assert document["leaderships"][0] == {"node": 1, "term": 1, "start": pytest.approx(0.5),
                                           "end": pytest.approx(3.0), "ended_by": "kill"}
    assert document["replay"].startswith("raft-election nemesis --seed 7")
    with pytest.raises(ValueError, match="version"):
        history_from_json({**json.loads(text), "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        history_from_json({k: v for k, v in json.loads(text).items() if k != "events"})


def test_plot_timeline_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = exact().leads(2, 5, 9.0).fault("pause", 6.5, 7.0).build()  # a lease overlap to mark
    result = check(history)
    assert not result.ok
    path = tmp_path / "timeline.png"
    plot_timeline(history, result, str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# ------------------------------------------------------------------------------------------------ lease gaps


def test_a_lease_gap_is_unavailability_but_neither_an_election_nor_a_failover():
    """A leader whose lease lapses and comes back (office kept) has two lease intervals of one term: the gap
    between them counts as time without a lease holder, but not as an election, a spurious election, a
    leader change or a failover time."""
    b = clean().gap(2, 2, 5.0, regained=5.02).gap(2, 2, 6.0, regained=6.03)
    result = check(b.build())
    assert result.ok, result.violations
    assert [(lead.node, lead.term, lead.resumed) for lead in result.leaderships] == [
        (1, 1, False), (2, 2, False), (2, 2, True), (2, 2, True)]
    assert result.elections == 2 and result.leader_changes == 1 and result.spurious_elections == 0
    lease_gaps = [gap for gap in result.gaps if gap.lease_gap]
    assert [round(gap.seconds, 3) for gap in lease_gaps] == [0.02, 0.03]
    assert not any(gap.failover for gap in lease_gaps)
    assert result.failover is not None and result.failover.count == 1  # the kill of leader 1 only
    assert result.unavailable_seconds == pytest.approx(sum(gap.seconds for gap in result.gaps))


def test_a_lease_that_comes_back_after_another_members_later_term_began_is_a_violation():
    """Thesis §6.4.1: a leader that regains its lease in term 2 after member 3 held one in term 3 would
    share token 2 across a gap with another holder in between."""
    b = Builder().all_started().leads(2, 2, 0.5).gap(2, 2, 1.0).leads(3, 3, 1.5).lost(3, 3, 2.0, 2.0)
    assert check(b.build()).ok
    b.event(2, "lease_regained", 2, 2.5, leader=2)
    assert kinds(check(b.build())) == ["lease_order"]
