"""Message statistics a node keeps beside its core: messages by type, last contact, heartbeat round trips.

Instrumentation, not algorithm: nothing here decides anything, so it lives in the node (which sees every
message the core sends and receives, and the member-level Beats and BeatAcks it exchanges itself) rather
than in the core.  The figures appear in :meth:`RaftNode.status` (``counters`` and ``round_trip``); the
benchmarks read them from there.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Mapping
from typing import Optional, Protocol

from raft_election.messages import (
    Beat,
    BeatAck,
    Heartbeat,
    HeartbeatResponse,
    Resign,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    WireMessage,
)

__all__ = ["MESSAGE_KINDS", "ROUND_TRIP_SAMPLES", "Addressed", "MessageStats"]

#: How many recent heartbeat round trips :meth:`MessageStats.round_trip` takes the median of.
ROUND_TRIP_SAMPLES = 32
#: How many heartbeat rounds' send times are remembered for matching acknowledgements.
_ROUNDS_KEPT = 64

#: The name of each kind of message in counters (``<kind>_sent``, ``<kind>_received``) and metrics labels.
MESSAGE_KINDS: Mapping[type[WireMessage], str] = {
    VoteRequest: "vote_requests",
    VoteResponse: "vote_responses",
    Heartbeat: "heartbeats",
    HeartbeatResponse: "heartbeat_responses",
    TimeoutNow: "timeout_nows",
    Resign: "resigns",
    Beat: "beats",
    BeatAck: "beat_acks",
}
#: The counter each kind of message sent adds to, besides ``messages_sent`` (messages per election are
#: the vote requests and responses sent).
_SENT_COUNTER = {cls: f"{kind}_sent" for cls, kind in MESSAGE_KINDS.items()}
#: Likewise for the valid messages handed to the core (``messages_received`` is the core's own count).
_RECEIVED_COUNTER = {cls: f"{kind}_received" for cls, kind in MESSAGE_KINDS.items()}


class Addressed(Protocol):
    """Anything sent that carries a message.

    The core's :class:`~raft_election.output.Outgoing`, or the :class:`~raft_election.messages.Envelope`
    of a member-level message (:class:`Beat`, :class:`BeatAck`) that the node sends itself.
    """

    @property
    def message(self) -> WireMessage:
        """The message sent."""


class MessageStats:
    """Counts the messages a node's core sends, by type, and times its heartbeat rounds as leader.

    Not thread-safe: the node calls it with its state lock held.
    """

    def __init__(self) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self._rounds: dict[int, float] = {}  # heartbeat round -> when the core sent it
        self._round_trips: collections.deque[float] = collections.deque(maxlen=ROUND_TRIP_SAMPLES)
        #: When a valid message from each peer last reached the core.
        self.last_heard: dict[int, float] = {}

    def sent(self, messages: Iterable[Addressed], now: float) -> None:
        """The core (or the node, for member-level messages) asked, at ``now``, for ``messages`` to be sent.

        Only :class:`Heartbeat` rounds are timed: a :class:`Beat`'s round is the node's own counter, which
        may coincide with a core's heartbeat round, so it is counted but never matched.
        """
        for outgoing in messages:
            message = outgoing.message
            self.counters["messages_sent"] += 1
            self.counters[_SENT_COUNTER[type(message)]] += 1
            if isinstance(message, Heartbeat) and message.round not in self._rounds:
                self._rounds[message.round] = now
                if len(self._rounds) > _ROUNDS_KEPT:
                    del self._rounds[next(iter(self._rounds))]

    def received(self, sender: int, message: WireMessage, now: float) -> None:
        """The core was handed ``message`` from peer ``sender`` at ``now``; an acked round is a round trip."""
        self.counters[_RECEIVED_COUNTER[type(message)]] += 1
        self.last_heard[sender] = now
        if isinstance(message, HeartbeatResponse):
            sent_at = self._rounds.get(message.round)
            if sent_at is not None:
                self._round_trips.append(now - sent_at)

    def leadership_ended(self) -> None:
        """Answers to the rounds of a leadership that ended are no round trips of a current one."""
        self._rounds.clear()

    def round_trip(self) -> Optional[float]:
        """The median of the recent heartbeat round trips (send to acknowledgement), seconds; None before."""
        return statistics.median(self._round_trips) if self._round_trips else None
