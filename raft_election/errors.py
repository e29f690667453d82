"""The library's exception tree.

Everything the library raises on purpose derives from :class:`RaftElectionError`, so an application can
catch the library's failures in one place.  Timeouts use the builtin :class:`TimeoutError`.
"""

from __future__ import annotations

__all__ = [
    "RaftElectionError",
    "ConfigError",
    "DecodeError",
    "StorageError",
    "IllegalTransitionError",
    "TransportError",
    "NoTransferTargetError",
    "NotLeaderError",
    "MembershipChangeError",
]


class RaftElectionError(Exception):
    """Root of every error the library raises on purpose."""


class ConfigError(RaftElectionError, ValueError):
    """A configuration value is invalid.

    The message names the field, the offending value and how to fix it, e.g.
    ``"heartbeat_interval (0.1 s) must be at most a third of election_timeout min (0.15 s) ..."``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        #: The name of the configuration field at fault (dotted for nested values).
        self.field = field


class DecodeError(RaftElectionError):
    """Bytes from the network are not a valid message for this cluster.

    ``reason`` is a short stable code (``"truncated"``, ``"bad_mac"``, ``"wrong_cluster"``, ...) that the
    node uses as the key of its rejection counters.  Raised only by the codec; the node catches it, counts
    and logs the message, and drops it, so it never escapes a receive loop.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class StorageError(RaftElectionError):
    """Persistent state could not be read or written.

    A node refuses to start (or stops) on this error rather than continue with a reset term or vote,
    which could let it vote twice in one term.
    """


class IllegalTransitionError(RaftElectionError):
    """The core was asked to move between roles in a way Raft forbids (a bug, never a network event)."""


class TransportError(RaftElectionError):
    """A transport could not be set up (for example its address cannot be bound)."""


class NoTransferTargetError(RaftElectionError):
    """A leadership transfer found no peer that stands for election and answered recently."""


class NotLeaderError(RaftElectionError):
    """A request only the leader can carry out (a membership change) reached a member that does not lead.

    ``leader_id`` is the leader this member knows of, to retry there, or None if it knows of none.
    """

    def __init__(self, message: str, leader_id: int | None = None) -> None:
        super().__init__(message)
        #: The leader to ask instead, if this member knows one.
        self.leader_id = leader_id


class MembershipChangeError(RaftElectionError):
    """A membership change cannot be made now: another is pending, or the change itself is invalid.

    The message says which (another change pending, the member already present or absent, the new
    member not answering its catch-up round, the last member removed) and what to do.
    """
