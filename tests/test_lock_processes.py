"""Three processes contend for the lock over UDP and ZeroMQ on 127.0.0.1, writing to a fenced file.

The held intervals come from each member's own lease events (``time.monotonic``, one clock for all
processes on a machine).  A holder stopped with SIGSTOP past its lease must find, on SIGCONT, that its
interval ended before the next holder's began and that the fenced file refuses its late write; after a
SIGKILL of the holder another contender acquires.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from typing import Callable, Optional

import pytest

from benchmarks.lock_contender import Contenders
from tests.test_processes import check_safe

TRANSPORTS = ["udp", "zmq"]


def check_leases(c: Contenders, kills: Optional[Mapping[int, float]] = None) -> None:
    """One leader per term, and no two ended leases overlap (a lease whose end is not read yet is left out;
    a killed holder's lease ended at its kill)."""
    safety = c.safety(kills)
    check_safe(safety, [lease for lease in safety.intervals() if not lease.open])


@pytest.fixture
def contenders(tmp_path) -> Iterator[Callable[..., Contenders]]:
    made: list[Contenders] = []

    def make(transport: str, hold: float = 0.05, rounds: int = 1000) -> Contenders:
        made.append(Contenders(transport, str(tmp_path), hold=hold, rounds=rounds))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_contenders_stopped_past_the_lease_are_fenced_off(contenders, transport):
    c = contenders(transport, hold=0.3)
    holder = c.wait(lambda r: r["event"] == "acquired")
    c.processes[holder["node"]].send_signal(signal.SIGSTOP)
    # Another contender takes the lock while the holder sleeps through its lease.
    successor = c.wait(lambda r: r["event"] == "acquired" and r["node"] != holder["node"])
    assert successor["token"] > holder["token"]
    c.wait(lambda r: r["event"] == "write" and r["token"] == successor["token"])
    c.processes[holder["node"]].send_signal(signal.SIGCONT)
    late = c.wait(lambda r: r["event"] == "write" and r["token"] == holder["token"])
    assert late["accepted"] is False, "the fenced file accepted a stale holder's write"
    c.wait(lambda r: r["event"] == "lease_end" and r["node"] == holder["node"]
           and r["term"] == holder["token"])
    check_leases(c)
    with open(c.fenced) as fenced:
        tokens = [int(line.split()[0]) for line in fenced]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_after_the_holder_is_killed_another_contender_acquires(contenders, transport):
    c = contenders(transport, hold=0.3)
    holder = c.wait(lambda r: r["event"] == "acquired")
    killed_at = time.monotonic()
    c.processes[holder["node"]].kill()
    successor = c.wait(lambda r: r["event"] == "acquired" and r["node"] != holder["node"])
    assert successor["token"] > holder["token"]
    # Bounded: the lease (under 0.15 s) plus an election (at most 0.3 s, plus pre-vote and vote rounds);
    # the bound is generous so that only a real failure to fail over trips it, not a loaded machine.
    assert successor["at"] - killed_at < 5.0, successor["at"] - killed_at
    check_leases(c, {holder["node"]: killed_at})
