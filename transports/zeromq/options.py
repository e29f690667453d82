"""The ZeroMQ socket options of the transport, and why each is set: stale messages are dropped, not queued.

A message for a peer that is down is **dropped**, never queued and delivered late (a burst of stale
heartbeats after a reconnect would be a bug).  :func:`configure_push`, :func:`configure_pull` and the
:func:`configure` they share set the options that make it so; each constant below says what its option
bounds, and each function's docstring why it is set, and what can still arrive late.
"""

from __future__ import annotations

from typing import Optional

import zmq

from raft_election import codec
from transports.zeromq.addresses import is_ipv6

__all__ = [
    "CONNECT_TIMEOUT_MS",
    "HANDSHAKE_IVL_MS",
    "KERNEL_BUFFER",
    "MAX_FRAME_SIZE",
    "RECEIVE_HWM",
    "RECONNECT_IVL_MAX_MS",
    "RECONNECT_IVL_MS",
    "SEND_HWM",
    "TCP_KEEPALIVE",
    "TCP_MAXRT_MS",
    "ZMQ_MAX_MESSAGE",
    "configure",
    "configure_pull",
    "configure_push",
]

#: ``ZMQ_SNDHWM`` of each per-peer ``PUSH`` socket: at most this many messages wait in libzmq for one peer
#: that is connected but not reading; further sends are dropped.  libzmq's reader acknowledges in batches of
#: half the mark, so a burst of up to ``SEND_HWM // 2`` to a peer that keeps up is always accepted; Raft
#: sends a peer two or three messages at a time.
SEND_HWM = 16
#: ``ZMQ_RCVHWM`` of the ``PULL`` socket (per connected peer): how many messages libzmq reads ahead of the
#: receive thread.  Beyond it libzmq stops reading, TCP flow control pushes back and the sender drops.
RECEIVE_HWM = 32
#: ``ZMQ_SNDBUF`` (``SO_SNDBUF``) of the ``PUSH`` sockets and ``ZMQ_RCVBUF`` (``SO_RCVBUF``) of the ``PULL``
#: socket, in bytes (Linux doubles it for bookkeeping).  Small on purpose: what sits in kernel buffers can
#: reach a paused peer late, and most election traffic is a few hundred bytes per round trip.  A larger
#: message (a frame of coalesced messages, up to the codec's ``MAX_FRAME_SIZE``) still passes, in several
#: TCP windows: a little slower, never refused.
KERNEL_BUFFER = 4096
#: ``ZMQ_RECONNECT_IVL``: first retry this long after a connection fails or breaks (libzmq adds a random
#: jitter of up to the same amount) ...
RECONNECT_IVL_MS = 50
#: ... doubling on every failure up to ``ZMQ_RECONNECT_IVL_MAX``.  Short, so that members started a moment
#: apart are all connected before their first election is over (with a 1 s cap a vote answered by a member
#: that started first could be dropped, its connection to the candidate still waiting to retry), and a
#: restarted peer is reached within a few hundred milliseconds.  A retry against a live host is one SYN
#: answered by one RST; against a vanished one, ``CONNECT_TIMEOUT_MS`` bounds each attempt.
RECONNECT_IVL_MAX_MS = 200
#: ``ZMQ_CONNECT_TIMEOUT``: give up a TCP connect that got no answer (a dead host drops SYNs) and retry,
#: rather than wait for the kernel's own timeout of about two minutes.
CONNECT_TIMEOUT_MS = 2000
#: ``ZMQ_HANDSHAKE_IVL``: a connection that does not finish the ZMTP handshake in time is closed, so clients
#: that connect and say nothing (or garbage) do not hold resources.
HANDSHAKE_IVL_MS = 5000
#: ``ZMQ_TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux): abort a connection whose sent data stayed unacknowledged
#: this long - a partition, a vanished host - discarding what the kernel still held for it; the socket then
#: reconnects.  Without it, TCP retransmits for many minutes and delivers the backlog when the path heals.
TCP_MAXRT_MS = 2000
#: ``ZMQ_TCP_KEEPALIVE_IDLE``/``_INTVL``/``_CNT`` (seconds, seconds, probes): the kernel probes idle
#: connections, so the receiving side of a connection whose sender's host vanished closes it rather than
#: keeping it forever.
TCP_KEEPALIVE = (5, 2, 3)

#: ``ZMQ_MAXMSGSIZE`` of every socket, in bytes: a peer announcing a longer ZeroMQ message is disconnected by
#: libzmq before the message is read.  A little above the largest datagram the codec makes
#: (:data:`raft_election.codec.MAX_FRAME_SIZE`, a frame of coalesced messages) so that moderately oversized
#: messages are still seen, counted and logged by the receive loop.
ZMQ_MAX_MESSAGE = codec.MAX_FRAME_SIZE + 4096
#: The former name of :data:`ZMQ_MAX_MESSAGE` (libzmq's limit, not the codec's ``MAX_FRAME_SIZE``), kept
#: because :mod:`transports.zeromq` exports it.
MAX_FRAME_SIZE = ZMQ_MAX_MESSAGE


