"""The fault rules the simulation's Hypothesis machines share: network cuts, loss, crashes and pauses.

A machine mixes :class:`FaultRules` in beside ``RuleBasedStateMachine`` and provides ``cluster`` (a
:class:`~raft_election.sim.SimulatedCluster`) and ``_server(pick)`` (a server of the history for a drawn
number).  Hypothesis orders a machine's rules by name, wherever they are defined, so taking a rule from
here or from the machine itself draws the same histories.
"""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import strategies as st
from hypothesis.stateful import rule

from raft_election.errors import MembershipChangeError

__all__ = ["CALM_DELAY", "HEARTBEAT", "LIVENESS_BOUND", "MAX_DRIFT", "SETTINGS", "TIMEOUT", "FaultRules",
           "MembershipRules", "afterwards", "end_faults", "picks"]

TIMEOUT = (0.150, 0.300)
HEARTBEAT = 0.050
MAX_DRIFT = 0.05
#: The members' settings in both machines' histories.
SETTINGS: dict[str, Any] = {"election_timeout": TIMEOUT, "heartbeat_interval": HEARTBEAT,
                            "max_clock_drift": MAX_DRIFT}
#: Loopback-like one-way delays (also the network once everything heals).
CALM_DELAY = (0.0005, 0.002)
#: A leader (in every group) within this long after the network heals (the bound of
#: tests/test_sim_properties.py).
LIVENESS_BOUND = 3 * TIMEOUT[1]

#: A drawn number that a machine maps to one of its servers (or groups).
picks = st.integers(min_value=0, max_value=15)
#: How long the cluster runs after a fault, a change or a command before the next step.
afterwards = st.sampled_from([0.0, 0.02, 0.1, 0.3, 1.0])


class FaultRules:
    """Partitions, isolation, healing, loss and duplication; crashes, restarts and pauses."""

    cluster: Any

    def _server(self, pick: int) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------- network faults

    @rule(data=st.data(), then=afterwards)
    def partition(self, data: st.DataObject, then: float) -> None:
        """Up to three sides; no message crosses between two of them."""
        servers = sorted(self.cluster.nodes)
        sides = data.draw(st.lists(st.integers(0, 2), min_size=len(servers), max_size=len(servers)),
                          label="sides")
        self.cluster.partition(*({s for s, k in zip(servers, sides) if k == side} for side in range(3)))
        self.cluster.run_for(then)

    @rule(pick=picks, then=afterwards)
    def isolate(self, pick: int, then: float) -> None:
        self.cluster.isolate(self._server(pick))
        self.cluster.run_for(then)

    @rule(then=afterwards)
    def heal(self, then: float) -> None:
        self.cluster.heal()
        self.cluster.run_for(then)

    @rule(drop=st.sampled_from([0.0, 0.1, 0.3]), duplicate=st.sampled_from([0.0, 0.1]), then=afterwards)
    def lossy(self, drop: float, duplicate: float, then: float) -> None:
        self.cluster.drop_rate = drop
        self.cluster.duplicate_rate = duplicate
        self.cluster.run_for(then)

    # ---------------------------------------------------------------- process faults

    @rule(pick=picks, then=afterwards)
    def crash(self, pick: int, then: float) -> None:
        self.cluster.crash(self._server(pick))
        self.cluster.run_for(then)

    @rule(pick=picks, then=afterwards)
    def restart(self, pick: int, then: float) -> None:
        """A crash and a start from what the server stored (every group's term and vote)."""
        self.cluster.restart(self._server(pick))
        self.cluster.run_for(then)

    @rule(pick=picks, resume=st.booleans(), then=afterwards)
    def pause(self, pick: int, resume: bool, then: float) -> None:
        """A server freezes (SIGSTOP), or a frozen one runs again."""
        node = self._server(pick)
        if resume:
            self.cluster.resume(node)
        else:
            self.cluster.pause(node)
        self.cluster.run_for(then)


    # ---------------------------------------------------------------- for the machines' own rules

    def _slow(self, pick: int, lag: Optional[tuple[float, float]], then: float) -> None:
        """A loaded host: every input of a server handled late (lease gaps without a lost office)."""
        self.cluster.slow(self._server(pick), lag)
        self.cluster.run_for(then)

    def _hit(self, leader: Optional[int], fault: str, then: float) -> None:
        """``fault`` (crash, isolate, slow or pause) aimed at ``leader``; nothing if there is none."""
        if leader is None:
            pass
        elif fault == "crash":
            self.cluster.crash(leader)
        elif fault == "isolate":
            self.cluster.isolate(leader)
        elif fault == "slow":
            self.cluster.slow(leader, (0.02, 0.12))
        else:
            self.cluster.pause(leader)
        self.cluster.run_for(then)

    def _forge(self, forger: int, leader: Optional[int], pick: int, at_leader: bool, then: float) -> None:
        """False (or stale) death evidence at ``forger``, about ``leader`` or a drawn server."""
        about = leader if at_leader and leader is not None else self._server(pick)
        self.cluster.forge_evidence(forger, about)
        self.cluster.run_for(then)

    def _end_faults(self) -> None:
        end_faults(self.cluster)


def end_faults(cluster: Any) -> None:
    """Heal, no loss, loopback delays, every server running, unpaused and at full speed."""
    cluster.heal()
    cluster.drop_rate = cluster.duplicate_rate = 0.0
    cluster.delay = CALM_DELAY
    for node_id, node in cluster.nodes.items():
        if not node.alive:
            cluster.start(node_id)
        cluster.resume(node_id)
        cluster.slow(node_id, None)


class MembershipRules:
    """Membership changes through the (default group's) leader: adds of fresh and of outside servers,
    removals.  A machine provides ``cluster``, ``max_servers``, ``_leader()`` and ``_server(pick)``."""

    cluster: Any
    max_servers: int

    def _leader(self) -> Optional[int]:
        raise NotImplementedError

    @rule(then=afterwards)
    def add_fresh_server(self, then: float) -> None:
        """A brand-new server joins (hosting every group) and the leader adds it (thesis §4.2.1)."""
        if len(self.cluster.nodes) < self.max_servers:
            node_id = max(self.cluster.nodes) + 1
            self.cluster.add_server(node_id)
            self._ask("add", node_id)
        self.cluster.run_for(then)

    @rule(pick=picks, then=afterwards)
    def add_server_again(self, pick: int, then: float) -> None:
        """The leader adds a server outside its configuration (a removed one, or one whose add was lost)."""
        leader = self._leader()
        outside = sorted(set(self.cluster.nodes) - self.cluster.members(leader)) if leader is not None else []
        if outside:
            self._ask("add", outside[pick % len(outside)])
        self.cluster.run_for(then)

    @rule(pick=picks, itself=st.booleans(), then=afterwards)
    def remove_member(self, pick: int, itself: bool, then: float) -> None:
        """The leader removes a member of its configuration, or itself (thesis §4.2.2)."""
        leader = self._leader()
        if leader is not None:
            members = sorted(self.cluster.members(leader))
            self._ask("remove", leader if itself else members[pick % len(members)])
        self.cluster.run_for(then)

    def _ask(self, kind: str, node_id: int) -> None:
        """Ask the (default group's) leader, if any, for a change; a refusal (one at a time) is fine."""
        leader = self._leader()
        if leader is None:
            return
        try:
            if kind == "add":
                if node_id not in self.cluster.members(leader):
                    self.cluster.add_member(leader, node_id)
            else:
                self.cluster.remove_member(leader, node_id)
        except MembershipChangeError:
            pass  # another change is under way, or the last member: refused, nothing changed
