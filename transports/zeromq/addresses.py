"""ZeroMQ addresses: ``tcp://host:port``, ``host:port`` and ``[IPv6]:port``, normalised to one endpoint form.

:func:`normalize_address` turns every accepted form into the ``tcp://`` endpoint libzmq binds and connects
to; the helpers below read such an endpoint back (its host and port, whether it is an IPv6 literal) for
the socket options and the TCP death probes.  Nothing here resolves a name: libzmq resolves a DNS name on
every connect attempt, so a peer whose address changes is found again.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Tuple

__all__ = ["is_ipv6", "normalize_address", "split_endpoint"]

_ADDRESS = re.compile(
    r"(?:tcp://)?(?:\[(?P<v6>[^\[\]\s/]+)\]|(?P<host>[^\[\]\s/:]+)):(?P<port>[0-9]{1,5})",
    re.ASCII,
)


def normalize_address(address: str) -> str:
    """Return ``address`` as a ZeroMQ TCP endpoint: ``tcp://host:port`` or ``tcp://[v6]:port``.

    Accepts ``tcp://host:port``, ``host:port`` and ``[v6]:port`` (IPv6 literals must be bracketed); the
    host is an IPv4 or bracketed IPv6 literal or a DNS name (resolved by libzmq on every connect attempt, so
    a peer whose address changes is found again).

    Raises:
        ValueError: the address has another form, another scheme, or a port outside 1..65535.
    """
    if not isinstance(address, str):
        raise ValueError(f"a ZeroMQ address must be a str like 'tcp://10.0.0.1:9001', got {address!r}")
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ValueError(
            f"{address!r} is not a TCP address; use 'tcp://host:port', 'host:port' or '[ipv6]:port'"
        )
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is outside 1..65535")
    v6 = match["v6"]
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise ValueError(f"{address!r}: {v6!r} in brackets is not an IPv6 address") from None
        return f"tcp://[{v6}]:{port}"
    return f"tcp://{match['host']}:{port}"


def is_ipv6(endpoint: str) -> bool:
    """Whether an endpoint made by :func:`normalize_address` has a (bracketed) IPv6 literal as its host."""
    return endpoint.startswith("tcp://[")


def split_endpoint(endpoint: str) -> Tuple[str, int]:
    """``(host, port)`` of an endpoint made by :func:`normalize_address` (an IPv6 host without brackets)."""
    match = _ADDRESS.fullmatch(endpoint)
    assert match is not None, endpoint
    return match["v6"] or match["host"], int(match["port"])
