"""Cluster membership: the configuration is a replicated log of one entry (Ongaro's thesis, chapter 4).

There is no replicated log in a leader-election library, so the configuration is the only replicated
state.  It is kept as a log of one entry, ``(term, index, members)``: a :class:`Configuration`.  The rules,
each enforced by :class:`Membership` and the core:

* **Single-server changes** (thesis §4.1): a change adds or removes one member, so every majority of the
  old member set shares a member with every majority of the new one, and no joint consensus is needed.
* **Each server uses the latest entry it has, committed or not** (§4.1): for its majorities, for whom it
  sends to, whom it accepts votes from, and whether it stands for election itself.
* An entry is **committed** once a majority of *its own* members stored it (persisted, then reported in a
  heartbeat answer).  The leader replicates its latest entry in heartbeats to every member of the old and
  new member sets; followers learn from the heartbeats whether it is committed.  **One uncommitted change
  at a time**: the leader makes a change only once its latest entry is committed.
* **A new leader first commits an entry of its own term** (a stamp of the configuration it inherited, same
  members, next index) before it accepts any change.  Without it, a leader that inherited a committed
  configuration could commit a change that an older, uncommitted sibling change never saw, and the two
  member sets need not share a majority: the single-server-change bug reported on raft-dev in 2015
  (thesis errata).  ``tests/test_membership_sim.py`` shows the bug happening with the stamp turned off.
* **Votes carry the candidate's configuration version** ``(term, index)``, and a voter whose own entry is
  newer refuses, the log up-to-date rule (Raft §5.4.1) for a log of one entry: a member that missed a
  committed change cannot win and undo it.
* The entry is **persisted with** ``(current_term, voted_for)`` in one atomic write before it is
  acknowledged (:class:`~raft_election.hardstate.HardState`).
* **Servers outside the configuration** (thesis §4.2.3): a removed member stops standing for election once
  it learns of its removal, and every server ignores (pre-)vote requests from servers outside its latest
  configuration, so a removed member that never learns of its removal cannot raise anyone's term.
* **A new member** joins knowing the current members (``RaftConfig(join=True)``) and is a non-voting
  catch-up member until an entry that lists it reaches it: it never campaigns nor counts itself.  The
  leader, too, first has the new member answer a heartbeat round (§4.2.1's catch-up round; there is no log
  to catch up) before it creates the entry, so adding a member that is not running fails cleanly, without
  a pending change that would stall a cluster whose new majority needs it.
* **The leader may remove itself** (§4.2.2): while the entry that removes it is pending it does not count
  itself in majorities; once committed it hands leadership to a member of the new set, or steps down.

**Leases across changes.**  The lease argument of :mod:`raft_election.lease` needs one thing from
membership: the majority ``M`` that acknowledged a lease round of the leader of term ``T`` (counted in the
configuration that leader used) and the majority ``V`` that elected any leader of a later term while that
lease lasted share a member.  Let ``K`` be the latest entry committed before that later election.  The
later leader's configuration descends from ``K`` (a voter that stored ``K`` refuses an older one, and a
majority of ``K`` stored it).  Every entry descending from ``K`` that any server may hold then has the
members of ``K`` or of the one change ``K``'s creator made after it: any other creator of an entry must
first commit a stamp of its own term, which would be a later committed entry than ``K``.  The leader of
``T`` can get at most one change further while the later election happens, because committing a change
needs a majority of its members to store it in term ``T``, and one of them would have voted in the later
term first.  So ``M`` and ``V`` are majorities of member sets at most one change apart, which intersect;
the shared member acknowledged term ``T`` before it voted later, so it voted no earlier than
``election_timeout_min`` after the lease round, when the lease had run out.  The simulations check "at
most one lease holder at any instant" at every step with changes, crashes and partitions mixed in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Optional

import attrs

from raft_election.messages import check_index, check_term
from raft_election.peers import PeerMap, freeze_peers

__all__ = ["Configuration", "Membership", "Version"]

logger = logging.getLogger(__name__)

#: A configuration entry's ``(term, index)``: entries compare by it like log positions (Raft §5.4.1).
Version = tuple[int, int]


def _peer_map(value: object) -> PeerMap:
    return freeze_peers(value, "members")


@attrs.frozen(kw_only=True)
class Configuration:
    """One configuration entry: who the members are, and where it stands in the configuration log.

    Attributes:
        term: the term of the leader that created the entry (0 for the seed from ``RaftConfig.peers``).
        index: its position in the configuration log (0 for the seed); each entry is one past its parent.
        members: ``{node id: address}`` of every member (a ``PeerMap``).
    """

    term: int = attrs.field(default=0, validator=check_term)
    index: int = attrs.field(default=0, validator=check_index)
    members: PeerMap = attrs.field(converter=_peer_map)

    @property
    def version(self) -> Version:
        """``(term, index)``: a later entry has a greater version (compared like a log's last entry)."""
        return (self.term, self.index)

    @property
    def quorum(self) -> int:
        """A strict majority of the members."""
        return len(self.members) // 2 + 1

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.members

    def as_pairs(self) -> tuple[tuple[int, str], ...]:
        """The members as a heartbeat carries them: ``(id, address)`` pairs in id order."""
        return tuple(self.members.items())

    def child(self, term: int, members: Mapping[int, str]) -> Configuration:
        """The next entry, created by the leader of ``term`` with ``members``."""
        return Configuration(term=term, index=self.index + 1, members=members)

    def __str__(self) -> str:
        return f"{sorted(self.members)} (index {self.index}, term {self.term})"


class Membership:
    """What one server knows of the configuration (see the module docstring for the rules).

    Args:
        node_id: this server.
        seed: the configuration from ``RaftConfig`` (version ``(0, 0)``; without this server for a member
            that joins).  Used only if nothing was stored.
        stored: the entry persisted by an earlier run, if any.
    """

    def __init__(self, node_id: int, seed: Configuration, stored: Optional[Configuration]) -> None:
        self._id = node_id
        #: The latest entry this server has: the one it uses.
        self.config = stored if stored is not None else seed
        #: The latest entry this server knows to be committed (the seed counts as committed: every member
        #: starts from it; a stored entry is not known to be, until a leader says so).
        self.committed_entry: Optional[Configuration] = seed if stored is None else None
        #: The entry the latest one replaced, while it matters (the leader sends to its members too).
        self.previous: Optional[Configuration] = None
        #: Every address this server has known, latest first on conflicts: whom it may hear from.
        self._addresses: dict[int, str] = {}
        self._learn(seed.members)
        self._learn(self.config.members)
        # Leader only: the version each peer reported storing, and members being caught up or leaving.
        self._stored: dict[int, Version] = {}
        #: A member being added that must answer a round before its entry is created: ``(id, address)``.
        self.learner: Optional[tuple[int, str]] = None
        #: A change waiting for this leader's first entry of its term to commit: ``(kind, id, address)``.
        self.wanted: Optional[tuple[str, int, str]] = None
        self._departing: dict[int, float] = {}  # removed members still sent to, until when (inf: pending)
        self._leader_term = -1  # the term this server leads, or -1

    # ------------------------------------------------------------------ what the server uses

    @property
    def voter(self) -> bool:
        """Whether this server is a member of its latest entry: only then does it stand or count itself."""
        return self._id in self.config

    @property
    def committed(self) -> Version:
        """The version of :attr:`committed_entry`, or ``(-1, -1)`` when none is known."""
        entry = self.committed_entry
        return entry.version if entry is not None else (-1, -1)

    @property
    def is_committed(self) -> bool:
        """Whether the latest entry is known to be committed."""
        return self.committed == self.config.version

    @property
    def stamping(self) -> bool:
        """Whether the latest entry is a stamp: the members of the entry it replaced, one index further."""
        previous = self.previous
        return (previous is not None and self.config.index == previous.index + 1
                and dict(previous.members) == dict(self.config.members))

    @property
    def quorum(self) -> int:
        """A strict majority of the latest entry's members."""
        return self.config.quorum

    def voters(self) -> frozenset[int]:
        """The latest entry's members other than this server (whose grants and acks count)."""
        return frozenset(member for member in self.config.members if member != self._id)

    def addresses(self) -> dict[int, str]:
        """Every member this server may exchange messages with, and its address (for the transport)."""
        return dict(self._addresses)

    def known(self, sender: int) -> bool:
        """Whether ``sender`` was ever a member this server knew of (else its messages are unknown)."""
        return sender in self._addresses

    def up_to_date(self, version: Version) -> bool:
        """Whether a candidate whose entry has ``version`` is at least as up to date as we are (§5.4.1)."""
        return version >= self.config.version

    def recipients(self, now: float) -> tuple[int, ...]:
        """Whom a leader sends heartbeats to: its members, departing members and a learner, in id order."""
        targets = set(self.voters())
        targets.update(peer for peer, until in self._departing.items() if now < until)
        if self.learner is not None:
            targets.add(self.learner[0])
        targets.discard(self._id)
        return tuple(sorted(targets))

    def needs_entry(self, peer: int) -> bool:
        """Whether a leader's heartbeat to ``peer`` must carry the whole entry (it has not stored it)."""
        return self._stored.get(peer) != self.config.version

    # ------------------------------------------------------------------ followers

    def adopt(self, entry: Configuration, term: int) -> bool:
        """Take the entry the leader of ``term`` sent, unless it is an older one of the same leader.

        Raft's followers take the leader's log; for a log of one entry that means replacing ours, except
        that a delayed message of the same leader may carry an entry it has since replaced (entries of
        term ``term`` are this leader's, and their indexes only grow).  An entry we replace was never
        committed: the leader holds every committed entry or a descendant of it (leader completeness), so
        a committed entry of ours is the leader's or an ancestor of it, with a smaller version.

        Returns:
            Whether the latest entry changed.
        """
        current = self.config
        if entry.version == current.version:
            return False
        if current.term == term and entry.index < current.index:
            return False
        self._replace(entry)
        return True

    def take_newer(self, entry: Configuration) -> None:
        """Take ``entry``, newer than ours, from a voter that refused us with it (see the core)."""
        assert entry.version > self.config.version
        self._replace(entry)

    def follow(self, entry: Configuration, committed: bool) -> bool:
        """Use ``entry``, the latest entry of the default group on this server (an election group's view).

        Election groups share the member set of the default group, which alone replicates and commits
        entries (see :mod:`raft_election.groups`); a group's core takes whatever that group holds, newer or,
        when a new leader replaced an uncommitted entry, older.  Returns whether the latest entry changed.
        """
        changed = entry is not self.config
        if changed:
            self._replace(entry)
        self.committed_entry = entry if committed else None
        return changed

    def learn_committed(self, version: Version) -> bool:
        """The leader says the entry ``version`` is committed; True if that is news about our latest."""
        if version == self.config.version and self.committed != version:
            self.committed_entry = self.config
            return True
        return False

    # ------------------------------------------------------------------ the leader

    @property
    def learner_change(self) -> Optional[tuple[str, int, str]]:
        """The catch-up under way as a change, ``("add", id, address)``, or None."""
        return ("add", *self.learner) if self.learner is not None else None

    def took_office(self, term: int) -> None:
        """Lead ``term``: forget what followers stored under an earlier leader (this one asks afresh)."""
        self._leader_term = term
        self._stored.clear()
        self.learner = None
        self.wanted = None

    def left_office(self) -> None:
        """Drop a change not yet made and the departing members (the next leader sends its own entry)."""
        self._leader_term = -1
        self.learner = None
        self.wanted = None
        self._departing.clear()

    def abandon(self, node_id: int) -> bool:
        """Give up a change about ``node_id`` whose entry does not exist yet; True if there was one."""
        if self.learner is not None and self.learner[0] == node_id:
            self.learner = None
            return True
        if self.wanted is not None and self.wanted[1] == node_id:
            self.wanted = None
            return True
        return False

    def create(self, entry: Configuration, now: float) -> bool:
        """Make ``entry`` (a child of the latest) the latest; True if that alone commits it.

        Members it removes are still sent heartbeats, so they learn of their removal, until they report
        storing it or ``election_timeout_max`` after it commits (see :meth:`acknowledged`).
        """
        removed = set(self.config.members) - set(entry.members) - {self._id}
        self._replace(entry)
        self._departing = dict.fromkeys(removed, float("inf"))
        return self._check_commit()

    def acknowledged(self, peer: int, version: Version) -> bool:
        """``peer`` reported storing the entry ``version``; True if the latest entry is committed now."""
        self._stored[peer] = version
        if version == self.config.version:
            self._departing.pop(peer, None)
        return not self.is_committed and self._check_commit()

    def committed_at(self, now: float, linger: float) -> None:
        """The latest entry just committed: keep telling departing members for ``linger`` seconds only."""
        for peer in self._departing:
            self._departing[peer] = min(self._departing[peer], now + linger)

    def _check_commit(self) -> bool:
        """Whether a majority of the latest entry's members stored it: committed, if it is this leader's.

        Only entries of the leader's own term are committed by counting (Raft §5.4.2: an older entry
        stored on a majority may still be replaced by a sibling of a later term); an older one commits
        with the first entry of this term that descends from it.
        """
        entry = self.config
        if entry.term != self._leader_term:
            return False
        stored = sum(1 for member in entry.members
                     if member == self._id or self._stored.get(member) == entry.version)
        if stored >= entry.quorum:
            self.committed_entry = entry
            return True
        return False

    # ------------------------------------------------------------------ internals

    def _replace(self, entry: Configuration) -> None:
        self.previous = self.config
        self.config = entry
        self._learn(entry.members)

    def _learn(self, members: Mapping[int, str]) -> None:
        """Remember ``members``' addresses; an address now given to another id is no longer the old one's."""
        for node_id, address in members.items():
            for other in [other for other, known in self._addresses.items()
                          if known == address and other != node_id]:
                del self._addresses[other]
            self._addresses[node_id] = address

    def catch_up(self, node_id: int, address: str) -> None:
        """Start sending heartbeats to ``node_id`` at ``address``, a member to add once it answers one."""
        self.learner = (node_id, address)
        self._learn({node_id: address})

    def forget_learner(self) -> None:
        """A catch-up that was abandoned (timed out, or the change was given up)."""
        self.learner = None


def members_of(pairs: Iterable[tuple[int, str]]) -> dict[int, str]:
    """A heartbeat's ``(id, address)`` pairs as a mapping."""
    return dict(pairs)
