"""``raft-election lock``: run a command while holding the cluster's lock, like ``flock`` across machines.

The process joins the cluster as member ``--id`` (keeping its term and vote in the data directory),
acquires the lock, runs the command with ``RAFT_FENCING_TOKEN`` set to the token, forwards SIGTERM,
SIGINT, SIGHUP and SIGQUIT to it, and releases the lock when it exits.  If the lease lapses while the
command runs (this member was cut off or paused past its lease, or a lease gap: an answer round came back
late), the command is terminated: SIGTERM, then SIGKILL after a grace period.  A gap ends the command too,
although the member keeps office and may hold the lease again a moment later: another process cannot be
told to stop acting while the lease is away and resume after, and the lock must not outlive the lease.

Exit status: the command's own (128 + N if it died of signal N); :data:`EXIT_TIMEOUT` if the lock was not
acquired within ``--timeout``; :data:`EXIT_LOST` if the lock was lost and the command terminated; 2 for a
bad cluster file or id; 1 if the member cannot start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Optional, TextIO

from raft_election.clusterfile import ClusterFile
from raft_election.lock import DistributedLock
from raft_election.member import default_data_dir, make_transport
from raft_election.node import RaftNode
from raft_election.storage import FileStorage

__all__ = ["EXIT_LOST", "EXIT_TIMEOUT", "run_locked"]

#: The lock was not acquired within ``--timeout`` (EX_TEMPFAIL: try again later).
EXIT_TIMEOUT = 75
#: The lock was lost while the command ran; the command was terminated.
EXIT_LOST = 76

_FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})
_POLL = 0.02


def _unblock_signals() -> None:
    """In the child, before exec: undo the parent's blocked-signal mask (exec keeps it otherwise)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def run_locked(cluster: ClusterFile, node_id: int, command: Sequence[str], *, data_dir: Optional[str] = None,
               timeout: Optional[float] = None, grace: float = 5.0, stream: TextIO = sys.stderr) -> int:
    """Acquire the lock as member ``node_id``, run ``command``, release; return the exit status.

    Must be called from the main thread before other threads start (signals are taken with
    ``sigtimedwait``, never by handlers).
    """
    config = cluster.config_for(node_id, candidate=False)
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    transport = make_transport(cluster.transport)
    node = RaftNode(config, transport, FileStorage(data_dir or default_data_dir(cluster, node_id)))
    lock = DistributedLock(node)
    node.start()
    try:
        token = _acquire(lock, timeout)
        if token is None:
            stream.write(f"raft-election lock: not acquired within {timeout} s\n")
            return EXIT_TIMEOUT
        if token < 0:
            return 128 - token  # interrupted by a signal while waiting
        child = subprocess.Popen(list(command), env={**os.environ, "RAFT_FENCING_TOKEN": str(token)},
                                 preexec_fn=_unblock_signals)  # noqa: PLW1509 (only resets the mask)
        status = _supervise(child, lock, grace, stream)
        if lock.held:
            lock.release()
        return status
    finally:
        node.stop()


def _next_signal() -> int:
    """Wait up to a poll interval for a forwarded signal; its number, or 0.

    (After SIGSTOP/SIGCONT the wait can end with no signal: only the listed signals count.)
    """
    info = signal.sigtimedwait(_FORWARDED, _POLL)
    if info is None or info.si_signo not in _FORWARDED:
        return 0
    return int(info.si_signo)


def _acquire(lock: DistributedLock, timeout: Optional[float]) -> Optional[int]:
    """The token; None on timeout; minus the signal number if a forwarded signal arrived first."""
    result: dict[str, object] = {}

    def attempt() -> None:
        try:
            result["token"] = lock.acquire(timeout)
        except TimeoutError:
            result["token"] = None
        except BaseException as exc:  # surfaced in the main thread below
            result["error"] = exc

    waiter = threading.Thread(target=attempt, name="lock-acquire", daemon=True)
    waiter.start()
    while waiter.is_alive():
        signum = _next_signal()
        if signum:
            return -signum
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    token = result["token"]
    return token if isinstance(token, int) else None


def _supervise(child: subprocess.Popen[bytes], lock: DistributedLock, grace: float, stream: TextIO) -> int:
    """Forward signals to the child and watch the lock until the child exits; return the exit status."""
    while True:
        signum = _next_signal()
        if signum:
            child.send_signal(signum)
        status = child.poll()
        if status is not None:
            return status if status >= 0 else 128 - status
        if not lock.held:
            stream.write("raft-election lock: the lock was lost; terminating the command\n")
            stream.flush()
            child.terminate()
            deadline = time.monotonic() + grace
            while child.poll() is None and time.monotonic() < deadline:
                _next_signal()
            if child.poll() is None:
                child.kill()
            child.wait()
            return EXIT_LOST
