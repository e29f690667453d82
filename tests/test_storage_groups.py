"""Tests for raft_election.storage keeping every election group's term and vote (issue 15).

The rule under test is Raft's §5.2 (Figure 2) applied to each group: a member's term and vote in every
group survive any crash and restart, all groups' states are written in one atomic, checksummed write (one
fsync however many groups changed), a member that cannot read them refuses to start, and a member with
only the default group keeps the version-2 file that earlier releases read.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election import storage as storage_module
from raft_election.errors import StorageError
from raft_election.groupname import MAX_GROUP_NAME
from raft_election.membership import Configuration
from raft_election.messages import MAX_ADDRESS_SIZE, MAX_INDEX, MAX_MEMBERS, MAX_NODE_ID, MAX_TERM
from raft_election.storage import (
    _MAX_STATE_BYTES,
    FORMAT_VERSION,
    MAX_STORED_GROUPS,
    SINGLE_GROUP_FORMAT_VERSION,
    FileStorage,
    HardState,
    MemoryStorage,
    Storage,
)
from tests.conftest import examples

CONFIG = Configuration(term=6, index=4, members={1: "10.0.0.1:9001", 2: "10.0.0.2:9002"})
DEFAULT = HardState(term=7, voted_for=3, config=CONFIG)
LATER = HardState(term=8, voted_for=None, config=CONFIG)
A1 = HardState(term=5, voted_for=2)
A2 = HardState(term=6, voted_for=None)
B1 = HardState(term=12, voted_for=1)
C1 = HardState(term=1, voted_for=MAX_NODE_ID)

V2_FIELDS = {"version", "term", "voted_for", "config", "sha256"}
V3_FIELDS = {"version", "term", "voted_for", "config", "groups", "sha256"}


# --- the documented format, computed here from the module docstring rather than by the library's code -----


def checksum_of(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sort_keys, separators (",", ":"), UTF-8) of every field but sha256."""
    fields = {name: value for name, value in doc.items() if name != "sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def config_doc(config: Optional[Configuration]) -> Optional[dict[str, Any]]:
    if config is None:
        return None
    return {"term": config.term, "index": config.index,
            "members": {str(node_id): address for node_id, address in config.members.items()}}


def expected_doc(state: HardState, groups: Mapping[str, HardState]) -> dict[str, Any]:
    """The document that must hold ``state`` and ``groups``: version 2 with no group, else version 3."""
    kept = {name: group for name, group in groups.items() if group != HardState()}
    doc: dict[str, Any] = {"version": 3 if kept else 2, "term": state.term, "voted_for": state.voted_for,
                           "config": config_doc(state.config)}
    if kept:
        doc["groups"] = {name: [group.term, group.voted_for] for name, group in sorted(kept.items())}
    return {**doc, "sha256": checksum_of(doc)}


def write_state_doc(directory: Path, doc: dict[str, Any], *, fix_checksum: bool = True) -> Path:
    """Write a hand-made state file; with fix_checksum, give it the checksum its fields deserve."""
    if fix_checksum:
        doc = {**doc, "sha256": checksum_of(doc)}
    path = directory / "state.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def v3_doc(**groups: Any) -> dict[str, Any]:
    """A version-3 document (without its checksum) with the default group DEFAULT and ``groups`` as given."""
    return {"version": 3, "term": DEFAULT.term, "voted_for": DEFAULT.voted_for, "config": config_doc(CONFIG),
            "groups": groups}


def load_fresh(directory: Path) -> tuple[HardState, dict[str, HardState]]:
    """The states as a restarted process sees them."""
    with FileStorage(directory) as storage:
        return storage.load(), storage.load_groups()


def assert_refuses(directory: Path, match: str) -> StorageError:
    """Loading ``directory`` raises a StorageError naming the file and matching ``match``."""
    with FileStorage(directory) as storage, pytest.raises(StorageError, match=match) as info:
        storage.load()
    assert str(directory / "state.json") in str(info.value)
    return info.value


# --- strategies ----------------------------------------------------------------------------------------

group_names = st.from_regex(rf"[A-Za-z0-9._:/@-]{{1,{MAX_GROUP_NAME}}}", fullmatch=True)
terms = st.integers(min_value=0, max_value=MAX_TERM)
votes = st.none() | st.integers(min_value=1, max_value=MAX_NODE_ID)
group_states = st.builds(HardState, term=terms, voted_for=votes)
group_maps = st.dictionaries(group_names, group_states | st.just(HardState()), max_size=12)
default_states = st.builds(HardState, term=terms, voted_for=votes, config=st.none() | st.just(CONFIG))


# --- round trip ----------------------------------------------------------------------------------------


@settings(max_examples=examples(100, 1000))
@given(state=default_states, groups=group_maps)
def test_any_groups_round_trip_exactly(state: HardState, groups: dict[str, HardState]) -> None:
    kept = {name: group for name, group in groups.items() if group != HardState()}
    memory = MemoryStorage()
    memory.save_groups(state, groups)
    assert (memory.load(), memory.load_groups(), dict(memory.groups)) == (state, kept, kept)
    with tempfile.TemporaryDirectory() as directory:
        with FileStorage(directory) as storage:
            storage.save_groups(state, groups)
            assert (storage.load(), storage.load_groups()) == (state, kept)
        data = (Path(directory) / "state.json").read_bytes()
        assert data.endswith(b"\n")
        assert json.loads(data) == expected_doc(state, groups)  # the documented layout and checksum
        assert load_fresh(Path(directory)) == (state, kept)


operations = st.lists(
    st.tuples(default_states, st.none() | group_maps, st.booleans()),  # (state, groups or save(), reopen?)
    max_size=8,
)


@settings(max_examples=examples(60, 600))
@given(steps=operations)
def test_saves_merge_groups_like_a_dict_update(
    steps: list[tuple[HardState, Optional[dict[str, HardState]], bool]],
) -> None:
    # The model: save() replaces the default state only; save_groups() also updates the named groups.
    model_state, model_groups = HardState(), {}
    memory = MemoryStorage()
    with tempfile.TemporaryDirectory() as directory:
        storage = FileStorage(directory)
        try:
            for state, groups, reopen in steps:
                model_state = state
                if groups is None:
                    storage.save(state)
                    memory.save(state)
                else:
                    storage.save_groups(state, groups)
                    memory.save_groups(state, groups)
                    model_groups.update(groups)
                model_groups = {name: group for name, group in model_groups.items() if group != HardState()}
                if reopen:  # a restart: the next save must keep the groups it never loaded
                    storage.close()
                    storage = FileStorage(directory)
            assert (memory.load(), memory.load_groups()) == (model_state, model_groups)
            assert memory.saves == len(steps)
        finally:
            storage.close()
        assert load_fresh(Path(directory)) == (model_state, model_groups)


def test_save_groups_merges_changed_groups_into_those_kept(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.load()
        storage.save_groups(DEFAULT, {"a": A1, "b": B1})
        storage.save_groups(LATER, {"a": A2, "c": C1})  # "b" is not named: it keeps its state
        assert storage.load_groups() == {"a": A2, "b": B1, "c": C1}
    assert load_fresh(tmp_path) == (LATER, {"a": A2, "b": B1, "c": C1})


def test_save_keeps_every_group(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.load()
        storage.save_groups(DEFAULT, {"a": A1, "b": B1})
        storage.save(LATER)  # the default group only: the others stay
        assert storage.load_groups() == {"a": A1, "b": B1}
    assert load_fresh(tmp_path) == (LATER, {"a": A1, "b": B1})
    memory = MemoryStorage()
    memory.save_groups(DEFAULT, {"a": A1})
    memory.save(LATER)
    assert (memory.load(), memory.load_groups()) == (LATER, {"a": A1})


def test_save_without_load_keeps_the_groups_on_disk(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1})
    with FileStorage(tmp_path) as storage:  # never loaded: the groups must not be lost
        storage.save(LATER)
    with FileStorage(tmp_path) as storage:
        storage.save_groups(LATER, {"b": B1})
    assert load_fresh(tmp_path) == (LATER, {"a": A1, "b": B1})


def test_save_without_load_over_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    # Writing over a file it cannot read would silently drop every group's vote.
    path = write_state_doc(tmp_path, v3_doc(a=[5, 2]), fix_checksum=False)
    path.write_text(path.read_text().replace('"sha256": "', '"sha256": "0'))  # a bad checksum
    before = path.read_bytes()
    with FileStorage(tmp_path) as storage:
        with pytest.raises(StorageError, match="corrupt"):
            storage.save(LATER)
        with pytest.raises(StorageError, match="corrupt"):
            storage.save_groups(LATER, {"b": B1})
        with pytest.raises(StorageError, match="corrupt"):
            storage.load_groups()
    assert path.read_bytes() == before


def test_load_groups_before_load_reads_the_file(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1})
    with FileStorage(tmp_path) as storage:
        assert storage.load_groups() == {"a": A1}
        assert storage.load() == DEFAULT


def test_load_groups_returns_a_copy(tmp_path: Path) -> None:
    memory = MemoryStorage(groups={"a": A1})
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1})
        for store in (memory, storage):
            answer = store.load_groups()
            answer["b"] = B1
            del answer["a"]
            assert store.load_groups() == {"a": A1}


