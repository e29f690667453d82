"""The environment that gives member processes an application thread (``benchmarks/app_thread``).

SPEC §8: members in every benchmark run as a real application would, with a thread that reads
``is_leader`` about every millisecond and, where stated, one that holds the GIL now and then.  The
application itself is ``benchmarks/app_thread/sitecustomize.py``; this module only builds the variables
for it, for :class:`~raft_election.processes.MemberProcesses` (``env=``) or a shell::

    RE_APP_READ_MS=1 PYTHONPATH=benchmarks/app_thread:. raft-election bench --transport udp

``tree`` puts another checkout's ``raft_election`` first on the members' path, so that two trees are
measured with the same application and the same benchmark code (a before/after comparison).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

#: The directory whose ``sitecustomize.py`` starts the application threads.
APP_THREAD_DIR = Path(__file__).resolve().parent / "app_thread"
#: The tree these benchmarks belong to.
REPO = Path(__file__).resolve().parent.parent


def app_env(*, read_ms: float = 1.0, gil_ms: float = 0.0, gil_every: tuple[float, float] = (1.0, 2.0),
            tree: Optional[str] = None, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment variables for member processes with the application described above.

    Args:
        read_ms: read ``is_leader`` every this many milliseconds (0: no reader thread).
        gil_ms: hold the GIL for about this many milliseconds at random moments (0: never).
        gil_every: the range of seconds between two holds.
        tree: the checkout whose ``raft_election`` the members import (default: this one).
        base: the environment to start from (default ``os.environ``).
    """
    env = dict(os.environ if base is None else base)
    path = [str(APP_THREAD_DIR), str(Path(tree).resolve() if tree else REPO)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["RE_APP_READ_MS"] = f"{read_ms:g}"
    env["RE_APP_GIL_MS"] = f"{gil_ms:g}"
    env["RE_APP_GIL_EVERY"] = f"{gil_every[0]:g}-{gil_every[1]:g}"
    return env


def describe(*, read_ms: float, gil_ms: float, gil_every: tuple[float, float]) -> str:
    """The application in words, for reports."""
    parts = [f"reads is_leader every {read_ms:g} ms" if read_ms > 0 else "no is_leader reader"]
    if gil_ms > 0:
        parts.append(f"holds the GIL {gil_ms:g} ms every {gil_every[0]:g}-{gil_every[1]:g} s")
    return ", ".join(parts)
