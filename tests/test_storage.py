"""Tests for raft_election.storage: durable (current_term, voted_for) (Raft §5.2, Figure 2) and the
configuration entry persisted with them (thesis §4.1).

The rule under test: a member's term, vote and configuration entry survive any crash, and a member that
cannot read them refuses to start (StorageError) instead of starting over at term 0 or from its seed
configuration, which could let it vote twice in a term or count a majority of the wrong member set.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.errors import ConfigError, RaftElectionError, StorageError
from raft_election.membership import Configuration
from raft_election.messages import MAX_ADDRESS_SIZE, MAX_INDEX, MAX_MEMBERS, MAX_NODE_ID, MAX_TERM
from raft_election.storage import (
    _MAX_STATE_BYTES,
    FORMAT_VERSION,
    SINGLE_GROUP_FORMAT_VERSION,
    FileStorage,
    HardState,
    MemoryStorage,
    Storage,
)
from tests.conftest import examples

OLD = HardState(term=3, voted_for=2)
NEW = HardState(term=4, voted_for=5)
CONFIG = Configuration(term=6, index=4, members={1: "10.0.0.1:9001", 2: "10.0.0.2:9002", 10: "[::1]:9010"})
WITH_CONFIG = HardState(term=7, voted_for=2, config=CONFIG)

#: The fields of each readable format version (the sha256 covers every other one).
V1_FIELDS = {"version", "term", "voted_for", "sha256"}
V2_FIELDS = {"version", "term", "voted_for", "config", "sha256"}


def temp_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def checksum_of(doc: dict[str, Any]) -> str:
    """The sha256 a state document deserves, computed from the documented rule, not the library's code.

    Version 1: over exactly version, term and voted_for.  Version 2 (and any other): over every field but
    sha256.  Canonical JSON: sort_keys, separators (",", ":"), encoded as UTF-8.
    """
    if doc.get("version") == 1 and type(doc.get("version")) is int:
        fields = {"version": doc.get("version"), "term": doc.get("term"), "voted_for": doc.get("voted_for")}
    else:
        fields = {name: value for name, value in doc.items() if name != "sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_state_doc(directory: Path, doc: object, *, fix_checksum: bool = True) -> Path:
    """Write a hand-made state file; with fix_checksum, give it the checksum its fields deserve."""
    if fix_checksum and isinstance(doc, dict):
        doc = {**doc, "sha256": checksum_of(doc)}
    path = directory / "state.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def config_doc(config: Optional[Configuration]) -> Optional[dict[str, Any]]:
    """The documented layout of a ``config`` field: member ids as decimal strings."""
    if config is None:
        return None
    return {
        "term": config.term,
        "index": config.index,
        "members": {str(node_id): address for node_id, address in config.members.items()},
    }


def v2_doc(state: HardState) -> dict[str, Any]:
    """The version-2 document that must hold ``state``, checksum included."""
    doc: dict[str, Any] = {
        "version": 2,
        "term": state.term,
        "voted_for": state.voted_for,
        "config": config_doc(state.config),
    }
    return {**doc, "sha256": checksum_of(doc)}


def saved_bytes(directory: Path, state: HardState) -> bytes:
    with FileStorage(directory) as storage:
        storage.save(state)
    return (directory / "state.json").read_bytes()


def load_fresh(directory: Path) -> HardState:
    with FileStorage(directory) as storage:
        return storage.load()


# --- HardState -------------------------------------------------------------------------------------------


def test_hard_state_defaults_are_a_new_member() -> None:
    assert HardState() == HardState(term=0, voted_for=None)
    assert HardState().config is None  # no entry: the node starts from its RaftConfig.peers seed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"term": -1},
        {"term": MAX_TERM + 1},
        {"term": True},  # bool is an int subclass, but never a term
        {"term": 1.0},
        {"term": "1"},
        {"term": None},
        {"voted_for": 0},  # node ids start at 1
        {"voted_for": -3},
        {"voted_for": MAX_NODE_ID + 1},
        {"voted_for": True},
        {"voted_for": "2"},
        *({"config": config} for config in ({1: "10.0.0.1:9001"}, "1=10.0.0.1:9001", 3)),
    ],
)
def test_hard_state_rejects_invalid_fields_with_value_error(kwargs: dict[str, object]) -> None:
    # Documented choice: every invalid field (wrong type or out of range) raises ValueError.
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HardState(**kwargs)  # type: ignore[arg-type]


def test_hard_state_accepts_bounds() -> None:
    assert HardState(term=MAX_TERM, voted_for=MAX_NODE_ID).term == MAX_TERM
    assert HardState(term=0, voted_for=1).voted_for == 1


def test_hard_state_rejects_a_config_that_is_not_a_configuration() -> None:
    # A raw mapping is never taken for an entry.
    with pytest.raises(ValueError, match="config"):
        HardState(config={1: "10.0.0.1:9001"})  # type: ignore[arg-type]


def test_hard_state_holds_a_configuration_entry() -> None:
    state = HardState(term=7, voted_for=2, config=CONFIG)
    assert state.config == CONFIG
    assert state == WITH_CONFIG
    assert state != HardState(term=7, voted_for=2)  # the entry is part of the state
    assert state != HardState(term=7, voted_for=2, config=CONFIG.child(7, {1: "10.0.0.1:9001"}))


def test_hard_state_is_frozen_and_keyword_only() -> None:
    state = HardState(term=1)
    with pytest.raises(AttributeError):
        state.term = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        HardState(1, 2)  # type: ignore[call-arg]


# --- MemoryStorage ---------------------------------------------------------------------------------------


def test_memory_storage_round_trip_and_counts_saves() -> None:
    storage = MemoryStorage()
    assert storage.load() == HardState()
    assert storage.saves == 0
    storage.save(OLD)
    storage.save(NEW)
    assert storage.load() == NEW
    assert storage.saves == 2
    storage.close()
    storage.close()
    # Closing does not lose the state: a restarted node in the same process gets it back.
    assert storage.load() == NEW
    assert "saves=2" in repr(storage)


def test_memory_storage_initial_state() -> None:
    assert MemoryStorage(OLD).load() == OLD
    assert MemoryStorage(OLD).saves == 0
    assert MemoryStorage(WITH_CONFIG).load() == WITH_CONFIG


def test_memory_storage_round_trips_a_config() -> None:
    storage = MemoryStorage()
    storage.save(WITH_CONFIG)
    assert storage.load() == WITH_CONFIG
    assert storage.load().config == CONFIG
    storage.close()
    assert storage.load() == WITH_CONFIG  # a node restarted in the same process gets its entry back
    storage.save(NEW)  # a later state without an entry replaces it whole
    assert storage.load() == NEW and storage.load().config is None


def test_memory_storage_save_rejects_non_hard_state() -> None:
    storage = MemoryStorage()
    with pytest.raises(TypeError, match="HardState"):
        storage.save((1, 2))  # type: ignore[arg-type]
    assert storage.saves == 0
    assert storage.load() == HardState()


def test_memory_storage_counts_concurrent_saves() -> None:
    storage = MemoryStorage()

    def saver() -> None:
        for term in range(500):
            storage.save(HardState(term=term))

    threads = [threading.Thread(target=saver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.saves == 8 * 500


def test_storages_are_context_managers_and_storage_is_abstract() -> None:
    with MemoryStorage() as storage:
        assert isinstance(storage, Storage)
    with pytest.raises(TypeError):
        Storage()  # type: ignore[abstract]


# --- FileStorage: round trip -----------------------------------------------------------------------------


def test_new_directory_loads_a_new_member(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b" / "node-1"
    with FileStorage(data_dir) as storage:
        assert storage.load() == HardState()
    assert data_dir.is_dir()
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0  # created 0o700 (less any umask bits)
    assert not (data_dir / "state.json").exists()  # loading does not write


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save(OLD)
        assert storage.load() == OLD
        storage.save(NEW)
        assert storage.load() == NEW
    assert load_fresh(tmp_path) == NEW
    with FileStorage(str(tmp_path)) as storage:  # str paths work as well as PathLike
        storage.save(HardState(term=MAX_TERM))
    assert load_fresh(tmp_path) == HardState(term=MAX_TERM, voted_for=None)


def test_file_format_is_versioned_checksummed_json(tmp_path: Path) -> None:
    # Version 3 adds election groups (tests/test_storage_groups.py); without any, version 2 is written.
    assert (FORMAT_VERSION, SINGLE_GROUP_FORMAT_VERSION) == (3, 2)
    data = saved_bytes(tmp_path, NEW)
    assert data.endswith(b"\n")
    doc = json.loads(data)
    assert set(doc) == V2_FIELDS
    assert (doc["version"], doc["term"], doc["voted_for"], doc["config"]) == (2, 4, 5, None)
    # The checksum covers every other field, the null config included (spelled out, not via a helper).
    canonical = json.dumps(
        {"version": 2, "term": 4, "voted_for": 5, "config": None}, sort_keys=True, separators=(",", ":")
    )
    assert canonical == '{"config":null,"term":4,"version":2,"voted_for":5}'
    assert doc["sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) & 0o077 == 0


def test_file_format_of_a_configuration_entry(tmp_path: Path) -> None:
    data = saved_bytes(tmp_path, WITH_CONFIG)
    assert data.endswith(b"\n")
    doc = json.loads(data)
    assert doc == {
        "version": 2,
        "term": 7,
        "voted_for": 2,
        "config": {
            "term": 6,
            "index": 4,
            "members": {"1": "10.0.0.1:9001", "2": "10.0.0.2:9002", "10": "[::1]:9010"},
        },
        "sha256": doc["sha256"],
    }
    canonical = json.dumps(
        {"version": 2, "term": 7, "voted_for": 2, "config": doc["config"]},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert doc["sha256"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert len(doc["sha256"]) == 64 and doc["sha256"] == doc["sha256"].lower()
    # Member ids are plain decimal strings, even at the bounds.
    bounds = Configuration(term=MAX_TERM, index=MAX_INDEX, members={1: "a:1", MAX_NODE_ID: "b:2"})
    doc = json.loads(saved_bytes(tmp_path, HardState(term=MAX_TERM, config=bounds)))
    assert doc == v2_doc(HardState(term=MAX_TERM, config=bounds))
    assert doc["config"] == {
        "term": MAX_TERM,
        "index": MAX_INDEX,
        "members": {"1": "a:1", "4294967295": "b:2"},
    }


def test_config_round_trip_across_reopen(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save(WITH_CONFIG)
        assert storage.load() == WITH_CONFIG
    loaded = load_fresh(tmp_path)  # a fresh FileStorage on the same directory: what a restart sees
    assert loaded == WITH_CONFIG
    assert isinstance(loaded.config, Configuration)
    assert (loaded.config.term, loaded.config.index) == (6, 4)
    assert dict(loaded.config.members) == {1: "10.0.0.1:9001", 2: "10.0.0.2:9002", 10: "[::1]:9010"}
    assert all(type(node_id) is int for node_id in loaded.config.members)
    # A later entry replaces the earlier one; a state without one replaces it too (the file holds one state).
    later = HardState(
        term=8, voted_for=None, config=CONFIG.child(8, {1: "10.0.0.1:9001", 2: "10.0.0.2:9002"})
    )
    with FileStorage(tmp_path) as storage:
        storage.save(later)
    assert load_fresh(tmp_path) == later
    with FileStorage(tmp_path) as storage:
        storage.save(NEW)
    assert load_fresh(tmp_path) == NEW


def test_non_ascii_addresses_round_trip(tmp_path: Path) -> None:
    # 200 UTF-8 bytes each (the most an address may have), in 2-, 3- and 4-byte characters.
    members = {1: "é" * 100, 2: "雪" * 66 + "ab", 3: "\U0001f5a5" * 50, 4: "nœud-4.exemple:9004"}
    state = HardState(term=1, voted_for=4, config=Configuration(term=1, index=1, members=members))
    assert all(len(address.encode()) <= MAX_ADDRESS_SIZE for address in members.values())
    assert json.loads(saved_bytes(tmp_path, state)) == v2_doc(state)
    assert load_fresh(tmp_path) == state


def test_largest_valid_config_round_trips(tmp_path: Path) -> None:
    # MAX_MEMBERS members, largest ids, 200-byte addresses that JSON must escape (3 bytes of file per byte).
    members = {MAX_NODE_ID - n: "é" * 99 + chr(ord("A") + n) for n in range(MAX_MEMBERS)}
    config = Configuration(term=MAX_TERM, index=MAX_INDEX, members=members)
    state = HardState(term=MAX_TERM, voted_for=MAX_NODE_ID, config=config)
    saved_bytes(tmp_path, state)
    assert load_fresh(tmp_path) == state


def test_every_config_that_saves_also_loads(tmp_path: Path) -> None:
    # The largest file: 16 members whose addresses are all 4-byte characters, 12 bytes each as JSON escapes.
    members = {n: "\U0001f600" * 49 + chr(ord("A") + n) + "\u00e9" for n in range(1, MAX_MEMBERS + 1)}
    state = HardState(term=MAX_TERM, config=Configuration(term=MAX_TERM, index=MAX_INDEX, members=members))
    saved_bytes(tmp_path, state)
    assert load_fresh(tmp_path) == state


@pytest.mark.parametrize("address", ["\x01" * 10, "a\nb", "10.0.0.1:9001\x7f", "a\u2028b"])
def test_an_address_that_json_would_bloat_or_a_log_would_garble_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="non-printable"):
        Configuration(members={1: address})


CHILD_SAVES_CONFIG = textwrap.dedent(
    """
    import os, sys
    from raft_election.membership import Configuration
    from raft_election.storage import FileStorage, HardState

    members = {1: "10.0.0.1:9001", 2: "10.0.0.2:9002", 10: "[::1]:9010"}
    config = Configuration(term=6, index=4, members=members)
    FileStorage(sys.argv[1]).save(HardState(term=7, voted_for=2, config=config))
    os._exit(0)  # no close(), no cleanup: the save alone must have made it durable
    """
)


def test_config_survives_a_process_restart(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD_SAVES_CONFIG, str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert load_fresh(tmp_path) == WITH_CONFIG


# --- FileStorage: version 1 files (before membership changes) are still read -----------------------------


def write_v1_file(directory: Path, term: int, voted_for: Optional[int]) -> Path:
    """A state file exactly as version 1 wrote it: three fields and their checksum, spelled out."""
    canonical = json.dumps(
        {"version": 1, "term": term, "voted_for": voted_for}, sort_keys=True, separators=(",", ":")
    )
    doc = {
        "version": 1,
        "term": term,
        "voted_for": voted_for,
        "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
    }
    path = directory / "state.json"
    path.write_bytes((json.dumps(doc, indent=2) + "\n").encode())
    return path


@pytest.mark.parametrize(("term", "voted_for"), [(0, None), (3, 2), (MAX_TERM, MAX_NODE_ID)])
def test_version_1_file_loads_with_no_config(tmp_path: Path, term: int, voted_for: Optional[int]) -> None:
    path = write_v1_file(tmp_path, term, voted_for)
    before = path.read_bytes()
    loaded = load_fresh(tmp_path)
    assert loaded == HardState(term=term, voted_for=voted_for, config=None)
    assert path.read_bytes() == before  # loading never rewrites the file


def test_next_save_after_a_version_1_file_writes_version_2(tmp_path: Path) -> None:
    write_v1_file(tmp_path, 3, 2)
    with FileStorage(tmp_path) as storage:
        assert storage.load() == OLD
        storage.save(OLD)  # the same term and vote, now in version 2
    doc = json.loads((tmp_path / "state.json").read_bytes())
    assert doc == v2_doc(OLD)
    assert doc["version"] == 2 and doc["config"] is None
    assert load_fresh(tmp_path) == OLD
    with FileStorage(tmp_path) as storage:
        storage.save(WITH_CONFIG)
    assert json.loads((tmp_path / "state.json").read_bytes()) == v2_doc(WITH_CONFIG)
    assert load_fresh(tmp_path) == WITH_CONFIG


def test_version_1_checksum_covers_exactly_three_fields(tmp_path: Path) -> None:
    # A version-1 file whose checksum was computed the version-2 way (with "config": null) is corrupt...
    doc: dict[str, Any] = {"version": 1, "term": 3, "voted_for": 2}
    v2_way = json.dumps({**doc, "config": None}, sort_keys=True, separators=(",", ":"))
    write_state_doc(
        tmp_path, {**doc, "sha256": hashlib.sha256(v2_way.encode()).hexdigest()}, fix_checksum=False
    )
    assert "corrupt" in str(assert_refuses(tmp_path, match="checksum"))
    # ... and a version-2 file whose checksum leaves the null config out (the version-1 way) is too.
    v1_way = json.dumps({"version": 2, "term": 3, "voted_for": 2}, sort_keys=True, separators=(",", ":"))
    doc = {
        "version": 2,
        "term": 3,
        "voted_for": 2,
        "config": None,
        "sha256": hashlib.sha256(v1_way.encode()).hexdigest(),
    }
    write_state_doc(tmp_path, doc, fix_checksum=False)
    assert "corrupt" in str(assert_refuses(tmp_path, match="checksum"))


def test_version_1_file_with_a_config_field_is_refused(tmp_path: Path) -> None:
    for config in (None, config_doc(CONFIG)):
        write_state_doc(tmp_path, {"version": 1, "term": 3, "voted_for": 2, "config": config})
        assert "corrupt" in str(assert_refuses(tmp_path, match="fields"))


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with FileStorage("node") as storage:
        assert storage.path == tmp_path / "node"
        assert storage.state_path == tmp_path / "node" / "state.json"
        monkeypatch.chdir("/")  # a later chdir must not move the storage
        storage.save(OLD)
    assert load_fresh(tmp_path / "node") == OLD


def test_repr_shows_path_and_closed(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    assert str(tmp_path) in repr(storage)
    assert "closed" not in repr(storage)
    storage.close()
    assert "closed" in repr(storage)


def test_save_rejects_non_hard_state(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save(OLD)
        with pytest.raises(TypeError, match="HardState"):
            storage.save({"term": 9})  # type: ignore[arg-type]
        assert storage.load() == OLD


def test_closed_storage_refuses_load_and_save(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.close()
    storage.close()  # idempotent
    assert storage.closed
    with pytest.raises(StorageError, match="closed"):
        storage.load()
    with pytest.raises(StorageError, match="closed"):
        storage.save(OLD)


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StorageError, match="not a directory") as info:
        FileStorage(not_a_dir)
    assert str(not_a_dir) in str(info.value)


def test_creating_the_directory_fsyncs_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    FileStorage(tmp_path / "new" / "node").close()
    assert tmp_path.stat().st_ino in synced  # the entry for "new"
    assert (tmp_path / "new").stat().st_ino in synced  # the entry for "node"


def test_storage_errors_are_library_errors() -> None:
    assert issubclass(StorageError, RaftElectionError)


# --- FileStorage: corrupt or unreadable state is never replaced by a default -----------------------------


def assert_refuses(tmp_path: Path, match: Optional[str] = None) -> StorageError:
    with FileStorage(tmp_path) as storage, pytest.raises(StorageError, match=match) as info:
        storage.load()
    assert str(tmp_path / "state.json") in str(info.value)
    return info.value


@pytest.mark.parametrize("state", [NEW, WITH_CONFIG], ids=["no-config", "config"])
def test_truncation_at_every_offset_is_detected(tmp_path: Path, state: HardState) -> None:
    data = saved_bytes(tmp_path, state)
    for length in range(len(data)):
        (tmp_path / "state.json").write_bytes(data[:length])
        error = assert_refuses(tmp_path)
        assert "corrupt" in str(error)


@pytest.mark.parametrize("state", [NEW, WITH_CONFIG], ids=["no-config", "config"])
def test_every_single_bit_flip_is_detected(tmp_path: Path, state: HardState) -> None:
    data = saved_bytes(tmp_path, state)
    for index in range(len(data)):
        for bit in range(8):
            corrupted = bytearray(data)
            corrupted[index] ^= 1 << bit
            (tmp_path / "state.json").write_bytes(bytes(corrupted))
            assert_refuses(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe garbage \x80\n", b"not json\n", b"[1, 2, 3]\n", b"null\n", b"\n", b"[" * 4000 + b"\n"],
)
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    assert "corrupt" in str(assert_refuses(tmp_path))


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_bytes(b" " * _MAX_STATE_BYTES + b"{}\n")
    assert_refuses(tmp_path, match="larger than")


def test_wrong_checksum_is_refused(tmp_path: Path) -> None:
    data = saved_bytes(tmp_path, NEW)
    doc = json.loads(data)
    doc["term"] = 40  # as if a bit rotted in a way that still parses
    write_state_doc(tmp_path, doc, fix_checksum=False)
    error = assert_refuses(tmp_path, match="checksum")
    # The message says what an operator can do, and when deleting the data is safe.
    assert "backup" in str(error)
    assert str(tmp_path) in str(error)
    assert "vote twice" in str(error)


def test_uppercase_checksum_is_refused(tmp_path: Path) -> None:
    doc = json.loads(saved_bytes(tmp_path, NEW))
    doc["sha256"] = doc["sha256"].upper()
    write_state_doc(tmp_path, doc, fix_checksum=False)
    assert_refuses(tmp_path, match="checksum")


@pytest.mark.parametrize("version", [0, 4, -1, "1", "2", "3", 1.0, 2.0, 3.0, True, None])
@pytest.mark.parametrize("with_config", [False, True])
def test_wrong_version_is_refused(tmp_path: Path, version: object, with_config: bool) -> None:
    # Versions 1, 2 and 3 are read; 4 is the next unknown one.  Types are exact: "2", 2.0 and True are not 2.
    doc: dict[str, Any] = {"version": version, "term": 1, "voted_for": None}
    if with_config:
        doc["config"] = None
    write_state_doc(tmp_path, doc)
    error = assert_refuses(tmp_path, match="format version")
    assert repr(version) in str(error)


def test_missing_version_is_refused(tmp_path: Path) -> None:
    write_state_doc(tmp_path, {"term": 1, "voted_for": None, "sha256": "0" * 64}, fix_checksum=False)
    assert_refuses(tmp_path, match="version")


@pytest.mark.parametrize(
    "fields",
    [
        {"term": -1, "voted_for": None},
        {"term": MAX_TERM + 1, "voted_for": None},
        {"term": 1, "voted_for": 0},
        {"term": 1, "voted_for": -2},
        {"term": True, "voted_for": None},
        {"term": 1.5, "voted_for": None},
        {"term": "7", "voted_for": None},
        {"term": 1, "voted_for": [2]},
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_out_of_range_values_with_valid_checksum_are_refused(
    tmp_path: Path, fields: dict[str, object], version: int
) -> None:
    doc = {"version": version, **fields}
    if version == 2:
        doc["config"] = config_doc(CONFIG)
    write_state_doc(tmp_path, doc)
    assert_refuses(tmp_path, match="invalid value")


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 2, "term": 1, "config": None},  # voted_for missing
        {"version": 2, "voted_for": None, "config": None},  # term missing
        {"version": 2, "term": 1, "voted_for": None},  # config missing: a version-2 file always has it
        {"version": 2, "term": 1, "voted_for": None, "config": None, "extra": 1},
        {"version": 2, "term": 1, "voted_for": None, "config": None, "members": {"1": "a:1"}},
        {"version": 1, "term": 1},  # voted_for missing
        {"version": 1, "term": 1, "voted_for": None, "extra": 1},
    ],
)
def test_missing_or_extra_fields_are_refused(tmp_path: Path, doc: dict[str, object]) -> None:
    write_state_doc(tmp_path, doc)
    assert "corrupt" in str(assert_refuses(tmp_path, match="fields"))


def edited(doc: dict[str, Any], **config_changes: Any) -> dict[str, Any]:
    """``doc`` with its config's fields changed (a ``members`` given replaces the whole member map)."""
    return {**doc, "config": {**doc["config"], **config_changes}}


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda d: edited(d, members={**d["config"]["members"], "2": "10.0.0.99:9002"}), id="address"
        ),
        pytest.param(
            lambda d: edited(d, members={**d["config"]["members"], "3": "10.0.0.3:9003"}), id="add-member"
        ),
        pytest.param(
            lambda d: edited(d, members={"1": "10.0.0.1:9001", "10": "[::1]:9010"}), id="remove-member"
        ),
        pytest.param(
            lambda d: edited(d, members={"1": "10.0.0.1:9001", "3": "10.0.0.2:9002", "10": "[::1]:9010"}),
            id="renumber-member",
        ),
        pytest.param(lambda d: edited(d, term=5), id="config-term"),
        pytest.param(lambda d: edited(d, index=5), id="config-index"),
        pytest.param(lambda d: {**d, "config": None}, id="config-dropped"),
    ],
)
def test_checksum_covers_the_config(tmp_path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    doc = json.loads(saved_bytes(tmp_path, WITH_CONFIG))
    changed = edit(doc)
    assert changed != doc and changed["sha256"] == doc["sha256"]  # a valid-looking edit, checksum left alone
    path = write_state_doc(tmp_path, changed, fix_checksum=False)
    before = path.read_bytes()
    error = assert_refuses(tmp_path, match="checksum")
    assert "corrupt" in str(error) and "backup" in str(error)
    assert path.read_bytes() == before  # the refused file is left for the operator, not replaced


def test_a_state_file_with_an_edited_member_address_stops_the_node_from_starting(tmp_path: Path) -> None:
    from raft_election import RaftConfig, RaftNode  # noqa: PLC0415 (only this test needs a node)
    from transports.memory import InMemoryNetwork  # noqa: PLC0415

    doc = json.loads(saved_bytes(tmp_path, WITH_CONFIG))
    write_state_doc(
        tmp_path, edited(doc, members={**doc["config"]["members"], "2": "10.0.0.99:9002"}), fix_checksum=False
    )
    with InMemoryNetwork(seed=1) as net:
        config = RaftConfig(node_id=2, peers=dict(CONFIG.members))
        node = RaftNode(config, net.transport(2), FileStorage(tmp_path))
        with pytest.raises(StorageError, match="corrupt"):
            node.start()
        assert not node.status().running
        node.stop()


#: CONFIG as the file holds it.
GOOD_CONFIG: dict[str, Any] = {
    "term": 6,
    "index": 4,
    "members": {"1": "10.0.0.1:9001", "2": "10.0.0.2:9002", "10": "[::1]:9010"},
}


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        # not an object
        pytest.param([], "config", id="list"),
        pytest.param("10.0.0.1:9001", "config", id="string"),
        pytest.param(7, "config", id="number"),
        pytest.param(False, "config", id="false"),
        # missing or extra keys
        pytest.param({}, "config", id="empty-object"),
        pytest.param({"index": 4, "members": GOOD_CONFIG["members"]}, "config", id="no-term"),
        pytest.param({"term": 6, "members": GOOD_CONFIG["members"]}, "config", id="no-index"),
        pytest.param({"term": 6, "index": 4}, "config", id="no-members"),
        pytest.param({**GOOD_CONFIG, "voters": [1, 2]}, "config", id="extra-key"),
        # members not an object, or ids not plain decimal strings
        pytest.param({**GOOD_CONFIG, "members": [["1", "a:1"]]}, "members", id="members-list"),
        pytest.param({**GOOD_CONFIG, "members": None}, "members", id="members-null"),
        pytest.param({**GOOD_CONFIG, "members": {"01": "a:1"}}, "members", id="id-leading-zero"),
        pytest.param({**GOOD_CONFIG, "members": {"x": "a:1"}}, "members", id="id-x"),
        pytest.param({**GOOD_CONFIG, "members": {"": "a:1"}}, "members", id="id-empty"),
        pytest.param({**GOOD_CONFIG, "members": {"-1": "a:1"}}, "members", id="id-negative"),
        pytest.param({**GOOD_CONFIG, "members": {"+1": "a:1"}}, "members", id="id-plus"),
        pytest.param({**GOOD_CONFIG, "members": {" 1": "a:1"}}, "members", id="id-space"),
        pytest.param({**GOOD_CONFIG, "members": {"1.0": "a:1"}}, "members", id="id-float"),
        pytest.param({**GOOD_CONFIG, "members": {"\u0661": "a:1"}}, "members", id="id-arabic-digit"),
        pytest.param({**GOOD_CONFIG, "members": {"\u00b2": "a:1"}}, "", id="id-superscript-two"),
        pytest.param({**GOOD_CONFIG, "members": {"0": "a:1"}}, "member id 0", id="id-zero"),
        pytest.param({**GOOD_CONFIG, "members": {str(MAX_NODE_ID + 1): "a:1"}}, "member id", id="id-too-big"),
        # member sets the library never writes
        pytest.param({**GOOD_CONFIG, "members": {}}, "empty", id="no-members"),
        pytest.param(
            {**GOOD_CONFIG, "members": {"1": "a:1", "2": "a:1"}},
            "both member 1 and member 2",
            id="shared-address",
        ),
        pytest.param(
            {**GOOD_CONFIG, "members": {str(n): f"10.0.0.{n}:9001" for n in range(1, MAX_MEMBERS + 2)}},
            f"{MAX_MEMBERS + 1} members",
            id="too-many-members",
        ),
        pytest.param(
            {**GOOD_CONFIG, "members": {"1": "a" * (MAX_ADDRESS_SIZE + 1)}},
            "longer than",
            id="address-201-bytes",
        ),
        pytest.param(
            {**GOOD_CONFIG, "members": {"1": "é" * 101}}, "longer than", id="address-202-utf8-bytes"
        ),
        pytest.param({**GOOD_CONFIG, "members": {"1": ""}}, "empty", id="address-empty"),
        pytest.param({**GOOD_CONFIG, "members": {"1": 9001}}, "string", id="address-number"),
        pytest.param({**GOOD_CONFIG, "members": {"1": None}}, "string", id="address-null"),
        pytest.param({**GOOD_CONFIG, "members": {"1": " a:1"}}, "whitespace", id="address-space"),
        # term and index
        pytest.param({**GOOD_CONFIG, "index": -1}, "index", id="negative-index"),
        pytest.param({**GOOD_CONFIG, "index": MAX_INDEX + 1}, "index", id="index-too-big"),
        pytest.param({**GOOD_CONFIG, "index": 4.0}, "index", id="index-float"),
        pytest.param({**GOOD_CONFIG, "index": None}, "index", id="index-null"),
        pytest.param({**GOOD_CONFIG, "term": "6"}, "term", id="term-string"),
        pytest.param({**GOOD_CONFIG, "term": -1}, "term", id="negative-term"),
        pytest.param({**GOOD_CONFIG, "term": MAX_TERM + 1}, "term", id="term-too-big"),
        pytest.param({**GOOD_CONFIG, "term": True}, "term", id="term-bool"),
    ],
)
def test_malformed_config_with_valid_checksum_is_refused(tmp_path: Path, config: object, fault: str) -> None:
    # Each would pass the checksum: only validation stands between it and a node using a bogus member set.
    path = write_state_doc(tmp_path, {"version": 2, "term": 7, "voted_for": 2, "config": config})
    before = path.read_bytes()
    for _ in range(2):  # refused on every start, never replaced by a default
        error = str(assert_refuses(tmp_path, match="invalid value"))
        assert "corrupt" in error
        assert fault in error
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "members",
    [
        {str(n): f"10.0.0.{n}:9001" for n in range(1, MAX_MEMBERS + 1)},  # exactly the most members
        {"1": "a" * MAX_ADDRESS_SIZE},  # exactly the longest address
        {"1": "é" * (MAX_ADDRESS_SIZE // 2)},  # 200 UTF-8 bytes in 100 characters
        {"1": "a:1", str(MAX_NODE_ID): "b:2"},  # the largest id
    ],
    ids=["16-members", "200-bytes", "200-utf8-bytes", "largest-id"],
)
def test_config_at_the_limits_loads(tmp_path: Path, members: dict[str, str]) -> None:
    # The refusals above are about the limits, not about anything near them.
    write_state_doc(
        tmp_path, {"version": 2, "term": 7, "voted_for": 2, "config": {**GOOD_CONFIG, "members": members}}
    )
    loaded = load_fresh(tmp_path)
    assert loaded.config is not None
    assert dict(loaded.config.members) == {int(key): address for key, address in members.items()}


def test_directory_in_place_of_state_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    assert_refuses(tmp_path, match="cannot read")


def test_permission_error_on_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved_bytes(tmp_path, OLD)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("raft_election.storage.open", denied, raising=False)
    error = assert_refuses(tmp_path, match="Permission denied")
    assert "do not delete" in str(error)


# --- FileStorage: atomic, durable saves -------------------------------------------------------------------


def test_save_fsyncs_file_then_renames_then_fsyncs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path)
    storage.save(OLD)
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync_dir" if stat.S_ISDIR(info.st_mode) else "fsync_file", info.st_ino))
        real_fsync(fd)

    def recording_replace(src: str, dst: str) -> None:
        events.append(("replace", os.stat(src).st_ino))
        assert Path(dst) == tmp_path / "state.json"
        assert Path(src).parent == tmp_path  # same directory, so the rename is atomic
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    storage.save(NEW)
    new_inode = (tmp_path / "state.json").stat().st_ino
    dir_inode = tmp_path.stat().st_ino
    assert events == [("fsync_file", new_inode), ("replace", new_inode), ("fsync_dir", dir_inode)]
    storage.close()


