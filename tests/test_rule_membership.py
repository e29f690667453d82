"""Thesis chapter 4, cluster membership changes, with the configuration as a log of one entry.

The rules are stated in :mod:`raft_election.membership`; each test below drives :class:`RaftCore` through
its public entry points and fails if one rule breaks:

* §4.1: one server added or removed per change; each server uses the latest entry it has, committed or
  not; an entry commits once a majority of *its own* members stored it; one uncommitted change at a time.
* Thesis errata (raft-dev, 2015): a new leader first commits an entry of its own term (a stamp of the
  configuration it inherited) before it makes a change.
* Raft §5.4.1 for a log of one entry: votes carry the candidate's entry version; a voter with a newer
  entry refuses, and tells the candidate its entry.
* §4.2.1: a new member is caught up (answers a heartbeat round) before the entry listing it exists, and
  never campaigns before an entry listing it reaches it.
* §4.2.2: a leader may remove itself: it stops counting itself while the entry is pending, and hands over
  once it commits.
* §4.2.3: servers outside the configuration cannot raise anyone's term; removed members learn of their
  removal from the heartbeats that keep going to them until the entry commits.
* The entry is persisted with the term and vote in one write, before it is acknowledged.

The last test is a Hypothesis property over five cores on a lossy network (losses, reordering, partitions,
restarts, false death evidence, adds and removes): committed entries are never rolled back, changes are
one server at a time on a committed entry, one leader and one vote per term, at most one lease holder.
``HYPOTHESIS_PROFILE=thorough`` runs 5,000 fresh examples (about a minute) instead of 300 fixed ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.core import Output, RaftCore
from raft_election.errors import (
    ConfigError,
    MembershipChangeError,
    NotLeaderError,
    RaftElectionError,
)
from raft_election.events import LostLeadership, MembershipChanged, RoleChanged, VoteGranted
from raft_election.membership import Configuration, Version
from raft_election.messages import (
    MAX_MEMBERS,
    Heartbeat,
    HeartbeatResponse,
    Message,
    Resign,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from raft_election.roles import Role
from raft_election.storage import HardState
from tests.conftest import examples
from tests.coretools import (
    STEP,
    config_of,
    elect,
    events,
    grant,
    lease_of,
    make_config,
    make_core,
    messages,
    only,
    recipients,
)

START = 1.0  # when the leaders built here win (a core made at 0 is past its start's stickiness by then)
TERM = 4  # the stored term of those leaders: they lead TERM + 1
LATER = 1.0  # for followers made at 0: outside the stickiness window of their start (thesis §4.2.3)


# ---------------------------------------------------------------------- helpers


def addr(node_id: int) -> str:
    """The address :func:`tests.coretools.make_config` gives ``node_id``."""
    return f"test:{node_id}"


def entry(term: int, index: int, members: Iterable[int]) -> Configuration:
    """A configuration entry listing ``members`` at their test addresses."""
    return Configuration(term=term, index=index, members={member: addr(member) for member in members})


def stored(beat: Heartbeat, candidate: bool = True) -> HeartbeatResponse:
    """A follower's answer to ``beat`` once it stored the entry the heartbeat names."""
    return HeartbeatResponse(term=beat.term, round=beat.round, candidate=candidate,
                             config_term=beat.config_term, config_index=beat.config_index)


def holding(beat: Heartbeat, version: Version) -> HeartbeatResponse:
    """A follower's answer to ``beat`` while it holds the entry ``version`` (not necessarily the beat's)."""
    return HeartbeatResponse(term=beat.term, round=beat.round, candidate=True, config_term=version[0],
                             config_index=version[1])


def beat_to(out: Output, peer: int) -> Heartbeat:
    """The one heartbeat ``out`` sends to ``peer``."""
    return only(messages(out, Heartbeat, to=peer))


def last_beat(outputs: Iterable[Output], peer: int) -> Heartbeat:
    """The newest heartbeat sent to ``peer`` in ``outputs``."""
    beats = [beat for out in outputs for beat in messages(out, Heartbeat, to=peer)]
    assert beats, f"no heartbeat to {peer}"
    return beats[-1]


def leader(members: int | Iterable[int] = 3, hard_state: Optional[HardState] = None,
           voters: Optional[Iterable[int]] = None, **overrides: Any) -> RaftCore:
    """Node 1, elected at START in term TERM + 1 (or its stored term + 1) by ``voters`` (default: just
    enough of the lowest peers)."""
    core = make_core(members=members, hard_state=hard_state or HardState(term=TERM), **overrides)
    elect(core, now=START, voters=voters)
    return core


def settle(core: RaftCore, out: Output, now: float, answering: Iterable[int],
           candidate: bool = True) -> list[Output]:
    """Let the peers in ``answering`` answer every heartbeat the leader sends them, storing its entry,
    until it sends no more; return ``out`` and every output produced on the way, in order.  ``candidate``
    is what the answers say about their senders standing for election."""
    peers = set(answering)
    outputs = [out]
    queue = [(o.to, o.message) for o in out.messages if isinstance(o.message, Heartbeat) and o.to in peers]
    while queue:
        peer, beat = queue.pop(0)
        assert isinstance(beat, Heartbeat)
        reply = core.receive(peer, stored(beat, candidate), now)
        outputs.append(reply)
        queue += [(o.to, o.message) for o in reply.messages
                  if isinstance(o.message, Heartbeat) and o.to in peers]
    return outputs


def stamped_leader() -> RaftCore:
    """Leader 1 of 1-3 whose stamp of its term is committed, so that its next change begins at once.

    (A stamp is made only for a change: ask for one, give it up, and let 2 and 3 store the stamp.)
    """
    core = leader()
    out = core.add_member(9, addr(9), START)
    core.abandon_change(9, START)
    settle(core, out, START, answering=[2, 3])
    assert core.configuration.version == (TERM + 1, 1) and core.configuration_committed
    return core


def add(core: RaftCore, node_id: int, now: float, answering: Optional[Iterable[int]] = None) -> list[Output]:
    """``add_member(node_id)`` carried through by ``answering`` (default: every member and the new one)."""
    if answering is None:
        answering = [*core.configuration.members, node_id]
    return settle(core, core.add_member(node_id, addr(node_id), now), now, answering)


def remove(core: RaftCore, node_id: int, now: float,
           answering: Optional[Iterable[int]] = None) -> list[Output]:
    """``remove_member(node_id)`` carried through by ``answering`` (default: every member)."""
    if answering is None:
        answering = list(core.configuration.members)
    return settle(core, core.remove_member(node_id, now), now, answering)


def win(core: RaftCore, now: float) -> float:
    """Make ``core`` leader with every peer granting every (pre-)vote it asks for; return the time."""
    now = max(now, core.next_deadline)
    queue = [(o.to, o.message) for o in core.tick(now).messages if isinstance(o.message, VoteRequest)]
    while core.role is not Role.LEADER:
        assert queue, f"{core!r} ran out of vote requests"
        peer, request = queue.pop(0)
        assert isinstance(request, VoteRequest)
        out = core.receive(peer, grant(request), now)
        queue += [(o.to, o.message) for o in out.messages if isinstance(o.message, VoteRequest)]
    return now


def membership_events(outputs: Output | Iterable[Output]) -> list[tuple[Version, bool, Optional[Version]]]:
    """The MembershipChanged events as ``(version, committed, parent)``, in order."""
    return [(event.configuration.version, event.committed, event.parent)
            for event in events(outputs, MembershipChanged) if isinstance(event, MembershipChanged)]


def campaign_requests(core: RaftCore, rounds: int = 20) -> list[VoteRequest]:
    """Tick ``core`` at its next ``rounds`` election deadlines with nobody answering; every VoteRequest
    it sends."""
    sent: list[VoteRequest] = []
    for _ in range(rounds):
        sent += messages(core.tick(core.election_deadline), VoteRequest)
    return sent


