"""What the kernel tells about a member process: its CPU time so far (``/proc/<pid>/stat``, Linux)."""

from __future__ import annotations

import os

__all__ = ["APPLICATION_THREAD", "CLOCK_TICKS", "cpu_seconds", "threads_cpu_seconds"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The kernel name (``/proc/<pid>/task/<tid>/comm``) of the benchmarks' application threads
#: (``benchmarks/app_thread``): their CPU is the application's, not the member's.
APPLICATION_THREAD = "re-application"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    return _stat_seconds(f"/proc/{pid}/stat")


def threads_cpu_seconds(pid: int, name: str) -> float:
    """CPU time so far of the threads of process ``pid`` whose kernel name is ``name`` (0 if none)."""
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/comm", encoding="utf-8", errors="replace") as file:
                if file.read().strip() != name:
                    continue
            total += _stat_seconds(f"/proc/{pid}/task/{task}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total


def _stat_seconds(path: str) -> float:
    with open(path, encoding="ascii", errors="replace") as file:
        data = file.read()
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = data[data.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5); fields[0] is field 3
    return (utime + stime) / CLOCK_TICKS
