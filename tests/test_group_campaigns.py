"""Named groups' campaigns under load: what keeps a thousand groups starting at once from feeding on itself.

When every member starts a thousand groups together on a small machine, answers take hundreds of
milliseconds; any work that grows with lateness (repeated requests, campaigns that hold their place in the
admission limit, leases revived only to lapse again) makes the answers later still.  Each rule here takes
one such loop away.  None touches safety: giving up a campaign, asking again later and reviving a lease
later are each always allowed.
"""

from __future__ import annotations

import random

import attrs
import pytest

from raft_election.campaign import ResendPace
from raft_election.core import RaftCore
from raft_election.fastfailover import GROUP_FAST_RESEND
from raft_election.groups import GroupOutput, _Waiting
from raft_election.hardstate import HardState
from raft_election.messages import BeatAck, Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse
from raft_election.roles import Role
from tests.coretools import grant, make_config, make_core, messages, only, recipients
from tests.test_groups import TIMINGS, World


def group_core(*, pre_vote: bool = True, pace: ResendPace | None = None, members: int = 5) -> RaftCore:
    """A named group's core (``group=True``) of member 1 among ``members``, at term 3, no order."""
    config = make_config(1, members, pre_vote=pre_vote, **TIMINGS)
    return RaftCore(config, HardState(term=3), 0.0, random.Random(7), group=True, pace=pace)


def refusal(request: VoteRequest) -> VoteResponse:
    """A voter's refusal of ``request``, with the voter's term (3, or the candidate's term it adopted)."""
    return VoteResponse(term=3 if request.pre_vote else request.term, round=request.round, granted=False,
                        pre_vote=request.pre_vote)


def campaign(core: RaftCore) -> tuple[float, VoteRequest]:
    """Let ``core``'s election timer fire; when, and what it asked member 2."""
    at = core.next_deadline
    return at, only(messages(core.tick(at), VoteRequest, to=2))


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_group_campaign_refused_by_a_majority_ends_at_once_and_keeps_its_timer(pre_vote: bool) -> None:
    core = group_core(pre_vote=pre_vote)
    at, request = campaign(core)
    campaigning = core.role
    term, deadline = core.term, core.election_deadline
    core.receive(2, refusal(request), at + 0.01)
    core.receive(3, refusal(request), at + 0.01)
    assert core.role is campaigning  # members 1, 4 and 5 could still make a majority of 5
    core.receive(4, refusal(request), at + 0.02)
    assert core.role is Role.FOLLOWER and core.term == term  # no majority left: it stops asking
    assert core.election_deadline == deadline  # and campaigns again when its timer, drawn at the start, fires
    assert core.counters["campaigns_given_up"] == 1
    if not pre_vote:
        assert core.hard_state.voted_for == 1  # its own vote in this term stands: it grants no other


def test_the_default_groups_campaign_waits_out_its_timer_after_refusals() -> None:
    core = make_core(members=5, hard_state=HardState(term=3), **TIMINGS)
    at = core.next_deadline
    request = only(messages(core.tick(at), VoteRequest, to=2))
    for voter in (2, 3, 4):
        core.receive(voter, refusal(request), at + 0.01)
    assert core.role is Role.PRE_CANDIDATE  # a voter may grant a moment later (its stickiness ends)
    out = core.tick(core.next_deadline)
    assert recipients(out, VoteRequest) == [2, 3, 4, 5]  # and it asks every one of them again


def test_a_fast_failover_campaign_is_not_given_up_on_refusals() -> None:
    core = group_core()
    core.receive(2, Heartbeat(term=3, round=1), 0.3)
    core.evidence(2, "refused", 0.31)  # the group's leader is gone: a fast campaign
    at = core.next_deadline
    request = only(messages(core.tick(at), VoteRequest, to=3))
    assert request.suspect == 2
    for voter in (3, 4, 5):  # voters without evidence of their own refuse at first ...
        core.receive(voter, refusal(request), at + 0.01)
    assert core.role is Role.PRE_CANDIDATE  # ... and may grant the repeat once theirs arrives
    assert core.counters["campaigns_given_up"] == 0


