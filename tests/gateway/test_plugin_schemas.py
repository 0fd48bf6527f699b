"""Plugin config schemas: defaults, normalization and every rule, with error paths."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import PLUGIN_NAMES, ValidationError, validate_plugin_config
from gateway.plugin_schemas import ACCESS_LOG_FIELDS

BASE = "routes[r1].plugins"


def check(name: str, config: Any) -> dict[str, Any]:
    return validate_plugin_config(name, config, f"{BASE}.{name}")


def test_plugin_names_match_the_contract() -> None:
    assert PLUGIN_NAMES == (
        "key-auth",
        "jwt-auth",
        "rate-limit",
        "ip-restriction",
        "cors",
        "request-transformer",
        "request-id",
        "access-log",
    )


DEFAULTS: dict[str, dict[str, Any]] = {
    "key-auth": {"header": "apikey", "query_param": "apikey", "hide_credentials": False},
    "jwt-auth": {
        "header": "authorization",
        "algorithms": ["HS256", "RS256", "ES256"],
        "claims_to_verify": ["exp"],
        "issuer": None,
        "audience": None,
        "leeway": 0.0,
        "key_claim": "iss",
        "jwks_url": None,
        "jwks_cache_ttl": 300.0,
    },
    "cors": {
        "origins": ["*"],
        "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "headers": [],
        "exposed_headers": [],
        "credentials": False,
        "max_age": 3600,
    },
    "request-transformer": {"add_headers": {}, "remove_headers": [], "rewrite_path": None},
    "request-id": {"header": "x-request-id", "echo_downstream": True},
    "access-log": {"path": None, "sample_rate": 1.0, "fields": list(ACCESS_LOG_FIELDS)},
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults(name: str) -> None:
    assert check(name, {}) == DEFAULTS[name]


def test_defaults_are_fresh_copies() -> None:
    first = check("cors", {})
    first["origins"].append("https://x")
    assert check("cors", {})["origins"] == ["*"]


def test_rate_limit_defaults_and_header_key() -> None:
    assert check("rate-limit", {"limit": 5}) == {"limit": 5, "window": 1.0, "burst": None, "key": "ip", "header_name": None}
    cfg = check("rate-limit", {"limit": 5, "window": 60, "burst": 0, "key": "header", "header_name": "X-User"})
    assert cfg == {"limit": 5, "window": 60.0, "burst": 0, "key": "header", "header_name": "x-user"}


def test_ip_restriction_normalizes_cidrs() -> None:
    cfg = check("ip-restriction", {"allow": ["10.0.0.7/24", "10.0.0.1", "::1", "10.0.0.0/24"], "deny": [" 192.168.1.1/32 "]})
    assert cfg == {"allow": ["10.0.0.0/24", "10.0.0.1/32", "::1/128"], "deny": ["192.168.1.1/32"]}


def test_case_normalization() -> None:
    assert check("key-auth", {"header": "X-API-Key"})["header"] == "x-api-key"
    assert check("cors", {"methods": ["get", "Post"]})["methods"] == ["GET", "POST"]
    assert check("jwt-auth", {"algorithms": ["hs256", "HS256"]})["algorithms"] == ["HS256"]
    cfg = check("request-transformer", {"add_headers": {"X-A": "1"}, "remove_headers": ["X-B", "x-b"], "rewrite_path": "/v2"})
    assert cfg == {"add_headers": {"x-a": "1"}, "remove_headers": ["x-b"], "rewrite_path": "/v2"}


def test_nullable_fields() -> None:
    assert check("key-auth", {"query_param": None})["query_param"] is None
    assert check("jwt-auth", {"jwks_url": "https://idp.example/jwks", "issuer": "me"})["jwks_url"] == "https://idp.example/jwks"
    assert check("access-log", {"path": "/var/log/gw.log", "sample_rate": 0})["sample_rate"] == 0.0


ERRORS: list[tuple[str, Any, str, str]] = [
    ("key-auth", [], "", "must be an object"),
    ("key-auth", None, "", "must not be null"),
    ("key-auth", {"header": ""}, ".header", "must not be empty"),
    ("key-auth", {"header": "x y"}, ".header", "header name"),
    ("key-auth", {"header": None}, ".header", "must not be null"),
    ("key-auth", {"query_param": "a b"}, ".query_param", "invalid format"),
    ("key-auth", {"hide_credentials": "true"}, ".hide_credentials", "true or false"),
    ("key-auth", {"hdr": "x"}, ".hdr", "unknown field"),
    ("jwt-auth", {"algorithms": []}, ".algorithms", "at least 1 item"),
    ("jwt-auth", {"algorithms": ["none"]}, ".algorithms[0]", "one of"),
    ("jwt-auth", {"claims_to_verify": ["iat"]}, ".claims_to_verify[0]", "one of"),
    ("jwt-auth", {"leeway": -1}, ".leeway", ">= 0"),
    ("jwt-auth", {"jwks_url": "ftp://x"}, ".jwks_url", "http:// or https://"),
    ("jwt-auth", {"jwks_url": "https://"}, ".jwks_url", "http:// or https://"),
    ("jwt-auth", {"jwks_cache_ttl": 0}, ".jwks_cache_ttl", "> 0"),
    ("jwt-auth", {"issuer": 1}, ".issuer", "must be a string"),
    ("rate-limit", {}, ".limit", "is required"),
    ("rate-limit", {"limit": 0}, ".limit", ">= 1"),
    ("rate-limit", {"limit": True}, ".limit", "must be an integer"),
    ("rate-limit", {"limit": 1.5}, ".limit", "must be an integer"),
    ("rate-limit", {"limit": 1, "window": 0}, ".window", "> 0"),
    ("rate-limit", {"limit": 1, "burst": -1}, ".burst", ">= 0"),
    ("rate-limit", {"limit": 1, "key": "user"}, ".key", "one of"),
    ("rate-limit", {"limit": 1, "key": "header"}, ".header_name", "required"),
    ("rate-limit", {"limit": 1, "header_name": "x-user"}, ".header_name", "only allowed"),
    ("ip-restriction", {}, "", "at least one of allow and deny"),
    ("ip-restriction", {"allow": [], "deny": []}, "", "at least one of allow and deny"),
    ("ip-restriction", {"allow": ["300.0.0.1"]}, ".allow[0]", "CIDR"),
    ("ip-restriction", {"deny": ["10.0.0.0/33"]}, ".deny[0]", "CIDR"),
    ("ip-restriction", {"allow": "10.0.0.0/8"}, ".allow", "must be a list"),
    ("cors", {"origins": [""]}, ".origins[0]", "must not be empty"),
    ("cors", {"methods": ["FOO"]}, ".methods[0]", "one of"),
    ("cors", {"headers": ["bad header"]}, ".headers[0]", "header name"),
    ("cors", {"exposed_headers": [1]}, ".exposed_headers[0]", "must be a string"),
    ("cors", {"credentials": 1}, ".credentials", "true or false"),
    ("cors", {"max_age": -1}, ".max_age", ">= 0"),
    ("request-transformer", {"add_headers": {"x-a": 1}}, ".add_headers.x-a", "must be a string"),
    ("request-transformer", {"add_headers": {"x-a": "a\nb"}}, ".add_headers.x-a", "CR, LF"),
    ("request-transformer", {"add_headers": {"a b": "1"}}, ".add_headers.a b", "header name"),
    ("request-transformer", {"rewrite_path": "v2"}, ".rewrite_path", 'start with "/"'),
    ("request-id", {"header": "a:b"}, ".header", "header name"),
    ("request-id", {"echo_downstream": None}, ".echo_downstream", "must not be null"),
    ("access-log", {"sample_rate": 1.5}, ".sample_rate", "<= 1"),
    ("access-log", {"sample_rate": -0.1}, ".sample_rate", ">= 0"),
    ("access-log", {"fields": []}, ".fields", "at least 1 item"),
    ("access-log", {"fields": ["bogus"]}, ".fields[0]", "one of"),
    ("access-log", {"path": ""}, ".path", "must not be empty"),
]


@pytest.mark.parametrize(("name", "config", "suffix", "message"), ERRORS)
def test_errors(name: str, config: Any, suffix: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check(name, config)
    assert info.value.path == f"{BASE}.{name}{suffix}"
    assert message in info.value.message


def test_unknown_plugin() -> None:
    with pytest.raises(ValidationError) as info:
        validate_plugin_config("nope", {}, "plugins[p1].config")
    assert info.value.path == "plugins[p1].config"
    assert "unknown plugin 'nope'" in info.value.message and "rate-limit" in info.value.message


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_normalized_configs_are_fixed_points(name: str) -> None:
    minimal = {"rate-limit": {"limit": 1}, "ip-restriction": {"deny": ["10.0.0.1"]}}.get(name, {})
    cfg = check(name, minimal)
    assert check(name, cfg) == cfg