def test_saving_a_group_at_term_0_without_a_vote_leaves_it_out(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1, "b": B1, "new": HardState()})
        assert storage.load_groups() == {"a": A1, "b": B1}
        assert set(json.loads(path.read_bytes())["groups"]) == {"a", "b"}
        storage.save_groups(DEFAULT, {"a": HardState()})
        assert storage.load_groups() == {"b": B1}
        storage.save_groups(DEFAULT, {"b": HardState()})  # the last group: back to version 2
        assert storage.load_groups() == {}
    assert json.loads(path.read_bytes()) == expected_doc(DEFAULT, {})
    assert load_fresh(tmp_path) == (DEFAULT, {})
    # A vote in term 0 is not the state of a new member: it is kept.
    voted = HardState(term=0, voted_for=4)
    memory = MemoryStorage()
    memory.save_groups(DEFAULT, {"a": voted, "b": HardState()})
    assert memory.load_groups() == {"a": voted}


def test_concurrent_save_groups_from_threads_keep_every_group(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.load()

        def saver(thread: int) -> None:
            for term in range(1, 21):
                storage.save_groups(HardState(term=term), {f"t{thread}-g{term}": HardState(term=term)})

        threads = [threading.Thread(target=saver, args=(thread,)) for thread in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = {f"t{thread}-g{term}": HardState(term=term)
                    for thread in range(4) for term in range(1, 21)}
        assert storage.load_groups() == expected
    assert load_fresh(tmp_path)[1] == expected


# --- versions 2 and 3 ----------------------------------------------------------------------------------


def test_versions() -> None:
    assert (FORMAT_VERSION, SINGLE_GROUP_FORMAT_VERSION, MAX_STORED_GROUPS) == (3, 2, 100_000)


def test_version_2_file_is_read_with_no_groups(tmp_path: Path) -> None:
    path = write_state_doc(tmp_path, {"version": 2, "term": 7, "voted_for": 3, "config": config_doc(CONFIG)})
    before = path.read_bytes()
    assert load_fresh(tmp_path) == (DEFAULT, {})
    assert path.read_bytes() == before  # loading never rewrites the file
    with FileStorage(tmp_path) as storage:
        storage.load()
        storage.save_groups(DEFAULT, {"a": A1})  # the first group: now version 3
    assert json.loads(path.read_bytes()) == expected_doc(DEFAULT, {"a": A1})
    assert load_fresh(tmp_path) == (DEFAULT, {"a": A1})


def test_version_1_file_is_read_with_no_groups(tmp_path: Path) -> None:
    write_state_doc(tmp_path, {"version": 1, "term": 3, "voted_for": 2})
    assert load_fresh(tmp_path) == (HardState(term=3, voted_for=2), {})


def test_version_2_is_written_while_there_are_no_groups(tmp_path: Path) -> None:
    # A one-group member's file is byte for byte what save() (and releases before groups) write.
    with FileStorage(tmp_path / "save") as storage:
        storage.save(DEFAULT)
    with FileStorage(tmp_path / "groups") as storage:
        storage.save_groups(DEFAULT, {})
    with FileStorage(tmp_path / "new-groups") as storage:
        storage.save_groups(DEFAULT, {"a": HardState(), "b": HardState()})
    data = (tmp_path / "save" / "state.json").read_bytes()
    assert (tmp_path / "groups" / "state.json").read_bytes() == data
    assert (tmp_path / "new-groups" / "state.json").read_bytes() == data
    doc = json.loads(data)
    assert set(doc) == V2_FIELDS and doc["version"] == 2
    assert doc == expected_doc(DEFAULT, {})


def test_version_3_layout_is_one_line_per_group_in_name_order(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"scheduler": A1, "cron": HardState(term=12), "a/b@c:d-e.f_g": C1})
    text = (tmp_path / "state.json").read_text()
    doc = json.loads(text)
    assert set(doc) == V3_FIELDS
    assert doc == expected_doc(DEFAULT, {"scheduler": A1, "cron": HardState(term=12), "a/b@c:d-e.f_g": C1})
    assert (
        '  "groups": {\n'
        f'    "a/b@c:d-e.f_g": [1, {MAX_NODE_ID}],\n'
        '    "cron": [12, null],\n'
        '    "scheduler": [5, 2]\n'
        "  },\n"
    ) in text
    # The checksum covers the groups, spelled out rather than computed by a helper.
    canonical = json.dumps(
        {"version": 3, "term": 7, "voted_for": 3, "config": config_doc(CONFIG),
         "groups": {"a/b@c:d-e.f_g": [1, MAX_NODE_ID], "cron": [12, None], "scheduler": [5, 2]}},
        sort_keys=True, separators=(",", ":"),
    )
    assert doc["sha256"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    # Apart from the groups, the layout is that of json.dumps(doc, indent=2), as in version 2.
    without_groups = {name: value for name, value in doc.items() if name != "groups"}
    expected_head = json.dumps(without_groups, indent=2).split('  "sha256"')[0]
    assert text.startswith(expected_head)
    assert text.endswith(f'  "sha256": "{doc["sha256"]}"\n}}\n')


def test_the_largest_state_fits_and_round_trips(tmp_path: Path) -> None:
    # MAX_STORED_GROUPS groups with the longest names, terms and votes, and the largest configuration.
    # Addresses of 4-byte characters (12 bytes of JSON escapes each): the largest config entry.
    big_config = Configuration(
        term=MAX_TERM, index=MAX_INDEX,
        members={MAX_NODE_ID - n: "\U0001f600" * (MAX_ADDRESS_SIZE // 4 - 1) + f"{n:02d}\u00e9"
                 for n in range(MAX_MEMBERS)},
    )
    state = HardState(term=MAX_TERM, voted_for=MAX_NODE_ID, config=big_config)
    groups = {f"{n:0{MAX_GROUP_NAME}d}": HardState(term=MAX_TERM, voted_for=MAX_NODE_ID)
              for n in range(MAX_STORED_GROUPS)}
    with FileStorage(tmp_path) as storage:
        storage.save_groups(state, groups)
    assert (tmp_path / "state.json").stat().st_size <= _MAX_STATE_BYTES
    assert load_fresh(tmp_path) == (state, groups)


# --- corruption: never answered with a default ---------------------------------------------------------


def test_wrong_checksum_is_refused(tmp_path: Path) -> None:
    doc = v3_doc(a=[5, 2], b=[12, 1])
    doc = {**doc, "sha256": checksum_of(doc)}
    doc["groups"]["a"] = [4, 2]  # as if a bit rotted in a way that still parses
    write_state_doc(tmp_path, doc, fix_checksum=False)
    error = assert_refuses(tmp_path, "checksum")
    assert "backup" in str(error) and "vote twice" in str(error)


@pytest.mark.parametrize(
    "name", ["", "a b", "x" * (MAX_GROUP_NAME + 1), "caf\u00e9", "tab\t", "a,b", "\U0001f512", "a\nb"],
)
def test_bad_group_name_is_refused(tmp_path: Path, name: str) -> None:
    write_state_doc(tmp_path, {**v3_doc(good=[1, None]), "groups": {"good": [1, None], name: [5, 2]}})
    error = assert_refuses(tmp_path, "invalid group name")
    assert "corrupt" in str(error)
    assert repr(name)[:50] in str(error)


@pytest.mark.parametrize(
    ("entry", "fault"),
    [
        ([-1, None], "invalid value in group 'a'"),
        ([MAX_TERM + 1, None], "invalid value in group 'a'"),
        ([True, None], "invalid value in group 'a'"),
        ([1.5, None], "invalid value in group 'a'"),
        (["7", None], "invalid value in group 'a'"),
        ([None, None], "invalid value in group 'a'"),
        ([3, 0], "invalid value in group 'a'"),
        ([3, MAX_NODE_ID + 1], "invalid value in group 'a'"),
        ([3, -2], "invalid value in group 'a'"),
        ([3, True], "invalid value in group 'a'"),
        ([3, "2"], "invalid value in group 'a'"),
        ([3], r"group 'a': expected \[term, voted_for\]"),
        ([3, 2, 1], r"group 'a': expected \[term, voted_for\]"),
        ({"term": 3, "voted_for": 2}, r"group 'a': expected \[term, voted_for\]"),
        (3, r"group 'a': expected \[term, voted_for\]"),
        (None, r"group 'a': expected \[term, voted_for\]"),
    ],
)
def test_bad_group_entry_with_valid_checksum_is_refused(tmp_path: Path, entry: object, fault: str) -> None:
    write_state_doc(tmp_path, v3_doc(ok=[2, 1], a=entry))
    assert "corrupt" in str(assert_refuses(tmp_path, fault))


@pytest.mark.parametrize("groups", [[], None, "a", 3, [["a", [1, None]]]])
def test_groups_that_are_not_an_object_are_refused(tmp_path: Path, groups: object) -> None:
    write_state_doc(tmp_path, {**v3_doc(), "groups": groups})
    assert_refuses(tmp_path, "groups must be an object")


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 3, "term": 1, "voted_for": None, "config": None},  # groups missing
        {"version": 2, "term": 1, "voted_for": None, "config": None, "groups": {"a": [1, None]}},
        {"version": 1, "term": 1, "voted_for": None, "groups": {"a": [1, None]}},
        {**v3_doc(a=[1, None]), "extra": 1},
    ],
)
def test_groups_field_only_in_version_3(tmp_path: Path, doc: dict[str, Any]) -> None:
    write_state_doc(tmp_path, doc)
    assert_refuses(tmp_path, "expected fields")


