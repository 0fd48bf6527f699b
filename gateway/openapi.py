"""The OpenAPI 3.1 description of the admin API, generated (pure: no IO).

Resource bodies and plugin configs come from the validating schemas (``gateway/jsonschema.py`` over
``validate.SCHEMAS`` and ``plugin_schemas.PLUGIN_SCHEMAS``); the rest of the API (cluster, tokens,
audit...) is described here, next to nothing else, and ``tests/cluster/test_openapi.py`` fails when
the admin app serves a route this document does not describe (or describes one it does not serve).

Served at ``GET /v1/openapi.json`` (any admin or viewer token) and written by ``gwadm openapi``.
Every operation lists its error statuses with the one JSON error shape
``{"error": {"code", "message", "path"}}``.
"""

from __future__ import annotations

import copy
from typing import Any

from .jsonschema import field_schema
from .model import ID_PATTERN, KINDS
from .plugin_schemas import PLUGIN_NAMES, PLUGIN_SCHEMAS
from .validate import SCHEMAS

__all__ = ["API_VERSION", "build_openapi"]

API_VERSION = "1"
JSON = "application/json"
Schema = dict[str, Any]

_ERROR_TEXT = {
    400: "Malformed request (bad JSON, bad query value)",
    401: "Missing, invalid, expired or revoked token (with WWW-Authenticate)",
    403: "The token's role may not do this",
    404: "No such resource or kind",
    405: "Method not allowed on this path (with Allow)",
    409: "Conflict: If-Match / expect_revision did not match, or the resource is in use",
    413: "Request body over the node's body_limit",
    414: "Request line (URL) over the node's max_url_length",
    415: "Request body is not JSON",
    422: "Invalid body or parameter; path names the field",
    429: "Too many requests for this token (with Retry-After, seconds)",
    431: "Request headers over the node's max_header_size",
    503: "No quorum, or outcome unknown: retryable (retry with the same X-Request-Id)",
}
_COMMON = (401, 403, 405, 414, 422, 429, 431, 503)  # 422: unknown query parameter
_WRITE = (400, 409, 413, 415, 422)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_schema() -> Schema:
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "path"],
                "properties": {
                    "code": {"type": "string", "description": "stable machine-readable code"},
                    "message": {"type": "string"},
                    "path": {"type": ["string", "null"], "description": "the field at fault, e.g. routes[r1].paths[0]"},
                    "retryable": {"type": "boolean"},
                    "request_id": {"type": ["string", "null"]},
                },
            }
        },
    }


_HEADERS = {
    401: ("WWW-Authenticate", "Bearer realm=\"gwadm\""),
    405: ("Allow", "the methods this path allows"),
    429: ("Retry-After", "seconds until a request from this token is accepted again"),
}


def _error_response(status: int) -> Schema:
    resp: Schema = {"description": _ERROR_TEXT[status], "content": _json_content(_ref("Error"))}
    if status in _HEADERS:
        name, text = _HEADERS[status]
        resp["headers"] = {name: {"required": True, "description": text, "schema": {"type": "string"}}}
    return resp


def _resource_schemas() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for kind in KINDS:
        request = field_schema(SCHEMAS[kind], "request")
        props = request["properties"]
        props["id"] = {"type": "string", "pattern": ID_PATTERN, "description": "must equal the id in the path"}
        for ro in ("created_revision", "mod_revision", "revision"):
            props[ro] = {"description": "read-only: accepted (so a GET result can be PUT back) and ignored"}
        out[f"{kind}.spec"] = request
        create = copy.deepcopy(request)
        create["required"] = ["id", *create.get("required", [])]
        out[f"{kind}.create"] = create
        response = field_schema(SCHEMAS[kind], "response")
        rprops = response["properties"]
        rprops["id"] = {"type": "string", "pattern": ID_PATTERN}
        for ro in ("created_revision", "mod_revision", "revision"):
            rprops[ro] = {"type": "integer", "minimum": 0}
        response["required"] = [*response["required"], "id", "created_revision", "mod_revision"]
        if kind == "upstreams":  # GET of one upstream adds the targets registered by discovery
            rprops["registered"] = {"type": "array", "items": {"type": "object"},
                                    "description": "read-only (GET): targets registered via /targets"}
        out[kind] = response
    for name in PLUGIN_NAMES:
        out[f"plugin.{name}"] = field_schema(PLUGIN_SCHEMAS[name], "request")
    return out


