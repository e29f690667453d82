"""Fast failover against the timeout path: SIGKILL of the leader, per transport, in one run (issue 7).

Five member processes on 127.0.0.1, election timeouts 150-300 ms, heartbeat 50 ms.  For each transport
(UDP, ZeroMQ) the same trial loop as ``raft-election bench`` runs twice on fresh clusters, once with
``fast_failover`` off (the election-timeout path) and once on, alternating in chunks so that both paths see
the same machine load; the failover time runs from the SIGKILL to the moment the new leader's lease began.
Run::

    python -m benchmarks.fast_failover --trials 100 --json benchmarks/results/fast_failover.json

and it prints one table: per transport and path, the distribution, the share of failovers won on death
evidence, and the ratio of the medians measured in this run.  With ``--coordination FILE`` (the JSON
written by ``benchmarks.compare_coordination``) it adds etcd's and ZooKeeper's figures measured on this
machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from benchmarks.ranges import merge_ranges
from raft_election.bench import BenchSettings, RangeResult, run_one_range
from raft_election.bench.report import range_figures, to_json

TIMEOUT = (0.150, 0.300)
HEARTBEAT = 0.050
TRANSPORTS = ("udp", "zmq")


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def table(results: dict[tuple[str, bool], RangeResult], coordination: Optional[dict[str, Any]]) -> str:
    lines = ["| transport | path | trials | fast share | min | median | p90 | p99 | max "
             "| median vs timeout path | unprovoked/restarts |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for transport in TRANSPORTS:
        slow = range_figures(results[(transport, False)])["failover"]
        for fast in (False, True):
            result = results[(transport, fast)]
            figures = range_figures(result)
            failover = figures["failover"]
            share = figures["fast_share"]
            ratio = failover["median"] / slow["median"]
            lines.append(
                f"| {transport} | {'fast failover' if fast else 'timeout'} | {figures['trials']} "
                f"| {'-' if share is None else f'{share:.0%}'} | {_ms(failover['min'])} "
                f"| {_ms(failover['median'])} | {_ms(failover['p90'])} | {_ms(failover['p99'])} "
                f"| {_ms(failover['max'])} | {ratio:.2f} | {result.unprovoked}/{result.restarts} |")
    if coordination:
        for entry in coordination.get("results", []):
            summary = entry["summary_ms"]
            trials = len(entry["samples_ms"])
            lines.append(f"| {entry['setting']['system']} | {entry['label']} | {trials} | - "
                         f"| {summary['min']:.0f} | {summary['median']:.0f} | {summary['p90']:.0f} "
                         f"| {summary['p99']:.0f} | {summary['max']:.0f} | - | - |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="kills per transport and path (default 100)")
    parser.add_argument("--chunk", type=int, default=25,
                        help="kills per cluster before switching configuration (default 25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument("--coordination", metavar="FILE",
                        help="etcd/ZooKeeper figures from benchmarks.compare_coordination --json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    parts: dict[tuple[str, bool], list[RangeResult]] = {(t, f): [] for t in TRANSPORTS for f in (False, True)}
    with tqdm(total=args.trials * len(parts), unit="kill", file=sys.stderr) as bar:
        done = 0
        while done < args.trials:
            chunk = min(args.chunk, args.trials - done)
            for (transport, fast), chunks in parts.items():
                settings = BenchSettings(transport=transport, nodes=5, timeouts=(TIMEOUT,),
                                         heartbeat=HEARTBEAT, trials=chunk, handovers=0, seed=args.seed,
                                         fast_failover=fast)
                chunks.append(run_one_range(settings, TIMEOUT, rng, progress=bar.update))
            done += chunk
    results = {key: merge_ranges(chunks) for key, chunks in parts.items()}
    coordination = None
    if args.coordination:
        coordination = json.loads(Path(args.coordination).read_text(encoding="utf-8"))
    print(f"5 members on 127.0.0.1, election timeout 150-300 ms, heartbeat 50 ms; {platform.platform()}, "
          f"Python {platform.python_version()}; SIGKILL of the leader until the new leader's lease began "
          "(ms)")
    print()
    print(table(results, coordination))
    if args.json:
        document = {"command": ["python", "-m", "benchmarks.fast_failover", *(argv or sys.argv[1:])],
                    "results": {f"{transport}/{'fast' if fast else 'timeout'}":
                                to_json([result], {})["ranges"][0]
                                for (transport, fast), result in results.items()}}
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
