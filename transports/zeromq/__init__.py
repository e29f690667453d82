"""A ZeroMQ transport for nodes on different hosts (SPEC §3.3, §5).

:class:`ZmqTransport` (in :mod:`transports.zeromq.transport`) moves messages over ZeroMQ ``PUSH``/``PULL``
sockets on TCP and drops, never queues, what is meant for a peer that is down; the other modules hold one
job each: :mod:`~transports.zeromq.options` (the socket options and why each is set),
:mod:`~transports.zeromq.addresses` (``tcp://host:port`` endpoints), :mod:`~transports.zeromq.curve`
(CURVE keys and the ZAP handler) and :mod:`~transports.zeromq.probe` (TCP death probes, the
:class:`~raft_election.transport.DeathProbe` capability).  Import the public names from here; the
package's modules all log as ``transports.zeromq``.
"""

from __future__ import annotations

from transports.zeromq.addresses import normalize_address
from transports.zeromq.curve import CurveKey
from transports.zeromq.options import CONNECT_TIMEOUT_MS as CONNECT_TIMEOUT_MS
from transports.zeromq.options import HANDSHAKE_IVL_MS as HANDSHAKE_IVL_MS
from transports.zeromq.options import (
    KERNEL_BUFFER,
    MAX_FRAME_SIZE,
    RECEIVE_HWM,
    RECONNECT_IVL_MAX_MS,
    RECONNECT_IVL_MS,
    SEND_HWM,
    TCP_KEEPALIVE,
    TCP_MAXRT_MS,
)
from transports.zeromq.probe import DISCONNECT_WATCH, EVIDENCE_KIND, PROBE_TIMEOUT, REPROBE_FIRST, REPROBE_MAX
from transports.zeromq.transport import ZmqTransport

__all__ = [
    "CurveKey",
    "DISCONNECT_WATCH",
    "EVIDENCE_KIND",
    "KERNEL_BUFFER",
    "MAX_FRAME_SIZE",
    "PROBE_TIMEOUT",
    "RECEIVE_HWM",
    "RECONNECT_IVL_MAX_MS",
    "RECONNECT_IVL_MS",
    "REPROBE_FIRST",
    "REPROBE_MAX",
    "SEND_HWM",
    "TCP_KEEPALIVE",
    "TCP_MAXRT_MS",
    "ZmqTransport",
    "normalize_address",
]