class Net:
    """Cores joined by a network with a fixed delay of one STEP (FIFO), for scenario tests: a message
    posted at ``t`` arrives at ``t + STEP``."""

    def __init__(self, cores: dict[int, RaftCore], now: float) -> None:
        self.cores = cores
        self.cut: set[tuple[int, int]] = set()
        self.in_flight: list[tuple[float, int, int, Message]] = []
        self.now = now
        self.delivered = 0

    def post(self, sender: int, out: Output, now: float) -> None:
        for o in out.messages:
            if (sender, o.to) not in self.cut and o.to in self.cores:
                self.in_flight.append((now + STEP, sender, o.to, o.message))

    def run_until(self, end: float) -> None:
        """Deliver what arrives and tick what is due, every STEP from now until ``end``."""
        t = self.now
        while t <= end:
            while self.in_flight and self.in_flight[0][0] <= t:
                _, sender, to, message = self.in_flight.pop(0)
                self.delivered += 1
                assert self.delivered < 100_000, "message storm"
                self.post(to, self.cores[to].receive(sender, message, t), t)
            for node_id, core in self.cores.items():
                if core.next_deadline <= t:
                    self.post(node_id, core.tick(t), t)
            self.now = t
            t += STEP


# ---------------------------------------------------------------------- 1. the stamp (thesis errata)


def test_a_new_leader_stamps_its_term_before_a_change() -> None:
    """Errata: before any change a new leader creates an entry of its own term with the members it
    inherited (next index), sends it to them, and holds the change back until it commits."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    stamp = entry(TERM + 1, 1, [1, 2, 3])
    assert core.configuration == stamp and not core.configuration_committed
    assert core.membership_change == "stamp" and core.catching_up is None
    assert sorted(recipients(out, Heartbeat)) == [2, 3]  # not yet to the new member
    assert {beat.members for beat in messages(out, Heartbeat)} == {stamp.as_pairs()}
    assert out.hard_state == HardState(term=TERM + 1, voted_for=1, config=stamp)
    assert membership_events(out) == [(stamp.version, False, (0, 0))]


def test_the_queued_change_begins_once_the_stamp_commits() -> None:
    """Errata: the change waits for the stamp; its commit (2 of 3 stored it) starts the change at once."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    core.receive(3, holding(beat_to(out, 3), (0, 0)), START)  # 3 has not stored the stamp: no commit
    assert core.membership_change == "stamp"
    reply = core.receive(2, stored(beat_to(out, 2)), START)
    assert core.configuration_committed and core.configuration.index == 1
    assert core.membership_change == "catch-up" and core.catching_up == 4
    assert sorted(recipients(reply, Heartbeat)) == [2, 3, 4]


def test_the_stamp_is_needed_once_per_term() -> None:
    """Errata: once an entry of its term is committed, later changes of the same leader start at once."""
    core = leader()
    add(core, 4, START)
    assert core.configuration == entry(TERM + 1, 2, [1, 2, 3, 4]) and core.configuration_committed
    core.remove_member(3, START)
    assert core.configuration == entry(TERM + 1, 3, [1, 2, 4])
    assert core.membership_change == "pending"


def test_an_inherited_entry_of_an_earlier_term_is_stamped_too() -> None:
    """Errata: an entry of an earlier term (here restored from storage) does not spare the stamp."""
    inherited = entry(2, 3, [1, 2, 3])
    core = leader(hard_state=HardState(term=TERM, config=inherited))
    core.add_member(4, addr(4), START)
    assert core.configuration == entry(TERM + 1, 4, [1, 2, 3])
    assert core.membership_change == "stamp"


def test_without_stamp_first_the_change_begins_at_once() -> None:
    """The switch the errata simulation uses: stamp_first=False makes the change without a stamp."""
    config = make_config(1, 3)
    core = RaftCore(config, HardState(term=TERM), 0.0, random.Random(1), stamp_first=False)
    now = win(core, START)
    out = core.add_member(4, addr(4), now)
    assert core.configuration.version == (0, 0)  # no entry of its own term first
    assert core.membership_change == "catch-up" and core.catching_up == 4
    assert sorted(recipients(out, Heartbeat)) == [2, 3, 4]
    core.receive(4, holding(beat_to(out, 4), (0, 0)), now)
    assert core.configuration == entry(TERM + 1, 1, [1, 2, 3, 4])


# ---------------------------------------------------------------------- 2. catching up a new member


def test_a_new_member_is_caught_up_before_its_entry_exists() -> None:
    """§4.2.1: the leader heartbeats the new member as a non-voting catch-up member; the members' answers
    do not create the entry, only the new member's answer does."""
    core = leader()
    outputs = settle(core, core.add_member(4, addr(4), START), START, answering=[2, 3])
    assert core.membership_change == "catch-up"
    assert 4 not in core.configuration  # 2 and 3 answered every round, 4 none
    assert 4 not in dict(last_beat(outputs, 4).members)  # it is told the members, without itself
    t = START
    for _ in range(3):  # more rounds: still waiting
        t += config_of(core).heartbeat_interval
        out = core.tick(t)
        assert 4 in recipients(out, Heartbeat)
        for peer in (2, 3):
            core.receive(peer, stored(beat_to(out, peer)), t)
        assert 4 not in core.configuration
    reply = core.receive(4, holding(beat_to(out, 4), (0, 0)), t)
    assert core.configuration == entry(TERM + 1, 2, [1, 2, 3, 4])
    assert core.membership_change == "pending" and core.catching_up is None
    assert {beat.members for beat in messages(reply, Heartbeat)} == {core.configuration.as_pairs()}
    assert membership_events(reply) == [((TERM + 1, 2), False, (TERM + 1, 1))]


def test_a_new_member_that_never_answers_is_abandoned_without_a_trace() -> None:
    """§4.2.1: a new member that does not answer leaves no entry behind; abandon_change drops the
    catch-up, the configuration stays as it was and the next change can begin."""
    core = leader()
    settle(core, core.add_member(4, addr(4), START), START, answering=[2, 3])
    before = core.configuration
    assert core.membership_change == "catch-up"
    out = core.abandon_change(4, START + STEP)
    assert core.configuration == before and core.configuration_committed
    assert core.membership_change is None and core.catching_up is None
    assert core.counters["membership_changes_abandoned"] == 1
    assert out.hard_state is None and out.messages == ()
    later = core.tick(START + 20 * STEP)
    assert 4 not in recipients(later, Heartbeat)
    core.remove_member(3, START + 20 * STEP)  # not busy any more
    assert core.configuration.members.keys() == {1, 2}


