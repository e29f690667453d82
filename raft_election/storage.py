"""Durable storage of a server's election state: each election group's term and vote, and the configuration.

``(current_term, voted_for)`` as in Raft §5.2 (Figure 2), and the configuration entry (thesis §4.1).  A
member hosts any number of election groups (:mod:`raft_election.groups`), each an independent election with
its own term and vote over the member set the cluster shares; the default group ``""`` is the cluster's
single election of old.  The default group's :class:`HardState` carries the configuration entry (the member
set is shared, so it is kept once); every other group's state is a term and a vote only.

Raft's safety rests on a server never voting twice in one term, across crashes and restarts.  So the term
and the vote must be on stable storage *before* any message that depends on them is sent, and a server
that cannot read them back must refuse to start rather than begin again at term 0: an empty state would let
it grant a second vote in a term it already voted in.  That holds for every group, so all groups' states
live in one file, written atomically: :meth:`Storage.save_groups` persists the default group and any number
of changed groups with one write and one fsync of the file (plus one of its directory), and the caller
batches, so a thousand groups winning elections at once cost one save, not a thousand.

Two implementations:

* :class:`MemoryStorage` keeps the state in the process.  For tests: it survives a :class:`RaftNode`
  restart inside one process, never a process restart.
* :class:`FileStorage` keeps it in a data directory, one per cluster member.

A :class:`Storage` subclass written before groups (only ``load`` and ``save``) keeps working for the
default group: its inherited :meth:`~Storage.load_groups` answers ``{}``, and its inherited
:meth:`~Storage.save_groups` refuses to keep any other group's state with a :class:`StorageError`.

File format (``<data dir>/state.json``), a UTF-8 JSON document ending in a newline, laid out as
``json.dumps(doc, indent=2)`` lays it out (``config`` is shortened to one line below), except for
``groups``.  Version 2 is written while no group other than the default has saved state, so the file of a
member with one group is exactly what earlier releases wrote and can still read::

    {
      "version": 2,
      "term": 7,
      "voted_for": 3,
      "config": {"term": 6, "index": 4, "members": {"1": "10.0.0.1:9001", "2": "10.0.0.2:9002"}},
      "sha256": "<64 lowercase hex digits>"
    }

Version 3 is written once at least one other group has saved state; it adds ``groups``, one line per
group in name order, each ``[term, voted_for]``::

    {
      "version": 3,
      "term": 7,
      "voted_for": 3,
      "config": {"term": 6, "index": 4, "members": {"1": "10.0.0.1:9001", "2": "10.0.0.2:9002"}},
      "groups": {
        "cron": [12, null],
        "scheduler": [5, 2]
      },
      "sha256": "<64 lowercase hex digits>"
    }

``term``, ``voted_for`` and ``config`` are the default group's.  ``voted_for`` is ``null`` when the server
has not voted in ``term``; ``config`` is ``null`` while the server has no configuration entry but the seed
from its ``RaftConfig.peers``.  A ``groups`` key is a group name (valid as
:func:`raft_election.groupname.is_group_name` says, never the empty default name); its ``term`` is an int in
``[0, 2**63 - 1]`` and its ``voted_for`` ``null`` or a node id in ``[1, 2**32 - 1]``.  A group whose state
is term 0 with no vote is not written (a group absent from the file has that state).  At most
:data:`MAX_STORED_GROUPS` groups are kept (a save that would keep more is refused), so a valid file is
under 11 MiB; a larger file is not read.  ``sha256`` is the SHA-256 of the canonical encoding of every
other field: ``json.dumps({"version": ..., "term": ..., "voted_for": ..., "config": ...[, "groups":
...]}, sort_keys=True, separators=(",", ":"))`` encoded as UTF-8.  Version 1 files (written before
membership changes, without ``config`` and without it in the checksum) are read as having no entry; the
next save writes version 2 (or 3).  Together with the final newline the checksum makes any truncation or
corruption detectable; the file is still easy for an operator to read.  The directory also holds ``lock``
(the exclusive-use lock, containing the holder's pid) and, only while a save is in progress or after one
was interrupted, temporary files ``state.json.*.tmp``.
"""

from __future__ import annotations

import abc
import bisect
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, BinaryIO, Optional, TypeVar, Union

from raft_election.errors import StorageError
from raft_election.groupname import MAX_GROUP_NAME, is_group_name
from raft_election.hardstate import HardState
from raft_election.membership import Configuration

