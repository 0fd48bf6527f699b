"""Push-protocol frames: one typed schema for both ends, strict decoding with field paths, chunking."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from gateway import CodecError, ConfigState, apply_delta
from gateway.protocol import (
    CP_FRAMES,
    DP_FRAMES,
    FRAME_TYPES,
    MAX_MEMBER_URLS,
    PROTOCOL_VERSION,
    Ack,
    DeltaFrame,
    ErrorFrame,
    Frame,
    FrameError,
    Hello,
    JoinedSnapshot,
    Mode,
    Nack,
    OutOfSequence,
    Resync,
    SnapshotAssembler,
    SnapshotChunk,
    Status,
    UnknownFrameType,
    UnsupportedProtocol,
    assemble_snapshot,
    chunk_blob,
    decode_frame,
    encode_frame,
    peek_type,
    snapshot_chunks,
)

from .helpers import apply, base_state, put, route_body, txn, upstream_body

RESOURCE = {"spec": {"paths": ["/a"]}, "created_revision": 1, "mod_revision": 2}
FRAMES: list[Frame] = [
    Hello("p1", "gwadm/0.1", 0, "", None),
    Hello("p1", "gwadm/0.1", 5, "ab", "10.0.0.1", status_address="127.0.0.1:8081"),
    Status("n1", None, 4, True, 3),
    Status("n1", "n2", 4, False, 3, members=("http://127.0.0.1:8000", "https://cp.example:8443")),
    DeltaFrame(1, 2, (("delete", "routes", "r1", None), ("put", "routes", "r2", RESOURCE)), "h"),
    SnapshotChunk(3, "h", 0, 2, b"\x00"),
    Ack(3),
    Nack(3, "boom"),
    Resync(0),
    Mode("cached"),
    ErrorFrame("unauthorized", "token revoked"),
]


def raw(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def wire(frame: Frame) -> dict[str, Any]:
    return frame.wire()


def test_frame_types_and_directions_match_the_contract() -> None:
    assert set(FRAME_TYPES) == {"hello", "status", "delta", "snapshot", "ack", "nack", "resync", "mode", "error"}
    assert DP_FRAMES | CP_FRAMES == set(FRAME_TYPES) and not DP_FRAMES & CP_FRAMES
    assert PROTOCOL_VERSION == 1


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips_and_tolerates_extra_keys(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame
    assert decode_frame(raw({**wire(frame), "future_field": [1]})) == frame  # forward compatible


def test_wire_format_is_protocol_v1() -> None:
    """Byte-level compatibility with v1 peers that build plain dicts (docs/contracts.md §4)."""
    assert msgpack.unpackb(encode_frame(Ack(7))) == {"t": "ack", "revision": 7}
    assert msgpack.unpackb(encode_frame(Hello("p", "s", 1, "h"))) == {
        "t": "hello", "proto": 1, "proxy_id": "p", "software": "s", "revision": 1, "hash": "h", "address": None}
    assert "members" not in msgpack.unpackb(encode_frame(Status("n", None, 1, True, 1)))  # older nodes omit it
    old_nack = {"t": "nack", "revision": 3, "error": {"code": "invalid", "message": "m", "path": None}}
    assert decode_frame(raw(old_nack)) == Nack(3, "m")


REQUIRED = [(f, k) for f in FRAMES[::2] + FRAMES[1::2] for k in wire(f) if k != "t"
            if (type(f), k) not in ((Hello, "status_address"), (Status, "members"))]


@pytest.mark.parametrize(("frame", "field"), REQUIRED, ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_every_required_field_is_checked_with_its_path(frame: Frame, field: str) -> None:
    data = {k: v for k, v in wire(frame).items() if k != field}
    with pytest.raises(FrameError) as err:
        decode_frame(raw(data))
    assert err.value.path == f"{frame.T}.{field}" and "missing required field" in str(err.value)


HELLO, DELTA, SNAP, STATUS = wire(FRAMES[0]), wire(FRAMES[4]), wire(FRAMES[5]), wire(FRAMES[2])


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({**HELLO, "revision": True}, "hello.revision", "integer"),
        ({**HELLO, "revision": -1}, "hello.revision", "between"),
        ({**HELLO, "revision": 2**64 - 1}, "hello.revision", "between"),
        ({**HELLO, "proxy_id": 1}, "hello.proxy_id", "string"),
        ({**HELLO, "proxy_id": "x" * 300}, "hello.proxy_id", "at most 256"),
        ({**HELLO, "hash": None}, "hello.hash", "string"),
        ({**HELLO, "proxy_id": "p1\nFAKE LOG LINE"}, "hello.proxy_id", "control characters"),
        ({**HELLO, "address": "\x1b[31m"}, "hello.address", "control characters"),
        ({**HELLO, "status_address": 8081}, "hello.status_address", "string"),
        ({**DELTA, "revision": 1}, "delta.revision", "greater than base"),
        ({**DELTA, "ops": {"a": 1}}, "delta.ops", "list"),
        ({**DELTA, "ops": [["merge", "routes", "r1", None]]}, "delta.ops[0][0]", "action"),
        ({**DELTA, "ops": [["delete", "users", "r1", None]]}, "delta.ops[0][1]", "kind"),
        ({**DELTA, "ops": [["delete", "routes", "../x", None]]}, "delta.ops[0][2]", "id"),
        ({**DELTA, "ops": [["delete", "routes", "r1", RESOURCE]]}, "delta.ops[0][3]", "no resource"),
        ({**DELTA, "ops": [["put", "routes", "r1", None]]}, "delta.ops[0][3]", "map"),
        ({**DELTA, "ops": [["put", "routes", "r1", {**RESOURCE, "spec": []}]]}, "delta.ops[0][3].spec", "map"),
        ({**DELTA, "ops": [["put", "routes", "r1", {**RESOURCE, "mod_revision": "2"}]]},
         "delta.ops[0][3].mod_revision", "integer"),
        ({**DELTA, "ops": [["put", "routes", "r1", {**RESOURCE, "mod_revision": 9}]]}, "delta.ops[0][3]", "<= 2"),
        ({**DELTA, "ops": [["put", "routes", "r1"]]}, "delta.ops[0]", "action, kind, id"),
        ({**SNAP, "chunk": 2}, "snapshot.chunk", "< chunks"),
        ({**SNAP, "chunks": 0}, "snapshot.chunks", "between 1"),
        ({**SNAP, "chunks": 10**6}, "snapshot.chunks", "at most"),
        ({**SNAP, "data": "text"}, "snapshot.data", "binary"),
        ({"t": "nack", "revision": 1, "error": 5}, "nack.error", "string or an error map"),
        ({"t": "nack", "revision": 1, "error": "e" * 5000}, "nack.error", "at most"),
        ({**STATUS, "has_quorum": 1}, "status.has_quorum", "true or false"),
        ({**STATUS, "members": "http://a:1"}, "status.members", "list"),
        ({**STATUS, "members": [8000]}, "status.members[0]", "URL"),
        ({**STATUS, "members": ["ftp://a:1"]}, "status.members[0]", "URL"),
        ({**STATUS, "members": ["http://a:1"] * (MAX_MEMBER_URLS + 1)}, "status.members", "at most"),
        ({"t": "mode", "mode": "happy"}, "mode.mode", "one of"),
        ({"t": "ack", "revision": 1.5}, "ack.revision", "integer"),
    ],
)
def test_wrong_types_and_ranges_name_the_field(data: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(FrameError, match=message) as err:
        decode_frame(raw(data))
    assert err.value.path == path


def test_garbage_unknown_types_and_foreign_protocols() -> None:
    for data in (b"", b"\xc1", raw([1]), raw("hello"), raw({"t": "ack", "revision": 1}) + b"x", b"\xd4\x01\x00"):
        with pytest.raises(FrameError):
            decode_frame(data)
    for obj in ({"revision": 1}, {"t": "bogus"}, {"t": 5}, {"t": None}):
        with pytest.raises(UnknownFrameType, match="unknown frame type"):
            decode_frame(raw(obj))
    with pytest.raises(UnsupportedProtocol, match="unsupported protocol version 2") as err:
        decode_frame(raw({**HELLO, "proto": 2}))
    assert err.value.path == "hello.proto"
    with pytest.raises(UnsupportedProtocol):
        decode_frame(raw({**HELLO, "proto": True}))


def test_direction_filter() -> None:
    assert decode_frame(encode_frame(Ack(1)), DP_FRAMES) == Ack(1)
    with pytest.raises(UnknownFrameType, match="expected one of hello, ack, nack, resync, mode"):
        decode_frame(encode_frame(FRAMES[4]), DP_FRAMES)  # a proxy never sends a delta
    with pytest.raises(UnknownFrameType):
        decode_frame(encode_frame(Hello("p", "s", 0, "")), CP_FRAMES)


def test_peek_type() -> None:
    assert peek_type(raw({**DELTA, "ops": 5})) == ("delta", 2)
    assert peek_type(raw({"t": "snapshot", "revision": -3})) == ("snapshot", None)
    assert peek_type(b"\xc1") == (None, None) and peek_type(raw([1])) == (None, None)


def test_delta_frame_carries_a_delta() -> None:
    state = base_state()
    new, delta = state.apply(txn(put("upstreams", "u2", upstream_body())))
    frame = decode_frame(encode_frame(DeltaFrame.of(delta, new.hash())))
    assert isinstance(frame, DeltaFrame) and frame.hash == new.hash()
    replayed = apply_delta(state, frame.delta)
    assert replayed == new and replayed.hash() == frame.hash


def big_state() -> ConfigState:
    state = base_state()
    return apply(state, *(put("routes", f"r{i}", route_body(paths=[f"/p/{i}"])) for i in range(200)))


def test_snapshot_chunks_round_trip() -> None:
    state = big_state()
    chunks = [decode_frame(encode_frame(c)) for c in snapshot_chunks(state, chunk_size=500)]
    assert len(chunks) > 2 and all(isinstance(c, SnapshotChunk) for c in chunks)
    assert [c.chunk for c in chunks] == list(range(len(chunks)))  # type: ignore[union-attr]
    assert assemble_snapshot(chunks) == state  # type: ignore[arg-type]
    single = snapshot_chunks(state)
    assert len(single) == 1 and assemble_snapshot(single).hash() == state.hash()
    empty = chunk_blob(b"", 0, "h")
    assert len(empty) == 1 and empty[0].data == b""
    with pytest.raises(ValueError):
        snapshot_chunks(state, chunk_size=0)


def test_snapshot_assembly_errors() -> None:
    state = big_state()
    chunks = snapshot_chunks(state, chunk_size=500)
    other = snapshot_chunks(base_state(), chunk_size=500)

    def redo(**kw: Any) -> list[SnapshotChunk]:
        return [SnapshotChunk(**{**{s: getattr(c, s) for s in c.__slots__}, **kw}) for c in chunks]

    for bad in ([], chunks[:-1], [chunks[1], chunks[0], *chunks[2:]], [other[0], *chunks[1:]],
                redo(hash="0" * 64), redo(revision=99), [*chunks, chunks[-1]]):  # fmt: skip
        with pytest.raises(CodecError):  # FrameError (out of sequence) is one too
            assemble_snapshot(bad)


def chunk(i: int, n: int = 3, revision: int = 5, data: bytes | None = None) -> SnapshotChunk:
    return SnapshotChunk(revision, f"h{revision}", i, n, data if data is not None else bytes([65 + i]))


def test_assembler_joins_only_an_unbroken_transmission() -> None:
    a = SnapshotAssembler()
    assert a.add(chunk(0)) is None and a.add(chunk(1)) is None
    joined = a.add(chunk(2))
    assert joined is not None and (joined.revision, joined.hash, joined.data) == (5, "h5", b"ABC")
    one = a.add(chunk(0, n=1, revision=6, data=b"x"))  # ready for the next one
    assert one is not None and one.data == b"x"
    a.add(chunk(0))
    with pytest.raises(OutOfSequence, match="chunk 2 out of sequence"):
        a.add(chunk(2))
    with pytest.raises(OutOfSequence):  # what was collected is gone: chunk 1 no longer fits
        a.add(chunk(1))
    a.add(chunk(0))
    with pytest.raises(OutOfSequence):
        a.add(chunk(1, revision=6))  # another transmission's chunk
    a.add(chunk(0))
    a.add(chunk(1))
    with pytest.raises(OutOfSequence):
        a.add(chunk(1))  # a repeat
    small = SnapshotAssembler(max_bytes=2)
    small.add(chunk(0))
    small.add(chunk(1))
    with pytest.raises(OutOfSequence, match="larger than 2 bytes"):
        small.add(chunk(2))


def test_joined_snapshot_verifies_revision_and_hash() -> None:
    state = big_state()
    a = SnapshotAssembler()
    joined = None
    for c in snapshot_chunks(state, chunk_size=4096):
        joined = a.add(c)
    assert joined is not None and joined.state() == state
    with pytest.raises(CodecError, match="hash mismatch"):
        JoinedSnapshot(joined.revision, "0" * 64, joined.data).state()
    with pytest.raises(CodecError, match="frame says 1"):
        JoinedSnapshot(1, joined.hash, joined.data).state()
    with pytest.raises(CodecError, match="snapshot"):
        JoinedSnapshot(1, joined.hash, b"garbage").state()