def test_abandoning_while_the_stamp_commits_drops_the_change_only() -> None:
    """The stamp already exists and commits as usual; the change it waited for never begins."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    core.abandon_change(4, START)
    assert core.membership_change == "stamp"  # the stamp itself pending, no longer a change waiting for it
    reply = core.receive(2, stored(beat_to(out, 2)), START)
    assert core.configuration == entry(TERM + 1, 1, [1, 2, 3]) and core.configuration_committed
    assert core.catching_up is None and 4 not in recipients(reply, Heartbeat)


def test_abandoning_another_member_changes_nothing() -> None:
    core = leader()
    settle(core, core.add_member(4, addr(4), START), START, answering=[2, 3])
    core.abandon_change(5, START)
    assert core.catching_up == 4 and core.counters["membership_changes_abandoned"] == 0


def test_extra_rounds_for_a_change_do_not_delay_the_regular_heartbeat() -> None:
    """A change sends its entry at once, between regular rounds; the next regular round still leaves one
    heartbeat interval after the last one, so followers and the lease keep their cadence."""
    core = leader()
    add(core, 4, START)  # four rounds at START: election, stamp, catch-up, the entry
    interval = config_of(core).heartbeat_interval
    assert core.next_deadline == START + interval
    assert sorted(recipients(core.tick(START + interval), Heartbeat)) == [2, 3, 4]


# ---------------------------------------------------------------------- 3. commitment


def test_an_added_member_makes_the_entry_need_three_of_four() -> None:
    """§4.1: the entry listing 1-4 commits once 3 of its 4 members stored it (the leader is one)."""
    core = leader()
    outputs = settle(core, core.add_member(4, addr(4), START), START, answering=[2])
    reply = core.receive(4, holding(last_beat(outputs, 4), (0, 0)), START)
    assert core.configuration == entry(TERM + 1, 2, [1, 2, 3, 4])
    core.receive(2, stored(beat_to(reply, 2)), START)
    assert not core.configuration_committed  # the leader and 2: 2 of 4 (though 2 of the old 3)
    core.receive(4, stored(beat_to(reply, 4)), START)
    assert core.configuration_committed  # 3 of 4


def test_acknowledging_an_older_entry_does_not_count() -> None:
    """§4.1: a member counts towards an entry only once it reports storing that very entry."""
    core = leader()
    settle(core, core.add_member(4, addr(4), START), START, answering=[2, 3])
    out = core.tick(START + config_of(core).heartbeat_interval)  # another catch-up round
    reply = core.receive(4, holding(beat_to(out, 4), (0, 0)), START + STEP)
    for peer in (2, 3, 4):  # every member answers, reporting the stamp, not the new entry
        core.receive(peer, holding(beat_to(reply, peer), (TERM + 1, 1)), START + STEP)
    assert core.configuration.index == 2 and not core.configuration_committed


def test_a_removed_members_acknowledgement_does_not_count() -> None:
    """§4.1: the entry without 3 commits with a majority of 1 and 2; 3 storing it counts for nothing
    (though the leader and 3 are a majority of the old member set)."""
    core = stamped_leader()
    out = core.remove_member(3, START)
    assert core.configuration == entry(TERM + 1, 2, [1, 2])
    core.receive(3, stored(beat_to(out, 3)), START)
    assert not core.configuration_committed
    reply = core.receive(2, stored(beat_to(out, 2)), START)
    assert core.configuration_committed
    assert membership_events(reply) == [((TERM + 1, 2), True, None)]


def test_an_entry_of_an_earlier_term_is_not_committed_by_counting() -> None:
    """Raft §5.4.2 for the one entry: a leader counts stores only for entries of its own term; an
    inherited one that it does not know to be committed commits with the leader's stamp, which descends
    from it and which the leader creates as it takes office."""
    inherited = entry(2, 3, [1, 2, 3])
    core = leader(hard_state=HardState(term=TERM, config=inherited))
    term = core.term
    stamp = entry(term, 4, [1, 2, 3])
    assert core.configuration == stamp and not core.configuration_committed
    assert core.membership_change == "stamp"
    t = START + config_of(core).heartbeat_interval
    out = core.tick(t)
    assert {(beat.config_term, beat.config_index, beat.committed) for beat in messages(out, Heartbeat)} == {
        (term, 4, False)}
    # Followers still holding the inherited entry commit nothing: a store counts for the entry it names.
    for peer in (2, 3):
        core.receive(peer, holding(beat_to(out, peer), inherited.version), t)
    assert not core.configuration_committed
    core.receive(2, stored(beat_to(out, 2)), t)
    assert core.configuration == stamp and core.configuration_committed
    # A change asked for while the stamp was pending waits for it instead of being refused.
    fresh = leader(hard_state=HardState(term=TERM, config=inherited))
    fresh.add_member(4, addr(4), START)
    assert fresh.membership_change == "stamp" and fresh.catching_up is None
    t = START + config_of(fresh).heartbeat_interval
    settle(fresh, fresh.tick(t), t, answering=[2])
    assert fresh.configuration_committed and fresh.catching_up == 4


# ---------------------------------------------------------------------- 4. one change at a time


def busy_leader(phase: str) -> RaftCore:
    """A leader adding 4, stopped in ``phase``: "stamp", "catch-up" or "pending" (nobody stored it)."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    if phase != "stamp":
        outputs = settle(core, out, START, answering=[2, 3])
        if phase == "pending":
            core.receive(4, holding(last_beat(outputs, 4), (0, 0)), START)
    assert core.membership_change == phase
    return core


@pytest.mark.parametrize("phase", ["stamp", "catch-up", "pending"])
@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_second_change_while_one_is_under_way_is_refused(phase: str, change: str) -> None:
    """§4.1: one change at a time: another add or remove raises and changes nothing."""
    core = busy_leader(phase)
    before = (core.configuration, core.membership_change, core.catching_up)
    with pytest.raises(MembershipChangeError):
        if change == "add":
            core.add_member(5, addr(5), START)
        else:
            core.remove_member(2, START)
    assert (core.configuration, core.membership_change, core.catching_up) == before


@pytest.mark.parametrize("phase", ["stamp", "catch-up", "pending", "committed"])
def test_repeating_the_same_add_changes_nothing(phase: str) -> None:
    """Asking again for the same member at the same address (a retry) is a no-op, in every phase."""
    if phase == "committed":
        core = leader()
        add(core, 4, START)
    else:
        core = busy_leader(phase)
    before = (core.configuration, core.configuration_committed, core.membership_change, core.catching_up)
    out = core.add_member(4, addr(4), START)
    assert out.messages == () and out.hard_state is None and out.events == ()
    assert (core.configuration, core.configuration_committed, core.membership_change,
            core.catching_up) == before


def test_removing_a_member_twice_or_a_stranger_changes_nothing() -> None:
    core = leader()
    remove(core, 3, START)
    before = core.configuration
    for stranger in (3, 9):
        out = core.remove_member(stranger, START)
        assert out.messages == () and core.configuration == before


def test_adding_an_existing_member_at_another_address_is_refused() -> None:
    core = leader()
    with pytest.raises(MembershipChangeError):
        core.add_member(2, "elsewhere:2", START)
    assert core.membership_change is None and core.configuration.version == (0, 0)


@pytest.mark.parametrize("address", ["test:2", "", " spaced "])
def test_adding_with_a_taken_or_invalid_address_is_refused(address: str) -> None:
    """Two members may not share an address, and an address must be valid: ConfigError, nothing made."""
    core = leader()
    with pytest.raises(ConfigError):
        core.add_member(4, address, START)
    assert core.membership_change is None and core.configuration.version == (0, 0)


def test_the_last_member_cannot_be_removed() -> None:
    core = leader(members=1)
    with pytest.raises(MembershipChangeError):
        core.remove_member(1, START)
    assert core.configuration.members.keys() == {1}


def test_a_full_configuration_refuses_another_member() -> None:
    core = leader(members=MAX_MEMBERS)
    with pytest.raises(MembershipChangeError):
        core.add_member(MAX_MEMBERS + 1, addr(MAX_MEMBERS + 1), START)
    assert core.membership_change is None


def test_membership_errors_are_library_errors() -> None:
    assert issubclass(MembershipChangeError, RaftElectionError)
    assert issubclass(NotLeaderError, RaftElectionError)


# ---------------------------------------------------------------------- 5. only the leader


def follower_of(leader_id: Optional[int]) -> RaftCore:
    core = make_core(node_id=3, hard_state=HardState(term=TERM))
    if leader_id is not None:
        core.receive(leader_id, Heartbeat(term=TERM, round=1), LATER)
    return core


