"""Resource costs of the election: idle CPU and memory per member, messages per election, handling speed.

Three parts, each runnable alone (subcommands), or all in a row (``all``, the default):

* ``idle``: five member processes (``raft-election run``) on loopback elect a leader and settle; then
  each member's CPU time (``utime + stime`` from ``/proc/<pid>/stat``) is sampled at the start and the end
  of a window, and its ``VmRSS`` (``/proc/<pid>/status``) at the end.  Reported per member with its role
  (from the members' own events) and, from SIGUSR1 status snapshots around the window, its message rates.
  It answers "what does an idle cluster cost", which short timeouts make worse.  ``--pysyncobj`` measures
  PySyncObj members (``benchmarks/pysyncobj_member.py``) the same way, if that script exists.
* ``sweep``: election time and election messages against cluster size, with threaded members over the
  in-memory network, through ``raft-election bench --transport memory``'s trial loop (the leader is cut off
  the network and stopped at a random moment; the time runs until another member's lease begins; the
  messages are the vote and pre-vote requests and answers the survivors sent; the terms it took tell split
  votes apart).
* ``throughput``: a plain ``time.perf_counter`` loop driving :class:`~raft_election.core.RaftCore`
  directly (a follower answering heartbeats, a leader of five taking heartbeat responses), then the codec
  around it (bytes in, bytes out, as ``RaftNode`` does), then a real ``RaftNode`` fed through its
  transport's deliver callback.  It bounds how many members and how short a heartbeat one core can serve.

Every part prints markdown tables with its settings; ``--json FILE`` also writes every number.  Run::

    python -m benchmarks.resources idle --seconds 30
    python -m benchmarks.resources idle --seconds 30 --timeout 12-24 --heartbeat 4
    python -m benchmarks.resources sweep --trials 20
    python -m benchmarks.resources throughput
    python -m benchmarks.resources --quick        # everything, tiny, to check the script works
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import attrs

from raft_election import MemoryStorage, RaftConfig, RaftNode
from raft_election.bench import BenchSettings, run_one_range
from raft_election.bench.procstat import CLOCK_TICKS, cpu_seconds
from raft_election.bench.report import range_figures
from raft_election.codec import Codec
from raft_election.core import RaftCore
from raft_election.hardstate import HardState
from raft_election.messages import Envelope, Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse
from raft_election.processes import MemberEvent, MemberProcesses, free_ports, write_cluster_file
from raft_election.roles import Role
from raft_election.transport import DeliverFn, Transport

logger = logging.getLogger("benchmarks.resources")

PYSYNCOBJ_MEMBER = Path(__file__).resolve().parent / "pysyncobj_member.py"


# ---------------------------------------------------------------------- small helpers


def parse_timeout(text: str) -> tuple[float, float]:
    """``"150-300"`` (ms) -> ``(0.150, 0.300)`` seconds."""
    try:
        low, high = (float(part) / 1000 for part in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX in ms, like 150-300, got {text!r}") from None
    if not 0 < low < high:
        raise argparse.ArgumentTypeError(f"need 0 < MIN < MAX, got {text!r}")
    return low, high


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 3,5,7, got {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"every size must be at least 2, got {text!r}")
    return sizes


def ms_range(timeout: tuple[float, float]) -> str:
    return f"{timeout[0] * 1000:g}–{timeout[1] * 1000:g} ms"


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"python": f"{platform.python_implementation()} {platform.python_version()}",
            "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load]}


def machine_line() -> str:
    info = machine()
    return (f"{info['python']} on {info['machine']}, {info['cpus']} CPUs, load average "
            f"{' / '.join(f'{x:.2f}' for x in info['loadavg'])} (1/5/15 min) at the start")


#: A table cell that is a number (or a range or percentage of numbers, or a dash for none).
_NUMBER = re.compile(r"[0-9.,–% -]+|—")


def markdown(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: columns of numbers right-aligned, the others left-aligned."""
    texts = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header[i]), *(len(row[i]) for row in texts)) for i in range(len(header))]
    numeric = [bool(texts) and all(_NUMBER.fullmatch(row[i]) for row in texts) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
                                 for i, cell in enumerate(cells)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in texts)])


