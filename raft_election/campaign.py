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

__all__ = ["Campaign"]


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
        self._candidate_id = candidate_id
        #: Who granted it (the candidate itself included), and which of those grants count.
        self.granted = {candidate_id}
        self.counted = {candidate_id}
        self._candidacy: dict[int, bool] = {}

    def answers(self, response: VoteResponse, *, pre_vote: bool) -> bool:
        """Whether ``response`` answers this campaign (a pre-vote one if ``pre_vote``), not an older one."""
        return (response.pre_vote == pre_vote and response.term == self.request.term
                and response.round == self.request.round)

    def add(self, voter: int, response: VoteResponse, *, counts: bool) -> bool:
        """Record ``voter``'s grant (``counts``: toward the majority); False if it adds nothing new."""
        if voter in self.granted and (not counts or voter in self.counted):
            return False
        self.granted.add(voter)
        if counts:
            self.counted.add(voter)
        self._candidacy[voter] = response.candidate
        return True

    def repeat_to(self, peers: Iterable[int], now: float) -> list[int]:
        """The ``peers`` to ask again now (their grant has not counted); the next repeat is due later."""
        self.resend_at = now + self._interval
        if self._backoff:
            self._interval *= 2
        return [peer for peer in peers if peer not in self.counted]

    def voters(self) -> dict[int, bool]:
        """The peers that granted, each with whether it stands for election itself (as its grant said)."""
        return {voter: self._candidacy.get(voter, False) for voter in self.granted - {self._candidate_id}}