@pytest.mark.parametrize("change", ["add", "remove"])
@pytest.mark.parametrize("state, known", [("follower", None), ("follower", 2), ("pre-candidate", None),
                                          ("candidate", None)])
def test_a_change_on_a_non_leader_raises_not_leader_with_the_leader_it_knows(change: str, state: str,
                                                                          known: Optional[int]) -> None:
    """Changes are the leader's: anyone else raises NotLeaderError naming the leader it knows, if any."""
    if state == "follower":
        core = follower_of(known)
    else:
        core = make_core(node_id=3, hard_state=HardState(term=TERM), pre_vote=state == "pre-candidate")
        core.tick(core.next_deadline)
        assert core.role is (Role.PRE_CANDIDATE if state == "pre-candidate" else Role.CANDIDATE)
    before = core.configuration
    with pytest.raises(NotLeaderError) as raised:
        if change == "add":
            core.add_member(4, addr(4), LATER)
        else:
            core.remove_member(2, LATER)
    assert raised.value.leader_id == known
    assert core.configuration == before


# ---------------------------------------------------------------------- 6. followers take the leader's entry


def test_a_follower_adopts_a_newer_entry_at_once_and_persists_it_with_its_term() -> None:
    """§4.1: the entry is used as soon as it arrives, committed or not; it is in the same hard-state write
    as the term it came with, and the answer reporting it leaves in that same output (after the write)."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    new = entry(TERM + 1, 2, [1, 2, 3, 4])
    beat = Heartbeat(term=TERM + 1, round=7, config_term=new.term, config_index=new.index,
                     members=new.as_pairs())
    out = core.receive(1, beat, LATER)
    assert core.configuration == new and not core.configuration_committed
    assert out.hard_state == HardState(term=TERM + 1, voted_for=None, config=new)
    answer = only(messages(out, HeartbeatResponse, to=1))
    assert (answer.config_term, answer.config_index) == new.version
    assert membership_events(out) == [(new.version, False, None)]


def test_a_follower_campaigns_in_its_newest_entry() -> None:
    """§4.1: the uncommitted entry decides whom the follower asks for votes."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    new = entry(TERM + 1, 2, [1, 2, 3, 4])
    core.receive(1, Heartbeat(term=TERM + 1, round=7, config_term=new.term, config_index=new.index,
                              members=new.as_pairs()), LATER)
    out = core.tick(core.election_deadline)
    assert core.role is Role.PRE_CANDIDATE
    assert sorted(recipients(out, VoteRequest)) == [1, 3, 4]
    assert {(r.config_term, r.config_index) for r in messages(out, VoteRequest)} == {new.version}


def test_a_follower_learns_that_its_entry_is_committed() -> None:
    """§4.1: the leader's heartbeats say when its entry is committed; that is news only for that entry."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    new = entry(TERM + 1, 2, [1, 2, 3, 4])
    core.receive(1, Heartbeat(term=TERM + 1, round=7, config_term=new.term, config_index=new.index,
                              members=new.as_pairs()), LATER)
    out = core.receive(1, Heartbeat(term=TERM + 1, round=8, config_term=new.term, config_index=1,
                                    committed=True), LATER)
    assert not core.configuration_committed and membership_events(out) == []  # another entry's flag
    out = core.receive(1, Heartbeat(term=TERM + 1, round=9, config_term=new.term, config_index=new.index,
                                    committed=True), LATER)
    assert core.configuration_committed
    assert membership_events(out) == [(new.version, True, None)]
    assert out.hard_state is None  # commitment is not stored: the leader says it again


def test_a_delayed_older_entry_of_the_same_leader_is_ignored() -> None:
    """A late heartbeat of the same leader carrying the entry it has since replaced changes nothing."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    older, newer = entry(TERM + 1, 1, [1, 2, 3]), entry(TERM + 1, 2, [1, 2, 3, 4])
    core.receive(1, Heartbeat(term=TERM + 1, round=8, config_term=newer.term, config_index=newer.index,
                              members=newer.as_pairs()), LATER)
    out = core.receive(1, Heartbeat(term=TERM + 1, round=7, config_term=older.term, config_index=older.index,
                                    members=older.as_pairs(), committed=True), LATER)
    assert core.configuration == newer and not core.configuration_committed
    assert out.hard_state is None and membership_events(out) == []
    answer = only(messages(out, HeartbeatResponse, to=1))
    assert (answer.config_term, answer.config_index) == newer.version


def test_a_later_leaders_entry_replaces_an_uncommitted_one() -> None:
    """Raft §5.3 for the one entry: the leader of a later term is right, even with a lower version (the
    entry it overwrites was never committed, or that leader would hold it)."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM, config=entry(TERM, 5, [1, 2, 3, 4])))
    theirs = entry(TERM - 1, 4, [1, 2, 3])
    core.receive(3, Heartbeat(term=TERM + 1, round=1, config_term=theirs.term, config_index=theirs.index,
                              members=theirs.as_pairs()), LATER)
    assert core.configuration == theirs


def test_a_heartbeat_without_the_entry_changes_nothing() -> None:
    """A plain heartbeat naming another entry is not the entry: the follower reports what it holds, so
    the leader sends the whole entry next time."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    out = core.receive(1, Heartbeat(term=TERM, round=3, config_term=TERM, config_index=2), LATER)
    assert core.configuration.version == (0, 0)
    answer = only(messages(out, HeartbeatResponse, to=1))
    assert (answer.config_term, answer.config_index) == (0, 0)


def test_a_malformed_entry_is_ignored() -> None:
    """Network input is untrusted: an entry giving two members one address is dropped and counted."""
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    beat = Heartbeat(term=TERM, round=3, config_term=TERM, config_index=1,
                     members=((1, "test:1"), (2, "test:2"), (3, "test:1")))
    out = core.receive(1, beat, LATER)
    assert core.configuration.version == (0, 0)
    assert core.counters["rejected_bad_configuration"] == 1
    assert len(messages(out, HeartbeatResponse, to=1)) == 1  # still a heartbeat of its leader


def test_the_leader_sends_the_entry_until_a_follower_reports_storing_it() -> None:
    """The whole entry travels only to followers that have not reported it (heartbeats stay small)."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    core.receive(2, stored(beat_to(out, 2)), START)  # 2 stored the stamp; 3 never answered
    out = core.tick(START + 10 * STEP)
    assert beat_to(out, 2).members == ()
    assert beat_to(out, 3).members == core.configuration.as_pairs()
    assert beat_to(out, 4).members == core.configuration.as_pairs()


# ---------------------------------------------------------------------- 7. votes and configuration versions


def voter_holding(config: Configuration, node_id: int = 2) -> RaftCore:
    return make_core(node_id=node_id, hard_state=HardState(term=TERM + 1, config=config))


@pytest.mark.parametrize("pre_vote", [True, False])
@pytest.mark.parametrize("candidate_version", [(0, 0), (TERM + 1, 1), (TERM, 7)])
def test_a_voter_refuses_a_candidate_with_an_older_entry_and_sends_its_own(pre_vote: bool,
                                                                          candidate_version: Version) -> None:
    """Raft §5.4.1 for the one entry: a voter whose entry is newer refuses, with the entry in the answer."""
    mine = entry(TERM + 1, 2, [1, 2, 3, 4])
    core = voter_holding(mine)
    request = VoteRequest(term=TERM + 2, round=5, pre_vote=pre_vote, config_term=candidate_version[0],
                          config_index=candidate_version[1])
    out = core.receive(1, request, LATER)
    answer = only(messages(out, VoteResponse, to=1))
    assert not answer.granted
    assert (answer.config_term, answer.config_index, answer.members) == (*mine.version, mine.as_pairs())
    assert core.voted_for is None
    assert core.counters["votes_refused_older_configuration"] == 1


@pytest.mark.parametrize("pre_vote", [True, False])
@pytest.mark.parametrize("candidate_version", [(TERM + 1, 2), (TERM + 1, 3), (TERM + 2, 0)])
def test_a_voter_grants_a_candidate_with_an_entry_as_new_or_newer(pre_vote: bool,
                                                                  candidate_version: Version) -> None:
    core = voter_holding(entry(TERM + 1, 2, [1, 2, 3, 4]))
    request = VoteRequest(term=TERM + 2, round=5, pre_vote=pre_vote, config_term=candidate_version[0],
                          config_index=candidate_version[1])
    answer = only(messages(core.receive(1, request, LATER), VoteResponse, to=1))
    assert answer.granted and answer.members == ()


def refusal(request: VoteRequest, config: Configuration, term: Optional[int] = None) -> VoteResponse:
    """A voter's refusal of ``request`` carrying its newer entry ``config``."""
    return VoteResponse(term=request.term if term is None else term, round=request.round, granted=False,
                        pre_vote=request.pre_vote, config_term=config.term, config_index=config.index,
                        members=config.as_pairs())