def test_repeated_group_name_is_refused(tmp_path: Path) -> None:
    # json.loads would keep the last of two equal keys; a file with two votes for one group is corrupt.
    doc = v3_doc(a=[5, 2])
    path = write_state_doc(tmp_path, doc)
    text = path.read_text().replace('"a": [\n      5,\n      2\n    ]', '"a": [5, 2], "a": [5, 2]')
    assert text.count('"a"') == 2
    path.write_text(text)
    assert_refuses(tmp_path, "more than once")


def test_empty_groups_object_in_version_3_loads(tmp_path: Path) -> None:
    # Never written (no groups means version 2), but valid: a reader accepts it.
    write_state_doc(tmp_path, v3_doc())
    assert load_fresh(tmp_path) == (DEFAULT, {})


def test_too_many_groups_in_the_file_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_state_doc(tmp_path, v3_doc(a=[1, None], b=[1, None], c=[1, None]))
    monkeypatch.setattr(storage_module, "MAX_STORED_GROUPS", 2)
    assert_refuses(tmp_path, "3 groups, more than the limit of 2")


def small_v3_file(directory: Path) -> bytes:
    with FileStorage(directory) as storage:
        storage.save_groups(DEFAULT, {"a": A1, "b": HardState(term=12)})
    return (directory / "state.json").read_bytes()


