"""msgpack codec: raw values, txns, deltas, snapshots and push-protocol frames."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from gateway import (
    FRAME_TYPES,
    PROTOCOL_VERSION,
    CodecError,
    ConfigState,
    Delta,
    Txn,
    decode,
    decode_delta,
    decode_frame,
    decode_snapshot,
    decode_txn,
    encode,
    encode_delta,
    encode_frame,
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


VALID_FRAMES: dict[str, dict[str, Any]] = {
    "hello": {"t": "hello", "proto": 1, "proxy_id": "p1", "software": "gwadm/0.1", "revision": 0, "hash": "", "address": None},
    "delta": {"t": "delta", "base": 1, "revision": 2, "ops": [["delete", "routes", "r1", None]], "hash": "h"},
    "snapshot": {"t": "snapshot", "revision": 3, "hash": "h", "chunk": 0, "chunks": 2, "data": b"\x00"},
    "ack": {"t": "ack", "revision": 3},
    "nack": {"t": "nack", "revision": 3, "error": {"code": "invalid", "message": "m", "path": None}},
    "status": {"t": "status", "node_id": "n1", "leader_id": None, "term": 4, "has_quorum": True, "revision": 3},
    "resync": {"t": "resync", "revision": 0},
    "mode": {"t": "mode", "mode": "cached"},
}


def test_frame_types_match_the_contract() -> None:
    assert set(FRAME_TYPES) == set(VALID_FRAMES) and PROTOCOL_VERSION == 1


@pytest.mark.parametrize("kind", sorted(VALID_FRAMES))
def test_valid_frames_round_trip(kind: str) -> None:
    frame = VALID_FRAMES[kind]
    assert decode_frame(encode_frame(frame)) == frame
    assert decode_frame(raw({**frame, "future_field": 1}))["t"] == kind  # forward compatible


@pytest.mark.parametrize(
    ("kind", "field"), [(kind, field) for kind, frame in sorted(VALID_FRAMES.items()) for field in frame if field != "t"]
)
def test_every_required_field_is_checked(kind: str, field: str) -> None:
    frame = {k: v for k, v in VALID_FRAMES[kind].items() if k != field}
    with pytest.raises(CodecError, match=f"missing required field '{field}'"):
        decode_frame(raw(frame))
    with pytest.raises(CodecError):
        encode_frame(frame)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"revision": 1}, "unknown frame type"),
        ({"t": "bogus"}, "unknown frame type"),
        ({"t": 5}, "unknown frame type"),
        ({**VALID_FRAMES["hello"], "proto": 2}, "unsupported protocol version 2"),
        ({**VALID_FRAMES["hello"], "revision": True}, "'revision' must be an integer"),
        ({**VALID_FRAMES["hello"], "proxy_id": 1}, "'proxy_id' must be a string"),
        ({**VALID_FRAMES["ack"], "revision": -1}, "'revision' must be >= 0"),
        ({**VALID_FRAMES["delta"], "revision": 1}, "greater than base"),
        ({**VALID_FRAMES["delta"], "ops": [["merge", "routes", "r1", None]]}, "bad action"),
        ({**VALID_FRAMES["snapshot"], "chunk": 2}, "chunk must be < chunks"),
        ({**VALID_FRAMES["snapshot"], "chunks": 0}, "'chunks' must be >= 1"),
        ({**VALID_FRAMES["snapshot"], "data": "text"}, "must be binary"),
        ({**VALID_FRAMES["nack"], "error": 5}, "'error'"),
        ({**VALID_FRAMES["status"], "has_quorum": 1}, "true or false"),
        ({**VALID_FRAMES["mode"], "mode": "happy"}, "'mode' must be one of"),
    ],
)
def test_bad_frames(frame: dict[str, Any], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_frame(raw(frame))


def test_decode_frame_rejects_non_maps() -> None:
    for data in (raw([1]), raw("hello"), b"\xc1", b""):
        with pytest.raises(CodecError):
            decode_frame(data)


def test_delta_objects_encode_in_frames() -> None:
    delta = Delta(0, 1, (("delete", "routes", "r1", None),))
    frame = {"t": "delta", "base": delta.base, "revision": delta.revision, "ops": delta.ops, "hash": "h"}
    assert decode_frame(encode_frame(frame))["ops"] == [["delete", "routes", "r1", None]]


def test_hello_status_address_is_optional_but_checked_when_present() -> None:
    from gateway.codec import PROTOCOL_VERSION, decode_frame, encode

    hello = {"t": "hello", "proto": PROTOCOL_VERSION, "proxy_id": "p1", "software": "x", "revision": 0,
             "hash": "", "address": None}
    assert "status_address" not in decode_frame(encode(hello))  # an older proxy omits it
    assert decode_frame(encode({**hello, "status_address": "127.0.0.1:8081"}))["status_address"] == "127.0.0.1:8081"
    with pytest.raises(CodecError, match="status_address"):
        decode_frame(encode({**hello, "status_address": 8081}))


def test_status_members_are_optional_but_checked_when_present() -> None:
    from gateway.codec import MAX_MEMBER_URLS, decode_frame, encode

    status = {"t": "status", "node_id": "n1", "leader_id": "n1", "term": 3, "has_quorum": True, "revision": 7}
    assert "members" not in decode_frame(encode(status))  # an older node omits it
    urls = ["http://127.0.0.1:8000", "https://cp2.example:8443"]
    assert decode_frame(encode({**status, "members": urls}))["members"] == urls
    for bad in ("http://a:1", [8000], ["ftp://a:1"], ["http://a:1"] * (MAX_MEMBER_URLS + 1)):
        with pytest.raises(CodecError, match="members"):
            decode_frame(encode({**status, "members": bad}))
