"""The DataPlane object and its two aiohttp applications (traffic, status).

``DataPlane`` holds the runtime being served and the facts the status endpoints report. Swapping
the runtime is one reference assignment: a request reads ``dp.runtime`` once at its start and uses
that runtime to the end, so it is never served by half of one config and half of another. Balancer
and plugin state move to the new runtime where their config did not change, and the active health
checkers follow the pools (stopped for pools that went away, started for new ones).

Modes (DESIGN.md §5): ``empty`` (no runtime: every request gets 503 JSON, /ready is 503),
``synced`` and ``cached``; the sync client and the cache loader set the mode, ``swap`` only moves
an ``empty`` proxy to ``synced`` when none is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.balancer import Pool
from proxy.dns import DnsTargets
from proxy.forward import Forwarder, make_session, upstream_headers, upstream_path
from proxy.jwks import JwksCache
from proxy.metrics import ProxyMetrics
from proxy.plugins.base import RequestContext, Services, json_error
from proxy.router import normalize_path
from proxy.runtime import Runtime, build_runtime

log = logging.getLogger(__name__)

MODES = ("synced", "cached", "empty")


class DataPlane:
    """State of one proxy process: the runtime, mode and sync facts, shared helpers."""

    def __init__(
        self,
        *,
        proxy_id: str = "proxy",
        clock: Callable[[], float] = time.monotonic,
        services: Services | None = None,
        source_address: str | None = None,
    ) -> None:
        self.proxy_id = proxy_id
        self.source_address = source_address
        self.clock = clock
        self.runtime: Runtime | None = None
        self.mode = "empty"
        self.revision = 0
        self.hash: str | None = None
        self.connected_cp: str | None = None
        self.cp_endpoints: list[str] = []  # every CP stream URL the sync client knows (seeds + learned)
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.services = services or Services(clock=clock)
        self.metrics = ProxyMetrics(self)
        self.dns = DnsTargets.from_env(source_address)  # named targets -> addresses (proxy/dns.py)
        self.metrics.registry.register(self.dns.collector())
        self.session: aiohttp.ClientSession | None = None
        self.forwarder: Forwarder | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._own_jwks = False

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the shared client session and start health checks; idempotent."""
        if self.session is not None:
            return
        self.session = make_session(self.source_address)
        self.forwarder = Forwarder(self.session)
        self.dns.start()
        if self.services.jwks is None or self._own_jwks:
            self.services.jwks = JwksCache(self.session, clock=self.clock)
            self._own_jwks = True
        if self.runtime is not None:
            for pool in self.runtime.pools.values():
                pool.start(self.session)

    async def close(self) -> None:
        """Stop health checks, close the session and log files; idempotent."""
        await self.dns.stop()
        if self.runtime is not None:
            await asyncio.gather(*(p.stop() for p in self.runtime.pools.values()))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.session is not None:
            session, self.session = self.session, None
            self.forwarder = None
            await session.close()
        for sink in self.services.log_sinks.values():
            sink.close()
        self.services.log_sinks.clear()

    # -- config -----------------------------------------------------------------------------------------

    def swap(self, runtime: Runtime, *, mode: str | None = None) -> Runtime:
        """Install ``runtime`` (after handing over state from the current one); returns it."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        installed = runtime.handover(self.runtime)
        self.dns.attach(installed.pools.values())  # named targets get their known addresses now
        old, self.runtime = self.runtime, installed
        self.revision, self.hash = installed.revision, installed.hash
        if mode is not None:
            self.mode = mode
        elif self.mode == "empty":
            self.mode = "synced"
        self._reconcile_health(old, installed)
        return installed

    def install(
        self, snapshot: Mapping[str, Any], *, revision: int, hash: str, mode: str | None = None
    ) -> Runtime:
        """Build and swap in one call, timing it for the apply-duration histogram."""
        started = time.perf_counter()
        runtime = build_runtime(snapshot, revision=revision, hash=hash, clock=self.clock)
        installed = self.swap(runtime, mode=mode)
        self.metrics.apply_duration.observe(time.perf_counter() - started)
        return installed

    def mark_synced(self, cp: str | None) -> None:
        """Record contact with a control-plane node (for /status and the lag metric)."""
        self.connected_cp = cp
        self.last_sync = self.clock()

    def _reconcile_health(self, old: Runtime | None, new: Runtime) -> None:
        kept = {id(p) for p in new.pools.values()}
        gone: list[Pool] = [p for p in (old.pools.values() if old else ()) if id(p) not in kept]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            return
        for pool in gone:
            if pool.checking:
                task = loop.create_task(pool.stop())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        if self.session is not None:
            for pool in new.pools.values():
                pool.start(self.session)

    # -- traffic ------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one proxied request with the runtime current at its start."""
        start = self.clock()
        runtime = self.runtime
        if runtime is None or self.forwarder is None:
            self.metrics.observe_request(None, 503, self.clock() - start)
            return json_error(503, "no_config", "the proxy has no configuration yet")
        host = request.headers.get("Host", "")
        path = normalize_path(request.path)
        match = runtime.router.match(request.method, host, path, request.headers)
        raw = request.rel_url.raw_path
        client_ip = request.remote or ""
        ctx = RequestContext(
            request=request,
            services=self.services,
            consumers=runtime.consumers,
            method=request.method,
            host=host,
            path=path,
            client_ip=client_ip,
            upstream_path=upstream_path(
                raw,
                path,
                match.matched_path if match else "",
                bool(match and match.route.strip_prefix),
                normalized=path != request.path,
            ),
            upstream_query=MultiDict(request.query),
            upstream_headers=upstream_headers(request, client_ip),
            match=match,
            start=start,
            started_at=self.services.wall(),
        )
        chain = runtime.chain_for(match.route.id if match else None)
        resp: web.StreamResponse | None = None
        try:
            resp = await chain.access(ctx)
            if resp is None:
                if match is None:
                    resp = json_error(404, "no_route", "no route matches this request")
                else:
                    pool = runtime.pools[match.route.upstream]
                    resp = await self.forwarder.forward(ctx, pool, lambda r: chain.response(ctx, r))
        except Exception:
            log.exception("proxy: request failed")
            resp = json_error(500, "internal_error", "the proxy failed to handle this request")
        finally:
            if resp is not None and not resp.prepared:
                chain.response(ctx, resp)
                ctx.status = resp.status
                body = getattr(resp, "body", None)
                ctx.bytes_sent = len(body) if isinstance(body, bytes | bytearray) else 0
            chain.log(ctx)
            self.metrics.observe_request(ctx.route_id, ctx.status or 499, self.clock() - start)
        return resp

    # -- status ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        return {
            "proxy_id": self.proxy_id,
            "mode": self.mode,
            "revision": self.revision,
            "hash": self.hash,
            "connected_cp": self.connected_cp,
            "cp_endpoints": list(self.cp_endpoints),
            "seconds_since_sync": None if self.last_sync is None else round(self.clock() - self.last_sync, 3),
            "routes": len(rt.router) if rt is not None else 0,
            "upstreams": {uid: pool.health() for uid, pool in sorted(rt.pools.items())} if rt is not None else {},
            "warnings": list(rt.warnings) if rt is not None else [],
            "last_error": self.last_error,
            "dns": self.dns.status(),
        }


def create_proxy_app(dp: DataPlane) -> web.Application:
    """The traffic application: every path and method goes to ``dp.handle``.

    It owns the DataPlane's lifecycle: the client session opens on startup and closes on cleanup.
    """
    app = web.Application(handler_args={"max_field_size": 16384})

    async def on_startup(_: web.Application) -> None:
        await dp.start()

    async def on_cleanup(_: web.Application) -> None:
        await dp.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", dp.handle)
    return app


def create_status_app(dp: DataPlane) -> web.Application:
    """/status, /ready, /live and /metrics on a separate port (never behind the proxy's routes)."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response(dp.status())

    async def ready(_: web.Request) -> web.Response:
        if dp.runtime is None:
            return json_error(503, "not_ready", "no configuration installed yet")
        return web.json_response({"ready": True, "mode": dp.mode, "revision": dp.revision})

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=dp.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    app.router.add_get("/metrics", metrics)
    return app
