"""The one invariant checker (raft_election.invariants): each rule, named after it, on hand-made histories.

Where the four earlier reconstructions of "who led when" disagreed (the simulation oracle, the nemesis
checker, ``MemberProcesses.leaderships()`` and the process tests' own kill handling), the test says which
copy did what and checks the one rule kept.  No clocks, no processes.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from raft_election.events import BecameLeader, LeaseLost, LeaseRegained, LostLeadership
from raft_election.invariants import (
    LeaseInterval,
    SafetyChecker,
    current_holder,
    lease_overlaps,
    replay_member_events,
)
from raft_election.oracle import ElectionOracle
from raft_election.processes import MemberEvent


def line(node: int, event: str, term: int, at: float, **record: Any) -> MemberEvent:
    """One ``raft-election run --json`` event line of member ``node`` at ``at``."""
    return MemberEvent(node=node, event=event, term=term, leader=None, monotonic=at,
                       record={"event": event, "node": node, "term": term, "monotonic": at, **record},
                       received=at)


Span = tuple[int, int, float, Optional[float], Optional[str]]


def spans(intervals: tuple[LeaseInterval, ...]) -> list[Span]:
    """Each interval as (node, term, start, end, ended_by)."""
    return [(i.node, i.term, i.start, i.end, i.ended_by) for i in intervals]


def pairs(safety: SafetyChecker, end_of_run: Optional[float] = None) -> list[tuple[int, ...]]:
    return [finding.nodes for finding in safety.overlaps(end_of_run)]


# ---------------------------------------------------------------------------------------------- overlaps


def test_every_overlapping_pair_of_different_nodes_is_reported():
    """The oracle compared each leadership only with the one seen so far that ends last, so it missed 3's
    overlap with 1 hidden behind 2: now every pair is reported, once."""
    safety = SafetyChecker()
    for node, term, start, end in [(1, 1, 0.0, 10.0), (2, 2, 1.0, 12.0), (3, 3, 5.0, 6.0)]:
        safety.became_leader(node, term, start)
        safety.lost_leadership(node, term, end)
    assert pairs(safety) == [(1, 2), (1, 3), (2, 3)]
    first = safety.overlaps()[0]
    assert (first.kind, first.at, first.until) == ("lease_overlap", 1.0, 10.0)
    assert "member 1 term 1" in first.message and "member 2 term 2" in first.message
    assert "9000.0 ms" in first.message


def test_touching_leases_and_an_empty_lease_do_not_overlap():
    safety = SafetyChecker()
    safety.became_leader(1, 1, 0.0)
    safety.lost_leadership(1, 1, 2.0)
    safety.became_leader(2, 2, 2.0)  # begins where 1's ended
    safety.lost_leadership(2, 2, 3.0)
    safety.became_leader(3, 3, 2.5)
    safety.lost_leadership(3, 3, 2.5)  # never held a lease
    assert safety.overlaps() == []


def test_an_end_before_the_start_is_an_empty_interval():
    """The oracle kept a lease_end before the start as it was (an interval ending before it began), which
    its sweep then reported as overlapping a lease around that start; the checker took the start."""
    safety = SafetyChecker()
    safety.became_leader(2, 2, 0.5)
    safety.lost_leadership(2, 2, 1.5)
    safety.became_leader(1, 3, 1.0)
    safety.lost_leadership(1, 3, 0.9)
    assert spans(safety.intervals()) == [(2, 2, 0.5, 1.5, "lost_leadership"),
                                         (1, 3, 1.0, 1.0, "lost_leadership")]
    assert safety.overlaps() == []


def test_a_nodes_leadership_ends_at_its_next_became_leader_so_its_own_leaderships_never_overlap():
    """The nemesis checker compared (node, term) pairs, so a node's term 1 left unended until the end of
    the run overlapped its own term 2; the oracle closed it at the node's next became_leader, now the rule
    everywhere.  Another node's overlap with both is still reported against each."""
    events = [line(1, "became_leader", 1, 0.5), line(1, "became_leader", 2, 1.0)]
    safety = replay_member_events(events)
    assert spans(safety.intervals(end_of_run=5.0)) == [(1, 1, 0.5, 1.0, "next_leadership"),
                                                       (1, 2, 1.0, 5.0, "end_of_run")]
    assert pairs(safety, end_of_run=5.0) == []
    safety.became_leader(2, 3, 0.8)
    assert pairs(safety, end_of_run=5.0) == [(1, 2), (2, 1)]


