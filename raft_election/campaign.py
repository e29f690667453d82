"""A campaign: one round of asking the peers for votes or pre-votes, from its start to a win or its end.

The core starts one each time it becomes a pre-candidate or a candidate (Raft §5.2, thesis §9.6) and drops
it when it becomes a follower or leader.  A campaign remembers what it asks (one :class:`VoteRequest`,
repeated to the peers that have not granted it every heartbeat interval: Raft §5.1 retries RPCs), when it
started (the start of the winner's first lease, thesis §6.4.1), and the grants it got.  Whether a grant
counts toward the majority is the caller's to say (every grant does, unless fast failover says otherwise);
deciding on a win is the core's.
"""

from __future__ import annotations

from collections.abc import Iterable

from raft_election.messages import VoteRequest, VoteResponse

__all__ = ["Campaign", "ResendPace"]


class ResendPace:
    """How long a campaign waits for an answer before asking again, shared by the groups of one member.

    At least ``floor`` (the heartbeat interval); longer while answers come back slowly, like TCP's
    retransmission timeout (RFC 6298: the smoothed round trip plus four times its mean deviation).  Asking
    again before the first answer could arrive only adds load: when a thousand groups start at once on a
    loaded machine, round trips grow to hundreds of milliseconds, and repeats at a fixed interval would
    multiply the vote traffic that made them grow.  Samples are round trips of answers to requests that
    were sent once (Karn's rule: an answer to a repeated request does not say which send it answers).
    """

    def __init__(self, floor: float) -> None:
        self.floor = floor
        #: The current wait before a repeat (seconds).
        self.interval = floor
        self._smoothed: float = -1.0
        self._deviation = 0.0

    def sample(self, round_trip: float) -> None:
        """One measured round trip (seconds)."""
        if round_trip < 0.0:
            return
        if self._smoothed < 0.0:
            self._smoothed, self._deviation = round_trip, round_trip / 2
        else:
            self._deviation += (abs(self._smoothed - round_trip) - self._deviation) / 4
            self._smoothed += (round_trip - self._smoothed) / 8
        self.interval = max(self.floor, self._smoothed + 4 * self._deviation)


class Campaign:
    """The state of one campaign of server ``candidate_id``, started at ``now`` with ``request``."""

    def __init__(self, candidate_id: int, request: VoteRequest, now: float, resend_interval: float, *,
                 backoff: bool = False) -> None:
        #: What the campaign asks every peer.
        self.request = request
        #: When it started: the start of the first lease if it wins.
        self.started = now
        #: When to repeat the request to the peers whose grant has not counted yet.
        self.resend_at = now + resend_interval
        self._interval = resend_interval
        self._backoff = backoff  # double the interval after each repeat (many groups campaigning at once)
        #: No repeat was sent yet: an answer's round trip is a clean sample (see ResendPace).
        self.first_send = True
        self._candidate_id = candidate_id
        #: Who granted it (the candidate itself included), and which of those grants count.
        self.granted = {candidate_id}
        self.counted = {candidate_id}
        #: Who refused it (its latest answer).
        self.refused: set[int] = set()
        self._candidacy: dict[int, bool] = {}

    def answers(self, response: VoteResponse, *, pre_vote: bool) -> bool:
        """Whether ``response`` answers this campaign (a pre-vote one if ``pre_vote``), not an older one."""
        if response.pre_vote != pre_vote or response.round != self.request.round:
            return False
        # A grant echoes the term asked for; a refusal carries the voter's own term (a pre-vote's voter
        # did not move to the term asked about; a higher one has deposed the candidate before it counts).
        return response.term == self.request.term or not response.granted

    def add(self, voter: int, response: VoteResponse, *, counts: bool) -> bool:
        """Record ``voter``'s grant (``counts``: toward the majority); False if it adds nothing new."""
        if voter in self.granted and (not counts or voter in self.counted):
            return False
        self.refused.discard(voter)
        self.granted.add(voter)
        if counts:
            self.counted.add(voter)
        self._candidacy[voter] = response.candidate
        return True

    def refuse(self, voter: int) -> None:
        """Record ``voter``'s refusal (a grant it gave before still counts: its vote is not taken back)."""
        if voter not in self.granted:
            self.refused.add(voter)

    def repeat_to(self, peers: Iterable[int], now: float, *, skip_refused: bool = False) -> list[int]:
        """The ``peers`` to ask again now (their grant has not counted); the next repeat is due later.

        With ``skip_refused`` the peers that answered with a refusal are not asked again: their answer came,
        so nothing was lost on the way.
        """
        self.resend_at = now + self._interval
        self.first_send = False
        if self._backoff:
            self._interval *= 2
        return [peer for peer in peers
                if peer not in self.counted and not (skip_refused and peer in self.refused)]

    def can_win(self, members: Iterable[int], quorum: int) -> bool:
        """Whether grants of the ``members`` that have not refused could still make a ``quorum``."""
        return sum(1 for member in members if member not in self.refused) >= quorum

    def voters(self) -> dict[int, bool]:
        """The peers that granted, each with whether it stands for election itself (as its grant said)."""
        return {voter: self._candidacy.get(voter, False) for voter in self.granted - {self._candidate_id}}
