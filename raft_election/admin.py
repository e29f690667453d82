"""The admin channel: a member answers operators' queries over TCP, authenticated with the cluster secret.

Off by default.  ``RaftNode(..., admin="127.0.0.1:7001")`` (or ``raft-election run --admin ADDR``, or an
``[admin]`` table in the cluster file) starts an :class:`AdminServer`; :func:`query` and
``raft-election status`` ask it.  One request per connection: the client sends one JSON object and a
newline, the server answers one JSON object and a newline and closes.

Requests are ``{"op": <operation>, "time": <unix seconds>, "nonce": "<32 hex digits>", ...}``.  With a
cluster secret both sides add ``"mac"``: HMAC-SHA256 keyed with the secret over the canonical JSON of the
object without ``mac`` (sorted keys, no spaces), compared in constant time.  The server refuses a request
whose MAC is missing or wrong, whose time is more than :data:`MAX_CLOCK_SKEW` seconds off its own clock, or
whose nonce it has seen within that window (so a captured request cannot be replayed); its answer echoes
the nonce and carries its own MAC, so the client knows the answer is fresh and from a member.  Without a
secret nothing is authenticated, so the server binds to a loopback address only, unless told it may
accept anyone on the network (``allow_remote``); even then it accepts membership changes from loopback
clients only.

Operations (an answer is ``{"ok": true, "op", "nonce", "time", "result": {...}}``):

* ``status``: :func:`status_record`, the member's status snapshot.
* ``members``: :func:`members_record`, the configuration this member uses now (``node_id``,
  ``leader_id``, ``members`` as ``{"<id>": "<address>"}``, ``configuration`` with ``index``, ``term`` and
  ``committed``, ``voter``, ``membership_change``), to find the leader and list the members.
* ``add_member`` (fields ``id``, ``address``, ``timeout``) and ``remove_member`` (``id``, ``timeout``): a
  single-server membership change (thesis §4.1) through :meth:`RaftNode.add_member` /
  :meth:`RaftNode.remove_member`, on the leader; ``timeout`` (seconds, ``0 < timeout <=``
  :data:`MAX_CHANGE_TIMEOUT`, default :data:`DEFAULT_CHANGE_TIMEOUT`) bounds the wait for the commit.
  The result is ``{"ok": true, "index": <the committed entry's index>, "members": {...}, "node_id",
  "leader_id"}``.  A change that fails answers ``{"ok": false, "error": <kind>, "detail": <message>,
  "leader_id": <the leader this member knows of, or null>}`` (authenticated like any answer), the kind one
  of :data:`CHANGE_ERRORS`: ``not_leader`` (ask ``leader_id`` instead), ``membership_change`` (another
  change is under way, or the change is invalid), ``timeout``, ``config`` (a bad address) and
  ``not_running``.  A change request must hold exactly its fields, so no answer (which holds ``ok`` and
  ``result``) can ever pass for one.

The server runs one thread that handles one connection at a time with a short timeout; a request is at most
:data:`MAX_REQUEST_SIZE` bytes.  A change blocks until it commits, so it runs in a worker thread of its
own, which answers on the request's connection when done, and the channel keeps answering meanwhile; one
change at a time (a second one is answered ``membership_change`` at once).  Anything malformed (not JSON,
not an object, unknown ``op``, bad fields) gets an error answer naming the reason and is counted
(``admin_rejected_<reason>``); nothing such a request carries ever touches the node's state.
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
from raft_election.errors import (
    ConfigError,
    MembershipChangeError,
    NotLeaderError,
    RaftElectionError,
    TransportError,
)
from raft_election.messages import MAX_ADDRESS_SIZE, MAX_NODE_ID
from raft_election.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from raft_election.node import NodeStatus, RaftNode

__all__ = ["CHANGE_ERRORS", "DEFAULT_CHANGE_TIMEOUT", "MAX_CHANGE_TIMEOUT", "MAX_CLOCK_SKEW",
           "MAX_REQUEST_SIZE", "AdminError", "AdminServer", "members_json", "members_record", "parse_address",
           "query",
           "status_record"]

logger = logging.getLogger(__name__)

#: Seconds a request's time may differ from the server's clock (wall clocks of two hosts).
MAX_CLOCK_SKEW = 30.0
#: The largest request the server reads, in bytes.
MAX_REQUEST_SIZE = 4096
#: The largest answer a client reads, in bytes.
MAX_ANSWER_SIZE = 1 << 20
#: How long the server waits for one client's request (and for sending an answer).
REQUEST_TIMEOUT = 2.0
#: How many recent nonces the server remembers; beyond that it refuses requests until old ones expire.
MAX_NONCES = 4096
#: The longest a membership change may wait for its commit, in seconds (a change request's ``timeout``).
MAX_CHANGE_TIMEOUT = 60.0
#: A change request's ``timeout`` when it gives none.
DEFAULT_CHANGE_TIMEOUT = 10.0
#: How much longer than a change's own timeout a client waits for the answer (the server's margin).
ANSWER_MARGIN = 5.0

#: Operations that only read.
_READ_OPERATIONS = ("status", "members")
#: Operations that change the membership, with the fields (beyond op/time/nonce/mac) their requests hold.
_CHANGE_FIELDS: Mapping[str, frozenset[str]] = {
    "add_member": frozenset({"id", "address", "timeout"}),
    "remove_member": frozenset({"id", "timeout"}),
}
_OPERATIONS = (*_READ_OPERATIONS, *_CHANGE_FIELDS)
#: The fields every request has; a client's extra fields may not use these names.
_ENVELOPE = frozenset({"op", "time", "nonce", "mac"})
#: The kinds of error a membership change that reached the node answers with.
CHANGE_ERRORS = ("not_leader", "membership_change", "timeout", "config", "not_running")


class AdminError(RaftElectionError):
    """An admin request failed: the member could not be reached, refused the request, or answered wrongly.

    Attributes:
        kind: why, as a short code: the member's error (``bad_mac``, ``stale``, ``unknown_op``,
            ``bad_field``, ``unauthenticated``, or one of :data:`CHANGE_ERRORS`), or ``unreachable`` (no
            connection or no answer) or ``bad_answer`` (an answer that is malformed, not fresh or not
            authenticated).  None only when raised by older code.
        detail: the member's own explanation, if it gave one.
        leader_id: with ``not_leader`` (and other change errors), the leader the member knows of, or None.
        address: the admin address asked.
    """

    def __init__(self, message: str, *, kind: Optional[str] = None, detail: Optional[str] = None,
                 leader_id: Optional[int] = None, address: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail
        self.leader_id = leader_id
        self.address = address


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


def members_json(members: Mapping[int, str]) -> dict[str, str]:
    """A member map as JSON data: ids as strings (JSON object keys), in id order."""
    return {str(member): address for member, address in sorted(members.items())}


def _configuration_json(status: NodeStatus) -> dict[str, Any]:
    return {"index": status.configuration_index, "term": status.configuration_term,
            "committed": status.configuration_committed}


def status_record(node: RaftNode) -> dict[str, Any]:
    """What a member tells about itself: its status snapshot, its configuration and version, as JSON data.

    ``members`` is the configuration this member uses now (thesis §4.1: its latest entry, committed or
    not), which after a membership change differs from the cluster file's; ``configuration`` says which
    entry that is (``index``, ``term``) and whether this member knows it committed; ``voter`` is False
    for a member outside it (joining, or removed).  ``groups_hosted`` is how many named election groups
    it hosts and ``groups_leading`` how many of those it leads with a valid lease now (the default group
    is not counted in either: ``is_leader`` tells about it), so ``raft-election status`` shows leaders per
    member.
    """
    status = node.status()
    config = node.config
    return {
        "node": status.node_id,
        "address": config.peers[status.node_id],
        "version": __version__,
        "cluster": config.cluster,
        "members": members_json(status.members),
        "configuration": _configuration_json(status),
        "voter": status.voter,
        "membership_change": status.membership_change,
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
        "groups_hosted": status.groups_hosted,
        # NodeStatus counts the default group among those led (when is_leader, in the same snapshot).
        "groups_leading": status.groups_leading,
        "counters": dict(status.counters),
    }


def members_record(node: RaftNode) -> dict[str, Any]:
    """The answer to ``members``: the configuration ``node`` uses now and the leader it knows of.

    From one status snapshot, so ``leader_id``, ``members`` and ``configuration`` agree with each other.
    ``leader_id`` equals ``node_id`` only while this member leads with a valid lease.
    """
    status = node.status()
    return {"node_id": status.node_id, "leader_id": status.leader_id, "term": status.term,
            "members": members_json(status.members), "configuration": _configuration_json(status),
            "voter": status.voter, "membership_change": status.membership_change, "running": status.running}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _change_problem(op: str, request: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the fields of change request ``request`` (``op`` one of _CHANGE_FIELDS), or None."""
    allowed = _CHANGE_FIELDS[op]
    unknown = sorted(set(request) - _ENVELOPE - allowed)
    if unknown:
        return f"{op} takes only the fields {', '.join(sorted(allowed))}, not {', '.join(unknown)}"
    node_id = request.get("id")
    if type(node_id) is not int or not 1 <= node_id <= MAX_NODE_ID:
        return f"id must be an integer member id from 1 to {MAX_NODE_ID}"
    if "address" in allowed:
        address = request.get("address")
        size = len(address.encode("utf-8", "replace")) if isinstance(address, str) else 0
        if not 0 < size <= MAX_ADDRESS_SIZE:
            return f"address must be a non-empty string of at most {MAX_ADDRESS_SIZE} bytes"
    timeout = request.get("timeout", DEFAULT_CHANGE_TIMEOUT)
    if not _is_number(timeout) or not math.isfinite(timeout) or not 0 < timeout <= MAX_CHANGE_TIMEOUT:
        return f"timeout must be a number of seconds, more than 0 and at most {MAX_CHANGE_TIMEOUT:g}"
    return None


