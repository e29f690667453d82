"""The benchmarks' application harness (benchmarks/app_thread/sitecustomize.py, benchmarks/appload.py).

A member process started with :func:`benchmarks.appload.app_env` must get, beside its node, a thread that
reads ``is_leader`` and one that holds the GIL now and then, both ending when the node stops; without the
variables nothing is added.  Checked in a real child interpreter, as the benchmarks start members.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.appload import APP_THREAD_DIR, app_env, describe

CHILD = """
import json, threading, time
import sitecustomize
from raft_election import MemoryStorage, RaftConfig, RaftNode
from transports.memory import InMemoryNetwork

net = InMemoryNetwork(seed=1)
node = RaftNode(RaftConfig(node_id=1, peers={1: "m:1"}), net.transport(1), MemoryStorage()).start()
deadline = time.monotonic() + 30
while time.monotonic() < deadline and (sitecustomize.reads < 50 or len(sitecustomize.holds) < 2):
    time.sleep(0.01)
threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("app-"))
import os
from raft_election.bench.procstat import APPLICATION_THREAD, cpu_seconds, threads_cpu_seconds
tasks = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
kernel_named = tasks.count(APPLICATION_THREAD)
app_cpu, process_cpu = threads_cpu_seconds(os.getpid(), APPLICATION_THREAD), cpu_seconds(os.getpid())
node.stop()
time.sleep(0.1)
after_stop = sitecustomize.reads
time.sleep(0.1)
print(json.dumps({"reads": sitecustomize.reads, "still_reading": sitecustomize.reads - after_stop,
                  "holds": sitecustomize.holds, "threads": threads, "kernel_named": kernel_named,
                  "app_cpu": app_cpu, "process_cpu": process_cpu,
                  "left": sorted(t.name for t in threading.enumerate() if t.name.startswith("app-"))}))
"""


def run_child(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout)


def test_members_get_a_reader_and_a_gil_holder_that_end_with_the_node():
    result = run_child(app_env(read_ms=1, gil_ms=5, gil_every=(0.02, 0.05)))
    assert result["threads"] == ["app-gil", "app-reader"]
    assert result["reads"] >= 50 and len(result["holds"]) >= 2
    assert all(hold > 0 for hold in result["holds"])
    assert result["still_reading"] == 0 and result["left"] == []


def test_the_application_threads_cpu_is_told_apart_from_the_members():
    """Benchmarks subtract the application's CPU (kernel thread name APPLICATION_THREAD) from a member's."""
    # Until the GIL holder burnt enough CPU to show in clock ticks (a hold's length varies with the load).
    child = CHILD.replace("len(sitecustomize.holds) < 2", "sum(sitecustomize.holds) < 0.15")
    env = app_env(read_ms=1, gil_ms=40, gil_every=(0.02, 0.05))
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    result = json.loads(done.stdout)
    assert result["kernel_named"] == 2  # the reader and the GIL holder
    assert sum(result["holds"]) >= 0.1  # CPU the GIL holder burnt, so its share cannot be 0
    assert 0 < result["app_cpu"] <= result["process_cpu"]


def test_without_the_variables_nothing_is_added():
    env = app_env(read_ms=0, gil_ms=0)
    child = CHILD.replace("sitecustomize.reads < 50 or len(sitecustomize.holds) < 2", "False")
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    result = json.loads(done.stdout)
    assert result["threads"] == [] and result["reads"] == 0 and result["holds"] == []
    assert result["kernel_named"] == 0 and result["app_cpu"] == 0


def test_the_environment_puts_the_harness_first_and_describes_it():
    env = app_env(read_ms=1, gil_ms=120, gil_every=(1, 2), tree="/some/tree", base={"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":") == [str(APP_THREAD_DIR), "/some/tree", "/x"]
    assert (env["RE_APP_READ_MS"], env["RE_APP_GIL_MS"], env["RE_APP_GIL_EVERY"]) == ("1", "120", "1-2")
    assert describe(read_ms=1, gil_ms=120, gil_every=(1, 2)) == (
        "reads is_leader every 1 ms, holds the GIL 120 ms every 1-2 s")
