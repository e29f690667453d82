"""The nemesis's fault schedule: a seeded random sequence of faults, drawn before the run starts.

The schedule fixes, from the seed alone, which faults come in which order, how long each lasts, whether it
aims at the leader, and its shape (partition sides, loss rate, delay range, storm length).  Who the leader
is at that moment is decided by the live cluster, so a replay with the same seed applies the same faults in
the same order; the cluster's own timing may still differ.

Faults come one at a time, each followed by a quiet gap, so the checker can attribute every leaderless
period to the fault that caused it.  The first faults are every chosen kind once, in random order, so even
a short run covers them all; after that kinds are drawn by :data:`WEIGHTS`.

Membership changes (:data:`~raft_election.nemesis.history.MEMBERSHIP_KINDS`) are kinds like the others,
drawn only when chosen: ``add_member`` (a fresh member; sometimes the leader is SIGKILLed right after it
began the change: as soon as it reports the entry listing the new member, or a moment after the request),
``remove_member`` (sometimes the member is first cut off from every message, so it never
learns of its removal and lingers, campaigning, as thesis §4.2.3's disruptive server) and
``replace_member`` (remove one and add a fresh one; sometimes the one replaced is SIGKILLed first, a dead
host).  Kind names may be given as groups: ``all`` (every kind) and ``membership`` (the three changes).
Whether a change adds or removes in the end depends on the member count at that moment, which the live
cluster decides (see :mod:`raft_election.nemesis.runner`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import attrs

from raft_election.errors import ConfigError
from raft_election.nemesis.history import ALL_KINDS, FAULT_KINDS, MEMBERSHIP_KINDS

__all__ = ["KIND_GROUPS", "PlannedFault", "check_kinds", "expand_kinds", "plan"]

#: How often each kind is drawn, relative to the others.
WEIGHTS: Mapping[str, float] = {
    "kill": 3, "storm": 1, "pause": 2, "partition": 2, "one_way": 1, "partial": 1, "loss": 1, "delay": 1,
    "flood": 1, "starve": 1, "add_member": 1, "remove_member": 1, "replace_member": 1,
}
#: Names that stand for several kinds in a list of kinds.
KIND_GROUPS: Mapping[str, tuple[str, ...]] = {"all": ALL_KINDS, "membership": MEMBERSHIP_KINDS}


@attrs.frozen(kw_only=True)
class PlannedFault:
    """One fault of the schedule (seconds; ``params`` depend on the kind)."""

    kind: str
    duration: float
    #: Quiet time after the fault is healed, before the next one.
    gap: float
    #: Aim at whoever leads when the fault is applied (else at random members).
    aim_leader: bool
    params: Mapping[str, Any] = attrs.field(factory=dict)


def expand_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` with every group name (:data:`KIND_GROUPS`) replaced by its kinds, each kind once, in order.

    Unknown names are kept, for :func:`check_kinds` to name them.
    """
    expanded: list[str] = []
    for kind in kinds:
        for one in KIND_GROUPS.get(kind, (kind,)):
            if one not in expanded:
                expanded.append(one)
    return tuple(expanded)


def check_kinds(kinds: Sequence[str]) -> None:
    """Raise ``ConfigError`` (field ``faults``, a ``ValueError``) unless ``kinds`` are known (or groups)."""
    expanded = expand_kinds(kinds)
    unknown = sorted(set(expanded) - set(ALL_KINDS))
    if unknown or not expanded:
        raise ConfigError("faults", f"unknown fault kinds {unknown}; choose from {', '.join(ALL_KINDS)}, or "
                                    f"the groups {', '.join(KIND_GROUPS)}")