def _failure(kind: str, detail: str, leader_id: Optional[int]) -> dict[str, Any]:
    return {"ok": False, "error": kind, "detail": detail, "leader_id": leader_id}


class AdminServer:
    """Answers admin requests for ``node`` on ``address`` (see the module docstring).

    Args:
        node: the member to report on.
        address: ``host:port`` to listen on (port 0: any free port; see :attr:`address`).
        secret: the cluster secret; requests and answers are authenticated with it.  Default: the node's.
        allow_remote: without a secret, accept a non-loopback address anyway (anyone who can reach it can
            read the member's status; membership changes are still accepted from loopback clients only).

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
        self._changing = False  # a membership change is under way in a worker (guarded by _lock)
        self._worker: Optional[threading.Thread] = None
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
        """Stop answering and free the address.  Idempotent.

        A change under way ends with the node (it is stopping: the change's wait wakes and answers
        ``not_running``); its worker is given a moment to send that answer.
        """
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._socket is not None:
            self._socket.close()
        with self._lock:
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(2 * REQUEST_TIMEOUT)

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
            handed_over = False
            try:
                handed_over = self._handle(connection, peer)
            except Exception:  # a bug here must not end the channel
                logger.exception("%d: admin request from %s failed", self._node.node_id, peer)
            finally:
                if not handed_over:
                    connection.close()

    def _handle(self, connection: socket.socket, peer: Any) -> bool:
        """Answer one request; True if a change worker took the connection over (it answers and closes)."""
        connection.settimeout(REQUEST_TIMEOUT)
        try:
            data = _read_line(connection, MAX_REQUEST_SIZE)
        except (OSError, ValueError) as exc:
            self._reject(connection, peer, "unreadable", str(exc))
            return False
        try:
            request = json.loads(data)
        except ValueError:
            self._reject(connection, peer, "not_json", "the request is not JSON")
            return False
        if not isinstance(request, dict):
            self._reject(connection, peer, "not_an_object", "the request must be a JSON object")
            return False
        reason = self._refusal(request, peer)
        if reason is not None:
            self._reject(connection, peer, reason[0], reason[1])
            return False
        self._count("admin_requests")
        op = request["op"]
        if op in _CHANGE_FIELDS:
            return self._begin_change(connection, request, peer)
        if op == "members":
            result = members_record(self._node)
        else:
            result = status_record(self._node)
            with self._lock:
                result["counters"].update(self.counters)
        self._answer(connection, request, {"ok": True, "result": result})
        return False

    def _answer(self, connection: socket.socket, request: Mapping[str, Any],
                fields: Mapping[str, Any]) -> None:
        """Send an answer to ``request``: ``fields`` with the op, the request's nonce, the time and a MAC."""
        answer = {**fields, "op": request["op"], "nonce": request["nonce"], "time": self._clock()}
        _send(connection, _signed(self._secret, answer))

    def _refusal(self, request: Mapping[str, Any], peer: Any = None) -> Optional[tuple[str, str]]:
        """Why ``request`` (from ``peer``) is refused (reason, detail), or None to answer it."""
        if self._secret is not None and not _mac_ok(self._secret, request):
            return "bad_mac", "the request is not authenticated with this cluster's secret"
        op, nonce = request.get("op"), request.get("nonce")
        at: Any = request.get("time")
        if op not in _OPERATIONS:
            return "unknown_op", f"op must be one of {', '.join(_OPERATIONS)}"
        if not _is_number(at) or not math.isfinite(at):
            return "bad_field", "time must be a number (unix seconds)"
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            return "bad_field", "nonce must be a string of 16 to 64 characters"
        if op in _CHANGE_FIELDS:
            problem = _change_problem(op, request)
            if problem is not None:
                return "bad_field", problem
            if self._secret is None and not _is_loopback_peer(peer):
                return "unauthenticated", ("without a cluster secret, membership changes are accepted from "
                                           "this member's own host only; set a secret, or run it there")
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

    # ------------------------------------------------------------------ membership changes

    def _begin_change(self, connection: socket.socket, request: Mapping[str, Any], peer: Any) -> bool:
        """Hand a valid change request to a worker thread, or refuse it at once if one is under way."""
        stopping = self._stopping.is_set()
        with self._lock:
            busy = self._changing or stopping
            if not busy:
                self._changing = True
                self._worker = threading.Thread(target=self._change, args=(connection, request, peer),
                                                name=f"raft-{self._node.node_id}-admin-change", daemon=True)
                worker = self._worker
        if stopping:
            self._answer(connection, request, _failure("not_running", "this member is stopping", None))
            return False
        if busy:
            self._count("admin_changes_refused")
            self._answer(connection, request, _failure(
                "membership_change", "another membership change asked through this member's admin channel "
                "is still under way (one change at a time, thesis §4.1); wait for it to end, then retry",
                self._node.leader_id))
            return False
        worker.start()
        return True

    def _change(self, connection: socket.socket, request: Mapping[str, Any], peer: Any) -> None:
        """The worker: make the change, answer on ``connection`` and close it.  Never raises."""
        try:
            with connection:
                try:
                    answer = self._perform_change(request, peer)
                finally:
                    with self._lock:
                        self._changing = False  # before answering: the client may send the next one at once
                connection.settimeout(REQUEST_TIMEOUT)
                with contextlib.suppress(OSError):
                    self._answer(connection, request, answer)
        except Exception:  # a bug here must not leave the channel refusing changes
            logger.exception("%d: admin membership change from %s failed", self._node.node_id, peer)

    def _perform_change(self, request: Mapping[str, Any], peer: Any) -> dict[str, Any]:
        """Carry out a validated change request on the node; return the answer's fields."""
        node = self._node
        op, node_id = request["op"], request["id"]
        timeout = float(request.get("timeout", DEFAULT_CHANGE_TIMEOUT))
        what = (f"add member {node_id} at {request['address']}" if op == "add_member"
                else f"remove member {node_id}")
        logger.info("%d: admin request from %s: %s", node.node_id, peer, what)
        try:
            if op == "add_member":
                index = node.add_member(node_id, request["address"], timeout=timeout)
            else:
                index = node.remove_member(node_id, timeout=timeout)
        except NotLeaderError as exc:
            return self._failed(what, "not_leader", str(exc), exc.leader_id)
        except MembershipChangeError as exc:
            return self._failed(what, "membership_change", str(exc), node.leader_id)
        except ConfigError as exc:
            return self._failed(what, "config", str(exc), node.leader_id)
        except TimeoutError as exc:
            return self._failed(what, "timeout", str(exc), node.leader_id)
        except RaftElectionError as exc:
            return self._failed(what, "not_running", str(exc), None)
        self._count("admin_changes")
        status = node.status()
        logger.info("%d: admin: %s: committed at configuration index %d", node.node_id, what, index)
        return {"ok": True, "result": {"ok": True, "index": index, "members": members_json(status.members),
                                       "node_id": status.node_id, "leader_id": status.leader_id}}

    def _failed(self, what: str, kind: str, detail: str, leader_id: Optional[int]) -> dict[str, Any]:
        self._count(f"admin_changes_failed_{kind}")
        logger.log(logging.INFO if kind == "not_leader" else logging.WARNING, "%d: admin: %s failed (%s): %s",
                   self._node.node_id, what, kind, detail)
        return _failure(kind, detail, leader_id)


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _is_loopback_peer(peer: Any) -> bool:
    """Whether a client's socket address (``accept()``'s second value) is on this host's loopback."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except (ValueError, TypeError, IndexError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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


def query(address: str, op: str = "status", *, secret: Optional[bytes] = None, timeout: float = 2.0,
          params: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Ask the member answering on ``address``; return the ``result`` of its answer.

    Args:
        address: the member's admin address, ``host:port``.
        op: the operation: ``"status"``, ``"members"``, ``"add_member"`` or ``"remove_member"``.
        secret: the cluster secret, if it has one.
        timeout: seconds for connecting and for the answer.  For a change, the wait for the answer is at
            least the change's own ``timeout`` plus :data:`ANSWER_MARGIN`, since the member answers once
            the change committed or its time ran out.
        params: the operation's fields, e.g. ``{"id": 4, "address": "10.0.0.4:9004", "timeout": 10}``;
            not ``op``, ``time``, ``nonce`` or ``mac``.

    Raises:
        ConfigError: ``params`` uses a reserved field name or is not JSON data.
        AdminError: unreachable, refused (the message names the member's reason; ``kind``, ``detail``
            and ``leader_id`` carry it), or an answer that is malformed, stale or (with a secret) not
            authenticated.
    """
    fields = dict(params) if params is not None else {}
    reserved = sorted(set(fields) & _ENVELOPE)
    if reserved:
        raise ConfigError("params", f"{', '.join(reserved)} cannot be given as a field: the request's "
                                    "envelope sets them")
    wait = timeout
    if op in _CHANGE_FIELDS:
        change_timeout = fields.get("timeout", DEFAULT_CHANGE_TIMEOUT)
        if _is_number(change_timeout) and math.isfinite(change_timeout):
            wait = max(timeout, min(float(change_timeout), MAX_CHANGE_TIMEOUT) + ANSWER_MARGIN)
    host, port = parse_address(address)
    nonce = secrets.token_hex(16)
    try:
        request = _signed(secret, {**fields, "op": op, "time": time.time(), "nonce": nonce})
        _canonical(request)
    except (TypeError, ValueError) as exc:
        raise ConfigError("params", f"the fields must be JSON data: {exc}") from None
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            _send(connection, request)
            connection.settimeout(wait)
            data = _read_line(connection, MAX_ANSWER_SIZE)
    except (OSError, ValueError) as exc:
        raise AdminError(f"{address}: unreachable ({exc})", kind="unreachable", address=address) from None
    if not data.strip():
        # The member closed the connection without a word: it died, or stopped, while it worked on it.
        raise AdminError(f"{address}: closed the connection without answering", kind="unreachable",
                         address=address)
    try:
        answer = json.loads(data)
    except ValueError:
        raise AdminError(f"{address}: answered something that is not JSON", kind="bad_answer",
                         address=address) from None
    if not isinstance(answer, dict):
        raise AdminError(f"{address}: answered something that is not a JSON object", kind="bad_answer",
                         address=address)
    if not answer.get("ok"):
        _raise_refusal(address, answer, secret, nonce)
    if secret is not None and not _mac_ok(secret, answer):
        raise AdminError(f"{address}: its answer is not authenticated with the cluster secret",
                         kind="bad_answer", address=address)
    if answer.get("nonce") != nonce or not isinstance(answer.get("result"), dict):
        raise AdminError(f"{address}: its answer does not answer this request", kind="bad_answer",
                         address=address)
    result: dict[str, Any] = answer["result"]
    return result


def _raise_refusal(address: str, answer: Mapping[str, Any], secret: Optional[bytes], nonce: str) -> None:
    """Raise the AdminError an error answer stands for.

    A refusal of the request itself (bad_mac, stale, ...) cannot be authenticated (the member may not
    share the client's secret), so it is taken as it is, without a leader.  A failed change is an answer
    like any other: with a secret it must be authenticated and fresh, or it is not believed, so a forged
    ``not_leader`` cannot send the client elsewhere.
    """
    kind, detail = answer.get("error"), answer.get("detail")
    kind = kind if isinstance(kind, str) else "unknown"
    detail = detail if isinstance(detail, str) else None
    leader_id: Optional[int] = None
    if kind in CHANGE_ERRORS:
        if (secret is not None and not _mac_ok(secret, answer)) or answer.get("nonce") != nonce:
            raise AdminError(f"{address}: its answer is not authenticated or does not answer this request",
                             kind="bad_answer", address=address)
        leader = answer.get("leader_id")
        leader_id = leader if type(leader) is int else None
    raise AdminError(f"{address}: refused: {kind}: {detail}", kind=kind, detail=detail, leader_id=leader_id,
                     address=address)