__all__ = ["FORMAT_VERSION", "MAX_STORED_GROUPS", "SINGLE_GROUP_FORMAT_VERSION", "FileStorage", "HardState",
           "MemoryStorage", "Storage"]

logger = logging.getLogger(__name__)

#: The newest state file layout, written by :class:`FileStorage` once it keeps any group other than the
#: default.  It also reads versions 1 and 2; other versions are refused on load.
FORMAT_VERSION = 3
#: The layout written while no group other than the default has saved state: what releases before
#: election groups wrote and read, so a one-group member's file stays readable by them.
SINGLE_GROUP_FORMAT_VERSION = 2
#: The most groups (besides the default) one storage keeps; a save that would keep more is refused.
MAX_STORED_GROUPS = 100_000

_READABLE = {1: frozenset({"version", "term", "voted_for", "sha256"}),
             2: frozenset({"version", "term", "voted_for", "config", "sha256"}),
             3: frozenset({"version", "term", "voted_for", "config", "groups", "sha256"})}

_STATE_NAME = "state.json"
_LOCK_NAME = "lock"
_TMP_PREFIX = _STATE_NAME + "."
_TMP_SUFFIX = ".tmp"
#: The longest line of one group in a version 3 file: 4 spaces, the quoted name (names are ASCII characters
#: JSON does not escape), ``: [``, a 19-digit term, ``, ``, a 10-digit vote, ``],`` and the newline.
_MAX_GROUP_LINE = 4 + (MAX_GROUP_NAME + 2) + 3 + 19 + 2 + 10 + 2 + 1
#: Without groups a valid state file is under 11 KiB (16 members whose 200-byte addresses are all escaped
#: characters: addresses are printable, so at most 12 JSON bytes per 4 UTF-8 bytes); each group adds at most
#: :data:`_MAX_GROUP_LINE` bytes, so with :data:`MAX_STORED_GROUPS` of them a valid file is under 11 MiB.
#: Anything larger is not one (and is not read whole).
_MAX_STATE_BYTES = 16384 + MAX_STORED_GROUPS * _MAX_GROUP_LINE

_CORRUPT_ADVICE = (
    "Restore the file from a backup of this member. Delete the data directory {dir} only if the cluster "
    "has elected a leader in a newer term since this member stopped; otherwise this member could vote "
    "twice in one term."
)
_VERSION_ADVICE = (
    "Run a raft_election release that reads this format, or restore the file from a backup of this member."
)

_S = TypeVar("_S", bound="Storage")
_NEW_MEMBER = HardState()


def _require_hard_state(state: object) -> HardState:
    if not isinstance(state, HardState):
        raise TypeError(f"save() takes a HardState, got {type(state).__name__}: {state!r}")
    return state


def _check_groups(groups: object) -> dict[str, HardState]:
    """A copy of ``groups`` after checking every name and state (the rules of :meth:`Storage.save_groups`).

    Raises:
        TypeError: ``groups`` is not a mapping, or one of its values is not a :class:`HardState`.
        ValueError: a name is not a valid group name or is the default group's ``""``, or a state carries a
            configuration entry (only the default group's does).
    """
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must be a mapping of group names to HardState, got {type(groups).__name__}")
    checked: dict[str, HardState] = {}
    for name, state in dict(groups).items():
        if not isinstance(name, str) or not name or not is_group_name(name):
            raise ValueError(
                f"invalid group name {name!r:.100}: a group's name is 1 to {MAX_GROUP_NAME} ASCII letters, "
                "digits and . _ - : / @ (the default group \"\" is saved as the state, not in groups)"
            )
        if not isinstance(state, HardState):
            raise TypeError(f"group {name!r}: expected a HardState, got {type(state).__name__}: {state!r}")
        if state.config is not None:
            raise ValueError(
                f"group {name!r}: a group's state has no configuration entry (config must be None); the "
                "member set is shared and kept with the default group's state"
            )
        checked[name] = state
    return checked


def _merge_groups(kept: Mapping[str, HardState], changed: Mapping[str, HardState]) -> dict[str, HardState]:
    """``kept`` updated with ``changed``; a group whose state is term 0 with no vote is left out.

    Raises:
        StorageError: the result would hold more than :data:`MAX_STORED_GROUPS` groups.
    """
    merged = dict(kept)
    for name, state in changed.items():
        if state == _NEW_MEMBER:
            merged.pop(name, None)
        else:
            merged[name] = state
    if len(merged) > MAX_STORED_GROUPS:
        raise StorageError(
            f"cannot save the state of {len(merged)} election groups: a storage keeps at most "
            f"{MAX_STORED_GROUPS} (MAX_STORED_GROUPS); drop groups that are no longer used"
        )
    return merged