def test_a_pre_candidate_takes_a_newer_entry_from_a_refusal_and_asks_again() -> None:
    """A pre-candidate that missed a change learns the entry from the refusal and asks the new member
    set at once, naming the new entry (it would otherwise never win)."""
    core = make_core(hard_state=HardState(term=TERM + 1))
    start = core.election_deadline
    request = only(messages(core.tick(start), VoteRequest, to=2))
    assert request.pre_vote
    newer = entry(TERM + 1, 2, [1, 2, 3, 4])
    t = start + STEP
    out = core.receive(2, refusal(request, newer, term=TERM + 1), t)
    assert core.configuration == newer and core.role is Role.PRE_CANDIDATE
    assert out.hard_state is not None and out.hard_state.config == newer
    again = messages(out, VoteRequest)
    assert sorted(recipients(out, VoteRequest)) == [2, 3, 4]
    assert {(r.config_term, r.config_index, r.pre_vote) for r in again} == {(*newer.version, True)}
    assert again[0].round != request.round
    assert core.counters["configurations_learned_from_voters"] == 1


def test_a_candidate_that_learns_it_is_no_longer_a_member_stops_standing() -> None:
    """§4.2.2: a refusal whose entry leaves the candidate out ends its campaign for good."""
    core = make_core(node_id=3, hard_state=HardState(term=TERM + 1), pre_vote=False)
    start = core.election_deadline
    request = only(messages(core.tick(start), VoteRequest, to=2))
    newer = entry(TERM + 1, 2, [1, 2])
    core.receive(2, refusal(request, newer), start + STEP)
    assert core.role is Role.FOLLOWER and not core.voter and core.configuration == newer
    term = core.term
    assert campaign_requests(core) == [] and core.term == term


def test_a_leader_never_takes_an_entry_from_a_late_refusal() -> None:
    """Raft §5.3 (Leader Append-Only) for the one entry: a refusal that reaches the winner late, with a
    newer entry that never committed, leaves the leader's entry as it is; the voter takes the leader's."""
    core = make_core(hard_state=HardState(term=TERM))
    won = elect(core, now=START)
    assert won.request is not None and core.role is Role.LEADER
    before = core.configuration
    newer = entry(TERM, 7, [1, 2, 3, 4])
    out = core.receive(3, refusal(won.request, newer), won.won_at + STEP)
    assert core.configuration == before and out.hard_state is None
    assert core.counters["configurations_learned_from_voters"] == 0


@pytest.mark.parametrize("version", [(0, 0), (TERM + 1, 0)])
def test_a_refusal_with_an_entry_no_newer_teaches_nothing(version: Version) -> None:
    """Only a newer entry replaces the candidate's (an older one may be a stale or hostile answer)."""
    core = make_core(hard_state=HardState(term=TERM + 1, config=entry(TERM + 1, 0, [1, 2, 3])))
    start = core.election_deadline
    request = only(messages(core.tick(start), VoteRequest, to=2))
    older = Configuration(term=version[0], index=version[1], members={1: addr(1), 2: addr(2)})
    core.receive(2, refusal(request, older, term=TERM + 1), start + STEP)
    assert core.configuration.members.keys() == {1, 2, 3}
    assert core.counters["configurations_learned_from_voters"] == 0


# ---------------------------------------------------------------------- 8. majorities follow the latest entry


def test_after_an_add_the_lease_needs_three_of_four() -> None:
    """§4.1 with thesis §6.4.1: with 4 members, one follower's answer no longer renews the lease."""
    core = leader()
    add(core, 4, START)
    lease = lease_of(core)
    assert core.lease_expiry == START + lease
    t = START + config_of(core).heartbeat_interval
    out = core.tick(t)
    core.receive(2, stored(beat_to(out, 2)), t)
    assert core.lease_expiry == START + lease  # leader and 2: 2 of 4
    core.receive(4, stored(beat_to(out, 4)), t)
    assert core.lease_expiry == t + lease  # 3 of 4


def test_after_a_removal_the_lease_needs_two_of_three() -> None:
    """§4.1: from 4 members down to 3, one follower's answer renews the lease again."""
    core = leader(members=4)
    out = core.tick(START + config_of(core).heartbeat_interval)
    t = START + config_of(core).heartbeat_interval
    for peer in (2, 3, 4):
        core.receive(peer, stored(beat_to(out, peer)), t)
    t2 = t + config_of(core).heartbeat_interval
    out = core.tick(t2)
    core.receive(2, stored(beat_to(out, 2)), t2)
    assert core.lease_expiry == t + lease_of(core)  # 2 of 4
    remove(core, 4, t2, answering=[2, 3])
    assert core.configuration.members.keys() == {1, 2, 3} and core.configuration_committed
    t3 = t2 + config_of(core).heartbeat_interval
    out = core.tick(t3)
    core.receive(2, stored(beat_to(out, 2)), t3)
    assert core.lease_expiry == t3 + lease_of(core)  # 2 of 3


def test_check_quorum_counts_in_the_latest_entry() -> None:
    """Thesis §6.2 with §4.1: a leader of 4 members that hears only one of them steps down."""
    core = leader()
    add(core, 4, START)
    interval = config_of(core).heartbeat_interval
    t = START
    while core.role is Role.LEADER:
        t += interval
        assert t <= START + 2 * config_of(core).election_timeout_max, "never stepped down"
        out = core.tick(t)
        if core.role is Role.LEADER:
            core.receive(2, stored(beat_to(out, 2)), t)
    assert t >= START + config_of(core).election_timeout_max  # after a whole window of hearing only 2
    assert [event.reason for event in events(out, LostLeadership) if isinstance(event, LostLeadership)] == [
        "check_quorum"]


def test_an_election_needs_a_majority_of_the_latest_entry() -> None:
    """§4.1: a candidate whose entry lists 4 members needs 2 grants besides its own, not 1."""
    core = make_core(hard_state=HardState(term=TERM, config=entry(TERM, 2, [1, 2, 3, 4])))
    start = core.election_deadline
    request = only(messages(core.tick(start), VoteRequest, to=2))
    t = start + STEP
    core.receive(2, grant(request), t)
    assert core.role is Role.PRE_CANDIDATE
    out = core.receive(3, grant(request), t)
    assert core.role is Role.CANDIDATE
    vote = only(messages(out, VoteRequest, to=2))
    core.receive(2, grant(vote), t)
    assert core.role is Role.CANDIDATE
    core.receive(4, grant(vote), t)
    assert core.role is Role.LEADER