# ---------------------------------------------------------------------- part 1: idle CPU and RSS


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        return dict(line.split(":", 1) for line in file.read().splitlines() if ":" in line)


def rss_mib(status: Mapping[str, str]) -> float:
    value, unit = status["VmRSS"].split()
    assert unit == "kB", unit
    return int(value) / 1024


def roles_from_events(events: Iterable[MemberEvent], members: Iterable[int]) -> dict[int, str]:
    """Each member's role after the given events: leader from ``became_leader`` until ``lost_leadership``."""
    roles = dict.fromkeys(members, "follower")
    for event in events:
        if event.event == "became_leader":
            roles[event.node] = "leader"
        elif event.event in ("lost_leadership", "stopped"):
            roles[event.node] = "follower"
    return roles


@attrs.frozen(kw_only=True)
class IdleSettings:
    implementation: str  # "raft_election" or "pysyncobj"
    transport: str
    members: int
    election_timeout: tuple[float, float]
    heartbeat: float
    seconds: float
    settle: float
    pysyncobj_tick: Optional[float] = None
    #: Our members' ``fast_failover`` (a follower's timer then also wakes when each heartbeat is due).
    fast_failover: bool = True


def idle_run(settings: IdleSettings) -> dict[str, Any]:
    """Start the members, wait for a leader and settling, then measure one window; return the results."""
    ids = list(range(1, settings.members + 1))
    ours = settings.implementation == "raft_election"
    kind = "udp" if ours and settings.transport == "udp" else "tcp"
    with tempfile.TemporaryDirectory(prefix="raft-resources-") as workdir:
        ports = free_ports(settings.members, kind=kind)
        members = {i: f"127.0.0.1:{port}" for i, port in zip(ids, ports)}
        path = write_cluster_file(os.path.join(workdir, "cluster.json"), members,
                                  transport=settings.transport, election_timeout=settings.election_timeout,
                                  heartbeat_interval=settings.heartbeat, fast_failover=settings.fast_failover)
        command: Optional[Callable[[int], list[str]]] = None
        if not ours:
            tick = str(settings.pysyncobj_tick)

            def command(node_id: int) -> list[str]:
                return [sys.executable, str(PYSYNCOBJ_MEMBER), "--cluster", path, "--id", str(node_id),
                        "--tick", tick, "--connection-timeout", "30"]

        with MemberProcesses(path, workdir, ids, command=command) as processes:
            started = time.monotonic()
            processes.start_all()
            first = processes.wait_for(lambda e: e.event == "became_leader", timeout=60)
            logger.info("%s: member %d leads term %d after %.0f ms; settling %.1f s",
                        settings.implementation, first.node, first.term,
                        (first.monotonic - started) * 1000, settings.settle)
            time.sleep(settings.settle)
            before = {i: processes.status(i) for i in ids} if ours else {}
            mark = processes.mark()
            pids = {i: processes.pid(i) for i in ids}
            cpu_start = {i: cpu_seconds(pids[i]) for i in ids}
            window_start = time.monotonic()
            logger.info("measuring for %.1f s", settings.seconds)
            time.sleep(settings.seconds)
            cpu_end = {i: cpu_seconds(pids[i]) for i in ids}
            window = time.monotonic() - window_start
            statuses = {i: proc_status(pids[i]) for i in ids}
            after = {i: processes.status(i) for i in ids} if ours else {}
            events = processes.events
            alive = {i: processes.alive(i) for i in ids}
    roles = roles_from_events(events, ids)
    changes = [e for e in events[mark:] if e.event in ("became_leader", "lost_leadership")]
    rows = []
    for i in ids:
        row: dict[str, Any] = {
            "member": i, "pid": pids[i], "role": roles[i], "alive": alive[i],
            "cpu_seconds": cpu_end[i] - cpu_start[i],
            "cpu_percent": (cpu_end[i] - cpu_start[i]) / window * 100,
            "rss_mib": rss_mib(statuses[i]), "threads": int(statuses[i]["Threads"]),
        }
        if ours:
            span = float(after[i]["monotonic"]) - float(before[i]["monotonic"])
            for name in ("messages_sent", "messages_received"):
                delta = after[i]["counters"].get(name, 0) - before[i]["counters"].get(name, 0)
                row[f"{name}_per_second"] = delta / span
        rows.append(row)
    followers = [row for row in rows if row["role"] == "follower"]
    leaders = [row for row in rows if row["role"] == "leader"]
    return {
        "settings": attrs.asdict(settings), "window_seconds": window, "rows": rows,
        "followers_mean": {key: statistics.fmean(row[key] for row in followers)
                           for key in ("cpu_percent", "rss_mib")} if followers else None,
        "leader": {key: leaders[0][key] for key in ("member", "cpu_percent", "rss_mib")} if leaders else None,
        "leaders_at_end": len(leaders),
        "leadership_events_in_window": [
            {"node": e.node, "event": e.event, "term": e.term, "monotonic": e.monotonic} for e in changes],
    }