def _obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": props}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}


def _other_schemas() -> dict[str, Schema]:
    any_resource = {"anyOf": [_ref(k) for k in KINDS]}
    txn_op = {
        "type": "object",
        "additionalProperties": False,
        "required": ["op", "kind", "id"],
        "properties": {
            "op": {"type": "string", "enum": ["put", "delete"]},
            "kind": {"type": "string", "enum": list(KINDS)},
            "id": {"type": "string", "pattern": ID_PATTERN},
            "body": {"type": "object", "description": "the resource (for put), as for PUT /v1/{kind}/{id}"},
            "if_match": {"type": "integer", "minimum": 0, "description": "expected mod_revision (0: must not exist)"},
        },
    }
    return {
        "Error": _error_schema(),
        "TxnRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ops"],
            "properties": {
                "ops": {"type": "array", "minItems": 1, "items": txn_op},
                "expect_revision": {"type": "integer", "description": "CAS on the global revision"},
                "request_id": {"type": "string", "description": "idempotency key (X-Request-Id wins)"},
            },
        },
        "TxnResult": _obj(("revision", "results"), revision=_INT,
                          results={"type": "array", "items": {"anyOf": [any_resource, {"type": "null"}]}}),
        "Config": _obj(("revision", "hash", "resources"), revision=_INT, hash=_STR, resources={
            "type": "object", "additionalProperties": False, "required": list(KINDS),
            "properties": {k: {"type": "array", "items": _ref(k)} for k in KINDS}}),
        "NodeStatus": _obj(("id", "role", "term", "commit_index", "applied_index", "revision", "hash", "has_quorum"),
                           id=_STR, role=_STR, term=_INT, commit_index=_INT, applied_index=_INT, revision=_INT,
                           hash=_STR, has_quorum=_BOOL),
        "Cluster": _obj(("leader", "node", "members"), leader={"type": ["string", "null"]}, node=_STR,
                        members={"type": "array", "items": {"type": "object"}}),
        "Members": _obj(("members",), members={"type": "array", "items": {"type": "object"}}),
        "MemberRequest": {
            "type": "object", "additionalProperties": False, "required": ["id", "raft_addr", "admin_url"],
            "properties": {"id": {"type": "string", "pattern": ID_PATTERN}, "raft_addr": _STR, "admin_url": _STR},
        },
        "Proxies": _obj(("items", "revision"), items={"type": "array", "items": {"type": "object"}}, revision=_INT),
        "Tokens": _obj(("generation", "revoked"), generation=_INT,
                       revoked={"type": "array", "items": _obj(("jti",), jti=_STR, exp={"type": ["integer", "null"]})}),
        "TokenRequest": {
            "type": "object", "additionalProperties": False, "required": ["role"],
            "properties": {
                "role": {"type": "string", "enum": ["admin", "viewer", "proxy"]},
                "subject": {"type": "string", "minLength": 1, "maxLength": 200},
                "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 10 * 365 * 86400},
            },
        },
        "Token": _obj(("token", "jti", "exp", "role", "subject", "generation"), token=_STR, jti=_STR, exp=_INT,
                      role=_STR, subject=_STR, generation=_INT),
        "RevokeRequest": {
            "type": "object", "additionalProperties": False,
            "description": "exactly one of jti and token",
            "properties": {"jti": {"type": "string", "minLength": 1, "maxLength": 200}, "token": _STR, "exp": _INT},
        },
        "Revoked": _obj(("revoked",), revoked=_STR, until={"type": ["integer", "null"]}),
        "AuditRecords": _obj(("items", "dropped", "next_seq", "revision"), next_seq=_INT, dropped=_INT,
                             items={"type": "array", "items": _ref("AuditRecord")}, revision=_INT),
        "AuditRecord": _obj(
            ("seq", "time", "subject", "role", "op", "kind", "id", "revision"),
            seq=_INT, time={"type": ["number", "null"]}, subject={"type": ["string", "null"]},
            jti={"type": ["string", "null"]}, role={"type": ["string", "null"]}, client={"type": ["string", "null"]}, op=_STR, kind=_STR, id={"type": ["string", "null"]},
            request_id={"type": ["string", "null"]}, revision={"type": ["integer", "null"]},
        ),
        "Health": _obj(("ok",), ok=_BOOL),
        "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
    }


