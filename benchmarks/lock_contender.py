"""A lock contender process (``python benchmarks/lock_contender.py``): for tests/test_lock_processes.py and
benchmarks/lock_handover.py.

Loops: acquire the lock, wait ``hold`` seconds holding it, write its token to the fenced file, release.
Prints one JSON line per fact on stdout: ``acquired``, ``write`` (accepted or refused by the fenced file),
``released``, and ``lease`` (from the member's own events: when the lease began and ended).
"""

from __future__ import annotations

import fcntl
import json
import sys
import threading
import time

from raft_election import DistributedLock, FileStorage, RaftNode, load_cluster_file
from raft_election.events import BecameLeader, Event, LostLeadership
from raft_election.member import make_transport

_OUTPUT = threading.Lock()


def emit(**record: object) -> None:
    """One JSON line; from the main thread and the node's callback thread, so under a lock."""
    line = json.dumps(record) + "\n"
    with _OUTPUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def fenced_write(path: str, token: int) -> bool:
    """The protected resource: refuses a token lower than the highest it has accepted."""
    with open(path, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        tokens = [int(line.split()[0]) for line in file if line.strip()]
        if tokens and token < max(tokens):
            return False
        file.write(f"{token} {time.monotonic()}\n")
        return True


def main() -> None:
    cluster_file, node_id, data_dir, fenced, hold, rounds = sys.argv[1:7]
    cluster = load_cluster_file(cluster_file)
    config = cluster.config_for(int(node_id))
    node = RaftNode(config, make_transport(cluster.transport), FileStorage(data_dir))
    lock = DistributedLock(node)

    def on_event(event: Event) -> None:
        if isinstance(event, BecameLeader):
            emit(event="lease_start", node=int(node_id), term=event.term, at=event.at)
        elif isinstance(event, LostLeadership):
            emit(event="lease_end", node=int(node_id), term=event.term, at=event.lease_end)

    node.add_listener(on_event)
    with node:
        emit(event="started", node=int(node_id))
        for _ in range(int(rounds)):
            token = lock.acquire()
            emit(event="acquired", node=int(node_id), token=token, at=time.monotonic())
            time.sleep(float(hold))  # holding (a test may SIGSTOP us here)
            accepted = fenced_write(fenced, token)
            emit(event="write", node=int(node_id), token=token, accepted=accepted, at=time.monotonic())
            if lock.held:
                lock.release()
            else:
                lock.lost.wait(5)
            emit(event="released", node=int(node_id), token=token, at=time.monotonic())


if __name__ == "__main__":
    main()
