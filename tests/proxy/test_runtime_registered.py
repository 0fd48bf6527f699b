"""Registered targets in the proxy runtime: merged into their upstream's pool, and a registration
delta rebuilds only the pools whose target list changed (no full build)."""

from __future__ import annotations

from typing import Any

from gateway import registry
from gateway.model import Op, Txn
from gateway.state import ConfigState
from proxy.runtime import build_runtime, update_runtime


def _state() -> ConfigState:
    state, _ = ConfigState.empty().apply(Txn("t", (
        Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 9001}]}),
        Op("put", "upstreams", "u2", {"targets": [{"host": "127.0.0.1", "port": 9002}]}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u1"}),
        Op("put", "routes", "r2", {"paths": ["/b"], "upstream": "u2"}),
    )))
    return state


def _cmd(kind: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"type": kind, "upstream": "u1", "host": "10.0.0.1", "port": port, "ttl": 5, "now": 1.0, **kw}


def _targets(rt: Any, uid: str) -> list[tuple[str, int, int]]:
    return [(t.host, t.port, t.weight) for t in rt.pools[uid].targets]


def test_registrations_merge_into_pools_incrementally() -> None:
    state = _state()
    rt = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    steps = [_cmd("reg_put", 1, weight=3), _cmd("reg_put", 2), _cmd("reg_put", 1, weight=5),
             {"type": "reg_delete", "upstream": "u1", "host": "10.0.0.1", "port": 2}]
    for cmd in steps:
        out = registry.apply_command(state, 0, cmd)
        assert out.delta is not None
        touched = [(op[1], op[2]) for op in out.delta.ops]
        new = update_runtime(rt, out.state, touched, revision=out.state.revision, hash=out.state.hash())
        full = build_runtime(out.state.to_snapshot(), revision=out.state.revision, hash=out.state.hash())
        for uid in ("u1", "u2"):
            assert _targets(new, uid) == _targets(full, uid)
        assert new.pools["u2"] is rt.pools["u2"]  # untouched upstream: same pool, same health state
        assert new.consumers is rt.consumers  # no full build
        state, rt = out.state, new
    assert _targets(rt, "u1") == [("127.0.0.1", 9001, 1), ("10.0.0.1", 1, 5)]


def test_an_upstream_of_registered_targets_only() -> None:
    state, _ = ConfigState.empty().apply(Txn("t", (
        Op("put", "upstreams", "u1", {"targets": []}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u1"}),
    )))
    rt = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    assert rt.pools["u1"].pick() is None  # 503 until an instance registers
    out = registry.apply_command(state, 0, _cmd("reg_put", 7))
    assert out.delta is not None
    new = update_runtime(rt, out.state, [(op[1], op[2]) for op in out.delta.ops], revision=out.state.revision,
                         hash=out.state.hash())
    picked = new.pools["u1"].pick()
    assert picked is not None and (picked.host, picked.port) == ("10.0.0.1", 7)
