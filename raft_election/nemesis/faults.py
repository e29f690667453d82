"""Link faults injected inside a member process: dropped links, message loss and delay, without root.

Network namespaces and ``tc netem`` need privileges that a test machine does not always grant.  Instead,
a member started with ``raft-election run --faults DIR`` wraps its transport in a :class:`FaultyTransport`
and reads its :class:`LinkFaults` from ``DIR/<id>.json``, at start and again on every SIGUSR2, so a
controller (the nemesis soak runner, or a test) can change them while the member runs:

* ``drop_to``: ids of peers this member's outbound messages to are dropped.  A two-way partition between A
  and B is A dropping to B *and* B dropping to A; a one-way cut is only one of the two.
* ``loss``: probability that any outbound message is dropped.
* ``delay``: each outbound message is held for ``uniform(min, max)`` seconds before it is sent.

Only outbound messages are touched; cutting the other side's outbound gives the inbound effect.  The file
is a JSON object with any of those keys, e.g. ``{"drop_to": [2, 3], "loss": 0.1, "delay": [0.01, 0.05]}``;
a missing or empty file means no faults.  Write it with :func:`write_faults` (atomically, so a member
reloading at that moment never reads half a file).

:class:`LinkFaults` is one member's share of a :class:`~raft_election.netfaults.NetworkFaults` (the
library's one description of network faults, with the semantics the simulation and the in-memory network
follow too): :meth:`LinkFaults.of` takes it out, so a controller describes a partition, an isolation or a
one-way cut once for the whole cluster and writes each member its part.  The fields are checked by the
same checkers as :class:`~raft_election.netfaults.NetworkFaults`'s.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, List, Optional, Tuple, Union

import attrs

from raft_election.delays import wait_until_due
from raft_election.errors import ConfigError
from raft_election.netfaults import NetworkFaults, check_delay, check_node_ids, check_probability
from raft_election.transport import DeathProbe, DeliverFn, EvidenceFn, Transport, as_bytes

__all__ = [
    "COUNTER_NAMES",
    "NO_FAULTS",
    "FaultyTransport",
    "LinkFaults",
    "faults_path",
    "load_faults",
    "write_faults",
]

logger = logging.getLogger(__name__)

#: The keys of :meth:`FaultyTransport.counters` added to the inner transport's.
COUNTER_NAMES = ("fault_dropped", "fault_delayed")

_KEYS = ("drop_to", "loss", "delay")


def _to_drop_to(value: Iterable[int]) -> frozenset[int]:
    """``drop_to`` as a frozenset of node ids (see :func:`~raft_election.netfaults.check_node_ids`)."""
    return check_node_ids("drop_to", value)


def _to_loss(value: float) -> float:
    """``loss`` as a float probability (see :func:`~raft_election.netfaults.check_probability`)."""
    return check_probability("loss", value)


def _to_delay(value: Tuple[float, float]) -> Tuple[float, float]:
    """``delay`` as a ``(min, max)`` pair of floats (see :func:`~raft_election.netfaults.check_delay`)."""
    return check_delay("delay", value)


@attrs.frozen(kw_only=True)
class LinkFaults:
    """The faults one member applies to its outbound messages; the default is no faults.

    Raises:
        ConfigError: a field is invalid; the message (and ``field``) names it.
    """

    #: Peers whose outbound messages are all dropped (including delayed ones still pending when added).
    drop_to: frozenset[int] = attrs.field(factory=frozenset, converter=_to_drop_to)
    #: Probability in [0, 1] that any other outbound message is dropped.
    loss: float = attrs.field(default=0.0, converter=_to_loss)
    #: ``(min, max)`` seconds each outbound message is held before it is sent; ``(0, 0)``: none.
    delay: tuple[float, float] = attrs.field(default=(0.0, 0.0), converter=_to_delay)

    @property
    def active(self) -> bool:
        """Whether any fault is set (``False`` for the default, which passes every message on at once)."""
        return bool(self.drop_to) or self.loss > 0.0 or self.delay[1] > 0.0

    @classmethod
    def of(cls, faults: NetworkFaults, member: int, members: Iterable[int]) -> LinkFaults:
        """Member ``member``'s share of ``faults``: the peers among ``members`` it cannot reach, loss, delay.

        Applied by every member of ``members``, the shares cut exactly the links ``faults`` cuts (a
        two-way cut is both ends dropping to each other), with the same loss and delay on every message.

        Raises:
            ConfigError: ``faults`` duplicates or reorders messages, which member processes cannot do.
        """
        for field in ("duplicate_rate", "reorder_rate"):
            if getattr(faults, field) > 0.0:
                raise ConfigError(field, f"member processes cannot duplicate or reorder messages, got "
                                         f"{getattr(faults, field)!r}; use 0 (the in-memory network and "
                                         "the simulation can)")
        return cls(drop_to=faults.cut_from(member, members), loss=faults.drop_rate, delay=faults.delay)

    @classmethod
    def from_json(cls, obj: object) -> LinkFaults:
        """The faults a decoded JSON document describes; ``None`` or ``{}`` means no faults.

        Missing keys take their defaults; unknown keys are refused, so a misspelt fault is not silently
        ignored.

        Raises:
            ConfigError: ``obj`` is not an object, has an unknown key, or a value is invalid.
        """
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise ConfigError("faults", f"must be a JSON object with keys {', '.join(_KEYS)}, got {obj!r}")
        unknown = sorted(str(key) for key in obj if key not in _KEYS)
        if unknown:
            raise ConfigError("faults", f"unknown key(s) {', '.join(unknown)}; the keys are "
                                        f"{', '.join(_KEYS)}")
        values: dict[str, Any] = {key: obj[key] for key in _KEYS if key in obj}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_json` turns back into equal faults."""
        return {"drop_to": sorted(self.drop_to), "loss": self.loss, "delay": [self.delay[0], self.delay[1]]}


