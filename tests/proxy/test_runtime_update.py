"""update_runtime (incremental, per delta) must compile exactly what build_runtime compiles."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway import ConfigState, Op, Txn
from proxy.router import Router
from proxy.runtime import Runtime, build_runtime, update_runtime

SEED = 20261126
HOSTS = ["", "a.example.com", "*.example.com", "b.test"]
PATHS = ["/", "/api", "/api/v1", "=/exact", "/api/v1/users", "/static/"]
PROBES = [
    (m, h, p)
    for m in ("GET", "POST")
    for h in ("a.example.com", "x.example.com", "b.test", "other.org")
    for p in ("/", "/api", "/api/v1/users/7", "/exact", "/exactly", "/static/x.css", "/nothing")
]


def route_body(rng: random.Random, upstreams: list[str]) -> dict[str, Any]:
    host = rng.choice(HOSTS)
    body: dict[str, Any] = {
        "paths": rng.sample(PATHS, rng.randint(1, 2)),
        "upstream": rng.choice(upstreams),
        "priority": rng.randint(0, 3),
    }
    if host:
        body["hosts"] = [host]
    if rng.random() < 0.3:
        body["methods"] = [rng.choice(["GET", "POST"])]
    if rng.random() < 0.2:
        body["plugins"] = {"rate-limit": {"limit": rng.randint(1, 100)}}
    return body


def upstream_body(rng: random.Random) -> dict[str, Any]:
    return {"targets": [{"host": "127.0.0.1", "port": rng.randint(1000, 1100)}], "retries": rng.randint(0, 3)}


def random_txn(rng: random.Random, state: ConfigState, n: int) -> Txn:
    upstreams = [r.id for r in state.list("upstreams")]
    routes = [r.id for r in state.list("routes")]
    ops: list[Op] = []
    roll = rng.random()
    if roll < 0.15 or not upstreams:
        ops.append(Op("put", "upstreams", f"u{rng.randint(0, 5)}", upstream_body(rng)))
    elif roll < 0.3 and routes:
        ops.append(Op("delete", "routes", rng.choice(routes)))
    elif roll < 0.35:
        unused = set(upstreams) - {r.spec["upstream"] for r in state.list("routes")}
        if unused:
            ops.append(Op("delete", "upstreams", sorted(unused)[0]))
    if upstreams and not ops:
        for _ in range(rng.randint(1, 3)):
            ops.append(Op("put", "routes", f"r{rng.randint(0, 40)}", route_body(rng, upstreams)))
    if not ops:
        ops.append(Op("put", "upstreams", "u0", upstream_body(rng)))
    return Txn(f"t{n}", tuple(ops))


def describe(runtime: Runtime) -> dict[str, Any]:
    router: Router = runtime.router
    matches = []
    for method, host, path in PROBES:
        hit = router.match(method, host, path)
        matches.append(None if hit is None else (hit.route.id, hit.matched_path, hit.exact))
    return {
        "routes": {rid: r for rid, r in router.routes.items()},
        "matches": matches,
        "pools": {uid: pool.spec for uid, pool in runtime.pools.items()},
        "chains": {rid: chain.names() for rid, chain in runtime.chains.items()},
        "revision": runtime.revision,
        "hash": runtime.hash,
    }


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_incremental_runtime_equals_full_build(seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    state = ConfigState.empty()
    state, _ = state.apply(Txn("init", (Op("put", "upstreams", "u0", upstream_body(rng)),)))
    runtime = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    for n in range(150):
        try:
            new, delta = state.apply(random_txn(rng, state, n))
        except Exception:  # an op the CP would refuse (e.g. upstream still in use): skip it
            continue
        touched = [(op[1], op[2]) for op in delta.ops]
        runtime = update_runtime(runtime, new, touched, revision=new.revision, hash=new.hash())
        full = build_runtime(new.to_snapshot(), revision=new.revision, hash=new.hash())
        assert describe(runtime) == describe(full), f"seed={seed} step={n}"
        state = new


def test_incremental_update_leaves_the_old_runtime_intact() -> None:
    state, _ = ConfigState.empty().apply(Txn("a", (
        Op("put", "upstreams", "u", {"targets": [{"host": "127.0.0.1", "port": 1}]}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u"}),
    )))
    old = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    new_state, delta = state.apply(Txn("b", (Op("put", "routes", "r1", {"paths": ["/b"], "upstream": "u"}),)))
    new = update_runtime(old, new_state, [("routes", "r1")], revision=new_state.revision, hash=new_state.hash())
    assert old.router.match("GET", None, "/a") is not None and old.router.match("GET", None, "/b") is None
    assert new.router.match("GET", None, "/b") is not None and new.router.match("GET", None, "/a") is None


def test_dangling_route_after_incremental_update_is_refused() -> None:
    state, _ = ConfigState.empty().apply(Txn("a", (
        Op("put", "upstreams", "u", {"targets": [{"host": "127.0.0.1", "port": 1}]}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u"}),
    )))
    old = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    # a (corrupt) delta deleting an upstream still in use must be refused, not compiled
    broken = ConfigState.from_snapshot({**state.to_snapshot(), "revision": 2, "resources": {
        **state.to_snapshot()["resources"], "upstreams": {}}})
    with pytest.raises(ValueError, match="does not exist"):
        update_runtime(old, broken, [("upstreams", "u")], revision=2, hash=broken.hash())


def test_a_config_state_compiles_like_its_snapshot() -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    state, _ = ConfigState.empty().apply(Txn("init", (Op("put", "upstreams", "u0", upstream_body(rng)),)))
    for n in range(60):
        try:
            state, _ = state.apply(random_txn(rng, state, n))
        except Exception:  # an op the CP would refuse: skip it
            continue
    from_state = build_runtime(state, revision=state.revision, hash=state.hash())
    from_dict = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    assert describe(from_state) == describe(from_dict) and len(from_state.router) > 0
    with pytest.raises(ValueError, match="revision"):
        build_runtime(state, revision=state.revision + 1, hash=state.hash())
