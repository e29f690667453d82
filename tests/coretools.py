"""Shared helpers for the core's rule tests (tests/test_rule_*.py): build a RaftCore, read its outputs,
elect it, and a tiny synchronous in-process wire between cores.

Every helper drives :class:`~raft_election.core.RaftCore` through its public entry points only (``tick``,
``receive`` and the commands), so a helper can never make a broken core look correct.

Timings: :data:`TIMINGS` uses dyadic fractions (``1/4``, ``1/2``, ``1/16``, ``1/8``) and tests advance time in
multiples of :data:`STEP` (``1/64``), so every sum and difference of times is exact in binary floating point
and a boundary such as "exactly ``election_timeout_min`` after the last heartbeat" is really on the
boundary.  Expectations are always computed from the :class:`RaftConfig` (see :func:`config_of`), never
from these numbers.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar, Union

from hypothesis import strategies as st

from raft_election.config import RaftConfig
from raft_election.core import Outgoing, Output, RaftCore
from raft_election.errors import RaftElectionError
from raft_election.events import Event, LeaderValue, MembershipChanged, RoleChanged, VoteGranted
from raft_election.messages import (
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

__all__ = [
    "STEP",
    "TIMINGS",
    "Election",
    "Wire",
    "ack",
    "actions",
    "any_message",
    "config_of",
    "drive",
    "elect",
    "events",
    "grant",
    "leader_events",
    "lease_of",
    "make_config",
    "make_core",
    "messages",
    "only",
    "recipients",
]

M = TypeVar("M")

#: The default timings of every core built here (exact in binary floating point; see the module docstring).
TIMINGS: dict[str, Any] = {
    "election_timeout": (0.25, 0.5),
    "heartbeat_interval": 0.0625,
    "max_clock_drift": 0.125,
}

#: The quantum of time the tests advance by: exact, and far below every configured duration.
STEP = 1.0 / 64

_CONFIGS: weakref.WeakKeyDictionary[RaftCore, RaftConfig] = weakref.WeakKeyDictionary()


def member_ids(members: Union[int, Iterable[int]]) -> list[int]:
    """``members`` as a sorted list of ids: an int ``n`` means ids ``1..n``."""
    return list(range(1, members + 1)) if isinstance(members, int) else sorted(members)


def make_config(node_id: int = 1, members: Union[int, Iterable[int]] = 3, **overrides: Any) -> RaftConfig:
    """A valid config for ``node_id`` in a cluster of ``members``, with :data:`TIMINGS` unless overridden."""
    peers = {member: f"test:{member}" for member in member_ids(members)}
    settings = {**TIMINGS, **overrides}
    return RaftConfig(node_id=node_id, peers=peers, **settings)


def make_core(
    node_id: int = 1,
    members: Union[int, Iterable[int]] = 3,
    now: float = 0.0,
    seed: Optional[int] = None,
    hard_state: Optional[HardState] = None,
    **overrides: Any,
) -> RaftCore:
    """A fresh core (FOLLOWER) started at ``now`` from ``hard_state`` (default: term 0, no vote).

    ``seed`` seeds the injected ``random.Random`` (default: derived from ``node_id``, so runs replay).
    ``overrides`` are :class:`RaftConfig` fields.  The config is retrievable with :func:`config_of`.
    """
    config = make_config(node_id, members, **overrides)
    rng = random.Random(1000 + node_id if seed is None else seed)
    core = RaftCore(config, hard_state if hard_state is not None else HardState(), now, rng)
    _CONFIGS[core] = config
    return core


def config_of(core: RaftCore) -> RaftConfig:
    """The config a core built by :func:`make_core` was built with."""
    return _CONFIGS[core]


def lease_of(core: RaftCore) -> float:
    """The lease length the rule prescribes: ``election_timeout_min * (1 - max_clock_drift)``."""
    config = config_of(core)
    return config.election_timeout_min * (1 - config.max_clock_drift)


# ---------------------------------------------------------------------- reading outputs


def messages(output: Output, kind: type[M], to: Optional[int] = None) -> list[M]:
    """The messages of type ``kind`` in ``output`` (addressed to ``to``, if given), in order."""
    return [out.message for out in output.messages
            if isinstance(out.message, kind) and (to is None or out.to == to)]


def recipients(output: Output, kind: type[Any]) -> list[int]:
    """To whom ``output`` sends messages of type ``kind``, in order (with repetitions)."""
    return [out.to for out in output.messages if isinstance(out.message, kind)]


def only(items: list[M]) -> M:
    """The single item of ``items``; fails the test if there are none or several."""
    assert len(items) == 1, f"expected exactly one, got {items!r}"
    return items[0]


def events(output: Union[Output, Iterable[Output]], kind: Optional[type[Any]] = None) -> list[Event]:
    """The events of one output or several, in order, optionally only those of type ``kind``."""
    outputs = [output] if isinstance(output, Output) else list(output)
    return [event for out in outputs for event in out.events if kind is None or isinstance(event, kind)]


def leader_events(output: Union[Output, Iterable[Output]]) -> list[Event]:
    """The leadership events, in order: everything but RoleChanged, the VoteGranted audit events, the
    LeaderValue reports (tested on their own in test_rule_leader_value.py) and the MembershipChanged
    reports (in test_rule_membership.py)."""
    skipped = (RoleChanged, VoteGranted, LeaderValue, MembershipChanged)
    return [event for event in events(output) if not isinstance(event, skipped)]


# ---------------------------------------------------------------------- building inputs


def grant(request: VoteRequest, granted: bool = True) -> VoteResponse:
    """The answer a well-behaved voter gives to ``request``: echoes its term, round and pre-vote flag."""
    return VoteResponse(term=request.term, round=request.round, granted=granted, pre_vote=request.pre_vote)


def ack(heartbeat: Heartbeat, candidate: bool = True) -> HeartbeatResponse:
    """The answer a well-behaved follower gives to ``heartbeat``."""
    return HeartbeatResponse(term=heartbeat.term, round=heartbeat.round, candidate=candidate)


@dataclass
class Election:
    """How :func:`elect` made a core leader."""

    #: When the real vote round (the CANDIDATE phase) began, on the core's clock.
    campaign_start: float
    #: When the core became leader.
    won_at: float
    term: int
    #: The VoteRequest of the winning vote round (to every peer).
    request: Optional[VoteRequest]
    #: The output of the step that made it leader (holds the first heartbeat round).
    winning_output: Output
    #: Every output produced on the way, in order.
    outputs: list[Output] = field(default_factory=list)


def elect(
    core: RaftCore,
    now: Optional[float] = None,
    *,
    voters: Optional[Iterable[int]] = None,
    vote_delay: float = 0.0,
) -> Election:
    """Make ``core`` leader the way a healthy cluster would, and return how.

    Ticks it at its election deadline (or ``now``, if later), answers its pre-vote requests (if any) and
    then its vote requests with grants from ``voters`` (default: the lowest peer ids, just enough for a
    strict majority), each answer arriving ``vote_delay`` after the request left.
    """
    config = config_of(core)
    start = core.next_deadline if now is None else max(now, core.next_deadline)
    outputs = [core.tick(start)]
    chosen = list(voters) if voters is not None else list(config.peer_ids)[: config.quorum - 1]
    t = start
    request: Optional[VoteRequest] = None
    campaign_start = start
    if core.role is Role.PRE_CANDIDATE:
        pre = only(messages(outputs[-1], VoteRequest, to=config.peer_ids[0])) if config.peer_ids else None
        assert pre is not None and pre.pre_vote
        t += vote_delay
        for voter in chosen:
            if core.role is not Role.PRE_CANDIDATE:
                break
            outputs.append(core.receive(voter, grant(pre), t))
    if core.role is Role.CANDIDATE:
        campaign_start = t
        request = only(messages(outputs[-1], VoteRequest, to=config.peer_ids[0]))
        assert not request.pre_vote
        t += vote_delay
        for voter in chosen:
            if core.role is not Role.CANDIDATE:
                break
            outputs.append(core.receive(voter, grant(request), t))
    assert core.role is Role.LEADER, f"{core!r} did not win with voters {chosen}"
    return Election(campaign_start=campaign_start, won_at=t, term=core.term, request=request,
                    winning_output=outputs[-1], outputs=outputs)


# ---------------------------------------------------------------------- a synchronous wire


class Wire:
    """Carries outputs between cores in FIFO order, all at one instant (etcd's test ``network`` in small).

    ``cut`` holds one-way links ``(sender, recipient)`` whose messages are dropped.
    """

    def __init__(self, cores: Iterable[RaftCore]) -> None:
        self.cores = {core.node_id: core for core in cores}
        self.queue: list[tuple[int, int, Message]] = []
        self.cut: set[tuple[int, int]] = set()
        self.log: list[tuple[int, Output]] = []

    def post(self, sender: int, output: Output) -> Output:
        """Queue everything ``output`` sends; return ``output``."""
        self.log.append((sender, output))
        for out in output.messages:
            if (sender, out.to) not in self.cut and out.to in self.cores:
                self.queue.append((sender, out.to, out.message))
        return output

    def tick(self, node_id: int, now: float) -> Output:
        """Tick one core and queue what it sends."""
        return self.post(node_id, self.cores[node_id].tick(now))

    def deliver(self, now: float, limit: int = 1000) -> int:
        """Deliver queued messages (and whatever they cause) until none is left; return how many."""
        count = 0
        while self.queue:
            assert count < limit, "message storm on the wire"
            sender, recipient, message = self.queue.pop(0)
            self.post(recipient, self.cores[recipient].receive(sender, message, now))
            count += 1
        return count


# ---------------------------------------------------------------------- random inputs (Hypothesis)


def any_message(max_term: int = 8) -> st.SearchStrategy[Message]:
    """Any well-formed message with a term in [0, max_term] and a small round number."""
    terms = st.integers(min_value=0, max_value=max_term)
    rounds = st.integers(min_value=0, max_value=3)
    return st.one_of(
        st.builds(Heartbeat, term=terms, round=rounds),
        st.builds(HeartbeatResponse, term=terms, round=rounds, candidate=st.booleans()),
        st.builds(VoteRequest, term=terms, round=rounds, pre_vote=st.booleans(), transfer=st.booleans()),
        st.builds(VoteResponse, term=terms, round=rounds, granted=st.booleans(), pre_vote=st.booleans()),
        st.builds(TimeoutNow, term=terms),
        st.builds(Resign, term=terms, successor=st.integers(min_value=0, max_value=4)),
    )


def actions(members: int = 3, max_term: int = 8) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Random scripts for :func:`drive`: time passing, ticks, arbitrary messages from members and strangers,
    natural answers to what the core sent (so campaigns and leaderships really happen), and commands.

    An ``("answer", k, granted)`` answers the k-th newest message the core sent."""
    senders = st.integers(min_value=1, max_value=members + 1)
    forms: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
        "advance": st.tuples(st.just("advance"), st.integers(min_value=1, max_value=24)),
        "deadline": st.just(("deadline",)),
        "tick": st.just(("tick",)),
        "receive": st.tuples(st.just("receive"), senders, any_message(max_term)),
        # Mostly the newest messages, mostly granted: well-behaved peers answering what was just sent.
        "answer": st.tuples(st.just("answer"), st.integers(min_value=0, max_value=2 * members),
                            st.sampled_from([True, True, True, False])),
        "step_down": st.just(("step_down",)),
        "transfer": st.tuples(st.just("transfer"), st.one_of(st.none(), senders)),
        "set_candidate": st.tuples(st.just("set_candidate"), st.sampled_from([True, True, False])),
    }
    weighted = ["answer"] * 12 + ["advance"] * 3 + ["deadline"] * 4 + ["receive"] * 2 + [
        "tick", "step_down", "transfer", "set_candidate"]
    action = st.sampled_from(weighted).flatmap(lambda kind: forms[kind])
    return st.lists(action, min_size=10, max_size=80)


