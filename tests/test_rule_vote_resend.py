"""A campaign repeats its vote request every heartbeat interval to the peers that have not granted it.

Raft §5.1 retries RPCs that get no answer.  Without the repeat, one lost request or answer (a datagram
dropped, a ZeroMQ connection still being made between members started a moment apart) costs a whole
election timeout and a new term; a leadership transfer then ends one term later than it should.
"""

from __future__ import annotations

import pytest

from raft_election.core import RaftCore
from raft_election.events import BecameLeader
from raft_election.messages import Heartbeat, VoteRequest, VoteResponse
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.coretools import config_of, events, grant, make_core, messages, only, recipients

START = 1.0  # past any start-up deadline of the tests' cores


def campaign(members: int, *, pre_vote: bool) -> tuple[RaftCore, float, VoteRequest]:
    """A core of a ``members`` cluster that just started campaigning; also when, and what it asked node 2."""
    core = make_core(members=members, pre_vote=pre_vote, hard_state=HardState(term=3))
    started = max(START, core.next_deadline)
    out = core.tick(started)
    return core, started, only(messages(out, VoteRequest, to=2))


@pytest.mark.parametrize("pre_vote", [True, False])
def test_the_request_is_repeated_unchanged_every_heartbeat_interval_until_the_timeout(pre_vote):
    core, started, request = campaign(3, pre_vote=pre_vote)
    interval = config_of(core).heartbeat_interval
    timeout = core.election_deadline
    now, repeats = started, 0
    while True:
        assert core.next_deadline == pytest.approx(min(now + interval, timeout))
        now = core.next_deadline
        if now >= timeout:
            break
        out = core.tick(now)
        assert messages(out, VoteRequest) == [request, request]  # same term, round and flags, to 2 and 3
        assert recipients(out, VoteRequest) == [2, 3]
        assert out.hard_state is None  # a repeat raises nothing
        repeats += 1
    assert repeats >= 1
    assert core.counters["vote_requests_resent"] == 2 * repeats


def test_peers_that_granted_are_not_asked_again():
    core, started, request = campaign(5, pre_vote=True)
    core.receive(2, grant(request), started + 0.001)
    out = core.tick(core.next_deadline)
    assert recipients(out, VoteRequest) == [3, 4, 5]


def test_a_lost_answer_is_made_up_by_the_repeat_and_the_election_ends_in_the_same_term():
    core, started, request = campaign(3, pre_vote=False)
    # Node 2's first answer is lost.  It answers the repeat as it answered the first request.
    voter = make_core(node_id=2, members=3, pre_vote=False, hard_state=HardState(term=3))
    at = started + 10.0  # past the voter's own start-up stickiness window
    first = only(messages(voter.receive(1, request, at), VoteResponse))
    assert first.granted and voter.voted_for == 1
    repeat = only(messages(core.tick(core.next_deadline), VoteRequest, to=2))
    again = only(messages(voter.receive(1, repeat, at + 0.01), VoteResponse))
    assert again == first and voter.counters["votes_granted"] == 2
    out = core.receive(2, again, core.next_deadline - 0.001)
    assert events(out, BecameLeader) and core.term == request.term
    # A leader sends heartbeats, never vote requests.
    out = core.tick(core.next_deadline)
    assert core.role is Role.LEADER and messages(out, VoteRequest) == []


def test_a_repeat_from_another_candidate_of_the_same_term_is_still_refused():
    voter = make_core(node_id=3, members=3, pre_vote=False, hard_state=HardState(term=4, voted_for=1))
    out = voter.receive(2, VoteRequest(term=4, round=9), 10.0)
    assert not only(messages(out, VoteResponse)).granted
    out = voter.receive(2, VoteRequest(term=4, round=9), 10.05)
    assert not only(messages(out, VoteResponse)).granted and voter.voted_for == 1


@pytest.mark.parametrize("pre_vote", [True, False])
def test_repeats_stop_when_the_campaign_ends(pre_vote):
    core, started, _ = campaign(3, pre_vote=pre_vote)
    # A heartbeat of a leader of the proposed term ends the campaign: no more repeats afterwards.
    core.receive(3, Heartbeat(term=4, round=1), started + 0.001)
    assert core.role is Role.FOLLOWER
    assert core.next_deadline > started + config_of(core).heartbeat_interval  # no repeat is due
    out = core.tick(started + config_of(core).heartbeat_interval)
    assert messages(out, VoteRequest) == []
