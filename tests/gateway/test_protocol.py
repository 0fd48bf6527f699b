"""Shared frame helpers: delta frames and chunked snapshots, end to end through the codec."""

from __future__ import annotations

import pytest

from gateway import (
    CodecError,
    ConfigState,
    apply_delta,
    assemble_snapshot,
    decode_frame,
    delta_frame,
    delta_from_frame,
    encode_frame,
    snapshot_frames,
)

from .helpers import apply, base_state, put, route_body, txn, upstream_body


def big_state() -> ConfigState:
    state = base_state()
    return apply(state, *(put("routes", f"r{i}", route_body(paths=[f"/p/{i}"])) for i in range(200)))


def test_delta_frame_round_trip() -> None:
    state = base_state()
    new, delta = state.apply(txn(put("upstreams", "u2", upstream_body())))
    frame = decode_frame(encode_frame(delta_frame(delta, new.hash())))
    assert frame["hash"] == new.hash()
    replayed = apply_delta(state, delta_from_frame(frame))
    assert replayed == new and replayed.hash() == frame["hash"]
    with pytest.raises(CodecError):
        delta_from_frame({"t": "ack", "revision": 1})


def test_snapshot_chunks_round_trip() -> None:
    state = big_state()
    frames = [decode_frame(encode_frame(f)) for f in snapshot_frames(state, chunk_size=500)]
    assert len(frames) > 2 and [f["chunk"] for f in frames] == list(range(len(frames)))
    assert assemble_snapshot(frames) == state
    single = snapshot_frames(state)
    assert len(single) == 1 and assemble_snapshot(single).hash() == state.hash()


def test_snapshot_assembly_errors() -> None:
    state = big_state()
    frames = snapshot_frames(state, chunk_size=500)
    other = snapshot_frames(base_state(), chunk_size=500)
    cases = [
        [],
        frames[:-1],
        [frames[1], frames[0], *frames[2:]],
        [other[0], *frames[1:]],
        [{**frames[0], "hash": "0" * 64}, *[{**f, "hash": "0" * 64} for f in frames[1:]]],
        [{**frames[0], "revision": 99}, *[{**f, "revision": 99} for f in frames[1:]]],
        [{**frames[0], "data": "x"}, *frames[1:]],
    ]
    for bad in cases:
        with pytest.raises(CodecError):
            assemble_snapshot(bad)
    with pytest.raises(ValueError):
        snapshot_frames(state, chunk_size=0)
