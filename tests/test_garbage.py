"""The garbage generator used by the flood tests and benchmark: reproducible, and never valid."""

from __future__ import annotations

import pytest

from raft_election.codec import Codec
from raft_election.errors import DecodeError
from raft_election.garbage import MAX_GARBAGE, garbage_messages


def test_every_garbage_message_is_rejected_by_an_authenticating_codec():
    """With a secret no mutation passes (without one, a bit flip can yield another valid message)."""
    codec = Codec("garbage", b"a secret that is long enough")
    messages = list(garbage_messages(5000, codec, recipient=1, seed=3))
    assert len(messages) == 5000
    for data in messages:
        assert 0 < len(data) <= MAX_GARBAGE
        with pytest.raises(DecodeError):
            codec.decode(data)


def test_the_same_seed_gives_the_same_garbage():
    codec = Codec("garbage", b"a secret that is long enough")
    assert list(garbage_messages(100, codec, 1, seed=9)) == list(garbage_messages(100, codec, 1, seed=9))
    assert list(garbage_messages(100, codec, 1, seed=9)) != list(garbage_messages(100, codec, 1, seed=8))
