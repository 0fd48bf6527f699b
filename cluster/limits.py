"""Limits of the admin listener, each with a clear JSON answer (docs/api.md, ``[limits]`` in node.toml).

=========================  =========  ======================================================
limit                      default    answer
=========================  =========  ======================================================
max_url_length             8192       414 ``url_too_long`` (request target, in bytes)
max_header_size            16384      431 ``headers_too_large`` (all header lines together)
max_headers                100        431 ``headers_too_large``
max_connections_per_address 1024      429 ``too_many_connections`` written on the new connection,
                                      which is then closed (the others are not touched)
token_rate / token_burst   1000/s,    429 ``rate_limited`` with ``Retry-After`` (per token ``jti``)
                           2000
=========================  =========  ======================================================

The body limit (413) is ``body_limit`` in node.toml, as before.

Two layers: a middleware checks the configured URL and header limits and answers JSON; aiohttp's
own parser limits sit just above them (``max_line_size``, ``max_field_size``, ``max_headers``) as
the last guard for what cannot even be parsed, and its plain-text 400s are replaced by the same JSON
shapes (``JsonRequestHandler.handle_error``, which also never logs the offending bytes: an
over-long ``Authorization`` line holds a token). A request line over ``max_url_length`` + 1 KiB is
refused by the parser with 414, a header line over the header limit with 431.

Overrides of aiohttp internals (``AppRunner._make_server``, ``Server._kwargs``/``_loop``) are
checked when the runner is built: a node refuses to start on an aiohttp without them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("gwadm.limits")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
URL_SLACK = 1024  # the parser's request-line limit sits this far above max_url_length (method, version)


@dataclass(frozen=True)
class Limits:
    max_url_length: int = 8192
    max_header_size: int = 16384
    max_headers: int = 100
    max_connections_per_address: int = 1024  # above push_limits.MAX_STREAMS_PER_ADDRESS (streams say why)
    token_rate: float = 1000.0  # generous: the chaos workload and benchmarks share one admin token
    token_burst: int = 2000

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        """From the ``[limits]`` table; unknown keys and non-positive values are a ValueError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown [limits] setting(s): {', '.join(unknown)}; expected some of "
                             f"{', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            kind = float if known[name].type in ("float", float) else int
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"[limits] {name} must be a positive number, got {value!r}")
            if kind is int and not isinstance(value, int):
                raise ValueError(f"[limits] {name} must be an integer, got {value!r}")
            values[name] = kind(value)
        return cls(**values)

    def parser_args(self) -> dict[str, int]:
        """aiohttp's parser limits: just above ours, so that ours answer first."""
        return {"max_line_size": self.max_url_length + URL_SLACK, "max_field_size": self.max_header_size,
                "max_headers": self.max_headers + 1}


LIMITS_KEY = web.AppKey("limits", Limits)


def _json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    resp = web.json_response({"error": {"code": code, "message": message, "path": None}}, status=status)
    resp.headers.update(headers)
    return resp


# -- per-request limits (middleware) ------------------------------------------------------------------
@web.middleware
async def size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits = request.app.get(LIMITS_KEY) or Limits()
    if len(request.raw_path) > limits.max_url_length:
        return _json_error(414, "url_too_long", f"the URL is longer than {limits.max_url_length} bytes")
    headers = request.raw_headers
    if len(headers) > limits.max_headers:
        return _json_error(431, "headers_too_large", f"more than {limits.max_headers} header fields")
    size = sum(len(k) + len(v) + 4 for k, v in headers)
    if size > limits.max_header_size:
        return _json_error(431, "headers_too_large", f"the headers are larger than {limits.max_header_size} bytes")
    return await handler(request)


class TokenBuckets:
    """Per-token request rate: a token bucket per ``jti`` (``rate`` per second, ``burst`` deep).

    Bounded: at most ``max_keys`` buckets; when full, the buckets that are full again (idle long
    enough to have refilled) are dropped first, then the oldest."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0.0 if a request may go now, else the seconds until it may."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._trim(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _trim(self, now: float) -> None:
        if len(self._buckets) <= self.max_keys:
            return
        refill = self.burst / self.rate
        for key in [k for k, (_, at) in self._buckets.items() if now - at >= refill]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]


BUCKETS_KEY = web.AppKey("token_buckets", TokenBuckets)


@web.middleware
async def rate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: 429 + Retry-After when this token sends faster than its rate."""
    claims = request.get("auth")
    buckets = request.app.get(BUCKETS_KEY)
    if claims is None or buckets is None:
        return await handler(request)
    key = str(claims.get("jti") or claims.get("sub") or "")
    wait = buckets.take(key)
    if wait > 0:
        request.app[REJECTIONS_KEY]["rate_limited"] += 1
        retry = max(1, math.ceil(wait))
        return _json_error(429, "rate_limited", f"more than {buckets.rate:g} requests/s for this token; "
                           f"retry after {retry}s", **{"Retry-After": str(retry)})
    return await handler(request)


