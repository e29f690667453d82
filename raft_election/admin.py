"""The admin channel: a member answers operators' queries over TCP, authenticated with the cluster secret.

Off by default.  ``RaftNode(..., admin="127.0.0.1:7001")`` (or ``raft-election run --admin ADDR``, or an
``[admin]`` table in the cluster file) starts an :class:`AdminServer`; :func:`query` and
``raft-election status`` ask it.  One request per connection: the client sends one JSON object and a
newline, the server answers one JSON object and a newline and closes.

Requests are ``{"op": "status", "time": <unix seconds>, "nonce": "<32 hex digits>"}``.  With a cluster
secret both sides add ``"mac"``: HMAC-SHA256 keyed with the secret over the canonical JSON of the object
without ``mac`` (sorted keys, no spaces), compared in constant time.  The server refuses a request whose
MAC is missing or wrong, whose time is more than :data:`MAX_CLOCK_SKEW` seconds off its own clock, or
whose nonce it has seen within that window (so a captured request cannot be replayed); its answer echoes
the nonce and carries its own MAC, so the client knows the answer is fresh and from a member.  Without a
secret nothing is authenticated, so the server binds to a loopback address only, unless told it may
accept anyone on the network (``allow_remote``).

The server runs one thread that handles one connection at a time with a short timeout; a request is at most
:data:`MAX_REQUEST_SIZE` bytes.  Anything malformed (not JSON, not an object, unknown ``op``, bad fields)
gets an error answer naming the reason and is counted (``admin_rejected_<reason>``); nothing a client sends
ever touches the node's state: the only operation reads a status snapshot.  Membership commands will be
operations of this channel too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from raft_election._version import __version__
from raft_election.config import value_text
from raft_election.errors import ConfigError, RaftElectionError, TransportError
from raft_election.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from raft_election.node import RaftNode

__all__ = ["MAX_CLOCK_SKEW", "MAX_REQUEST_SIZE", "AdminError", "AdminServer", "parse_address", "query",
           "status_record"]

logger = logging.getLogger(__name__)

#: Seconds a request's time may differ from the server's clock (wall clocks of two hosts).
MAX_CLOCK_SKEW = 30.0
#: The largest request the server reads, in bytes.
MAX_REQUEST_SIZE = 4096
#: The largest answer a client reads, in bytes.
MAX_ANSWER_SIZE = 1 << 20
#: How long the server waits for one client's request.
REQUEST_TIMEOUT = 2.0
#: How many recent nonces the server remembers; beyond that it refuses requests until old ones expire.
MAX_NONCES = 4096

_OPERATIONS = ("status",)


class AdminError(RaftElectionError):
    """An admin request failed: the member could not be reached, refused the request, or answered wrongly."""


def parse_address(text: str, field: str = "admin") -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as ``(host, port)``.

    Raises:
        ConfigError: not of that form, or a port outside 0-65535.
    """
    host, sep, port = str(text).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(field, f"{text!r} is not an address of the form host:port (or [v6]:port), e.g. "
                                 "127.0.0.1:7001")
    return host, int(port)


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in document.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def _mac(secret: bytes, document: Mapping[str, Any]) -> str:
    return hmac.new(secret, _canonical(document), hashlib.sha256).hexdigest()


def _signed(secret: Optional[bytes], document: dict[str, Any]) -> dict[str, Any]:
    if secret is not None:
        document["mac"] = _mac(secret, document)
    return document


def _mac_ok(secret: bytes, document: Mapping[str, Any]) -> bool:
    mac = document.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac.encode("ascii", "replace"),
                                                        _mac(secret, document).encode("ascii"))


def status_record(node: RaftNode) -> dict[str, Any]:
    """What a member tells about itself: its status snapshot, its configuration and version, as JSON data."""
    status = node.status()
    config = node.config
    return {
        "node": status.node_id,
        "address": config.peers[status.node_id],
        "version": __version__,
        "cluster": config.cluster,
        "members": {str(peer): address for peer, address in config.peers.items()},
        "role": str(status.role),
        "term": status.term,
        "leader": status.leader_id,
        "voted_for": status.voted_for,
        "is_leader": status.is_leader,
        "lease_remaining": status.lease_remaining,
        "followers": list(status.followers),
        "candidate": status.candidate,
        "running": status.running,
        "value": value_text(node.value),
        "leader_value": value_text(node.leader_value),
        "last_contact": {str(peer): seconds for peer, seconds in status.last_contact.items()},
        "round_trip": status.round_trip,
        "lease_gap_seconds": status.lease_gap_seconds,
        "counters": dict(status.counters),
    }


