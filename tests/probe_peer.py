"""A peer in its own OS process for tests/test_death_probe.py: binds one address and waits to be killed.

Usage: ``python -m tests.probe_peer {udp|zmq} ADDRESS``.  Starts the transport of that kind as the only
member of a one-node cluster bound to ``ADDRESS`` (incoming data is dropped), writes ``ready`` and a newline
to stdout, then waits until stdin closes, closes the transport and exits.  The tests kill it with SIGKILL
(or pause it with SIGSTOP) by its PID.
"""

from __future__ import annotations

import sys

from raft_election.transport import Transport
from transports.udp import UdpTransport
from transports.zeromq import ZmqTransport


def main(argv: list[str]) -> int:
    kind, address = argv
    transport: Transport = UdpTransport() if kind == "udp" else ZmqTransport()
    transport.start(1, {1: address}, lambda data: None)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()
    transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
