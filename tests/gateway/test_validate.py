"""validate_spec: normalized shapes and every rule of contracts section 1, with exact error paths."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway import NotFound, ValidationError, validate_spec
from gateway.frozen import FrozenDict, FrozenList, is_frozen, thaw

from .helpers import consumer_body, route_body, upstream_body

PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def err(kind: str, id: str, body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate_spec(kind, id, body)
    return info.value


def test_upstream_defaults() -> None:
    assert validate_spec("upstreams", "u1", upstream_body()) == {
        "targets": [{"host": "127.0.0.1", "port": 9001, "weight": 1}],
        "lb": "round_robin",
        "hash_on": None,
        "health": {"passive": {"max_failures": 3, "cooldown": 10.0}, "active": None},
        "timeouts": {"connect": 2.0, "read": 30.0},
        "retries": 1,
    }


def test_upstream_full_and_normalization() -> None:
    spec = validate_spec(
        "upstreams",
        "u1",
        {
            "targets": [{"host": "API.Example.com", "port": 80, "weight": 0}, {"host": "[::1]", "port": 81}],
            "lb": "consistent_hash",
            "hash_on": {"type": "header", "name": "X-User"},
            "health": {"active": {}},
            "timeouts": {"connect": 1, "read": 2.5},
            "retries": 0,
        },
    )
    assert spec["targets"] == [
        {"host": "api.example.com", "port": 80, "weight": 0},
        {"host": "::1", "port": 81, "weight": 1},
    ]
    assert spec["hash_on"] == {"type": "header", "name": "x-user"}
    assert spec["health"] == {
        "passive": {"max_failures": 3, "cooldown": 10.0},
        "active": {"path": "/health", "interval": 5.0, "timeout": 1.0, "healthy_threshold": 2, "unhealthy_threshold": 2},
    }
    assert spec["timeouts"] == {"connect": 1.0, "read": 2.5}
    assert isinstance(spec["timeouts"]["connect"], float)


def test_hash_on_cookie_keeps_case_and_ip_needs_no_name() -> None:
    spec = validate_spec("upstreams", "u1", upstream_body(lb="consistent_hash", hash_on={"type": "cookie", "name": "SID"}))
    assert spec["hash_on"] == {"type": "cookie", "name": "SID"}
    spec = validate_spec("upstreams", "u1", upstream_body(lb="consistent_hash", hash_on={"type": "ip"}))
    assert spec["hash_on"] == {"type": "ip", "name": None}


T = "upstreams[u1].targets"
UPSTREAM_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({}, T, "is required"),
    ({"targets": [{"host": "h", "port": p} for p in range(1, 258)]}, T, "at most 256"),
    ({"targets": "127.0.0.1:80"}, T, "must be a list"),
    ({"targets": [{"port": 80}]}, f"{T}[0].host", "is required"),
    ({"targets": [{"host": "bad host!", "port": 80}]}, f"{T}[0].host", "hostname or an IP"),
    ({"targets": [{"host": "", "port": 80}]}, f"{T}[0].host", "must not be empty"),
    ({"targets": [{"host": "h", "port": 0}]}, f"{T}[0].port", ">= 1"),
    ({"targets": [{"host": "h", "port": 65536}]}, f"{T}[0].port", "<= 65535"),
    ({"targets": [{"host": "h", "port": "80"}]}, f"{T}[0].port", "must be an integer"),
    ({"targets": [{"host": "h", "port": True}]}, f"{T}[0].port", "must be an integer"),
    ({"targets": [{"host": "h", "port": 80.0}]}, f"{T}[0].port", "must be an integer"),
    ({"targets": [{"host": "h", "port": None}]}, f"{T}[0].port", "must not be null"),
    ({"targets": [{"host": "h", "port": 80, "weight": -1}]}, f"{T}[0].weight", ">= 0"),
    ({"targets": [{"host": "h", "port": 80, "weight": 1001}]}, f"{T}[0].weight", "<= 1000"),
    ({"targets": [{"host": "h", "port": 80, "wieght": 1}]}, f"{T}[0].wieght", "unknown field"),
    ({"targets": [{"host": "h", "port": 80}, {"host": "H", "port": 80}]}, f"{T}[1]", "duplicate target h:80"),
    (upstream_body(lb="random"), "upstreams[u1].lb", "must be one of"),
    (upstream_body(lb=None), "upstreams[u1].lb", "must not be null"),
    (upstream_body(lb="consistent_hash"), "upstreams[u1].hash_on", "is required"),
    (upstream_body(hash_on={"type": "ip"}), "upstreams[u1].hash_on", "only allowed"),
    (upstream_body(lb="consistent_hash", hash_on={"type": "query"}), "upstreams[u1].hash_on.type", "one of"),
    (upstream_body(lb="consistent_hash", hash_on={"type": "header"}), "upstreams[u1].hash_on.name", "required"),
    (upstream_body(lb="consistent_hash", hash_on={"type": "cookie", "name": None}), "upstreams[u1].hash_on.name", "required"),
    (upstream_body(lb="consistent_hash", hash_on={"type": "ip", "name": "x"}), "upstreams[u1].hash_on.name", "null"),
    (upstream_body(lb="consistent_hash", hash_on={"type": "header", "name": "a b"}), "upstreams[u1].hash_on.name", "header name"),
    (upstream_body(health=None), "upstreams[u1].health", "must not be null"),
    (upstream_body(health={"passive": {"max_failures": 0}}), "upstreams[u1].health.passive.max_failures", ">= 1"),
    (upstream_body(health={"passive": {"max_failures": 101}}), "upstreams[u1].health.passive.max_failures", "<= 100"),
    (upstream_body(health={"passive": {"cooldown": 0}}), "upstreams[u1].health.passive.cooldown", "> 0"),
    (upstream_body(health={"active": {"path": "health"}}), "upstreams[u1].health.active.path", 'start with "/"'),
    (upstream_body(health={"active": {"interval": 0.0}}), "upstreams[u1].health.active.interval", "> 0"),
    (upstream_body(health={"active": {"timeout": -1}}), "upstreams[u1].health.active.timeout", "> 0"),
    (upstream_body(health={"active": {"healthy_threshold": 0}}), "upstreams[u1].health.active.healthy_threshold", ">= 1"),
    (upstream_body(health={"active": {"unhealthy_threshold": 0}}), "upstreams[u1].health.active.unhealthy_threshold", ">= 1"),
    (upstream_body(health={"activ": {}}), "upstreams[u1].health.activ", "unknown field"),
    (upstream_body(timeouts={"connect": 0}), "upstreams[u1].timeouts.connect", "> 0"),
    (upstream_body(timeouts={"read": float("nan")}), "upstreams[u1].timeouts.read", "finite"),
    (upstream_body(timeouts={"read": float("inf")}), "upstreams[u1].timeouts.read", "finite"),
    (upstream_body(timeouts={"read": "30"}), "upstreams[u1].timeouts.read", "must be a number"),
    (upstream_body(timeouts={"read": True}), "upstreams[u1].timeouts.read", "must be a number"),
    (upstream_body(timeouts={"read": 10**400}), "upstreams[u1].timeouts.read", "too large"),
    (upstream_body(retries=11), "upstreams[u1].retries", "<= 10"),
    (upstream_body(retries=-1), "upstreams[u1].retries", ">= 0"),
    (upstream_body(retries=False), "upstreams[u1].retries", "must be an integer"),
    (upstream_body(name="x"), "upstreams[u1].name", "unknown field"),
]


@pytest.mark.parametrize(("body", "path", "message"), UPSTREAM_ERRORS)
def test_upstream_errors(body: dict[str, Any], path: str, message: str) -> None:
    error = err("upstreams", "u1", body)
    assert error.path == path
    assert message in error.message


def test_route_defaults() -> None:
    assert validate_spec("routes", "r1", route_body()) == {
        "paths": ["/api"],
        "hosts": [],
        "methods": [],
        "headers": {},
        "priority": 0,
        "upstream": "u1",
        "strip_prefix": False,
        "plugins": {},
    }


def test_route_normalization() -> None:
    spec = validate_spec(
        "routes",
        "r1",
        {
            "paths": ["/api", "=/exact", "/api", "/files*"],
            "hosts": ["Example.COM", "*.example.com", "10.0.0.1"],
            "methods": ["get", "POST", "GET"],
            "headers": {"X-Env": "prod", "x-empty": ""},
            "priority": -5,
            "upstream": "u1",
            "strip_prefix": True,
            "plugins": {"rate-limit": {"limit": 10}, "cors": {}},
        },
    )
    assert spec["paths"] == ["/api", "=/exact", "/files*"]
    assert spec["hosts"] == ["example.com", "*.example.com", "10.0.0.1"]
    assert spec["methods"] == ["GET", "POST"]
    assert spec["headers"] == {"x-env": "prod", "x-empty": ""}
    assert spec["plugins"]["rate-limit"] == {"limit": 10, "window": 1.0, "burst": None, "key": "ip", "header_name": None}
    assert spec["plugins"]["cors"]["origins"] == ["*"]


def test_route_hosts_only_is_enough() -> None:
    assert validate_spec("routes", "r1", {"hosts": ["a.example"], "upstream": "u1"})["paths"] == []


R = "routes[r1]"
ROUTE_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"upstream": "u1"}, R, "at least one of paths and hosts"),
    (route_body(paths=[], hosts=[]), R, "at least one of paths and hosts"),
    (route_body(paths="/api"), f"{R}.paths", "must be a list"),
    (route_body(paths=["api"]), f"{R}.paths[0]", 'must start with "/"'),
    (route_body(paths=["/ok", "/a b"]), f"{R}.paths[1]", "whitespace"),
    (route_body(paths=["/a\tb"]), f"{R}.paths[0]", "whitespace"),
    (route_body(paths=["=api"]), f"{R}.paths[0]", 'must start with "/"'),
    (route_body(paths=[""]), f"{R}.paths[0]", "must not be empty"),
    (route_body(paths=[1]), f"{R}.paths[0]", "must be a string"),
    (route_body(hosts=["bad host"]), f"{R}.hosts[0]", "valid hostname"),
    (route_body(hosts=["*"]), f"{R}.hosts[0]", "valid hostname"),
    (route_body(hosts=["a..b"]), f"{R}.hosts[0]", "valid hostname"),
    (route_body(hosts=["-a.com"]), f"{R}.hosts[0]", "valid hostname"),
    (route_body(methods=["FETCH"]), f"{R}.methods[0]", "must be one of"),
    (route_body(methods="GET"), f"{R}.methods", "must be a list"),
    (route_body(headers=["x"]), f"{R}.headers", "must be an object"),
    (route_body(headers={"bad name": "x"}), f"{R}.headers.bad name", "header name"),
    (route_body(headers={"x-a": 1}), f"{R}.headers.x-a", "must be a string"),
    (route_body(headers={"x-a": "a\r\nb"}), f"{R}.headers.x-a", "CR, LF"),
    (route_body(headers={"X-A": "1", "x-a": "2"}), f"{R}.headers.x-a", "duplicate key"),
    (route_body(priority=True), f"{R}.priority", "must be an integer"),
    (route_body(priority=1.5), f"{R}.priority", "must be an integer"),
    (route_body(priority=2**31), f"{R}.priority", "<="),
    ({"paths": ["/api"]}, f"{R}.upstream", "is required"),
    (route_body(upstream="bad id!"), f"{R}.upstream", "valid resource id"),
    (route_body(upstream=None), f"{R}.upstream", "must not be null"),
    (route_body(strip_prefix="yes"), f"{R}.strip_prefix", "true or false"),
    (route_body(strip_prefix=1), f"{R}.strip_prefix", "true or false"),
    (route_body(plugins=[]), f"{R}.plugins", "must be an object"),
    (route_body(plugins={"nope": {}}), f"{R}.plugins.nope", "unknown plugin"),
    (route_body(plugins={"rate-limit": {}}), f"{R}.plugins.rate-limit.limit", "is required"),
    (route_body(plugins={"rate-limit": {"limit": 0}}), f"{R}.plugins.rate-limit.limit", ">= 1"),
    (route_body(plugins={"cors": None}), f"{R}.plugins.cors", "must not be null"),
    (route_body(pathz=["/x"]), f"{R}.pathz", "unknown field"),
    (route_body(id="r2"), f"{R}.id", "does not match"),
]


@pytest.mark.parametrize(("body", "path", "message"), ROUTE_ERRORS)
def test_route_errors(body: dict[str, Any], path: str, message: str) -> None:
    error = err("routes", "r1", body)
    assert error.path == path
    assert message in error.message


def test_consumer_defaults_and_credentials() -> None:
    assert validate_spec("consumers", "c1", {}) == {
        "username": None,
        "credentials": {"key-auth": [], "jwt-auth": []},
        "plugins": {},
    }
    spec = validate_spec(
        "consumers",
        "c1",
        {
            "username": "alice",
            "credentials": {
                "key-auth": [{"key": "secret-key-1"}],
                "jwt-auth": [
                    {"key": "issuer-a", "algorithm": "hs256", "secret": "s3cret"},
                    {"key": "issuer-b", "algorithm": "ES256", "public_key": PEM},
                ],
            },
            "plugins": {"rate-limit": {"limit": 5, "key": "consumer"}},
        },
    )
    assert spec["credentials"]["jwt-auth"] == [
        {"key": "issuer-a", "algorithm": "HS256", "secret": "s3cret", "public_key": None},
        {"key": "issuer-b", "algorithm": "ES256", "secret": None, "public_key": PEM},
    ]
    assert spec["plugins"]["rate-limit"]["key"] == "consumer"


C = "consumers[c1]"
CONSUMER_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"username": 5}, f"{C}.username", "must be a string"),
    (consumer_body("short"), f"{C}.credentials.key-auth[0].key", "at least 8 characters"),
    (consumer_body("12345678", "12345678"), f"{C}.credentials.key-auth[1].key", "duplicate key"),
    ({"credentials": {"key-auth": [{"key": "12345678", "x": 1}]}}, f"{C}.credentials.key-auth[0].x", "unknown field"),
    ({"credentials": {"basic-auth": []}}, f"{C}.credentials.basic-auth", "unknown field"),
    ({"credentials": {"jwt-auth": [{"key": "i", "algorithm": "HS256"}]}}, f"{C}.credentials.jwt-auth[0].secret", "HS256"),
    ({"credentials": {"jwt-auth": [{"key": "i", "algorithm": "RS256"}]}}, f"{C}.credentials.jwt-auth[0].public_key", "RS256"),
    (
        {"credentials": {"jwt-auth": [{"key": "i", "algorithm": "ES256", "public_key": "abc"}]}},
        f"{C}.credentials.jwt-auth[0].public_key",
        "PEM",
    ),
    ({"credentials": {"jwt-auth": [{"key": "i", "algorithm": "none"}]}}, f"{C}.credentials.jwt-auth[0].algorithm", "one of"),
    ({"credentials": {"jwt-auth": [{"algorithm": "HS256", "secret": "s"}]}}, f"{C}.credentials.jwt-auth[0].key", "required"),
    (
        {"credentials": {"jwt-auth": [{"key": "i", "algorithm": "HS256", "secret": "s"}, {"key": "i", "algorithm": "HS256", "secret": "t"}]}},
        f"{C}.credentials.jwt-auth[1].key",
        "duplicate key",
    ),
    ({"plugins": {"cors": {"max_age": -1}}}, f"{C}.plugins.cors.max_age", ">= 0"),
]


@pytest.mark.parametrize(("body", "path", "message"), CONSUMER_ERRORS)
def test_consumer_errors(body: dict[str, Any], path: str, message: str) -> None:
    error = err("consumers", "c1", body)
    assert error.path == path
    assert message in error.message


def test_global_plugin() -> None:
    spec = validate_spec("plugins", "p1", {"name": "cors"})
    assert spec["name"] == "cors" and spec["enabled"] is True
    assert spec["config"]["max_age"] == 3600
    spec = validate_spec("plugins", "p1", {"name": "rate-limit", "config": {"limit": 3}, "enabled": False})
    assert spec["config"]["limit"] == 3 and spec["enabled"] is False


P = "plugins[p1]"
PLUGIN_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({}, f"{P}.name", "is required"),
    ({"name": "nope"}, f"{P}.name", "must be one of"),
    ({"name": "rate-limit"}, f"{P}.config.limit", "is required"),
    ({"name": "cors", "config": []}, f"{P}.config", "must be an object"),
    ({"name": "cors", "config": {"x": 1}}, f"{P}.config.x", "unknown field"),
    ({"name": "cors", "enabled": "no"}, f"{P}.enabled", "true or false"),
]


@pytest.mark.parametrize(("body", "path", "message"), PLUGIN_ERRORS)
def test_global_plugin_errors(body: dict[str, Any], path: str, message: str) -> None:
    error = err("plugins", "p1", body)
    assert error.path == path
    assert message in error.message


def test_unknown_kind_is_not_found() -> None:
    with pytest.raises(NotFound):
        validate_spec("services", "s1", {})


@pytest.mark.parametrize("bad_id", ["", "-r", ".r", "r 1", "r/1", "r1\n", "x" * 65, "é"])
def test_invalid_ids(bad_id: str) -> None:
    with pytest.raises(ValidationError, match="invalid id"):
        validate_spec("routes", bad_id, route_body())


@pytest.mark.parametrize("body", [None, [], "x", 1])
def test_body_must_be_an_object(body: Any) -> None:
    assert err("routes", "r1", body).path == "routes[r1]"


def test_non_string_keys_rejected() -> None:
    error = err("routes", "r1", {**route_body(), 1: "x"})
    assert error.path == "routes[r1]" and "keys must be strings" in error.message


def test_read_only_fields_are_dropped_so_get_can_be_put_back() -> None:
    spec = validate_spec("routes", "r1", route_body())
    returned = {**spec, "id": "r1", "created_revision": 3, "mod_revision": 7, "revision": 9}
    assert validate_spec("routes", "r1", returned) == spec


@pytest.mark.parametrize(
    ("kind", "body", "filled"),
    [
        ("upstreams", upstream_body(lb="consistent_hash", hash_on={"type": "header", "name": "X-A"}, health={"active": {}}), {"health.passive", "timeouts"}),
        ("routes", route_body(hosts=["A.com"], methods=["get"], plugins={"ip-restriction": {"allow": ["10.1.2.3/8"]}}), set()),
        ("consumers", consumer_body("abcdefgh"), set()),
        ("plugins", {"name": "access-log", "config": {"sample_rate": 1}}, set()),
    ],
)
def test_validation_is_idempotent_pure_and_plain(kind: str, body: dict[str, Any], filled: set[str]) -> None:
    """Plain and mutable, except objects filled from FILL: shared, read-only (gateway/schema.py)."""
    before = copy.deepcopy(body)
    spec = validate_spec(kind, "x1", body)
    assert body == before  # input untouched
    assert validate_spec(kind, "x1", spec) == spec  # normalized form is a fixed point
    json.dumps(spec)  # JSON-compatible

    frozen: set[str] = set()

    def plain(value: Any, path: str) -> None:
        if isinstance(value, FrozenDict):
            frozen.add(path)
            assert is_frozen(value) and value == thaw(value)
            return
        assert not isinstance(value, FrozenDict | FrozenList | tuple)
        if isinstance(value, dict):
            for key, item in value.items():
                plain(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                plain(item, f"{path}[{index}]")

    plain(spec, "")
    assert frozen == filled


def test_frozen_input_is_accepted() -> None:
    from gateway import freeze

    assert validate_spec("routes", "r1", freeze(route_body())) == validate_spec("routes", "r1", route_body())
