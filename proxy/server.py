"""The DataPlane object, its traffic listener and its status application (aiohttp).

``DataPlane`` holds the runtime being served and the facts the status endpoints report. Swapping
the runtime is one reference assignment: a request reads ``dp.runtime`` once at its start and uses
that runtime to the end, so it is never served by half of one config and half of another. Balancer
and plugin state move to the new runtime where their config did not change, and the active health
checkers follow the pools (stopped for pools that went away, started for new ones).

Traffic is served by ``listen`` (an asyncio server of ``proxy.http_server.HttpProtocol``, httptools
parsing, pooled upstream connections); each request runs ``serve``: route, plugins, forward. The
status app (``/status /ready /live /metrics``) stays on aiohttp, on its own port.

Modes (docs/architecture.md §5): ``empty`` (no runtime: every request gets 503 JSON, /ready is 503),
``synced`` and ``cached``; the sync client and the cache loader set the mode, ``swap`` only moves
an ``empty`` proxy to ``synced`` when none is given.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.balancer import Pool
from proxy.dns import DnsTargets
from proxy.forward import Forwarder, Picked, upstream_path
from proxy.http_common import Limits, Response, json_error
from proxy.http_server import Exchange, HttpProtocol
from proxy.jwks import JwksCache
from proxy.metrics import ProxyMetrics
from proxy.plugins.base import Later, PluginChain, RequestContext, Services
from proxy.router import Route, normalize_path
from proxy.runtime import Runtime, build_runtime
from proxy.upstream import Upstreams

log = logging.getLogger(__name__)

MODES = ("synced", "cached", "empty")


T = TypeVar("T")
GC_THRESHOLD = (50_000, 50, 100)  # fewer young-generation collections on the request path


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (the ``[fast]`` extra), else the stock loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the event loop this process serves on (for /status)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class DataPlane:
    """State of one proxy process: the runtime, mode and sync facts, shared helpers."""

    def __init__(
        self,
        *,
        proxy_id: str = "proxy",
        clock: Callable[[], float] = time.monotonic,
        services: Services | None = None,
        source_address: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.proxy_id = proxy_id
        self.source_address = source_address
        self.clock = clock
        self.limits = limits or Limits.from_env()
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
        self.session: aiohttp.ClientSession | None = None  # health checks and JWKS, not traffic
        self.upstreams: Upstreams | None = None
        self.forwarder: Forwarder | None = None
        self.connections: set[HttpProtocol] = set()
        self.servers: list[asyncio.Server] = []
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[None]] = set()  # requests that had to wait (dispatch)
        self._own_jwks = False
        self._gc_pending: asyncio.TimerHandle | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the upstream pools and the shared client session, start health checks; idempotent."""
        if self.session is not None:
            return
        self.session = make_session(self.source_address)
        self.upstreams = Upstreams(self.limits, self.source_address)
        self.upstreams.start()
        self.forwarder = Forwarder(self.upstreams, lambda: self.draining)
        self.dns.start()
        if self.services.jwks is None or self._own_jwks:
            self.services.jwks = JwksCache(self.session, clock=self.clock)
            self._own_jwks = True
        if self.runtime is not None:
            for pool in self.runtime.pools.values():
                pool.start(self.session)
        gc.set_threshold(*GC_THRESHOLD)

    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        backlog: int = 1024,
    ) -> asyncio.Server:
        """Serve traffic on ``host:port`` (or on ``sock``); starts the DataPlane if needed.

        ``reuse_port`` lets several processes share the port (SO_REUSEPORT); ``ssl_context``
        makes it an HTTPS listener. Raises OSError when the address cannot be bound.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        scheme = "https" if ssl_context is not None else "http"
        limits = self.limits

        def factory() -> HttpProtocol:
            return HttpProtocol(self, limits, scheme)

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ssl_context, backlog=backlog)
        else:
            server = await loop.create_server(
                factory, host, port, reuse_port=reuse_port or None, ssl=ssl_context, backlog=backlog
            )
        self.draining = False
        self.servers.append(server)
        return server

    async def stop_listening(self, timeout: float = 5.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish for ``timeout``."""
        self.draining = True
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                pass

    async def close(self) -> None:
        """Stop listening, DNS and health checks, close connections and log files; idempotent."""
        if self.servers:
            await self.stop_listening(1.0)
        await self.dns.stop()
        if self.runtime is not None:
            await asyncio.gather(*(p.stop() for p in self.runtime.pools.values()))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._gc_pending is not None:
            self._gc_pending.cancel()
            self._gc_pending = None
        if self.forwarder is not None:
            forwarder, self.forwarder = self.forwarder, None
            await forwarder.close()
        if self.upstreams is not None:
            upstreams, self.upstreams = self.upstreams, None
            await upstreams.close()
        if self.session is not None:
            session, self.session = self.session, None
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
        self._schedule_gc_freeze()
        return installed

    def _schedule_gc_freeze(self) -> None:
        """Shortly after a swap (coalesced), freeze what the heap holds: the runtime's routes, plugins
        and pools are then never scanned again by the cyclic collector, so its collections on the
        request path stay short however large the config. No ``gc.collect()`` first: a full
        collection of a large heap stalls the loop for tens of ms, and a runtime has no reference
        cycles (the old one is freed by reference counting once its last request is done).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._gc_pending is None:
            self._gc_pending = loop.call_later(0.5, self._gc_freeze)

    def _gc_freeze(self) -> None:
        self._gc_pending = None
        gc.freeze()

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

    def dispatch(self, ex: Exchange) -> None:
        """Serve one request with the runtime current at its start.

        The common case runs inline, in the parser callback that completed the request head: route,
        a chain of ``sync`` plugins, and a pooled upstream connection (``Forwarder.start``); the
        relay's end calls ``_respond``. Whatever must wait (a plugin that awaits, a new upstream
        connection, a retry) goes on in a task (``_serve_later``). Nothing here may raise into the
        parser: errors become a 500.
        """
        start = self.clock()
        runtime = self.runtime
        forwarder = self.forwarder
        if runtime is None or forwarder is None:
            ex.send_response(json_error(503, "no_config", "the proxy has no configuration yet"))
            self.metrics.observe_request(None, 503, self.clock() - start)
            return
        path = ex.path
        if "." in path:
            path = normalize_path(path)
        match = runtime.router.match(ex.method, ex.host, path, ex)  # type: ignore[arg-type]
        if match is None:
            route, chain, forward_path = None, runtime.global_chain, ex.raw_path
        else:
            route = match.route
            chain = runtime.chains.get(route.id, runtime.global_chain)
            forward_path = ex.raw_path
            if route.strip_prefix or path is not ex.path:
                forward_path = upstream_path(ex.raw_path, path, match.matched_path, route.strip_prefix,
                                             normalized=path != ex.path)  # fmt: skip
        ctx = RequestContext(ex, self.services, runtime.consumers, ex.method, ex.host, path, ex.proto.client_ip,
                             forward_path, None, None, match, start)  # fmt: skip
        resp: Any = None
        try:
            if chain.plugins:
                if not chain.sync:
                    self._later(ctx, chain, runtime, chain)
                    return
                resp = chain.access_now(ctx)
                if isinstance(resp, Later):
                    self._later(ctx, chain, runtime, resp)
                    return
            if resp is None:
                resp = _unroutable(route, ex)
                if resp is None:
                    assert route is not None
                    picked = forwarder.start(ctx, runtime.pools[route.upstream], chain, self._respond)
                    if picked is not None:
                        self._later(ctx, chain, runtime, None, picked)
                    return
        except Exception:
            log.exception("proxy: request failed")
            resp = json_error(500, "internal_error", "the proxy failed to handle this request")
            if ex.head_sent:
                ex.abort()
                resp = None
        self._respond(ctx, chain, resp)

    def _later(self, ctx: RequestContext, chain: PluginChain, runtime: Runtime,
               access: PluginChain | Later | None, picked: Picked | None = None) -> None:  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._serve_later(ctx, chain, runtime, access, picked))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _serve_later(self, ctx: RequestContext, chain: PluginChain, runtime: Runtime,
                           access: PluginChain | Later | None, picked: Picked | None) -> None:  # fmt: skip
        """The rest of ``dispatch`` for a request that has to wait: ``access`` is the chain whose
        plugins are still to run (or the ``Later`` part of one), None when only forwarding is left."""
        ex: Exchange = ctx.request
        route = ctx.match.route if ctx.match is not None else None
        resp: Any = None
        try:
            if isinstance(access, Later):
                resp = await chain.access_later(ctx, access)
            elif access is not None:
                resp = await access.access(ctx)
            if resp is None:
                resp = _unroutable(route, ex)
                if resp is None and self.forwarder is None:
                    resp = json_error(503, "no_config", "the proxy is shutting down")
                elif resp is None:
                    assert route is not None and self.forwarder is not None
                    resp = await self.forwarder.forward(ctx, runtime.pools[route.upstream], chain, picked=picked)
        except Exception:
            log.exception("proxy: request failed")
            resp = json_error(500, "internal_error", "the proxy failed to handle this request")
            if ex.head_sent:
                ex.abort()
                resp = None
        self._respond(ctx, chain, resp)

    def _respond(self, ctx: RequestContext, chain: PluginChain, resp: Response | None) -> None:
        """The end of every request: the response phase, the answer (unless one was relayed), the
        log phase and the metrics."""
        ex: Exchange = ctx.request
        try:
            if resp is not None:
                if chain.responders or ctx.plugins:
                    chain.response(ctx, resp)
                ctx.status = resp.status
                ctx.bytes_sent = ex.send_response(resp)
            if chain.loggers or ctx.plugins:
                chain.log(ctx)
        except Exception:
            log.exception("proxy: answering the request failed")
            ex.abort()
        match = ctx.match
        self.metrics.observe_request(match.route.id if match is not None else None, ctx.status or 499,
                                     self.clock() - ctx.start)  # fmt: skip

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
            "loop": loop_name(),
            "dns": self.dns.status(),
        }


def _unroutable(route: Route | None, ex: Exchange) -> Response | None:
    """The answer to a request that is not forwarded whatever its plugins said: 404 or 405."""
    if route is None:
        return json_error(404, "no_route", "no route matches this request")
    if ex.method == "CONNECT":
        return json_error(405, "method_not_allowed", "CONNECT is not proxied")
    return None


def make_session(source_address: str | None = None) -> aiohttp.ClientSession:
    """The client session for active health checks and JWKS fetches (traffic does not use it).

    ``source_address`` binds outgoing connections (the chaos harness cuts links by address, and an
    unbound socket would leave from 127.0.0.1, see docs/architecture.md §6).
    """
    local_addr = (source_address, 0) if source_address else None
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=10, local_addr=local_addr)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class TrafficRunner:
    """The traffic listener with the shape of an aiohttp ``AppRunner`` (setup, addresses, cleanup).

    ``cleanup`` drains: stops accepting, lets requests in flight finish for ``shutdown_timeout``,
    then closes the DataPlane (health checks, pooled connections).
    """

    def __init__(self, dp: DataPlane, *, shutdown_timeout: float = 10.0, reuse_port: bool = False,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        self.dp = dp
        self.shutdown_timeout = shutdown_timeout
        self.reuse_port = reuse_port
        self.ssl_context = ssl_context
        self.server: asyncio.Server | None = None

    async def setup(self) -> None:
        await self.dp.start()

    async def start(self, host: str, port: int) -> None:
        self.server = await self.dp.listen(host, port, reuse_port=self.reuse_port, ssl_context=self.ssl_context)

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.server.sockets] if self.server is not None else []

    async def cleanup(self) -> None:
        await self.dp.stop_listening(self.shutdown_timeout)
        await self.dp.close()


def create_status_app(dp: DataPlane) -> web.Application:
    """/status, /ready, /live and /metrics on a separate port (never behind the proxy's routes)."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response(dp.status())

    async def ready(_: web.Request) -> web.Response:
        if dp.runtime is None:
            err = json_error(503, "not_ready", "no configuration installed yet")
            return web.Response(status=503, body=err.body, content_type="application/json")
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