class Storage(abc.ABC):
    """Where a node keeps its :class:`HardState` (and each election group's) between runs.

    The node calls :meth:`load` (then :meth:`load_groups`) once when it starts, and :meth:`save` or
    :meth:`save_groups` whenever a term or vote changes, before sending any message that depends on the
    change.  Implementations are thread-safe.  A storage object is a context manager: leaving the ``with``
    block calls :meth:`close`.

    Subclasses must implement :meth:`load` and :meth:`save`.  Those that keep election groups also override
    :meth:`load_groups` and :meth:`save_groups`; the defaults describe a storage that keeps only the default
    group.
    """

    @abc.abstractmethod
    def load(self) -> HardState:
        """Return the default group's state last saved, or ``HardState()`` for a brand-new node.

        Raises:
            StorageError: the state exists but cannot be read or is invalid.  Never answered with a
                default: the node must refuse to start.
        """

    @abc.abstractmethod
    def save(self, state: HardState) -> None:
        """Persist the default group's ``state``; it is durable when this returns.

        Other groups' saved states are kept as they are.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
            StorageError: it could not be persisted.  The node must stop rather than send messages that
                depend on it.
        """

    def load_groups(self) -> dict[str, HardState]:
        """Return the saved state of every group other than the default ``""``; call after :meth:`load`.

        A group that is not in the answer has never saved a state (or saved term 0 with no vote): it
        starts as ``HardState()``.  Each state has ``config`` None.  This default knows nothing of groups
        and answers ``{}``.

        Raises:
            StorageError: the state cannot be read or is invalid (the node must refuse to start).
        """
        return {}

    def save_groups(self, state: HardState, groups: Mapping[str, HardState]) -> None:
        """Persist the default group's ``state`` and every group in ``groups`` in one atomic write.

        Durable when this returns.  ``groups`` holds the groups that changed: they are merged into what is
        kept, and a group not named keeps its saved state.  A group whose state is ``HardState()`` (term 0,
        no vote) need not be written.  The caller batches: one call for every group that changed since the
        last, so many groups changing at once cost one write.

        This default keeps only the default group: it saves ``state`` with :meth:`save` when no group in
        ``groups`` has anything to keep (all are ``HardState()``), and otherwise raises
        :class:`StorageError` without saving anything.

        Raises:
            TypeError: ``state`` or a group's state is not a :class:`HardState`, or ``groups`` is not a
                mapping.
            ValueError: a name in ``groups`` is not a valid group name or is ``""``, or a group's state has
                a configuration entry.
            StorageError: the states could not be persisted (nothing was, if the error came before the
                write).  The node must stop rather than send messages that depend on them.
        """
        state = _require_hard_state(state)
        named = sorted(name for name, kept in _check_groups(groups).items() if kept != _NEW_MEMBER)
        if named:
            shown = ", ".join(map(repr, named[:5]))
            if len(named) > 5:
                shown += f" and {len(named) - 5} more"
            raise StorageError(
                f"{type(self).__name__} keeps only the default group: it cannot save the state of election "
                f"group(s) {shown}.  Use FileStorage or MemoryStorage, which keep groups, or implement "
                f"load_groups() and save_groups() in {type(self).__name__}"
            )
        self.save(state)

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
    """Keeps the states in memory: survives a node restart within one process, never a process restart.

    For tests.  :meth:`close` does nothing, so the same object can be handed to a restarted node.  It keeps
    groups under the same rules as :class:`FileStorage` (names, no configuration entry, at most
    :data:`MAX_STORED_GROUPS`).

    Args:
        state: the default group's state to start from (a brand-new node by default).
        groups: other groups' states to start from (none by default).

    Raises:
        TypeError, ValueError: as :meth:`save_groups` for invalid states or names.
        StorageError: ``groups`` holds more than :data:`MAX_STORED_GROUPS` groups.
    """

    def __init__(self, state: Optional[HardState] = None, *,
                 groups: Optional[Mapping[str, HardState]] = None) -> None:
        self._lock = threading.Lock()
        self._state = HardState() if state is None else _require_hard_state(state)
        self._groups = _merge_groups({}, _check_groups({} if groups is None else groups))
        self._saves = 0

    @property
    def saves(self) -> int:
        """How many times :meth:`save` or :meth:`save_groups` has been called.

        Lets tests check persist-before-send, and batching (one call per batch of changed groups).
        """
        with self._lock:
            return self._saves

    @property
    def groups(self) -> Mapping[str, HardState]:
        """A read-only snapshot of the groups kept now, other than the default.

        Those at term 0 with no vote are left out, as :meth:`load_groups` leaves them.
        """
        with self._lock:
            return MappingProxyType(dict(self._groups))

    def load(self) -> HardState:
        """Return the default group's state last saved (or the one given to the constructor)."""
        with self._lock:
            return self._state

    def load_groups(self) -> dict[str, HardState]:
        """Return the state of every group kept (a new dict: changing it changes nothing here)."""
        with self._lock:
            return dict(self._groups)

    def save(self, state: HardState) -> None:
        """Keep the default group's ``state`` (other groups' states are kept too) and count the call.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
        """
        state = _require_hard_state(state)
        with self._lock:
            self._state = state
            self._saves += 1

    def save_groups(self, state: HardState, groups: Mapping[str, HardState]) -> None:
        """Keep ``state`` and merge ``groups`` into the groups kept, all at once, and count the call.

        Raises:
            TypeError, ValueError: as :meth:`Storage.save_groups`; nothing changes.
            StorageError: more than :data:`MAX_STORED_GROUPS` groups would be kept; nothing changes.
        """
        state = _require_hard_state(state)
        changed = _check_groups(groups)
        with self._lock:
            merged = _merge_groups(self._groups, changed)
            self._state, self._groups = state, merged
            self._saves += 1

    def __repr__(self) -> str:
        with self._lock:
            state, groups, saves = self._state, len(self._groups), self._saves
        return (f"MemoryStorage(term={state.term}, voted_for={state.voted_for}, groups={groups}, "
                f"saves={saves})")


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


