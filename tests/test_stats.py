"""The node's message statistics (``raft_election.stats``): messages sent by type, heartbeat round trips."""

from __future__ import annotations

import pytest

from raft_election.messages import Heartbeat, HeartbeatResponse, Resign, VoteRequest, VoteResponse
from raft_election.output import Outgoing
from raft_election.stats import ROUND_TRIP_SAMPLES, MessageStats


def _out(*messages: object) -> list[Outgoing]:
    return [Outgoing(to=2, message=message) for message in messages]  # type: ignore[arg-type]


def test_every_message_sent_is_counted_in_total_and_by_type():
    stats = MessageStats()
    stats.sent(_out(VoteRequest(term=1, round=1), VoteRequest(term=1, round=1),
                    VoteResponse(term=1, round=1, granted=True), Resign(term=1)), 0.0)
    assert stats.counters == {"messages_sent": 4, "vote_requests_sent": 2, "vote_responses_sent": 1,
                              "resigns_sent": 1}


def test_a_round_trip_runs_from_the_heartbeat_round_to_its_acknowledgement():
    stats = MessageStats()
    assert stats.round_trip() is None
    stats.sent(_out(Heartbeat(term=1, round=7), Heartbeat(term=1, round=7)), 1.0)  # one round, two peers
    stats.received(2, HeartbeatResponse(term=1, round=7, candidate=True), 1.25)
    stats.received(2, HeartbeatResponse(term=1, round=7, candidate=True), 1.75)
    stats.received(2, HeartbeatResponse(term=1, round=8, candidate=True), 2.0)  # a round it never sent
    assert stats.round_trip() == pytest.approx(0.5)  # the median of 0.25 and 0.75


def test_round_trips_are_the_median_of_the_latest_samples():
    stats = MessageStats()
    for round_ in range(ROUND_TRIP_SAMPLES):
        stats.sent(_out(Heartbeat(term=1, round=round_)), float(round_))
        stats.received(2, HeartbeatResponse(term=1, round=round_, candidate=True), round_ + 10.0)
    for round_ in range(100, 100 + ROUND_TRIP_SAMPLES):  # as many fast ones push the slow ones out
        stats.sent(_out(Heartbeat(term=1, round=round_)), float(round_))
        stats.received(2, HeartbeatResponse(term=1, round=round_, candidate=True), round_ + 0.001)
    assert stats.round_trip() == pytest.approx(0.001)


def test_answers_to_a_leadership_that_ended_are_no_round_trips():
    stats = MessageStats()
    stats.sent(_out(Heartbeat(term=1, round=3)), 1.0)
    stats.leadership_ended()
    stats.received(2, HeartbeatResponse(term=1, round=3, candidate=True), 9.0)
    assert stats.round_trip() is None


def test_messages_received_are_counted_by_type_and_each_peer_last_heard_from_is_kept():
    stats = MessageStats()
    stats.received(2, Heartbeat(term=1, round=1), 1.0)
    stats.received(3, VoteRequest(term=2, round=1), 2.0)
    stats.received(2, Heartbeat(term=1, round=2), 3.0)
    assert stats.counters == {"heartbeats_received": 2, "vote_requests_received": 1}
    assert stats.last_heard == {2: 3.0, 3: 2.0}
