"""The leader's value (SPEC §5, etcd's ``Campaign(value)`` / ``Leader()``): a leader publishes a small value
(its application's address, say) with its heartbeats, and every member knows the value of the leader it
follows.

Rules: a leader's heartbeats carry its current value; a follower reports ``LeaderValue`` when it first
hears its leader's value and whenever the value changes, never for a leader whose value it has not heard,
and ``(None, term, None)`` once it knows no leader; a leader reports its own value when it takes office and
when it changes it.  A message that does not come from the follower's leader of its term changes nothing.
"""

from __future__ import annotations

from raft_election.events import LeaderChanged, LeaderValue
from raft_election.messages import Heartbeat, Resign
from raft_election.storage import HardState
from tests.coretools import STEP, elect, events, make_core, messages, only

START = 1.0
TERM = 3


def test_a_leaders_heartbeats_carry_its_value_and_a_new_value_goes_out_with_the_next_round():
    core = make_core(members=3, hard_state=HardState(term=TERM))
    assert events(core.set_value(b"http://10.0.0.1:8080", 0.0), LeaderValue) == []  # not leading: unreported
    election = elect(core, now=START)
    assert only(messages(election.winning_output, Heartbeat, to=2)).value == b"http://10.0.0.1:8080"
    assert events(election.outputs, LeaderValue) == [
        LeaderValue(leader_id=1, term=TERM + 1, value=b"http://10.0.0.1:8080")]
    out = core.set_value(b"http://10.0.0.1:9090", election.won_at + STEP)
    assert events(out, LeaderValue) == [LeaderValue(leader_id=1, term=TERM + 1, value=b"http://10.0.0.1:9090")]
    assert messages(out, Heartbeat) == []  # no extra round: it waits for the heartbeat timer
    beat = only(messages(core.tick(core.next_deadline), Heartbeat, to=3))
    assert beat.value == b"http://10.0.0.1:9090" and core.leader_value == b"http://10.0.0.1:9090"


def test_a_follower_learns_its_leaders_value_once_and_each_change():
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    outs = [core.receive(1, Heartbeat(term=TERM, round=k, value=b"a:1"), START + k * STEP) for k in range(3)]
    assert events(outs, LeaderValue) == [LeaderValue(leader_id=1, term=TERM, value=b"a:1")]
    assert core.leader_value == b"a:1"
    out = core.receive(1, Heartbeat(term=TERM, round=9, value=b"a:2"), START + 4 * STEP)
    assert events(out, LeaderValue) == [LeaderValue(leader_id=1, term=TERM, value=b"a:2")]
    out = core.receive(1, Heartbeat(term=TERM, round=10, value=b""), START + 5 * STEP)
    assert events(out, LeaderValue) == [LeaderValue(leader_id=1, term=TERM, value=b"")]


def test_a_new_leader_is_reported_with_its_value_only_once_heard_and_a_lost_leader_as_none():
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    core.receive(1, Heartbeat(term=TERM, round=1, value=b"a:1"), START)
    # Member 3 won term TERM + 1: its first heartbeat brings the new leader and its value together.
    out = core.receive(3, Heartbeat(term=TERM + 1, round=1, value=b"c:3"), START + STEP)
    assert events(out, LeaderChanged) == [LeaderChanged(leader_id=3, term=TERM + 1)]
    assert events(out, LeaderValue) == [LeaderValue(leader_id=3, term=TERM + 1, value=b"c:3")]
    out = core.tick(core.election_deadline)  # no heartbeat for a whole timeout: no leader known
    assert events(out, LeaderValue) == [LeaderValue(leader_id=None, term=TERM + 1, value=None)]
    assert core.leader_value is None and core.leader_id is None


def test_a_leader_learned_without_a_heartbeat_has_no_value_until_one_comes():
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM), pre_vote=False)
    core.receive(1, Heartbeat(term=TERM, round=1, value=b"a:1"), START)
    # The leader resigns in favour of 3 (a transfer): 2 forgets 1, and its value.
    out = core.receive(1, Resign(term=TERM, successor=3), START + STEP)
    assert events(out, LeaderValue) == [LeaderValue(leader_id=None, term=TERM, value=None)]
    assert core.leader_value is None


def test_a_heartbeat_of_a_stale_term_changes_no_value():
    core = make_core(node_id=2, members=3, hard_state=HardState(term=TERM))
    core.receive(1, Heartbeat(term=TERM, round=1, value=b"a:1"), START)
    out = core.receive(3, Heartbeat(term=TERM - 1, round=5, value=b"evil"), START + STEP)
    assert events(out, LeaderValue) == [] and core.leader_value == b"a:1"
