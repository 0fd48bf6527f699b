"""Helpers for proxy tests: normalized resource specs (contracts §1), snapshots, real servers.

Specs are written the way the control plane hands them over: every field present with its
default, so the data plane is tested against the real input shape.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.server import DataPlane, create_status_app

PLUGIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "key-auth": {"header": "apikey", "query_param": "apikey", "hide_credentials": False},
    "jwt-auth": {
        "header": "authorization", "algorithms": ["HS256", "RS256", "ES256"], "claims_to_verify": ["exp"],
        "issuer": None, "audience": None, "leeway": 0, "key_claim": "iss", "jwks_url": None,
        "jwks_cache_ttl": 300,
    },
    "rate-limit": {"window": 1.0, "burst": None, "key": "ip", "header_name": None},
    "ip-restriction": {"allow": [], "deny": []},
    "cors": {
        "origins": ["*"], "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "headers": [], "exposed_headers": [], "credentials": False, "max_age": 3600,
    },
    "request-transformer": {"add_headers": {}, "remove_headers": [], "rewrite_path": None},
    "request-id": {"header": "x-request-id", "echo_downstream": True},
    "access-log": {
        "path": None, "sample_rate": 1.0,
        "fields": ["time", "request_id", "client_ip", "method", "host", "path", "status", "latency_ms",
                   "route", "upstream", "target", "consumer", "bytes_sent"],
    },
}


def plugin_config(name: str, **config: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PLUGIN_DEFAULTS[name]), **config}


def plugins(**by_name: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``plugins(rate_limit={"limit": 2})`` -> normalized ``{"rate-limit": {...}}``."""
    return {k.replace("_", "-"): plugin_config(k.replace("_", "-"), **v) for k, v in by_name.items()}


def upstream(*targets: tuple[str, int] | tuple[str, int, int], **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targets": [{"host": t[0], "port": t[1], "weight": t[2] if len(t) > 2 else 1} for t in targets],
        "lb": "round_robin",
        "hash_on": None,
        "health": {"passive": {"max_failures": 3, "cooldown": 10.0}, "active": None},
        "timeouts": {"connect": 2.0, "read": 30.0},
        "retries": 1,
    }
    spec.update(over)
    return spec


def route(upstream_id: str = "u1", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "paths": [], "hosts": [], "methods": [], "headers": {}, "priority": 0,
        "upstream": upstream_id, "strip_prefix": False, "plugins": {},
    }
    spec.update(over)
    return spec


def consumer(key_auth: list[str] = (), jwt_auth: list[dict[str, Any]] = (), **over: Any) -> dict[str, Any]:  # type: ignore[assignment]
    creds = [
        {"key": c["key"], "algorithm": c.get("algorithm", "HS256"), "secret": c.get("secret"),
         "public_key": c.get("public_key")}
        for c in jwt_auth
    ]
    spec: dict[str, Any] = {
        "username": None,
        "credentials": {"key-auth": [{"key": k} for k in key_auth], "jwt-auth": creds},
        "plugins": {},
    }
    spec.update(over)
    return spec


def global_plugin(name: str, enabled: bool = True, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": plugin_config(name, **config), "enabled": enabled}


def snapshot(revision: int = 1, **kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ``ConfigState.to_snapshot()``-shaped dict from ``kind={id: spec}`` arguments."""
    resources: dict[str, dict[str, Any]] = {k: {} for k in ("upstreams", "routes", "consumers", "plugins")}
    for kind, items in kinds.items():
        for rid, spec in items.items():
            resources[kind][rid] = {"spec": spec, "created_revision": revision, "mod_revision": revision}
    return {"revision": revision, "resources": resources}


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def free_dead_port() -> socket.socket:
    """A bound, non-listening socket: connecting to its port is refused while it stays open."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


ServeFn = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Start an aiohttp app on 127.0.0.1:<ephemeral>; returns the port; all closed at teardown."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


class Proxy:
    """A DataPlane served on real ports (traffic + status)."""

    def __init__(self, dp: DataPlane, port: int, status_port: int) -> None:
        self.dp = dp
        self.port = port
        self.status_port = status_port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.status_port}{path}"

    def install(self, snap: dict[str, Any], revision: int | None = None) -> None:
        rev = snap["revision"] if revision is None else revision
        self.dp.install(snap, revision=rev, hash=f"h{rev}")


ListenFn = Callable[[DataPlane], Awaitable[int]]


@pytest.fixture
async def listen() -> AsyncIterator[ListenFn]:
    """Start a DataPlane's traffic listener on 127.0.0.1:<ephemeral>; closed at teardown."""
    planes: list[DataPlane] = []

    async def start(dp: DataPlane) -> int:
        server = await dp.listen("127.0.0.1", 0)
        planes.append(dp)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for dp in reversed(planes):
        await dp.close()


@pytest.fixture
async def proxy(serve: ServeFn, listen: ListenFn) -> Proxy:
    dp = DataPlane(proxy_id="test-proxy")
    port = await listen(dp)
    status_port = await serve(create_status_app(dp))
    return Proxy(dp, port, status_port)


def echo_app(name: str = "up") -> web.Application:
    """An upstream that answers JSON describing the request it received."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "name": name,
                "method": request.method,
                "path": request.rel_url.raw_path,
                "query": request.rel_url.raw_query_string,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
