"""Kill-the-leader failover of raft_election and PySyncObj side by side, interleaved in one run.

Both sides run 5 member processes on 127.0.0.1 and are measured by the same trial loop
(:func:`raft_election.bench.run_range`): wait until every member follows one leader, SIGKILL the leader at
a uniformly random moment within a heartbeat interval, time until another member takes office (from that
member's own ``became_leader`` line, ``time.monotonic()``), restart the killed member, repeat.  "Takes
office" is, for ours, the moment the new leader's lease began; for PySyncObj (no leases), the moment its
raft state became LEADER, observed by ``SyncObjConf.onStateChanged`` in its tick thread (see
``benchmarks/pysyncobj_member.py``).

Configurations (each on a fresh cluster, in rounds of ``--chunk`` trials, so that machine noise falls on
all of them alike):

* ``ours``: UDP, 150-300 ms, 50 ms heartbeat (the defaults).
* ``pso-defaults``: PySyncObj as users run it, ``SyncObjConf()`` (0.4-1.4 s, 0.1 s append period, 50 ms
  tick, 3.5 s connection timeout).
* ``pso-idle``: PySyncObj at 150-300 ms / 50 ms but otherwise as shipped, each kill after the cluster was
  idle for 4 s, longer than its 3.5 s connection timeout (idle follower links have been dropped then).
* ``pso-tuned``: 150-300 ms / 50 ms, 5 ms tick, connection timeout 30 s.
* with ``--fast``: ``ours-12-24`` and ``pso-12-24`` (12-24 ms, 4 ms heartbeat; PySyncObj with a 1 ms tick).

Run::

    python -m benchmarks.compare_pysyncobj --trials 30 --json benchmarks/results/compare.json

It prints one markdown table: the distribution per configuration, the ratio of its median to ours at the
same timeouts, split votes, and how often a leader was elected while the old one was alive (a restarted
member deposing it).  Needs ``pip install -e '.[bench]'`` (PySyncObj 0.3.17).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
from pathlib import Path
from typing import Optional

import attrs

from benchmarks.ranges import merge_ranges
from raft_election.bench import BenchSettings, RangeResult, run_one_range
from raft_election.bench.clusters import MemberCommand
from raft_election.bench.report import range_figures

MEMBER = Path(__file__).resolve().parent / "pysyncobj_member.py"


@attrs.frozen(kw_only=True)
class Side:
    """One configuration of the comparison."""

    name: str
    timeout: tuple[float, float]
    heartbeat: float
    #: Extra flags for pysyncobj_member.py; None: our own member.
    pysyncobj: Optional[tuple[str, ...]] = None
    idle: float = 0.0

    def command(self) -> Optional[MemberCommand]:
        flags = self.pysyncobj
        if flags is None:
            return None
        return lambda node_id, path: [sys.executable, str(MEMBER), "--cluster", path, "--id", str(node_id),
                                      *flags]


def sides(fast: bool) -> list[Side]:
    standard = ((0.150, 0.300), 0.050)
    chosen = [
        Side(name="ours", timeout=standard[0], heartbeat=standard[1]),
        Side(name="pso-defaults", timeout=(0.4, 1.4), heartbeat=0.1, pysyncobj=("--defaults",)),
        Side(name="pso-idle", timeout=standard[0], heartbeat=standard[1], pysyncobj=(), idle=4.0),
        Side(name="pso-tuned", timeout=standard[0], heartbeat=standard[1],
             pysyncobj=("--tick", "0.005", "--connection-timeout", "30")),
    ]
    if fast:
        chosen += [
            Side(name="ours-12-24", timeout=(0.012, 0.024), heartbeat=0.004),
            Side(name="pso-12-24", timeout=(0.012, 0.024), heartbeat=0.004,
                 pysyncobj=("--tick", "0.001", "--connection-timeout", "30")),
        ]
    return chosen


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="kills per configuration (default 30)")
    parser.add_argument("--chunk", type=int, default=10, help="kills per cluster and round (default 10)")
    parser.add_argument("--fast", action="store_true", help="also compare at 12-24 ms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every sample to this file")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    chosen = sides(args.fast)
    parts: dict[str, list[RangeResult]] = {side.name: [] for side in chosen}
    done = 0
    while done < args.trials:
        chunk = min(args.chunk, args.trials - done)
        for side in chosen:
            settings = BenchSettings(transport="udp", nodes=5, timeouts=(side.timeout,),
                                     heartbeat=side.heartbeat, trials=chunk, handovers=0, idle=side.idle,
                                     fast_failover=False)  # equal settings: PySyncObj has no such path
            print(f"{side.name}: trials {done + 1}-{done + chunk}", file=sys.stderr, flush=True)
            parts[side.name].append(run_one_range(settings, side.timeout, rng, member_command=side.command()))
        done += chunk
    results = {name: merge_ranges(chunks) for name, chunks in parts.items()}
    print(f"5 members on 127.0.0.1, {args.trials} SIGKILLs of the leader per configuration, interleaved in "
          f"rounds of {args.chunk}; {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, seed {args.seed}\n")
    print("| configuration | timeout ms | h ms | min | median | p90 | p99 | max | split votes "
          "| median / ours | unprovoked/restarts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    document = {}
    for side in chosen:
        figures = range_figures(results[side.name])
        ours = "ours-12-24" if side.timeout == (0.012, 0.024) else "ours"
        reference = range_figures(results[ours])["failover"]["median"]
        failover = figures["failover"]
        ratio = failover["median"] / reference
        ms = {key: f"{value * 1000:.1f}" for key, value in failover.items() if key != "count"}
        print(f"| {side.name} | {side.timeout[0] * 1000:g}-{side.timeout[1] * 1000:g} "
              f"| {side.heartbeat * 1000:g} | {ms['min']} | {ms['median']} | {ms['p90']} | {ms['p99']} "
              f"| {ms['max']} | {figures['split_vote_share']:.0%} | {ratio:.2f} "
              f"| {figures['unprovoked_elections']}/{figures['restarts']} |")
        document[side.name] = {**figures, "idle": side.idle, "pysyncobj_flags": side.pysyncobj,
                               "failovers": [attrs.asdict(f) for f in results[side.name].failovers]}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"command": sys.argv, "results": document}, file, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