#: No faults: every message passes at once.
NO_FAULTS = LinkFaults()

PathLike = Union[str, "os.PathLike[str]"]


def faults_path(directory: PathLike, node_id: int) -> str:
    """The file member ``node_id`` reads its faults from in ``directory`` (``<directory>/<id>.json``)."""
    return os.path.join(os.fspath(directory), f"{node_id}.json")


def load_faults(path: PathLike) -> LinkFaults:
    """The faults in the JSON file ``path``; a missing or empty (or ``null``) file means no faults.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or does not describe valid faults; the message
            names the file and the problem.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return NO_FAULTS
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("faults", f"cannot read {name}: {exc}") from exc
    if not text.strip():
        return NO_FAULTS
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError("faults", f"{name} is not valid JSON: {exc}") from exc
    try:
        return LinkFaults.from_json(document)
    except ConfigError as exc:
        reason = str(exc)
        if exc.field == "faults":  # the whole document is wrong: say so once, not "faults: faults: ..."
            reason = reason[len("faults: "):]
        raise ConfigError("faults", f"{name}: {reason}") from exc


def write_faults(path: PathLike, faults: LinkFaults) -> None:
    """Write ``faults`` to ``path`` atomically (a temporary file renamed over it), for controllers."""
    name = os.fspath(path)
    temporary = f"{name}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(faults.to_json(), file)
            file.write("\n")
        os.replace(temporary, name)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


#: ``(send_at, sequence, peer_id, data)``; the unique sequence breaks ties, so data is never compared.
_Entry = Tuple[float, int, int, bytes]


class FaultyTransport(Transport, DeathProbe):
    """A transport that applies :class:`LinkFaults` to outbound messages before passing them to ``inner``.

    :meth:`start`, :meth:`close` and :meth:`counters` delegate to ``inner`` (the counters gain
    ``fault_dropped`` and ``fault_delayed``); incoming messages are delivered untouched.  Each
    :meth:`send` applies the current faults, in this order:

    1. a peer in ``drop_to``: dropped;
    2. ``loss > 0``: one draw from ``random.Random(seed)``; below ``loss``: dropped;
    3. ``delay`` max ``> 0``: one draw of ``uniform(*delay)``, and the message is queued for a single
       scheduler thread (started on the first delayed message, joined by :meth:`close`), which sends it
       when due, unless its peer is in ``drop_to`` by then;
    4. otherwise it is passed to ``inner.send`` at once, on the caller's thread.

    The draws are made under a lock, so one sending thread gets the same choices for the same seed.
    ``fault_dropped`` counts messages dropped by ``drop_to`` (at send time or when due) or by ``loss``;
    ``fault_delayed`` counts messages queued by ``delay``.  Delayed messages still queued at
    :meth:`close` are discarded, and every send after :meth:`close` is ignored.

    :meth:`set_faults` is thread-safe and applies to messages sent afterwards; queued messages keep their
    schedule (but a peer newly in ``drop_to`` loses them).

    Death probes (fast failover) go to ``inner`` if it has the capability, subject to the same cut and
    loss as messages: a probe of a peer in ``drop_to``, or lost, is never sent, so a cut link gives no
    evidence, as a real partition would not.
    """

    def __init__(self, inner: Transport, *, seed: int) -> None:
        self._inner = inner
        self._random = random.Random(seed)
        #: Guards everything below; the scheduler waits on it for the next deadline or a new message.
        self._cond = threading.Condition(threading.Lock())
        self._faults = NO_FAULTS
        self._heap: List[_Entry] = []
        self._sequence = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._node_id: Optional[int] = None
        self._closed = False
        self._dropped = 0
        self._delayed = 0

    @property
    def inner(self) -> Transport:
        """The wrapped transport."""
        return self._inner

    @property
    def faults(self) -> LinkFaults:
        """The faults applied to messages sent from now on."""
        with self._cond:
            return self._faults

    def set_faults(self, faults: LinkFaults) -> None:
        """Apply ``faults`` to every message sent from now on (queued delayed messages keep their times).

        Raises:
            TypeError: ``faults`` is not a :class:`LinkFaults`.
        """
        if not isinstance(faults, LinkFaults):
            raise TypeError(f"faults must be a LinkFaults, got {type(faults).__name__}")
        with self._cond:
            # The scheduler reads drop_to when a queued message is due, so it need not be woken here.
            self._faults = faults
            node_id = self._node_id
        where = "" if node_id is None else f" of node {node_id}"
        logger.info("link faults%s now %s", where, faults.to_json())

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        """Start ``inner`` (incoming messages go straight to ``deliver``)."""
        with self._cond:
            self._node_id = node_id
        self._inner.start(node_id, peers, deliver)

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Pass a membership change's new peers on to ``inner`` (thesis ch. 4); faults apply to new peers too.

        Raises:
            NotImplementedError: ``inner`` cannot change its peers while running.
            TransportError: ``inner`` refused an address.
        """
        self._inner.set_peers(peers)

    def send(self, peer_id: int, data: bytes) -> None:
        """Apply the current faults to ``data`` for ``peer_id``: drop it, queue it, or send it now.

        Never blocks.  Ignored after :meth:`close`.

        Raises:
            TypeError: ``data`` is not bytes-like (a caller bug).
        """
        payload = as_bytes(data)
        with self._cond:
            if self._closed:
                return
            faults = self._faults
            if peer_id in faults.drop_to:
                self._dropped += 1
                return
            if faults.loss > 0.0 and self._random.random() < faults.loss:
                self._dropped += 1
                return
            low, high = faults.delay
            if high > 0.0:
                send_at = time.monotonic() + self._random.uniform(low, high)
                heapq.heappush(self._heap, (send_at, next(self._sequence), peer_id, payload))
                self._delayed += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name=f"faults-{self._node_id}")
                    self._thread.start()
                self._cond.notify_all()
                return
        self._inner.send(peer_id, payload)

    def watch(self, report: EvidenceFn) -> None:
        """Pass ``inner``'s death evidence on to ``report`` (nothing, if ``inner`` has no probes)."""
        if isinstance(self._inner, DeathProbe):
            self._inner.watch(report)

    def probe(self, peer_id: int) -> None:
        """Probe ``peer_id`` through ``inner`` unless the link to it is cut or the probe is lost."""
        with self._cond:
            faults = self._faults
            if self._closed or peer_id in faults.drop_to or (
                    faults.loss > 0.0 and self._random.random() < faults.loss):
                return
        if isinstance(self._inner, DeathProbe):
            self._inner.probe(peer_id)

    @property
    def failed(self) -> bool:
        """Whether ``inner`` failed."""
        return self._inner.failed

    def close(self) -> None:
        """Discard queued messages, join the scheduler thread, then close ``inner``.  Idempotent."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._inner.close()

    def counters(self) -> Mapping[str, int]:
        """``inner``'s counters plus ``fault_dropped`` and ``fault_delayed``."""
        merged = dict(self._inner.counters())
        with self._cond:
            merged["fault_dropped"] = self._dropped
            merged["fault_delayed"] = self._delayed
        return merged

    @property
    def pending(self) -> int:
        """Delayed messages queued and not yet sent or dropped."""
        with self._cond:
            return len(self._heap)

    def __repr__(self) -> str:
        with self._cond:
            return (f"<FaultyTransport node_id={self._node_id} faults={self._faults.to_json()} "
                    f"pending={len(self._heap)} closed={self._closed} inner={self._inner!r}>")

    # ---------------------------------------------------------------- the scheduler thread

    def _due(self) -> Optional[List[Tuple[int, bytes]]]:
        """Wait (lock held) for queued messages that are due; return those still to send, None once closed."""
        while True:
            now = wait_until_due(self._cond, self._heap, lambda: self._closed)
            if now is None:
                return None
            due: List[Tuple[int, bytes]] = []
            cut = self._faults.drop_to
            while self._heap and self._heap[0][0] <= now:
                _, _, peer_id, payload = heapq.heappop(self._heap)
                if peer_id in cut:
                    self._dropped += 1
                else:
                    due.append((peer_id, payload))
            if due:
                return due

    def _run(self) -> None:
        """Send queued messages when due, outside the lock; an inner send that raises is logged, not fatal."""
        while True:
            with self._cond:
                due = self._due()
            if due is None:
                return
            for peer_id, payload in due:
                try:
                    self._inner.send(peer_id, payload)
                except Exception:
                    logger.exception("node %s: sending a delayed message to %d failed", self._node_id,
                                     peer_id)
