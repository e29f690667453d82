"""Garbage flood at a live leader: member processes on 127.0.0.1, random and mutated messages.

Starts a 3-member cluster (``raft-election run``) over UDP or ZeroMQ with a shared secret, waits for a
leader, sends it ``--count`` garbage messages (a quarter random bytes, the rest real encoded messages with
bit flips, truncations or extensions), and reports how many the leader rejected (from its own status
counters), whether it stayed leader in the same term, and how many leader changes the cluster saw.  Run::

    python -m benchmarks.garbage_flood --transport udp --count 20000
"""

from __future__ import annotations

import argparse
import random
import socket
import tempfile
import time
from collections.abc import Iterator

from raft_election.codec import Codec
from raft_election.messages import Envelope, Heartbeat, HeartbeatResponse, VoteRequest
from raft_election.processes import MemberProcesses, free_ports, write_cluster_file

SECRET = "benchmark secret, long enough to use"


def garbage(count: int, codec: Codec, recipient: int, seed: int) -> Iterator[bytes]:
    """Random byte strings and mutations of valid encoded messages (never empty, at most 120 bytes)."""
    rng = random.Random(seed)
    samples = [codec.encode(Envelope(sender=2, recipient=recipient, message=message)) for message in (
        Heartbeat(term=10**6, round=1), VoteRequest(term=10**6, round=2),
        HeartbeatResponse(term=10**6, round=3, candidate=True))]
    for index in range(count):
        kind = index % 4
        if kind == 0:
            yield rng.randbytes(rng.randint(1, 120))
            continue
        original = rng.choice(samples)
        data = bytearray(original)
        if kind == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            if data == original:  # two flips of one bit: that would be a genuine, signed message
                data[0] ^= 0x80
        elif kind == 2:
            data = data[: rng.randint(1, len(data) - 1)]
        else:
            data += rng.randbytes(rng.randint(1, 40))
        yield bytes(data)


def send_all(transport: str, host: str, port: int, payloads: Iterator[bytes]) -> int:
    """Send every payload to ``host:port``; return how many were sent."""
    sent = 0
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in payloads:
                sock.sendto(data, (host, port))
                sent += 1
                if sent % 200 == 0:
                    time.sleep(0.002)  # pacing: stay within the receiver's socket buffer
        return sent
    import zmq  # noqa: PLC0415

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(f"tcp://{host}:{port}")
    try:
        for data in payloads:
            push.send(data)
            sent += 1
    finally:
        push.close()
        context.term()
    return sent


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
            sent = send_all(args.transport, "127.0.0.1", ports[leader.node - 1],
                            garbage(args.count, codec, leader.node, args.seed))
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
