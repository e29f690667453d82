"""Leader failover of etcd's and ZooKeeper's standard election recipes, measured on this machine.

Why: the project's own figure (kill the leader, time until a new one takes office) means little alone;
users choosing between this library and an external coordination service want the same figure for the
usual alternatives, measured the same way on the same machine.

What: a local 3-member etcd cluster and/or a 3-member ZooKeeper ensemble on 127.0.0.1 (fresh temp dirs,
free ports), and 3 election contenders, each a separate Python process
(``benchmarks/coordination_contender.py``) campaigning with the system's own recipe: etcd's v3
concurrency election (lease + key under a prefix, lowest create revision leads) and kazoo's ``Election``
(ephemeral sequential znodes).  Each trial waits until the contenders are stable, waits a further random
fraction of the keep-alive period (so the kill lands at a random phase of the lease renewals or pings),
SIGKILLs the contender that leads, and times from just before the kill to the ``leader`` line of another
contender (both ``time.monotonic()``, which is system-wide on Linux).  The killed contender is then
restarted.  A client killed this way says no goodbye, so its lease (etcd) or session (ZooKeeper) must
expire on the server before the next contender is told: failover is bounded below by that timeout.

Settings (each on a fresh cluster):

* etcd ``HEARTBEAT_MS:ELECTION_MS:TTL_S`` (``--etcd``): default ``100:1000:60`` (etcd's default flags and
  ``concurrency.NewSession``'s default 60 s TTL, which ``etcdctl elect`` uses), ``100:1000:2`` (the
  smallest TTL etcd grants at its default flags: it raises smaller ones to ceil(1.5 x election timeout)),
  and ``10:100:1`` (fast raft ticks, 1 s, the smallest TTL the API can express).
* ZooKeeper ``TICK_MS:SESSION_MS`` (``--zk``): default ``2000:10000`` (shipped tickTime, kazoo's default
  10 s session), ``2000:4000`` (the smallest session the shipped tickTime allows, 2 x tickTime), and
  ``200:400`` (tickTime 200 ms, session 2 x tickTime).

Run::

    python -m benchmarks.compare_coordination --system both --trials 20 \\
        --json benchmarks/results/coordination.json

Needs the Debian packages ``etcd-server`` and ``zookeeper`` (with a JRE) and ``pip install kazoo``.
It prints one markdown table: min, median, p90, p99 (nearest rank) and max failover in ms per setting.
Every process it starts is ended, and its temp dir removed, on exit, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

LOG = logging.getLogger("compare_coordination")
CONTENDER = Path(__file__).resolve().parent / "coordination_contender.py"
MEMBERS = 3
CONTENDERS = 3
ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


class BenchError(RuntimeError):
    """The benchmark could not run a trial (a server or contender misbehaved)."""


@dataclass(frozen=True)
class Setting:
    """One configuration to measure: a system, its server timing and the client's lease/session."""

    system: str
    #: etcd: --heartbeat-interval; ZooKeeper: tickTime (ms).
    tick_ms: int
    #: etcd: --election-timeout (ms); ZooKeeper: unused (0).
    election_ms: int
    #: etcd: lease TTL requested (ms, whole seconds); ZooKeeper: session timeout requested (ms).
    timeout_ms: int

    @property
    def label(self) -> str:
        if self.system == "etcd":
            return (f"heartbeat {self.tick_ms} ms, election {self.election_ms} ms, "
                    f"lease TTL {self.timeout_ms // 1000} s")
        return f"tickTime {self.tick_ms} ms, session timeout {self.timeout_ms} ms"


@dataclass
class Result:
    """Samples and counts of one setting."""

    setting: Setting
    samples_ms: list[float] = field(default_factory=list)
    #: What the server granted: etcd lease TTL (s) or negotiated ZooKeeper session timeout (ms).
    granted: str = ""
    #: Leader changes not caused by a kill, and contenders that lost their lease/session unprovoked.
    unprovoked: int = 0
    lost: int = 0


