"""Lock handover times: on release (to a waiting member) and after a holder crash.

* ``--mode memory``: three threaded members over the in-memory network in this process, each looping
  acquire / hold ``--hold`` / release; a handover is the gap from one holder's ``release()`` call to the
  next holder's ``acquire()`` returning.
* ``--mode udp`` / ``--mode zmq``: three contender processes (``benchmarks/lock_contender.py``) on
  127.0.0.1; a handover is the gap from the releasing member's lease end to the next holder's lease start,
  both from the members' own events (``time.monotonic``, one clock on one machine).  ``--crashes K`` also
  SIGKILLs the holder K times (restarting it) and measures kill → next holder acquired.

Run::

    python -m benchmarks.lock_handover --mode memory --handovers 100
    python -m benchmarks.lock_handover --mode udp --handovers 100 --crashes 10
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import threading
import time

from benchmarks.lock_contender import Contenders
from raft_election import DistributedLock, MemoryStorage, RaftConfig, RaftNode


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    median = statistics.median(values)
    return (f"| {name:<24} | {len(values):>5} | {min(values) * 1000:7.2f} | {median * 1000:7.2f} "
            f"| {p90 * 1000:7.2f} | {max(values) * 1000:7.2f} |")


def memory_handovers(count: int, hold: float) -> list[float]:
    from transports.memory import InMemoryNetwork  # noqa: PLC0415

    network = InMemoryNetwork(seed=1, delay=(0.0002, 0.001))
    peers = {i: f"memory:{i}" for i in (1, 2, 3)}
    nodes = {i: RaftNode(RaftConfig(node_id=i, peers=peers), network.transport(i), MemoryStorage())
             for i in peers}
    locks = {i: DistributedLock(node) for i, node in nodes.items()}
    for node in nodes.values():
        node.start()
    released: list[tuple[float, int]] = []
    gaps: list[float] = []
    guard = threading.Lock()
    done = threading.Event()

    def contend(node_id: int) -> None:
        while not done.is_set():
            try:
                locks[node_id].acquire(timeout=1.0)
            except TimeoutError:
                continue
            acquired = time.monotonic()
            with guard:
                if released and released[-1][1] != node_id:
                    gaps.append(acquired - released[-1][0])
                if len(gaps) >= count:
                    done.set()
            time.sleep(hold)
            with guard:
                released.append((time.monotonic(), node_id))
            locks[node_id].release()

    workers = [threading.Thread(target=contend, args=(i,)) for i in peers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for node in nodes.values():
        node.stop()
    network.close()
    return gaps[:count]


def release_gaps(contenders: Contenders) -> list[float]:
    """Lease end of a releasing holder → lease start of the next holder (another member)."""
    with contenders.changed:
        leases = sorted((r["at"], r["event"], r["node"]) for r in contenders.records
                        if r["event"] in ("lease_start", "lease_end"))
    gaps = []
    for (end_at, end_kind, end_node), (start_at, start_kind, start_node) in zip(leases, leases[1:]):
        if end_kind == "lease_end" and start_kind == "lease_start" and start_node != end_node:
            gaps.append(start_at - end_at)
    return gaps


def process_handovers(
    transport: str, count: int, crashes: int, hold: float
) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="raft-handover-") as workdir:
        run = Contenders(transport, workdir, hold=hold)
        try:
            while len(release_gaps(run)) < count:
                with run.changed:
                    run.changed.wait(0.5)
            gaps = release_gaps(run)[:count]
            crash_times = []
            for _ in range(crashes):
                since = run.mark()
                holder = run.wait(lambda r: r["event"] == "acquired", since)
                killed_at = time.monotonic()
                run.processes[holder["node"]].send_signal(signal.SIGKILL)
                run.processes[holder["node"]].wait()
                successor = run.wait(lambda r, h=holder, k=killed_at: r["event"] == "acquired"
                                     and r["node"] != h["node"] and r["at"] > k, since)
                crash_times.append(successor["at"] - killed_at)
                run.start(holder["node"])
            return gaps, crash_times
        finally:
            run.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("memory", "udp", "zmq"), default="memory")
    parser.add_argument("--handovers", type=int, default=100)
    parser.add_argument("--crashes", type=int, default=0, help="holder SIGKILLs (process modes only)")
    parser.add_argument("--hold", type=float, default=0.02, help="seconds each holder keeps the lock")
    args = parser.parse_args(argv)
    print(f"lock handover, mode {args.mode}, 3 members, timeouts 150-300 ms, heartbeat 50 ms, hold "
          f"{args.hold * 1000:g} ms")
    print(f"| {'measure':<24} | {'n':>5} | {'min ms':>7} | {'median':>7} | {'p90':>7} | {'max':>7} |")
    print(f"|{'-' * 26}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    if args.mode == "memory":
        print(summary("release -> next acquire", memory_handovers(args.handovers, args.hold)))
    else:
        gaps, crash_times = process_handovers(args.mode, args.handovers, args.crashes, args.hold)
        print(summary("release -> next lease", gaps))
        if crash_times:
            print(summary("holder SIGKILL -> acquire", crash_times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
