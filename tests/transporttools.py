"""Helpers shared by the transport tests."""

from __future__ import annotations

from typing import Callable


def received_until(get: Callable[[], bytes], marker: bytes) -> list[bytes]:
    """Everything ``get()`` returns before ``marker`` (which is consumed), in order."""
    got = []
    while (data := get()) != marker:
        got.append(data)
    return got
