"""A sharded worker: every shard is processed by exactly one member at a time, the shards spread over them.

Each process is one member of the cluster (``--cluster FILE --id N``).  The work is split into ``--shards``
shards (``raft_election.Shards``: one election group each); a member works on the shards it leads, and
every step on a shard is written to that shard's file in ``--out`` with the shard's fencing token, through
a fenced write that refuses a token lower than one it already accepted (so a member that was paused or cut
off and comes back late cannot write over its successor).  Kill a member and its shards move to the
others at once; start it again and the balancer hands them back, a few per second::

    python examples/sharded_worker.py --cluster cluster.toml --id 1 --out /tmp/shards
    python examples/sharded_worker.py --cluster cluster.toml --id 2 --out /tmp/shards
    python examples/sharded_worker.py --cluster cluster.toml --id 3 --out /tmp/shards
    tail -f /tmp/shards/shard-0.log       # "token member step" lines: one member at a time per token

SIGTERM or SIGINT stop the process gracefully (the shards it leads are handed over first).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import threading
from pathlib import Path

from raft_election import FileStorage, RaftNode, Shards, load_cluster_file
from raft_election.member import make_transport


def fenced_append(path: Path, token: int, line: str) -> bool:
    """The shard's storage: append ``line`` unless a higher token was accepted before (under ``flock``)."""
    with open(path, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(max(0, file.seek(0, os.SEEK_END) - 256))
        lines = file.read().splitlines()
        if lines and token < int(lines[-1].split()[0]):
            return False
        file.write(f"{token} {line}\n")
        return True


def work(shards: Shards, node_id: int, out: Path, stop: threading.Event, step: float) -> None:
    """Do one step of every shard this member leads, each fenced by its token, until ``stop``."""
    done = 0
    while not stop.is_set():
        for shard, leadership in sorted(shards.leaderships().items()):
            if leadership.valid():  # checked right before the write; the token covers what comes after
                done += 1
                fenced_append(out / f"shard-{shard}.log", leadership.term, f"{node_id} {done}")
        stop.wait(step)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", required=True, help="the cluster file (TOML or JSON)")
    parser.add_argument("--id", type=int, required=True, help="this member's id")
    parser.add_argument("--shards", type=int, default=16, help="how many shards (the same on every member)")
    parser.add_argument("--out", required=True, help="directory of the shards' files")
    parser.add_argument("--data-dir", help="where to keep terms and votes (default: in --out)")
    parser.add_argument("--step", type=float, default=0.05, help="seconds between steps (default 0.05)")
    args = parser.parse_args(argv)
    cluster = load_cluster_file(args.cluster)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    storage = FileStorage(args.data_dir or out / f"member-{args.id}")
    with RaftNode(cluster.config_for(args.id), make_transport(cluster.transport), storage) as node:
        shards = Shards(node, count=args.shards)
        print(f"member {args.id} works on its shards of {args.shards}", flush=True)
        work(shards, args.id, out, stop, args.step)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
