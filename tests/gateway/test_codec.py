"""msgpack codec: raw values, txns, deltas and snapshots (frames: tests/gateway/test_protocol.py)."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from gateway import (
    CodecError,
    ConfigState,
    Txn,
    decode,
    decode_delta,
    decode_snapshot,
    decode_txn,
    encode,
    encode_delta,
    encode_snapshot,
    encode_txn,
)

from .helpers import base_state, delete, put, route_body, txn


def raw(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def test_encode_decode_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "x", b"\x00\xff"], "b": {"c": -(2**63)}}
    assert decode(encode(value)) == value
    assert decode(bytearray(encode(1))) == 1 and decode(memoryview(encode(1))) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", encode(1) + b"\x00", msgpack.packb(msgpack.ExtType(5, b"x")), raw({1: 2}), "text", None, 5],
)
def test_decode_rejects_garbage(data: Any) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_encode_rejects_unencodable() -> None:
    for value in (object(), {"a": {1, 2}}, 2**64):
        with pytest.raises(CodecError):
            encode(value)


def test_txn_round_trip() -> None:
    original = Txn(
        "req-1",
        (put("routes", "r1", route_body(), expect=0), delete("upstreams", "u1", expect=3)),
        expect_revision=7,
    )
    data = encode_txn(original)
    assert decode(data) == {
        "request_id": "req-1",
        "expect_revision": 7,
        "ops": [
            {"action": "put", "kind": "routes", "id": "r1", "body": route_body(), "expect_mod_revision": 0},
            {"action": "delete", "kind": "upstreams", "id": "u1", "body": None, "expect_mod_revision": 3},
        ],
    }
    assert decode_txn(data) == original
    assert decode_txn(encode_txn(txn(delete("routes", "r1")))).expect_revision is None


def _txn(**over: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"action": "put", "kind": "routes", "id": "r1", "body": {}, "expect_mod_revision": None}
    base: dict[str, Any] = {"request_id": "r", "expect_revision": None, "ops": [op]}
    base.update(over)
    return base


@pytest.mark.parametrize(
    "obj",
    [
        [],
        _txn(request_id=None),
        _txn(ops=None),
        _txn(ops=[5]),
        _txn(ops=[{"action": "merge", "kind": "routes", "id": "r1"}]),
        _txn(ops=[{"action": "put", "kind": 1, "id": "r1"}]),
        _txn(ops=[{"action": "put", "kind": "routes", "id": "r1", "body": []}]),
        _txn(ops=[{"action": "put", "kind": "routes", "id": "r1", "expect_mod_revision": True}]),
        _txn(ops=[{"action": "put", "kind": "routes"}]),
        _txn(expect_revision="1"),
        _txn(expect_revision=-1),
    ],
)
def test_decode_txn_rejects_bad_shapes(obj: Any) -> None:
    with pytest.raises(CodecError):
        decode_txn(raw(obj))


def test_delta_round_trip() -> None:
    state = base_state()
    _, delta = state.apply(txn(put("routes", "r2", route_body()), delete("routes", "r1")))
    data = encode_delta(delta)
    decoded = decode(data)
    assert decoded["base"] == 1 and decoded["revision"] == 2
    assert decoded["ops"][1] == ["delete", "routes", "r1", None]
    again = decode_delta(data)
    assert again.base == 1 and again.revision == 2 and again.ops == tuple(tuple(op) for op in decoded["ops"])


@pytest.mark.parametrize(
    "obj",
    [
        {"base": 0, "revision": 1},
        {"base": 1, "revision": 1, "ops": []},
        {"base": -1, "revision": 1, "ops": []},
        {"base": 0, "revision": 1, "ops": {}},
        {"base": 0, "revision": 1, "ops": [["put", "routes", "r1"]]},
        {"base": 0, "revision": 1, "ops": [["put", "routes", "r1", None]]},
        {"base": 0, "revision": 1, "ops": [["put", "routes", "r1", {"spec": 1}]]},
        {"base": 0, "revision": 1, "ops": [["put", "routes", "r1", {"spec": {}, "created_revision": 0, "mod_revision": 1}]]},
        {"base": 0, "revision": 1, "ops": [["delete", "routes", "r1", {}]]},
        {"base": 0, "revision": 1, "ops": [["delete", "nope", "r1", None]]},
    ],
)
def test_decode_delta_rejects_bad_shapes(obj: Any) -> None:
    with pytest.raises(CodecError):
        decode_delta(raw(obj))


def test_snapshot_round_trip() -> None:
    state = base_state()
    data = encode_snapshot(state)
    assert msgpack.unpackb(zlib.decompress(data), raw=False) == state.to_snapshot()
    again = decode_snapshot(data)
    assert again == state and again.hash() == state.hash()
    assert encode_snapshot(again) == data  # deterministic bytes
    assert decode_snapshot(encode_snapshot(ConfigState.empty())) == ConfigState.empty()


def test_snapshot_corruption() -> None:
    data = encode_snapshot(base_state())
    for bad in (b"", b"garbage", data[:-3], data + b"x", zlib.compress(b"\xc1"), zlib.compress(raw({"revision": "x"}))):
        with pytest.raises(CodecError):
            decode_snapshot(bad)
    with pytest.raises(CodecError, match="larger than"):
        decode_snapshot(zlib.compress(b"\x00" * 10_000), max_bytes=1000)
    with pytest.raises(CodecError):
        decode_snapshot("text")  # type: ignore[arg-type]
