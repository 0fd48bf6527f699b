"""Delta application and composition, and the definition of the config hash."""

from __future__ import annotations

import hashlib

import msgpack  # type: ignore[import-untyped]
import pytest

from gateway import (
    CodecError,
    ConfigState,
    Delta,
    DeltaBaseMismatch,
    Op,
    Txn,
    apply_delta,
    compose,
    config_hash,
)
from gateway.packing import array_header, canonical

from .helpers import apply, base_state, delete, put, route_body, txn, upstream_body


def chain() -> tuple[list[ConfigState], list[Delta]]:
    states = [ConfigState.empty()]
    deltas: list[Delta] = []
    for ops in (
        (put("upstreams", "u1", upstream_body()), put("routes", "r1", route_body())),
        (put("upstreams", "u2", upstream_body()),),
        (put("routes", "r1", route_body(upstream="u2")), put("routes", "r2", route_body())),
        (delete("routes", "r2"), put("upstreams", "u1", upstream_body(retries=4))),
        (delete("routes", "r1"), delete("upstreams", "u2")),
    ):
        state, delta = states[-1].apply(txn(*ops))
        states.append(state)
        deltas.append(delta)
    return states, deltas


def test_apply_delta_reproduces_every_step() -> None:
    states, deltas = chain()
    for before, delta, after in zip(states[:-1], deltas, states[1:], strict=True):
        replayed = apply_delta(before, delta)
        assert replayed == after and replayed.hash() == after.hash()


def test_compose_from_every_base() -> None:
    states, deltas = chain()
    for start in range(len(deltas)):
        composed = compose(deltas[start:])
        assert (composed.base, composed.revision) == (start, len(deltas))
        assert apply_delta(states[start], composed) == states[-1]


def test_compose_last_op_wins_first_position_kept() -> None:
    _, deltas = chain()
    composed = compose(deltas[2:4])
    keys = [(op[0], op[1], op[2]) for op in composed.ops]
    assert keys == [("put", "routes", "r1"), ("delete", "routes", "r2"), ("put", "upstreams", "u1")]


def test_compose_errors() -> None:
    _, deltas = chain()
    with pytest.raises(ValueError):
        compose([])
    with pytest.raises(DeltaBaseMismatch):
        compose([deltas[0], deltas[2]])


def test_apply_delta_base_mismatch() -> None:
    states, deltas = chain()
    with pytest.raises(DeltaBaseMismatch):
        apply_delta(states[0], deltas[1])
    with pytest.raises(DeltaBaseMismatch):
        apply_delta(states[2], deltas[1])  # already applied: never goes backwards


def test_delete_of_missing_resource_is_tolerated() -> None:
    state = apply_delta(ConfigState.empty(), Delta(0, 1, (Delta.delete("routes", "ghost"),)))
    assert state.revision == 1 and state.hash() == ConfigState.empty().hash()


@pytest.mark.parametrize(
    "op",
    [
        ("patch", "routes", "r1", None),
        ("put", "services", "s1", {"spec": {}, "created_revision": 1, "mod_revision": 1}),
        ("put", "routes", 5, {"spec": {}, "created_revision": 1, "mod_revision": 1}),
        ("put", "routes", "r1", None),
        ("put", "routes", "r1", {"spec": {}, "created_revision": 1, "mod_revision": 9}),
        ("delete", "routes", "r1", {"spec": {}}),
        ("put", "routes"),
    ],
)
def test_apply_delta_rejects_malformed_ops(op: tuple[object, ...]) -> None:
    with pytest.raises(CodecError):
        apply_delta(ConfigState.empty(), Delta(0, 1, (op,)))  # type: ignore[arg-type]


def test_apply_delta_rejects_non_increasing_revision() -> None:
    with pytest.raises(CodecError):
        apply_delta(ConfigState.empty(), Delta(0, 0, ()))


def test_apply_delta_does_not_touch_the_base() -> None:
    states, deltas = chain()
    snapshot = states[1].to_snapshot()
    apply_delta(states[1], deltas[1])
    assert states[1].to_snapshot() == snapshot


def test_config_hash_definition() -> None:
    state = apply(base_state(), put("upstreams", "a0", upstream_body()))
    total = sum(
        int.from_bytes(
            hashlib.sha256(msgpack.packb(
                [r.kind, r.id, canonical(r.spec), r.created_revision, r.mod_revision], use_bin_type=True
            )).digest(),
            "big",
        )
        for r in state.resources()
    ) % (1 << 256)
    expected = hashlib.sha256(b"gwadm-config-v2:" + total.to_bytes(32, "big")).hexdigest()
    assert state.hash() == expected == config_hash(reversed(list(state.resources())))
    assert array_header(2) + msgpack.packb(1) + msgpack.packb("a") == msgpack.packb([1, "a"])


def test_incrementally_derived_hash_equals_hash_from_scratch() -> None:
    """apply() and apply_delta() shift a known digest sum by the changed resources only."""
    states, deltas = chain()
    replayed = states[0]
    replayed.hash()  # make the digest sum known, so every successor derives its own
    for state, delta in zip(states[1:], deltas, strict=True):
        replayed = apply_delta(replayed, delta)
        assert replayed._sum is not None  # derived, not recomputed
        scratch = ConfigState.from_snapshot(replayed.to_snapshot())
        assert replayed.hash() == scratch.hash() == state.hash()
    state = states[-1]
    state.hash()
    nxt, _ = state.apply(Txn("inc", (Op("delete", "routes", "r1"),) if state.get("routes", "r1") else (
        Op("put", "upstreams", "inc-u", upstream_body()),)))
    assert nxt._sum is not None
    assert nxt.hash() == ConfigState.from_snapshot(nxt.to_snapshot()).hash()


def test_canonical_sorts_keys_recursively() -> None:
    assert list(canonical({"b": {"d": 1, "c": 2}, "a": [{"z": 1, "y": 2}]})) == ["a", "b"]
    assert list(canonical({"b": {"d": 1, "c": 2}})["b"]) == ["c", "d"]
    assert canonical({1: "x", "a": "y"}) == {"a": "y", 1: "x"}
