"""Admin API routes of service registration (docs/discovery.md).

    PUT    /v1/upstreams/{id}/targets/{host}:{port}            register or renew {"weight","ttl","metadata"}
    POST   /v1/upstreams/{id}/targets/{host}:{port}/heartbeat  renew only: no Raft entry, no revision
    DELETE /v1/upstreams/{id}/targets/{host}:{port}            deregister
    GET    /v1/upstreams/{id}/targets                          static and registered targets with liveness
    POST   /v1/discovery/heartbeats  {"ids": [...], "ages": [...]}  a follower's batch, to the leader (admin);
                                                                 ages: seconds since the follower heard each
    POST   /v1/discovery/liveness    {"ids": [...]}            seconds since last heartbeat, from the leader
    GET    /v1/discovery                                       this node's discovery counters

Role ``registrar`` may only use the first three (``registrar_allowed``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.discovery import Discovery, NotLeader
from cluster.raft import NoQuorum
from cluster.timeouts import request_timeout
from gateway import registry
from gateway.errors import GatewayError, NotFound, ValidationError
from gateway.model import check_id
from gateway.state import ConfigState

DISCOVERY_KEY = web.AppKey("discovery", Discovery)
_TARGET_PATH = re.compile(r"^/v1/upstreams/[^/]+/targets/[^/]+(/heartbeat)?$")
MAX_BATCH = 10_000
MAX_AGE = 3600.0  # seconds: a forwarded heartbeat older than that is not worth renewing anything


def registrar_allowed(request: web.Request) -> bool:
    """What a ``registrar`` token may do: register, renew, heartbeat and deregister targets."""
    match = _TARGET_PATH.match(request.path)
    if match is None:
        return False
    if match.group(1):
        return request.method == "POST"
    return request.method in ("PUT", "DELETE")


def _address(request: web.Request) -> tuple[str, str, int]:
    upstream = request.match_info["id"]
    check_id(upstream, "upstreams")
    host, port = registry.parse_target(request.match_info["target"], f"upstreams[{upstream}].targets")
    return upstream, host, port


def _raise_if_failed(result: dict[str, Any]) -> dict[str, Any]:
    if not result.get("ok"):
        raise GatewayError.from_dict(result["error"])
    return result


async def _json(request: web.Request) -> Any:
    """The JSON body, ``{}`` when there is none (a PUT may rely on the defaults... except ttl)."""
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="request body must be JSON (Content-Type: application/json)")
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError.from_dict({"code": "bad_request", "message": f"malformed JSON: {exc}"}) from exc


async def put_target(request: web.Request) -> web.Response:
    timeout = request_timeout(request, request.app[SETTINGS_KEY]["write_timeout"])
    upstream, host, port = _address(request)
    body = await _json(request)
    spec = registry.normalize_registration(upstream, host, port, body)  # fast, precise 422
    store = request.app[STORE_KEY]
    request_id = request.headers.get("X-Request-Id") or store.new_request_id()
    request["request_id"] = request_id
    cmd = {"type": "reg_put", "request_id": request_id, "upstream": upstream, "host": host, "port": port,
           **spec, "now": time.time()}
    result = _raise_if_failed(await store.registry_command(cmd, timeout))
    discovery = request.app[DISCOVERY_KEY]
    rid = result["id"]
    discovery.heartbeat(rid)  # a registration or renewal counts as a heartbeat
    reg = store.state.get(registry.KIND, rid)
    view = registry.registration_view(reg, time.time(), 0.0) if reg is not None else {"id": rid}
    view.update(id=rid, upstream=upstream, changed=result.get("changed", True), revision=result["revision"])
    return web.json_response(view, status=201 if result.get("created") else 200)


async def heartbeat_target(request: web.Request) -> web.Response:
    upstream, host, port = _address(request)
    rid = registry.registration_id(upstream, host, port)
    discovery = request.app[DISCOVERY_KEY]
    outcome = discovery.heartbeat(rid)
    if outcome == "unknown":
        # A registration just committed through another node may not be applied here yet: 404
        # only once a linearizable read shows it absent (an integration run got a 404 from a
        # follower for a registration that another node had acknowledged milliseconds before).
        await request.app[STORE_KEY].barrier(request_timeout(request, request.app[SETTINGS_KEY]["read_timeout"]))
        outcome = discovery.heartbeat(rid)
    if outcome == "unknown":
        raise NotFound(f"{host}:{port} is not registered in upstream {upstream!r}; register it with PUT",
                       f"upstreams[{upstream}].targets[{request.match_info['target']}]")
    if outcome == "no_quorum":
        raise NoQuorum("this node has no quorum; heartbeat another node")
    if outcome == "leader_unreachable":
        return web.json_response({"error": {
            "code": "unavailable", "message": "this node cannot reach the leader's admin API; heartbeat another node",
            "path": None, "retryable": True}}, status=503)
    reg = request.app[STORE_KEY].state.get(registry.KIND, rid)
    return web.json_response({"ok": True, "id": rid, "ttl": reg.spec["ttl"] if reg is not None else None})


async def delete_target(request: web.Request) -> web.Response:
    timeout = request_timeout(request, request.app[SETTINGS_KEY]["write_timeout"])
    upstream, host, port = _address(request)
    store = request.app[STORE_KEY]
    request_id = request.headers.get("X-Request-Id") or store.new_request_id()
    request["request_id"] = request_id
    cmd = {"type": "reg_delete", "request_id": request_id, "upstream": upstream, "host": host, "port": port}
    result = _raise_if_failed(await store.registry_command(cmd, timeout))
    return web.json_response({"deregistered": result["id"], "revision": result["revision"]})


async def registered_view(request: web.Request, state: ConfigState, upstream: str,
                          timeout: float | None = None) -> list[dict[str, Any]]:
    """The registered targets of ``upstream`` with age and (from the leader, within ``timeout``) expiry."""
    regs = [r for r in state.list(registry.KIND) if r.spec.get("upstream") == upstream]
    if not regs:
        return []
    ages = await request.app[DISCOVERY_KEY].fetch_liveness([r.id for r in regs], timeout)
    now = time.time()
    out = []
    for reg in regs:
        view = registry.registration_view(reg, now, ages.get(reg.id))
        view["id"] = reg.id
        out.append(view)
    return out


async def list_targets(request: web.Request) -> web.Response:
    timeout = request_timeout(request, request.app[SETTINGS_KEY]["read_timeout"])
    deadline = time.monotonic() + timeout  # the barrier and the leader's liveness answer share it
    upstream = request.match_info["id"]
    check_id(upstream, "upstreams")
    store = request.app[STORE_KEY]
    if request.query.get("consistency", "linearizable") == "stale":
        state = store.state
    else:
        state = await store.barrier(timeout)
    res = state.get("upstreams", upstream)
    if res is None:
        raise NotFound(f"upstreams {upstream!r} does not exist", f"upstreams[{upstream}]")
    static = [{**dict(t), "registered": False} for t in res.spec["targets"]]
    registered = await registered_view(request, state, upstream, max(0.05, deadline - time.monotonic()))
    return web.json_response({"upstream": upstream, "static": static, "registered": registered,
                              "liveness_known": request.app[DISCOVERY_KEY].leading or not registered
                              or any(r["expires_in"] is not None for r in registered),
                              "revision": state.revision})


async def _ids(request: web.Request) -> list[str]:
    return _ids_in(await _json(request))


def _ids_in(body: Any) -> list[str]:
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_BATCH or not all(isinstance(i, str) for i in ids):
        raise ValidationError(f"must be a list of at most {MAX_BATCH} registration ids", "ids")
    return ids


async def batch_heartbeats(request: web.Request) -> web.Response:
    if request["auth"].get("role") != "admin":
        return web.json_response({"error": {"code": "forbidden", "message": "needs an admin token", "path": None}},
                                 status=403)
    body = await _json(request)
    ids = _ids_in(body)
    ages = body.get("ages")
    if ages is not None and (
        not isinstance(ages, list) or len(ages) != len(ids)
        or not all(isinstance(a, int | float) and not isinstance(a, bool) and 0 <= a <= MAX_AGE for a in ages)
    ):
        raise ValidationError(f"must be a list of one age per id, each 0 to {MAX_AGE} seconds", "ages")
    try:
        count = request.app[DISCOVERY_KEY].leader_heartbeats(ids, [float(a) for a in ages] if ages else None)
    except NotLeader as exc:
        return web.json_response({"error": {"code": "not_leader", "message": str(exc), "path": None}}, status=409)
    return web.json_response({"ok": True, "renewed": count})


async def liveness(request: web.Request) -> web.Response:
    ids = await _ids(request)
    discovery = request.app[DISCOVERY_KEY]
    return web.json_response({"leading": discovery.leading, "ages": discovery.liveness(ids)})


async def discovery_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[DISCOVERY_KEY].status())


def add_discovery_routes(app: web.Application, discovery: Discovery) -> None:
    app[DISCOVERY_KEY] = discovery
    app.router.add_get("/v1/discovery", discovery_status)
    app.router.add_post("/v1/discovery/heartbeats", batch_heartbeats)
    app.router.add_post("/v1/discovery/liveness", liveness)
    app.router.add_get("/v1/upstreams/{id}/targets", list_targets)
    app.router.add_put("/v1/upstreams/{id}/targets/{target}", put_target)
    app.router.add_post("/v1/upstreams/{id}/targets/{target}/heartbeat", heartbeat_target)
    app.router.add_delete("/v1/upstreams/{id}/targets/{target}", delete_target)
