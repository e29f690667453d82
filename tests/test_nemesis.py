"""The nemesis: its seeded schedule, and a short run of every fault kind against member processes.

The run is the README test command's soak test: forty seconds of kills, restart storms, pauses,
partitions, one-way and partial cuts, loss, delay, garbage floods and CPU starvation against five UDP
members, after which the checker must find no violation at all.  Longer runs: ``raft-election nemesis``
(see README), or ``RAFT_NEMESIS_SECONDS=1800 python -m pytest tests/test_nemesis.py``.
"""

from __future__ import annotations

import os

import pytest

from raft_election.cli import main
from raft_election.nemesis.checker import check, format_report
from raft_election.nemesis.history import FAULT_KINDS
from raft_election.nemesis.runner import NemesisSettings, run_nemesis
from raft_election.nemesis.schedule import plan

TIMEOUT = (0.150, 0.300)
SECONDS = float(os.environ.get("RAFT_NEMESIS_SECONDS", "40"))
SEED = int(os.environ.get("RAFT_NEMESIS_SEED", "7"))


def test_a_schedule_is_a_function_of_its_seed():
    first = plan(seed=3, duration=120, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    again = plan(seed=3, duration=120, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    other = plan(seed=4, duration=120, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    assert first == again and first != other
    assert sum(f.duration + f.gap for f in first) >= 120


def test_a_long_schedule_has_every_kind_and_both_pause_lengths():
    faults = plan(seed=1, duration=600, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    pauses = [f.duration for f in faults if f.kind == "pause"]
    lease = TIMEOUT[0] * 0.95
    assert min(pauses) < lease < max(pauses)
    storms = [f for f in faults if f.kind == "storm"]
    assert all(f.params["down"] < TIMEOUT[0] for f in storms)


def test_a_schedule_can_have_a_number_of_rounds_instead_of_a_duration():
    faults = plan(seed=2, duration=1, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05, rounds=25)
    assert len(faults) == 25 and sum(f.duration + f.gap for f in faults) > 1


def test_a_schedule_can_be_limited_to_some_kinds():
    faults = plan(seed=1, duration=60, nodes=3, election_timeout=TIMEOUT, heartbeat_interval=0.05,
                  kinds=("kill", "pause"))
    assert {f.kind for f in faults} <= {"kill", "pause"}
    with pytest.raises(ValueError, match="unknown fault kinds"):
        plan(seed=1, duration=60, nodes=3, election_timeout=TIMEOUT, heartbeat_interval=0.05,
             kinds=("meteor",))


def test_a_seeded_run_of_every_fault_kind_against_member_processes_has_no_violation():
    settings = NemesisSettings(nodes=5, transport="udp", duration=SECONDS, seed=SEED,
                               election_timeout=TIMEOUT, heartbeat_interval=0.05)
    history = run_nemesis(settings)
    result = check(history)
    report = format_report(history, result)
    assert result.ok, report
    schedule = plan(seed=SEED, duration=SECONDS, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    planned = {f.kind for f in schedule}
    assert {record.kind for record in history.faults} == planned
    elected = [e for e in history.events if e.event == "became_leader"]
    assert len(elected) >= 2  # the faults forced elections, and the checker saw them
    if sum(f.kind in ("kill", "storm") and f.aim_leader for f in schedule) >= 2:
        # Fast failover is on by default: killed leaders were replaced on death evidence, safely.
        assert result.fast_elections >= 1, report
    assert history.healed is not None and history.ended > history.healed


@pytest.mark.parametrize(("argv", "field"), [
    (["--nodes", "2"], "nodes"),
    (["--nodes", "10"], "nodes"),
    (["--faults", "kill,meteor"], "faults"),
    (["--duration", "0"], "duration"),
    (["--rounds", "0"], "rounds"),
    (["--timeout", "150-300", "--heartbeat", "120"], "heartbeat_interval"),
])
def test_bad_nemesis_settings_exit_2_naming_the_field_before_starting_anything(argv, field, capsys):
    assert main(["nemesis", *argv]) == 2
    assert field in capsys.readouterr().err