def idle_report(result: Mapping[str, Any]) -> str:
    settings = result["settings"]
    ours = settings["implementation"] == "raft_election"
    name = "raft_election (`raft-election run`)" if ours else "PySyncObj (`benchmarks/pysyncobj_member.py`)"
    tick = "" if ours else f", PySyncObj tick {settings['pysyncobj_tick'] * 1000:g} ms"
    lines = [
        f"### Idle cost per member: {name}, {settings['members']} processes, {settings['transport'].upper()} "
        "loopback",
        "",
        f"Election timeout {ms_range(settings['election_timeout'])}, heartbeat "
        f"{settings['heartbeat'] * 1000:g} ms{tick}; after the first leader, {settings['settle']:g} s of "
        f"settling, then a {result['window_seconds']:.1f} s window.  CPU % is of one core (utime + stime "
        f"from /proc/PID/stat, {CLOCK_TICKS} ticks/s); RSS is VmRSS at the end of the window (MiB).",
        "",
    ]
    header = ["member", "role", "CPU % of one core", "RSS MiB", "threads"]
    if ours:
        header += ["msgs sent/s", "msgs received/s"]
    rows = []
    for row in result["rows"]:
        cells = [row["member"], row["role"], f"{row['cpu_percent']:.2f}", f"{row['rss_mib']:.1f}",
                 row["threads"]]
        if ours:
            cells += [f"{row['messages_sent_per_second']:.1f}", f"{row['messages_received_per_second']:.1f}"]
        rows.append(cells)
    lines.append(markdown(header, rows))
    lines.append("")
    summary = []
    if result["followers_mean"] is not None:
        mean = result["followers_mean"]
        summary.append(["followers (mean)", f"{mean['cpu_percent']:.2f}", f"{mean['rss_mib']:.1f}"])
    if result["leader"] is not None:
        leader = result["leader"]
        summary.append([f"leader (member {leader['member']})", f"{leader['cpu_percent']:.2f}",
                        f"{leader['rss_mib']:.1f}"])
    lines.append(markdown(["", "CPU % of one core", "RSS MiB"], summary))
    events = result["leadership_events_in_window"]
    lines.append("")
    if events:
        described = ", ".join(f"{e['event']} {e['node']} (term {e['term']})" for e in events)
        lines.append(f"Leadership changed during the window ({len(events)} events): {described}.")
    else:
        lines.append("No leadership change during the window.")
    if result["leaders_at_end"] != 1:
        lines.append(f"Warning: {result['leaders_at_end']} members considered themselves leader at the end.")
    return "\n".join(lines)


# ---------------------------------------------------------------------- part 2: cluster-size sweep


def sweep_size(size: int, trials: int, *, seed: int, election_timeout: tuple[float, float],
               heartbeat: float) -> dict[str, Any]:
    """Crash the leader of a ``size``-member in-memory cluster ``trials`` times; return what was measured.

    The trial loop is ``raft-election bench --transport memory``'s; the result has its figures and every
    failover.
    """
    settings = BenchSettings(transport="memory", nodes=size, timeouts=(election_timeout,),
                             heartbeat=heartbeat, trials=trials, handovers=0, seed=seed,
                             fast_failover=False)  # the timeout path's model and message count
    result = run_one_range(settings, election_timeout, random.Random(seed))
    messages = [f.messages for f in result.failovers if f.messages is not None]
    return {"size": size, **range_figures(result), "messages_max": max(messages, default=None),
            "failovers": [attrs.asdict(f) for f in result.failovers]}


