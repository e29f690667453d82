"""Coalesced heartbeats: one round per member and peer for every election group the member leads.

A member that leads many groups would otherwise send one heartbeat per group, peer and interval, and
every follower would answer each: the cost grows with the number of groups.  Instead the groups a member
leads are *carried* (:meth:`~raft_election.core.RaftCore.carry`) by the member's own rounds:

* The leader keeps the groups it leads in **chunks** of a few hundred, each with a version that changes
  whenever its list of ``(group, term)`` changes (a group joins when its leadership begins and leaves when
  it ends).  Every heartbeat interval it sends each peer one :class:`~raft_election.messages.Beat` per
  chunk, numbered with the member's round; the chunk's list travels only while that peer has not
  acknowledged the chunk's current version.  So an idle cluster exchanges a few small messages per peer
  and interval, however many groups it runs.
* A follower takes a listed chunk as it would take each group's heartbeat, one by one through the group's
  core (it follows the group's leader in that term, adopting the term if need be); the groups it then
  follows at the listed terms are carried, the others are *refused*, with the follower's own term for each.
  Every later Beat of that version counts, for each carried group, as a heartbeat of its leader arriving
  then (Raft §5.2; stickiness, thesis §4.2.3), and is answered with a
  :class:`~raft_election.messages.BeatAck` that repeats the refusals.  A follower acknowledges only a
  version whose list it holds; otherwise it asks for the list.
* For the leader, an acknowledgement of version ``v`` of a chunk, sent at ``t``, is an acknowledgement
  of a round sent at ``t`` by every group that joined the chunk at version ``v`` or earlier and is still in
  it (a group never leaves a chunk without a new version): the lease of such a group may rest on it
  (thesis §6.4.1), exactly as on an acknowledgement of the group's own round.  A refusal takes the group
  out of the chunk (and its own heartbeats resume); one with a higher term makes its core adopt it and
  step down (Raft §5.1).

Nothing per group happens in a steady round: a carried core is brought up to date (its lease, its last
contact with its leader) only when something calls into it, and the member watches the deadlines that
matter for all of them at once: a leader's lapsing leases, a silent leader's followers (they are handed
back their own election timers, restarted from the last round heard), check-quorum, and probes for fast
failover.  The bookkeeping is here; :class:`~raft_election.groups.GroupSet` drives it with the cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Optional

import attrs

from raft_election.messages import MAX_ENTRIES_SIZE, MAX_ROUND, Beat, BeatAck, entry_size

__all__ = ["ROUNDS_KEPT", "Chunk", "LeaderRounds", "View"]

#: How many member rounds a leader remembers the send time of (acknowledgements of older ones are stale).
ROUNDS_KEPT = 64

_NEVER = -math.inf


@attrs.define
class Chunk:
    """Some of the groups a member leads, sent together: ``{group: term}`` and the version of that list."""

    id: int
    version: int = 1
    entries: dict[str, int] = attrs.field(factory=dict)
    #: The version at which each group joined (acknowledgements of that version or later cover it).
    joined: dict[str, int] = attrs.field(factory=dict)
    size: int = 0


class LeaderRounds:
    """The leader's side: its chunks, its rounds, and what each peer acknowledged of each chunk.

    Args:
        first_round: the round number to count from (random, like the core's, so that a restarted member's
            rounds are not mistaken for its previous incarnation's).
        budget: the most bytes of encoded entries one chunk holds (one Beat must fit one message).
    """

    def __init__(self, first_round: int, budget: int = MAX_ENTRIES_SIZE) -> None:
        self._budget = budget
        self._chunks: dict[int, Chunk] = {}
        self._where: dict[str, int] = {}
        self._next_chunk = (first_round >> 1) + 1  # random: a restarted member's chunks are new ones
        self._round = first_round & MAX_ROUND
        self._sent: dict[int, float] = {}
        self.latest_sent = _NEVER
        #: ``(peer, chunk) -> (version, round sent at, answered at)`` of the newest acknowledged round.
        self._acked: dict[tuple[int, int], tuple[int, float, float]] = {}
        #: ``(peer, chunk) -> version`` whose list the peer holds (it acknowledged it without asking).
        self._known: dict[tuple[int, int], int] = {}
        #: When each peer last answered any round.
        self.heard: dict[int, float] = {}
        #: ``(peer, chunk)`` whose latest answer said it stands in every group of the chunk it follows.
        self._stands: set[tuple[int, int]] = set()
        self._answers = 0  # answers recorded so far: a cached start is current while this is unchanged
        self._starts: dict[int, tuple[object, int, float]] = {}  # chunk -> (key, version floor, start)

    # ------------------------------------------------------------------ the groups carried

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._where)

    def names(self) -> Iterator[str]:
        """The groups carried now."""
        return iter(self._where)

    def term(self, name: str) -> int:
        """The term ``name`` is carried at."""
        return self._chunks[self._where[name]].entries[name]

    def chunk_of(self, name: str) -> int:
        """The id of the chunk that carries ``name``."""
        return self._where[name]

    def carries(self, chunk: int, name: str) -> bool:
        """Whether chunk ``chunk`` carries ``name`` now."""
        found = self._chunks.get(chunk)
        return found is not None and name in found.entries

    def add(self, name: str, term: int) -> None:
        """Carry ``name``, led at ``term``, from the next round on (its chunk's version changes)."""
        size = entry_size(name)
        chunk = next((chunk for chunk in self._chunks.values() if chunk.size + size <= self._budget), None)
        if chunk is None:
            chunk = Chunk(id=self._next_chunk)
            self._next_chunk = (self._next_chunk + 1) & MAX_ROUND
            self._chunks[chunk.id] = chunk
        else:
            chunk.version += 1
        chunk.entries[name] = term
        chunk.joined[name] = chunk.version
        chunk.size += size
        self._where[name] = chunk.id

    def remove(self, name: str) -> None:
        """Stop carrying ``name`` (its chunk's version changes; an emptied chunk is gone for good)."""
        chunk = self._chunks[self._where.pop(name)]
        del chunk.entries[name]
        del chunk.joined[name]
        chunk.size -= entry_size(name)
        chunk.version += 1
        if not chunk.entries:
            del self._chunks[chunk.id]
            self._starts.pop(chunk.id, None)
            for key in [key for key in self._acked if key[1] == chunk.id]:
                del self._acked[key]
            for key in [key for key in self._known if key[1] == chunk.id]:
                del self._known[key]

    # ------------------------------------------------------------------ rounds

    def round(self, now: float, peers: Iterable[int], value: bytes,
              config: tuple[int, int] = (0, 0)) -> list[tuple[int, Beat]]:
        """Start a round at ``now``: every chunk's Beat for every peer (listed if the peer needs the list)."""
        self._round = (self._round + 1) & MAX_ROUND
        round_ = self._round
        self._sent[round_] = now
        if len(self._sent) > ROUNDS_KEPT:
            del self._sent[next(iter(self._sent))]
        self.latest_sent = now
        beats: list[tuple[int, Beat]] = []
        for chunk in self._chunks.values():
            plain = Beat(round=round_, chunk=chunk.id, version=chunk.version, config_term=config[0],
                         config_index=config[1])
            listed: Optional[Beat] = None
            for peer in peers:
                if self._known.get((peer, chunk.id)) == chunk.version:
                    beats.append((peer, plain))
                    continue
                if listed is None:
                    listed = Beat(round=round_, chunk=chunk.id, version=chunk.version, listed=True,
                                  value=value, entries=tuple(chunk.entries.items()),
                                  config_term=config[0], config_index=config[1])
                beats.append((peer, listed))
        return beats

    def sent_at(self, round_: int) -> Optional[float]:
        """When ``round_`` was sent, if it is one of the rounds remembered (an answer to it may count)."""
        return self._sent.get(round_)

    def acknowledged(self, peer: int, ack: BeatAck, now: float) -> bool:
        """Record ``peer``'s answer; False (recording nothing) for an unknown round or a chunk now gone."""
        sent_at = self._sent.get(ack.round)
        if sent_at is None:
            return False
        # It answered a round of ours: it is alive and hears us, whatever became of the chunk since.
        self.heard[peer] = max(self.heard.get(peer, _NEVER), now)
        chunk = self._chunks.get(ack.chunk)
        if chunk is None or ack.version > chunk.version:
            return False
        key = (peer, ack.chunk)
        if ack.stands:
            self._stands.add(key)
        else:
            self._stands.discard(key)
        if ack.need:
            self._known.pop(key, None)
            return True
        self._known[key] = ack.version
        previous = self._acked.get(key)
        if previous is None or sent_at > previous[1]:
            self._acked[key] = (ack.version, sent_at, now)
            self._answers += 1
        return True

    def start(self, name: str, voters: frozenset[int], quorum: int, counts_self: bool) -> float:
        """The send time of the latest round covering ``name`` that a majority acknowledged (-inf: none).

        A round covers ``name`` for a peer that acknowledged a version of its chunk no older than the one
        ``name`` joined at; the leader's own latest round counts for itself (it sent it).
        """
        chunk_id = self._where.get(name)
        if chunk_id is None:
            return _NEVER
        joined = self._chunks[chunk_id].joined[name]
        floor, start = self.shared_start(chunk_id, voters, quorum, counts_self)
        if joined <= floor:
            return start
        return self._start_from(chunk_id, joined, voters, quorum, counts_self)

    def shared_start(self, chunk_id: int, voters: frozenset[int], quorum: int,
                     counts_self: bool) -> tuple[int, float]:
        """The start most groups of ``chunk_id`` share, and the newest version it covers: ``(floor, start)``.

        Every group that joined the chunk at version ``floor`` or earlier has :meth:`start` ``start`` (each
        voter acknowledged that version or a newer one); a later one has its own, never later.  Usually
        every group is of the first kind, so this is computed once per answer or round, not once per group.
        """
        if chunk_id not in self._chunks:
            return -1, _NEVER
        key = (chunk_id, voters, quorum, counts_self, self.latest_sent, self._answers)
        cached = self._starts.get(chunk_id)
        if cached is None or cached[0] != key:
            floor = min((acked[0] for peer in voters if (acked := self._acked.get((peer, chunk_id)))),
                        default=-1)
            cached = (key, floor, self._start_from(chunk_id, -1, voters, quorum, counts_self))
            self._starts[chunk_id] = cached
        return cached[1], cached[2]

    def joined(self, name: str) -> int:
        """The version of its chunk at which ``name`` joined it."""
        return self._chunks[self._where[name]].joined[name]

    def _start_from(self, chunk_id: int, joined: int, voters: Iterable[int], quorum: int,
                    counts_self: bool) -> float:
        times = [self.latest_sent] if counts_self else []
        for peer in voters:
            acked = self._acked.get((peer, chunk_id))
            if acked is not None and acked[0] >= joined:
                times.append(acked[1])
        if len(times) < quorum:
            return _NEVER
        times.sort(reverse=True)
        return times[quorum - 1]

    def stands(self, peer: int, name: str) -> bool:
        """Whether ``peer``'s latest answer for ``name``'s chunk said it stands in every group it follows."""
        chunk_id = self._where.get(name)
        return chunk_id is not None and (peer, chunk_id) in self._stands

    def answered(self, name: str) -> dict[int, float]:
        """When each peer last answered a round covering ``name`` (for check-quorum and transfer targets)."""
        chunk_id = self._where.get(name)
        if chunk_id is None:
            return {}
        joined = self._chunks[chunk_id].joined[name]
        return {peer: acked[2] for (peer, chunk), acked in self._acked.items()
                if chunk == chunk_id and acked[0] >= joined}

    def best_start(self, chunk: int, voters: frozenset[int], quorum: int, counts_self: bool) -> float:
        """The latest :meth:`start` of any group of ``chunk`` (the one that joined first): -inf if none."""
        found = self._chunks.get(chunk)
        if found is None or not found.entries:
            return _NEVER
        return self.start(next(iter(found.entries)), voters, quorum, counts_self)

    def quorum_heard(self, voters: Iterable[int], quorum: int, counts_self: bool, since: float) -> bool:
        """Whether a majority (this member included, if it is one) answered some round since ``since``."""
        heard = int(counts_self) + sum(1 for peer in voters if self.heard.get(peer, _NEVER) >= since)
        return heard >= quorum


@attrs.define
class View:
    """A follower's view of one chunk of one leader: the version it holds and what it made of the list."""

    version: int
    #: The groups it follows the leader in, carried: ``{group: (term, candidate)}``.
    accepted: dict[str, tuple[int, bool]] = attrs.field(factory=dict)
    #: The groups of the list it does not follow at the listed term: ``{group: its own term}``.
    refused: dict[str, int] = attrs.field(factory=dict)
    #: When the latest round of this version arrived.
    heard: float = _NEVER
    #: The list of this version, as sent.
    listed: Mapping[str, int] = attrs.field(factory=dict)
    #: The leader's rounds stopped for longer than ``election_timeout_min``: the accepted groups run their
    #: own timers until a round of this version comes again.
    silent: bool = False
    _stands: Optional[tuple[int, bool]] = None  # (len(accepted) when computed, the answer)

    def stands(self) -> bool:
        """Whether this member stands in every group of the chunk it follows.

        Cached by the number of accepted groups: once a view is built its groups only ever leave it (a
        group whose candidacy changes is refused and leaves), and their candidacy is never rewritten.
        """
        cached = self._stands
        if cached is None or cached[0] != len(self.accepted):
            cached = (len(self.accepted), all(candidate for _, candidate in self.accepted.values()))
            self._stands = cached
        return cached[1]
