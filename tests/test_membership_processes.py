"""Membership changes between real member processes on 127.0.0.1, over UDP and over ZeroMQ (thesis ch. 4).

Changes go through the leader's admin channel, the way an operator makes them: the command line
``raft-election members add|remove ... --cluster FILE`` in a subprocess, or its Python function
:func:`raft_election.memberscmd.change_members`; both find the leader through the cluster file's
``[admin]`` table.  A new member runs with a cluster file of its own (the current members and itself) and
``--join``.  After each change the operator rewrites the seed list (:class:`ClusterLayout`).

Each test then checks, with the one invariant checker (:mod:`raft_election.invariants`), the members' own
event lines: one leader per term, no two lease holders at one instant, one vote per term, and for the
configuration entries the members reported (``membership`` events) single-server changes from committed
parents, no committed entry rolled back and no version naming two entries; with a lock worker, that the
fenced resource accepted tokens in increasing order, each from a member that won that term.  Every
process is started by the test's fixture and ended by PID in its finalizer, also when the test fails.

A longer run that keeps replacing members while a lock worker writes: ``RAFT_MEMBERSHIP_SOAK_SECONDS=300
python -m pytest tests/test_membership_processes.py -k soak``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional

import pytest

from raft_election.admin import AdminError, query
from raft_election.clusterfile import load_cluster_file
from raft_election.invariants import SafetyChecker, replay_member_events
from raft_election.memberscmd import change_members
from raft_election.processes import (
    LOCK_WORKER,
    ClusterLayout,
    MemberEvent,
    MemberProcesses,
    fenced_writes,
    member_configuration,
)
from tests.test_processes import check_safe

TRANSPORTS = ["udp", "zmq"]
TIMEOUT = (0.150, 0.300)
#: Waits that should end in well under a second; only there so a broken build fails instead of hanging.
PATIENCE = 30.0
SECRET = "membership tests: an admin secret"
#: Seconds a change may take to commit before the admin channel answers ``timeout``.
CHANGE_TIMEOUT = 20.0
SOAK_SECONDS = float(os.environ.get("RAFT_MEMBERSHIP_SOAK_SECONDS", "0"))


class Cluster:
    """Member processes whose membership changes, with the operator's view of the members.

    ``members`` is the configuration the test has made so far (what the operator's cluster file lists);
    ``killed_at`` the SIGKILL times, to close killed leaders' lease intervals.
    """

    def __init__(self, layout: ClusterLayout, processes: MemberProcesses, members: Iterable[int], *,
                 secret: Optional[bytes], fenced: Optional[str]) -> None:
        self.layout = layout
        self.processes = processes
        self.members = set(members)
        self.seed = frozenset(members)
        self.secret = secret
        self.fenced = fenced
        self.killed_at: dict[int, list[float]] = {}

    @property
    def file(self) -> str:
        """The operator's cluster file (the seed list, rewritten after each change)."""
        return self.layout.path

    # ------------------------------------------------------------------ processes

    def leader_elected(self, since: int = 0, exclude: Iterable[int] = ()) -> MemberEvent:
        excluded = set(exclude)
        return self.processes.wait_for(lambda e: e.event == "became_leader" and e.node not in excluded,
                                       PATIENCE, since)

    def leader_now(self) -> MemberEvent:
        """The ``became_leader`` event of the leader that every live member names now.

        The first election's winner may have lost office since (a busy machine delays heartbeats past an
        election timeout now and then): a test that acts on "the leader" asks who leads now.
        """
        self.leader_elected()
        _, leader, term = self._converge(self.members)
        won = (leader, term)
        return self.processes.wait_for(lambda e: e.event == "became_leader" and (e.node, e.term) == won,
                                       PATIENCE)

    def kill(self, node_id: int) -> float:
        at = self.processes.kill(node_id)
        self.killed_at.setdefault(node_id, []).append(at)
        return at

    def join(self, node_id: int) -> None:
        """Start new member ``node_id`` with ``--join`` and a file listing the current members and itself."""
        since = self.processes.mark()
        path = self.layout.joiner_file(node_id, self.members)
        self.processes.start(node_id, cluster_file=path, join=True)
        started = self.processes.wait_for(lambda e: e.node == node_id and e.event == "started", PATIENCE,
                                          since)
        assert started.record["voter"] is False, "a joining member must not count itself yet"

    def live(self) -> list[int]:
        return [node for node in self.processes.member_ids if self.processes.alive(node)]

    # ------------------------------------------------------------------ the operator

    def cli(self, *words: str) -> subprocess.CompletedProcess[str]:
        """``raft-election members WORDS... --cluster FILE`` as an operator runs it."""
        return subprocess.run([sys.executable, "-m", "raft_election", "members", *words, "--cluster",
                               self.file], capture_output=True, text=True, timeout=120, check=False)

    def cli_change(self, kind: str, node_id: int) -> Mapping[str, Any]:
        """Add (at its layout address) or remove ``node_id`` with the command line; then update the file."""
        words = [kind, str(node_id)] + ([self.layout.addresses[node_id]] if kind == "add" else [])
        result = self.cli(*words, "--timeout", str(CHANGE_TIMEOUT), "--json")
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        answer: dict[str, Any] = json.loads(result.stdout)
        assert answer["ok"] and answer["changed"], answer
        assert (str(node_id) in answer["members"]) == (kind == "add"), answer
        self._changed(kind, node_id)
        return answer

    def change(self, kind: str, node_id: int) -> Mapping[str, Any]:
        """Add or remove ``node_id`` with the Python function; then update the operator's file."""
        answer = change_members(load_cluster_file(self.file), kind, node_id,
                                self.layout.addresses[node_id] if kind == "add" else None,
                                secret=self.secret, timeout=CHANGE_TIMEOUT)
        self._changed(kind, node_id)
        return answer

    def _changed(self, kind: str, node_id: int) -> None:
        (self.members.add if kind == "add" else self.members.discard)(node_id)
        self.layout.write(self.members)

    def removed(self, node_id: int) -> None:
        """Note a removal made on a member's admin channel directly: update the operator's file."""
        self._changed("remove", node_id)

    def ask(self, node_id: int, op: str = "members", **params: Any) -> dict[str, Any]:
        """Ask member ``node_id``'s admin channel directly."""
        return query(self.layout.admin[node_id], op, secret=self.secret, timeout=5.0, params=params or None)

    def wait_converged(self, members: Iterable[int], nodes: Optional[Iterable[int]] = None) -> int:
        """Wait until every live member of ``nodes`` (default: of ``members``) uses the entry listing exactly
        ``members``, the same entry everywhere, knows it committed and names one leader; return its index.

        Status polling over the admin channel with a generous deadline: the members learn the commit with
        the next heartbeat.
        """
        return self._converge(members, nodes)[0]

    def _converge(self, members: Iterable[int],
                  nodes: Optional[Iterable[int]] = None) -> tuple[int, int, Optional[int]]:
        """:meth:`wait_converged`, returning ``(index, leader, term)``.

        ``term`` is the one the leader itself answered with (None if it was not among those asked).
        """
        listed = set(members)
        wanted = {str(member) for member in listed}
        asked = sorted(set(listed if nodes is None else nodes) & set(self.live()))
        deadline = time.monotonic() + PATIENCE
        while True:
            answers: dict[int, Any] = {}
            for node in asked:
                try:
                    answers[node] = self.ask(node)
                except AdminError as exc:
                    answers[node] = str(exc)
            views = {(tuple(sorted(a["members"])), a["configuration"]["index"], a["configuration"]["term"],
                      a["configuration"]["committed"], a["leader_id"])
                     for a in answers.values() if isinstance(a, dict)}
            if len(views) == 1 and len(answers) == len(asked):
                members_seen, index, _, committed, leader = next(iter(views))
                if set(members_seen) == wanted and committed and leader is not None:
                    own = answers.get(leader)
                    return int(index), leader, int(own["term"]) if isinstance(own, dict) else None
            if time.monotonic() > deadline:
                raise AssertionError(f"the members did not converge on {sorted(wanted)}: {answers}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ the checker

    def check(self) -> SafetyChecker:
        """Everything the members reported, through the one checker (see the module docstring)."""
        events = self.processes.events
        safety = replay_member_events(events, kills=self.killed_at)
        replay_configurations(safety, events, self.seed)
        won = {(e.node, e.term) for e in events if e.event in ("became_leader", "lease_regained")}
        if self.fenced is not None:
            writes = fenced_writes(self.fenced)
            for write in writes:
                safety.wrote(write.node, write.token, write.at, accepted=True)
            stranger = [w for w in writes if (w.node, w.token) not in won]
            assert not stranger, f"accepted writes whose token the writer never won: {stranger[:5]}"
        check_safe(safety)
        terms = [lead.term for lead in safety.intervals() if not lead.resumed]
        assert terms == sorted(terms) and len(set(terms)) == len(terms), f"terms not increasing: {terms}"
        return safety


def replay_configurations(safety: SafetyChecker, events: Iterable[MemberEvent], seed: Iterable[int]) -> None:
    """Feed ``safety`` the configuration entries in the members' ``membership`` events, by time.

    An event with a ``parent`` is its leader creating the entry; one reporting ``committed`` is a commit
    (the first report counts); each ``became_leader`` is checked against the entry its member used then
    (its latest ``membership`` event, else the seed).
    """
    safety.seed_configuration(seed)
    latest: dict[int, tuple[int, int]] = {}
    facts = sorted((e for e in events if e.event in ("membership", "became_leader")),
                   key=lambda e: e.monotonic)
    for event in facts:
        if event.event == "became_leader":
            safety.leader_configuration(event.node, event.term, latest.get(event.node, (0, 0)),
                                        event.monotonic)
            continue
        record = event.record
        version = (int(record["configuration_term"]), int(record["index"]))
        latest[event.node] = version
        parent = record.get("parent")
        if parent is not None:
            safety.configuration_created(event.node, version, (int(parent[0]), int(parent[1])),
                                         [int(member) for member in record["members"]], event.monotonic)
        if record.get("committed"):
            safety.configuration_committed(event.node, version, event.monotonic)


def _membership(node: int, at: float, version: tuple[int, int], members: Iterable[int], *,
                parent: Optional[tuple[int, int]] = None, committed: bool = False) -> MemberEvent:
    record = {"event": "membership", "node": node, "term": version[0], "leader": None, "monotonic": at,
              "members": {str(member): f"127.0.0.1:{9000 + member}" for member in members},
              "index": version[1], "configuration_term": version[0], "committed": committed,
              "parent": None if parent is None else list(parent)}
    return MemberEvent(node=node, event="membership", term=version[0], leader=None, monotonic=at,
                       record=record, received=at)


def test_the_replay_of_membership_events_finds_a_rolled_back_and_a_conflicting_entry():
    """The events the tests feed the checker are read: a committed change that a later entry does not
    descend from, and one version naming two entries, are both found."""
    events = [
        _membership(1, 1.0, (1, 1), [1, 2, 3, 4], parent=(0, 0)),
        _membership(1, 1.1, (1, 1), [1, 2, 3, 4], committed=True),
        _membership(2, 2.0, (2, 1), [1, 2, 3], parent=(0, 0)),  # from the seed: does not descend from (1, 1)
        _membership(3, 3.0, (2, 1), [1, 3], parent=(0, 0)),  # the same version, another entry
    ]
    safety = SafetyChecker()
    replay_configurations(safety, events, [1, 2, 3])
    assert {finding.kind for finding in safety.findings} >= {"config_rollback", "config_conflict"}


def accepted_write(after: float = float("-inf")) -> Callable[[MemberEvent], bool]:
    """A predicate: a lock worker's write that the fenced resource accepted, reported after ``after``."""
    return lambda e: e.event == "write" and e.record["accepted"] and e.monotonic > after


@pytest.fixture
def cluster(tmp_path) -> Iterator[Callable[..., Cluster]]:
    made: list[MemberProcesses] = []

    def make(transport: str, size: int, *, workers: bool = False, secret: Optional[str] = None,
             **settings: Any) -> Cluster:
        settings.setdefault("election_timeout", TIMEOUT)
        settings.setdefault("cluster", "membership-test")
        if secret is not None:
            settings["secret"] = secret
        layout = ClusterLayout(str(tmp_path), transport, **settings)
        ids = list(range(1, size + 1))
        path = layout.write(ids)
        fenced = str(tmp_path / "fenced.txt") if workers else None
        processes = MemberProcesses(path, str(tmp_path), ids,
                                    module=LOCK_WORKER if workers else "raft_election",
                                    run_args=["--fenced", fenced] if fenced is not None else ())
        made.append(processes)
        processes.start_all()
        return Cluster(layout, processes, ids, secret=None if secret is None else secret.encode(),
                       fenced=fenced)

    yield make
    for processes in made:
        processes.close()


# ---------------------------------------------------------------------------- grow 3 -> 5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_grow_from_three_to_five_while_a_lock_holder_writes(cluster, transport):
    """Two members join with the command line while the holder keeps writing; then the new majority (the
    holder and the two new members) alone keeps the lock: with two original members stopped, it is
    still held and written to, which no majority of the three could have allowed."""
    c = cluster(transport, 3, workers=True, secret=SECRET)
    p = c.processes
    holder = p.wait_for(lambda e: e.event == "acquired", PATIENCE)
    p.wait_for(accepted_write(), PATIENCE)
    for new in (4, 5):
        since = p.mark()
        c.join(new)
        c.cli_change("add", new)
        p.wait_for(member_configuration(new, c.members, committed=True), PATIENCE, since)
    index = c.wait_converged({1, 2, 3, 4, 5})
    assert index >= 3  # the holder's stamp of its term, then one entry per added member
    listed = c.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert set(shown["members"]) == {"1", "2", "3", "4", "5"} and shown["configuration"]["committed"], shown

    since = p.mark()
    p.wait_for(accepted_write(), PATIENCE, since)  # the holder works on after the changes
    # Stop two of the original three (not the current holder): the holder and members 4 and 5 are three of
    # five, a majority of the new configuration only.
    current = p.wait_for(accepted_write(), PATIENCE, since).node
    stopped = [node for node in (1, 2, 3) if node != current][:2]
    paused_at = max(p.pause(node) for node in stopped)
    # A lease lasts less than election_timeout_min; a write accepted two maximum timeouts later was made
    # under a lease that acknowledgements from the new members renewed.
    later = p.wait_for(accepted_write(after=paused_at + 2 * TIMEOUT[1]), PATIENCE, p.mark())
    for node in stopped:
        p.resume(node)
    assert holder.record["token"] <= later.record["token"]
    c.check()


# ---------------------------------------------------------------------------- the leader dies mid-change


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_leader_killed_while_an_add_is_pending_leaves_one_configuration(cluster, transport):
    """The leader creates the entry adding member 4, which cannot commit (both followers are stopped), and
    is killed.  The survivors elect a new leader; the entry is then committed everywhere or nowhere, and
    the add, retried on the new leader, succeeds."""
    c = cluster(transport, 3, election_timeout=(0.3, 0.6))
    p = c.processes
    first = c.leader_now()
    leader = first.node
    followers = [node for node in (1, 2, 3) if node != leader]
    c.join(4)
    p.pause(4)  # the add waits in catch-up until 4 answers: after the leader's stamp of its term committed
    answers: list[Any] = []

    def add() -> None:
        try:
            answers.append(c.ask(leader, "add_member", id=4, address=c.layout.addresses[4],
                                 timeout=CHANGE_TIMEOUT))
        except AdminError as exc:
            answers.append(exc)

    since = p.mark()
    adding = threading.Thread(target=add, daemon=True)
    adding.start()
    p.wait_for(lambda e: e.node == leader and e.event == "membership" and e.record["committed"]
               and e.record["configuration_term"] == first.term, PATIENCE, since)
    for node in followers:
        p.pause(node)
    p.resume(4)
    pending = p.wait_for(member_configuration(leader, {1, 2, 3, 4}, committed=False), PATIENCE, since)
    assert pending.record["parent"] is not None  # the leader created it
    c.kill(leader)
    adding.join(PATIENCE)
    assert answers and isinstance(answers[0], AdminError), answers  # the connection died with the leader
    since = p.mark()
    for node in followers:
        p.resume(node)
    second = c.leader_elected(since, exclude=(leader,))
    assert second.term > first.term
    members = {int(m) for m in c.ask(second.node)["members"]}
    assert members in ({1, 2, 3}, {1, 2, 3, 4}), members  # the pending entry was kept or replaced
    # Retry on the new leader, found through the file, which now lists 4 too (it may lead already): it
    # adds 4, or finds it added already.
    c.layout.write(c.members | {4})
    answer = c.change("add", 4)
    assert {int(m) for m in answer["members"]} == {1, 2, 3, 4}
    c.wait_converged({1, 2, 3, 4})
    c.check()


# ---------------------------------------------------------------------------- replace a dead member


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_killed_member_is_replaced_by_a_fresh_one_on_a_new_port(cluster, transport):
    """The README's procedure with the command line: remove the dead id, start the new member with
    ``--join``, add it.  Then the new member counts: with the old leader killed too, the remaining original
    member and the new one elect a leader (two of three)."""
    c = cluster(transport, 3)
    p = c.processes
    leader = c.leader_now().node
    dead = max(node for node in (1, 2, 3) if node != leader)
    c.kill(dead)
    c.cli_change("remove", dead)
    since = p.mark()
    c.join(4)
    c.cli_change("add", 4)
    p.wait_for(member_configuration(4, c.members, committed=True), PATIENCE, since)
    assert c.layout.addresses[4] != c.layout.addresses[dead]
    c.wait_converged(c.members)
    since = p.mark()
    c.kill(leader)
    survivor = c.leader_elected(since, exclude=(leader,))
    assert survivor.node in c.members
    c.wait_converged(c.members, nodes=c.members - {leader})
    c.check()


# ---------------------------------------------------------------------------- remove the leader


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_leader_removes_itself_commits_then_hands_over(cluster, transport):
    c = cluster(transport, 3)
    p = c.processes
    while True:
        first = c.leader_now()
        since = p.mark()
        try:  # the leader itself is asked, so it is the leader that is removed
            answer = c.ask(first.node, "remove_member", id=first.node, timeout=CHANGE_TIMEOUT)
        except AdminError as exc:
            if exc.kind != "not_leader":
                raise
            continue  # it lost office just before: ask the next leader
        break
    c.removed(first.node)
    assert str(first.node) not in answer["members"]
    # Thesis §4.2.2: it commits the entry without itself first, then hands over (or steps aside).
    removal = p.wait_for(member_configuration(first.node, c.members, committed=True), PATIENCE, since)
    lost = p.wait_for(lambda e: e.node == first.node and e.event == "lost_leadership", PATIENCE, since)
    assert removal.monotonic <= lost.monotonic and lost.record["reason"] in ("transfer", "resign"), lost
    second = c.leader_elected(since, exclude=(first.node,))
    assert second.node in c.members and second.term > first.term
    assert lost.record["lease_end"] <= second.monotonic
    c.wait_converged(c.members)
    status = c.ask(first.node)
    assert status["voter"] is False and status["leader_id"] != first.node
    assert p.terminate(first.node) == 0
    assert not [e for e in p.events[since:] if e.event == "became_leader" and e.node == first.node]
    c.check()


# ---------------------------------------------------------------------------- shrink 5 -> 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shrink_from_five_to_three_then_survive_a_leader_crash(cluster, transport):
    """Two followers are removed and stopped; then the leader is killed, and the two left elect a leader:
    two of three is a majority, two of five would not have been."""
    c = cluster(transport, 5)
    p = c.processes
    leader = c.leader_now().node
    for gone in [node for node in (1, 2, 3, 4, 5) if node != leader][:2]:
        c.change("remove", gone)
        assert p.terminate(gone) == 0
    c.wait_converged(c.members)
    since = p.mark()
    c.kill(leader)
    survivor = c.leader_elected(since, exclude=(leader,))
    assert survivor.node in c.members - {leader}
    c.check()


# ---------------------------------------------------------------------------- soak (on demand)


@pytest.mark.skipif(SOAK_SECONDS <= 0, reason="set RAFT_MEMBERSHIP_SOAK_SECONDS to run the soak")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_soak_keeps_replacing_members_while_a_lock_holder_writes(cluster, transport):
    """Round after round: a fresh member joins and is added, then the oldest member is removed (the
    leader too, when it is the oldest) and stopped, or now and then SIGKILLed first; the lock workers
    keep writing throughout.  The checker runs on the whole history at the end."""
    c = cluster(transport, 3, workers=True)
    p = c.processes
    p.wait_for(accepted_write(), PATIENCE)
    next_id = 4
    rounds = 0
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        c.join(next_id)
        c.change("add", next_id)
        oldest = min(c.members)
        if rounds % 3 == 2:
            c.kill(oldest)
        c.change("remove", oldest)
        if p.alive(oldest):
            assert p.terminate(oldest) == 0
        c.wait_converged(c.members)
        since = p.mark()
        p.wait_for(accepted_write(), PATIENCE, since)
        next_id += 1
        rounds += 1
    c.check()
    assert rounds > 0