def test_truncation_at_every_offset_is_detected(tmp_path: Path) -> None:
    data = small_v3_file(tmp_path)
    for length in range(len(data)):
        (tmp_path / "state.json").write_bytes(data[:length])
        assert_refuses(tmp_path, "corrupt")


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    data = small_v3_file(tmp_path)
    with FileStorage(tmp_path) as storage:  # load() reads the file again each time
        for index in range(len(data)):
            for bit in range(8):
                corrupted = bytearray(data)
                corrupted[index] ^= 1 << bit
                (tmp_path / "state.json").write_bytes(bytes(corrupted))
                with pytest.raises(StorageError):
                    storage.load()
        (tmp_path / "state.json").write_bytes(data)
        assert storage.load() == DEFAULT  # the same storage still reads the intact file


# --- limits and argument checks ------------------------------------------------------------------------


def test_more_than_max_stored_groups_is_refused_on_save(tmp_path: Path) -> None:
    at_limit = {f"g{n}": HardState(term=1) for n in range(MAX_STORED_GROUPS)}
    memory = MemoryStorage()
    with FileStorage(tmp_path) as storage:
        storage.load()
        storage.save_groups(DEFAULT, dict(list(at_limit.items())[:10]))
        before = (tmp_path / "state.json").read_bytes()
        for store in (memory, storage):
            saves = memory.saves
            with pytest.raises(StorageError) as info:
                store.save_groups(LATER, {**at_limit, "one-more": HardState(term=1)})
            assert f"{MAX_STORED_GROUPS + 1} election groups" in str(info.value)
            assert f"at most {MAX_STORED_GROUPS}" in str(info.value)
            assert memory.saves == saves  # a refused save is not counted, and changes nothing
        assert (tmp_path / "state.json").read_bytes() == before
        assert storage.load_groups() == dict(list(at_limit.items())[:10])
        assert storage.load() == DEFAULT
    assert memory.load_groups() == {}
    # Exactly the limit is fine, and a group at term 0 with no vote does not count.
    memory.save_groups(LATER, {**at_limit, "new": HardState()})
    assert len(memory.load_groups()) == MAX_STORED_GROUPS
    with pytest.raises(StorageError, match="election groups"):
        MemoryStorage(groups={**at_limit, "one-more": HardState(term=1)})