def sweep_report(result: Mapping[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        "### Failover time and election messages against cluster size (threaded members, in-memory network)",
        "",
        f"Election timeout {ms_range(settings['election_timeout'])}, "
        f"heartbeat {settings['heartbeat'] * 1000:g} ms, pre-vote on, network delay 0.2–1 ms, "
        f"{settings['trials']} crashes per size (one cluster per size, the crashed leader restarted after "
        "each failover; `raft-election bench --transport memory`'s trial loop).  Time: crash → the "
        "successor's lease begins.  Messages: vote and pre-vote requests and answers the survivors sent, "
        "repeats included.  Ideal: a + (b − a)/n − h/2 + 2r.  Split vote: the failover took more than one "
        "term.",
        "",
    ]
    header = ["members", "crashes", "median ms", "p90 ms", "max ms", "ideal ms", "msgs/election (median)",
              "msgs/election (max)", "split-vote share"]
    rows = []
    for size in result["sizes"]:
        failover = size["failover"]
        rows.append([
            size["size"], size["trials"], f"{failover['median'] * 1000:.1f}",
            f"{failover['p90'] * 1000:.1f}", f"{failover['max'] * 1000:.1f}", f"{size['ideal'] * 1000:.1f}",
            f"{size['messages_per_election']:g}", f"{size['messages_max']}",
            f"{size['split_vote_share'] * 100:.0f} %",
        ])
    lines.append(markdown(header, rows))
    return "\n".join(lines)


# ---------------------------------------------------------------------- part 3: message-handling speed


PEERS5 = {i: f"bench:{i}" for i in range(1, 6)}
ROUNDS = 64


def follower_core() -> RaftCore:
    """Member 1 of 5, fresh at term 0: the first heartbeat (term 1) makes it follow member 2."""
    return RaftCore(RaftConfig(node_id=1, peers=PEERS5), HardState(), 0.0, random.Random(1))


def leader_core() -> RaftCore:
    """Member 1 of 5, elected through a pre-vote and a vote granted by members 2 and 3."""
    core = RaftCore(RaftConfig(node_id=1, peers=PEERS5), HardState(), 0.0, random.Random(1))
    now = core.next_deadline
    output = core.tick(now)
    for _ in range(2):  # the pre-vote round, then the real one
        request = next(out.message for out in output.messages if isinstance(out.message, VoteRequest))
        role = core.role
        for voter in (2, 3):
            output = core.receive(voter, VoteResponse(term=request.term, round=request.round, granted=True,
                                                      pre_vote=request.pre_vote), now)
            if core.role is not role:
                break
    assert core.role is Role.LEADER, core
    return core


def heartbeats(term: int = 1) -> list[Heartbeat]:
    return [Heartbeat(term=term, round=r) for r in range(ROUNDS)]


def time_core_follower(count: int, codec: Optional[Codec] = None) -> float:
    """A follower answering ``count`` heartbeats: ``core.receive`` only, or with ``codec``: bytes in, out."""
    core = follower_core()
    messages = heartbeats()
    step = 0.001  # 1 ms between heartbeats: far inside the election timeout, which each one resets
    now = 0.0
    if codec is None:
        receive = core.receive
        started = time.perf_counter()
        for n in range(count):
            now += step
            output = receive(2, messages[n % ROUNDS], now)
        elapsed = time.perf_counter() - started
    else:
        data = [codec.encode(Envelope(sender=2, recipient=1, message=m)) for m in messages]
        decode, encode = codec.decode, codec.encode
        started = time.perf_counter()
        for n in range(count):
            now += step
            envelope = decode(data[n % ROUNDS])
            if envelope.recipient != 1:
                raise AssertionError(envelope)
            output = core.receive(envelope.sender, envelope.message, now)
            for out in output.messages:
                encode(Envelope(sender=1, recipient=out.to, message=out.message))
        elapsed = time.perf_counter() - started
    assert core.role is Role.FOLLOWER and core.leader_id == 2, core
    assert len(output.messages) == 1 and isinstance(output.messages[0].message, HeartbeatResponse), output
    return elapsed


def time_core_leader(count: int, codec: Optional[Codec] = None) -> float:
    """A leader of 5 taking ``count`` heartbeat responses, 4 per heartbeat round (ticks not timed)."""
    core = leader_core()
    term = core.term
    peers = (2, 3, 4, 5)
    encoded: dict[int, list[bytes]] = {}
    elapsed = 0.0
    handled = 0
    while handled < count:
        now = core.next_deadline
        sent = core.tick(now).messages
        round_ = sent[0].message.round
        now += 0.0005
        if codec is None:
            responses = [HeartbeatResponse(term=term, round=round_, candidate=True) for _ in peers]
            started = time.perf_counter()
            for peer, response in zip(peers, responses):
                core.receive(peer, response, now)
            elapsed += time.perf_counter() - started
        else:
            data = encoded.get(round_)
            if data is None:
                data = encoded[round_] = [
                    codec.encode(Envelope(sender=peer, recipient=1,
                                          message=HeartbeatResponse(term=term, round=round_, candidate=True)))
                    for peer in peers]
            started = time.perf_counter()
            for item in data:
                envelope = codec.decode(item)
                if envelope.recipient != 1:
                    raise AssertionError(envelope)
                core.receive(envelope.sender, envelope.message, now)
            elapsed += time.perf_counter() - started
        handled += len(peers)
    assert core.is_leader(core.next_deadline - 1e-6) and core.term == term, core
    return elapsed * count / handled


def time_decode(count: int, codec: Codec) -> float:
    data = [codec.encode(Envelope(sender=2, recipient=1, message=m)) for m in heartbeats()]
    decode = codec.decode
    started = time.perf_counter()
    for n in range(count):
        decode(data[n % ROUNDS])
    return time.perf_counter() - started


def time_encode(count: int, codec: Codec) -> float:
    envelopes = [Envelope(sender=1, recipient=2, message=HeartbeatResponse(term=1, round=r, candidate=True))
                 for r in range(ROUNDS)]
    encode = codec.encode
    started = time.perf_counter()
    for n in range(count):
        encode(envelopes[n % ROUNDS])
    return time.perf_counter() - started


class _CountingTransport(Transport):
    """Captures the node's deliver callback (what a real transport calls per datagram) and counts sends."""

    def __init__(self) -> None:
        self.deliver: Optional[DeliverFn] = None
        self.sent = 0

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        self.deliver = deliver

    def send(self, peer_id: int, data: bytes) -> None:
        self.sent += 1

    def close(self) -> None:
        self.deliver = None


def time_node_follower(count: int, secret: Optional[bytes] = None) -> float:
    """A started RaftNode (timer and callback threads running) fed ``count`` heartbeat datagrams."""
    config = RaftConfig(node_id=1, peers=PEERS5, secret=secret)
    codec = Codec(config.cluster, secret)
    data = [codec.encode(Envelope(sender=2, recipient=1, message=m)) for m in heartbeats()]
    transport = _CountingTransport()
    node = RaftNode(config, transport, MemoryStorage()).start()
    try:
        deliver = transport.deliver
        assert deliver is not None
        deliver(data[0])  # the first one changes term and leader (a save and events): not steady state
        transport.sent = 0
        started = time.perf_counter()
        for n in range(count):
            deliver(data[n % ROUNDS])
        elapsed = time.perf_counter() - started
        assert transport.sent == count and node.leader_id == 2, (transport.sent, node)
    finally:
        node.stop()
    return elapsed


SECRET = b"benchmark secret, long enough to use"


def throughput_cases() -> list[tuple[str, Callable[[int], float]]]:
    plain, signed = Codec("default"), Codec("default", SECRET)
    return [
        ("core: follower ← Heartbeat (receive → HeartbeatResponse)", time_core_follower),
        ("core: leader of 5 ← HeartbeatResponse", time_core_leader),
        ("codec: decode Heartbeat", lambda n: time_decode(n, plain)),
        ("codec: encode HeartbeatResponse", lambda n: time_encode(n, plain)),
        ("codec + core: follower, bytes in → bytes out", lambda n: time_core_follower(n, plain)),
        ("codec + core: leader of 5, bytes in", lambda n: time_core_leader(n, plain)),
        ("codec + core: follower, bytes in → bytes out, HMAC", lambda n: time_core_follower(n, signed)),
        ("RaftNode: follower, transport deliver callback", time_node_follower),
        ("RaftNode: follower, deliver callback, HMAC", lambda n: time_node_follower(n, SECRET)),
    ]


def throughput_run(messages: int, repeats: int) -> dict[str, Any]:
    cases = throughput_cases()
    for _, case in cases:
        case(max(1, messages // 10))  # warm-up
    # Round-robin repetitions: a slow spell of the (shared, noisy) machine hits every case alike.
    per_message: dict[str, list[float]] = {name: [] for name, _ in cases}
    for repeat in range(repeats):
        for name, case in cases:
            per_message[name].append(case(messages) / messages)
        logger.info("throughput: repetition %d/%d done", repeat + 1, repeats)
    results = []
    for name, values in per_message.items():
        median = statistics.median(values)
        results.append({"case": name, "us_per_message": median * 1e6, "messages_per_second": 1 / median,
                        "us_min": min(values) * 1e6, "us_max": max(values) * 1e6,
                        "repeats_us": [x * 1e6 for x in values]})
    return {"settings": {"messages": messages, "repeats": repeats}, "cases": results}


def throughput_report(result: Mapping[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        "### Message handling speed (one thread, `time.perf_counter` loop)",
        "",
        f"{settings['messages']:,} messages per repetition, median of {settings['repeats']} repetitions "
        "(after a warm-up; the cases take turns, one repetition each per pass); garbage collector on.  "
        "Core: `RaftCore.receive` on a member of 5 (default "
        "150–300 ms / 50 ms settings), the message objects built beforehand.  Codec + core: what the node "
        "does per datagram (decode, check the recipient, `receive`, encode each reply), without locks or "
        "threads.  RaftNode: a started node fed through its transport's deliver callback (decode, lock, "
        "`receive`, persist-before-send queue, encode, `send` to a transport that only counts), with its "
        "timer thread notified on every message as in real use.  HMAC: a 36-byte shared secret "
        "(HMAC-SHA256 checked on the way in and added on the way out).",
        "",
    ]
    rows = [[case["case"], f"{case['us_per_message']:.2f}", f"{case['us_min']:.2f}–{case['us_max']:.2f}",
             f"{case['messages_per_second']:,.0f}"] for case in result["cases"]]
    lines.append(markdown(["path", "µs per message", "range µs", "messages per second"], rows))
    return "\n".join(lines)


# ---------------------------------------------------------------------- command line


@attrs.frozen(kw_only=True)
class Quick:
    """The tiny settings of ``--quick``, used for every option not given explicitly."""

    seconds: float = 3.0
    settle: float = 1.0
    sizes: tuple[int, ...] = (3, 5)
    trials: int = 3
    messages: int = 2000
    repeats: int = 3


@attrs.frozen(kw_only=True)
class Full:
    seconds: float = 30.0
    settle: float = 2.0
    sizes: tuple[int, ...] = (3, 5, 7, 9, 15, 25, 51)
    trials: int = 20
    messages: int = 50_000
    repeats: int = 7


def resolve(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    return getattr(Quick() if args.quick else Full(), name)


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    settings = IdleSettings(implementation="raft_election", transport=args.transport, members=args.members,
                            election_timeout=args.timeout, heartbeat=args.heartbeat / 1000,
                            seconds=resolve(args, "seconds"), settle=resolve(args, "settle"),
                            fast_failover=args.fast_failover)
    results: dict[str, Any] = {"raft_election": idle_run(settings)}
    print(idle_report(results["raft_election"]), end="\n\n", flush=True)
    if args.pysyncobj:
        if not PYSYNCOBJ_MEMBER.exists():
            note = f"PySyncObj part skipped: {PYSYNCOBJ_MEMBER.name} does not exist."
            results["pysyncobj"] = {"skipped": note}
            print(note, end="\n\n", flush=True)
        else:
            tick = args.pysyncobj_tick / 1000 if args.pysyncobj_tick is not None else args.heartbeat / 1000
            theirs = attrs.evolve(settings, implementation="pysyncobj", transport="tcp", pysyncobj_tick=tick)
            try:
                results["pysyncobj"] = idle_run(theirs)
                print(idle_report(results["pysyncobj"]), end="\n\n", flush=True)
            except (TimeoutError, OSError, RuntimeError) as exc:
                note = f"PySyncObj part failed: {type(exc).__name__}: {exc}"
                logger.error("%s", note)
                results["pysyncobj"] = {"skipped": note}
                print(note, end="\n\n", flush=True)
    return results


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    sizes, trials = resolve(args, "sizes"), resolve(args, "trials")
    sweep = [sweep_size(size, trials, seed=args.seed + size, election_timeout=args.timeout,
                        heartbeat=args.heartbeat / 1000) for size in sizes]
    result = {"settings": {"election_timeout": args.timeout, "heartbeat": args.heartbeat / 1000,
                           "trials": trials, "sizes": list(sizes), "seed": args.seed},
              "sizes": sweep}
    print(sweep_report(result), end="\n\n", flush=True)
    return result


def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    result = throughput_run(resolve(args, "messages"), resolve(args, "repeats"))
    print(throughput_report(result), end="\n\n", flush=True)
    return result


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "idle": run_idle, "sweep": run_sweep, "throughput": run_throughput,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true",
                        help="tiny settings for every option not given (3 s window, sizes 3,5, 3 trials)")
    common.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    common.add_argument("-v", "--verbose", action="store_true", help="log the library's INFO lines too")
    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--timeout", type=parse_timeout, default=(0.150, 0.300),
                        help="MIN-MAX election timeout in ms (default 150-300)")
    timing.add_argument("--heartbeat", type=float, default=50.0, help="heartbeat interval in ms (default 50)")
    idle = argparse.ArgumentParser(add_help=False)
    idle.add_argument("--seconds", type=float, help="measurement window (default 30; --quick: 3)")
    idle.add_argument("--settle", type=float, help="seconds after the first leader (default 2; --quick: 1)")
    idle.add_argument("--members", type=int, default=5)
    idle.add_argument("--transport", choices=("udp", "zmq"), default="udp")
    idle.add_argument("--no-fast-failover", dest="fast_failover", action="store_false",
                      help="members without fast failover (no probe timer)")
    idle.add_argument("--pysyncobj", action="store_true",
                      help="also measure PySyncObj members (benchmarks/pysyncobj_member.py), if it exists")
    idle.add_argument("--pysyncobj-tick", type=float,
                      help="PySyncObj --tick in ms (default: the --heartbeat value)")
    sweep = argparse.ArgumentParser(add_help=False)
    sweep.add_argument("--sizes", type=parse_sizes, help="cluster sizes (default 3,5,7,9,15,25,51)")
    sweep.add_argument("--trials", type=int, help="crashes per size (default 20; --quick: 3)")
    sweep.add_argument("--seed", type=int, default=1)
    speed = argparse.ArgumentParser(add_help=False)
    speed.add_argument("--messages", type=int, help="messages per repetition (default 50000)")
    speed.add_argument("--repeats", type=int, help="repetitions, the median is reported (default 7)")

    parser = argparse.ArgumentParser(prog="python -m benchmarks.resources",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("idle", parents=[common, timing, idle], help="idle CPU and RSS per member process")
    commands.add_parser("sweep", parents=[common, timing, sweep],
                        help="failover time and messages against cluster size (in-memory)")
    commands.add_parser("throughput", parents=[common, speed], help="message-handling speed of the core")
    commands.add_parser("all", parents=[common, timing, idle, sweep, speed], help="all three (the default)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(word in (*PARTS, "all", "-h", "--help") for word in argv):
        argv.insert(0, "all")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    parts = list(PARTS) if args.command == "all" else [args.command]
    print(f"## Resource benchmarks ({', '.join(parts)}{', quick' if args.quick else ''})\n\n"
          f"{machine_line()}.\n", flush=True)
    results: dict[str, Any] = {"machine": machine(), "argv": argv, "quick": args.quick}
    for part in parts:
        results[part] = PARTS[part](args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
