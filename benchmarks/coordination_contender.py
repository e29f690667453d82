"""One election contender for ``benchmarks/compare_coordination.py``, using etcd's or ZooKeeper's recipe.

Each contender is its own OS process so that the benchmark can SIGKILL it, as a crashed client would die:
no goodbye to the server, its lease or session is left to expire.  It prints one line per event on
stdout, flushed at once, with the system-wide ``time.monotonic()`` (CLOCK_MONOTONIC on Linux, the same
clock in every process on the machine, so the parent can subtract its own kill time from it)::

    ready <monotonic> <detail>    # connected; lease granted / session established (detail: granted TTL)
    leader <monotonic>            # this process now holds leadership
    lost <monotonic> <reason>     # lease or session lost; the process exits

Recipes, each the one the system ships:

* etcd: the v3 concurrency election (``clientv3/concurrency.Election``), run by etcd's own v3election
  service (``POST /v3/election/campaign`` on the JSON gRPC gateway): a lease with a TTL, a key
  ``<prefix>/<lease id>`` attached to it, and the key with the lowest create revision under the prefix
  leads; the others watch the key just before theirs.  Like ``concurrency.Session``, this process keeps its
  lease alive every TTL/3.  It talks HTTP with the standard library only (no ``etcd3`` package).
* ZooKeeper: kazoo's ``Election`` recipe (ephemeral sequential znodes, the lowest leads, each contender
  watches its predecessor).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
import urllib.request
from typing import Any, Optional


def emit(event: str, detail: str = "") -> None:
    """Print one timestamped event line for the parent, flushed immediately."""
    sys.stdout.write(f"{event} {time.monotonic():.6f} {detail}\n".rstrip() + "\n")
    sys.stdout.flush()


def etcd_call(endpoint: str, path: str, body: dict[str, Any], timeout: Optional[float]) -> dict[str, Any]:
    """POST one JSON request to etcd's v3 gRPC gateway and return the decoded answer."""
    request = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def run_etcd(endpoint: str, prefix: str, ttl: int, name: str) -> None:
    """Campaign in etcd's v3 election under ``prefix`` with a lease of ``ttl`` seconds, then hold it."""
    granted = etcd_call(endpoint, "/v3/lease/grant", {"TTL": ttl}, timeout=10)
    lease_id = int(granted["ID"])
    granted_ttl = int(granted["TTL"])
    stop = threading.Event()

    def keep_alive() -> None:
        # Same period as clientv3's lease keep-alive loop: a third of the granted TTL.
        period = granted_ttl / 3.0
        while not stop.wait(period):
            try:
                answer = etcd_call(endpoint, "/v3/lease/keepalive", {"ID": lease_id}, timeout=period)
            except OSError as error:
                emit("lost", f"keepalive-error:{error}")
                continue
            if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                emit("lost", "lease-expired")
                stop.set()

    threading.Thread(target=keep_alive, name="keepalive", daemon=True).start()
    emit("ready", f"ttl={granted_ttl}")
    encode = base64.b64encode
    # Blocks on the server until this lease's key has the lowest create revision under the prefix.
    etcd_call(endpoint, "/v3/election/campaign",
              {"name": encode(prefix.encode()).decode(), "lease": lease_id,
               "value": encode(name.encode()).decode()}, timeout=None)
    emit("leader")
    stop.wait()
    sys.exit(1)


def run_zookeeper(hosts: str, path: str, session_timeout: float, name: str) -> None:
    """Campaign with kazoo's ``Election`` recipe under ``path``, then hold leadership."""
    from kazoo.client import KazooClient  # noqa: PLC0415 - only the ZooKeeper side needs kazoo
    from kazoo.protocol.states import KazooState  # noqa: PLC0415

    client = KazooClient(hosts=hosts, timeout=session_timeout)
    lost = threading.Event()

    def on_state(state: str) -> None:
        if state == KazooState.LOST:
            emit("lost", "session-expired")
            lost.set()

    client.add_listener(on_state)
    client.start(timeout=30)
    emit("ready", f"session_ms={client._session_timeout}")  # negotiated timeout

    def lead() -> None:
        emit("leader")
        lost.wait()

    client.Election(path, name).run(lead)
    sys.exit(1)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=("etcd", "zookeeper"), required=True)
    parser.add_argument("--endpoint", required=True,
                        help="etcd: client URL (http://127.0.0.1:PORT); zookeeper: host:port list")
    parser.add_argument("--name", required=True, help="this contender's identity (the campaign value)")
    parser.add_argument("--election", default="/bench-election", help="election prefix / znode path")
    parser.add_argument("--ttl", type=int, default=60, help="etcd lease TTL in seconds")
    parser.add_argument("--session-timeout", type=float, default=10.0,
                        help="ZooKeeper session timeout requested, in seconds")
    args = parser.parse_args(argv)
    try:
        if args.system == "etcd":
            run_etcd(args.endpoint, args.election, args.ttl, args.name)
        else:
            run_zookeeper(args.endpoint, args.election, args.session_timeout, args.name)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