class _GroupLines:
    """The groups' part of a version 3 file, kept encoded, so that a save re-encodes only what changed.

    The text is exactly what :func:`_encode` writes (group names are plain ASCII, so ``json.dumps(name)`` is
    the name in double quotes): its canonical form (for the checksum) and its file lines, in name order.
    """

    def __init__(self, groups: Mapping[str, HardState]) -> None:
        self._names = sorted(groups)
        self._canonical: dict[str, str] = {}
        self._pretty: dict[str, str] = {}
        for name in self._names:
            self._set(name, groups[name])

    def _set(self, name: str, state: HardState) -> None:
        vote = "null" if state.voted_for is None else str(state.voted_for)
        self._canonical[name] = f'"{name}":[{state.term},{vote}]'
        self._pretty[name] = f'    "{name}": [{state.term}, {vote}]'

    def apply(self, changed: Mapping[str, HardState]) -> None:
        """Take the groups that changed (``HardState()``: left out), as :func:`_merge_groups` does."""
        for name, state in changed.items():
            if state == _NEW_MEMBER:
                if name in self._canonical:
                    del self._canonical[name], self._pretty[name]
                    del self._names[bisect.bisect_left(self._names, name)]
            else:
                if name not in self._canonical:
                    bisect.insort(self._names, name)
                self._set(name, state)

    def canonical(self) -> str:
        return "{" + ",".join(self._canonical[name] for name in self._names) + "}"

    def lines(self) -> str:
        return ",\n".join(self._pretty[name] for name in self._names)


