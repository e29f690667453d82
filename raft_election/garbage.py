"""Garbage for bad-input tests: random and mutated messages, and a way to throw them at a live member.

Every member must drop such input, count it and carry on (SPEC §6).  :func:`garbage_messages` makes a
reproducible mix of random byte strings and real encoded messages with bit flips, truncations and
trailing bytes (never an unchanged, validly signed message: that would not be garbage); :func:`flood`
sends them to a member's UDP or ZeroMQ address.  Used by the tests and ``benchmarks/garbage_flood.py``.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable, Iterator

from raft_election.codec import Codec
from raft_election.messages import Envelope, Heartbeat, HeartbeatResponse, VoteRequest

__all__ = ["flood", "garbage_messages"]

#: Longest garbage message: below the ZeroMQ transport's frame limit, so the sender is not disconnected.
MAX_GARBAGE = 120


def garbage_messages(count: int, codec: Codec, recipient: int, seed: int) -> Iterator[bytes]:
    """``count`` non-empty garbage messages for ``recipient``, a quarter random, the rest mutated."""
    rng = random.Random(seed)
    samples = [codec.encode(Envelope(sender=2, recipient=recipient, message=message)) for message in (
        Heartbeat(term=10**6, round=1), VoteRequest(term=10**6, round=2),
        HeartbeatResponse(term=10**6, round=3, candidate=True))]
    for index in range(count):
        kind = index % 4
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, MAX_GARBAGE)))
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
            data += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
        yield bytes(data[:MAX_GARBAGE])


def flood(transport: str, host: str, port: int, payloads: Iterable[bytes]) -> int:
    """Send every payload to a member at ``host:port`` over ``transport`` (udp or zmq); return the count.

    UDP sends are paced lightly so the member's socket buffer, not the sender, sets the pace.
    """
    sent = 0
    if transport == "udp":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            for data in payloads:
                sock.sendto(data, (host, port))
                sent += 1
                if sent % 200 == 0:
                    time.sleep(0.002)
        return sent
    import zmq  # noqa: PLC0415 (only when flooding a ZeroMQ member)

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}")
    try:
        for data in payloads:
            push.send(data)
            sent += 1
    finally:
        push.close()
        context.term()
    return sent