def answer_to(outgoing: Outgoing, granted: bool) -> Optional[Message]:
    """What a well-behaved peer would answer to ``outgoing`` (None for messages without an answer)."""
    message = outgoing.message
    if isinstance(message, Heartbeat):
        return ack(message)
    if isinstance(message, VoteRequest):
        return grant(message, granted)
    return None


def drive(core: RaftCore, script: list[tuple[Any, ...]], now: float = 0.0) -> Iterator[tuple[float, Output]]:
    """Run ``script`` (from :func:`actions`) against ``core``; yield (time, output) after every call.

    A transfer the core refuses (RaftElectionError) is checked to have changed nothing and yields nothing.
    """
    sent: list[Outgoing] = []
    for action in script:
        kind = action[0]
        if kind == "advance":
            now += action[1] * STEP
            continue
        if kind == "deadline":
            now = max(now, core.next_deadline)
            out = core.tick(now)
        elif kind == "tick":
            out = core.tick(now)
        elif kind == "receive":
            out = core.receive(action[1], action[2], now)
        elif kind == "answer":
            if not sent:
                continue
            outgoing = sent[-1 - action[1] % len(sent)]
            reply = answer_to(outgoing, action[2])
            if reply is None:
                continue
            out = core.receive(outgoing.to, reply, now)
        elif kind == "step_down":
            out = core.step_down(now)
        elif kind == "set_candidate":
            out = core.set_candidate(action[1], now)
        else:
            # A refused transfer changes nothing (a leader in a lease gap keeps its office too).
            before = (core.role, core.term, core.voted_for, core.leader_id, core.lease_expiry)
            try:
                _, out = core.transfer_leadership(now, action[1])
            except RaftElectionError:
                assert (core.role, core.term, core.voted_for, core.leader_id, core.lease_expiry) == before
                continue
        sent = (sent + list(out.messages))[-64:]
        yield now, out
