"""Property tests (hypothesis, derandomized): replay, atomicity, hash stability, codec robustness."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import (
    FRAME_TYPES,
    CodecError,
    ConfigState,
    Delta,
    GatewayError,
    Op,
    Txn,
    apply_delta,
    compose,
    decode,
    decode_delta,
    decode_frame,
    decode_snapshot,
    decode_txn,
    encode,
    encode_delta,
    encode_snapshot,
    validate_spec,
)

from .helpers import PROPERTY_SETTINGS

UPSTREAMS = ["u0", "u1", "u2"]
ROUTES = ["r0", "r1", "r2", "r3"]
CONSUMERS = ["c0", "c1", "c2"]
PLUGINS = ["p0", "p1"]
KEYS = ["key-0000", "key-1111", "key-2222", "key-3333"]
IDS = {"upstreams": UPSTREAMS, "routes": ROUTES, "consumers": CONSUMERS, "plugins": PLUGINS}
# The first entry of each sampled list is the happy one, because hypothesis shrinks towards it; one
# op in ten breaks a rule (bad body, dangling reference, stale CAS, delete of a missing id).
OP_MODES = ["ok"] * 9 + ["bad"]


def draw_body(draw: st.DrawFn, kind: str, upstreams: list[str], valid: bool) -> dict[str, Any]:
    if kind == "upstreams":
        port = draw(st.sampled_from([80, 8080, 9000])) if valid else 0
        weight = draw(st.integers(0, 3))
        return {"targets": [{"host": "10.0.0.1", "port": port, "weight": weight}], "retries": draw(st.integers(0, 2))}
    if kind == "routes":
        upstream = draw(st.sampled_from(upstreams)) if valid and upstreams else "missing"
        path = draw(st.sampled_from(["/a", "/b/c", "=/exact"]))
        plugins = draw(st.sampled_from([{}, {"rate-limit": {"limit": 5}}, {"cors": {"max_age": 1}}]))
        return {"paths": [path], "upstream": upstream, "methods": draw(st.sampled_from([[], ["get"]])), "plugins": plugins}
    if kind == "consumers":  # colliding keys across consumers are a further invalid case, at random
        keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
        return {"username": draw(st.sampled_from([None, "alice"])), "credentials": {"key-auth": [{"key": k} for k in keys]}}
    name = draw(st.sampled_from(["cors", "request-id", "rate-limit"] if valid else ["ip-restriction"]))
    return {"name": name, "enabled": draw(st.booleans()), "config": {"limit": 3} if name == "rate-limit" else {}}


def draw_op(draw: st.DrawFn, state: ConfigState) -> Op:
    valid = draw(st.sampled_from(OP_MODES)) == "ok"
    upstreams = [resource.id for resource in state.list("upstreams")]
    kinds = list(IDS) if upstreams or not valid else ["upstreams", "consumers", "plugins"]
    kind = draw(st.sampled_from(kinds))
    existing = [resource.id for resource in state.list(kind)]
    if existing and draw(st.integers(0, 3)) == 3:  # delete
        id = draw(st.sampled_from(existing if valid else [i for i in IDS[kind] if i not in existing] or existing))
        current = state.get(kind, id)
        expect = draw(st.sampled_from([None, current.mod_revision if current else 0] if valid else [99]))
        return Op("delete", kind, id, None, expect)
    id = draw(st.sampled_from(existing)) if existing and not draw(st.booleans()) else draw(st.sampled_from(IDS[kind]))
    current = state.get(kind, id)
    right = current.mod_revision if current is not None else 0
    bad_cas = not valid and draw(st.booleans())
    expect = 99 if bad_cas else draw(st.sampled_from([None, None, right]))
    return Op("put", kind, id, draw_body(draw, kind, upstreams, valid or bad_cas), expect)


@st.composite
def histories(draw: st.DrawFn, max_txns: int = 10) -> list[Txn]:
    """Transactions drawn against the state they will meet, so that most of them commit."""
    state = ConfigState.empty()
    history: list[Txn] = []
    for number in range(draw(st.integers(1, max_txns))):
        count = draw(st.sampled_from([1, 2, 1, 3, 2, 4, 1, 2, 3, 0]))
        expect = draw(st.sampled_from([None, None, state.revision, None, None, None, None, state.revision + 1]))
        txn = Txn(f"req-{number}", tuple(draw_op(draw, state) for _ in range(count)), expect)
        history.append(txn)
        try:
            state, _ = state.apply(txn)
        except GatewayError:
            pass
    return history


def fingerprint(state: ConfigState) -> tuple[int, str, bytes]:
    return state.revision, state.hash(), encode_snapshot(state)


def run(history: list[Txn]) -> tuple[list[ConfigState], list[Delta]]:
    """Apply every txn; rejected ones must raise a GatewayError and change nothing (property 2)."""
    states = [ConfigState.empty()]
    deltas: list[Delta] = []
    for transaction in history:
        state = states[-1]
        before = fingerprint(state)
        try:
            new_state, delta = state.apply(transaction)
        except GatewayError:
            assert fingerprint(state) == before
            continue
        assert new_state.revision == state.revision + 1 and fingerprint(state) == before
        assert (delta.base, delta.revision) == (state.revision, new_state.revision)
        states.append(new_state)
        deltas.append(delta)
    return states, deltas


@settings(PROPERTY_SETTINGS, max_examples=250)
@given(histories())
def test_delta_log_replay_from_any_base_reproduces_head(history: list[Txn]) -> None:
    states, deltas = run(history)
    head = fingerprint(states[-1])
    for base in range(len(deltas)):
        replayed = states[base]
        for delta in deltas[base:]:
            replayed = apply_delta(replayed, decode_delta(encode_delta(delta)))
        assert fingerprint(replayed) == head
        composed = decode_delta(encode_delta(compose(deltas[base:])))
        assert fingerprint(apply_delta(states[base], composed)) == head


@PROPERTY_SETTINGS
@given(histories(max_txns=8))
def test_rejected_txn_changes_nothing(history: list[Txn]) -> None:
    states, _ = run(history)  # run() asserts: a rejection leaves the state identical
    head = states[-1]
    try:
        head.apply(Txn("stale", history[-1].ops or (Op("delete", "routes", "r0"),), expect_revision=head.revision + 1))
    except GatewayError:
        pass
    else:  # pragma: no cover - a stale expect_revision must always conflict
        raise AssertionError("stale expect_revision was accepted")
    assert fingerprint(head) == fingerprint(states[-1])


@PROPERTY_SETTINGS
@given(histories(max_txns=8))
def test_hash_stable_across_snapshot_encodings(history: list[Txn]) -> None:
    states, _ = run(history)
    for state in states:
        decoded = decode_snapshot(encode_snapshot(state))
        rebuilt = ConfigState.from_snapshot(state.to_snapshot())
        via_bytes = ConfigState.from_snapshot(decode(encode(state.to_snapshot())))
        for other in (decoded, rebuilt, via_bytes):
            assert other == state
            assert (other.revision, other.hash()) == (state.revision, state.hash())
            assert encode_snapshot(other) == encode_snapshot(state)


@PROPERTY_SETTINGS
@given(histories(max_txns=6))
def test_stored_specs_are_normalized_fixed_points(history: list[Txn]) -> None:
    states, _ = run(history)
    for resource in states[-1].resources():
        assert validate_spec(resource.kind, resource.id, resource.to_json()) == resource.spec


DECODERS = (decode, decode_frame, decode_txn, decode_delta, decode_snapshot)


def only_codec_errors(data: bytes) -> None:
    for decoder in DECODERS:
        try:
            decoder(data)
        except CodecError:
            pass


@settings(PROPERTY_SETTINGS, max_examples=1000)
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    only_codec_errors(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {"t": st.sampled_from([*FRAME_TYPES, "nope"])},
    optional={
        name: msgpack_values
        for name in ("proto", "proxy_id", "software", "revision", "hash", "address", "base", "ops", "chunk",
                     "chunks", "data", "error", "node_id", "leader_id", "term", "has_quorum", "mode", "request_id")
    },
)


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(st.one_of(msgpack_values, frame_like))
def test_random_structures_raise_only_codec_errors(value: Any) -> None:
    try:
        data = encode(value)
    except CodecError:
        return
    only_codec_errors(data)
    for cut in (1, len(data) // 2):
        only_codec_errors(data[:-cut])


@PROPERTY_SETTINGS
@given(histories(max_txns=5), st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_snapshots_and_deltas_raise_only_codec_errors(history: list[Txn], position: int, byte: int) -> None:
    states, deltas = run(history)
    blobs = [encode_snapshot(states[-1]), zlib_free_snapshot(states[-1])]
    blobs += [encode_delta(delta) for delta in deltas[-2:]]
    for blob in blobs:
        index = position % len(blob)
        only_codec_errors(blob[:index] + bytes([byte]) + blob[index + 1 :])


def zlib_free_snapshot(state: ConfigState) -> bytes:
    return encode(state.to_snapshot())
