"""One description of network faults, shared by every fault injector of the library.

:class:`NetworkFaults` is a small immutable value that says what a network does to messages right now:
which links are cut (partitions, isolations, one-way blocks) and what happens at random to the rest (loss,
duplication, reordering, delay).  The three fault injectors apply it with the same semantics:

* the deterministic simulation (:class:`raft_election.sim.SimulatedCluster`),
* the in-memory network of the threaded tests (:class:`transports.memory.InMemoryNetwork`),
* the nemesis's member processes, each of which applies its own share of it (the peers it cannot reach,
  the loss and the delay: :meth:`NetworkFaults.cut_from`, :class:`raft_election.nemesis.faults.LinkFaults`).

The first two take the same controls through :class:`FaultControls` (``partition``, ``isolate``,
``rejoin``, ``block``, ``unblock``, ``heal``, ``can_reach`` and the random settings).

**Overlapping cuts** (the one rule; it was the in-memory network's, documented since it was written):

* A *partition* is a list of disjoint groups: a message passes only between two nodes of one group, and
  a node in no group reaches no one.  A new partition *replaces* the previous partition and leaves
  isolations and blocks as they are.
* An *isolation* cuts one node off from every other node, both ways.  It stays, through any number of
  partitions, until that node rejoins or the network heals.
* A *block* cuts one direction, ``src -> dst``.  It stays until it is unblocked or the network heals.
* Cuts add up: a message passes only if none of them stops it.  A node is never cut off from itself by a
  partition or an isolation; only an explicit block ``(n, n)`` does that.
* *Heal* removes every cut at once; loss, duplication, reordering and delay stay as they are.

**Random faults**, for a message that no cut stops: it is lost with probability ``drop_rate``; if not, it
is delivered twice with probability ``duplicate_rate``; each copy is delayed by ``uniform(*delay)``
seconds and, with probability ``reorder_rate``, held back a further ``uniform(0, max(delay max,
REORDER_MIN_WINDOW))`` so that later messages overtake it.  :meth:`NetworkFaults.copy_delays` makes those
draws, in that order, from the caller's seeded ``random.Random`` (the reordering draw only while
``reorder_rate > 0``, so a simulation that does not reorder replays its seeds as it always did).

Every value is validated when a :class:`NetworkFaults` is made, by one checker per kind of field (a
probability, a delay range, node ids), which the nemesis's faults file uses too.  An invalid value raises
:class:`~raft_election.errors.ConfigError` (a ``ValueError``) naming the field, the value and the fix.

This module only describes and decides; it has no clock, no thread and no I/O.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Optional

import attrs

from raft_election.errors import ConfigError
from raft_election.messages import MAX_NODE_ID

if TYPE_CHECKING:
    import random

__all__ = [
    "NO_NETWORK_FAULTS",
    "REORDER_MIN_WINDOW",
    "FaultControls",
    "NetworkFaults",
    "check_delay",
    "check_node_id",
    "check_node_ids",
    "check_probability",
]

#: Smallest window for the extra delay of a reordered message, so reordering shows even with
#: ``delay == (0, 0)``: a reordered copy is held back by up to this long and later ones overtake it.
REORDER_MIN_WINDOW = 0.005

#: A cut link: messages from the first node to the second are dropped.
Link = tuple[int, int]


# ---------------------------------------------------------------------------------------- checkers


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_probability(field: str, value: object) -> float:
    """``value`` as a float probability in [0, 1] (booleans, strings, NaN and infinities are refused).

    Raises:
        ConfigError: ``value`` is not a probability; the error names ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(field, f"must be a probability between 0 and 1 (0.1: one message in ten), "
                                 f"got {value!r}")
    return float(value)


