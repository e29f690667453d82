"""Durable storage of a server's election state: its term, vote and configuration entry.

``(current_term, voted_for)`` as in Raft §5.2 (Figure 2), and the configuration entry (thesis §4.1).

Raft's safety rests on a server never voting twice in one term, across crashes and restarts.  So the term
and the vote must be on stable storage *before* any message that depends on them is sent, and a server
that cannot read them back must refuse to start rather than begin again at term 0: an empty state would let
it grant a second vote in a term it already voted in.

Two implementations:

* :class:`MemoryStorage` keeps the state in the process.  For tests: it survives a :class:`RaftNode`
  restart inside one process, never a process restart.
* :class:`FileStorage` keeps it in a data directory, one per cluster member.

File format (``<data dir>/state.json``), a small UTF-8 JSON document ending in a newline::

    {
      "version": 2,
      "term": 7,
      "voted_for": 3,
      "config": {"term": 6, "index": 4, "members": {"1": "10.0.0.1:9001", "2": "10.0.0.2:9002"}},
      "sha256": "<64 lowercase hex digits>"
    }

``voted_for`` is ``null`` when the server has not voted in ``term``; ``config`` is ``null`` while the
server has no configuration entry but the seed from its ``RaftConfig.peers``.  ``sha256`` is the SHA-256 of
the canonical encoding of the other fields: ``json.dumps({"version": ..., "term": ..., "voted_for": ...,
"config": ...}, sort_keys=True, separators=(",", ":"))`` encoded as UTF-8.  Version 1 files (written
before membership changes, without ``config`` and without it in the checksum) are read as having no
entry; the next save writes version 2.  Together with the final newline it makes any
truncation or corruption detectable; the file is still easy for an operator to read.  The directory also
holds ``lock`` (the exclusive-use lock, containing the holder's pid) and, only while a save is in progress
or after one was interrupted, temporary files ``state.json.*.tmp``.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Optional, TypeVar, Union

from raft_election.errors import StorageError
from raft_election.hardstate import HardState
from raft_election.membership import Configuration

__all__ = ["FORMAT_VERSION", "FileStorage", "HardState", "MemoryStorage", "Storage"]

logger = logging.getLogger(__name__)

#: Version of the state file layout written by :class:`FileStorage`.  It also reads version 1; other
#: versions are refused on load.
FORMAT_VERSION = 2
_READABLE = {1: frozenset({"version", "term", "voted_for", "sha256"}),
             2: frozenset({"version", "term", "voted_for", "config", "sha256"})}

_STATE_NAME = "state.json"
_LOCK_NAME = "lock"
_TMP_PREFIX = _STATE_NAME + "."
_TMP_SUFFIX = ".tmp"
#: A valid state file is under 11 KiB (16 members whose 200-byte addresses are all escaped characters:
#: addresses are printable, so at most 12 JSON bytes per 4 UTF-8 bytes); anything larger is not one (and
#: is not read whole).
_MAX_STATE_BYTES = 16384

_CORRUPT_ADVICE = (
    "Restore the file from a backup of this member. Delete the data directory {dir} only if the cluster "
    "has elected a leader in a newer term since this member stopped; otherwise this member could vote "
    "twice in one term."
)
_VERSION_ADVICE = (
    "Run a raft_election release that reads this format, or restore the file from a backup of this member."
)

_S = TypeVar("_S", bound="Storage")


def _require_hard_state(state: object) -> HardState:
    if not isinstance(state, HardState):
        raise TypeError(f"save() takes a HardState, got {type(state).__name__}: {state!r}")
    return state


class Storage(abc.ABC):
    """Where a node keeps its :class:`HardState` between runs.

    The node calls :meth:`load` once when it starts and :meth:`save` whenever its term or vote changes,
    before sending any message that depends on the change.  Implementations are thread-safe.  A storage
    object is a context manager: leaving the ``with`` block calls :meth:`close`.
    """

    @abc.abstractmethod
    def load(self) -> HardState:
        """Return the state last saved, or ``HardState()`` for a brand-new node.

        Raises:
            StorageError: the state exists but cannot be read or is invalid.  Never answered with a
                default: the node must refuse to start.
        """

    @abc.abstractmethod
    def save(self, state: HardState) -> None:
        """Persist ``state``; it is durable when this returns.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
            StorageError: it could not be persisted.  The node must stop rather than send messages that
                depend on it.
        """

    def close(self) -> None:  # noqa: B027  (a deliberate no-op default, not a missing abstract method)
        """Release resources held by the storage.  Idempotent.  The default does nothing."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class MemoryStorage(Storage):
    """Keeps the state in memory: survives a node restart within one process, never a process restart.

    For tests.  :meth:`close` does nothing, so the same object can be handed to a restarted node.

    Args:
        state: the state to start from (a brand-new node by default).
    """

    def __init__(self, state: Optional[HardState] = None) -> None:
        self._lock = threading.Lock()
        self._state = HardState() if state is None else _require_hard_state(state)
        self._saves = 0

    @property
    def saves(self) -> int:
        """How many times :meth:`save` has been called (lets tests check persist-before-send)."""
        with self._lock:
            return self._saves

    def load(self) -> HardState:
        """Return the state last saved (or the one given to the constructor)."""
        with self._lock:
            return self._state

    def save(self, state: HardState) -> None:
        """Keep ``state`` and count the call.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
        """
        state = _require_hard_state(state)
        with self._lock:
            self._state = state
            self._saves += 1

    def __repr__(self) -> str:
        with self._lock:
            state, saves = self._state, self._saves
        return f"MemoryStorage(term={state.term}, voted_for={state.voted_for}, saves={saves})"


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to stable storage."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checksum(doc: dict[str, Any]) -> str:
    """The SHA-256 of the canonical JSON of every field but ``sha256`` itself."""
    fields = {name: value for name, value in doc.items() if name != "sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _config_doc(config: Optional[Configuration]) -> Optional[dict[str, Any]]:
    if config is None:
        return None
    return {"term": config.term, "index": config.index,
            "members": {str(node_id): address for node_id, address in config.members.items()}}


def _config_from(doc: object) -> Optional[Configuration]:
    """The entry a ``config`` field holds; ValueError (or ConfigError, a ValueError) when it is malformed."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(doc) != {"term", "index", "members"}:
        raise ValueError("config must be null or an object with term, index and members")
    members = doc["members"]
    if not isinstance(members, dict) or not all(
            isinstance(key, str) and key.isascii() and key.isdigit() and key == str(int(key))
            for key in members):
        raise ValueError("config.members must map decimal member ids to addresses")
    return Configuration(term=doc["term"], index=doc["index"],
                         members={int(key): address for key, address in members.items()})


def _encode(state: HardState) -> bytes:
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "term": state.term,
        "voted_for": state.voted_for,
        "config": _config_doc(state.config),
    }
    doc["sha256"] = _checksum(doc)
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FileStorage(Storage):
    """Keeps the state in a data directory, durably and atomically, with exclusive use of the directory.

    Each :meth:`save` writes a temporary file in the directory, fsyncs it, renames it over ``state.json``
    with :func:`os.replace` and fsyncs the directory, so a crash at any point leaves the old state or the
    new one, never a mix.  Temporary files left by an interrupted save are removed by :meth:`load`.

    The directory is locked (``flock`` on ``<dir>/lock``) from construction until :meth:`close`: two
    members sharing a data directory could each vote in the same term under one identity.  The lock is
    released by :meth:`close` or when the process exits.  A closed ``FileStorage`` cannot be reopened;
    create a new one.

    Args:
        path: the member's data directory.  Created if missing (with its parents); a directory this
            creates gets mode ``0o700`` (parents get the default mode), and its entry is fsynced into its
            parent so the new directory survives a crash.

    Raises:
        StorageError: the directory cannot be created or opened, or is already in use by another process
            (or by another open ``FileStorage`` in this process).
    """

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        self._path = Path(os.path.abspath(os.fspath(path)))
        self._state_path = self._path / _STATE_NAME
        self._lock_path = self._path / _LOCK_NAME
        self._mutex = threading.Lock()
        self._make_dir()
        self._lock_file: Optional[BinaryIO] = self._acquire_lock()

    @property
    def path(self) -> Path:
        """The data directory (absolute)."""
        return self._path

    @property
    def state_path(self) -> Path:
        """The state file inside the data directory."""
        return self._state_path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._lock_file is None

    def _make_dir(self) -> None:
        missing: list[Path] = []
        probe = self._path
        while not os.path.lexists(probe) and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        try:
            os.makedirs(self._path, mode=0o700, exist_ok=True)
            for created in reversed(missing):
                _fsync_dir(created.parent)
        except FileExistsError:
            raise StorageError(
                f"cannot use {self._path} as a data directory: it exists and is not a directory"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self._path}: {_reason(exc)}") from exc
        if not self._path.is_dir():
            raise StorageError(f"cannot use {self._path} as a data directory: it is not a directory")

    def _acquire_lock(self) -> BinaryIO:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self._lock_path}: {_reason(exc)}") from exc
        lock_file = os.fdopen(fd, "r+b", buffering=0)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._read_holder(lock_file)
            lock_file.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(
                    f"data directory {self._path} is already in use by another process{holder} or by "
                    f"another open FileStorage: {self._lock_path} is locked. Each member needs its own "
                    "data directory; two members sharing one could vote twice in one term."
                ) from None
            raise StorageError(f"cannot lock {self._lock_path}: {_reason(exc)}") from exc
        try:  # Best effort: the pid is only a hint for an operator who finds the directory locked.
            lock_file.truncate(0)
            lock_file.seek(0)
            lock_file.write(f"{os.getpid()}\n".encode("ascii"))
        except OSError:
            logger.debug("could not record pid in %s", self._lock_path, exc_info=True)
        return lock_file

    @staticmethod
    def _read_holder(lock_file: BinaryIO) -> str:
        try:
            lock_file.seek(0)
            pid = int(lock_file.read(32).decode("ascii").strip())
        except (OSError, ValueError):
            return ""
        return f" (pid {pid})"

    def _check_open(self, action: str) -> None:
        if self._lock_file is None:
            raise StorageError(f"cannot {action} {self._state_path}: this FileStorage is closed")

    def load(self) -> HardState:
        """Return the state in ``state.json``, or ``HardState()`` if there is none yet (a new member).

        Also removes temporary files left by an interrupted save.

        Raises:
            StorageError: the storage is closed, or the file cannot be read, is truncated or otherwise
                corrupt, has an unknown format version, or holds out-of-range values.  The message names
                the file, the fault and what an operator can do.
        """
        with self._mutex:
            self._check_open("load")
            self._remove_temp_files()
            try:
                with open(self._state_path, "rb") as f:
                    data = f.read(_MAX_STATE_BYTES + 1)
            except FileNotFoundError:
                logger.info("no state file %s: starting as a new member at term 0", self._state_path)
                return HardState()
            except OSError as exc:
                raise StorageError(
                    f"cannot read Raft state file {self._state_path}: {_reason(exc)}. Make it a readable "
                    "regular file again (do not delete it), or restore it from a backup of this member."
                ) from exc
            state = self._decode(data)
            logger.info("loaded %s: term %d, voted for %s, configuration %s", self._state_path, state.term,
                        state.voted_for, "from RaftConfig.peers" if state.config is None else state.config)
            return state

    def _corrupt(self, what: str) -> StorageError:
        return StorageError(
            f"Raft state file {self._state_path} is corrupt: {what}. "
            + _CORRUPT_ADVICE.format(dir=self._path)
        )

    def _decode(self, data: bytes) -> HardState:
        if not data:
            raise self._corrupt("the file is empty")
        if len(data) > _MAX_STATE_BYTES:
            raise self._corrupt(f"the file is larger than {_MAX_STATE_BYTES} bytes")
        if not data.endswith(b"\n"):
            raise self._corrupt("it does not end with a newline (truncated?)")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self._corrupt(f"it is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise self._corrupt(f"expected a JSON object, found {type(doc).__name__}")
        if "version" not in doc:
            raise self._corrupt("it has no 'version' field")
        version = doc["version"]
        if type(version) is not int or version not in _READABLE:
            raise StorageError(
                f"Raft state file {self._state_path} has format version {version!r}, but this library reads "
                f"versions {', '.join(map(str, sorted(_READABLE)))}. " + _VERSION_ADVICE
            )
        fields = _READABLE[version]
        if set(doc) != fields:
            raise self._corrupt(f"expected fields {sorted(fields)}, found {sorted(doc)}")
        if doc["sha256"] != _checksum(doc):
            raise self._corrupt("the sha256 checksum does not match the contents")
        try:
            return HardState(term=doc["term"], voted_for=doc["voted_for"],
                             config=_config_from(doc.get("config")))
        except ValueError as exc:
            raise self._corrupt(f"invalid value: {exc}") from None

    def _remove_temp_files(self) -> None:
        try:
            names = os.listdir(self._path)
        except OSError as exc:
            logger.warning("cannot list %s to remove temporary files: %s", self._path, _reason(exc))
            return
        for name in names:
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                leftover = self._path / name
                try:
                    leftover.unlink()
                except OSError as exc:
                    logger.warning("cannot remove leftover temporary file %s: %s", leftover, _reason(exc))
                else:
                    logger.info("removed %s, left by an interrupted save", leftover)

    def save(self, state: HardState) -> None:
        """Atomically replace ``state.json`` with ``state``; it is durable when this returns.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
            StorageError: the storage is closed, or writing failed.  If it failed before the rename, the
                previous state file is intact; if only the final directory fsync failed, the file holds
                the new state but it may not survive a power loss.  Either way the node must stop.
        """
        state = _require_hard_state(state)
        data = _encode(state)
        with self._mutex:
            self._check_open("save")
            tmp: Optional[str] = None
            try:
                fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self._path)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self._state_path)
                tmp = None
            except OSError as exc:
                raise StorageError(
                    f"cannot save Raft state to {self._state_path}: {_reason(exc)}; "
                    "the previous state file is intact"
                ) from exc
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        logger.warning("cannot remove temporary file %s", tmp, exc_info=True)
            try:
                _fsync_dir(self._path)
            except OSError as exc:
                raise StorageError(
                    f"cannot save Raft state to {self._state_path}: fsync of directory {self._path} failed "
                    f"({_reason(exc)}); the file holds the new state but it may not survive a crash"
                ) from exc

    def close(self) -> None:
        """Release the data directory lock.  Idempotent; :meth:`load` and :meth:`save` then raise."""
        with self._mutex:
            lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing the only descriptor of the open file releases the flock

    def __repr__(self) -> str:
        return f"FileStorage({str(self._path)!r}{', closed' if self.closed else ''})"