def test_a_group_fast_campaign_asks_again_only_after_a_few_intervals() -> None:
    """Every survivor of a member that led many groups campaigns in dozens of them at once; a repeat after
    one interval reached voters whose answers were on the way (GROUP_FAST_RESEND)."""
    interval = TIMINGS["heartbeat_interval"]
    core = group_core(pace=ResendPace(interval))
    core.receive(2, Heartbeat(term=3, round=1), 0.3)
    core.evidence(2, "refused", 0.31)
    at = core.next_deadline
    assert recipients(core.tick(at), VoteRequest) == [3, 4, 5]  # never the dead leader
    assert recipients(core.tick(at + 1.5 * interval), VoteRequest) == []  # the default group's would
    assert recipients(core.tick(at + GROUP_FAST_RESEND * interval), VoteRequest) == [3, 4, 5]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_group_voter_keeps_a_fast_request_until_its_candidate_would_repeat_it(pre_vote: bool) -> None:
    """A voter without evidence of its own keeps a fast request and answers it when its evidence comes, as
    long as the candidate's repeat is not due yet (for a named group: GROUP_FAST_RESEND intervals)."""
    interval = TIMINGS["heartbeat_interval"]
    request = VoteRequest(term=4, round=9, pre_vote=pre_vote, suspect=2)
    answered = []
    for wait in (1.5 * interval, (GROUP_FAST_RESEND + 0.5) * interval):
        voter = group_core()
        voter.receive(2, Heartbeat(term=3, round=1), 0.3)  # it follows member 2, sticky
        first = messages(voter.receive(3, request, 0.31), VoteResponse)
        assert not any(response.granted for response in first)
        out = voter.evidence(2, "refused", 0.31 + wait)
        answered.append([response.granted for response in messages(out, VoteResponse)])
    assert answered == [[True], []]
    # (The default group's voter lets such a request go after one interval: test_fastfailover.py.)


def test_a_group_campaign_does_not_ask_again_who_refused_it() -> None:
    core = group_core()
    at, request = campaign(core)
    core.receive(2, refusal(request), at + 0.01)
    core.receive(3, grant(request), at + 0.01)
    out = core.tick(core.next_deadline)
    assert recipients(out, VoteRequest) == [4, 5]  # member 2 answered, member 3 granted: nothing was lost


def test_slow_answers_make_a_group_campaign_wait_longer_before_asking_again() -> None:
    interval = TIMINGS["heartbeat_interval"]
    pace = ResendPace(interval)
    fast = group_core(pace=pace)
    at, _ = campaign(fast)
    assert fast.next_deadline == pytest.approx(at + interval)  # nothing measured yet: the interval
    for _ in range(8):
        pace.sample(0.4)  # answers have been taking 0.4 s
    slow = group_core(pace=pace)
    at, _ = campaign(slow)
    # A repeat before an answer could arrive would only add load.
    assert slow._campaign is not None and slow._campaign.resend_at >= at + 0.4
    for _ in range(64):
        pace.sample(0.001)  # the load has passed
    assert pace.interval == pytest.approx(interval)  # never below the heartbeat interval


def test_an_answer_to_a_repeated_request_is_no_round_trip_sample() -> None:
    pace = ResendPace(TIMINGS["heartbeat_interval"])
    core = group_core(pace=pace)
    at, request = campaign(core)
    core.tick(core.next_deadline)  # asks 2..5 again
    core.receive(2, grant(request), at + 5.0)  # which send does this answer?  Karn's rule: no sample
    assert pace.interval == TIMINGS["heartbeat_interval"]
    other = group_core(pace=pace)
    at, request = campaign(other)
    other.receive(2, grant(request), at + 0.3)  # an answer to a request sent once is
    assert pace.interval >= 0.3


def test_waiting_groups_campaign_lowest_rank_first_then_oldest() -> None:
    waiting = _Waiting()
    for name, rank in (("c", 2), ("a", 0), ("d", 1), ("b", 0), ("e", 1)):
        waiting.park(name, rank, 1.0)
    waiting.remove("d")  # its timer moved: it no longer waits
    waiting.park("c", 0, 2.0)  # parked again at a better rank: only the newest entry counts
    assert waiting.get("c") == 2.0 and waiting.get("d") is None
    assert [waiting.pop() for _ in range(len(waiting))] == ["a", "b", "c", "e"]
    assert len(waiting) == 0


def test_a_lapsed_carried_lease_is_revived_only_with_an_interval_of_it_left() -> None:
    world = World(3, seed=4, election_timeout=(0.25, 1.0))  # check-quorum after 1 s of silence
    world.ensure(1, "jobs")
    world.run(3.0)
    groups = world.sets[1]
    assert world.leader("jobs") == 1 and "jobs" in groups._rounds
    world.cut.update({2, 3})  # no answers: the lease lapses, the leadership stays
    world.run(0.3)
    assert world.leader("jobs") is None and groups.core("jobs").role is Role.LEADER  # type: ignore[union-attr]
    rounds = groups._rounds
    chunk = rounds.chunk_of("jobs")
    version = rounds._chunks[chunk].version
    interval = TIMINGS["heartbeat_interval"]
    old_round, sent = rounds._round, rounds.latest_sent
    world.run(sent + groups._lease_duration - interval / 2 - world.now)
    late = BeatAck(round=old_round, chunk=chunk, version=version)
    world.apply(1, groups.receive(2, "", late, world.now))  # a majority answered a round sent a lease ago
    assert world.now < sent + groups._lease_duration  # valid for less than an interval more ...
    assert world.leader("jobs") is None  # ... which is not worth reviving it (it would lapse before the next)
    fresh = BeatAck(round=rounds._round, chunk=chunk, version=version)
    world.apply(1, groups.receive(2, "", fresh, world.now))
    assert world.leader("jobs") == 1  # an answer to the latest round revives it


