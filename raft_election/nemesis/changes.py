"""Membership changes as an operator makes them: through the leader's admin channel, retried if refused.

The nemesis (and ``benchmarks/membership.py``) change the members of a running cluster the way
``raft-election members add|remove`` does: an ``add_member`` or ``remove_member`` request to the leader's
admin channel (:mod:`raft_election.admin`), authenticated with the cluster secret, answered once the new
configuration entry is committed (thesis §4.1: a majority of the new member set stored it).

:class:`ChangeDriver` finds the leader from the members' own reports (a callable the caller gives; the
nemesis rebuilds it from the member events), sends the request, and when the answer says the member asked
no longer leads (``not_leader``), could not be reached (it was just killed), or has a change of its own
pending (``membership_change``: a new leader commits an entry of its own term first), asks again, the
leader it names or the next one, until the change is committed or a deadline passes.  A change that timed
out may still be committed later by a leader (the entry stays pending until a majority stores it), so
after a change the caller asks :meth:`ChangeDriver.committed_members` what the cluster settled on, rather
than trusting its own bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

import attrs

from raft_election.admin import AdminError, query

__all__ = ["RETRY_ERRORS", "ChangeDriver", "ChangeOutcome", "ask"]

logger = logging.getLogger(__name__)

#: Answers after which the change is asked again (of the leader named, or of the next one).  A change is
#: idempotent (the same member at the same address), so asking again is always safe.  ``bad_answer``
#: includes a connection closed without an answer: the member asked died while the change was under way.
RETRY_ERRORS = frozenset({"not_leader", "membership_change", "unreachable", "not_running", "bad_answer"})


def ask(address: str, op: str, *, secret: Optional[bytes], timeout: float,
        params: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The answer of the admin channel at ``address`` to ``op``; a failure is an answer too.

    Returns the member's answer; a member that cannot be reached, or refuses, gives
    ``{"ok": False, "error": ..., "detail": ..., "leader_id": ...}`` (``error`` ``unreachable`` when the
    request got no answer at all), so callers handle every outcome in one place.
    """
    try:
        answer = query(address, op, secret=secret, timeout=timeout, params=dict(params or {}))
    except AdminError as exc:
        return {"ok": False, "error": exc.kind or "unreachable", "detail": exc.detail or str(exc),
                "leader_id": exc.leader_id}
    return {"ok": True, **answer}


@attrs.frozen(kw_only=True)
class ChangeOutcome:
    """One change as the operator saw it: what was asked, how it ended, how long it took (seconds)."""

    #: ``add`` or ``remove``.
    op: str
    #: The member added or removed.
    node: int
    ok: bool
    #: The last refusal's reason (None when committed): ``timeout``, ``not_leader``, ``config``, ...
    error: Optional[str] = None
    detail: Optional[str] = None
    #: From the first request to the committed answer (or to giving up).
    seconds: float = 0.0
    #: The last request alone: from sending it to its committed answer.
    last_request: float = 0.0
    attempts: int = 0
    #: The committed entry's index (None unless ``ok``).
    index: Optional[int] = None
    #: The member that answered last.
    leader: Optional[int] = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return attrs.asdict(self)


class ChangeDriver:
    """Makes membership changes through the leader's admin channel (see the module docstring).

    Args:
        admin: every member's admin address (read at each request, so the caller may add members).
        secret: the cluster secret.
        leader: who leads now, as far as the caller knows (None: nobody holds a lease now).
        poll: seconds between two looks for a leader, and before a request is asked again.
        timeout: the seconds each request gives the leader to commit the change.
        patience: how long a change is asked again before it is given up (default: three ``timeout``).
    """

    def __init__(self, admin: Mapping[int, str], *, secret: Optional[bytes],
                 leader: Callable[[], Optional[int]], poll: float = 0.05, timeout: float = 10.0,
                 patience: Optional[float] = None) -> None:
        self._admin = admin
        self._secret = secret
        self._leader = leader
        self._poll = poll
        self._timeout = timeout
        self._patience = 3 * timeout if patience is None else patience

    def ask(self, node: int, op: str, params: Optional[Mapping[str, Any]] = None,
            timeout: float = 2.0) -> dict[str, Any]:
        """Member ``node``'s admin answer to ``op`` with ``params`` (failures as answers, see :func:`ask`)."""
        return ask(self._admin[node], op, secret=self._secret, timeout=timeout, params=params)

    def wait_leader(self, deadline: float) -> Optional[int]:
        """The leader, once there is one; None if there is none by ``deadline`` (``time.monotonic()``)."""
        while True:
            leader = self._leader()
            if leader is not None or time.monotonic() >= deadline:
                return leader
            time.sleep(self._poll)

    def change(self, op: str, node: int, address: Optional[str] = None, *,
               first: Optional[int] = None) -> ChangeOutcome:
        """Add (``op`` ``add``, at ``address``) or remove ``node``; ask until committed or given up.

        ``first``: the member to ask first (default: the leader).  Never raises for a refused change: the
        outcome says how it ended.
        """
        if op not in ("add", "remove"):
            raise ValueError(f"op must be 'add' or 'remove', not {op!r}")
        params: dict[str, Any] = {"id": node, "timeout": self._timeout}
        if op == "add":
            params["address"] = address
        began = time.monotonic()
        deadline = began + self._patience
        target = first
        attempts = 0
        answer: dict[str, Any] = {"ok": False, "error": "no_leader", "detail": "no leader to ask"}
        sent = began
        while True:
            if target is None or target not in self._admin:
                target = self.wait_leader(deadline)
            if target is None:
                break
            attempts += 1
            sent = time.monotonic()
            answer = self.ask(target, f"{op}_member", params, timeout=2.0)
            if answer.get("ok"):
                break
            error = str(answer.get("error"))
            logger.info("%s member %d: %d answered %s (%s)", op, node, target, error, answer.get("detail"))
            if error not in RETRY_ERRORS or time.monotonic() >= deadline:
                break
            hint = answer.get("leader_id")
            target = int(hint) if isinstance(hint, int) and hint != target else None
            time.sleep(self._poll)
        ended = time.monotonic()
        ok = bool(answer.get("ok"))
        index = answer.get("index")
        return ChangeOutcome(op=op, node=node, ok=ok, error=None if ok else str(answer.get("error")),
                             detail=None if ok else str(answer.get("detail")), seconds=ended - began,
                             last_request=ended - sent, attempts=attempts,
                             index=int(index) if ok and isinstance(index, int) else None, leader=target)

    def committed_members(self, deadline: float) -> Optional[dict[int, str]]:
        """The members of the leader's latest configuration once it stands; None if not by ``deadline``.

        Asks the leader (``members``); an answer from a member that does not lead, or while it has a change
        under way (``membership_change``), is asked again a moment later.  An entry the leader inherited
        uncommitted from an earlier leader, with no change under way, stands too: this leader keeps it
        (it commits it with its first entry of its term, which it makes only when the next change
        begins), so waiting for its commit could take until the next change.
        """
        while True:
            leader = self.wait_leader(deadline)
            if leader is None:
                return None
            answer = self.ask(leader, "members")
            configuration = answer.get("configuration")
            if (answer.get("node_id") == leader and answer.get("leader_id") == leader
                    and isinstance(configuration, Mapping)
                    and (configuration.get("committed") or answer.get("membership_change") is None)
                    and isinstance(answer.get("members"), Mapping)):
                return {int(member): str(address) for member, address in answer["members"].items()}
            if time.monotonic() >= deadline:
                return None
            time.sleep(self._poll)
