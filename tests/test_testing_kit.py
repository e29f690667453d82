"""The testing kit for users (raft_election.testing): its fault schedules, its state machine, its pytest
plugin, and the worked example run as a user runs it, from a fresh virtual environment with nothing but the
built wheel, pytest and hypothesis.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.sim import SimulatedCluster
from raft_election.testing import (
    ALL_KINDS,
    THREADED_KINDS,
    FaultStep,
    ThreadedCluster,
    apply,
    calm,
    cluster_configs,
    fault_schedules,
)
from raft_election.testing.plugin import seed_of

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "fenced_counter"


@settings(max_examples=100)
@given(schedule=fault_schedules(5))
def test_fault_schedules_draw_valid_steps_of_every_kind_for_the_members(schedule):
    for step in schedule:
        assert step.kind in ALL_KINDS and step.then > 0
        assert all(1 <= node <= 5 for node in step.nodes)
        if step.kind == "partition":
            assert sorted(node for group in step.groups for node in group) == [1, 2, 3, 4, 5]
        assert str(step).startswith(step.kind)


@settings(max_examples=50)
@given(settings_=cluster_configs(), schedule=fault_schedules(3, max_steps=5), seed=st.integers(0, 2**16))
def test_any_configuration_under_any_schedule_keeps_the_guarantees_and_recovers(settings_, schedule, seed):
    """The strategies and apply() on the simulation: the oracle checks every step, then calm() heals."""
    cluster = SimulatedCluster(3, seed=seed, **settings_)
    apply(schedule, cluster)
    calm(cluster)
    cluster.wait_for_leader(timeout=30 * settings_["election_timeout"][1])
    cluster.oracle.check_lease_order()
    assert not cluster.oracle.violations


def test_apply_carries_a_schedule_out_on_threaded_members_and_refuses_what_threads_cannot_do():
    cluster = ThreadedCluster(3, seed=4)
    try:
        cluster.start_all()
        leader = cluster.wait_for_stable_leader()
        apply([FaultStep(kind="isolate", nodes=(leader,), then=0.5),
               FaultStep(kind="crash", nodes=(leader,)), FaultStep(kind="heal", then=0.1)], cluster)
        assert not cluster.alive(leader)
        calm(cluster)
        assert cluster.alive(leader)
        assert cluster.wait_for_stable_leader() is not None
        with pytest.raises(ValueError, match="cannot pause a member"):
            apply([FaultStep(kind="pause", nodes=(1,))], cluster)
        assert "pause" not in THREADED_KINDS
    finally:
        cluster.close()


def test_the_plugin_fixtures_give_seeded_checked_clusters(pytester):
    """The fixtures as a user's test sees them (the plugin is registered through its entry point)."""
    pytester.makepyfile(test_user="""
        def test_user(memory_network, raft_cluster, sim_cluster):
            cluster = raft_cluster(3)
            assert cluster.wait_for_stable_leader() in (1, 2, 3)
            sim = sim_cluster(3)
            assert sim.wait_for_leader() in (1, 2, 3)
            assert memory_network.transport(1) is not None
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_seed_of_a_test_is_its_node_id():
    class Request:
        class node:  # noqa: N801 (a stand-in for pytest's request.node)
            nodeid = "tests/test_a.py::test_b"

    assert seed_of(Request()) == seed_of(Request())  # type: ignore[arg-type]


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, check=False,
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env})


def _failing_case(output: str) -> str:
    """The 'Failing test case' Hypothesis printed: the steps of the shrunk counterexample."""
    lines = [re.sub(r"^E\s+", "", line) for line in output.splitlines()
             if line.startswith("E ") and ("state." in line or "Failing test case" in line)]
    return "\n".join(lines)


def test_the_example_runs_from_a_fresh_environment_and_catches_the_broken_service(tmp_path):
    """As a user: pip install raft-election pytest hypothesis (the built wheel), then the example's tests,
    outside the repository.  The fenced service passes; the unfenced one fails with a shrunk
    counterexample, and the same seed finds the same counterexample again."""
    source = tmp_path / "source"  # built from a copy: an in-tree build would leave build/ in the checkout
    for part in ("raft_election", "transports"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("setup.cfg", "setup.py", "README.md"):
        shutil.copy(REPO / part, source / part)
    wheels = tmp_path / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                 tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("raft_election-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    installed = _run([python, "-m", "pip", "install", "-q", str(wheel), "pytest", "hypothesis"], tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    work = tmp_path / "user"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    passed = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], work)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "3 passed" in passed.stdout
    cases = []
    for attempt in range(2):  # each in a fresh copy: no example database to replay from, only the seed
        copy = tmp_path / f"broken-{attempt}"
        shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        failed = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "Machine",
                       "--hypothesis-seed=20261207"], copy, COUNTER_SERVICE="unfenced")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "the counter went back" in failed.stdout
        cases.append(_failing_case(failed.stdout))
    assert cases[0] and cases[0] == cases[1], cases
    assert "state.start_cluster(seed=" in cases[0]