def plan(*, seed: int, duration: float, nodes: int, election_timeout: tuple[float, float],
         heartbeat_interval: float, kinds: Sequence[str] = FAULT_KINDS,
         rounds: Optional[int] = None) -> list[PlannedFault]:
    """Faults filling about ``duration`` seconds (faults and gaps) for a cluster of ``nodes``.

    With ``rounds``, exactly that many faults instead, however long they take.

    Durations scale with the election timeout, so a schedule exercises the same situations at any setting:
    pauses shorter and longer than the lease, partitions long enough for a new election and for the old
    leader's lease to run out, restart storms faster than an election timeout.
    """
    check_kinds(kinds)
    rng = random.Random(seed)
    low, high = election_timeout
    lease = low
    chosen = list(expand_kinds(kinds))
    weights = [WEIGHTS[kind] for kind in chosen]
    faults: list[PlannedFault] = []
    elapsed = 0.0
    first_round = rng.sample(chosen, len(chosen))  # every kind once, in random order, then by weight
    while (elapsed < duration) if rounds is None else (len(faults) < rounds):
        kind = first_round.pop() if first_round else rng.choices(chosen, weights)[0]
        aim_leader = rng.random() < 0.6
        params: dict[str, Any] = {}
        if kind == "kill":
            length = rng.uniform(0.0, 3 * high)  # how long the member stays dead
        elif kind == "storm":
            params = {"members": rng.randint(1, max(1, (nodes - 1) // 2)), "rounds": rng.randint(3, 8),
                      "down": rng.uniform(0.05, 0.5) * low, "up": rng.uniform(0.1, 1.0) * low}
            length = params["rounds"] * (params["down"] + params["up"])
        elif kind == "pause":
            length = rng.uniform(0.2, 0.9) * lease if rng.random() < 0.5 else rng.uniform(1.5, 6.0) * high
        elif kind == "partition":
            params = {"minority": rng.randint(1, max(1, (nodes - 1) // 2))}
            length = rng.uniform(1.0, 5.0) * high
        elif kind == "one_way":
            params = {"cuts": rng.randint(1, nodes - 1), "outbound": rng.random() < 0.5}
            length = rng.uniform(1.0, 5.0) * high
        elif kind == "partial":
            params = {"link_cut": rng.uniform(0.2, 0.6)}
            length = rng.uniform(1.0, 5.0) * high
        elif kind == "loss":
            params = {"loss": rng.uniform(0.05, 0.5)}
            length = rng.uniform(2.0, 8.0) * high
        elif kind == "delay":
            params = {"delay": (0.0, rng.uniform(0.1, 0.6) * low)}
            length = rng.uniform(2.0, 8.0) * high
        elif kind == "flood":
            params = {"messages": rng.randint(2000, 20000)}
            length = 0.0  # as long as the flood takes
        elif kind in MEMBERSHIP_KINDS:
            params, length = _membership_params(rng, kind, heartbeat_interval, high)
        else:  # starve
            length = rng.uniform(0.5, 3.0)
        gap = rng.uniform(2.0, 5.0) * high
        faults.append(PlannedFault(kind=kind, duration=length, gap=gap, aim_leader=aim_leader, params=params))
        elapsed += length + gap
    return faults


def _membership_params(rng: random.Random, kind: str, heartbeat_interval: float,
                       high: float) -> tuple[dict[str, Any], float]:
    """A membership change's shape and length (see the module docstring).

    The length is how long the crashed leader stays down (``add_member``), or how long the removed member
    lingers before it is stopped.
    """
    if kind == "add_member":
        crash = rng.random() < 0.3
        params: dict[str, Any] = {"crash_leader": crash, "crash_at": rng.choice(("entry", "delay")),
                                  "crash_after": rng.uniform(0.0, 2 * heartbeat_interval)}
        return params, rng.uniform(0.5, 3.0) * high if crash else 0.0
    params = {"linger": rng.uniform(0.0, 4.0) * high, "stop": rng.choice(("term", "kill"))}
    if kind == "remove_member":
        params["isolate"] = rng.random() < 0.3
    else:  # replace_member
        params["dead"] = rng.random() < 0.5
    return params, float(params["linger"])
