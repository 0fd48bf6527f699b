"""One config schema per plugin, checked when a route, consumer or global plugin is written.

Validating plugin configs at write time (not when the proxy compiles its runtime) means a typo or a
bad value is a 422 with a path such as ``routes[r1].plugins.rate-limit.limit`` instead of a proxy
that nacks a delta. The proxy may rely on configs being normalized: every field present, defaults
filled, header names lower-cased, CIDRs in canonical form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .fields import HTTP_METHODS, cidr, header_name, header_value, http_method, url_path
from .schema import Bool, Custom, Field, Float, Int, List, Map, Obj, Str, join_path

__all__ = [
    "ACCESS_LOG_FIELDS",
    "JWT_ALGORITHMS",
    "PLUGIN_NAMES",
    "PLUGIN_SCHEMAS",
    "plugin_map",
    "validate_plugin_config",
]

JWT_ALGORITHMS: tuple[str, ...] = ("HS256", "RS256", "ES256")
ACCESS_LOG_FIELDS: tuple[str, ...] = (
    "time",
    "request_id",
    "client_ip",
    "method",
    "host",
    "path",
    "status",
    "latency_ms",
    "route",
    "upstream",
    "target",
    "consumer",
    "bytes_sent",
)


def _rate_limit_post(cfg: dict[str, Any], path: str) -> None:
    if cfg["key"] == "header" and cfg["header_name"] is None:
        raise ValidationError('is required when key is "header"', join_path(path, "header_name"))
    if cfg["key"] != "header" and cfg["header_name"] is not None:
        raise ValidationError('is only allowed when key is "header"', join_path(path, "header_name"))


def _ip_restriction_post(cfg: dict[str, Any], path: str) -> None:
    if not cfg["allow"] and not cfg["deny"]:
        raise ValidationError("at least one of allow and deny must be non-empty", path)


def _check_http_url(value: str, path: str) -> str:
    for scheme in ("http://", "https://"):
        if value.startswith(scheme) and len(value) > len(scheme) and not any(c.isspace() for c in value):
            return value
    raise ValidationError("must be an http:// or https:// URL", path)


_NO_WHITESPACE = r"\S+"

PLUGIN_SCHEMAS: dict[str, Obj] = {
    "key-auth": Obj(
        {
            "header": header_name(default="apikey"),
            "query_param": Str(default="apikey", nullable=True, max_len=256, pattern=_NO_WHITESPACE),
            "hide_credentials": Bool(default=False),
        }
    ),
    "jwt-auth": Obj(
        {
            "header": header_name(default="authorization"),
            "algorithms": List(
                Str(choices=JWT_ALGORITHMS, upper=True), default=list(JWT_ALGORITHMS), min_items=1, dedupe=True
            ),
            "claims_to_verify": List(Str(choices=("exp", "nbf")), default=["exp"], dedupe=True),
            "issuer": Str(default=None, nullable=True),
            "audience": Str(default=None, nullable=True),
            "leeway": Float(default=0.0, min=0.0),
            "key_claim": Str(default="iss", max_len=256),
            "jwks_url": Str(default=None, nullable=True, check=_check_http_url),
            "jwks_cache_ttl": Float(default=300.0, gt=0.0),
        }
    ),
    "rate-limit": Obj(
        {
            "limit": Int(min=1),
            "window": Float(default=1.0, gt=0.0),
            "burst": Int(default=None, nullable=True, min=0),
            "key": Str(default="ip", choices=("consumer", "ip", "route", "header")),
            "header_name": header_name(default=None, nullable=True),
        },
        post=_rate_limit_post,
    ),
    "ip-restriction": Obj(
        {
            "allow": List(cidr(), default=[], dedupe=True),
            "deny": List(cidr(), default=[], dedupe=True),
        },
        post=_ip_restriction_post,
    ),
    "cors": Obj(
        {
            "origins": List(Str(max_len=2048, pattern=_NO_WHITESPACE), default=["*"], dedupe=True),
            "methods": List(http_method(), default=list(HTTP_METHODS), dedupe=True),
            "headers": List(header_name(), default=[], dedupe=True),
            "exposed_headers": List(header_name(), default=[], dedupe=True),
            "credentials": Bool(default=False),
            "max_age": Int(default=3600, min=0),
        }
    ),
    "request-transformer": Obj(
        {
            "add_headers": Map(header_value(), key=header_name(), default={}),
            "remove_headers": List(header_name(), default=[], dedupe=True),
            "rewrite_path": url_path(default=None, nullable=True),
        }
    ),
    "request-id": Obj(
        {
            "header": header_name(default="x-request-id"),
            "echo_downstream": Bool(default=True),
        }
    ),
    "access-log": Obj(
        {
            "path": Str(default=None, nullable=True, pattern=r"[^\x00]+", pattern_hint="must not contain NUL"),
            "sample_rate": Float(default=1.0, min=0.0, max=1.0),
            "fields": List(Str(choices=ACCESS_LOG_FIELDS), default=list(ACCESS_LOG_FIELDS), min_items=1, dedupe=True),
        }
    ),
}

PLUGIN_NAMES: tuple[str, ...] = tuple(PLUGIN_SCHEMAS)


def validate_plugin_config(name: str, config: Any, path: str) -> dict[str, Any]:
    """Validate one plugin's ``config`` (at ``path``) and return it normalized.

    An unknown plugin ``name`` is a ``ValidationError`` at ``path`` listing the known names.
    """
    schema = PLUGIN_SCHEMAS.get(name)
    if schema is None:
        raise ValidationError(f"unknown plugin {name!r}; known plugins: {', '.join(PLUGIN_NAMES)}", path)
    result: dict[str, Any] = schema.check(config, path)
    return result


def _check_plugin_map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object of plugin name -> config", path)
    out: dict[str, Any] = {}
    for name, config in value.items():
        if not isinstance(name, str):
            raise ValidationError("plugin names must be strings", path)
        out[name] = validate_plugin_config(name, config, join_path(path, name))
    return out


def plugin_map() -> Field:
    """The ``plugins: {plugin-name: config}`` field of routes and consumers (default ``{}``)."""
    return Custom(_check_plugin_map, default={})
