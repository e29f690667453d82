"""The Raft paper's Figure 16 experiment with our members: failover time for two families of timeout ranges.

Ongaro & Ousterhout (2014), §9.3: five servers; the leader is crashed at a random moment within its
heartbeat interval; the time until a new leader is elected is recorded.  The top family varies the
randomness of the timeout (150-150, 150-151, 150-155, 150-175, 150-200, 150-300 ms), the bottom family
scales it (12-24, 25-50, 50-100, 100-200, 150-300 ms).  The paper's heartbeat was half the minimum
timeout; ours must be at most a third of it (the configuration rule that keeps a lease valid across a
lost heartbeat), so it is a third here (50 ms at 150 ms, 4 ms at 12 ms).

Each range runs on a fresh cluster of member processes over UDP on 127.0.0.1 through
:func:`raft_election.bench.run_bench` (the ``raft-election bench`` machinery).  Run::

    python -m benchmarks.figure16 --trials 100 --headline-trials 200 \\
        --json benchmarks/results/figure16.json --plot benchmarks/results/figure16.png

and it prints our table beside the paper's figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from raft_election.bench import BenchSettings, RangeResult, run_bench
from raft_election.bench.plot import plot_cdf
from raft_election.bench.report import from_json, markdown_table, to_json

#: The paper's top family starts at 150-150 ms (no randomness at all); RaftConfig refuses a range whose
#: minimum is not below its maximum, by design (such a cluster can split its vote for ever), so the family
#: starts here at 150-151 ms, the paper's next range.
RANDOMNESS = [(0.150, 0.151), (0.150, 0.155), (0.150, 0.175), (0.150, 0.200), (0.150, 0.300)]
SCALE = [(0.012, 0.024), (0.025, 0.050), (0.050, 0.100), (0.100, 0.200), (0.150, 0.300)]
HEADLINE = {(0.150, 0.300), (0.012, 0.024)}

#: What the paper reports (§9.3 and Figure 16), by range.
PAPER = {
    (0.150, 0.155): "median downtime 287 ms",
    (0.150, 0.200): "worst of 1000 trials 513 ms",
    (0.012, 0.024): "mean 35 ms, max 152 ms",
}


def run_family(ranges: list[tuple[float, float]], args: argparse.Namespace, bar: tqdm) -> list[RangeResult]:
    results = []
    for timeout in ranges:
        trials = args.headline_trials if timeout in HEADLINE else args.trials
        # The paper's experiment is about election timeouts: measure the timeout path (fast failover would
        # replace the killed leader before any timeout; see benchmarks/fast_failover.py).
        settings = BenchSettings(transport=args.transport, nodes=5, timeouts=(timeout,), trials=trials,
                                 handovers=0, seed=args.seed, fast_failover=False)
        results += run_bench(settings, progress=bar.update)
    return results


def paper_table(results: list[RangeResult]) -> str:
    lines = ["| timeout ms | ours: median | mean | max | paper |", "|---|---|---|---|---|"]
    for result in results:
        times = [f.seconds * 1000 for f in result.failovers]
        low, high = result.election_timeout
        lines.append(f"| {low * 1000:g}-{high * 1000:g} | {statistics.median(times):.1f} | "
                     f"{statistics.fmean(times):.1f} | {max(times):.1f} | "
                     f"{PAPER.get(result.election_timeout, '')} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="kills per range (default 100)")
    parser.add_argument("--headline-trials", type=int, default=200,
                        help="kills for 150-300 and 12-24 (default 200)")
    parser.add_argument("--transport", choices=("udp", "zmq", "memory"), default="udp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument("--plot", help="draw both families' cumulative distributions to this PNG")
    parser.add_argument("--from-json", metavar="FILE",
                        help="measure nothing: report and plot the samples a previous --json saved")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as file:
            saved = json.load(file)
        randomness, scale = from_json(saved["randomness"]), from_json(saved["scale"])
    else:
        total = sum(args.headline_trials if t in HEADLINE else args.trials for t in RANDOMNESS + SCALE)
        with tqdm(total=total, unit="trial", file=sys.stderr) as bar:
            randomness = run_family(RANDOMNESS, args, bar)
            scale = run_family(SCALE, args, bar)
    print(f"5 members, {args.transport} on 127.0.0.1, heartbeat = min/3, seed {args.seed}; "
          f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}\n")
    for name, results in (("Randomness", randomness), ("Scale", scale)):
        print(f"## {name}\n\n{markdown_table(results)}\n\n{paper_table(results)}\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"randomness": to_json(randomness, {"command": sys.argv}),
                       "scale": to_json(scale, {"command": sys.argv})}, file, indent=1)
    if args.plot:
        plot_cdf(args.plot, [("varying randomness (5 members, UDP processes)", randomness),
                             ("scaling the timeout (5 members, UDP processes)", scale)],
                 title="Time without a leader after SIGKILL of the leader (cf. Raft paper, Figure 16)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