def parse_etcd(spec: str) -> Setting:
    """Parse ``HEARTBEAT_MS:ELECTION_MS:TTL_S``."""
    heartbeat, election, ttl = (int(part) for part in spec.split(":"))
    return Setting("etcd", heartbeat, election, ttl * 1000)


def parse_zk(spec: str) -> Setting:
    """Parse ``TICK_MS:SESSION_MS``."""
    tick, session = (int(part) for part in spec.split(":"))
    return Setting("zookeeper", tick, 0, session)


def free_ports(count: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``percent`` % of values <= it."""
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Min, median, p90, p99 (nearest rank) and max of ``samples``."""
    ordered = sorted(samples)
    return {"min": ordered[0], "median": statistics.median(ordered), "p90": nearest_rank(ordered, 90),
            "p99": nearest_rank(ordered, 99), "max": ordered[-1]}


class Processes:
    """Every process the benchmark started, so that all of them, and only they, can be ended by PID."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._files: list[IO[Any]] = []

    def spawn(self, argv: list[str], log_path: Optional[Path] = None, pipe: bool = False,
              env: Optional[dict[str, str]] = None) -> subprocess.Popen[Any]:
        """Start ``argv`` in its own session (Ctrl-C reaches only us; we end it) and remember it."""
        out: Any = subprocess.DEVNULL
        if pipe:
            out = subprocess.PIPE
        elif log_path is not None:
            handle = log_path.open("ab")
            self._files.append(handle)
            out = handle
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if log_path is None else out,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                text=pipe, bufsize=1 if pipe else -1)
        self._procs.append(proc)
        LOG.debug("started pid %d: %s", proc.pid, " ".join(argv))
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """SIGTERM ``proc``, SIGKILL it after ``grace`` seconds, and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        """End every process started, newest first, and close their log files."""
        for proc in reversed(self._procs):
            self.stop(proc)
        self._procs.clear()
        for handle in self._files:
            handle.close()
        self._files.clear()


def http_get_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def wait_until(check: Any, what: str, timeout: float) -> None:
    """Call ``check()`` until it returns true; raise :class:`BenchError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_etcd(procs: Processes, workdir: Path, setting: Setting) -> list[str]:
    """Start a 3-member etcd cluster with ``setting``'s raft timing; return its client URLs."""
    ports = free_ports(2 * MEMBERS)
    clients = [f"http://127.0.0.1:{ports[i]}" for i in range(MEMBERS)]
    peers = [f"http://127.0.0.1:{ports[MEMBERS + i]}" for i in range(MEMBERS)]
    cluster = ",".join(f"m{i}={peers[i]}" for i in range(MEMBERS))
    for i in range(MEMBERS):
        procs.spawn(["etcd", "--name", f"m{i}", "--data-dir", str(workdir / f"etcd{i}"),
                     "--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
                     "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                     "--initial-cluster", cluster, "--initial-cluster-state", "new",
                     "--initial-cluster-token", "coordination-bench",
                     "--heartbeat-interval", str(setting.tick_ms),
                     "--election-timeout", str(setting.election_ms), "--logger", "zap"],
                    log_path=workdir / f"etcd{i}.log")
    for url in clients:
        wait_until(lambda url=url: http_get_json(f"{url}/health").get("health") == "true",
                   f"etcd {url} healthy", 60)
    return clients


def zk_command(address: tuple[str, int], command: bytes) -> str:
    """Send a ZooKeeper four-letter command and return its answer."""
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(command)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def start_zookeeper(procs: Processes, workdir: Path, setting: Setting, classpath: str) -> tuple[str, str]:
    """Start a 3-member ZooKeeper ensemble with ``setting``'s tickTime; return (hosts, server version)."""
    java = shutil.which("java")
    if java is None:
        raise BenchError("java not found: apt-get install -y zookeeper default-jre-headless")
    ports = free_ports(3 * MEMBERS)
    servers = "\n".join(f"server.{i + 1}=127.0.0.1:{ports[MEMBERS + i]}:{ports[2 * MEMBERS + i]}"
                        for i in range(MEMBERS))
    for i in range(MEMBERS):
        data = workdir / f"zk{i}"
        data.mkdir()
        (data / "myid").write_text(f"{i + 1}\n")
        # initLimit/syncLimit as in Debian's shipped zoo.cfg; session bounds left at their defaults
        # (2 and 20 x tickTime).  srvr is whitelisted to see the ensemble form.
        config = data / "zoo.cfg"
        config.write_text(f"tickTime={setting.tick_ms}\ninitLimit=10\nsyncLimit=5\ndataDir={data}\n"
                          f"clientPort={ports[i]}\nclientPortAddress=127.0.0.1\n"
                          f"admin.enableServer=false\n4lw.commands.whitelist=srvr\n{servers}\n")
        procs.spawn([java, "-Xmx256m", "-XX:+UseSerialGC", "-cp", classpath,
                     "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                     "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config)],
                    log_path=workdir / f"zk{i}.log")
    addresses = [("127.0.0.1", port) for port in ports[:MEMBERS]]

    def formed() -> bool:
        modes = [zk_command(address, b"srvr") for address in addresses]
        return sum("Mode: leader" in m for m in modes) == 1 and sum("Mode: follower" in m for m in modes) == 2

    wait_until(formed, "the ZooKeeper ensemble to elect a leader", 90)
    version = zk_command(addresses[0], b"srvr").splitlines()[0].split(":", 1)[1].strip()
    return ",".join(f"{host}:{port}" for host, port in addresses), version


