"""Helpers shared by the transport tests."""

from __future__ import annotations

import socket
from typing import Callable, Optional

import pytest


def received_until(get: Callable[[], bytes], marker: bytes) -> list[bytes]:
    """Everything ``get()`` returns before ``marker`` (which is consumed), in order."""
    got = []
    while (data := get()) != marker:
        got.append(data)
    return got


def _ipv6_problem() -> Optional[str]:
    """Why this host cannot use the IPv6 loopback address, or None if it can."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"cannot bind the IPv6 loopback address ::1 on this host ({exc})"
    return None


IPV6_PROBLEM = _ipv6_problem()
#: Marks a test (or a parameter) that needs IPv6 on loopback; it skips, saying why, where there is none.
needs_ipv6 = pytest.mark.skipif(IPV6_PROBLEM is not None, reason=IPV6_PROBLEM or "")
