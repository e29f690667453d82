"""The steady-state benchmark (benchmarks/steady.py): its analysis on hand-made member events, and one short
real run of its command line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.steady import analyse, clipped, holes, main
from raft_election.invariants import LeaseInterval
from raft_election.processes import MemberEvent


def line(node: int, event: str, term: int, at: float, **record: Any) -> MemberEvent:
    return MemberEvent(node=node, event=event, term=term, leader=None, monotonic=at,
                       record={"event": event, "node": node, "term": term, "monotonic": at, **record},
                       received=at)


def test_covered_spans_are_clipped_merged_and_their_holes_measured():
    intervals = [LeaseInterval(node=1, term=1, start=0.0, end=2.0), LeaseInterval(node=2, term=2, start=1.5),
                 LeaseInterval(node=3, term=3, start=5.0, end=6.0), LeaseInterval(node=1, term=1, start=9.0,
                                                                                 end=9.0)]
    spans = clipped(intervals, 1.0, 4.0)
    assert spans == [(1.0, 4.0)]
    spans = clipped([i for i in intervals if i.node != 2], 1.0, 8.0)
    assert spans == [(1.0, 2.0), (5.0, 6.0)]
    assert holes(spans, 1.0, 8.0) == [3.0, 2.0]
    assert holes([], 0.0, 1.0) == [1.0]


def test_analysis_counts_changes_availability_gaps_and_their_causes():
    events = [line(1, "became_leader", 1, 0.5),
              line(1, "lease_lost", 1, 2.1, lease_end=2.0), line(1, "lease_regained", 1, 2.2),
              line(1, "lease_lost", 1, 4.0, lease_end=4.0),
              line(1, "lost_leadership", 1, 4.5, lease_end=4.0, reason="check_quorum", had_lease=False),
              line(2, "became_leader", 3, 4.8), line(2, "stopped", 3, 10.5)]
    figures = analyse(events, 1.0, 10.0)
    assert figures["leader_changes"] == 1 and figures["terms"] == 2
    assert figures["gaps"] == pytest.approx([0.2, 0.8])
    assert figures["availability"] == pytest.approx(8.0 / 9.0)
    assert figures["lease_gaps"] == pytest.approx([0.2, 0.5])
    assert figures["office_losses"] == {"check_quorum": 1}


def test_a_short_run_of_the_command_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "steady.json"
    assert main(["--transport", "udp", "--timeout", "150-300", "--nodes", "3", "--seconds", "2",
                 "--warmup", "0.2", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["transport"] == "udp" and result["nodes"] == 3
    assert result["seconds"] >= 2 and 0.0 <= result["availability"] <= 1.0
    assert result["counters"]["became_leader"] >= 1
    assert "reads is_leader every 1 ms" in result["application"]
    assert "| udp | 150-300 ms | 50 ms |" in capsys.readouterr().out