@dataclass
class Event:
    """One line printed by a contender."""

    slot: int
    pid: int
    kind: str
    time: float
    detail: str


class Contenders:
    """The three contender processes, their output gathered into one queue by reader threads."""

    def __init__(self, procs: Processes, setting: Setting, endpoints: list[str]) -> None:
        self.procs = procs
        self.setting = setting
        self.endpoints = endpoints
        self.events: queue.Queue[Event] = queue.Queue()
        self.running: dict[int, subprocess.Popen[Any]] = {}

    def start(self, slot: int) -> subprocess.Popen[Any]:
        """Start (or restart) contender ``slot``."""
        argv = [sys.executable, str(CONTENDER), "--system", self.setting.system, "--name", f"c{slot}",
                "--endpoint", self.endpoints[slot % len(self.endpoints)]]
        if self.setting.system == "etcd":
            argv += ["--ttl", str(self.setting.timeout_ms // 1000)]
        else:
            argv += ["--session-timeout", str(self.setting.timeout_ms / 1000.0)]
        proc = self.procs.spawn(argv, pipe=True)
        self.running[slot] = proc
        threading.Thread(target=self._read, args=(slot, proc), daemon=True).start()
        return proc

    def _read(self, slot: int, proc: subprocess.Popen[Any]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                parts = line.split(maxsplit=2)
                if len(parts) >= 2 and parts[0] in ("ready", "leader", "lost"):
                    self.events.put(Event(slot, proc.pid, parts[0], float(parts[1]),
                                          parts[2].strip() if len(parts) > 2 else ""))
                else:
                    LOG.debug("contender c%d: %s", slot, line.rstrip())
        self.events.put(Event(slot, proc.pid, "exit", time.monotonic(), str(proc.poll())))

    def next_event(self, deadline: float) -> Event:
        """The next contender event, or :class:`BenchError` at ``deadline`` (monotonic)."""
        try:
            return self.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError("timed out waiting for a contender event") from None


def measure(result: Result, endpoints: list[str], procs: Processes, *, trials: int, settle: float,
            rng: random.Random) -> None:
    """Run ``trials`` kill-the-leader trials on a running cluster, adding the samples to ``result``.

    Samples go straight into ``result`` so that an interrupted run still reports the trials it finished.
    """
    setting = result.setting
    pool = Contenders(procs, setting, endpoints)
    timeout_s = setting.timeout_ms / 1000.0
    patience = 3 * timeout_s + 30.0
    leader: Optional[Event] = None
    ready: set[int] = set()
    for slot in range(CONTENDERS):
        pool.start(slot)

    def handle(event: Event) -> None:
        """Book-keeping common to every phase: readiness, losses, exits of live contenders."""
        nonlocal leader
        if event.pid != pool.running[event.slot].pid:
            return  # a line from a process already replaced
        if event.kind == "ready":
            ready.add(event.slot)
            result.granted = event.detail
        elif event.kind in ("lost", "exit"):
            result.lost += 1
            LOG.warning("contender c%d (pid %d) %s %s; restarting it", event.slot, event.pid, event.kind,
                        event.detail)
            ready.discard(event.slot)
            procs.stop(pool.running[event.slot], grace=0)
            if leader is not None and leader.slot == event.slot:
                leader = None
            pool.start(event.slot)

    # Initial election: wait for a leader and for every contender to be ready.
    deadline = time.monotonic() + patience
    while leader is None or len(ready) < CONTENDERS:
        event = pool.next_event(deadline)
        if event.kind == "leader" and event.pid == pool.running[event.slot].pid:
            leader = event
        else:
            handle(event)
    LOG.info("%s %s: initial leader c%d, granted %s", setting.system, setting.label, leader.slot,
             result.granted)

    for trial in range(trials):
        # Stable for `settle` s, then a random phase of the keep-alive period (TTL/3 or session/3).
        time.sleep(settle + rng.uniform(0.0, timeout_s / 3.0))
        while True:  # anything that happened meanwhile
            try:
                event = pool.events.get_nowait()
            except queue.Empty:
                break
            if event.kind == "leader" and event.pid == pool.running[event.slot].pid:
                result.unprovoked += 1
                leader = event
            else:
                handle(event)
        if leader is None or len(ready) < CONTENDERS:
            raise BenchError("contenders not stable before a kill")
        victim = pool.running[leader.slot]
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        leader = None
        deadline = killed_at + patience
        while leader is None:
            event = pool.next_event(deadline)
            if event.pid == victim.pid:
                continue  # the killed process's own exit
            if event.kind == "leader" and event.pid == pool.running[event.slot].pid:
                leader = event
            else:
                handle(event)
        failover_ms = (leader.time - killed_at) * 1000.0
        result.samples_ms.append(failover_ms)
        LOG.info("%s trial %d/%d: killed c%d, c%d leads after %.1f ms", setting.system, trial + 1, trials,
                 next(s for s, p in pool.running.items() if p is victim), leader.slot, failover_ms)
        # Restart the killed contender and wait until it is connected again.
        slot = next(s for s, p in pool.running.items() if p is victim)
        procs.stop(victim, grace=0)
        ready.discard(slot)
        pool.start(slot)
        deadline = time.monotonic() + patience
        while len(ready) < CONTENDERS:
            event = pool.next_event(deadline)
            if event.kind == "leader" and event.pid == pool.running[event.slot].pid:
                result.unprovoked += 1
                leader = event
            else:
                handle(event)
    for proc in list(pool.running.values()):
        procs.stop(proc, grace=0)


def run_setting(result: Result, *, trials: int, settle: float, rng: random.Random, classpath: str,
                keep: bool, versions: dict[str, str]) -> None:
    """Start a fresh cluster for ``result.setting``, measure it into ``result``, and tear it all down."""
    setting = result.setting
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix=f"coordination-{setting.system}-"))
    LOG.info("%s: %s (work dir %s)", setting.system, setting.label, workdir)
    try:
        if setting.system == "etcd":
            endpoints = start_etcd(procs, workdir, setting)
        else:
            hosts, versions["zookeeper"] = start_zookeeper(procs, workdir, setting, classpath)
            endpoints = [hosts]
        measure(result, endpoints, procs, trials=trials, settle=settle, rng=rng)
    finally:
        procs.stop_all()
        if keep:
            LOG.info("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def tool_versions() -> dict[str, str]:
    """Versions of etcd, kazoo, Python and Java, as far as they are installed."""
    versions = {"python": platform.python_version()}
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        first = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=True,
                               timeout=10).stdout.splitlines()[0]
        versions["etcd"] = first.split(":", 1)[1].strip()  # "etcd Version: 3.4.23"
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["kazoo"] = importlib.metadata.version("kazoo")
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        versions["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True,
                                          check=True, timeout=30).stderr.splitlines()[0]
    return versions


def table(results: Sequence[Result], trials: int) -> str:
    """The markdown table of all results."""
    lines = ["| system | settings | granted | n | min | median | p90 | p99 | max | unprovoked | lost |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        if not result.samples_ms:
            continue
        stats = summary(result.samples_ms)
        cells = " | ".join(f"{stats[key]:.0f}" for key in ("min", "median", "p90", "p99", "max"))
        lines.append(f"| {result.setting.system} | {result.setting.label} | {result.granted} | "
                     f"{len(result.samples_ms)} | {cells} | {result.unprovoked} | {result.lost} |")
    return "\n".join(lines) + (f"\n\nFailover in ms, n SIGKILLs of the leading contender per setting "
                               f"({trials} asked); p90/p99 nearest rank.")


def terminate(signum: int, _frame: Any) -> None:
    """Turn SIGTERM into SystemExit so that every ``finally`` runs and cleans up."""
    raise SystemExit(128 + signum)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=("etcd", "zookeeper", "both"), default="both")
    parser.add_argument("--trials", type=int, default=20, help="kills per setting (default 20)")
    parser.add_argument("--json", help="write every sample and the versions to this file")
    parser.add_argument("--etcd", nargs="*", default=["100:1000:60", "100:1000:2", "10:100:1"],
                        metavar="HB_MS:ELECTION_MS:TTL_S", help="etcd settings to measure")
    parser.add_argument("--ttl", type=int, nargs="+", metavar="TTL_S",
                        help="etcd lease TTLs to measure at etcd's default flags (replaces --etcd)")
    parser.add_argument("--zk", nargs="*", default=["2000:10000", "2000:4000", "200:400"],
                        metavar="TICK_MS:SESSION_MS", help="ZooKeeper settings to measure")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to leave the contenders stable before a kill, plus a random "
                             "fraction of the keep-alive period (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zk-classpath", default=ZK_CLASSPATH, help="classpath of the ZooKeeper server")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the work dirs (server logs)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if started with SIGINT ignored

    etcd_specs = [f"100:1000:{ttl}" for ttl in args.ttl] if args.ttl else args.etcd
    settings: list[Setting] = []
    if args.system in ("etcd", "both"):
        settings += [parse_etcd(spec) for spec in etcd_specs]
    if args.system in ("zookeeper", "both"):
        settings += [parse_zk(spec) for spec in args.zk]
    rng = random.Random(args.seed)
    versions = tool_versions()
    results: list[Result] = []
    failed = 0
    try:
        for setting in settings:
            try:
                results.append(Result(setting))
                run_setting(results[-1], trials=args.trials, settle=args.settle, rng=rng,
                            classpath=args.zk_classpath, keep=args.keep_tmp, versions=versions)
            except BenchError:
                LOG.exception("%s (%s) failed; going on with the next setting", setting.system,
                              setting.label)
                failed += 1
    except KeyboardInterrupt:
        LOG.warning("interrupted; results so far follow")
        failed += 1
    print(f"{CONTENDERS} contenders (separate Python processes) against {MEMBERS} servers on 127.0.0.1; "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          + ", ".join(f"{name} {version}" for name, version in versions.items()) + "\n")
    print(table(results, args.trials))
    if args.json:
        payload = {"versions": versions, "trials": args.trials, "settle_s": args.settle, "seed": args.seed,
                   "cpus": os.cpu_count(), "machine": platform.machine(),
                   "results": [{"setting": asdict(r.setting), "label": r.setting.label, "granted": r.granted,
                                "unprovoked": r.unprovoked, "lost": r.lost, "samples_ms": r.samples_ms,
                                "summary_ms": summary(r.samples_ms) if r.samples_ms else None}
                               for r in results]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