def test_answers_to_the_latest_round_revive_a_lapsed_lease_once() -> None:
    world = World(3, seed=4, election_timeout=(0.25, 1.0))
    world.ensure(1, "jobs")
    world.run(3.0)
    groups = world.sets[1]
    core = groups.core("jobs")
    assert core is not None and world.leader("jobs") == 1
    world.cut.update({2, 3})
    world.run(0.3)  # the lease lapsed
    assert world.leader("jobs") is None
    observed = []
    real_observe = core.observe
    core.observe = lambda now: observed.append(now) or real_observe(now)  # type: ignore[method-assign]
    rounds = groups._rounds
    chunk = rounds.chunk_of("jobs")
    version = rounds._chunks[chunk].version
    answer = BeatAck(round=rounds._round, chunk=chunk, version=version)
    groups.receive(2, "", answer, world.now)
    groups.receive(3, "", answer, world.now)  # a second answer to the same round: no second revival
    assert len(observed) == 1 and world.leader("jobs") == 1


class AckLossWorld(World):
    """A World that drops every answer to a round of ``deaf`` (as if they were all lost, or very late)."""

    deaf = 0

    def apply(self, i: int, output: GroupOutput) -> None:
        answers = (BeatAck, HeartbeatResponse)
        kept = tuple((group, outgoing) for group, outgoing in output.messages
                     if not (outgoing.to == self.deaf and isinstance(outgoing.message, answers)))
        super().apply(i, attrs.evolve(output, messages=kept))


def leading_world(world: World) -> World:
    """Member 1 alone stands in group "a", 2 in "b", 3 in "c": each leads one, carried by its rounds."""
    for i, name in ((1, "a"), (2, "b"), (3, "c")):
        world.ensure(i, name)
    world.run(3.0)
    assert [world.leader(name) for name in "abc"] == [1, 2, 3]
    assert "a" in world.sets[1]._rounds
    return world


def test_check_quorum_of_carried_groups_waits_while_a_majority_still_talks() -> None:
    world = leading_world(AckLossWorld(3, seed=6))
    window = TIMINGS["election_timeout"][1]
    world.deaf = 1  # the answers to member 1's rounds stop; members 2 and 3 still send it their own rounds
    world.run(2 * window)
    groups = world.sets[1]
    assert world.leader("a") is None  # no lease without answers in time ...
    assert groups.core("a").role is Role.LEADER  # type: ignore[union-attr]  # ... but no step-down yet
    assert groups.counters["check_quorum_waited"] > 0
    world.run(2 * window)  # past the patience: answers to no round for three windows
    assert groups.core("a").counters["step_downs_check_quorum"] == 1  # type: ignore[union-attr]


def test_check_quorum_of_carried_groups_does_not_wait_for_silent_members() -> None:
    world = leading_world(World(3, seed=6))
    window = TIMINGS["election_timeout"][1]
    world.cut.update({2, 3})  # nothing at all from a majority: partitioned away
    world.run(window + 2 * TIMINGS["heartbeat_interval"])
    assert world.sets[1].core("a").role is not Role.LEADER  # type: ignore[union-attr]
    assert world.sets[1].counters["check_quorum_waited"] == 0


def test_a_message_of_a_member_voids_the_evidence_about_it_and_is_counted() -> None:
    world = World(3, seed=3)
    world.ensure(1, "jobs")
    world.run(2.0)
    groups = world.sets[2]
    world.apply(2, groups.evidence(1, "refused", world.now))
    assert 1 in groups._evidence
    world.run(0.2)  # member 1 is alive: its next round reaches member 2
    assert 1 not in groups._evidence and groups.counters["evidence_voided"] >= 1


def test_late_in_a_lease_gap_any_answer_in_time_revives_the_lease() -> None:
    """Answers that keep coming a little too late must not keep a leader without a lease for good."""
    world = leading_world(AckLossWorld(3, seed=6, election_timeout=(0.25, 0.6)))
    groups = world.sets[1]
    world.deaf = 1
    world.run(1.0)  # a gap older than election_timeout_max, inside check-quorum's patience (1.8 s)
    core = groups.core("a")
    assert core is not None and core.role is Role.LEADER and world.leader("a") is None
    rounds = groups._rounds
    chunk = rounds.chunk_of("a")
    interval = TIMINGS["heartbeat_interval"]
    old_round, sent = rounds._round, rounds.latest_sent
    world.deaf = 0
    world.cut.update({2, 3})  # nothing else arrives meanwhile
    world.run(sent + groups._lease_duration - interval / 2 - world.now)
    late = BeatAck(round=old_round, chunk=chunk, version=rounds._chunks[chunk].version)
    world.apply(1, groups.receive(2, "", late, world.now))  # less than an interval of lease left
    assert world.leader("a") == 1
