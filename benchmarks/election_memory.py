"""Election times of threaded members over the in-memory network, in real time.

Measures, for N members at the given timeouts, over many independent clusters:

* first election: from starting every member until one holds a lease;
* crash failover: from cutting the leader off (a simulated crash) until another holds a lease;
* graceful handover: from ``stop()`` on the leader until another holds a lease.

Times come from the members' own ``BecameLeader`` event timestamps (``time.monotonic``).  Run::

    python -m benchmarks.election_memory --trials 20

and report the medians and percentiles it prints, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys

from raft_election.demo import run_memory_demo


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--timeout", default="150-300", help="MIN-MAX election timeout in ms")
    parser.add_argument("--heartbeat", type=float, default=50.0, help="ms")
    args = parser.parse_args(argv)
    low, high = (float(x) / 1000 for x in args.timeout.split("-"))
    samples: dict[str, list[float]] = {"first election": [], "crash failover": [], "graceful handover": []}
    for trial in range(args.trials):
        result = run_memory_demo(args.nodes, 1, seed=trial, election_timeout=(low, high),
                                 heartbeat_interval=args.heartbeat / 1000)
        samples["first election"].append(result.first_election.seconds * 1000)
        samples["crash failover"].append(result.crashes[0].seconds * 1000)
        samples["graceful handover"].append(result.handover.seconds * 1000)
        print(f"\rtrial {trial + 1}/{args.trials}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{args.nodes} members, in-memory network (0.2-1 ms delay), timeouts {args.timeout} ms, "
          f"heartbeat {args.heartbeat:g} ms, {args.trials} trials; {platform.python_implementation()} "
          f"{platform.python_version()} on {platform.machine()}")
    print(f"| {'measure':<18} | {'min':>7} | {'median':>7} | {'p90':>7} | {'max':>7} |")
    print(f"|{'-' * 20}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, values in samples.items():
        print(f"| {name:<18} | {min(values):7.1f} | {statistics.median(values):7.1f} | "
              f"{_percentile(values, 0.9):7.1f} | {max(values):7.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