def check_delay(field: str, value: object) -> tuple[float, float]:
    """``value`` as a ``(min, max)`` pair of float seconds with ``0 <= min <= max`` (a list is accepted).

    Raises:
        ConfigError: ``value`` is not such a pair; the error names ``field``.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = value
        if _is_number(low) and _is_number(high) and 0.0 <= low <= high:
            return (float(low), float(high))
    raise ConfigError(field, f"must be a pair (min, max) of seconds with 0 <= min <= max, got {value!r}; "
                             "use (0, 0) for no delay")


def check_node_id(field: str, value: object) -> int:
    """``value`` as a node id: an int in ``[1, MAX_NODE_ID]`` (booleans are refused).

    Raises:
        ConfigError: ``value`` is not a node id; the error names ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NODE_ID:
        raise ConfigError(field, f"node ids are ints in [1, {MAX_NODE_ID}], got {value!r}")
    return value


def check_node_ids(field: str, value: object) -> frozenset[int]:
    """``value`` (a list, tuple, set or other collection of node ids; not a string) as a frozenset.

    Raises:
        ConfigError: ``value`` is not a collection, or holds something that is not a node id; the error
            names ``field``.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(field, f"must be a collection of node ids such as [2, 3], got {value!r}")
    items = list(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_NODE_ID:
            raise ConfigError(field, f"node ids are ints in [1, {MAX_NODE_ID}], got {item!r} in {value!r}")
    return frozenset(items)


def _check_links(field: str, value: object) -> frozenset[Link]:
    """``value`` (a collection of ``(src, dst)`` pairs of node ids) as a frozenset of tuples."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(field, f"must be a collection of (src, dst) pairs of node ids, got {value!r}")
    links = []
    for pair in value:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(field, f"each cut is a pair (src, dst) of node ids, got {pair!r}")
        links.append((check_node_id(field, pair[0]), check_node_id(field, pair[1])))
    return frozenset(links)


