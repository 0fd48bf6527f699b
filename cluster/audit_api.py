"""Audit log and rejection metrics of the admin API (docs/api.md).

* ``audit_middleware`` (after authentication) remembers, for the duration of a write request, who
  makes it (token subject, ``jti``, role, client address, request id) in a context variable;
  ``stamp(cmd)`` -- called by ``ConfigStore`` for every command it proposes -- adds that, with the
  proposing node's clock, to audited commands. The state machine turns it into records
  (gateway/audit.py): deterministic on every replica, because the time travels in the command.
* ``GET /v1/audit`` (admin role): ``?subject=&kind=&since=<revision>&after=<seq>&limit=``.
* ``rejections_middleware`` (outermost) counts writes answered 401/403/409/422 per reason;
  ``GET /metrics`` (any admin or viewer token) exposes them with prometheus-client, together with
  the limits' refusals and the audit log's size. Labels are fixed words, never request data.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.audit import AUDITED_COMMANDS
from gateway.errors import ValidationError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CALLER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("gwadm_audit_caller", default=None)
REJECTED_REASONS = {401: "unauthorized", 403: "forbidden", 409: "conflict", 422: "invalid"}
_NUMBER = re.compile(r"[0-9]{1,18}")
METRICS_KEY = web.AppKey("admin_metrics", dict)


def stamp(cmd: dict[str, Any]) -> dict[str, Any]:
    """``cmd`` with ``audit`` metadata if it is an audited command proposed by an admin request."""
    caller = CALLER.get()
    if caller is None or cmd.get("type") not in AUDITED_COMMANDS or "audit" in cmd:
        return cmd
    return {**cmd, "audit": {**caller, "time": round(time.time(), 3)}}


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    claims = request.get("auth")
    if request.method in READ_ONLY_METHODS or not claims:
        return await handler(request)
    caller = {
        "subject": str(claims.get("sub") or "")[:200] or None,
        "jti": str(claims.get("jti") or "")[:200] or None,
        "role": str(claims.get("role") or ""),
        "client": request.remote,
        "request_id": (request.headers.get("X-Request-Id") or "")[:128] or None,
    }
    token = CALLER.set(caller)
    try:
        return await handler(request)
    finally:
        CALLER.reset(token)


@web.middleware
async def rejections_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final status of every write, also the auth middleware's 401/403."""
    resp = await handler(request)
    if request.method not in READ_ONLY_METHODS and resp.status in REJECTED_REASONS:
        metrics = request.app.get(METRICS_KEY)
        if metrics is not None:
            metrics["rejected"].labels(reason=REJECTED_REASONS[resp.status]).inc()
    return resp


def _int_query(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _NUMBER.fullmatch(raw):
        raise ValidationError("must be a non-negative integer", name)
    return int(raw)


async def get_audit(request: web.Request) -> web.Response:
    if request["auth"].get("role") != "admin":
        return web.json_response({"error": {"code": "forbidden", "message": "the audit log needs an admin token",
                                            "path": None}}, status=403)
    from cluster.app_keys import SETTINGS_KEY, STORE_KEY  # late: app_keys imports the store, which imports us

    store = request.app[STORE_KEY]
    if request.query.get("consistency", "linearizable") != "stale":
        await store.barrier(request.app[SETTINGS_KEY]["read_timeout"])
    subject, kind = request.query.get("subject"), request.query.get("kind")
    since = _int_query(request, "since", None)
    after = _int_query(request, "after", 0) or 0
    limit = min(_int_query(request, "limit", 1000) or 1000, 10_000)
    log = store.replicated.audit
    items = [r for r in log.query(subject=subject, kind=kind, since=since, limit=log.capacity) if r["seq"] > after]
    return web.json_response({"items": items[-limit:], "dropped": log.dropped, "next_seq": log.next_seq,
                              "revision": store.state.revision})


class _Collector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from cluster.app_keys import STORE_KEY
        from cluster.limits import REJECTIONS_KEY

        limits = CounterMetricFamily("gwadm_admin_limit_refusals", "Requests refused by a limit of the admin "
                                     "listener (cluster/limits.py)", labels=["limit"])
        for name, count in sorted((self.app.get(REJECTIONS_KEY) or {}).items()):
            limits.add_metric([name], count)
        yield limits
        store = self.app.get(STORE_KEY)
        log = getattr(getattr(store, "replicated", None), "audit", None)
        if log is not None:
            yield GaugeMetricFamily("gwadm_audit_records", "Records in the replicated audit log", len(log.records))
            dropped = CounterMetricFamily("gwadm_audit_dropped", "Audit records dropped (oldest first)")
            dropped.add_metric([], log.dropped)
            yield dropped


async def get_metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    return web.Response(body=generate_latest(metrics["registry"]),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_audit_routes(app: web.Application) -> None:
    registry = CollectorRegistry()
    rejected = Counter("gwadm_admin_rejected_writes", "Admin writes answered 401/403/409/422, by reason",
                       ["reason"], registry=registry)
    for reason in REJECTED_REASONS.values():
        rejected.labels(reason=reason)  # every series exists from the start, at 0
    registry.register(_Collector(app))
    app[METRICS_KEY] = {"registry": registry, "rejected": rejected}
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_get("/metrics", get_metrics)
