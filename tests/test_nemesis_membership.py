"""The nemesis with membership changes: the schedule's kinds, the change driver, the membership checks on
hand-built histories, and a short run of changes (and the classic faults) against member processes.

The hand-built histories use the same builder as tests/test_nemesis_checker.py.  The change driver runs
against a scripted admin channel (no processes).  The process run is short by default (every membership
kind plus a few classic faults against five UDP members); a longer one:
``RAFT_NEMESIS_MEMBERSHIP_SECONDS=600 python -m pytest tests/test_nemesis_membership.py -k processes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Optional

import attrs
import pytest

from raft_election.cli import main
from raft_election.errors import ConfigError
from raft_election.nemesis import changes as changes_module
from raft_election.nemesis.changes import ChangeDriver
from raft_election.nemesis.checker import (
    check,
    format_report,
    history_from_json,
    history_to_json,
    replay_command,
)
from raft_election.nemesis.history import ALL_KINDS, FAULT_KINDS, MEMBERSHIP_KINDS, FaultRecord
from raft_election.nemesis.runner import NemesisSettings, run_nemesis
from raft_election.nemesis.schedule import check_kinds, expand_kinds, plan
from tests.test_nemesis_checker import T0, Builder

TIMEOUT = (0.150, 0.300)
SECONDS = float(os.environ.get("RAFT_NEMESIS_MEMBERSHIP_SECONDS", "0"))
SEED = int(os.environ.get("RAFT_NEMESIS_MEMBERSHIP_SEED", "5"))


# ------------------------------------------------------------------------------------------------ schedule


def test_groups_expand_to_kinds_and_the_default_schedule_has_no_membership_changes():
    assert expand_kinds(["all"]) == ALL_KINDS
    assert expand_kinds(["kill", "membership", "kill"]) == ("kill", *MEMBERSHIP_KINDS)
    check_kinds(["membership"])
    check_kinds(["all", "pause"])
    with pytest.raises(ConfigError, match="membership"):
        check_kinds(["members"])
    default = plan(seed=1, duration=600, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    assert {f.kind for f in default} == set(FAULT_KINDS)
    assert NemesisSettings().kinds == FAULT_KINDS and not NemesisSettings().membership
    settings = NemesisSettings(kinds=("all",))
    assert settings.kinds == ALL_KINDS and settings.membership


def test_a_long_schedule_of_every_kind_has_every_shape_of_membership_change():
    faults = plan(seed=1, duration=1200, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05,
                  kinds=("all",))
    assert {f.kind for f in faults} == set(ALL_KINDS)
    adds = [f for f in faults if f.kind == "add_member"]
    removes = [f for f in faults if f.kind == "remove_member"]
    replaces = [f for f in faults if f.kind == "replace_member"]
    assert {f.params["crash_leader"] for f in adds} == {True, False}
    assert {f.params["crash_at"] for f in adds if f.params["crash_leader"]} == {"entry", "delay"}
    assert all(0 <= f.params["crash_after"] <= 0.1 for f in adds)
    assert all(f.duration > 0 for f in adds if f.params["crash_leader"])
    assert {f.params["isolate"] for f in removes} == {True, False}
    assert {f.params["dead"] for f in replaces} == {True, False}
    assert {f.params["stop"] for f in removes + replaces} == {"term", "kill"}
    assert all(f.duration == f.params["linger"] for f in removes + replaces)


def test_the_classic_kinds_of_a_seed_draw_the_same_schedule_as_before():
    """Membership kinds draw their shapes only when chosen: existing seeds replay unchanged."""
    faults = plan(seed=21, duration=300, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05)
    again = plan(seed=21, duration=300, nodes=5, election_timeout=TIMEOUT, heartbeat_interval=0.05,
                 kinds=FAULT_KINDS)
    assert faults == again and not {f.kind for f in faults} & set(MEMBERSHIP_KINDS)


def test_membership_changes_are_refused_in_network_namespace_mode_before_anything_starts():
    with pytest.raises(ConfigError, match="netns"):
        run_nemesis(NemesisSettings(kinds=("membership",), netns=True, duration=1))


# ------------------------------------------------------------------------------------------------ driver


class ScriptedAdmin:
    """Answers admin requests from a script: per (member, op), a list of answers used in turn."""

    def __init__(self, script: Mapping[tuple[str, str], list[dict[str, Any]]]) -> None:
        self.script = {key: list(answers) for key, answers in script.items()}
        self.asked: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, address: str, op: str, *, secret: Optional[bytes], timeout: float,
                 params: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        self.asked.append((address, op, dict(params or {})))
        answers = self.script[(address, op)]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer.get("error"):
            raise changes_module.AdminError(f"{address}: refused: {answer['error']}", kind=answer["error"],
                                            detail="scripted", leader_id=answer.get("leader_id"))
        return answer


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    def install(script: Mapping[tuple[str, str], list[dict[str, Any]]]) -> ScriptedAdmin:
        admin = ScriptedAdmin(script)
        monkeypatch.setattr(changes_module, "query", admin)
        return admin
    return install


ADMIN = {1: "a1", 2: "a2", 3: "a3"}


def test_a_change_refused_by_a_former_leader_is_asked_again_of_the_leader_it_names(scripted):
    admin = scripted({("a1", "add_member"): [{"error": "not_leader", "leader_id": 2}],
                      ("a2", "add_member"): [{"ok": True, "index": 7, "members": {}}]})
    driver = ChangeDriver(ADMIN, secret=b"s", leader=lambda: 1, poll=0.0, timeout=3.0)
    outcome = driver.change("add", 4, "127.0.0.1:9004")
    assert outcome.ok and outcome.index == 7 and outcome.attempts == 2 and outcome.leader == 2
    assert [(address, op) for address, op, _ in admin.asked] == [("a1", "add_member"), ("a2", "add_member")]
    assert admin.asked[0][2] == {"id": 4, "address": "127.0.0.1:9004", "timeout": 3.0}


def test_a_change_whose_leader_died_is_asked_again_of_the_next_leader(scripted):
    leaders = iter([1, None, None, 3])
    admin = scripted({("a1", "remove_member"): [{"error": "bad_answer"}],
                      ("a3", "remove_member"): [{"ok": True, "index": 9, "members": {}}]})
    driver = ChangeDriver(ADMIN, secret=None, leader=lambda: next(leaders), poll=0.0, timeout=3.0)
    outcome = driver.change("remove", 2)
    assert outcome.ok and outcome.attempts == 2 and outcome.leader == 3
    assert admin.asked[1][2] == {"id": 2, "timeout": 3.0}


def test_a_timed_out_change_is_not_asked_again_and_says_why(scripted):
    scripted({("a1", "add_member"): [{"error": "timeout"}]})
    driver = ChangeDriver(ADMIN, secret=None, leader=lambda: 1, poll=0.0, timeout=3.0)
    outcome = driver.change("add", 4, "127.0.0.1:9004")
    assert not outcome.ok and outcome.error == "timeout" and outcome.attempts == 1 and outcome.index is None


def test_a_change_is_given_up_when_nobody_leads_before_the_patience_runs_out(scripted):
    scripted({})
    driver = ChangeDriver(ADMIN, secret=None, leader=lambda: None, poll=0.0, timeout=3.0, patience=0.01)
    outcome = driver.change("remove", 2)
    assert not outcome.ok and outcome.error == "no_leader" and outcome.attempts == 0


def test_the_members_that_stand_come_from_the_leader_once_no_change_is_under_way(scripted):
    members = {"1": "x:1", "2": "x:2", "4": "x:4"}
    scripted({("a1", "members"): [
        {"node_id": 1, "leader_id": 1, "members": members, "membership_change": "pending",
         "configuration": {"index": 3, "term": 2, "committed": False}},
        # Inherited from an earlier leader, uncommitted, nothing under way: it stands.
        {"node_id": 1, "leader_id": 1, "members": members, "membership_change": None,
         "configuration": {"index": 3, "term": 2, "committed": False}}]})
    driver = ChangeDriver(ADMIN, secret=None, leader=lambda: 1, poll=0.0)
    assert driver.committed_members(float("inf")) == {1: "x:1", 2: "x:2", 4: "x:4"}


def test_members_are_not_taken_from_a_member_that_does_not_lead(scripted):
    scripted({("a2", "members"): [{"node_id": 2, "leader_id": 1, "members": {"2": "x:2"},
                                   "membership_change": None,
                                   "configuration": {"index": 1, "term": 1, "committed": True}}]})
    driver = ChangeDriver(ADMIN, secret=None, leader=lambda: 2, poll=0.0)
    assert driver.committed_members(0.0) is None


# ------------------------------------------------------------------------------------------------ checker


def entry(b: Builder, node: int, term: int, at: float, members: list[int], index: int, config_term: int,
          committed: bool, parent: Optional[tuple[int, int]] = None) -> Builder:
    return b.event(node, "membership", term, at, members={str(m): f"127.0.0.1:{9000 + m}" for m in members},
                   index=index, configuration_term=config_term, committed=committed,
                   parent=None if parent is None else list(parent), voter=node in members)


def change(op: str, node: int, ok: bool = True, seconds: float = 0.02, error: Optional[str] = None,
           attempts: int = 1) -> dict[str, Any]:
    return {"op": op, "node": node, "ok": ok, "error": error, "seconds": seconds, "attempts": attempts}


def grown() -> Builder:
    """Leader 1 of three stamps its term, adds fresh member 4, then removes member 3, which stops."""
    b = Builder(nodes=3).all_started()
    b.voted(2, 1, 1, 0.40).voted(3, 1, 1, 0.40).leads(1, 1, 0.45)
    entry(b, 1, 1, 1.00, [1, 2, 3], 1, 1, False, parent=(0, 0))
    entry(b, 2, 1, 1.01, [1, 2, 3], 1, 1, False)
    entry(b, 1, 1, 1.02, [1, 2, 3], 1, 1, True)
    b.event(4, "started", 0, 0.90, members={"1": "x", "2": "x", "3": "x"}, voter=False, join=True)
    entry(b, 1, 1, 1.03, [1, 2, 3, 4], 2, 1, False, parent=(1, 1))
    entry(b, 4, 1, 1.04, [1, 2, 3, 4], 2, 1, False)
    entry(b, 1, 1, 1.05, [1, 2, 3, 4], 2, 1, True)
    b.faults.append(FaultRecord(kind="add_member", start=T0 + 0.95, end=T0 + 1.1, targets=(4,),
                                detail={"changes": [change("add", 4, seconds=0.025)],
                                        "members": [1, 2, 3, 4]}))
    entry(b, 1, 1, 2.00, [1, 2, 4], 3, 1, False, parent=(1, 2))
    entry(b, 1, 1, 2.01, [1, 2, 4], 3, 1, True)
    b.stopped(3, 1, 2.5)
    b.faults.append(FaultRecord(kind="remove_member", start=T0 + 1.95, end=T0 + 2.6, targets=(3,),
                                detail={"changes": [change("remove", 3, seconds=0.012),
                                                    change("remove", 3, ok=False, error="timeout",
                                                           attempts=2)],
                                        "members": [1, 2, 4]}))
    b.healed = T0 + 2.6
    return b


def kinds(history_builder: Builder) -> list[str]:
    return [finding.kind for finding in check(history_builder.build()).findings]


def test_a_clean_run_of_changes_has_no_violation_and_reports_the_changes():
    history = grown().build()
    result = check(history)
    assert result.ok, result.violations
    assert result.changes["add"].committed == 1 and result.changes["add"].failed == 0
    assert result.changes["remove"].committed == 1 and result.changes["remove"].failed == 1
    assert result.changes["remove"].errors == {"timeout": 1} and result.changes["remove"].attempts == 3
    assert result.changes["add"].seconds is not None and result.changes["add"].seconds.median == 0.025
    report = format_report(history, result)
    assert "membership add: 1 committed, 0 failed" in report
    assert "membership remove: 1 committed, 1 failed (timeout 1)" in report
    assert "members at the end: 1, 2, 4" in report
    document = json.loads(json.dumps(history_to_json(history)))
    assert check(history_from_json(document)).stats == result.stats
    assert result.stats["changes"]["remove"]["errors"] == {"timeout": 1}


def test_a_member_that_leads_outside_its_own_configuration_is_a_violation():
    b = Builder(nodes=3).all_started()
    b.event(4, "started", 0, 0.90, members={"1": "x", "2": "x", "3": "x"}, voter=False, join=True)
    b.leads(4, 1, 0.95)  # the fresh member, still a catch-up member, took office
    assert kinds(b) == ["non_member_leader"]
    b = grown()
    b.event(3, "lost_leadership", 1, 2.2, lease_end=T0 + 2.2)
    entry(b, 3, 2, 2.1, [1, 2, 4], 3, 1, True)
    b.leads(3, 2, 2.3)  # the removed member, told of its removal, led anyway
    assert "non_member_leader" in kinds(b)


def test_changing_two_members_at_once_or_from_an_uncommitted_entry_is_a_violation():
    b = grown()
    entry(b, 1, 1, 3.0, [1, 5, 6], 4, 1, False, parent=(1, 3))
    assert "single_server" in kinds(b)
    b = grown()
    entry(b, 1, 1, 3.0, [1, 2, 4, 5], 4, 1, False, parent=(1, 3))  # (1, 4) not committed yet
    entry(b, 1, 1, 3.1, [1, 2, 4, 5, 6], 5, 1, False, parent=(1, 4))
    assert kinds(b) == ["uncommitted_change"]


def test_a_leader_holding_an_entry_older_than_a_committed_one_is_a_rollback():
    b = grown()
    b.kill(1, 3.0)
    entry(b, 2, 1, 3.1, [1, 2, 3, 4], 2, 1, False)  # member 2 reports the older entry (2 is a test
    b.voted(2, 2, 2, 3.2).voted(4, 2, 2, 3.2).leads(2, 2, 3.3)   # history: it never stored (1, 3))
    b.duration = 4.0
    assert "config_rollback" in kinds(b)


def test_a_restarted_member_whose_stored_entry_is_unknown_is_not_judged_by_its_last_report():
    """A member may store an entry and be killed before reporting it: after a restart its entry is unknown."""
    b = grown()
    b.kill(2, 3.0)
    entry(b, 2, 1, 2.9, [1, 2, 3, 4], 2, 1, False)  # its last report, before it stored (1, 3)
    b.started(2, 1, 3.1)
    b.kill(1, 3.2).voted(2, 2, 2, 3.3).voted(4, 2, 2, 3.3).leads(2, 2, 3.4)
    b.duration = 4.0
    assert kinds(b) == []


def test_a_removed_members_lease_still_counts():
    b = grown()
    b.event(3, "became_leader", 2, 2.7, leader=3)  # the removed member led and held a lease...
    b.voted(2, 3, 2, 2.8).voted(4, 3, 2, 2.8).leads(2, 3, 2.9)  # ...while member 2 led: an overlap
    b.duration = 4.0
    assert "lease_overlap" in kinds(b)


# ------------------------------------------------------------------------------------------------ processes


def test_a_short_run_of_membership_changes_against_member_processes_has_no_violation():
    kinds_run = ("membership", "kill", "partition")
    settings = NemesisSettings(nodes=5, transport="udp", seed=SEED, election_timeout=TIMEOUT,
                               heartbeat_interval=0.05, kinds=kinds_run,
                               **({"duration": SECONDS} if SECONDS else {"rounds": 7}))
    history = run_nemesis(settings)
    result = check(history)
    report = format_report(history, result)
    assert result.ok, report
    changed = [fault for fault in history.faults if fault.kind in MEMBERSHIP_KINDS]
    assert {fault.kind for fault in changed} == set(MEMBERSHIP_KINDS), report
    assert result.changes["add"].committed >= 1 and result.changes["remove"].committed >= 1, report
    for fault in changed:  # the count stays within bounds, and the runner followed the cluster
        assert fault.detail["settled"], fault
        assert 3 <= len(fault.detail["members"]) <= 7
    final = set(changed[-1].detail["members"])
    fresh = {node for fault in changed for node in fault.targets if node > settings.nodes}
    assert fresh, report
    # Every fresh member that the configuration lists took part as a voter: it reported that entry.
    for node in final & fresh:
        assert any(e.node == node and e.event == "membership" and e.record.get("voter")
                   for e in history.events), node
    # The removed members' processes were stopped: the last events of each are a stop or a kill.
    for node in {e.node for e in history.events} - final:
        stops = [e for e in history.events if e.node == node and e.event == "stopped"]
        assert stops or node in history.kills, node


def test_the_replay_command_of_a_run_with_membership_changes_names_its_kinds():
    history = attrs.evolve(grown().build(), kinds=ALL_KINDS)
    assert replay_command(history).endswith(f"--faults {','.join(ALL_KINDS)}")
    assert history_from_json(json.loads(json.dumps(history_to_json(history)))).kinds == ALL_KINDS
    assert "--faults" not in replay_command(attrs.evolve(history, kinds=FAULT_KINDS))


def test_the_command_line_takes_the_groups_and_names_an_unknown_kind(capsys):
    assert main(["nemesis", "--faults", "membership,meteor"]) == 2
    error = capsys.readouterr().err
    assert "faults" in error and "meteor" in error and "add_member" in error