def test_limit_counts_groups_kept_plus_new_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "MAX_STORED_GROUPS", 3)
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1, "b": B1})
        storage.save_groups(DEFAULT, {"a": A2, "c": C1})  # 3 groups: at the limit
        with pytest.raises(StorageError, match=r"4 election groups.*at most 3"):
            storage.save_groups(LATER, {"d": A1})
        storage.save_groups(LATER, {"a": HardState(), "d": A1})  # one leaves as another comes
        assert storage.load_groups() == {"b": B1, "c": C1, "d": A1}


@pytest.mark.parametrize("name", ["", "a b", "x" * (MAX_GROUP_NAME + 1), "caf\u00e9", 7, None, b"a"])
def test_save_groups_refuses_a_bad_name(tmp_path: Path, name: object) -> None:
    memory = MemoryStorage()
    with FileStorage(tmp_path) as storage:
        for store in (memory, storage):
            with pytest.raises(ValueError, match="invalid group name"):
                store.save_groups(DEFAULT, {"ok": A1, name: A1})  # type: ignore[dict-item]
    assert memory.saves == 0 and memory.load_groups() == {} and memory.load() == HardState()
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize(
    ("state", "groups", "error", "match"),
    [
        (DEFAULT, {"a": HardState(term=1, config=CONFIG)}, ValueError, "config must be None"),
        (DEFAULT, {"a": (1, None)}, TypeError, "HardState"),
        (DEFAULT, [("a", A1)], TypeError, "mapping"),
        (DEFAULT, None, TypeError, "mapping"),
        ((7, 3), {"a": A1}, TypeError, "HardState"),
    ],
)
def test_save_groups_refuses_bad_states(
    tmp_path: Path, state: object, groups: object, error: type[Exception], match: str,
) -> None:
    memory = MemoryStorage()
    with FileStorage(tmp_path) as storage:
        for store in (memory, storage):
            with pytest.raises(error, match=match):
                store.save_groups(state, groups)  # type: ignore[arg-type]
    assert memory.saves == 0 and memory.load_groups() == {}
    assert not (tmp_path / "state.json").exists()


