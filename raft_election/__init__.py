"""Raft leader election and an exclusive distributed lock for threaded Python programs.

Quick start (see README.md)::

    from raft_election import RaftConfig, RaftNode, FileStorage
    from transports.memory import InMemoryNetwork

The election core (:mod:`raft_election.core`) is a deterministic, sans-I/O state machine; :class:`RaftNode`
drives it with threads over any :class:`Transport`; :mod:`raft_election.sim` runs it on a virtual clock.
"""

from raft_election._version import __version__
from raft_election.clusterfile import ClusterFile, load_cluster_file
from raft_election.config import RaftConfig
from raft_election.core import NoTransferTargetError
from raft_election.errors import (
    ConfigError,
    DecodeError,
    IllegalTransitionError,
    MembershipChangeError,
    NotLeaderError,
    RaftElectionError,
    StorageError,
    TransportError,
)
from raft_election.group import Group
from raft_election.leadership import Leadership
from raft_election.lock import DistributedLock, LockError
from raft_election.membership import Configuration
from raft_election.node import NodeStatus, RaftNode
from raft_election.roles import Role
from raft_election.shards import Shards
from raft_election.storage import FileStorage, HardState, MemoryStorage, Storage
from raft_election.transport import Transport

__all__ = [
    "ClusterFile",
    "ConfigError",
    "Configuration",
    "DecodeError",
    "DistributedLock",
    "FileStorage",
    "Group",
    "HardState",
    "IllegalTransitionError",
    "Leadership",
    "LockError",
    "MembershipChangeError",
    "MemoryStorage",
    "NoTransferTargetError",
    "NodeStatus",
    "NotLeaderError",
    "RaftConfig",
    "RaftElectionError",
    "RaftNode",
    "Role",
    "Shards",
    "Storage",
    "StorageError",
    "Transport",
    "TransportError",
    "__version__",
    "load_cluster_file",
]
