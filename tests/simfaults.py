"""The fault rules the simulation's Hypothesis machines share: network cuts, loss, crashes and pauses.

A machine mixes :class:`FaultRules` in beside ``RuleBasedStateMachine`` and provides ``cluster`` (a
:class:`~raft_election.sim.SimulatedCluster`) and ``_server(pick)`` (a server of the history for a drawn
number).  Hypothesis orders a machine's rules by name, wherever they are defined, so taking a rule from
here or from the machine itself draws the same histories.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

__all__ = ["CALM_DELAY", "HEARTBEAT", "LIVENESS_BOUND", "MAX_DRIFT", "SETTINGS", "TIMEOUT", "FaultRules",
           "afterwards", "picks"]

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
