"""Steady state under application load: leader changes and lease availability with no fault injected.

Five member processes on loopback, each an ordinary application (``benchmarks/app_thread``: a thread reads
``is_leader`` every millisecond and, optionally, one holds the GIL for a while at random moments), run for
a fixed time after the first leader holds a lease, optionally beside ``--cpu-hogs`` busy processes (a
loaded host).  Nothing is killed, paused or cut, so every leader change is unprovoked.  Reported per
transport and timeout range:

* **leader changes**: leaderships that began in the window after the first (``became_leader``), and per
  minute; and how far the term moved (an election that never produced a lease still raises it);
* **lease availability**: the fraction of the window in which some member held a lease, from the lease
  intervals the invariant checker rebuilds from the members' events (:mod:`raft_election.invariants`);
* **gaps**: the stretches of the window with no lease holder: how many, their total, median, p99, max;
* why: leaders' own **lease gaps** (``lease_lost``), **office losses** by reason (``lost_leadership``),
  and from the members' counters the wins that started without a lease (or, in older trees, were declined).

``--tree DIR`` runs the members from another checkout with the same application and the same analysis, so
a before/after comparison is one command per tree.  Run::

    python -m benchmarks.steady --transport udp --transport zmq --timeout 150-300 --timeout 12-24 --seconds 60
    python -m benchmarks.steady --timeout 150-300 --gil-hold-ms 120 --gil-every 1-2 --seconds 60
    python -m benchmarks.steady --timeout 12-24 --cpu-hogs 2 --seconds 60
    python -m benchmarks.steady --tree ../before --json before.json ...
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import attrs

from benchmarks.appload import app_env, describe
from benchmarks.resources import parse_timeout
from raft_election.invariants import LeaseInterval, replay_member_events
from raft_election.processes import MemberEvent, MemberProcesses, free_ports, write_cluster_file

#: Counters summed over the members at their graceful stop.
COUNTERS = ("became_leader", "elections_started", "pre_votes_started", "lease_gaps", "leases_regained",
            "wins_without_lease", "late_wins_declined")


@attrs.frozen(kw_only=True)
class Steady:
    """What one run measured in its window ``[start, end)`` (times are ``time.monotonic()``)."""

    transport: str
    election_timeout: tuple[float, float]
    heartbeat_interval: float
    nodes: int
    application: str
    cpu_hogs: int
    tree: str
    seconds: float
    leader_changes: int
    terms: int
    availability: float
    gaps: tuple[float, ...]
    lease_gaps: tuple[float, ...]
    office_losses: dict[str, int]
    counters: dict[str, int]

    @property
    def changes_per_minute(self) -> float:
        return self.leader_changes * 60.0 / self.seconds


def clipped(intervals: Iterable[LeaseInterval], start: float, end: float) -> list[tuple[float, float]]:
    """The parts of ``intervals`` inside ``[start, end)``, merged where they touch or overlap, in order."""
    spans = sorted((max(i.start, start), min(i.held_until, end)) for i in intervals
                   if i.held_until > start and i.start < end)
    merged: list[tuple[float, float]] = []
    for low, high in spans:
        if high <= low:
            continue
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def holes(spans: Sequence[tuple[float, float]], start: float, end: float) -> list[float]:
    """The lengths of the stretches of ``[start, end)`` that no span of ``spans`` (merged, ordered) covers."""
    found = []
    at = start
    for low, high in spans:
        if low > at:
            found.append(low - at)
        at = max(at, high)
    if end > at:
        found.append(end - at)
    return found


def analyse(events: Sequence[MemberEvent], start: float, end: float) -> dict[str, Any]:
    """Leader changes, availability, gaps and their causes in the window ``[start, end)`` of ``events``."""
    intervals = replay_member_events(events).intervals(end_of_run=end)
    covered = clipped(intervals, start, end)
    inside = [e for e in events if start < e.monotonic < end]
    before = [e.term for e in events if e.monotonic <= start]
    after = [e.term for e in events if e.monotonic < end]
    lease_gaps = []
    lapsed: dict[int, float] = {}
    for event in events:
        if event.event == "lease_lost":
            lapsed[event.node] = float(event.record.get("lease_end", event.monotonic))
        elif event.event in ("lease_regained", "lost_leadership", "stopped") and event.node in lapsed:
            began = lapsed.pop(event.node)
            if start <= began < end:
                lease_gaps.append(event.monotonic - began)
    return {
        "leader_changes": sum(1 for e in inside if e.event == "became_leader"),
        "terms": (max(after) if after else 0) - (max(before) if before else 0),
        "availability": sum(high - low for low, high in covered) / (end - start),
        "gaps": holes(covered, start, end),
        "lease_gaps": lease_gaps,
        "office_losses": dict(collections.Counter(str(e.record.get("reason")) for e in inside
                                                  if e.event == "lost_leadership")),
    }


def run_one(*, transport: str, timeout: tuple[float, float], heartbeat: float, nodes: int, seconds: float,
            warmup: float, read_ms: float, gil_ms: float, gil_every: tuple[float, float],
            tree: Optional[str], cpu_hogs: int = 0) -> Steady:
    """Start the members, wait for a leader, start the hogs, measure ``seconds``, stop everything, analyse."""
    with tempfile.TemporaryDirectory(prefix="steady-") as workdir:
        ports = free_ports(nodes, kind="udp" if transport == "udp" else "tcp")
        addresses = {node_id: f"127.0.0.1:{port}" for node_id, port in enumerate(ports, 1)}
        cluster = write_cluster_file(os.path.join(workdir, "cluster.json"), addresses, transport=transport,
                                     cluster="steady", election_timeout=timeout, heartbeat_interval=heartbeat)
        env = app_env(read_ms=read_ms, gil_ms=gil_ms, gil_every=gil_every, tree=tree)
        hogs: list[subprocess.Popen[bytes]] = []
        with MemberProcesses(cluster, workdir, addresses, env=env) as processes:
            try:
                processes.start_all()
                first = processes.wait_for(lambda e: e.event == "became_leader", 60.0)
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_hogs)]
                start = first.monotonic + warmup
                end = start + seconds
                time.sleep(max(0.0, end - time.monotonic()))
                end = time.monotonic()
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            for node_id in addresses:
                processes.signal(node_id, signal.SIGTERM)
            for node_id in addresses:
                processes.wait_exit(node_id, 30.0)
            events = processes.events
    figures = analyse(events, start, end)
    counters: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.event == "stopped":
            for name, value in event.record.get("counters", {}).items():
                if name in COUNTERS or name.startswith("step_downs_"):
                    counters[name] += int(value)
    return Steady(transport=transport, election_timeout=timeout, heartbeat_interval=heartbeat, nodes=nodes,
                  application=describe(read_ms=read_ms, gil_ms=gil_ms, gil_every=gil_every),
                  cpu_hogs=cpu_hogs, tree=str(tree or "."), seconds=end - start, counters=dict(counters),
                  **figures)


def _ms(values: Sequence[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000:.1f}"


def table(results: Sequence[Steady]) -> str:
    header = ("| transport | timeouts | heartbeat | seconds | leader changes | per minute | terms "
              "| lease availability | gaps | gap total ms | gap median / p99 / max ms | leader lease gaps "
              "| office losses | late wins (lease-less / declined) |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        losses = ", ".join(f"{reason} {count}" for reason, count in sorted(r.office_losses.items())) or "-"
        lines.append(
            f"| {r.transport} | {r.election_timeout[0] * 1000:g}-{r.election_timeout[1] * 1000:g} ms "
            f"| {r.heartbeat_interval * 1000:g} ms | {r.seconds:.0f} | {r.leader_changes} "
            f"| {r.changes_per_minute:.1f} | {r.terms} | {r.availability:.3%} | {len(r.gaps)} "
            f"| {sum(r.gaps) * 1000:.0f} | {_ms(r.gaps, 0.5)} / {_ms(r.gaps, 0.99)} / {_ms(r.gaps, 1.0)} "
            f"| {len(r.lease_gaps)} | {losses} "
            f"| {r.counters.get('wins_without_lease', 0)} / {r.counters.get('late_wins_declined', 0)} |")
    return "\n".join(lines)


def _every(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition("-")
        every = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX seconds, like 1-2, got {text!r}") from None
    if not 0 < every[0] <= every[1]:
        raise argparse.ArgumentTypeError(f"need 0 < MIN <= MAX, got {text!r}")
    return every


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steady", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=("udp", "zmq"), action="append",
                        help="repeatable (default udp)")
    parser.add_argument("--timeout", type=parse_timeout, action="append", metavar="MIN-MAX",
                        help="election timeouts in ms, repeatable (default 150-300 and 12-24)")
    parser.add_argument("--heartbeat", type=float, default=None, metavar="MS",
                        help="heartbeat interval (default: a third of the minimum timeout)")
    parser.add_argument("--nodes", type=int, default=5, help="members (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per run (default 60)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds after the first leader (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="runs per setting (default 1)")
    parser.add_argument("--app-read-ms", type=float, default=1.0,
                        help="the application reads is_leader every MS (default 1; 0: idle members)")
    parser.add_argument("--gil-hold-ms", type=float, default=0.0,
                        help="the application holds the GIL this long at random moments (default 0: never)")
    parser.add_argument("--gil-every", type=_every, default=(1.0, 2.0), metavar="MIN-MAX",
                        help="seconds between two GIL holds (default 1-2)")
    parser.add_argument("--cpu-hogs", type=int, default=0,
                        help="busy processes beside the members during the window (default 0)")
    parser.add_argument("--tree", metavar="DIR",
                        help="run the members from this checkout (default: this one)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.seconds <= 0 or args.runs < 1 or args.cpu_hogs < 0:
        parser.error("--nodes, --seconds and --runs must be positive, --cpu-hogs not negative")
    results = []
    for run in range(args.runs):
        for transport in args.transport or ["udp"]:
            for timeout in args.timeout or [(0.150, 0.300), (0.012, 0.024)]:
                heartbeat = args.heartbeat / 1000 if args.heartbeat else round(timeout[0] / 3, 6)
                print(f"run {run + 1}: {transport} {timeout[0] * 1000:g}-{timeout[1] * 1000:g} ms ...",
                      file=sys.stderr, flush=True)
                results.append(run_one(transport=transport, timeout=timeout, heartbeat=heartbeat,
                                       nodes=args.nodes, seconds=args.seconds, warmup=args.warmup,
                                       read_ms=args.app_read_ms, gil_ms=args.gil_hold_ms,
                                       gil_every=args.gil_every, tree=args.tree, cpu_hogs=args.cpu_hogs))
    load = os.getloadavg()
    print(f"{args.nodes} member processes on loopback, no faults; application: {results[0].application}; "
          f"{args.cpu_hogs} CPU hogs; members from {results[0].tree}; "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} at the end\n")
    print(table(results))
    for r in results:
        if r.gaps:
            print(f"\n{r.transport} {r.election_timeout[0] * 1000:g}-{r.election_timeout[1] * 1000:g} ms: "
                  f"gaps (ms) {', '.join(f'{g * 1000:.1f}' for g in r.gaps[:20])}"
                  + (" ..." if len(r.gaps) > 20 else "")
                  + (f"; median lease gap {statistics.median(r.lease_gaps) * 1000:.1f} ms" if r.lease_gaps
                     else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"argv": sys.argv[1:], "results": [attrs.asdict(r) for r in results]}, file, indent=1)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
