"""Joining the chunks of one configuration that a comparison benchmark measured in turns.

The comparison benchmarks (``compare_pysyncobj``, ``fast_failover``) measure each configuration in chunks,
the configurations taking turns on fresh clusters, so that a slow spell of the machine hits every
configuration alike; :func:`merge_ranges` makes one result of each configuration's chunks again.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import attrs

from raft_election.bench import RangeResult

__all__ = ["merge_ranges"]


def merge_ranges(parts: Sequence[RangeResult]) -> RangeResult:
    """One result from the chunks of one configuration measured on several clusters in turn.

    The failovers in order, no handovers, the unprovoked elections and restarts added up, and the
    initial elections' (upper) median.
    """
    first = parts[0]
    return attrs.evolve(first, failovers=tuple(f for part in parts for f in part.failovers), handovers=(),
                        unprovoked=sum(part.unprovoked for part in parts),
                        restarts=sum(part.restarts for part in parts),
                        initial_election=statistics.median_high(part.initial_election for part in parts))
