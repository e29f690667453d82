"""matplotlib for the benchmark and nemesis plots, imported only when a plot is drawn (``bench`` extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (plots go to files, never to a screen).

    Raises:
        RuntimeError: matplotlib is not installed; the message says how to install it.
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install 'raft-election[bench]'") from exc
    return plt
