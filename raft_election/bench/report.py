"""Summaries of benchmark results: percentiles, the ideal model, a markdown table and a JSON document."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from raft_election.bench.trials import Failover, RangeResult

__all__ = ["Summary", "from_json", "ideal_failover", "markdown_table", "percentile", "range_figures",
           "summarize", "to_json"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of them at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@attrs.frozen(kw_only=True)
class Summary:
    """Order statistics of one sample, in seconds."""

    count: int
    min: float
    median: float
    mean: float
    p90: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Optional[Summary]:
    """The summary of ``values`` (None when empty)."""
    if not values:
        return None
    return Summary(count=len(values), min=min(values), median=statistics.median(values),
                   mean=statistics.fmean(values), p90=percentile(values, 0.90), p99=percentile(values, 0.99),
                   max=max(values))


def ideal_failover(nodes: int, election_timeout: tuple[float, float], heartbeat_interval: float,
                   round_trip: float) -> float:
    """SPEC §8's model of a crash failover: ``a + (b - a) / n - h / 2 + 2r``.

    The first of the surviving followers times out (on average ``(b - a) / n`` into the range for ``n``
    members), less the average age of the last heartbeat at the crash (``h / 2``), plus the pre-vote and
    the vote round trips.
    """
    low, high = election_timeout
    return low + (high - low) / nodes - heartbeat_interval / 2 + 2 * round_trip


def range_figures(result: RangeResult) -> dict[str, Any]:
    """Everything reported about one range, in seconds (summaries as dicts), for tables and JSON."""
    times = [failover.seconds for failover in result.failovers]
    round_trips = [f.round_trip for f in result.failovers if f.round_trip is not None]
    messages = [f.messages for f in result.failovers if f.messages is not None]
    round_trip = statistics.median(round_trips) if round_trips else None
    # The model is the timeout path's: with fast failover on, a death is seen sooner than any timeout.
    ideal = (ideal_failover(result.nodes, result.election_timeout, result.heartbeat_interval, round_trip)
             if round_trip is not None and not result.fast_failover else None)
    known = [f.fast for f in result.failovers if f.fast is not None]
    failover = summarize(times)
    handover = summarize([handover.seconds for handover in result.handovers])
    return {
        "election_timeout": list(result.election_timeout),
        "heartbeat_interval": result.heartbeat_interval,
        "nodes": result.nodes,
        "trials": len(times),
        "failover": attrs.asdict(failover) if failover else None,
        "split_vote_share": (sum(f.terms > 1 for f in result.failovers) / len(times)) if times else None,
        "censored": sum(f.censored for f in result.failovers),
        "round_trip": round_trip,
        "ideal": ideal,
        "median_over_ideal": failover.median / ideal if failover and ideal else None,
        "messages_per_election": statistics.median(messages) if messages else None,
        "initial_election": result.initial_election,
        "handover": attrs.asdict(handover) if handover else None,
        "unprovoked_elections": result.unprovoked,
        "restarts": result.restarts,
        "fast_failover": result.fast_failover,
        #: The share of failovers won by fast failover (None when the members do not say).
        "fast_share": (sum(known) / len(known)) if known else None,
    }


def _ms(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def markdown_table(results: Sequence[RangeResult]) -> str:
    """One row per range: failover distribution, split votes, the model, and the other measures."""
    header = ("| timeout ms | h ms | fast path | trials | min | median | mean | p90 | p99 | max "
              "| split votes | r ms | ideal | median/ideal | msgs/election | first election "
              "| handover median | unprovoked/restarts |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        figures = range_figures(result)
        failover = figures["failover"] or {}
        handover = figures["handover"] or {}
        low, high = result.election_timeout
        split = figures["split_vote_share"]
        ratio = figures["median_over_ideal"]
        messages = figures["messages_per_election"]
        censored = figures["censored"]
        trials = f"{figures['trials']}" + (f" ({censored} censored)" if censored else "")
        share = figures["fast_share"]
        fast = ("off" if result.fast_failover is False else "-" if share is None else f"{share:.0%}")
        lines.append(
            f"| {low * 1000:g}-{high * 1000:g} | {result.heartbeat_interval * 1000:.3g} | {fast} "
            f"| {trials} "
            f"| {_ms(failover.get('min'))} | {_ms(failover.get('median'))} | {_ms(failover.get('mean'))} "
            f"| {_ms(failover.get('p90'))} | {_ms(failover.get('p99'))} | {_ms(failover.get('max'))} "
            f"| {'-' if split is None else f'{split:.0%}'} | {_ms(figures['round_trip'], 2)} "
            f"| {_ms(figures['ideal'])} | {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {'-' if messages is None else f'{messages:g}'} | {_ms(figures['initial_election'])} "
            f"| {_ms(handover.get('median'))} | {result.unprovoked}/{result.restarts} |")
    return "\n".join(lines)


def to_json(results: Sequence[RangeResult], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready document: the settings, each range's figures and its raw samples."""
    return {
        "settings": dict(settings),
        "ranges": [
            {**range_figures(result),
             "failovers": [attrs.asdict(failover) for failover in result.failovers],
             "handovers": [attrs.asdict(handover) for handover in result.handovers]}
            for result in results
        ],
    }


def from_json(document: Mapping[str, Any]) -> list[RangeResult]:
    """The results saved by :func:`to_json`, for re-reporting or re-plotting without measuring again."""
    results = []
    for entry in document["ranges"]:
        low, high = entry["election_timeout"]
        results.append(RangeResult(
            election_timeout=(float(low), float(high)), heartbeat_interval=float(entry["heartbeat_interval"]),
            nodes=int(entry["nodes"]), initial_election=float(entry["initial_election"]),
            failovers=tuple(Failover(**failover) for failover in entry["failovers"]),
            handovers=tuple(Failover(**handover) for handover in entry["handovers"]),
            unprovoked=int(entry["unprovoked_elections"]), restarts=int(entry["restarts"]),
            fast_failover=entry.get("fast_failover")))
    return results
