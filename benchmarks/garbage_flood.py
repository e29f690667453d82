"""Garbage flood at a live leader: member processes on 127.0.0.1, random and mutated messages.

Starts a 3-member cluster (``raft-election run``) over UDP or ZeroMQ with a shared secret, waits for a
leader, sends it ``--count`` garbage messages (a quarter random bytes, the rest real encoded messages with
bit flips, truncations or extensions), and reports how many the leader rejected (from its own status
counters), whether it stayed leader in the same term, and how many leader changes the cluster saw.  Run::

    python -m benchmarks.garbage_flood --transport udp --count 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time

from raft_election.codec import Codec
from raft_election.garbage import flood, garbage_messages
from raft_election.processes import MemberProcesses, free_ports, write_cluster_file

SECRET = "benchmark secret, long enough to use"


def rejected(counters: dict[str, int]) -> int:
    return sum(value for name, value in counters.items() if name.startswith("rejected_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("udp", "zmq"), default="udp")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raft-flood-") as workdir:
        ports = free_ports(3, kind="udp" if args.transport == "udp" else "tcp")
        members = {i: f"127.0.0.1:{port}" for i, port in enumerate(ports, 1)}
        path = write_cluster_file(f"{workdir}/cluster.json", members, transport=args.transport,
                                  cluster="flood", secret=SECRET)
        with MemberProcesses(path, workdir, members) as processes:
            processes.start_all()
            leader = processes.wait_for(lambda e: e.event == "became_leader")
            before = processes.status(leader.node)
            since = processes.mark()
            codec = Codec("flood", SECRET.encode())
            started = time.monotonic()
            sent = flood(args.transport, "127.0.0.1", ports[leader.node - 1],
                         garbage_messages(args.count, codec, leader.node, args.seed))
            deadline = time.monotonic() + 60
            while True:
                status = processes.status(leader.node)
                count = rejected(status["counters"]) - rejected(before["counters"])
                if count >= sent or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            changes = [e for e in processes.events[since:] if e.event in ("became_leader", "lost_leadership")]
            by_reason = {name: value - before["counters"].get(name, 0)
                         for name, value in sorted(status["counters"].items())
                         if name.startswith("rejected_") and value != before["counters"].get(name, 0)}
            print(f"transport {args.transport}: sent {sent} garbage messages in {elapsed:.2f} s; leader "
                  f"{leader.node} rejected {count} ({by_reason}); still leader: {status['is_leader']} in "
                  f"term {status['term']} (was {leader.term}); leadership changes during the flood: "
                  f"{len(changes)}; process alive: {processes.alive(leader.node)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