# -- operations ------------------------------------------------------------------------------------
def _json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _op(
    summary: str,
    role: str,
    ok: dict[int, Schema],
    *,
    errors: tuple[int, ...] = (),
    body: Schema | None = None,
    body_types: tuple[str, ...] = (JSON,),
    params: list[Schema] | None = None,
    tag: str = "config",
    op_id: str,
) -> Schema:
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "description": f"Role: {role}.",
        "x-gwadm-role": role,
        "responses": {
            **{str(s): {"description": "OK", "content": _json_content(sch)} for s, sch in ok.items()},
            **_errors(tuple(sorted(set(_COMMON) | set(errors)))),
        },
    }
    if role == "none":
        op["security"] = []
        op["responses"] = {k: v for k, v in op["responses"].items() if k not in ("401", "403")}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {t: {"schema": body} for t in body_types}}
    if params:
        op["parameters"] = params
    return op


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


CONSISTENCY = _param("consistency", "query", {"type": "string", "enum": ["linearizable", "stale"]},
                     "linearizable (default: a replicated barrier first) or stale (local state)")
REQUEST_ID = _param("X-Request-Id", "header", {"type": "string", "pattern": "^[!-~]{1,128}$"},
                    "idempotency key: a retried write with the same id is applied once")
IF_MATCH = _param("If-Match", "header", {"type": "string", "pattern": '^"?[0-9]{1,18}"?$'},
                  "expected mod_revision of the resource (compare-and-set); 0 = must not exist")
IF_NONE_MATCH = _param("If-None-Match", "header", {"type": "string", "enum": ["*"]},
                       "* = create only (the resource must not exist)")
ID = _param("id", "path", {"type": "string", "pattern": ID_PATTERN}, "resource id", required=True)
# The per-request timeout (cluster/timeouts.py): the header, or the query parameter, in seconds.
_TIMEOUT_SCHEMA: Schema = {"type": "number", "minimum": 0.05, "maximum": 120}
REQUEST_TIMEOUTS = [_param("X-Request-Timeout", "header", _TIMEOUT_SCHEMA, "seconds this request may wait for Raft"),
                    _param("timeout", "query", _TIMEOUT_SCHEMA, "seconds this request may wait (as X-Request-Timeout)")]


def _resource_paths(kind: str) -> dict[str, Any]:
    one = _ref(kind)
    listed = _obj(("items", "revision"), items={"type": "array", "items": one}, revision=_INT)
    deleted = _obj(("deleted", "revision"), deleted={"anyOf": [one, {"type": "null"}]}, revision=_INT)
    write_params = [REQUEST_ID, IF_MATCH, *REQUEST_TIMEOUTS]
    return {
        f"/v1/{kind}": {
            "get": _op(f"List {kind}", "viewer", {200: listed}, errors=(400, 422), params=[CONSISTENCY, *REQUEST_TIMEOUTS],
                       op_id=f"list_{kind}"),
            "post": _op(f"Create one of {kind} (the id is in the body; 409 if it exists)", "admin", {201: one},
                        errors=_WRITE, body=_ref(f"{kind}.create"), params=[REQUEST_ID, *REQUEST_TIMEOUTS],
                        op_id=f"create_{kind}"),
        },
        f"/v1/{kind}/{{id}}": {
            "parameters": [ID],
            "get": _op(f"Get one of {kind}", "viewer", {200: one}, errors=(400, 404, 422),
                       params=[CONSISTENCY, *REQUEST_TIMEOUTS], op_id=f"get_{kind}"),
            "put": _op(f"Create or replace one of {kind}", "admin", {200: one, 201: one}, errors=(*_WRITE, 404),
                       body=_ref(f"{kind}.spec"), params=[*write_params, IF_NONE_MATCH], op_id=f"put_{kind}"),
            "patch": _op(f"Change one of {kind} with a JSON merge patch (RFC 7386)", "admin", {200: one},
                         errors=(*_WRITE, 404), body={"type": "object"},
                         body_types=("application/merge-patch+json", JSON), params=write_params,
                         op_id=f"patch_{kind}"),
            "delete": _op(f"Delete one of {kind} (409 while referenced)", "admin", {200: deleted},
                          errors=(400, 404, 409, 422), params=write_params, op_id=f"delete_{kind}"),
        },
    }


