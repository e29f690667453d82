"""The ``raft-election`` command line, run as a real process (``python -m raft_election``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import raft_election


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", raft_election.__name__, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_version():
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"raft-election {raft_election.__version__}"


def test_no_command_prints_help_naming_the_demo():
    result = _run()
    assert result.returncode == 0
    assert "usage: raft-election" in result.stdout and "demo" in result.stdout


def test_demo_elects_crashes_the_leader_and_hands_over():
    result = _run("demo", "--transport", "memory", "--nodes", "3", "--failovers", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    first = re.search(r"(\d) elected leader of term (\d+)", out)
    assert first, out
    crashes = re.findall(r"crash (\d): leader (\d) killed; (\d) leads term (\d+)", out)
    assert [c[0] for c in crashes] == ["1", "2"], out
    for _, old, new, _term in crashes:
        assert old != new
    terms = [int(first.group(2))] + [int(c[3]) for c in crashes]
    assert terms == sorted(set(terms)), f"terms must strictly increase: {terms}"
    assert re.search(r"graceful stop of leader (\d): (\d) leads term", out)
    assert "crash failover: median" in out
    assert re.search(r"^crash 2\s+\d\s+\d\s+\d+\s+[\d.]+$", out, re.MULTILINE), out


def test_demo_rejects_bad_arguments_with_one_clear_line():
    result = _run("demo", "--nodes", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "raft-election demo: --nodes must be at least 1"
    result = _run("demo", "--timeout", "fast")
    assert result.returncode == 2
    assert "expected MIN-MAX in milliseconds" in result.stderr


def test_an_invalid_setting_is_reported_by_field_not_as_a_traceback():
    result = _run("demo", "--timeout", "300-150")
    assert result.returncode == 2
    assert not result.stdout
    assert "election_timeout" in result.stderr and "Traceback" not in result.stderr


def test_demo_over_udp_processes_reports_failovers_and_leaves_nothing_behind():
    result = _run("demo", "--nodes", "3", "--failovers", "1")
    assert result.returncode == 0, result.stderr
    assert "member processes over UDP" in result.stdout
    pids = [int(p) for p in re.search(r"pids ([\d, ]+)\)", result.stdout).group(1).split(", ")]
    assert len(pids) == 3
    assert re.search(r"crash 1: leader (\d) killed \(SIGKILL\); (\d) leads term", result.stdout)
    assert re.search(r"graceful stop of leader \d \(SIGTERM\): \d leads term", result.stdout)
    for pid in pids:
        assert not _alive(pid), f"member process {pid} left running"


def test_ctrl_c_during_the_demo_ends_every_member_and_removes_the_temporary_files(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    demo = subprocess.Popen([sys.executable, "-m", "raft_election", "demo", "--nodes", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert demo.stdout is not None
        line = ""
        while "pids" not in line:  # the members are up and a leader was elected
            line = demo.stdout.readline()
            assert line, demo.stderr.read() if demo.stderr else "demo ended early"
        pids = [int(p) for p in re.search(r"pids ([\d, ]+)\)", line).group(1).split(", ")]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    for pid in pids:
        assert not _alive(pid), f"member process {pid} left running after Ctrl-C"
    assert not list(tmp_path.iterdir()), "temporary files left behind"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
