"""The AES-GCM frame seal pysyncobj's connections use in place of Fernet (cluster/raft_seal.py)."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from cluster.raft_seal import FrameSeal, SealError


def test_a_frame_opens_under_the_same_password_with_its_timestamp() -> None:
    sender, receiver = FrameSeal("cluster-password"), FrameSeal("cluster-password")
    frame = sender.encrypt_at_time(b"append entries", 1234)
    assert receiver.extract_timestamp(frame) == 1234
    assert receiver.decrypt(frame) == b"append entries"
    assert b"append entries" not in frame


def test_a_wrong_key_or_any_flipped_bit_is_refused() -> None:
    seal = FrameSeal("cluster-password")
    frame = seal.encrypt_at_time(b"x" * 64, 7)
    with pytest.raises(InvalidTag):
        FrameSeal("another-password").decrypt(frame)
    for i in range(1, len(frame)):  # byte 0 is the version: refused as SealError below
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(InvalidTag):
            seal.decrypt(bytes(bad))


def test_the_timestamp_is_authenticated() -> None:
    seal = FrameSeal("cluster-password")
    frame = bytearray(seal.encrypt_at_time(b"payload", 5))
    frame[8] = 9  # last timestamp byte: extract_timestamp reads it, decrypt refuses the frame
    assert seal.extract_timestamp(bytes(frame)) == 9
    with pytest.raises(InvalidTag):
        seal.decrypt(bytes(frame))


def test_short_frames_and_other_versions_are_refused_before_any_crypto() -> None:
    seal = FrameSeal("cluster-password")
    with pytest.raises(SealError):
        seal.decrypt(b"\x01" + b"\x00" * 20)
    frame = bytearray(seal.encrypt_at_time(b"payload", 5))
    frame[0] = 2
    with pytest.raises(SealError):
        seal.extract_timestamp(bytes(frame))


def test_nonces_never_repeat_and_a_wrapped_counter_draws_a_new_prefix() -> None:
    seal = FrameSeal("cluster-password")
    nonces = {seal.encrypt_at_time(b"", 0)[9:21] for _ in range(1000)}
    assert len(nonces) == 1000
    seal._counter = (1 << 32) - 1
    last_of_prefix = seal.encrypt_at_time(b"", 0)[9:21]
    first_of_next = seal.encrypt_at_time(b"", 0)[9:21]
    assert last_of_prefix[:8] != first_of_next[:8] and first_of_next[8:] == b"\x00\x00\x00\x00"
