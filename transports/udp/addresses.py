"""UDP addresses: parsing ``host:port`` and ``[IPv6]:port``, resolving them once, binding the node's own.

Addresses are ``host:port`` (an IPv4 literal or a host name) or ``[IPv6]:port`` (``[::1]:9001``).  Every
address is resolved when the transport starts, numeric literals without any DNS query; a peer's host
*name* is resolved again every few seconds afterwards (see :class:`~transports.udp.UdpTransport`), so a
member whose address changes (a replaced host or container) or whose name did not resolve yet is found.
A member added by :meth:`~transports.udp.UdpTransport.set_peers` is resolved at once if its host is a
literal (:func:`resolve_literal`, no DNS) and otherwise in the background, like the names above.
The socket's family (IPv4 or IPv6) is the family of the node's own resolved address; a peer that has no
address of that family cannot be reached from this socket, so :func:`routes` leaves it out with a warning
naming it, and datagrams to it are dropped and counted (``send_dropped``).  Use one family per cluster.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

from raft_election.errors import TransportError

__all__ = ["SockAddr", "bind_socket", "format_address", "is_numeric", "parse_address", "resolve",
           "resolve_for", "resolve_literal", "routes"]

#: The package's logger: the UDP transport logs as ``transports.udp``, whichever module writes the line.
logger = logging.getLogger(__package__)

#: What a failed ``bind`` means, in plain words, by errno.
_BIND_REASONS: Dict[int, str] = {
    errno.EADDRINUSE: "the port is already in use (another process, or another node on this host, is "
                      "bound to it)",
    errno.EADDRNOTAVAIL: "the address is not local: no network interface of this host has it",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EPERM: "permission denied",
    errno.EAFNOSUPPORT: "this host does not support the address family (is IPv6 disabled?)",
}

#: A socket address as ``getaddrinfo`` returns it: ``(host, port)`` or ``(host, port, flow, scope)``.
SockAddr = Tuple[Any, ...]


def parse_address(address: str) -> Tuple[str, int]:
    """Split a transport address into ``(host, port)``; no name is resolved.

    Accepted forms: ``host:port``, where host is an IPv4 literal or a host name (``127.0.0.1:9001``,
    ``db1.example:9001``), and ``[host]:port`` for IPv6 literals (``[::1]:9001``, ``[fe80::1%eth0]:9001``).
    The port must be a decimal number from 1 to 65535.

    Raises:
        TransportError: the address is malformed; the message quotes it and says what is wrong.
    """

    def bad(problem: str) -> TransportError:
        return TransportError(
            f"invalid UDP address {address!r}: {problem}; write it as host:port, "
            "e.g. '127.0.0.1:9001' or '[::1]:9001'"
        )

    if not isinstance(address, str):
        raise bad(f"it is a {type(address).__name__}, not a string")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise bad("the '[' of an IPv6 address has no closing ']'")
        host, rest = address[1:end], address[end + 1:]
        if not rest:
            raise bad("no port after the ']'")
        if not rest.startswith(":"):
            raise bad(f"unexpected {rest!r} after the ']'; a ':' and the port must follow it")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise bad("no port")
        if ":" in host:
            raise bad("an IPv6 address must be in brackets")
    if not host:
        raise bad("no host (to listen on every interface use 0.0.0.0 or [::])")
    if not port_text:
        raise bad("no port after the ':'")
    if not (port_text.isascii() and port_text.isdigit()):
        raise bad(f"the port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise bad(f"the port {port} is out of range (1 to 65535)")
    return host, port


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets: the form :func:`parse_address` reads."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _internet(infos: List[Tuple[Any, ...]]) -> List[Tuple[int, SockAddr]]:
    """The IPv4 and IPv6 ``(family, sockaddr)`` pairs of a ``getaddrinfo`` answer, in its order."""
    return [(info[0], info[4]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def resolve_literal(host: str, port: int) -> List[Tuple[int, SockAddr]]:
    """Like :func:`resolve` for an IPv4 or IPv6 literal only: never looks a name up, so never waits.

    Raises:
        socket.gaierror: ``host`` is not a literal.
    """
    return _internet(socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0,
                                        socket.AI_NUMERICHOST))


def resolve(host: str, port: int) -> List[Tuple[int, SockAddr]]:
    """Resolve ``host`` to ``(family, sockaddr)`` pairs, IPv4 and IPv6 only, in ``getaddrinfo``'s order.

    A numeric literal is tried first with ``AI_NUMERICHOST`` (:func:`resolve_literal`), so it never waits
    for DNS.

    Raises:
        socket.gaierror: the name cannot be resolved.
    """
    try:
        return resolve_literal(host, port)
    except socket.gaierror:
        pass
    return _internet(socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM))


def is_numeric(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 literal (which never needs resolving again)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def resolve_for(family: int, host: str, port: int) -> Optional[SockAddr]:
    """The first address of ``host:port`` in ``family``; None if it resolves to none (or not at all)."""
    try:
        candidates = resolve(host, port)
    except socket.gaierror:
        return None
    return next((sockaddr for candidate_family, sockaddr in candidates if candidate_family == family), None)


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def bind_socket(node_id: int, address: str, host: str, port: int) -> socket.socket:
    """Return a non-blocking datagram socket bound to the first usable resolution of ``host:port``.

    The socket does not set ``SO_REUSEADDR``, so two nodes can never share a port by mistake (on Linux
    that option would let both bind it and split the traffic between them).

    Raises:
        TransportError: the host cannot be resolved or no resolution can be bound; the message names
            the address and the reason (with the errno text).
    """
    try:
        candidates = resolve(host, port)
    except socket.gaierror as exc:
        raise TransportError(
            f"cannot resolve the host of node {node_id}'s address {address!r}: {exc}"
        ) from exc
    if not candidates:
        raise TransportError(f"the host of node {node_id}'s address {address!r} has no IPv4 or IPv6 address")
    first_error: Optional[OSError] = None
    for family, sockaddr in candidates:
        sock: Optional[socket.socket] = None
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(sockaddr)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            if sock is not None:
                sock.close()
            if first_error is None:
                first_error = exc
    assert first_error is not None
    reason = _BIND_REASONS.get(first_error.errno or 0, "the operating system refused")
    raise TransportError(
        f"cannot bind node {node_id}'s UDP address {address!r}: {reason} ({first_error})"
    ) from first_error


def routes(node_id: int, family: int, peers: Mapping[int, str],
           parsed: Mapping[int, Tuple[str, int]], *, numeric_only: bool = False) -> Dict[int, SockAddr]:
    """Resolve each member's address for a socket of ``family``; warn about (and leave out) the others.

    A peer whose host name cannot be resolved, or that has no address of this socket's family, is logged
    as a warning and left out, so datagrams to it are dropped: one unreachable member must not keep the
    others from electing a leader.  With ``numeric_only`` no name is looked up (``parsed`` must hold
    literals only; see :func:`resolve_literal`).
    """
    lookup = resolve_literal if numeric_only else resolve
    found: Dict[int, SockAddr] = {}
    for peer_id, (host, port) in parsed.items():
        try:
            candidates = lookup(host, port)
        except socket.gaierror as exc:
            logger.warning("node %d: cannot resolve node %d's address %r (%s); datagrams to it will be "
                           "dropped", node_id, peer_id, peers[peer_id], exc)
            continue
        usable = [sockaddr for candidate_family, sockaddr in candidates if candidate_family == family]
        if not usable:
            logger.warning("node %d: node %d's address %r has no %s address, and this node's socket is %s; "
                           "datagrams to it will be dropped (use one address family for the whole cluster)",
                           node_id, peer_id, peers[peer_id], _family_name(family), _family_name(family))
            continue
        found[peer_id] = usable[0]
    return found