def test_grants_from_outside_the_latest_entry_do_not_count() -> None:
    """§4.1: a removed member's grant is no vote."""
    core = make_core(hard_state=HardState(term=TERM, config=entry(TERM, 2, [1, 2, 4])))
    start = core.election_deadline
    request = only(messages(core.tick(start), VoteRequest, to=2))
    t = start + STEP
    core.receive(3, grant(request), t)
    assert core.role is Role.PRE_CANDIDATE
    core.receive(4, grant(request), t)
    assert core.role is Role.CANDIDATE


# ---------------------------------------------------------------------- 9. servers outside the configuration


@pytest.mark.parametrize("pre_vote", [True, False])
def test_vote_requests_from_outside_the_configuration_are_dropped(pre_vote: bool) -> None:
    """§4.2.3: a removed member's (pre-)vote request is ignored: no answer, no term change, even from a
    follower that has not heard from a leader for long (stickiness would not stop it)."""
    core = make_core(hard_state=HardState(term=TERM, config=entry(TERM, 2, [1, 2, 4])))
    out = core.receive(3, VoteRequest(term=TERM + 5, round=1, pre_vote=pre_vote), LATER + 10.0)
    assert out.messages == () and out.hard_state is None and out.events == ()
    assert core.term == TERM and core.voted_for is None
    assert core.counters["rejected_vote_from_non_member"] == 1


def test_messages_from_a_server_never_known_are_dropped() -> None:
    core = make_core(hard_state=HardState(term=TERM))
    out = core.receive(9, VoteRequest(term=TERM + 5, round=1), LATER)
    assert out.messages == () and core.term == TERM
    assert core.counters["rejected_unknown_sender"] == 1


def test_a_removed_member_that_never_learns_of_its_removal_cannot_depose_the_leader() -> None:
    """§4.2.3: cut off before the removal reached it, 3 times out again and again (without pre-vote its
    term climbs), but 1 and 2 drop its requests: the leader keeps its term and its lease."""
    cores = {1: make_core(1, hard_state=HardState(term=TERM)),
             2: make_core(2, now=START, hard_state=HardState(term=TERM)),
             3: make_core(3, now=START, hard_state=HardState(term=TERM), pre_vote=False)}
    election = elect(cores[1], now=START)
    net = Net(cores, START)
    net.post(1, election.winning_output, START)
    net.run_until(START + 4 * STEP)
    assert cores[3].leader_id == 1
    net.cut = {(1, 3)}
    net.post(1, cores[1].remove_member(3, net.now), net.now)
    net.run_until(net.now + 8 * STEP)
    assert cores[1].configuration.members.keys() == {1, 2} and cores[1].configuration_committed
    assert cores[2].configuration == cores[1].configuration
    assert cores[3].voter  # it never heard
    term = cores[1].term
    end = START + 20 * config_of(cores[1]).election_timeout_max
    net.run_until(end)
    assert cores[3].term > term + 5  # it kept campaigning
    assert cores[1].role is Role.LEADER and cores[1].term == term and cores[1].is_leader(end)
    assert cores[2].term == term and cores[2].leader_id == 1
    assert cores[1].counters["rejected_vote_from_non_member"] > 0
    assert cores[2].counters["rejected_vote_from_non_member"] > 0


# ---------------------------------------------------------------------- 10. a joining member


def joiner(node_id: int = 4) -> RaftCore:
    """A new member 4 started with ``join=True``: it knows 1-3 and itself."""
    return make_core(node_id=node_id, members=[1, 2, 3, node_id], join=True)


def test_a_joining_member_starts_with_the_current_members_and_never_campaigns() -> None:
    """§4.2.1: before an entry lists it, a new member does not stand: no (pre-)votes, no term change,
    not even on TimeoutNow or campaign()."""
    core = joiner()
    assert core.configuration.members.keys() == {1, 2, 3} and not core.voter
    assert campaign_requests(core) == [] and core.term == 0
    out = core.receive(1, TimeoutNow(term=0), core.next_deadline)
    assert core.role is Role.FOLLOWER and messages(out, VoteRequest) == []
    assert messages(core.campaign(core.next_deadline), VoteRequest) == []


def test_a_joining_member_answers_its_catch_up_round_as_a_non_candidate() -> None:
    """§4.2.1: it follows the leader and answers, saying it does not stand (so it is no transfer target)."""
    core = joiner()
    beat = Heartbeat(term=TERM, round=4, members=entry(0, 0, [1, 2, 3]).as_pairs())
    out = core.receive(1, beat, LATER)
    answer = only(messages(out, HeartbeatResponse, to=1))
    assert core.leader_id == 1 and not answer.candidate and not core.voter


def test_a_joining_member_becomes_a_voter_when_an_entry_lists_it() -> None:
    """§4.2.1: once an entry listing it arrives it is a member: it stands, in that entry's member set."""
    core = joiner()
    new = entry(TERM, 2, [1, 2, 3, 4])
    out = core.receive(1, Heartbeat(term=TERM, round=4, config_term=new.term, config_index=new.index,
                                    members=new.as_pairs()), LATER)
    assert core.voter and core.configuration == new
    assert only(messages(out, HeartbeatResponse, to=1)).candidate
    requests = campaign_requests(core, rounds=1)
    assert sorted({(r.config_term, r.config_index) for r in requests}) == [new.version]
    assert core.role is Role.PRE_CANDIDATE


def test_a_joining_member_hears_a_leader_it_did_not_know_through_the_entry() -> None:
    """A joining member (no voter) that knows only some members accepts a heartbeat from an unknown leader
    whose entry lists that leader, listing the joiner or not (the catch-up round's entry does not): it
    answers, and its transport learns the leader's address.  An unknown sender whose entry does not list
    it stays unknown."""
    core = make_core(node_id=4, members=[1, 4], join=True)
    core.receive(5, Heartbeat(term=TERM, round=1, members=entry(0, 0, [1, 2, 3]).as_pairs()), LATER)
    assert core.leader_id is None and core.counters["rejected_unknown_sender"] == 1
    catch_up = entry(TERM, 1, [1, 2, 3])
    out = core.receive(2, Heartbeat(term=TERM, round=1, config_term=catch_up.term,
                                    config_index=catch_up.index, members=catch_up.as_pairs()), LATER)
    assert core.leader_id == 2 and core.configuration == catch_up and not core.voter
    assert only(messages(out, HeartbeatResponse, to=2)).config_index == catch_up.index
    assert out.peers is not None and out.peers[2] == addr(2)
    new = entry(TERM, 2, [1, 2, 3, 4])
    out = core.receive(2, Heartbeat(term=TERM, round=2, config_term=new.term, config_index=new.index,
                                    members=new.as_pairs()), LATER)
    assert core.leader_id == 2 and core.configuration == new and core.voter
    assert out.peers == {member: addr(member) for member in (1, 2, 3, 4)}


def test_a_voter_hears_an_unknown_leader_only_through_an_entry_listing_both() -> None:
    """A member started from an old list hears a new leader whose entry lists the two of them; a voter
    does not take an entry that leaves it out from a sender it never knew."""
    core = make_core(node_id=1, members=[1, 3])
    left_out = entry(TERM, 5, [2, 3])
    core.receive(2, Heartbeat(term=TERM, round=1, config_term=left_out.term, config_index=left_out.index,
                              members=left_out.as_pairs()), LATER)
    assert core.leader_id is None and core.counters["rejected_unknown_sender"] == 1
    listing = entry(TERM, 5, [1, 2, 3])
    core.receive(2, Heartbeat(term=TERM, round=2, config_term=listing.term, config_index=listing.index,
                              members=listing.as_pairs()), LATER)
    assert core.leader_id == 2 and core.configuration == listing and core.voter


