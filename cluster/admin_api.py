"""The admin REST API of a control-plane node (aiohttp), as in docs/architecture.md §3 and docs/contracts.md §5.

Reads are linearizable by default (a replicated barrier first); ``?consistency=stale`` skips it.
Writes are validated here first for fast, precise 4xx answers, then replicated; the state machine
validates again, because only its answer is authoritative. A write whose outcome is unknown answers
503 with ``retryable: true`` and the request id, so the client can retry safely (the store dedupes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.audit_api import add_audit_routes, audit_middleware, rejections_middleware
from cluster.auth import AuthError, verify_token
from cluster.discovery_api import DISCOVERY_KEY, registered_view, registrar_allowed
from cluster.limits import Limits, install, rate_middleware, size_middleware
from cluster.members import add_routes as add_cluster_admin_routes
from cluster.members import get_cluster, get_fleet, get_status
from cluster.openapi import add_openapi_routes, query_middleware
from cluster.raft import CommandRejected, NoQuorum, OutcomeUnknown
from cluster.store import ConfigStore
from cluster.timeouts import request_timeout
from cluster.tokens_api import add_token_routes
from gateway.errors import GatewayError, NotFound, ValidationError
from gateway.model import KINDS, Op, Txn, check_id
from gateway.state import ConfigState
from gateway.validate import validate_spec

log = logging.getLogger("gwadm.admin")

STATUS_BY_CODE = {
    "invalid": 422,
    "invalid_reference": 422,
    "not_found": 404,
    "conflict": 409,
    "in_use": 409,
    "bad_encoding": 400,
    "bad_request": 400,
    "internal": 500,
}
READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}
_DIGITS = re.compile(r"[0-9]{1,18}")  # str.isdigit() also accepts "²", which int() refuses
_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII: it is logged and stored in the dedupe table
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def error_response(status: int, code: str, message: str, path: str | None = None, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, "path": path, **extra}}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message, exc.path)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS_KEY]["body_limit"]
        return error_response(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        if "Allow" in exc.headers:  # 405: say which methods the path has
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except NoQuorum as exc:
        _unavailable_event(request, "no_quorum")
        return error_response(503, "no_quorum", f"{exc}; try another node", retryable=True,
                              request_id=request.get("request_id"))
    except (OutcomeUnknown, CommandRejected) as exc:
        _unavailable_event(request, "unavailable", str(exc))
        request_id = request.get("request_id")
        return error_response(
            503, "unavailable", f"outcome unknown ({exc}); retry with the same request id",
            retryable=True, request_id=request_id,
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


def _unavailable_event(request: web.Request, code: str, detail: str | None = None) -> None:
    """A 503 as a node event, at most one per reason per second (cluster/events.py)."""
    events = getattr(request.app[STORE_KEY], "events", None)
    if events is not None:
        events.emit("unavailable", level=logging.WARNING, rate_key=f"503:{code}", code=code,
                    method=request.method, path=request.path, **({"detail": detail} if detail else {}))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token")
    try:
        claims = verify_token(request.app[SETTINGS_KEY]["secret"], token.strip(), request.app[STORE_KEY])
    except AuthError as exc:
        return _unauthorized(exc.reason)
    role = claims["role"]
    stream = request.path == "/v1/stream" or request.path.startswith("/v1/changes")  # pull: cluster/changes_api.py
    if stream and role != "proxy":
        return error_response(403, "forbidden", "the config stream needs a proxy token")
    if not stream and role == "proxy":
        return error_response(403, "forbidden", "proxy tokens may only open /v1/stream")
    if role == "viewer" and request.method not in READ_ONLY_METHODS:
        return error_response(403, "forbidden", "viewer tokens are read-only")
    if role == "registrar" and not registrar_allowed(request):
        return error_response(403, "forbidden", "registrar tokens may only register, heartbeat and deregister targets")
    request["auth"] = claims
    return await handler(request)


def _unauthorized(reason: str) -> web.Response:
    resp = error_response(401, "unauthorized", reason)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="gwadm"'
    return resp


# -- helpers -----------------------------------------------------------------------------------------
def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise NotFound(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}", "kind")
    return kind


def _resource_id(request: web.Request) -> str:
    rid = request.match_info["id"]
    check_id(rid, "id")
    return rid


async def _json_body(request: web.Request) -> Any:
    if request.content_type not in ("application/json", "application/merge-patch+json"):
        raise web.HTTPUnsupportedMediaType(text="request body must be JSON (Content-Type: application/json)")
    if (request.content_length or 0) > request.app[SETTINGS_KEY]["body_limit"]:
        raise web.HTTPRequestEntityTooLarge(request.app[SETTINGS_KEY]["body_limit"], request.content_length or 0)
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError.from_dict({"code": "bad_request", "message": f"malformed JSON: {exc}"}) from exc


def _if_match(request: web.Request) -> int | None:
    none_match = request.headers.get("If-None-Match")
    if none_match is not None:
        if none_match.strip() != "*":
            raise ValidationError('only "If-None-Match: *" (create only) is supported', "If-None-Match")
        return 0
    value = request.headers.get("If-Match")
    if value is None:
        return None
    value = value.strip().strip('"')
    if not _DIGITS.fullmatch(value):
        raise ValidationError("If-Match must be a mod_revision (a non-negative integer)", "If-Match")
    return int(value)


async def _read_state(request: web.Request) -> ConfigState:
    store = request.app[STORE_KEY]
    consistency = request.query.get("consistency", "linearizable")
    if consistency not in ("linearizable", "stale"):
        raise ValidationError("must be linearizable or stale", "consistency")
    timeout = request_timeout(request, request.app[SETTINGS_KEY]["read_timeout"])  # a bad one is 422 here too
    if consistency == "stale":
        return store.state
    return await store.barrier(timeout)


async def _commit(
    request: web.Request, ops: list[Op], expect_revision: int | None = None, request_id: str | None = None
) -> dict[str, Any]:
    store = request.app[STORE_KEY]
    header = request.headers.get("X-Request-Id")
    request_id = header if header is not None else request_id or store.new_request_id()
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValidationError("must be 1 to 128 printable ASCII characters", "X-Request-Id")
    request["request_id"] = request_id
    for op in ops:
        if op.action == "put":
            validate_spec(op.kind, op.id, op.body or {})
    txn = Txn(request_id=request_id, ops=tuple(ops), expect_revision=expect_revision)
    result = await store.write(txn, request_timeout(request, request.app[SETTINGS_KEY]["write_timeout"]))
    if not result.get("ok"):
        raise GatewayError.from_dict(result["error"])
    return result


# -- handlers ------------------------------------------------------------------------------------------
async def list_resources(request: web.Request) -> web.Response:
    kind = _kind(request)
    state = await _read_state(request)
    return web.json_response({"items": [r.to_json() for r in state.list(kind)], "revision": state.revision})


async def get_resource(request: web.Request) -> web.Response:
    kind, rid = _kind(request), _resource_id(request)
    state = await _read_state(request)
    res = state.get(kind, rid)
    if res is None:
        raise NotFound(f"{kind} {rid!r} does not exist", f"{kind}[{rid}]")
    body = res.to_json()
    if kind == "upstreams" and DISCOVERY_KEY in request.app:  # registered targets beside the static ones
        body["registered"] = await registered_view(request, state, rid)
    return web.json_response({**body, "revision": state.revision})


async def create_resource(request: web.Request) -> web.Response:
    kind = _kind(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", kind)
    rid = body.get("id")
    if not isinstance(rid, str):
        raise ValidationError("required: the id of the new resource", f"{kind}.id")
    check_id(rid, f"{kind}.id")
    result = await _commit(request, [Op("put", kind, rid, body, expect_mod_revision=0)])
    return web.json_response({**result["results"][0], "revision": result["revision"]}, status=201)


async def put_resource(request: web.Request) -> web.Response:
    kind, rid = _kind(request), _resource_id(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", f"{kind}[{rid}]")
    result = await _commit(request, [Op("put", kind, rid, body, expect_mod_revision=_if_match(request))])
    written = result["results"][0]
    status = 201 if written["created_revision"] == written["mod_revision"] else 200
    return web.json_response({**written, "revision": result["revision"]}, status=status)


async def patch_resource(request: web.Request) -> web.Response:
    kind, rid = _kind(request), _resource_id(request)
    patch = await _json_body(request)
    if not isinstance(patch, dict):
        raise ValidationError("a merge patch must be a JSON object", f"{kind}[{rid}]")
    state = await _read_state(request)
    current = state.get(kind, rid)
    if current is None:
        raise NotFound(f"{kind} {rid!r} does not exist", f"{kind}[{rid}]")
    expect = _if_match(request)
    merged = merge_patch(dict(current.spec), patch)
    op = Op("put", kind, rid, merged, expect_mod_revision=expect if expect is not None else current.mod_revision)
    result = await _commit(request, [op])
    return web.json_response({**result["results"][0], "revision": result["revision"]})


async def delete_resource(request: web.Request) -> web.Response:
    kind, rid = _kind(request), _resource_id(request)
    result = await _commit(request, [Op("delete", kind, rid, None, expect_mod_revision=_if_match(request))])
    return web.json_response({"deleted": result["results"][0], "revision": result["revision"]})


async def post_txn(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("a txn must be a JSON object", "txn")
    unknown = set(body) - {"ops", "expect_revision", "request_id"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", f"txn.{sorted(unknown)[0]}")
    raw_ops = body.get("ops")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise ValidationError("must be a non-empty list of operations", "txn.ops")
    expect_revision = body.get("expect_revision")
    if expect_revision is not None and (isinstance(expect_revision, bool) or not isinstance(expect_revision, int)):
        raise ValidationError("must be an integer", "txn.expect_revision")
    body_request_id = body.get("request_id")
    if body_request_id is not None and not isinstance(body_request_id, str):
        raise ValidationError("must be a string", "txn.request_id")
    ops = [_parse_txn_op(i, raw) for i, raw in enumerate(raw_ops)]
    result = await _commit(request, ops, expect_revision, body_request_id)
    return web.json_response({"revision": result["revision"], "results": result["results"]})


def _parse_txn_op(i: int, raw: Any) -> Op:
    path = f"txn.ops[{i}]"
    if not isinstance(raw, dict):
        raise ValidationError("must be an object", path)
    unknown = set(raw) - {"op", "kind", "id", "body", "if_match"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", f"{path}.{sorted(unknown)[0]}")
    action = raw.get("op")
    if action not in ("put", "delete"):
        raise ValidationError("must be 'put' or 'delete'", f"{path}.op")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValidationError(f"must be one of {', '.join(KINDS)}", f"{path}.kind")
    rid = raw.get("id")
    if not isinstance(rid, str):
        raise ValidationError("must be a string", f"{path}.id")
    check_id(rid, f"{path}.id")
    body = raw.get("body")
    if action == "put" and not isinstance(body, dict):
        raise ValidationError("a put needs an object body", f"{path}.body")
    if_match = raw.get("if_match")
    if if_match is not None and (isinstance(if_match, bool) or not isinstance(if_match, int) or if_match < 0):
        raise ValidationError("must be a non-negative integer", f"{path}.if_match")
    return Op(action, kind, rid, body if action == "put" else None, expect_mod_revision=if_match)


async def get_config(request: web.Request) -> web.Response:
    wanted = request.query.get("revision")
    state = await _read_state(request)
    if wanted is not None:
        if not _DIGITS.fullmatch(wanted):
            raise ValidationError("must be a non-negative integer", "revision")
        if int(wanted) != state.revision:
            raise GatewayError.from_dict({
                "code": "conflict",
                "message": f"only the current revision {state.revision} can be exported, not {wanted}",
                "path": "revision",
            })
    resources = {kind: [r.to_json() for r in state.list(kind)] for kind in KINDS}
    return web.json_response({"revision": state.revision, "hash": state.hash(), "resources": resources})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def create_admin_app(
    store: ConfigStore,
    *,
    secret: str,
    admin_url: str,
    raft_addr: str,
    peers: list[dict[str, str]],
    body_limit: int = 1024 * 1024,
    write_timeout: float = 5.0,
    read_timeout: float = 5.0,
    peer_timeout: float = 1.0,
    forward_timeout: float = 5.0,
    extra_routes: Callable[[web.Application], None] | None = None,
    local_fleet: Callable[[], list[dict[str, Any]]] | None = None,
    source_address: str | None = None,
    limits: Limits | None = None,
) -> web.Application:
    app = web.Application(middlewares=[rejections_middleware, error_middleware, size_middleware, auth_middleware,
                                       rate_middleware, audit_middleware, query_middleware], client_max_size=body_limit)
    install(app, limits or Limits())  # cluster/limits.py: URL, header, connection and per-token rate limits
    app[STORE_KEY] = store
    app[SETTINGS_KEY] = {
        "secret": secret,
        "admin_url": admin_url,
        "raft_addr": raft_addr,
        "peers": peers,
        "write_timeout": write_timeout,
        "read_timeout": read_timeout,
        "peer_timeout": peer_timeout,
        "forward_timeout": forward_timeout,
        "body_limit": body_limit,
        "local_fleet": local_fleet,
        "source_address": source_address,
        "started_at": time.time(),  # /v1/status reports it: uptime for `gwadm top`
    }
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/cluster", get_cluster)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/config", get_config)
    app.router.add_post("/v1/txn", post_txn)
    app.router.add_get("/v1/proxies", get_fleet)
    add_cluster_admin_routes(app)  # /v1/cluster/members, /v1/tokens...: before /v1/{kind}
    add_token_routes(app)
    add_openapi_routes(app)
    add_audit_routes(app)  # /v1/audit, /metrics
    if extra_routes is not None:  # fixed paths (/v1/stream, /v1/proxies/local) must precede /v1/{kind}
        extra_routes(app)
    app.router.add_get("/v1/{kind}", list_resources)
    app.router.add_post("/v1/{kind}", create_resource)
    app.router.add_get("/v1/{kind}/{id}", get_resource)
    app.router.add_put("/v1/{kind}/{id}", put_resource)
    app.router.add_patch("/v1/{kind}/{id}", patch_resource)
    app.router.add_delete("/v1/{kind}/{id}", delete_resource)
    return app
