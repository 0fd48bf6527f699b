"""ConfigState.apply: atomicity, CAS, NotFound, referential integrity, revisions, snapshots, speed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway import (
    CodecError,
    ConfigState,
    Conflict,
    GatewayError,
    InUse,
    NotFound,
    Op,
    ReferenceViolation,
    ValidationError,
    encode_snapshot,
)

from .helpers import apply, base_state, consumer_body, delete, put, route_body, txn, upstream_body


def rejected(state: ConfigState, *ops: Op, expect_revision: int | None = None) -> GatewayError:
    """Apply must fail, and leave the state exactly as it was."""
    before = (state.revision, state.hash(), encode_snapshot(state))
    with pytest.raises(GatewayError) as info:
        state.apply(txn(*ops, expect_revision=expect_revision))
    assert (state.revision, state.hash(), encode_snapshot(state)) == before
    return info.value


def test_empty_state() -> None:
    state = ConfigState.empty()
    assert state.revision == 0
    assert state.list("routes") == [] and state.get("routes", "r1") is None and state.count("routes") == 0
    assert state.hash() == ConfigState.empty().hash()
    assert state.to_snapshot() == {"revision": 0, "resources": {"upstreams": {}, "routes": {}, "consumers": {}, "plugins": {}}}


def test_unknown_kind_is_not_found() -> None:
    state = ConfigState.empty()
    for call in (lambda: state.get("services", "x"), lambda: state.list("services"), lambda: state.count("x")):
        with pytest.raises(NotFound):
            call()


def test_upstream_and_route_in_one_txn() -> None:
    new, delta = ConfigState.empty().apply(
        txn(put("routes", "r1", route_body()), put("upstreams", "u1", upstream_body()))  # route first: checked at end
    )
    assert new.revision == 1
    route = new.get("routes", "r1")
    assert route is not None and route.created_revision == route.mod_revision == 1
    assert route.spec["upstream"] == "u1" and route.spec["methods"] == []
    assert [op[:3] for op in delta.ops] == [("put", "routes", "r1"), ("put", "upstreams", "u1")]
    assert (delta.base, delta.revision) == (0, 1)


def test_revision_and_created_mod_revisions() -> None:
    state = base_state()
    state = apply(state, put("upstreams", "u2", upstream_body()))
    state = apply(state, put("routes", "r1", route_body(priority=5)), put("routes", "r2", route_body()))
    assert state.revision == 3
    r1, r2 = state.get("routes", "r1"), state.get("routes", "r2")
    assert r1 is not None and (r1.created_revision, r1.mod_revision) == (1, 3) and r1.spec["priority"] == 5
    assert r2 is not None and (r2.created_revision, r2.mod_revision) == (3, 3)
    u1 = state.get("upstreams", "u1")
    assert u1 is not None and u1.mod_revision == 1


def test_list_is_sorted_by_id() -> None:
    state = apply(base_state(), *(put("routes", rid, route_body()) for rid in ("rb", "ra", "r0")))
    assert [r.id for r in state.list("routes")] == ["r0", "r1", "ra", "rb"]
    assert [r.kind for r in state.resources()] == ["upstreams", "routes", "routes", "routes", "routes"]


def test_put_same_spec_still_bumps() -> None:
    state = apply(base_state(), put("routes", "r1", route_body()))
    r1 = state.get("routes", "r1")
    assert state.revision == 2 and r1 is not None and r1.mod_revision == 2


def test_empty_txn_is_invalid() -> None:
    error = rejected(ConfigState.empty())
    assert isinstance(error, ValidationError) and error.path == "ops"


def test_expect_revision() -> None:
    state = base_state()
    error = rejected(state, put("upstreams", "u2", upstream_body()), expect_revision=0)
    assert isinstance(error, Conflict) and "revision 0" in error.message
    assert apply(state, put("upstreams", "u2", upstream_body()), expect_revision=1).revision == 2


def test_expect_mod_revision() -> None:
    state = base_state()
    assert isinstance(rejected(state, put("upstreams", "u1", upstream_body(), expect=0)), Conflict)
    assert isinstance(rejected(state, put("upstreams", "u1", upstream_body(), expect=2)), Conflict)
    assert isinstance(rejected(state, put("upstreams", "u9", upstream_body(), expect=1)), Conflict)
    assert isinstance(rejected(state, delete("routes", "r1", expect=5)), Conflict)
    assert isinstance(rejected(state, delete("routes", "r1", expect=0)), Conflict)
    state = apply(state, put("upstreams", "u1", upstream_body(retries=3), expect=1))
    state = apply(state, put("upstreams", "u2", upstream_body(), expect=0))
    state = apply(state, delete("routes", "r1", expect=1))
    assert state.get("routes", "r1") is None and state.revision == 4


def test_cas_is_checked_against_the_state_at_that_op() -> None:
    state = ConfigState.empty()
    error = rejected(state, put("upstreams", "u1", upstream_body(), expect=0), put("upstreams", "u1", upstream_body(), expect=0))
    assert isinstance(error, Conflict) and error.path == "upstreams[u1]"


def test_delete_missing_is_not_found() -> None:
    error = rejected(base_state(), delete("routes", "nope"))
    assert isinstance(error, NotFound) and error.path == "routes[nope]"


@pytest.mark.parametrize(
    ("op", "error_type", "path"),
    [
        (Op("put", "routes", "r2", None), ValidationError, "routes[r2]"),
        (Op("upsert", "routes", "r2", route_body()), ValidationError, "ops[0].action"),  # type: ignore[arg-type]
        (Op("put", "services", "s1", {}), NotFound, None),
        (Op("put", "routes", "bad id", route_body()), ValidationError, "routes[bad id]"),
        (Op("put", "routes", "r2", route_body(paths=["x"])), ValidationError, "routes[r2].paths[0]"),
    ],
)
def test_bad_ops(op: Op, error_type: type[GatewayError], path: str | None) -> None:
    error = rejected(base_state(), op)
    assert type(error) is error_type and error.path == path


def test_route_to_missing_upstream() -> None:
    error = rejected(base_state(), put("routes", "r2", route_body(upstream="u9")))
    assert isinstance(error, ReferenceViolation) and error.path == "routes[r2].upstream" and "u9" in error.message


def test_route_to_upstream_deleted_in_same_txn() -> None:
    state = apply(base_state(), put("upstreams", "u2", upstream_body()))
    error = rejected(state, delete("upstreams", "u2"), put("routes", "r2", route_body(upstream="u2")))
    assert isinstance(error, ReferenceViolation)


def test_delete_used_upstream_is_in_use_and_names_routes() -> None:
    state = apply(base_state(), put("routes", "r0", route_body()))
    error = rejected(state, delete("upstreams", "u1"))
    assert isinstance(error, InUse) and error.path == "upstreams[u1]"
    assert "r0, r1" in error.message


def test_in_use_message_is_bounded() -> None:
    state = apply(base_state(), *(put("routes", f"r{i:02d}", route_body()) for i in range(20)))
    error = rejected(state, delete("upstreams", "u1"))
    assert "and 11 more" in error.message


def test_delete_upstream_with_its_routes_or_after_repointing() -> None:
    state = apply(base_state(), put("upstreams", "u2", upstream_body()))
    assert apply(state, delete("upstreams", "u1"), delete("routes", "r1")).get("upstreams", "u1") is None
    moved = apply(state, put("routes", "r1", route_body(upstream="u2")), delete("upstreams", "u1"))
    assert moved.get("upstreams", "u1") is None and moved.revision == 3


def test_later_failing_op_rolls_back_earlier_ones() -> None:
    state = base_state()
    error = rejected(state, put("upstreams", "u2", upstream_body()), put("routes", "r2", route_body(upstream="nope")))
    assert isinstance(error, ReferenceViolation)
    assert state.get("upstreams", "u2") is None


def test_key_auth_key_unique_across_consumers() -> None:
    state = apply(ConfigState.empty(), put("consumers", "c1", consumer_body("key-aaaa1", "key-bbbb2")))
    error = rejected(state, put("consumers", "c2", consumer_body("key-zzzz9", "key-bbbb2")))
    assert isinstance(error, ValidationError)
    assert error.path == "consumers[c2].credentials.key-auth[1].key" and "'c1'" in error.message
    assert "key-bbbb2" not in error.message  # keys are secrets
    error = rejected(state, put("consumers", "c2", consumer_body("key-new-1")), put("consumers", "c3", consumer_body("key-new-1")))
    assert isinstance(error, ValidationError) and error.path == "consumers[c3].credentials.key-auth[0].key"
    assert "'c2'" in error.message
    # updating the owner itself is fine, and so is moving a key between consumers in one txn
    state = apply(state, put("consumers", "c1", consumer_body("key-aaaa1", "key-bbbb2", username="a")))
    state = apply(state, put("consumers", "c1", consumer_body("key-aaaa1")), put("consumers", "c2", consumer_body("key-bbbb2")))
    c2 = state.get("consumers", "c2")
    assert c2 is not None and c2.spec["credentials"]["key-auth"] == [{"key": "key-bbbb2"}]
    state = apply(state, delete("consumers", "c2"), put("consumers", "c3", consumer_body("key-bbbb2")))
    assert state.get("consumers", "c3") is not None


def test_jwt_auth_key_unique_across_consumers() -> None:
    def jwt_consumer(key: str) -> dict[str, object]:
        return {"credentials": {"jwt-auth": [{"key": key, "algorithm": "HS256", "secret": "s" * 32}]}}

    state = apply(ConfigState.empty(), put("consumers", "c1", jwt_consumer("issuer-a")))
    error = rejected(state, put("consumers", "c2", jwt_consumer("issuer-a")))
    assert isinstance(error, ValidationError)
    assert error.path == "consumers[c2].credentials.jwt-auth[0].key" and "'c1'" in error.message
    assert apply(state, put("consumers", "c2", jwt_consumer("issuer-b"))).get("consumers", "c2") is not None


def test_delta_records_net_changes() -> None:
    state = base_state()
    _, delta = state.apply(
        txn(
            put("upstreams", "tmp", upstream_body()),
            delete("upstreams", "tmp"),  # created and deleted: no net change
            delete("routes", "r1"),
            put("routes", "r2", route_body()),
            put("routes", "r2", route_body(priority=2)),
        )
    )
    assert (delta.base, delta.revision) == (1, 2)
    assert [op[:3] for op in delta.ops] == [("delete", "routes", "r1"), ("put", "routes", "r2")]
    resource = delta.ops[1][3]
    assert resource is not None and resource["spec"]["priority"] == 2
    assert (resource["created_revision"], resource["mod_revision"]) == (2, 2)


def test_states_are_immutable_and_share_untouched_resources() -> None:
    body = route_body()
    old = base_state()
    new = apply(old, put("routes", "r1", body), put("upstreams", "u2", upstream_body()))
    body["paths"].append("/mutated")
    r1 = new.get("routes", "r1")
    assert r1 is not None and r1.spec["paths"] == ["/api"]
    assert old.get("upstreams", "u2") is None and old.revision == 1
    assert new.get("upstreams", "u1") is old.get("upstreams", "u1")
    with pytest.raises(TypeError):
        r1.spec["paths"].append("/x")


def test_hash() -> None:
    one = apply(ConfigState.empty(), put("upstreams", "u1", upstream_body()))
    two = apply(one, put("upstreams", "tmp", upstream_body()))
    three = apply(two, delete("upstreams", "tmp"))
    assert three.revision == 3 and three.hash() == one.hash()  # revision itself is not hashed
    assert two.hash() != one.hash()
    changed = apply(one, put("upstreams", "u1", upstream_body()))
    assert changed.hash() != one.hash()  # mod_revision is part of the hashed resource
    assert len(one.hash()) == 64 and one.hash() == one.hash()


def test_snapshot_round_trip_and_equality() -> None:
    state = apply(base_state(), put("consumers", "c1", consumer_body("key-aaaa1")), put("plugins", "p1", {"name": "cors"}))
    again = ConfigState.from_snapshot(state.to_snapshot())
    assert again == state and again.hash() == state.hash() and again.revision == state.revision
    assert again != base_state() and state != object()
    assert list(state.to_snapshot()["resources"]["routes"]) == ["r1"]
    assert "revision=2" in repr(state)


BAD_SNAPSHOTS: list[Any] = [
    None,
    [],
    {"resources": {}},
    {"revision": -1, "resources": {}},
    {"revision": True, "resources": {}},
    {"revision": 1, "resources": []},
    {"revision": 1, "resources": {"services": {}}},
    {"revision": 1, "resources": {"routes": []}},
    {"revision": 1, "resources": {"routes": {"r1": {"spec": {}, "created_revision": 1, "mod_revision": 2}}}},
    {"revision": 1, "resources": {"routes": {"bad id": {"spec": {}, "created_revision": 1, "mod_revision": 1}}}},
    {"revision": 1, "resources": {"routes": {"r1": {"spec": [], "created_revision": 1, "mod_revision": 1}}}},
]


@pytest.mark.parametrize("data", BAD_SNAPSHOTS)
def test_from_snapshot_rejects_bad_shapes(data: Any) -> None:
    with pytest.raises(CodecError):
        ConfigState.from_snapshot(data)


def test_from_snapshot_allows_missing_kinds() -> None:
    state = ConfigState.from_snapshot({"revision": 4, "resources": {}})
    assert state.revision == 4 and state.list("plugins") == []


def test_one_route_txn_on_10k_routes_is_fast() -> None:
    state = apply(ConfigState.empty(), put("upstreams", "u1", upstream_body()))
    state = apply(state, *(put("routes", f"r{i}", route_body(paths=[f"/p{i}"])) for i in range(10_000)))
    state.hash()
    timings = []
    for attempt in range(5):
        started = time.perf_counter()
        new, _ = state.apply(txn(put("routes", f"new{attempt}", route_body(paths=["/new"]))))
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.010, timings
    assert new.count("routes") == 10_001 and state.count("routes") == 10_000
    started = time.perf_counter()
    new.hash()
    assert time.perf_counter() - started < 0.25  # re-hash reuses cached per-resource encodings