def _check_partition(field: str, value: object) -> Optional[tuple[frozenset[int], ...]]:
    """``value`` (None, or a collection of disjoint groups of node ids) as a tuple of non-empty groups."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(field, f"must be None (no partition) or a list of groups of node ids such as "
                                 f"[{{1, 2}}, {{3}}], got {value!r}")
    groups = [check_node_ids(field, group) for group in value]
    seen: set[int] = set()
    for group in groups:
        overlap = group & seen
        if overlap:
            raise ConfigError(field, f"node {min(overlap)} appears in more than one group; give each node "
                                     "one group (a node in no group reaches no one)")
        seen |= group
    return tuple(group for group in groups if group)


# ---------------------------------------------------------------------------------------- the value


@attrs.frozen(init=False)
class NetworkFaults:
    """What a network does to messages: its cuts and its random faults (see the module docstring).

    Args (keyword only; every one is validated, see the module docstring for the semantics):
        partition: None (no partition), or disjoint groups of node ids; a node in no group reaches no one.
            Empty groups are dropped.
        isolated: nodes cut off from every other node, both ways.
        blocked: ``(src, dst)`` links cut one way.
        drop_rate: probability that a message no cut stops is lost.
        duplicate_rate: probability that a message not lost is delivered twice.
        reorder_rate: probability that a copy is held back so that later messages overtake it.
        delay: ``(min, max)`` seconds between sending a copy and delivering it.

    Raises:
        ConfigError: a value is invalid; ``field`` names it.

    The methods that change something (:meth:`partitioned`, :meth:`with_isolated`, :meth:`rejoined`,
    :meth:`with_blocked`, :meth:`unblocked`, :meth:`healed`) return a new value.
    """

    partition: Optional[tuple[frozenset[int], ...]]
    isolated: frozenset[int]
    blocked: frozenset[Link]
    drop_rate: float
    duplicate_rate: float
    reorder_rate: float
    delay: tuple[float, float]

    def __init__(
        self,
        *,
        partition: Optional[Iterable[Iterable[int]]] = None,
        isolated: Iterable[int] = frozenset(),
        blocked: Iterable[Link] = frozenset(),
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.__attrs_init__(
            partition=_check_partition("partition", partition),
            isolated=check_node_ids("isolated", isolated),
            blocked=_check_links("blocked", blocked),
            drop_rate=check_probability("drop_rate", drop_rate),
            duplicate_rate=check_probability("duplicate_rate", duplicate_rate),
            reorder_rate=check_probability("reorder_rate", reorder_rate),
            delay=check_delay("delay", delay),
        )

    # ---------------------------------------------------------------- cuts

    def can_reach(self, src: int, dst: int) -> bool:
        """Whether the cuts let messages from ``src`` reach ``dst`` (random faults are not considered)."""
        if (src, dst) in self.blocked:
            return False
        if src == dst:
            return True
        if src in self.isolated or dst in self.isolated:
            return False
        if self.partition is None:
            return True
        return any(src in group and dst in group for group in self.partition)

    def cut_from(self, src: int, ids: Iterable[int]) -> frozenset[int]:
        """The nodes among ``ids`` that messages from ``src`` cannot reach (``src``'s share of the cuts)."""
        return frozenset(dst for dst in ids if not self.can_reach(src, dst))

    def cuts(self, ids: Iterable[int]) -> frozenset[Link]:
        """Every ``(src, dst)`` link among ``ids`` that is cut (spelt out, e.g. for blackhole routes)."""
        members = list(ids)
        return frozenset((src, dst) for src in members for dst in self.cut_from(src, members))

    def partitioned(self, *groups: Iterable[int]) -> NetworkFaults:
        """These faults with ``groups`` as the partition (replacing any previous one; other cuts stay)."""
        return attrs.evolve(self, partition=groups)

    def with_isolated(self, node_id: int) -> NetworkFaults:
        """These faults with ``node_id`` cut off from every other node, both ways."""
        return attrs.evolve(self, isolated=self.isolated | {check_node_id("isolated", node_id)})

    def rejoined(self, node_id: int) -> NetworkFaults:
        """These faults without the isolation of ``node_id`` (partitions and blocks stay)."""
        return attrs.evolve(self, isolated=self.isolated - {node_id})

    def with_blocked(self, src: int, dst: int) -> NetworkFaults:
        """These faults with ``src -> dst`` cut (one way)."""
        return attrs.evolve(self, blocked=self.blocked | {(src, dst)})

    def unblocked(self, src: int, dst: int) -> NetworkFaults:
        """These faults without the one-way cut ``src -> dst``."""
        return attrs.evolve(self, blocked=self.blocked - {(src, dst)})

    def healed(self) -> NetworkFaults:
        """These faults without any cut; the random faults stay."""
        return attrs.evolve(self, partition=None, isolated=frozenset(), blocked=frozenset())

    # ---------------------------------------------------------------- random faults

    def copy_delays(self, rng: random.Random) -> tuple[float, ...]:
        """Draw what becomes of one message that no cut stops: the delay of each copy delivered.

        ``()`` means it is lost, two delays that it is duplicated.  The draws, from ``rng``: one for loss;
        if kept, one for duplication; then for each copy one ``uniform(*delay)`` and, only while
        ``reorder_rate > 0``, one for reordering (plus the extra delay when it hits).
        """
        if rng.random() < self.drop_rate:
            return ()
        copies = 2 if rng.random() < self.duplicate_rate else 1
        low, high = self.delay
        delays = []
        for _ in range(copies):
            delay = rng.uniform(low, high)
            if self.reorder_rate > 0.0 and rng.random() < self.reorder_rate:
                delay += rng.uniform(0.0, max(high, REORDER_MIN_WINDOW))
            delays.append(delay)
        return tuple(delays)


#: No faults: every message passes at once.
NO_NETWORK_FAULTS = NetworkFaults()


# ---------------------------------------------------------------------------------------- the controls


class FaultControls(abc.ABC):
    """The fault controls of a simulated network, kept as one :class:`NetworkFaults` value.

    The simulation and the in-memory network both inherit them, so the same calls mean the same thing on
    either (see the module docstring).  A subclass provides the current value and a way to replace it
    atomically; every control is a change of that value, validated before it takes effect.
    """

    @abc.abstractmethod
    def _current_faults(self) -> NetworkFaults:
        """The faults in force now."""

    @abc.abstractmethod
    def _change_faults(self, change: Callable[[NetworkFaults], NetworkFaults]) -> None:
        """Replace the faults in force by ``change(current)``, atomically; nothing changes if it raises."""

    @property
    def faults(self) -> NetworkFaults:
        """All faults in force, as one immutable value; assign a :class:`NetworkFaults` to set them all."""
        return self._current_faults()

    @faults.setter
    def faults(self, value: NetworkFaults) -> None:
        if not isinstance(value, NetworkFaults):
            raise TypeError(f"faults must be a NetworkFaults, got {type(value).__name__}")
        self._change_faults(lambda _: value)

    def partition(self, *groups: Iterable[int]) -> None:
        """Split the network: only nodes in the same group can talk; ids in no group reach no one.

        Replaces the previous partition (isolations and blocks stay).  ``partition()`` with no groups
        cuts every node off from every other.

        Raises:
            ConfigError: an id appears in more than one group, or is not a node id.
        """
        self._change_faults(lambda faults: faults.partitioned(*groups))

    def isolate(self, node_id: int) -> None:
        """Cut ``node_id`` off from every other node, in both directions, keeping all other cuts."""
        self._change_faults(lambda faults: faults.with_isolated(node_id))

    def rejoin(self, node_id: int) -> None:
        """Undo :meth:`isolate` for ``node_id`` (partitions and blocks stay)."""
        self._change_faults(lambda faults: faults.rejoined(node_id))

    def block(self, src: int, dst: int) -> None:
        """Drop everything ``src`` sends to ``dst``; ``dst`` to ``src`` is unaffected (a one-way cut)."""
        self._change_faults(lambda faults: faults.with_blocked(src, dst))

    def unblock(self, src: int, dst: int) -> None:
        """Undo :meth:`block` for ``src -> dst``."""
        self._change_faults(lambda faults: faults.unblocked(src, dst))

    def heal(self) -> None:
        """Remove every partition, isolation and block; ``drop_rate``, delays etc. are kept."""
        self._change_faults(NetworkFaults.healed)

    def can_reach(self, src: int, dst: int) -> bool:
        """Whether partitions, isolations and blocks currently let ``src``'s messages reach ``dst``.

        Random faults, and whether ``dst`` is running, are not considered.  A node is never cut off from
        itself by a partition or an isolation (only by an explicit :meth:`block`).
        """
        return self._current_faults().can_reach(src, dst)

    @property
    def drop_rate(self) -> float:
        """Probability that a sent message is dropped."""
        return self._current_faults().drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        self._change_faults(lambda faults: attrs.evolve(faults, drop_rate=value))

    @property
    def duplicate_rate(self) -> float:
        """Probability that a message that is not dropped is delivered twice."""
        return self._current_faults().duplicate_rate

    @duplicate_rate.setter
    def duplicate_rate(self, value: float) -> None:
        self._change_faults(lambda faults: attrs.evolve(faults, duplicate_rate=value))

    @property
    def reorder_rate(self) -> float:
        """Probability that a copy is held back so later messages overtake it."""
        return self._current_faults().reorder_rate

    @reorder_rate.setter
    def reorder_rate(self, value: float) -> None:
        self._change_faults(lambda faults: attrs.evolve(faults, reorder_rate=value))

    @property
    def delay(self) -> tuple[float, float]:
        """``(min, max)`` seconds between sending a copy and delivering it (applies to new messages)."""
        return self._current_faults().delay

    @delay.setter
    def delay(self, value: tuple[float, float]) -> None:
        self._change_faults(lambda faults: attrs.evolve(faults, delay=value))
