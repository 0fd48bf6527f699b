"""Builders shared by the gateway tests: small valid bodies, ops, txns and a hypothesis profile."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings

from gateway import ConfigState, Op, Txn

# Deterministic: the same examples on every run and machine; no example database on disk.
PROPERTY_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def upstream_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"targets": [{"host": "127.0.0.1", "port": 9001}]}
    body.update(over)
    return body


def route_body(upstream: Any = "u1", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"paths": ["/api"], "upstream": upstream}
    body.update(over)
    return body


def consumer_body(*keys: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"credentials": {"key-auth": [{"key": key} for key in keys]}}
    body.update(over)
    return body


def put(kind: str, id: str, body: dict[str, Any] | None, expect: int | None = None) -> Op:
    return Op("put", kind, id, body, expect)


def delete(kind: str, id: str, expect: int | None = None) -> Op:
    return Op("delete", kind, id, None, expect)


def txn(*ops: Op, expect_revision: int | None = None, request_id: str = "req") -> Txn:
    return Txn(request_id, tuple(ops), expect_revision)


def apply(state: ConfigState, *ops: Op, expect_revision: int | None = None) -> ConfigState:
    new_state, _ = state.apply(txn(*ops, expect_revision=expect_revision))
    return new_state


def base_state() -> ConfigState:
    """Revision 1: upstream u1 and route r1 -> u1."""
    return apply(ConfigState.empty(), put("upstreams", "u1", upstream_body()), put("routes", "r1", route_body()))