def test_an_open_leadership_lasts_for_ever_unless_the_history_has_an_end():
    """``MemberProcesses.leaderships()`` left an unended leadership open (None), the nemesis checker ended
    it at the end of the run: open without an end, ``end_of_run`` with one; open counts as for ever."""
    safety = replay_member_events([line(1, "became_leader", 1, 0.5), line(2, "became_leader", 2, 100.0)])
    assert [(i.open, i.end, i.ended_by) for i in safety.intervals()] == [(True, None, None)] * 2
    (overlap,) = safety.overlaps()
    assert overlap.nodes == (1, 2) and overlap.until is None and "from 100.000000 on" in overlap.message
    assert spans(safety.intervals(end_of_run=10.0)) == [(1, 1, 0.5, 10.0, "end_of_run"),
                                                        (2, 2, 100.0, 100.0, "end_of_run")]
    assert safety.overlaps(end_of_run=10.0) == []


# ---------------------------------------------------------------------------------------------- interval ends


def test_a_lost_leadership_ends_only_the_leadership_of_its_own_term():
    """``MemberProcesses.leaderships()`` closed a member's interval on a lost_leadership of any term."""
    safety = replay_member_events([line(1, "became_leader", 2, 0.5),
                                   line(1, "lost_leadership", 1, 1.0, lease_end=0.9)])
    (lead,) = safety.intervals()
    assert lead.open
    safety.became_leader(2, 3, 2.0)
    assert pairs(safety) == [(1, 2)]


def test_a_lost_leadership_ends_at_its_lease_end_not_when_it_was_reported():
    safety = replay_member_events([line(1, "became_leader", 1, 0.5),
                                   line(1, "lost_leadership", 1, 3.0, lease_end=2.0)])
    assert spans(safety.intervals()) == [(1, 1, 0.5, 2.0, "lost_leadership")]


def test_a_restart_ends_the_old_process_leadership_and_a_late_lost_leadership_is_ignored():
    """A lost_leadership belongs to the process that reported it: ``MemberProcesses.leaderships()`` ignored
    ``started`` and let the lost_leadership after it extend the old interval to its lease end."""
    safety = replay_member_events([line(1, "became_leader", 3, 0.5), line(1, "started", 3, 2.0),
                                   line(1, "lost_leadership", 3, 3.5, lease_end=3.0)])
    assert spans(safety.intervals()) == [(1, 3, 0.5, 2.0, "restarted")]


def test_a_kill_ends_only_the_leadership_of_the_process_it_killed():
    """The nemesis checker and the process tests took the node's first kill after the start whatever
    happened in between: a leader that stopped, restarted and was killed as leader again seemed to lead
    through both, overlapping the leader in between.  A kill counts up to the node's next ``started``."""
    events = [line(1, "started", 0, 0.0), line(1, "became_leader", 1, 0.5), line(1, "stopped", 1, 4.0),
              line(2, "became_leader", 2, 4.5), line(2, "lost_leadership", 2, 5.5, lease_end=5.5),
              line(1, "started", 2, 5.0), line(1, "became_leader", 3, 6.0)]
    safety = replay_member_events(events, kills={1: [7.0]})
    assert spans(safety.intervals()) == [(1, 1, 0.5, 4.0, "stopped"), (2, 2, 4.5, 5.5, "lost_leadership"),
                                         (1, 3, 6.0, 7.0, "kill")]
    assert safety.overlaps() == []