def _encode(state: HardState, groups: Mapping[str, HardState], lines: Optional[_GroupLines] = None) -> bytes:
    """The state file holding ``state`` and ``groups``: version 2 if ``groups`` is empty, else version 3.

    ``lines``, if given, is ``groups`` already encoded (a :class:`_GroupLines` kept up to date with them).
    """
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION if groups else SINGLE_GROUP_FORMAT_VERSION,
        "term": state.term,
        "voted_for": state.voted_for,
        "config": _config_doc(state.config),
    }
    if not groups:
        doc["sha256"] = _checksum(doc)
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    if lines is None:
        lines = _GroupLines(groups)
    # The canonical JSON of every field but sha256 (as _checksum computes it, keys sorted), built from the
    # groups' encoded text instead of encoding a thousand of them again.
    canonical = (f'{{"config":{json.dumps(doc["config"], sort_keys=True, separators=(",", ":"))},'
                 f'"groups":{lines.canonical()},"term":{state.term},"version":{doc["version"]},'
                 f'"voted_for":{json.dumps(state.voted_for)}}}')
    doc["sha256"] = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    # As json.dumps(doc, indent=2) would lay it out, except one line per group rather than four: readable,
    # and a tenth of the size with many groups.
    text = ["{"]
    for key in ("version", "term", "voted_for", "config"):
        value = json.dumps(doc[key], indent=2).replace("\n", "\n  ")
        text.append(f"  {json.dumps(key)}: {value},")
    text.append('  "groups": {')
    text.append(lines.lines())
    text.append("  },")
    text.append(f'  "sha256": {json.dumps(doc["sha256"])}')
    text.append("}")
    return ("\n".join(text) + "\n").encode("utf-8")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; ValueError if a key repeats (json.loads would keep the last)."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r:.100} appears more than once in one object")
            seen.add(key)
    return doc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FileStorage(Storage):
    """Keeps the states in a data directory, durably and atomically, with exclusive use of the directory.

    All groups' states are in one file (see the module docstring for its format), so each :meth:`save` or
    :meth:`save_groups` rewrites it whole, with one write and one fsync however many groups changed.  Each
    save writes a temporary file in the directory, fsyncs it, renames it over ``state.json``
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
        #: The groups in the state file, once read (by load(), or by the first save when load() was not
        #: called: a save must keep them); None until then.
        self._groups: Optional[dict[str, HardState]] = None
        # The groups the file holds, and their text (re-encoded only where they change): see _GroupLines.
        self._lines: Optional[tuple[dict[str, HardState], _GroupLines]] = None
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
        """Return the default group's state in ``state.json``, or ``HardState()`` if there is none yet.

        Also reads every other group's state (:meth:`load_groups` returns it) and removes temporary files
        left by an interrupted save.

        Raises:
            StorageError: the storage is closed, or the file cannot be read, is truncated or otherwise
                corrupt, has an unknown format version, or holds out-of-range values (in any group).  The
                message names the file, the fault and what an operator can do.
        """
        with self._mutex:
            self._check_open("load")
            self._remove_temp_files()
            state, self._groups = self._read()
            logger.info("loaded %s: term %d, voted for %s, configuration %s, %d other election group(s)",
                        self._state_path, state.term, state.voted_for,
                        "from RaftConfig.peers" if state.config is None else state.config, len(self._groups))
            return state

    def load_groups(self) -> dict[str, HardState]:
        """Return the state of every group other than the default in ``state.json`` (``{}`` if none).

        As of the last :meth:`load` and the saves since; reads the file if :meth:`load` was not called.

        Raises:
            StorageError: the storage is closed, or the file cannot be read or is invalid (as :meth:`load`).
        """
        with self._mutex:
            self._check_open("load")
            return dict(self._known_groups())

    def _known_groups(self) -> dict[str, HardState]:
        """The groups in the state file, read now if they were not yet.  Call with the mutex held."""
        if self._groups is None:
            self._groups = self._read()[1]
        return self._groups

    def _read(self) -> tuple[HardState, dict[str, HardState]]:
        """The states in the state file (a new member's if there is none).  Call with the mutex held."""
        try:
            with open(self._state_path, "rb") as f:
                data = f.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            logger.info("no state file %s: starting as a new member at term 0", self._state_path)
            return HardState(), {}
        except OSError as exc:
            raise StorageError(
                f"cannot read Raft state file {self._state_path}: {_reason(exc)}. Make it a readable "
                "regular file again (do not delete it), or restore it from a backup of this member."
            ) from exc
        return self._decode(data)

    def _corrupt(self, what: str) -> StorageError:
        return StorageError(
            f"Raft state file {self._state_path} is corrupt: {what}. "
            + _CORRUPT_ADVICE.format(dir=self._path)
        )

    def _decode(self, data: bytes) -> tuple[HardState, dict[str, HardState]]:
        if not data:
            raise self._corrupt("the file is empty")
        if len(data) > _MAX_STATE_BYTES:
            raise self._corrupt(f"the file is larger than {_MAX_STATE_BYTES} bytes")
        if not data.endswith(b"\n"):
            raise self._corrupt("it does not end with a newline (truncated?)")
        try:
            doc = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self._corrupt(f"it is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise self._corrupt(f"expected a JSON object, found {type(doc).__name__}")
        if "version" not in doc:
            raise self._corrupt("it has no 'version' field")
        version = doc["version"]
        if type(version) is not int or version not in _READABLE:
            raise StorageError(
                f"Raft state file {self._state_path} has format version {version!r:.100}, but this library "
                f"reads versions {', '.join(map(str, sorted(_READABLE)))}. " + _VERSION_ADVICE
            )
        fields = _READABLE[version]
        if set(doc) != fields:
            raise self._corrupt(f"expected fields {sorted(fields)}, found {sorted(doc)}"[:1000])
        if doc["sha256"] != _checksum(doc):
            raise self._corrupt("the sha256 checksum does not match the contents")
        try:
            state = HardState(term=doc["term"], voted_for=doc["voted_for"],
                              config=_config_from(doc.get("config")))
        except ValueError as exc:
            raise self._corrupt(f"invalid value: {exc}") from None
        return state, self._decode_groups(doc.get("groups", {}))

    def _decode_groups(self, doc: object) -> dict[str, HardState]:
        """The groups a ``groups`` field holds; StorageError (corrupt) naming the first bad entry."""
        if not isinstance(doc, dict):
            raise self._corrupt(f"groups must be an object of group names, found {type(doc).__name__}")
        if len(doc) > MAX_STORED_GROUPS:
            raise self._corrupt(f"it holds {len(doc)} groups, more than the limit of {MAX_STORED_GROUPS}")
        groups: dict[str, HardState] = {}
        for name, entry in doc.items():
            if not name or not is_group_name(name):
                raise self._corrupt(f"invalid group name {name!r:.100} in groups")
            if not isinstance(entry, list) or len(entry) != 2:
                raise self._corrupt(f"group {name!r}: expected [term, voted_for], found {entry!r:.100}")
            try:
                groups[name] = HardState(term=entry[0], voted_for=entry[1])
            except ValueError as exc:
                raise self._corrupt(f"invalid value in group {name!r}: {exc}") from None
        return groups

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
        """Atomically replace ``state.json`` with the default group's ``state``; durable when this returns.

        Other groups' saved states are kept (written again unchanged).  If :meth:`load` was not called,
        the file is read first so that none is lost.

        Raises:
            TypeError: ``state`` is not a :class:`HardState`.
            StorageError: the storage is closed, the existing file holds groups but cannot be read, or
                writing failed.  If it failed before the rename, the previous state file is intact; if only
                the final directory fsync failed, the file holds the new state but it may not survive a
                power loss.  Either way the node must stop.
        """
        self._save(_require_hard_state(state), {})

    def save_groups(self, state: HardState, groups: Mapping[str, HardState]) -> None:
        """Atomically replace ``state.json`` with ``state`` and the groups kept updated with ``groups``.

        One write and one fsync of the file (and one of the directory) whatever the number of groups;
        durable when this returns.  Groups not named in ``groups`` keep their saved state; a group saved as
        ``HardState()`` is left out of the file.  Version 2 is written if no group is left, else version 3.

        Raises:
            TypeError, ValueError: as :meth:`Storage.save_groups`; nothing is written.
            StorageError: more than :data:`MAX_STORED_GROUPS` groups would be kept (nothing is written), or
                as :meth:`save`.
        """
        self._save(_require_hard_state(state), _check_groups(groups))

    def _save(self, state: HardState, changed: dict[str, HardState]) -> None:
        with self._mutex:
            self._check_open("save")
            known = self._known_groups()
            groups = _merge_groups(known, changed)
            lines = self._lines
            if lines is None or lines[0] is not known:
                lines = (groups, _GroupLines(groups))
            else:
                lines[1].apply(changed)
                lines = (groups, lines[1])
            self._lines = None  # until the write succeeds, the encoded text is ahead of the file
            data = _encode(state, groups, lines[1] if groups else None)
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
            self._groups = groups  # what the file holds now
            self._lines = lines
            try:
                _fsync_dir(self._path)
            except OSError as exc:
                raise StorageError(
                    f"cannot save Raft state to {self._state_path}: fsync of directory {self._path} failed "
                    f"({_reason(exc)}); the file holds the new state but it may not survive a crash"
                ) from exc

    def close(self) -> None:
        """Release the data directory lock.  Idempotent; loading and saving then raise StorageError."""
        with self._mutex:
            lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing the only descriptor of the open file releases the flock

    def __repr__(self) -> str:
        return f"FileStorage({str(self._path)!r}{', closed' if self.closed else ''})"