def failing(exc: OSError) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("target", "exc"),
    [
        ("mkstemp", OSError(28, "No space left on device")),
        ("write", OSError(28, "No space left on device")),
        ("fsync", OSError(5, "Input/output error")),
        ("replace", OSError(5, "Input/output error")),
    ],
)
def test_failed_save_keeps_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, exc: OSError
) -> None:
    storage = FileStorage(tmp_path)
    storage.save(OLD)
    module = tempfile if target == "mkstemp" else os
    with monkeypatch.context() as patch:
        patch.setattr(module, target, failing(exc))
        with pytest.raises(StorageError, match=exc.strerror or "") as info:
            storage.save(NEW)
    assert str(tmp_path / "state.json") in str(info.value)
    assert "previous state file is intact" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert temp_files(tmp_path) == []  # the failed save cleaned up after itself
    assert storage.load() == OLD
    storage.close()
    assert load_fresh(tmp_path) == OLD


def test_failed_directory_fsync_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path)
    storage.save(OLD)
    real_fsync = os.fsync

    def fsync_files_only(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync_files_only)
        with pytest.raises(StorageError, match="fsync of directory") as info:
            storage.save(NEW)
    assert "may not survive" in str(info.value)
    # The rename had happened: the file holds the new state, whole (old or new, never a mix).
    assert storage.load() == NEW
    storage.close()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def one_byte_at_a_time(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:1]))

    with FileStorage(tmp_path) as storage:
        monkeypatch.setattr(os, "write", one_byte_at_a_time)
        storage.save(NEW)
        monkeypatch.undo()
        assert storage.load() == NEW