def _audit_paths() -> dict[str, Any]:
    return {
        "/v1/audit": {"get": _op("The audit log of admin writes (replicated, bounded)", "admin",
                             {200: _ref("AuditRecords")}, errors=(400, 422), tag="audit", op_id="audit",
                             params=[
                                 _param("subject", "query", {"type": "string"},
                                        "only records of this token subject"),
                                 _param("kind", "query", {"type": "string"},
                                        "only records of this kind (upstreams, routes..., tokens)"),
                                 _param("since", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                        "only records with a resulting revision greater than this"),
                                 _param("after", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                        "only records with a greater seq (gwadm audit --follow)"),
                                 _param("limit", "query", {"type": "string", "pattern": "^[0-9]{1,6}$"},
                                        "at most this many (newest), default 1000, at most 10000"),
                             ])},
        "/metrics": {"get": {**_op("Prometheus metrics: rejected writes by reason, limit refusals, audit log size",
                                   "viewer", {}, tag="node", op_id="metrics"),
                             }},
    }


def _discovery_paths() -> dict[str, Any]:
    """Service registration (cluster/discovery_api.py, docs/discovery.md)."""
    target = _param("target", "path", {"type": "string", "minLength": 3, "maxLength": 300},
                    "host:port (IPv6 as [addr]:port)", required=True)
    registration = {
        "type": "object", "additionalProperties": False, "required": ["ttl"],
        "properties": {
            "weight": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
            "ttl": {"type": "number", "minimum": 1, "maximum": 86400,
                    "description": "seconds without a heartbeat before the target expires"},
            "metadata": {"type": ["object", "null"], "maxProperties": 32, "additionalProperties": _STR,
                         "propertyNames": {"minLength": 1}, "description": "at most 4096 bytes in all"},
        },
    }
    ids = {"type": "object", "required": ["ids"],
           "properties": {"ids": {"type": "array", "maxItems": 10_000, "items": _STR}}}
    batch = {"type": "object", "required": ["ids"], "properties": {
        "ids": {"type": "array", "maxItems": 10_000, "items": _STR},
        "ages": {"type": "array", "maxItems": 10_000, "items": {"type": "number", "minimum": 0, "maximum": 3600},
                 "description": "seconds since the follower heard each id (same length as ids); absent: now"}}}
    registrar = "admin or registrar"
    return {
        "/v1/discovery": {"get": _op("This node's discovery counters", "viewer", {200: {"type": "object"}},
                                     tag="discovery", op_id="discovery")},
        "/v1/discovery/heartbeats": {"post": _op("A follower's batch of heartbeats, to the leader", "admin",
                                                 {200: _obj(("renewed",), renewed=_INT)}, errors=_WRITE,
                                                 body=batch, tag="discovery", op_id="discovery_heartbeats")},
        "/v1/discovery/liveness": {"post": _op("Seconds since the last heartbeat of each registration", "admin",
                                               {200: _obj(("ages",), ages={"type": "object"})}, errors=_WRITE,
                                               body=ids, tag="discovery", op_id="discovery_liveness")},
        "/v1/upstreams/{id}/targets": {
            "parameters": [ID],
            "get": _op("Static and registered targets of an upstream, with liveness", "viewer",
                       {200: _obj(("upstream", "static", "registered", "revision"), upstream=_STR,
                                  static={"type": "array"}, registered={"type": "array"}, revision=_INT)},
                       errors=(400, 404, 422), params=[CONSISTENCY, *REQUEST_TIMEOUTS], tag="discovery",
                       op_id="list_targets"),
        },
        "/v1/upstreams/{id}/targets/{target}": {
            "parameters": [ID, target],
            "put": _op("Register or renew a target", registrar, {200: {"type": "object"}, 201: {"type": "object"}},
                       errors=(*_WRITE, 404), body=registration, params=[REQUEST_ID, *REQUEST_TIMEOUTS], tag="discovery",
                       op_id="put_target"),
            "delete": _op("Deregister a target", registrar, {200: _obj(("deregistered", "revision"),
                                                                       deregistered=_STR, revision=_INT)},
                          errors=(400, 404, 409, 422), params=[REQUEST_ID, *REQUEST_TIMEOUTS], tag="discovery",
                          op_id="delete_target"),
        },
        "/v1/upstreams/{id}/targets/{target}/heartbeat": {
            "parameters": [ID, target],
            "post": _op("Renew a registration (no Raft entry)", registrar, {200: _obj(("ok", "id"), ok=_BOOL, id=_STR)},
                        errors=(400, 404, 422), tag="discovery", op_id="heartbeat_target"),
        },
    }