def test_a_kill_before_a_restart_ends_the_leadership_there():
    """Killed at 2.0 and restarted at 2.5: the kill, not the restart, ends it; a kill before the start or
    after the next start belongs to another process."""
    events = [line(1, "started", 0, 0.0), line(1, "started", 0, 0.2), line(1, "became_leader", 1, 0.5),
              line(1, "started", 1, 2.5)]
    safety = replay_member_events(events, kills={1: [4.0, 0.1, 2.0]})
    assert spans(safety.intervals()) == [(1, 1, 0.5, 2.0, "kill")]


def test_a_killed_leaders_interval_ends_at_the_kill_without_an_end_of_history():
    """``MemberProcesses.leaderships()`` left a killed leader open; the process tests closed it themselves."""
    safety = replay_member_events([line(1, "became_leader", 1, 0.5)], kills={1: [2.0]})
    assert spans(safety.intervals()) == [(1, 1, 0.5, 2.0, "kill")]


def test_a_kill_before_the_start_does_not_end_the_leadership():
    """Only a kill at or after the start ends it (an earlier one killed a process whose restart is not in
    the history); live, a crash before the start does not end it either."""
    safety = replay_member_events([line(1, "started", 0, 0.0), line(1, "became_leader", 1, 0.5)],
                                  kills={1: [0.3]})
    assert [lead.open for lead in safety.intervals()] == [True]
    safety.killed(1, 0.4)
    assert [lead.open for lead in safety.intervals()] == [True]


def test_the_live_oracle_and_the_replay_of_member_events_rebuild_the_same_intervals():
    oracle = ElectionOracle()
    oracle.became_leader(1, 1, 0.5)
    oracle.lost_leadership(1, 1, 1.0)
    oracle.became_leader(2, 2, 1.5)
    oracle.node_crashed(2, 3.0)
    oracle.became_leader(3, 3, 3.5)
    oracle.became_leader(3, 4, 4.0)
    replayed = replay_member_events(
        [line(1, "became_leader", 1, 0.5), line(1, "lost_leadership", 1, 1.2, lease_end=1.0),
         line(2, "became_leader", 2, 1.5), line(3, "became_leader", 3, 3.5),
         line(3, "became_leader", 4, 4.0)],
        kills={2: [3.0]})
    assert oracle.leaderships == list(replayed.intervals())
    assert spans(replayed.intervals()) == [(1, 1, 0.5, 1.0, "lost_leadership"), (2, 2, 1.5, 3.0, "kill"),
                                           (3, 3, 3.5, 4.0, "next_leadership"), (3, 4, 4.0, None, None)]


# ------------------------------------------------------------------------------------ elections, votes


def test_one_leader_per_term_reports_each_second_winner_once():
    """The oracle reported every became_leader of a second winner, the checker each (term, node) once."""
    safety = SafetyChecker()
    assert safety.became_leader(1, 3, 1.0) == []
    (second,) = safety.became_leader(2, 3, 2.0)
    assert second.kind == "election_safety" and second.nodes == (1, 2)
    assert "two leaders in term 3: member 1 at 1.000000 and member 2 at 2.000000" in second.message
    assert safety.became_leader(2, 3, 2.5) == []  # the same second winner again
    assert safety.became_leader(1, 3, 3.0) == []  # the first winner again: not two leaders
    assert [f.nodes for f in safety.became_leader(3, 3, 4.0)] == [(1, 3)]
    assert len(safety.findings) == 2 and safety.winners() == {3: 1}


def test_one_vote_per_term_counts_every_record_of_a_vote_and_reports_each_new_candidate_once():
    """The oracle saw persisted votes only and reported a repeated second vote each time; the checker saw
    ``voted`` and ``started`` lines and reported each new candidate once.  All three count, once."""
    safety = SafetyChecker()
    assert safety.voted(2, 5, 1, source="persisted") == []
    assert safety.voted(2, 5, 1, source="voted", at=1.0) == []
    (double,) = safety.voted(2, 5, 3, source="started", at=2.0)
    assert double.kind == "double_vote" and double.nodes == (2,) and double.at == 2.0
    assert "member 2 voted in term 5 for 1 (persisted) and for 3 (started at 2.000000)" in double.message
    assert "voted twice in term 5" in double.message
    assert safety.voted(2, 5, 3, source="persisted") == []  # the same second candidate again
    assert [f.message.count("for 4") for f in safety.voted(2, 5, 4, source="voted", at=3.0)] == [1, 1]
    assert safety.voted(2, 6, 4, source="voted") == [] and safety.voted(3, 5, 4, source="voted") == []


