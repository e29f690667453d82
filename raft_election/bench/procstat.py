"""What the kernel tells about a member process: its CPU time so far (``/proc/<pid>/stat``, Linux)."""

from __future__ import annotations

import os

__all__ = ["CLOCK_TICKS", "cpu_seconds"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        data = file.read()
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = data[data.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5); fields[0] is field 3
    return (utime + stime) / CLOCK_TICKS