def _changes_paths() -> dict[str, Any]:
    """The pull transport of the config protocol (cluster/changes_api.py, docs/contracts.md)."""
    msgpack = {"application/x-msgpack": {"schema": {"type": "string", "contentMediaType": "application/x-msgpack"}}}
    changes = _op("Frames a proxy at revision `since` needs (msgpack; long-poll with `wait`)", "proxy", {},
                  errors=(400, 409), tag="push", op_id="changes", params=[
                      _param("since", "query", {"type": "integer", "minimum": 0}, "the proxy's revision"),
                      _param("wait", "query", {"type": "number", "minimum": 0}, "seconds to hold an idle poll"),
                      _param("hash", "query", _STR, "the proxy's config hash at `since`"),
                      _param("full", "query", {"type": "string", "enum": ["1", "true", "0", "false"]},
                             "1: a full snapshot"),
                  ])
    changes["responses"]["200"] = {"description": "status and frames", "content": msgpack}
    changes["responses"]["304"] = {"description": "Not Modified (If-None-Match matched the ETag)"}
    return {
        "/v1/changes": {"get": changes},
        "/v1/changes/head": {"get": _op("Revision and hash of this node (anti-entropy check)", "proxy",
                                        {200: _obj(("node_id", "revision", "hash", "has_quorum"), node_id=_STR,
                                                   revision=_INT, hash=_STR, has_quorum=_BOOL)},
                                        errors=(400,), tag="push", op_id="changes_head")},
        "/v1/changes/fleet": {"post": _op("A relay reports the proxies it serves", "proxy",
                                          {200: _obj(("accepted",), accepted=_INT)}, errors=_WRITE,
                                          body=_obj(("relay", "items"), relay=_STR, items={"type": "array"}),
                                          tag="push", op_id="changes_fleet")},
        "/v1/proxies/streams": {"get": _op("Proxies streaming from this node", "viewer", {200: _ref("Proxies")},
                                           tag="cluster", op_id="proxies_streams")},
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness (no token needed)", "none", {200: _ref("Health")}, tag="node",
                                op_id="healthz")},
        "/v1/openapi.json": {"get": _op("This document", "viewer", {200: _ref("OpenAPI")}, tag="node",
                                        op_id="openapi")},
        "/v1/events": {"get": _op("This node's recent events (leader changes, members...), oldest first", "viewer",
                                  {200: _obj(("node", "last_seq", "items"), node=_STR, last_seq=_INT,
                                             items={"type": "array", "items": {"type": "object"}})},
                                  errors=(400,), tag="cluster", op_id="events",
                                  params=[_param("since", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                                 "only events with a greater seq")])},
        "/v1/status": {"get": _op("This node's Raft and config state", "viewer", {200: _ref("NodeStatus")},
                                  tag="cluster", op_id="status")},
        "/v1/cluster": {"get": _op("Every member's status, unreachable ones included", "viewer",
                                   {200: _ref("Cluster")}, tag="cluster", op_id="cluster")},
        "/v1/cluster/members": {
            "get": _op("The Raft configuration", "viewer", {200: _ref("Members")}, tag="cluster", op_id="members"),
            "post": _op("Add a member (one change at a time)", "admin", {200: _ref("Members"), 201: _ref("Members")},
                        errors=(*_WRITE, 404), body=_ref("MemberRequest"), tag="cluster", op_id="add_member",
                        params=[_param("timeout", "query", {"type": "number", "minimum": 0.5, "maximum": 120},
                                       "seconds")]),
        },
        "/v1/cluster/members/{id}": {
            "parameters": [ID],
            "delete": _op("Remove a member", "admin", {200: _ref("Members")}, errors=(400, 404, 409, 422),
                          tag="cluster", op_id="remove_member",
                          params=[_param("timeout", "query", {"type": "number", "minimum": 0.5, "maximum": 120},
                                         "seconds")]),
        },
        "/v1/config": {"get": _op("The whole config at the current revision", "viewer", {200: _ref("Config")},
                                  errors=(400, 409, 422), params=[
                                      CONSISTENCY,
                                      _param("revision", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                             "must be the current revision (409 otherwise)")],
                                  op_id="config")},
        "/v1/txn": {"post": _op("Atomic multi-op transaction (all or nothing)", "admin", {200: _ref("TxnResult")},
                                errors=(*_WRITE, 404), body=_ref("TxnRequest"), params=[REQUEST_ID, *REQUEST_TIMEOUTS], op_id="txn")},
        "/v1/proxies": {"get": _op("The proxy fleet as seen by every node", "viewer", {200: _ref("Proxies")},
                                   tag="cluster", op_id="proxies")},
        "/v1/proxies/local": {"get": _op("Proxies connected to this node", "viewer", {200: _ref("Proxies")},
                                         tag="cluster", op_id="proxies_local")},
        "/v1/stream": {"get": {
            "operationId": "stream", "tags": ["push"], "x-gwadm-role": "proxy",
            "summary": "The config push stream (WebSocket, msgpack frames; docs/contracts.md section 4)",
            "description": "Role: proxy. Upgrades to a WebSocket; not a JSON endpoint.",
            "responses": {"101": {"description": "Switching Protocols"}, **_errors((400, *_COMMON))},
        }},
        "/v1/tokens": {
            "get": _op("Token generation and revoked token ids", "admin", {200: _ref("Tokens")}, tag="tokens",
                       op_id="tokens"),
            "post": _op("Mint a token", "admin", {201: _ref("Token")}, errors=(400, 413, 422), body=_ref("TokenRequest"),
                        tag="tokens", op_id="create_token"),
        },
        "/v1/tokens/revoke": {"post": _op("Revoke one token (by jti or the token itself)", "admin",
                                          {200: _ref("Revoked")}, errors=(400, 413, 422), body=_ref("RevokeRequest"),
                                          tag="tokens", op_id="revoke_token")},
        "/v1/tokens/rotate": {"post": _op("Reject every token minted so far; answers a fresh admin token", "admin",
                                          {200: _ref("Token")}, tag="tokens", params=[REQUEST_ID],
                                          op_id="rotate_tokens")},
    }
    paths.update(_audit_paths())
    paths["/metrics"]["get"]["responses"]["200"] = {
        "description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths.update(_discovery_paths())
    paths.update(_changes_paths())
    for kind in KINDS:
        paths.update(_resource_paths(kind))
    for path, item in paths.items():  # every read takes ?consistency= (gwadm status sends it to /v1/cluster)
        op = item.get("get")
        if op is not None and path not in ("/healthz", "/v1/stream", "/v1/changes"):
            names = [p["name"] for p in op.get("parameters", [])]
            if "consistency" not in names:
                op["parameters"] = [*op.get("parameters", []), CONSISTENCY]
    return paths


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    """The whole document, as a fresh JSON-compatible dict."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "gwadm admin API",
            "version": API_VERSION,
            "description": (
                "Admin REST API of a gwadm control-plane node. Every request needs "
                "`Authorization: Bearer <JWT>` (except /healthz); roles admin (read/write), viewer "
                "(read-only, also this document) and proxy (only /v1/stream). Errors are always "
                '`{"error": {"code", "message", "path"}}`. Writes on any node are forwarded to the leader.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {**_resource_schemas(), **_other_schemas()},
            "responses": {f"E{s}": _error_response(s) for s in sorted(_ERROR_TEXT)},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