def test_a_restarted_members_stored_vote_counts_against_its_earlier_votes():
    events = [line(3, "voted", 4, 1.0, candidate=1), line(3, "started", 4, 2.0, voted_for=2)]
    (double,) = replay_member_events(events, kills={3: [1.5]}).findings
    assert ("member 3 voted in term 4 for 1 (voted at 1.000000) and for 2 (started at 2.000000)"
            in double.message)


def test_a_persisted_term_never_goes_back():
    safety = SafetyChecker()
    assert safety.persisted_term(1, 4) == [] and safety.persisted_term(1, 4) == []
    (back,) = safety.persisted_term(1, 2)
    assert back.kind == "term_regression" and "member 1's term went back from 4 to 2" in back.message
    assert safety.persisted_term(2, 1) == []  # another node's term is its own


# ----------------------------------------------------------------------------------- instants, fencing


def test_at_most_one_lease_holder_at_any_instant():
    safety = SafetyChecker(time_format=lambda at: f"t={at:.1f}s")
    assert safety.lease_holders(1.0, [2]) == [] and safety.lease_holders(1.0, []) == []
    (two,) = safety.lease_holders(1.5, [3, 1])
    assert two.kind == "lease_overlap" and two.nodes == (1, 3)
    assert two.message == "lease_overlap: 2 lease holders at t=1.5s: [1, 3]"


def test_fencing_tokens_increase_and_one_token_is_accepted_from_one_node_only():
    safety = SafetyChecker()
    for at, node, token, accepted in [(1.0, 1, 1, True), (1.5, 1, 1, True), (2.0, 2, 2, True),
                                      (2.5, 1, 1, False)]:
        assert safety.wrote(node, token, at, accepted=accepted) == []
    (stale,) = safety.wrote(1, 1, 3.0, accepted=True)
    assert stale.kind == "fencing" and stale.nodes == (2, 1)
    assert "token 1 accepted at 3.000000 after token 2 (member 2)" in stale.message
    (shared,) = safety.wrote(3, 2, 3.5, accepted=True)
    assert shared.nodes == (2, 3) and "token 2 accepted from member 2" in shared.message


# ---------------------------------------------------------------------------------------------- who leads now


def test_the_current_holder_is_the_latest_leadership_if_still_open_and_its_member_alive():
    """The nemesis runner's own guess at who leads now, derived from the same intervals."""
    alive = {1, 2, 3}.__contains__
    paused_then_replaced = replay_member_events([line(1, "became_leader", 1, 0.5),
                                                 line(2, "became_leader", 2, 2.0)])
    assert current_holder(paused_then_replaced.intervals(), alive) == 2
    assert current_holder(paused_then_replaced.intervals(), {1, 3}.__contains__) is None
    killed = replay_member_events([line(1, "became_leader", 1, 0.5), line(2, "became_leader", 2, 2.0)],
                                  kills={2: [3.0]})
    assert current_holder(killed.intervals(), alive) is None  # not the stale member 1
    lost = replay_member_events([line(1, "became_leader", 1, 0.5),
                                 line(1, "lost_leadership", 1, 1.0, lease_end=1.0)])
    assert current_holder(lost.intervals(), alive) is None
    assert current_holder((), alive) is None