# ---------------------------------------------------------------------- 11. a leader removing itself


def self_removing_leader() -> tuple[RaftCore, list[Output]]:
    """Leader 1 of 1-3 that created the entry removing itself, stored so far by 2 only."""
    core = leader()
    out = core.remove_member(1, START)  # first the stamp, which 3 stores: the entry is created and sent
    reply = core.receive(3, stored(beat_to(out, 3)), START)
    assert core.configuration.members.keys() == {2, 3}
    return core, [out, reply, core.receive(2, stored(beat_to(reply, 2)), START)]


def test_a_leader_removing_itself_does_not_count_itself_while_the_entry_is_pending() -> None:
    """§4.2.2: with itself left out, 2 storing the entry is 1 of the 2 members: not committed; 3 is
    needed too.  Its lease, likewise, needs both."""
    core, _ = self_removing_leader()
    assert core.configuration == entry(TERM + 1, 2, [2, 3])
    assert core.role is Role.LEADER and not core.voter and core.membership_change == "pending"
    assert not core.configuration_committed
    t = START + config_of(core).heartbeat_interval
    out = core.tick(t)
    core.receive(2, stored(beat_to(out, 2)), t)
    assert core.lease_expiry < t + lease_of(core)  # 2 alone renews nothing
    assert not core.configuration_committed


def test_once_committed_the_leader_hands_over_to_a_member_of_the_new_set() -> None:
    """§4.2.2: the commit makes it send TimeoutNow to a remaining member and step down."""
    core, outputs = self_removing_leader()
    out = core.receive(3, stored(last_beat(outputs, 3)), START)
    (target,) = recipients(out, TimeoutNow)
    assert target in (2, 3)
    assert core.role is Role.FOLLOWER and not core.is_leader(START)
    assert [event.reason for event in events(out, LostLeadership) if isinstance(event, LostLeadership)] == [
        "transfer"]
    assert ({(to, msg) for to, msg in ((o.to, o.message) for o in out.messages) if isinstance(msg, Resign)}
            == {(5 - target, Resign(term=TERM + 1, successor=target))})
    assert campaign_requests(core) == []  # and it never stands again


def test_without_a_member_to_hand_over_to_it_steps_down() -> None:
    """§4.2.2: when no remaining member stands for election, it resigns instead."""
    core = leader()
    outputs = settle(core, core.remove_member(1, START), START, answering=[2, 3], candidate=False)
    assert core.configuration == entry(TERM + 1, 2, [2, 3]) and core.configuration_committed
    assert core.role is Role.FOLLOWER
    assert [recipients(out, TimeoutNow) for out in outputs] == [[]] * len(outputs)
    assert sorted(recipients(outputs[-1], Resign)) == [2, 3]
    reasons = [event.reason for event in events(outputs, LostLeadership) if isinstance(event, LostLeadership)]
    assert reasons == ["step_down"]


# ---------------------------------------------------------------------- 12. departing members


def test_a_removed_member_gets_heartbeats_until_the_removal_commits_and_a_while_after() -> None:
    """§4.2.3: 3 is still sent the entry while it is pending, and for election_timeout_max after it
    commits, so it can learn of its removal; then no more."""
    core = stamped_leader()
    out = core.remove_member(3, START)
    assert beat_to(out, 3).members == entry(TERM + 1, 2, [1, 2]).as_pairs()
    core.receive(2, stored(beat_to(out, 2)), START)
    assert core.configuration_committed
    interval, linger = config_of(core).heartbeat_interval, config_of(core).election_timeout_max
    t = START
    while t < START + 2 * linger:
        t += interval
        out = core.tick(t)
        core.receive(2, stored(beat_to(out, 2)), t)
        assert (3 in recipients(out, Heartbeat)) == (t < START + linger), t


def test_a_removed_member_that_stored_its_removal_is_not_sent_to_any_more() -> None:
    core = leader()
    remove(core, 3, START)  # 2 and 3 stored it
    assert recipients(core.tick(START + config_of(core).heartbeat_interval), Heartbeat) == [2]


def test_a_removed_member_that_learns_of_its_removal_stops_standing() -> None:
    """§4.2.2: once its entry leaves it out it never campaigns, and says so in its answers."""
    core = make_core(node_id=3, hard_state=HardState(term=TERM))
    new = entry(TERM + 1, 2, [1, 2])
    out = core.receive(1, Heartbeat(term=TERM + 1, round=3, config_term=new.term, config_index=new.index,
                                    members=new.as_pairs()), LATER)
    assert not core.voter and not only(messages(out, HeartbeatResponse, to=1)).candidate
    assert campaign_requests(core) == [] and core.role is Role.FOLLOWER
    assert core.counters["pre_votes_started"] == 0


# ---------------------------------------------------------------------- 13. the transport's address map


def test_output_peers_carries_the_new_member_when_it_is_first_contacted() -> None:
    """The transport learns the new member's address in the output that first sends to it."""
    core = leader()
    out = core.add_member(4, addr(4), START)
    assert out.peers is None  # the stamp: same members
    reply = core.receive(2, stored(beat_to(out, 2)), START)
    assert 4 in recipients(reply, Heartbeat)
    assert reply.peers == {member: addr(member) for member in (1, 2, 3, 4)}
    assert core.addresses() == reply.peers


def test_output_peers_forgets_an_address_given_to_a_replacement() -> None:
    """Replacing 3 by 5 at 3's old address: the address map no longer names 3 there."""
    core = leader()
    remove(core, 3, START)
    assert 3 in core.addresses()  # removed members are still told of their removal
    out = core.add_member(5, addr(3), START)
    assert out.peers == {1: addr(1), 2: addr(2), 5: addr(3)}


def test_output_peers_is_none_while_the_addresses_stay_the_same() -> None:
    core = make_core(node_id=2, hard_state=HardState(term=TERM))
    out = core.receive(1, Heartbeat(term=TERM, round=1, members=entry(0, 0, [1, 2, 3]).as_pairs()), LATER)
    assert out.peers is None


# ---------------------------------------------------------------------- 14. restarts and events


def test_a_restarted_server_uses_its_stored_entry_not_the_seed() -> None:
    """The stored entry (persisted with the term) wins over RaftConfig.peers; the leader will say again
    whether it is committed."""
    stored_entry = entry(TERM, 2, [1, 2, 3, 4])
    core = make_core(hard_state=HardState(term=TERM, config=stored_entry))
    assert core.configuration == stored_entry and not core.configuration_committed
    assert core.hard_state.config == stored_entry
    assert 4 in core.addresses()
    out = core.tick(core.next_deadline)
    assert out.hard_state is None  # nothing new to persist
    assert sorted(recipients(out, VoteRequest)) == [2, 3, 4]


def test_a_restarted_removed_member_stays_out() -> None:
    core = make_core(node_id=3, hard_state=HardState(term=TERM, config=entry(TERM, 2, [1, 2])))
    assert not core.voter and campaign_requests(core) == []


def test_a_restarted_joiner_listed_in_its_stored_entry_is_a_voter() -> None:
    new = entry(TERM, 2, [1, 2, 3, 4])
    core = make_core(node_id=4, members=[1, 2, 3, 4], join=True, hard_state=HardState(term=TERM, config=new))
    assert core.voter and campaign_requests(core, rounds=1) != []


def test_the_seed_is_never_persisted() -> None:
    """Only entries made by a leader are stored: the seed is RaftConfig.peers again at the next start."""
    core = make_core(hard_state=HardState(term=TERM))
    election = elect(core, now=START)
    assert all(out.hard_state is None or out.hard_state.config is None for out in election.outputs)
    assert core.hard_state.config is None


