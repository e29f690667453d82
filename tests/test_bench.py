"""The benchmark machinery (``raft-election bench``): a short in-memory run, the report and the plot.

No timing is asserted: only that every trial produced a measurement with the structure the report needs.
"""

from __future__ import annotations

import json
import random
import re
import struct

import attrs
import pytest

from benchmarks.ranges import merge_ranges
from raft_election.bench import BenchSettings, MemoryCluster, run_range
from raft_election.bench.groups import GroupsResult, groups_table
from raft_election.bench.report import ideal_failover, markdown_table, percentile, range_figures, summarize
from raft_election.cli import main

TIMEOUT = (0.150, 0.300)


@pytest.fixture(scope="module")
def short_run() -> tuple:
    """3 members in memory, timeout path, 3 crashes and 2 graceful stops; run once for the tests below."""
    with MemoryCluster(3, election_timeout=TIMEOUT, heartbeat_interval=0.05, seed=1,
                       fast_failover=False) as cluster:
        result = run_range(cluster, trials=3, handovers=2, heartbeat_interval=0.05, election_timeout=TIMEOUT,
                           rng=random.Random(1), fast_failover=False)
        return result, cluster.log.events


def test_every_crash_trial_measured_a_failover_to_another_member_in_a_later_term(short_run):
    result, _ = short_run
    assert len(result.failovers) == 3 and result.restarts == 5
    for failover in result.failovers:
        assert failover.new_leader != failover.old_leader
        assert failover.new_term > failover.old_term and failover.terms >= 1
        assert failover.seconds > 0
        assert failover.round_trip is not None and failover.round_trip > 0
        # At least a pre-vote request and answer and a vote request and answer.
        assert failover.messages is not None and failover.messages >= 4


def test_each_measured_time_is_the_new_leaders_own_event_time_minus_the_crash(short_run):
    result, events = short_run
    elected = {(e.node, e.term): e.monotonic for e in events if e.event == "became_leader"}
    for failover in result.failovers + result.handovers:
        assert (failover.new_leader, failover.new_term) in elected
    # Consecutive leaderships chain: each trial starts from the leader the previous one produced.
    chain = result.failovers + result.handovers
    for earlier, later in zip(chain, chain[1:]):
        assert later.old_leader == earlier.new_leader and later.old_term >= earlier.new_term


def test_graceful_handovers_are_measured_after_the_crashes(short_run):
    result, _ = short_run
    assert len(result.handovers) == 2
    assert all(h.new_leader != h.old_leader and h.seconds > 0 for h in result.handovers)
    assert result.initial_election >= 0


def test_with_fast_failover_the_report_says_which_failovers_took_the_fast_path():
    """In memory a crashed member's transport is closed, so probes find it gone (issue 7)."""
    with MemoryCluster(3, election_timeout=TIMEOUT, heartbeat_interval=0.05, seed=2) as cluster:
        result = run_range(cluster, trials=3, handovers=0, heartbeat_interval=0.05, election_timeout=TIMEOUT,
                           rng=random.Random(2), fast_failover=True)
    assert all(failover.fast is not None for failover in result.failovers)
    assert any(failover.fast for failover in result.failovers)
    figures = range_figures(result)
    assert figures["fast_share"] == sum(f.fast for f in result.failovers) / 3
    assert figures["ideal"] is None  # the model is the timeout path's
    row = markdown_table([result]).splitlines()[2]
    assert row.startswith(f"| 150-300 | 50 | {figures['fast_share']:.0%} |")


def test_chunks_of_one_configuration_merge_into_one_result(short_run):
    result, _ = short_run
    later = attrs.evolve(result, initial_election=result.initial_election + 1.0, unprovoked=1)
    merged = merge_ranges([result, later])
    assert merged.failovers == result.failovers + later.failovers and merged.handovers == ()
    assert merged.restarts == 2 * result.restarts and merged.unprovoked == result.unprovoked + 1
    assert merged.initial_election == later.initial_election  # the upper median of two
    assert merged.fast_failover is result.fast_failover