@pytest.mark.parametrize("end", [None, 10.0])
def test_lease_overlaps_of_given_intervals_are_between_different_nodes(end):
    intervals = [LeaseInterval(node=1, term=1, start=0.0, end=end, ended_by=None if end is None else "kill"),
                 LeaseInterval(node=1, term=3, start=4.0, end=4.5, ended_by="stopped"),  # 1 with itself
                 LeaseInterval(node=2, term=2, start=5.0, end=6.0, ended_by="stopped")]
    (overlap,) = lease_overlaps(intervals, time_format=lambda at: f"{at:g}")
    assert overlap.nodes == (1, 2) and overlap.until == 6.0 and "for 1000.0 ms" in overlap.message
    assert "member 1 term 1 [0, " + ("open) (still held)" if end is None else "10) (kill)") in overlap.message


# ---------------------------------------------------------------------------------------------- lease gaps


def test_a_lease_gap_splits_one_office_into_two_intervals_of_one_term():
    """Thesis §6.4.1: ``lease_lost`` ends the interval at its lease end, ``lease_regained`` begins another of
    the same term (``resumed``), and the office's ``lost_leadership`` then ends that one."""
    safety = replay_member_events([line(1, "became_leader", 1, 0.5),
                                   line(1, "lease_lost", 1, 1.3, lease_end=1.2),
                                   line(1, "lease_regained", 1, 1.4),
                                   line(1, "lost_leadership", 1, 2.0, lease_end=2.0)])
    assert spans(safety.intervals()) == [(1, 1, 0.5, 1.2, "lease_lost"), (1, 1, 1.4, 2.0, "lost_leadership")]
    assert [interval.resumed for interval in safety.intervals()] == [False, True]
    assert safety.findings == [] and safety.check_intervals() == []


def test_a_lost_leadership_after_a_gap_does_not_reopen_or_move_the_gap():
    """An office left during a gap (``had_lease`` False) ends nothing more: the interval ended at the gap."""
    safety = replay_member_events([line(1, "became_leader", 1, 0.5),
                                   line(1, "lease_lost", 1, 1.3, lease_end=1.2),
                                   line(1, "lost_leadership", 1, 1.8, lease_end=1.2, had_lease=False)])
    assert spans(safety.intervals()) == [(1, 1, 0.5, 1.2, "lease_lost")]


def test_a_lease_regained_in_another_nodes_term_is_an_election_safety_violation():
    safety = SafetyChecker()
    safety.became_leader(1, 1, 0.5)
    (finding,) = safety.lease_regained(2, 1, 1.0)
    assert finding.kind == "election_safety" and finding.nodes == (1, 2)


def test_leases_never_go_back_to_a_lower_term():
    """The token rule across gaps: once another node held a lease of a higher term, a lease of a lower term
    beginning later (a regain, or a late report of a win) is a ``lease_order`` violation, reported once per
    pair; a node's own earlier term, and leases in rising terms, are fine."""
    safety = SafetyChecker()
    safety.became_leader(1, 1, 0.0)
    safety.lease_lost(1, 1, 1.0)
    safety.became_leader(2, 2, 2.0)
    safety.lost_leadership(2, 2, 3.0)
    assert safety.check_intervals() == []
    safety.lease_regained(1, 1, 4.0)
    safety.lease_lost(1, 1, 5.0)
    (finding,) = safety.check_intervals()
    assert (finding.kind, finding.nodes, finding.at) == ("lease_order", (2, 1), 4.0)
    assert "member 1 term 1 [4.000000, 5.000000)" in finding.message
    assert "member 2 term 2" in finding.message


def test_the_oracle_records_lease_gaps_from_core_events():
    oracle = ElectionOracle()
    for event in [BecameLeader(term=1, at=0.5), LeaseLost(term=1, at=1.3, lease_end=1.2),
                  LeaseRegained(term=1, at=1.4),
                  LostLeadership(term=1, at=2.0, lease_end=2.0, reason="stopped")]:
        oracle.record(1, event, clock=lambda at: at + 100.0)
    assert [(i.start, i.end, i.ended_by) for i in oracle.leaderships] == [
        (100.5, 101.2, "lease_lost"), (101.4, 102.0, "lost_leadership")]
    oracle.check_intervals()
