"""Tests for raft_election.storage: durable (current_term, voted_for) (Raft §5.2, Figure 2).

The rule under test: a member's term and vote survive any crash, and a member that cannot read them
refuses to start (StorageError) instead of starting over at term 0, which could let it vote twice in a term.
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
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.errors import RaftElectionError, StorageError
from raft_election.messages import MAX_NODE_ID, MAX_TERM
from raft_election.storage import FORMAT_VERSION, FileStorage, HardState, MemoryStorage, Storage

OLD = HardState(term=3, voted_for=2)
NEW = HardState(term=4, voted_for=5)


def temp_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def write_state_doc(directory: Path, doc: object, *, fix_checksum: bool = True) -> Path:
    """Write a hand-made state file; with fix_checksum, give it the checksum its fields deserve."""
    if fix_checksum and isinstance(doc, dict):
        fields = {"version": doc.get("version"), "term": doc.get("term"), "voted_for": doc.get("voted_for")}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        doc = {**doc, "sha256": hashlib.sha256(canonical).hexdigest()}
    path = directory / "state.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


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
    ],
)
def test_hard_state_rejects_invalid_fields_with_value_error(kwargs: dict[str, object]) -> None:
    # Documented choice: every invalid field (wrong type or out of range) raises ValueError.
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HardState(**kwargs)  # type: ignore[arg-type]


def test_hard_state_accepts_bounds() -> None:
    assert HardState(term=MAX_TERM, voted_for=MAX_NODE_ID).term == MAX_TERM
    assert HardState(term=0, voted_for=1).voted_for == 1


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
    data = saved_bytes(tmp_path, NEW)
    assert data.endswith(b"\n")
    doc = json.loads(data)
    assert set(doc) == {"version", "term", "voted_for", "sha256"}
    assert (doc["version"], doc["term"], doc["voted_for"]) == (FORMAT_VERSION, 4, 5)
    canonical = json.dumps(
        {"version": FORMAT_VERSION, "term": 4, "voted_for": 5}, sort_keys=True, separators=(",", ":")
    )
    assert doc["sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) & 0o077 == 0


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


def test_truncation_at_every_offset_is_detected(tmp_path: Path) -> None:
    data = saved_bytes(tmp_path, NEW)
    for length in range(len(data)):
        (tmp_path / "state.json").write_bytes(data[:length])
        error = assert_refuses(tmp_path)
        assert "corrupt" in str(error)


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    data = saved_bytes(tmp_path, NEW)
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
    (tmp_path / "state.json").write_bytes(b" " * 100_000 + b"{}\n")
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


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None])
def test_wrong_version_is_refused(tmp_path: Path, version: object) -> None:
    write_state_doc(tmp_path, {"version": version, "term": 1, "voted_for": None})
    assert_refuses(tmp_path, match="format version")


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
def test_out_of_range_values_with_valid_checksum_are_refused(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    write_state_doc(tmp_path, {"version": FORMAT_VERSION, **fields})
    assert_refuses(tmp_path, match="invalid value")


@pytest.mark.parametrize(
    "doc",
    [
        {"version": FORMAT_VERSION, "term": 1},  # voted_for missing
        {"version": FORMAT_VERSION, "term": 1, "voted_for": None, "extra": 1},
    ],
)
def test_missing_or_extra_fields_are_refused(tmp_path: Path, doc: dict[str, object]) -> None:
    write_state_doc(tmp_path, doc)
    assert_refuses(tmp_path, match="fields")


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
    from raft_election.storage import FileStorage, HardState

    directory, stage = sys.argv[1], sys.argv[2]
    storage = FileStorage(directory)
    storage.save(HardState(term=3, voted_for=2))
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
    storage.save(HardState(term=4, voted_for=5))
    die()
    """
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
def test_process_killed_during_save_leaves_old_or_new_state(
    tmp_path: Path, stage: str, expected: HardState
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), stage],
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

hard_states = st.builds(
    HardState,
    term=st.integers(min_value=0, max_value=MAX_TERM),
    voted_for=st.none() | st.integers(min_value=1, max_value=MAX_NODE_ID),
)


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