def test_closed_file_storage_refuses_groups(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.load_groups()
    with pytest.raises(StorageError, match="closed"):
        storage.save_groups(DEFAULT, {"a": A1})


# --- batching: one write and one fsync however many groups changed -------------------------------------


def test_one_save_of_1000_groups_is_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real_fsync, real_write, real_replace = os.fsync, os.write, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync_dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync_file")
        real_fsync(fd)

    def write(fd: int, data: Any) -> int:
        calls.append("write")
        return real_write(fd, data)

    def replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    groups = {f"group-{n}": HardState(term=n + 1, voted_for=n % 5 + 1) for n in range(1000)}
    with FileStorage(tmp_path) as storage:
        storage.load()
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", fsync)
            patch.setattr(os, "write", write)
            patch.setattr(os, "replace", replace)
            storage.save_groups(DEFAULT, groups)
            assert calls == ["write", "fsync_file", "replace", "fsync_dir"]
            calls.clear()
            storage.save(LATER)  # the default group alone costs the same
            assert calls == ["write", "fsync_file", "replace", "fsync_dir"]
    assert load_fresh(tmp_path) == (LATER, groups)


def test_memory_storage_counts_one_save_per_batch() -> None:
    memory = MemoryStorage()
    memory.save_groups(DEFAULT, {f"g{n}": HardState(term=1) for n in range(1000)})
    assert memory.saves == 1
    memory.save(LATER)
    assert memory.saves == 2


def test_failed_save_groups_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save_groups(DEFAULT, {"a": A1})
        before = (tmp_path / "state.json").read_bytes()

        def failing_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", failing_fsync)
            with pytest.raises(StorageError, match="previous state file is intact"):
                storage.save_groups(LATER, {"a": A2, "b": B1})
        assert (tmp_path / "state.json").read_bytes() == before
        assert storage.load_groups() == {"a": A1}  # what the file holds
    assert load_fresh(tmp_path) == (DEFAULT, {"a": A1})


# --- MemoryStorage ---------------------------------------------------------------------------------------


def test_memory_storage_groups_is_a_read_only_snapshot() -> None:
    memory = MemoryStorage(DEFAULT, groups={"a": A1, "b": HardState()})
    assert memory.load() == DEFAULT
    snapshot = memory.groups
    assert dict(snapshot) == {"a": A1}
    with pytest.raises(TypeError):
        snapshot["b"] = B1  # type: ignore[index]
    memory.save_groups(DEFAULT, {"b": B1})
    assert dict(snapshot) == {"a": A1}  # a snapshot: later saves do not change it
    assert dict(memory.groups) == {"a": A1, "b": B1}
    assert memory.saves == 1
    assert "groups=2" in repr(memory) and "saves=1" in repr(memory)


def test_memory_storage_constructor_checks_groups() -> None:
    with pytest.raises(ValueError, match="invalid group name"):
        MemoryStorage(groups={"": A1})
    with pytest.raises(ValueError, match="config must be None"):
        MemoryStorage(groups={"a": DEFAULT})


# --- a Storage subclass written before groups ------------------------------------------------------------


class OnlyDefault(Storage):
    """A third-party storage that implements only load and save."""

    def __init__(self) -> None:
        self.saved: list[HardState] = []

    def load(self) -> HardState:
        return self.saved[-1] if self.saved else HardState()

    def save(self, state: HardState) -> None:
        self.saved.append(state)


def test_a_storage_without_groups_loads_none() -> None:
    storage = OnlyDefault()
    assert storage.load() == HardState()
    assert storage.load_groups() == {}


def test_a_storage_without_groups_refuses_to_save_one() -> None:
    storage = OnlyDefault()
    with pytest.raises(StorageError) as info:
        storage.save_groups(DEFAULT, {"scheduler": A1, "cron": HardState()})
    message = str(info.value)
    assert "OnlyDefault keeps only the default group" in message
    assert "'scheduler'" in message and "'cron'" not in message  # only groups with a state to keep
    assert "FileStorage" in message and "MemoryStorage" in message
    assert storage.saved == []  # nothing saved, not even the default group's state


def test_a_storage_without_groups_names_a_few_of_many_groups() -> None:
    with pytest.raises(StorageError, match=r"'g0', 'g1', 'g10', 'g11', 'g12' and 15 more"):
        OnlyDefault().save_groups(DEFAULT, {f"g{n}": A1 for n in range(20)})


def test_a_storage_without_groups_saves_the_default_group_when_no_group_has_a_state() -> None:
    storage = OnlyDefault()
    storage.save_groups(DEFAULT, {})
    storage.save_groups(LATER, {"a": HardState()})
    assert storage.saved == [DEFAULT, LATER]
    with pytest.raises(ValueError, match="invalid group name"):
        storage.save_groups(DEFAULT, {"a b": HardState()})
    with pytest.raises(TypeError, match="HardState"):
        storage.save_groups((1, 2), {})  # type: ignore[arg-type]
    assert storage.saved == [DEFAULT, LATER]
