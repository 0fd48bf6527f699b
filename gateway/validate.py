"""Validation of resource bodies into normalized specs (contracts section 1).

``validate_spec`` is called by ``ConfigState.apply`` for every put -- on every node, in Raft apply
order -- and by the admin API before proposing, for fast precise 4xx answers. It must therefore be
deterministic and pure. It never mutates its input and returns a fresh, plain, JSON-compatible dict
with every field present, so that stored specs, hashes and what the proxy compiles never depend on
which optional fields a client happened to send.

Cross-resource rules (route -> upstream, unique key-auth keys) are not checked here; they need the
whole state and are checked by ``ConfigState.apply`` at the end of the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .fields import header_name, header_value, host_or_ip, http_method, route_host, url_path
from .model import ID_PATTERN, check_id, check_kind
from .plugin_schemas import JWT_ALGORITHMS, PLUGIN_NAMES, plugin_map, validate_plugin_config
from .schema import FILL, Bool, Custom, Float, Int, List, Map, Obj, Str, item_path, join_path

__all__ = ["READ_ONLY_FIELDS", "SCHEMAS", "validate_spec"]

READ_ONLY_FIELDS: tuple[str, ...] = ("id", "created_revision", "mod_revision", "revision")
"""Fields a GET returns that a PUT may send back; they are accepted and dropped."""


# --- upstreams ---------------------------------------------------------------------------------


def _targets_post_unique(targets: list[dict[str, Any]], path: str) -> None:
    seen: set[tuple[str, int]] = set()
    for index, target in enumerate(targets):
        key = (target["host"], target["port"])
        if key in seen:
            raise ValidationError(f"duplicate target {key[0]}:{key[1]}", item_path(path, index))
        seen.add(key)


def _upstream_post(spec: dict[str, Any], path: str) -> None:
    _targets_post_unique(spec["targets"], join_path(path, "targets"))
    hash_on = spec["hash_on"]
    if spec["lb"] == "consistent_hash" and hash_on is None:
        raise ValidationError('is required when lb is "consistent_hash"', join_path(path, "hash_on"))
    if spec["lb"] != "consistent_hash" and hash_on is not None:
        raise ValidationError('is only allowed when lb is "consistent_hash"', join_path(path, "hash_on"))


def _hash_on_post(hash_on: dict[str, Any], path: str) -> None:
    name_path = join_path(path, "name")
    if hash_on["type"] in ("header", "cookie"):
        if hash_on["name"] is None:
            raise ValidationError(f'is required when type is "{hash_on["type"]}"', name_path)
        if hash_on["type"] == "header":
            hash_on["name"] = header_name().check(hash_on["name"], name_path)
    elif hash_on["name"] is not None:
        raise ValidationError('must be null when type is "ip"', name_path)


UPSTREAM = Obj(
    {
        "targets": List(
            Obj(
                {
                    "host": host_or_ip(),
                    "port": Int(min=1, max=65535),
                    "weight": Int(default=1, min=0, max=1000),
                }
            ),
            min_items=0,  # none: every target registers itself (gateway/registry.py)
            max_items=256,
        ),
        "lb": Str(default="round_robin", choices=("round_robin", "least_conn", "consistent_hash")),
        "hash_on": Obj(
            {
                "type": Str(choices=("header", "cookie", "ip")),
                "name": Str(default=None, nullable=True, max_len=256),
            },
            default=None,
            nullable=True,
            post=_hash_on_post,
        ),
        "health": Obj(
            {
                "passive": Obj(
                    {
                        "max_failures": Int(default=3, min=1, max=100),
                        "cooldown": Float(default=10.0, gt=0.0),
                    },
                    default=FILL,
                ),
                "active": Obj(
                    {
                        "path": url_path(default="/health"),
                        "interval": Float(default=5.0, gt=0.0),
                        "timeout": Float(default=1.0, gt=0.0),
                        "healthy_threshold": Int(default=2, min=1),
                        "unhealthy_threshold": Int(default=2, min=1),
                    },
                    default=None,
                    nullable=True,
                ),
            },
            default=FILL,
        ),
        "timeouts": Obj(
            {"connect": Float(default=2.0, gt=0.0), "read": Float(default=30.0, gt=0.0)},
            default=FILL,
        ),
        "retries": Int(default=1, min=0, max=10),
    },
    post=_upstream_post,
)


# --- routes ------------------------------------------------------------------------------------


def _route_post(spec: dict[str, Any], path: str) -> None:
    if not spec["paths"] and not spec["hosts"]:
        raise ValidationError("at least one of paths and hosts must be non-empty", path)


_REFERENCE_ID = Str(pattern=ID_PATTERN[1:-1], pattern_hint="must be a valid resource id", max_len=64)

ROUTE = Obj(
    {
        "paths": List(url_path(exact_prefix=True), default=[], dedupe=True),
        "hosts": List(route_host(), default=[], dedupe=True),
        "methods": List(http_method(), default=[], dedupe=True),
        "headers": Map(header_value(), key=header_name(), default={}),
        "priority": Int(default=0, min=-(2**31), max=2**31 - 1),
        "upstream": _REFERENCE_ID,
        "strip_prefix": Bool(default=False),
        "plugins": plugin_map(),
    },
    post=_route_post,
)


# --- consumers ---------------------------------------------------------------------------------


def _looks_like_pem(value: str) -> bool:
    return "-----BEGIN " in value and "-----END " in value


def _jwt_credential_post(cred: dict[str, Any], path: str) -> None:
    if cred["algorithm"] == "HS256":
        if cred["secret"] is None:
            raise ValidationError('is required for algorithm "HS256"', join_path(path, "secret"))
    else:
        key_path = join_path(path, "public_key")
        if cred["public_key"] is None:
            raise ValidationError(f'is required for algorithm "{cred["algorithm"]}"', key_path)
        if not _looks_like_pem(cred["public_key"]):
            raise ValidationError("must be a PEM-encoded public key (-----BEGIN ...-----)", key_path)


def _unique_keys(creds: list[dict[str, Any]], path: str) -> None:
    seen: set[str] = set()
    for index, cred in enumerate(creds):
        if cred["key"] in seen:
            raise ValidationError("duplicate key in this consumer", join_path(item_path(path, index), "key"))
        seen.add(cred["key"])


def _credentials_post(creds: dict[str, Any], path: str) -> None:
    for name in ("key-auth", "jwt-auth"):
        _unique_keys(creds[name], join_path(path, name))


CONSUMER = Obj(
    {
        "username": Str(default=None, nullable=True, max_len=256),
        "credentials": Obj(
            {
                "key-auth": List(Obj({"key": Str(min_len=8, max_len=1024)}), default=[]),
                "jwt-auth": List(
                    Obj(
                        {
                            "key": Str(max_len=1024),
                            "algorithm": Str(choices=JWT_ALGORITHMS, upper=True),
                            "secret": Str(default=None, nullable=True, max_len=4096),
                            "public_key": Str(default=None, nullable=True, max_len=16384),
                        },
                        post=_jwt_credential_post,
                    ),
                    default=[],
                ),
            },
            default=FILL,
            post=_credentials_post,
        ),
        "plugins": plugin_map(),
    }
)


# --- global plugins ----------------------------------------------------------------------------


def _global_plugin_post(spec: dict[str, Any], path: str) -> None:
    spec["config"] = validate_plugin_config(spec["name"], spec["config"], join_path(path, "config"))


def _any_object(value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", path)
    return value  # checked against the plugin's schema in _global_plugin_post


GLOBAL_PLUGIN = Obj(
    {
        "name": Str(choices=PLUGIN_NAMES),
        "config": Custom(_any_object, default={}),
        "enabled": Bool(default=True),
    },
    post=_global_plugin_post,
)


SCHEMAS: dict[str, Obj] = {
    "upstreams": UPSTREAM,
    "routes": ROUTE,
    "consumers": CONSUMER,
    "plugins": GLOBAL_PLUGIN,
}


def validate_spec(kind: str, id: str, body: Any) -> dict[str, Any]:
    """Validate a resource body and return its normalized spec (a fresh plain dict).

    Raises ``NotFound`` for an unknown kind and ``ValidationError`` (with a path such as
    ``routes[r1].paths[0]``) for anything else. Read-only fields (``READ_ONLY_FIELDS``) are dropped,
    but an ``id`` that differs from ``id`` is an error: the client is confused about what it writes.
    """
    check_kind(kind)
    check_id(id, kind)
    path = f"{kind}[{id}]"
    if not isinstance(body, dict) and not isinstance(body, Mapping):  # dict first: the ABC check is slow
        raise ValidationError("body must be an object", path)
    if "id" in body and body["id"] != id:
        raise ValidationError(f"does not match the id in the path ({id!r})", join_path(path, "id"))
    stripped = {key: value for key, value in body.items() if key not in READ_ONLY_FIELDS}
    spec: dict[str, Any] = SCHEMAS[kind].check(stripped, path)
    return spec