def test_the_leader_reports_each_entry_when_made_and_when_committed() -> None:
    """MembershipChanged: made (not committed, with its parent's version), then committed; for an add,
    the stamp and then the entry listing the new member."""
    core = leader()
    outputs = add(core, 4, START)
    assert membership_events(outputs) == [
        ((TERM + 1, 1), False, (0, 0)), ((TERM + 1, 1), True, None),
        ((TERM + 1, 2), False, (TERM + 1, 1)), ((TERM + 1, 2), True, None)]
    changed = [event for event in events(outputs, MembershipChanged) if isinstance(event, MembershipChanged)]
    assert {event.term for event in changed} == {TERM + 1} and {event.at for event in changed} == {START}
    assert changed[-1].configuration == entry(TERM + 1, 2, [1, 2, 3, 4])


# ---------------------------------------------------------------------- property: a lossy cluster


SERVERS = (1, 2, 3, 4, 5)  # 1-3 are the seed members; 4 and 5 start as joining members


class Cluster:
    """Five cores on a lossy, reordering network with one clock, checking the membership invariants
    after every step (see :meth:`check`)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.configs = {n: make_config(n, [1, 2, 3] if n <= 3 else [1, 2, 3, n], join=n > 3)
                        for n in SERVERS}
        self.saved: dict[int, HardState] = {n: HardState() for n in SERVERS}
        self.cores = {n: self._start(n) for n in SERVERS}
        self.queue: list[tuple[int, int, Message]] = []
        self.entries: dict[Version, frozenset[int]] = {(0, 0): frozenset({1, 2, 3})}
        self.committed: dict[Version, int] = {(0, 0): 0}  # version -> the term it was known committed in
        self.leaders: dict[int, int] = {}  # term -> its leader
        self.votes: dict[tuple[int, int], int] = {}  # (voter, term) -> the candidate it voted for
        self.isolated: Optional[int] = None  # a server whose messages, both ways, are lost

    def _start(self, node_id: int) -> RaftCore:
        return RaftCore(self.configs[node_id], self.saved[node_id], self.now, random.Random(node_id))

    def record(self, node_id: int, out: Output) -> None:
        if out.hard_state is not None:
            self.saved[node_id] = out.hard_state
        self.queue += [(node_id, o.to, o.message) for o in out.messages
                       if o.to in self.cores and self.isolated not in (node_id, o.to)]
        del self.queue[:-200]
        for event in out.events:
            if isinstance(event, RoleChanged) and event.role is Role.LEADER:
                assert self.leaders.setdefault(event.term, node_id) == node_id, "two leaders in one term"
            if isinstance(event, VoteGranted):
                vote = self.votes.setdefault((node_id, event.term), event.candidate)
                assert vote == event.candidate, f"{node_id} voted twice in term {event.term}"
            if isinstance(event, MembershipChanged):
                config = event.configuration
                members = frozenset(config.members)
                assert self.entries.setdefault(config.version, members) == members, "two entries, one version"
                if event.parent is not None and members != self.entries[event.parent]:
                    assert len(members ^ self.entries[event.parent]) == 1, "more than one server changed"
                    assert event.parent in self.committed, "a change made on an uncommitted entry"
                if event.committed:
                    self.committed.setdefault(config.version, event.term)
                    self.check_stored(config)

    def check_stored(self, config: Configuration) -> None:
        """A majority of a committed entry's members hold it or a later entry (durably)."""
        holding = [member for member in config.members
                   if self.version_of(member) >= config.version]
        assert len(holding) >= config.quorum, f"{config} committed but held by {holding} only"

    def version_of(self, node_id: int) -> Version:
        saved = self.saved[node_id].config
        return saved.version if saved is not None else (0, 0)

    def check(self) -> None:
        holders = [n for n, core in self.cores.items() if core.is_leader(self.now)]
        assert len(holders) <= 1, f"two lease holders at {self.now}: {holders}"
        for version, term in self.committed.items():
            members = self.entries[version]
            config = Configuration(term=version[0], index=version[1],
                                   members={member: addr(member) for member in members})
            self.check_stored(config)
            for core in self.cores.values():
                if core.role is Role.LEADER and core.term > term:
                    assert core.configuration.version >= version, (
                        f"leader {core.node_id} of term {core.term} lacks committed {version}")

    def leader(self) -> Optional[RaftCore]:
        leading = [core for core in self.cores.values() if core.role is Role.LEADER]
        return max(leading, key=lambda core: core.term) if leading else None

    def act(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        if kind == "deliver" and self.queue:
            sender, to, message = self.queue.pop(action[1] % len(self.queue))
            self.record(to, self.cores[to].receive(sender, message, self.now))
        elif kind == "flush":  # everything in order, and what it causes, up to a bound
            for _ in range(60):
                if not self.queue:
                    break
                sender, to, message = self.queue.pop(0)
                self.record(to, self.cores[to].receive(sender, message, self.now))
        elif kind == "drop" and self.queue:
            self.queue.pop(action[1] % len(self.queue))
        elif kind == "advance":
            self.now += action[1] * STEP
            for node_id, core in self.cores.items():
                if core.next_deadline <= self.now:
                    self.record(node_id, core.tick(self.now))
        elif kind == "isolate":
            self.isolated = action[1]
            self.queue = [item for item in self.queue if action[1] not in item[:2]]
        elif kind == "heal":
            self.isolated = None
        elif kind == "restart":
            node_id = action[1]
            self.cores[node_id] = self._start(node_id)
        elif kind == "evidence":
            self.record(action[1], self.cores[action[1]].evidence(action[2], "refused", self.now))
        elif kind in ("add", "remove", "abandon"):
            leading = self.leader()
            if leading is None:
                return
            try:
                if kind == "add":
                    out = leading.add_member(action[1], addr(action[1]), self.now)
                elif kind == "remove":
                    out = leading.remove_member(action[1], self.now)
                else:
                    out = leading.abandon_change(action[1], self.now)
            except MembershipChangeError:
                return
            self.record(leading.node_id, out)


def cluster_actions() -> st.SearchStrategy[list[tuple[Any, ...]]]:
    server = st.sampled_from(SERVERS)
    index = st.integers(min_value=0, max_value=40)
    forms: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
        "deliver": st.tuples(st.just("deliver"), index),
        "flush": st.just(("flush",)),
        "drop": st.tuples(st.just("drop"), index),
        "advance": st.tuples(st.just("advance"), st.integers(min_value=1, max_value=16)),
        "restart": st.tuples(st.just("restart"), server),
        "isolate": st.tuples(st.just("isolate"), server),
        "heal": st.just(("heal",)),
        "evidence": st.tuples(st.just("evidence"), server, server),
        "add": st.tuples(st.just("add"), server),
        "remove": st.tuples(st.just("remove"), server),
        "abandon": st.tuples(st.just("abandon"), server),
    }
    weighted = ["deliver"] * 4 + ["flush"] * 6 + ["advance"] * 6 + ["drop"] * 2 + ["add"] * 3 + [
        "remove"] * 2 + ["restart", "evidence", "abandon", "isolate", "heal"]
    return st.lists(st.sampled_from(weighted).flatmap(lambda kind: forms[kind]), min_size=30, max_size=200)


@settings(max_examples=examples(300, 5000))
@given(cluster_actions())
def test_property_committed_configurations_are_never_rolled_back(script: Sequence[tuple[Any, ...]]) -> None:
    """Any mix of losses, reordering, partitions, timeouts, restarts, false evidence and changes: a
    committed entry stays held by a majority of its members and every leader of a later term holds it or
    a descendant (never rolled back); a change is one server on a committed entry (at most one
    uncommitted change); one leader per term; one vote per term; at most one lease holder at a time."""
    cluster = Cluster()
    for action in script:
        cluster.act(action)
        cluster.check()