def configure(sock: zmq.Socket[bytes], endpoint: str, ipv6: Optional[bool]) -> None:
    """Set the options every socket of the transport shares; ``ipv6`` as given to the transport.

    * ``ZMQ_LINGER=0``: closing a socket discards whatever it still holds, so a restarted node never sends
      what its previous incarnation queued.
    * ``ZMQ_MAXMSGSIZE`` (:data:`ZMQ_MAX_MESSAGE`) and ``ZMQ_HANDSHAKE_IVL`` bound what an untrusted peer
      can make libzmq allocate or hold.
    * ``ZMQ_TCP_MAXRT`` (``TCP_USER_TIMEOUT`` on Linux, :data:`TCP_MAXRT_MS`) aborts a connection whose data
      stays unacknowledged (a partition, a vanished host), discarding the kernel's backlog for it instead of
      retransmitting it for minutes and delivering it when the path heals; libzmq then reconnects.
    * TCP keepalive (:data:`TCP_KEEPALIVE`) closes idle connections whose other end vanished.
    * ``ZMQ_IPV6`` when ``ipv6`` is true, or when it is ``None`` and ``endpoint`` is an IPv6 literal.

    ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL``/``_TIMEOUT``) are deliberately **not** used: in libzmq 4.3.x a
    heartbeat (our timer, or a PONG owed to a peer's PING) on a connection whose input was paused by the
    receive high-water mark can hit ``Assertion failed: !_io_error (stream_engine_base.cpp)`` and abort the
    whole process (zeromq/libzmq#4364, #3937, #3596).  We reproduced it with a SIGSTOPped receiver.  Dead
    peers are found instead by the kernel: ``TCP_MAXRT`` for connections with data in flight, TCP keepalive
    for idle ones, and connection refusal/reset for restarted processes.

    What can still arrive late, honestly: what the kernels already accepted.  A peer that is *paused*
    (SIGSTOP, a frozen VM) keeps its TCP connection, and its kernel keeps acknowledging data until its
    receive buffer is full; those bytes are read when it resumes.  If the pause outlasts ``TCP_MAXRT`` once
    the window is full, the sender's side is aborted and its own backlog discarded; otherwise the sender's
    send buffer and up to ``SEND_HWM`` messages from its pipe follow too.  Measured on Linux loopback with
    100-byte messages at 20 per second: a 6 s pause delivers ~50 stale messages on resume (~120 without
    ``TCP_MAXRT``, ~8,000 of a flood with 1 MiB buffers); every other message sent meanwhile is dropped.  The
    same holds for a partition shorter than ``TCP_MAXRT``.  A *sender* that is paused may likewise flush what
    it queued before the pause.  Raft tolerates this (every message carries its term; a stale one is rejected
    by term or is harmless), and the codec's cluster id and MAC still apply: the transport bounds late
    delivery, it cannot rule it out.
    """
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, ZMQ_MAX_MESSAGE)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    sock.setsockopt(zmq.TCP_MAXRT, TCP_MAXRT_MS)
    idle, interval, count = TCP_KEEPALIVE
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, interval)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, count)
    if ipv6 or (ipv6 is None and is_ipv6(endpoint)):
        sock.setsockopt(zmq.IPV6, 1)


def configure_pull(pull: zmq.Socket[bytes], endpoint: str, ipv6: Optional[bool]) -> None:
    """Set the options of the node's ``PULL`` socket, which binds ``endpoint`` and receives from every peer.

    ``ZMQ_RCVHWM`` (:data:`RECEIVE_HWM`) bounds what libzmq reads ahead of this node's own receive thread
    when ``deliver`` is slow; beyond it TCP flow control pushes back and the *sender* drops.  The kernel's
    receive buffer is small (:data:`KERNEL_BUFFER`) for the same reason.
    """
    configure(pull, endpoint, ipv6)
    pull.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
    pull.setsockopt(zmq.RCVBUF, KERNEL_BUFFER)


def configure_push(push: zmq.Socket[bytes], endpoint: str, ipv6: Optional[bool]) -> None:
    """Set the options of a ``PUSH`` socket that connects (again and again) to one peer at ``endpoint``.

    * ``ZMQ_IMMEDIATE=1``: "messages shall be queued only to completed connections".  While a peer is down
      its socket has no pipe at all, so ``zmq_send(ZMQ_DONTWAIT)`` fails with ``EAGAIN`` and the message is
      dropped (``send_dropped``).  With the default (0) libzmq would queue up to the high water mark on a
      pipe created at connect time and flush it on the next connection.
    * With ``ZMQ_IMMEDIATE=1`` libzmq also *terminates* the pipe of a connection that breaks, discarding what
      it still held, instead of keeping it for the next connection: messages sent in the instant between a
      peer's death and its detection die with that connection.
    * ``ZMQ_SNDHWM`` is small (:data:`SEND_HWM`) and so is the kernel buffer (``ZMQ_SNDBUF``,
      :data:`KERNEL_BUFFER`), so a peer that is connected but not reading can only ever have a few dozen
      messages waiting for it; the rest are dropped at the sender.
    * Reconnection is quick and bounded (:data:`RECONNECT_IVL_MS`, :data:`RECONNECT_IVL_MAX_MS`,
      :data:`CONNECT_TIMEOUT_MS`).
    """
    configure(push, endpoint, ipv6)
    push.setsockopt(zmq.IMMEDIATE, 1)
    push.setsockopt(zmq.SNDHWM, SEND_HWM)
    push.setsockopt(zmq.RCVHWM, 1)  # a PUSH socket never reads; its peer has nothing to send
    push.setsockopt(zmq.SNDBUF, KERNEL_BUFFER)
    push.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    push.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    push.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
