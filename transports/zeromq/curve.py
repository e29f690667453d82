"""CURVE for the ZeroMQ transport: the members' keys (ZeroMQ RFC 26/32) and the ZAP handler (RFC 27).

:class:`Curve` checks and holds the keys and sets them on the transport's sockets; :class:`ZapHandler` is
the ``REP`` socket on which libzmq asks whether a client that completed the CURVE handshake may connect,
answered by the transport's receive thread between frames.  With CURVE only members complete the
handshake: traffic is encrypted, and nobody else's bytes get past it to the receive loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Callable, Dict, FrozenSet, NamedTuple, Optional, Union

import zmq
from zmq.utils import z85

from raft_election.errors import TransportError

__all__ = ["Curve", "CurveKey", "ZapHandler"]

#: A CURVE key as accepted by :class:`~transports.zeromq.ZmqTransport`: 40 Z85 characters (``str`` or
#: ``bytes``) or 32 raw bytes.
CurveKey = Union[str, bytes]

#: Where libzmq looks for the ZAP handler (ZeroMQ RFC 27) of a context; one per context.
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: A CURVE key in Z85 text (ZeroMQ RFC 32): 40 characters of the Z85 alphabet.
_Z85_KEY = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
#: ZAP requests answered per readiness report before the receive thread looks at its other sockets.
_ZAP_BATCH = 64


def _curve_key(name: str, key: object) -> bytes:
    """Return a CURVE key given as 40 Z85 characters or 32 raw bytes in Z85 form, or raise ValueError."""
    if isinstance(key, str):
        text = key.encode("ascii", "replace")
        if _Z85_KEY.fullmatch(text):
            return text
    elif isinstance(key, (bytes, bytearray)):
        key = bytes(key)
        if len(key) == 32:
            return z85.encode(key)
        if _Z85_KEY.fullmatch(key):
            return key
    raise ValueError(f"{name} is not a CURVE key: give 40 Z85 characters or 32 bytes, as made by "
                     "zmq.curve_keypair()")


class Curve(NamedTuple):
    """A node's CURVE settings, keys in Z85 text: its own key pair and every member's public key."""

    secret: bytes
    public: bytes
    keys: Dict[int, bytes]
    #: The members' public keys as the 32 raw bytes a ZAP request carries.
    members: FrozenSet[bytes]

    @classmethod
    def from_settings(cls, secret_key: Optional[CurveKey],
                      public_keys: Optional[Mapping[int, CurveKey]]) -> Optional[Curve]:
        """The settings given as ``curve_secret_key`` and ``curve_public_keys``; ``None`` if neither is.

        Raises:
            ValueError: only one of them is given, a key is malformed, or this libzmq has no CURVE.
        """
        if (secret_key is None) != (public_keys is None):
            raise ValueError("curve_secret_key and curve_public_keys go together: give both or neither")
        if secret_key is None or public_keys is None:
            return None
        if not zmq.has("curve"):
            raise ValueError("this libzmq was built without CURVE; drop the CURVE keys or rebuild it")
        secret = _curve_key("curve_secret_key", secret_key)
        keys = {node_id: _curve_key(f"curve_public_keys[{node_id!r}]", key)
                for node_id, key in public_keys.items()}
        return cls(secret=secret, public=zmq.curve_public(secret), keys=keys,
                   members=frozenset(z85.decode(key) for key in keys.values()))

    def check_members(self, node_id: int, members: Mapping[int, object]) -> None:
        """Check that every member has a public key and that ``node_id``'s is this node's own.

        Raises:
            TransportError: a member has no key, or this node's key pair does not match.
        """
        missing = sorted(set(members) - set(self.keys))
        if missing:
            raise TransportError(f"curve_public_keys has no key for node(s) {missing}; every member "
                                 "needs one")
        if self.keys[node_id] != self.public:
            raise TransportError(f"curve_public_keys[{node_id}] is not the public key of "
                                 f"curve_secret_key; node {node_id} was given someone else's key pair")

    def check_new_members(self, node_id: int, members: Mapping[int, object]) -> None:
        """Check, for a membership change, that every member of the new set has a public key.

        The keys are the roster of every node this one trusts, fixed when the transport is created: a
        membership change picks members among them and never adds a key.  (A change of members arrives
        from the cluster, through Raft; trust must come from whoever configures this node.)

        Raises:
            TransportError: a member has no key; the message names it and says how to provide one.
        """
        missing = sorted(set(members) - set(self.keys) - {node_id})
        if missing:
            listed = ", ".join(str(peer_id) for peer_id in sorted(self.keys))
            raise TransportError(
                f"cannot make node(s) {missing} members: curve_public_keys has no CURVE public key for "
                f"{'it' if len(missing) == 1 else 'them'} (keys are known for nodes {listed}).  With CURVE, "
                "every node that may ever be a member needs its public key in the curve_public_keys given "
                "to ZmqTransport when it is created: list the keys of the nodes that may join later up "
                "front, or restart this node with the new member's key added"
            )

    def serve(self, pull: zmq.Socket[bytes]) -> None:
        """Make ``pull`` a CURVE server: clients must know this node's public key to connect."""
        pull.setsockopt(zmq.CURVE_SERVER, 1)
        pull.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def connect_as_client(self, push: zmq.Socket[bytes], peer_id: int) -> None:
        """Make ``push`` a CURVE client that connects only to a server proving it holds ``peer_id``'s key."""
        push.setsockopt(zmq.CURVE_SERVERKEY, self.keys[peer_id])
        push.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        push.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


class ZapHandler:
    """The ZAP handler of a context: admits CURVE clients that hold a member's key, refuses the others.

    Bound at start in the transport's own context (a context has one ZAP handler) and answered by the
    receive thread only, which polls :attr:`socket`.

    Raises:
        TransportError: the context already has a ZAP handler.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], members: FrozenSet[bytes]) -> None:
        self._members = members
        zap = context.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        try:
            zap.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            zap.close(linger=0)
            raise TransportError(f"the zmq context already has a ZAP handler ({exc.strerror}); a transport "
                                 "with CURVE keys needs a context of its own: leave context=None") from exc
        #: The ``REP`` socket libzmq sends its requests to.
        self.socket = zap

    def answer(self, refused: Callable[[str, str], object]) -> None:
        """Answer pending ZAP requests (RFC 27); ``refused(mechanism, address)`` hears of each refusal.

        A request is ``[version, request id, domain, address, identity, mechanism, credentials...]``; for
        CURVE the one credential is the client's 32-byte public key.  Every request gets a reply, or the
        REP socket would stop answering.
        """
        zap = self.socket
        for _ in range(_ZAP_BATCH):
            try:
                request = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request_id = request[1] if len(request) > 1 else b""
            mechanism = request[5] if len(request) > 5 else b""
            credentials = request[6:]
            if mechanism == b"CURVE" and len(credentials) == 1 and credentials[0] in self._members:
                reply = [b"200", b"OK"]
            else:
                peer = request[3].decode("ascii", "replace") if len(request) > 3 else "?"
                refused(mechanism.decode("ascii", "replace") or "?", peer)
                reply = [b"400", b"not a member of this cluster"]
            zap.send_multipart([b"1.0", request_id, *reply, b"", b""])

    def close(self) -> None:
        """Close the socket, discarding what it holds."""
        self.socket.close(linger=0)