def test_the_report_has_every_figure_of_a_range(short_run):
    result, _ = short_run
    figures = range_figures(result)
    assert figures["trials"] == 3
    failover = figures["failover"]
    assert failover["min"] <= failover["median"] <= failover["p90"] <= failover["p99"] <= failover["max"]
    assert 0.0 <= figures["split_vote_share"] <= 1.0
    assert figures["ideal"] == pytest.approx(ideal_failover(3, TIMEOUT, 0.05, figures["round_trip"]))
    assert figures["median_over_ideal"] == pytest.approx(failover["median"] / figures["ideal"])
    table = markdown_table([result]).splitlines()
    assert len(table) == 3 and table[2].startswith("| 150-300 | 50 | off | 3 |")
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")


def test_the_ideal_model_is_the_specs_formula():
    # a + (b - a) / n - h / 2 + 2r
    assert ideal_failover(5, (0.150, 0.300), 0.050, 0.001) == pytest.approx(0.150 + 0.030 - 0.025 + 0.002)


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.90) == 90.0 and percentile(values, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([5.0], 0.99) == 5.0
    summary = summarize([4.0, 1.0, 3.0, 2.0])
    assert summary is not None
    assert (summary.min, summary.median, summary.mean, summary.max) == (1, 2.5, 2.5, 4)
    assert summarize([]) is None


def test_bench_command_in_memory_writes_json_a_table_and_a_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    status = main(["bench", "--transport", "memory", "--nodes", "3", "--trials", "3", "--handovers", "1",
                   "--timeout", "150-300", "--json", str(out_json), "--plot", str(out_png)])
    assert status == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| 150-300 \| 50 \| \d+% \| 3 \|", printed), printed
    document = json.loads(out_json.read_text())
    assert document["settings"]["transport"] == "memory" and document["settings"]["trials"] == 3
    (only,) = document["ranges"]
    assert len(only["failovers"]) == 3 and len(only["handovers"]) == 1
    assert all(f["seconds"] > 0 and f["new_term"] > f["old_term"] for f in only["failovers"])
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100


def test_bench_command_without_fast_failover_measures_the_timeout_path(capsys):
    status = main(["bench", "--transport", "memory", "--nodes", "3", "--trials", "2", "--handovers", "0",
                   "--no-fast-failover", "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "fast failover off" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| 150-300 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "off" and cells[13] != "-"  # the timeout path's ideal model is shown


@pytest.mark.parametrize(("argv", "field"), [
    (["--nodes", "1"], "nodes"),
    (["--trials", "-1"], "trials"),
    (["--timeout", "150-300", "--heartbeat", "100"], "heartbeat_interval"),
])
def test_bad_bench_settings_exit_2_naming_the_field(argv, field, capsys):
    assert main(["bench", "--transport", "memory", "--no-progress", *argv]) == 2
    assert field in capsys.readouterr().err


def test_settings_default_heartbeat_is_a_third_of_the_minimum_timeout():
    settings = BenchSettings(timeouts=((0.150, 0.300), (0.012, 0.024)))
    assert settings.heartbeat_for((0.150, 0.300)) == pytest.approx(0.050)
    assert settings.heartbeat_for((0.012, 0.024)) == pytest.approx(0.004)


def test_the_groups_table_gives_the_members_cpu_without_the_application_and_both_re_lead_times():
    """bench --groups: a member's own CPU is the process's minus its application threads'; re-led times are
    given both to the lease's start and to when the new holder's application heard of it."""
    result = GroupsResult(groups=1000, cpu={1: 10.0, 2: 12.0, 3: 9.0}, app_cpu={1: 2.5, 2: 3.0, 3: 2.0},
                          messages={1: 280.0, 2: 290.0, 3: 270.0}, leaders={1: 400, 2: 300, 3: 300},
                          relead=(0.05, 0.08, 0.12), relead_heard=(0.09, 0.15, 0.2), killed_led=(3,))
    row = groups_table([result]).splitlines()[2].split(" | ")
    assert row[1:4] == ["10.0, 12.0", "2.5", "7.5, 9.0"]  # medians; max of 7.5, 9.0, 7.0
    assert row[6].startswith("80, 120, 120; 3") and row[7] == "150, 200"