def test_leftover_temp_files_are_ignored_and_removed(tmp_path: Path) -> None:
    saved_bytes(tmp_path, OLD)
    partial = tmp_path / "state.json.abc123.tmp"
    partial.write_bytes(saved_bytes(tmp_path / "other", NEW)[:20])
    whole = tmp_path / "state.json.def456.tmp"
    whole.write_bytes(saved_bytes(tmp_path / "other", NEW))  # a complete but never-renamed save
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("keep me")
    assert load_fresh(tmp_path) == OLD
    assert temp_files(tmp_path) == []
    assert unrelated.read_text() == "keep me"


def test_leftover_temp_file_without_state_is_a_new_member(tmp_path: Path) -> None:
    (tmp_path / "state.json.xyz.tmp").write_bytes(b'{"version": 1, "te')
    assert load_fresh(tmp_path) == HardState()
    assert temp_files(tmp_path) == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from raft_election.membership import Configuration
    from raft_election.storage import FileStorage, HardState

    directory, stage, new_config = sys.argv[1], sys.argv[2], sys.argv[3] == "config"
    storage = FileStorage(directory)
    storage.save(HardState(term=3, voted_for=2))
    entry = Configuration(term=4, index=1, members={1: "h1:1", 2: "h2:1", 5: "h5:1"}) if new_config else None
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace
    fsyncs = []

    def die():
        os._exit(17)  # like SIGKILL: no cleanup, no flush, no finally blocks

    def write(fd, data):
        if stage == "mid_write":
            real_write(fd, bytes(data[: len(data) // 2]))
            die()
        return real_write(fd, data)

    def fsync(fd):
        fsyncs.append(fd)
        if (stage, len(fsyncs)) in (("before_file_fsync", 1), ("before_dir_fsync", 2)):
            die()
        real_fsync(fd)

    def replace(src, dst):
        if stage == "before_replace":
            die()
        real_replace(src, dst)

    os.write, os.fsync, os.replace = write, fsync, replace
    storage.save(HardState(term=4, voted_for=5, config=entry))
    die()
    """
)
NEW_WITH_CONFIG = HardState(
    term=4, voted_for=5, config=Configuration(term=4, index=1, members={1: "h1:1", 2: "h2:1", 5: "h5:1"})
)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("mid_write", OLD),
        ("before_file_fsync", OLD),
        ("before_replace", OLD),
        ("before_dir_fsync", NEW),  # renamed already: the new state is whole
        ("after_save", NEW),
    ],
)
@pytest.mark.parametrize("new_config", [False, True], ids=["plain", "config"])
def test_process_killed_during_save_leaves_old_or_new_state(
    tmp_path: Path, stage: str, expected: HardState, new_config: bool
) -> None:
    # The configuration entry is written in the same atomic save as the term and vote: all or nothing.
    if new_config and expected == NEW:
        expected = NEW_WITH_CONFIG
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), stage, "config" if new_config else "plain"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 17, result.stderr.decode()
    if stage in ("mid_write", "before_file_fsync", "before_replace"):
        assert len(temp_files(tmp_path)) == 1  # the crash really left a temp file behind
    assert load_fresh(tmp_path) == expected
    assert temp_files(tmp_path) == []


def test_concurrent_saves_from_threads(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    errors: list[BaseException] = []

    def saver(voter: int) -> None:
        try:
            for term in range(1, 21):
                storage.save(HardState(term=term, voted_for=voter))
                storage.load()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(voter,)) for voter in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = storage.load()
    assert final.term == 20 and final.voted_for in {1, 2, 3, 4}
    assert temp_files(tmp_path) == []
    storage.close()


# --- FileStorage: exclusive use of the data directory -----------------------------------------------------


def test_second_storage_on_same_directory_is_refused(tmp_path: Path) -> None:
    first = FileStorage(tmp_path)
    with pytest.raises(StorageError, match="already in use by another process") as info:
        FileStorage(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert f"pid {os.getpid()}" in str(info.value)
    first.close()
    with FileStorage(tmp_path) as second:  # released by close()
        second.save(OLD)
    with FileStorage(tmp_path), pytest.raises(StorageError):  # held by the context manager until it exits
        FileStorage(tmp_path)
    assert load_fresh(tmp_path) == OLD


def test_lock_is_not_taken_by_a_different_directory(tmp_path: Path) -> None:
    with FileStorage(tmp_path / "one"), FileStorage(tmp_path / "two") as two:
        two.save(OLD)


CHILD_OPENS = textwrap.dedent(
    """
    import sys
    from raft_election.errors import StorageError
    from raft_election.storage import FileStorage
    try:
        FileStorage(sys.argv[1]).close()
    except StorageError as exc:
        print(exc)
        sys.exit(3)
    """
)

CHILD_HOLDS = textwrap.dedent(
    """
    import sys
    from raft_election.storage import FileStorage
    storage = FileStorage(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the parent closes our stdin
    """
)


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    with FileStorage(tmp_path):
        child = subprocess.run(
            [sys.executable, "-c", CHILD_OPENS, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 3, child.stderr
        assert "already in use by another process" in child.stdout
        assert f"pid {os.getpid()}" in child.stdout
    child = subprocess.run(
        [sys.executable, "-c", CHILD_OPENS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stdout + child.stderr


def test_lock_held_by_another_process_excludes_us_until_it_exits(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_HOLDS, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(StorageError, match=f"already in use by another process \\(pid {child.pid}\\)"):
            FileStorage(tmp_path)
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    with FileStorage(tmp_path) as storage:  # the process's exit released the lock
        storage.save(OLD)


# --- property ----------------------------------------------------------------------------------------------

node_ids = st.integers(min_value=1, max_value=MAX_NODE_ID)
terms = st.integers(min_value=0, max_value=MAX_TERM)
indexes = st.integers(min_value=0, max_value=MAX_INDEX)
#: Printable, no surrounding whitespace, at most 60 characters (and so at most 240 bytes: keep <= 200).
addresses = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(
    lambda address: (
        address.isprintable()
        and address.strip() == address
        and len(address.encode("utf-8")) <= MAX_ADDRESS_SIZE
    )
)
members = st.lists(
    st.tuples(node_ids, addresses),
    min_size=1,
    max_size=MAX_MEMBERS,
    unique_by=(lambda member: member[0], lambda member: member[1]),  # distinct ids, distinct addresses
).map(dict)
configs = st.builds(Configuration, term=terms, index=indexes, members=members)
hard_states = st.builds(HardState, term=terms, voted_for=st.none() | node_ids, config=st.none() | configs)


@settings(max_examples=examples(200, 2000))
@given(state=hard_states)
def test_any_valid_state_round_trips_exactly(state: HardState) -> None:
    memory = MemoryStorage()
    memory.save(state)
    assert memory.load() == state
    with tempfile.TemporaryDirectory() as directory:
        with FileStorage(directory) as storage:
            storage.save(state)
            assert storage.load() == state
        data = (Path(directory) / "state.json").read_bytes()
        assert data.endswith(b"\n")
        assert json.loads(data) == v2_doc(state)  # the documented layout and checksum, independently computed
        loaded = load_fresh(Path(directory))  # as a restarted process sees it
    assert loaded == state
    assert loaded.config == state.config
    if state.config is not None:
        assert loaded.config is not None
        assert list(loaded.config.members.items()) == list(state.config.members.items())


@settings(deadline=None)
@given(states=st.lists(hard_states, max_size=6), reopen_every=st.integers(min_value=1, max_value=7))
def test_reopen_loads_the_last_save(states: list[HardState], reopen_every: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        storage = FileStorage(directory)
        for index, state in enumerate(states, start=1):
            storage.save(state)
            if index % reopen_every == 0:
                storage.close()
                storage = FileStorage(directory)
        storage.close()
        expected = states[-1] if states else HardState()
        assert load_fresh(Path(directory)) == expected
