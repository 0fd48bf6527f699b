"""``gateway.packing.canonical``: the key order the config hash is defined with, kept exactly
(proxies and members of other versions compare hashes), however it is computed."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.frozen import freeze
from gateway.packing import canonical

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
