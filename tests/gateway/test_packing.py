"""``gateway.packing.canonical``: the key order the config hash is defined with, kept exactly
(proxies and members of other versions compare hashes), however it is computed."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import decode_txn, encode_txn
from gateway.errors import CodecError
from gateway.frozen import FrozenDict, FrozenList, freeze
from gateway.model import Op, Txn
from gateway.packing import canonical, unpack, unpack_frozen

from .helpers import apply, base_state, put, route_body, upstream_body


def reference_canonical(obj: Any) -> Any:
    """The definition: keys sorted by (type name, repr) unless they are strings, recursively."""

    def key(k: Any) -> tuple[str, str]:
        return ("", k) if isinstance(k, str) else (type(k).__name__, repr(k))

    if isinstance(obj, dict):
        return {k: reference_canonical(obj[k]) for k in sorted(obj, key=key)}
    if isinstance(obj, list | tuple):
        return [reference_canonical(item) for item in obj]
    return obj


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(
    max_size=5) | st.binary(max_size=5)
keys = st.text(max_size=4) | st.integers(-20, 20) | st.booleans()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True)
@given(values)
def test_canonical_encodes_exactly_as_the_definition(obj: Any) -> None:
    for form in (obj, freeze(obj)):
        assert msgpack.packb(canonical(form), use_bin_type=True) == msgpack.packb(
            reference_canonical(form), use_bin_type=True)


def test_a_fixed_configs_hash_does_not_change() -> None:
    """Computed once with the definition above; a different figure breaks every cached proxy
    and every mixed-version cluster's hash comparison."""
    state = apply(base_state(), put("upstreams", "golden-u", {**upstream_body(), "retries": 2}))
    state = apply(state, put("routes", "golden-r", {**route_body("golden-u"), "methods": ["GET", "PUT"],
                                                    "plugins": {"cors": {"origins": ["*"]}}}))
    assert state.hash() == GOLDEN


GOLDEN = "0b4dd51920b4d9b49f2bbcd99ff1c3ae83813d8f3cdf5e02ce05f5d9085b2e73"


def test_unpack_frozen_builds_read_only_containers_at_every_depth_and_refuses_what_unpack_refuses() -> None:
    data = msgpack.packb({"a": [1, {"b": [2, 3]}], "c": {"d": None}}, use_bin_type=True)
    value = unpack_frozen(data)
    assert value == unpack(data)
    assert type(value) is FrozenDict and type(value["a"]) is FrozenList and type(value["a"][1]) is FrozenDict
    assert type(value["a"][1]["b"]) is FrozenList and type(value["c"]) is FrozenDict
    assert freeze(value) is value  # nothing left to copy when it is stored
    for bad in (data + b"\x00", msgpack.packb(msgpack.ExtType(1, b"x")), msgpack.packb({1: 2})):
        with pytest.raises(Exception) as plain:
            unpack(bad)
        with pytest.raises(type(plain.value)):
            unpack_frozen(bad)


def test_decoded_txn_bodies_are_frozen_for_bytes_bytearray_and_memoryview() -> None:
    txn = Txn("r1", (Op("put", "upstreams", "u1", upstream_body()),))
    data = encode_txn(txn)
    for form in (data, bytearray(data), memoryview(data)):
        decoded = decode_txn(form)
        assert decoded == txn and type(decoded.ops[0].body) is FrozenDict
        assert type(decoded.ops[0].body["targets"]) is FrozenList
    with pytest.raises(CodecError, match="expected bytes"):
        decode_txn("not bytes")  # type: ignore[arg-type]