class AdminServer:
    """Answers admin requests for ``node`` on ``address`` (see the module docstring).

    Args:
        node: the member to report on.
        address: ``host:port`` to listen on (port 0: any free port; see :attr:`address`).
        secret: the cluster secret; requests and answers are authenticated with it.  Default: the node's.
        allow_remote: without a secret, accept a non-loopback address anyway (anyone who can reach it can
            read the member's status).

    Raises:
        ConfigError: a malformed address, or a non-loopback one without a secret or ``allow_remote``.
    """

    def __init__(self, node: RaftNode, address: str, *, secret: Optional[bytes] = None,
                 allow_remote: bool = False, clock: Callable[[], float] = time.time) -> None:
        self._node = node
        self._host, self._port = parse_address(address)
        self._secret = secret if secret is not None else node.config.secret
        if self._secret is None and not allow_remote and not _is_loopback(self._host):
            raise ConfigError("admin", f"{address} is not a loopback address, and without a cluster secret "
                                       "admin requests are not authenticated: set a secret, bind to "
                                       "127.0.0.1, or allow remote unauthenticated requests explicitly "
                                       "(allow_remote=True, run --admin-allow-remote)")
        self._clock = clock
        self._lock = threading.Lock()
        self._nonces: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self._socket: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._log = RateLimitedLog(logger)

    @property
    def address(self) -> str:
        """The address the server listens on (with the real port once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    def start(self) -> AdminServer:
        """Bind and start answering.

        Raises:
            TransportError: the address cannot be bound.
        """
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(16)
            sock.settimeout(0.2)
            self._port = sock.getsockname()[1]  # the real port, also once closed
        except OSError as exc:
            sock.close()
            raise TransportError(f"admin channel cannot listen on {self._host}:{self._port}: "
                                 f"{exc.strerror or exc}") from None
        self._socket = sock
        self._thread = threading.Thread(target=self._serve, name=f"raft-{self._node.node_id}-admin",
                                        daemon=True)
        self._thread.start()
        logger.info("%d answers admin requests on %s%s", self._node.node_id, self.address,
                    "" if self._secret is not None else " (unauthenticated)")
        return self

    def close(self) -> None:
        """Stop answering and free the address.  Idempotent."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._socket is not None:
            self._socket.close()

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._stopping.is_set():
            try:
                connection, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            with connection:
                try:
                    self._handle(connection, peer)
                except Exception:  # a bug here must not end the channel
                    logger.exception("%d: admin request from %s failed", self._node.node_id, peer)

    def _handle(self, connection: socket.socket, peer: Any) -> None:
        connection.settimeout(REQUEST_TIMEOUT)
        try:
            data = _read_line(connection, MAX_REQUEST_SIZE)
        except (OSError, ValueError) as exc:
            self._reject(connection, peer, "unreadable", str(exc))
            return
        try:
            request = json.loads(data)
        except ValueError:
            self._reject(connection, peer, "not_json", "the request is not JSON")
            return
        if not isinstance(request, dict):
            self._reject(connection, peer, "not_an_object", "the request must be a JSON object")
            return
        reason = self._refusal(request)
        if reason is not None:
            self._reject(connection, peer, reason[0], reason[1])
            return
        self._count("admin_requests")
        answer = {"ok": True, "op": request["op"], "nonce": request["nonce"], "time": self._clock(),
                  "result": status_record(self._node)}
        answer["result"]["counters"].update(self.counters)
        _send(connection, _signed(self._secret, answer))

    def _refusal(self, request: Mapping[str, Any]) -> Optional[tuple[str, str]]:
        """Why ``request`` is refused (reason, detail), or None to answer it."""
        if self._secret is not None and not _mac_ok(self._secret, request):
            return "bad_mac", "the request is not authenticated with this cluster's secret"
        op, at, nonce = request.get("op"), request.get("time"), request.get("nonce")
        if op not in _OPERATIONS:
            return "unknown_op", f"op must be one of {', '.join(_OPERATIONS)}"
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            return "bad_field", "time must be a number (unix seconds)"
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            return "bad_field", "nonce must be a string of 16 to 64 characters"
        now = self._clock()
        if abs(now - at) > MAX_CLOCK_SKEW:
            return "stale", f"the request's time is {now - at:.1f} s off this member's clock"
        with self._lock:
            for old in [n for n, seen in self._nonces.items() if now - seen > 2 * MAX_CLOCK_SKEW]:
                del self._nonces[old]
            if nonce in self._nonces:
                return "replayed", "this nonce was used already"
            if len(self._nonces) >= MAX_NONCES:
                return "busy", "too many requests; try again shortly"
            self._nonces[nonce] = now
        return None

    def _reject(self, connection: socket.socket, peer: Any, reason: str, detail: str) -> None:
        self._count(f"admin_rejected_{reason}")
        self._log.warning(reason, "%d: refused an admin request from %s: %s", self._node.node_id, peer,
                          detail)
        with contextlib.suppress(OSError):
            _send(connection, {"ok": False, "error": reason, "detail": detail})


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _read_line(connection: socket.socket, limit: int) -> bytes:
    """Read up to a newline (or the end), at most ``limit`` bytes; ValueError beyond that."""
    data = b""
    while b"\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError(f"more than {limit} bytes")
    return data.split(b"\n", 1)[0]


def _send(connection: socket.socket, document: Mapping[str, Any]) -> None:
    connection.sendall(json.dumps(document).encode("utf-8") + b"\n")


def query(address: str, op: str = "status", *, secret: Optional[bytes] = None,
          timeout: float = 2.0) -> dict[str, Any]:
    """Ask the member answering on ``address``; return the ``result`` of its answer.

    Args:
        address: the member's admin address, ``host:port``.
        op: the operation (``"status"``).
        secret: the cluster secret, if it has one.
        timeout: seconds for connecting and for the answer.

    Raises:
        AdminError: unreachable, refused (the message names the member's reason), or an answer that is
            malformed, stale or (with a secret) not authenticated.
    """
    host, port = parse_address(address)
    nonce = secrets.token_hex(16)
    request = _signed(secret, {"op": op, "time": time.time(), "nonce": nonce})
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            _send(connection, request)
            data = _read_line(connection, MAX_ANSWER_SIZE)
    except (OSError, ValueError) as exc:
        raise AdminError(f"{address}: unreachable ({exc})") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise AdminError(f"{address}: answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise AdminError(f"{address}: answered something that is not a JSON object")
    if not answer.get("ok"):
        raise AdminError(f"{address}: refused: {answer.get('error')}: {answer.get('detail')}")
    if secret is not None and not _mac_ok(secret, answer):
        raise AdminError(f"{address}: its answer is not authenticated with the cluster secret")
    if answer.get("nonce") != nonce or not isinstance(answer.get("result"), dict):
        raise AdminError(f"{address}: its answer does not answer this request")
    result: dict[str, Any] = answer["result"]
    return result
