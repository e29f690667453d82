"""A UDP transport: one datagram socket per node, for a LAN or loopback (SPEC §3.3, §5).

:class:`UdpTransport` (in :mod:`transports.udp.transport`) sends each message as one datagram to the
peer's address and delivers what arrives on a receive thread of its own; :mod:`transports.udp.addresses`
parses and resolves the ``host:port`` / ``[IPv6]:port`` addresses, and :mod:`transports.udp.probe` keeps
the per-peer probe sockets that hear a dead peer's host answer "port unreachable" (the
:class:`~raft_election.transport.DeathProbe` capability).  Import the public names from here; the package's
modules all log as ``transports.udp``.
"""

from __future__ import annotations

from transports.udp.addresses import parse_address
from transports.udp.probe import EVIDENCE_KIND
from transports.udp.transport import COUNTER_NAMES, UdpTransport
from transports.udp.transport import MAX_ERROR_BACKOFF as MAX_ERROR_BACKOFF
from transports.udp.transport import READ_BATCH as READ_BATCH

__all__ = ["COUNTER_NAMES", "EVIDENCE_KIND", "UdpTransport", "parse_address"]