REJECTIONS_KEY = web.AppKey("limit_rejections", dict)


def install(app: web.Application, limits: Limits) -> None:
    """Set up the per-app state the middlewares read (they are in the app's middleware list)."""
    app[LIMITS_KEY] = limits
    app[BUCKETS_KEY] = TokenBuckets(limits.token_rate, limits.token_burst)
    app[REJECTIONS_KEY] = {"url_too_long": 0, "headers_too_large": 0, "too_many_connections": 0,
                           "rate_limited": 0, "bad_request": 0}


# -- connection level: aiohttp's parser errors as JSON, connections per address ---------------------
def _raw_json_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "path": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


class JsonRequestHandler(RequestHandler):
    """aiohttp's connection handler with JSON error answers and a per-address connection cap."""

    __slots__ = ("_gw_peer",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        assert isinstance(server, LimitedServer)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._gw_peer: str | None = None
        if server.per_address.get(host, 0) >= server.limits.max_connections_per_address:
            server.rejections["too_many_connections"] += 1
            assert isinstance(transport, asyncio.Transport)
            transport.write(_raw_json_response(
                429, "Too Many Requests", "too_many_connections",
                f"more than {server.limits.max_connections_per_address} connections from {host}"))
            transport.close()
            self._manager = None  # never registered with the server: connection_lost has nothing to undo
            return
        server.per_address[host] = server.per_address.get(host, 0) + 1
        self._gw_peer = host
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        server = self._manager
        host = getattr(self, "_gw_peer", None)
        if isinstance(server, LimitedServer) and host is not None:
            left = server.per_address.get(host, 1) - 1
            if left > 0:
                server.per_address[host] = left
            else:
                server.per_address.pop(host, None)
            self._gw_peer = None
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response is sent already, cannot send another one with the error")
        server = self._manager
        limits = server.limits if isinstance(server, LimitedServer) else Limits()
        if isinstance(exc, LineTooLong):
            limit = str(exc.args[1]) if len(exc.args) > 1 else ""
            if limit == str(limits.max_url_length + URL_SLACK):
                status, code, text = 414, "url_too_long", f"the request line is longer than {limit} bytes"
            else:
                status, code, text = 431, "headers_too_large", f"a header line is longer than {limit} bytes"
        elif isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
            status, code, text = 431, "headers_too_large", f"more than {limits.max_headers} header fields"
        elif isinstance(exc, HttpProcessingError) and 400 <= status < 500:
            code, text = "bad_request", "malformed HTTP request"
        elif status == 504:
            code, text = "timeout", "the request took too long"
        else:
            code, text = "internal", "internal server error"
        if isinstance(server, LimitedServer):
            key = code if code in server.rejections else "bad_request"
            server.rejections[key] += 1
        # the offending bytes are NOT logged: an over-long Authorization line holds a token
        log.info("refused a request from %s: %s %s (%s)", request.remote, status, code, type(exc).__name__)
        resp = _json_error(status, code, text)
        resp.force_close()
        return resp


class LimitedServer(Server):
    """Creates ``JsonRequestHandler``s; keeps the per-address connection counts."""

    limits: Limits
    per_address: dict[str, int]
    rejections: dict[str, int]

    def __call__(self) -> RequestHandler:
        return JsonRequestHandler(self, loop=self._loop, **self._kwargs)


class LimitedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        args: dict[str, Any] = {**kwargs, **limits.parser_args()}
        super().__init__(app, **args)
        self.limits = limits

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        for attr in ("_kwargs", "_loop"):
            if not hasattr(server, attr):
                raise RuntimeError(f"this aiohttp's Server has no {attr}: cluster/limits.py needs updating")
        server.__class__ = LimitedServer
        assert isinstance(server, LimitedServer)
        server.limits = self.limits
        server.per_address = {}
        server.rejections = self._app.get(REJECTIONS_KEY) or {}
        return server


def make_runner(app: web.Application, limits: Limits, **kwargs: Any) -> web.AppRunner:
    """The node's runner: ``web.AppRunner`` with the parser limits and the JSON error handler."""
    if not callable(getattr(web.AppRunner, "_make_server", None)):
        raise RuntimeError("this aiohttp's AppRunner has no _make_server: cluster/limits.py needs updating")
    if app.get(LIMITS_KEY) is None:
        install(app, limits)
    return LimitedAppRunner(app, limits, **kwargs)
