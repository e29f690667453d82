"""The ZeroMQ transport's death probes on their own (transports/zeromq/probe.py), with real loopback sockets.

The receive thread's part is driven by hand here: a connection event reaches :meth:`TcpProbes.read_monitor`
through an in-process PAIR socket, in libzmq's monitor format, and :meth:`TcpProbes.run` is called as the
receive loop calls it (after a poll bounded by :meth:`TcpProbes.poll_timeout_ms`).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator

import pytest
import zmq

from raft_election.ratelimit import RateLimitedLog
from transports.socketbase import Counters
from transports.zeromq.probe import TcpProbes

PEER = 2


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def event(kind: int) -> list[bytes]:
    """A monitor message as libzmq 4 writes it: ``[uint16 event, uint32 value]``, then the endpoint."""
    return [struct.pack("=HI", kind, 0), b"tcp://127.0.0.1:1"]


def test_a_dying_peer_still_listening_when_its_connection_dropped_is_probed_again(
        context: zmq.Context[zmq.Socket[bytes]]) -> None:
    """A process being killed closes its connections a few milliseconds before its listening socket: the
    probe the drop set off connects, and must be repeated (REPROBE_FIRST, doubling) until the refusal,
    without waiting for libzmq's reconnection to fail (no further monitor event is given here)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    counters = Counters(["disconnects", "probes_sent", "evidence_ignored", "probe_errors"])
    asked: list[int] = []  # what the transport would queue for the receive thread
    probes = TcpProbes("probe-test", None, counters, RateLimitedLog(logging.getLogger(__name__)),
                       request=asked.append, wake=lambda: None, running=lambda: True)
    monitor = context.socket(zmq.PAIR)
    monitor.bind("inproc://probe-test-monitor")
    libzmq_side = context.socket(zmq.PAIR)
    libzmq_side.connect("inproc://probe-test-monitor")
    probes.set_peer(PEER, probes.target(f"tcp://127.0.0.1:{port}"), monitor)
    poller = zmq.Poller()

    def receive_loop_round(timeout_ms: int) -> list[int]:
        ready = dict(poller.poll(timeout_ms))
        if monitor in ready:
            probes.read_monitor(PEER, monitor)
        taken = asked[:]
        asked.clear()
        return probes.run(poller, ready, taken)

    evidence: list[int] = []
    deadline = time.monotonic() + 30  # only so that a broken rule fails instead of hanging
    try:
        probes.poll_monitors(poller)
        libzmq_side.send_multipart(event(zmq.EVENT_DISCONNECTED))
        while counters.snapshot()["probes_sent"] < 2:  # the probe the drop set off, and a repeat
            assert time.monotonic() < deadline, "a probe that connected was not repeated"
            evidence += receive_loop_round(min(probes.poll_timeout_ms(), 100))
        assert evidence == []  # something still listens: no evidence
        listener.close()  # now the process is gone: its port refuses
        while not evidence:
            assert time.monotonic() < deadline, "no evidence once the port refused"
            evidence += receive_loop_round(min(probes.poll_timeout_ms(), 100))
        assert evidence == [PEER]
        assert counters.snapshot()["disconnects"] == 1  # libzmq said nothing more
    finally:
        listener.close()
        probes.close()
        libzmq_side.close(linger=0)
