"""Streaming forwarding of one request to an upstream target.

Bodies are streamed both ways through one shared ``aiohttp.ClientSession`` (connection reuse,
no per-request setup): the request body is handed to the client as the server's stream reader and
the response body is copied chunk by chunk, so memory per request stays bounded whatever the size.
The session must be created with ``auto_decompress=False`` (see ``make_session``) so encoded bodies
pass through untouched with their ``Content-Encoding``.

Retries: a failure to *connect* (refused, unreachable, connect timeout) is retried on another
target, up to the upstream's ``retries``; the body has not been read then, so any method is safe.
A failure after the request was sent, before any response header came back, is retried only for
GET/HEAD/OPTIONS without a body (an instance that died under a request: docs/discovery.md); for
other methods it may have had effects, so it is a 502. A read timeout is never retried.

Errors are the proxy's JSON bodies: 502 upstream failure, 503 no eligible target, 504 timeout.
Every failed attempt counts against the target's passive health, as do 502/503/504 answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.balancer import Pool, Target
from proxy.plugins.base import RequestContext, json_error

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
UNHEALTHY_STATUSES = frozenset({502, 503, 504})
RETRY_AFTER_SEND = frozenset({"GET", "HEAD", "OPTIONS"})
# Headers aiohttp would otherwise add on its own; the upstream should see what the client sent.
SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def make_session(source_address: str | None = None) -> aiohttp.ClientSession:
    """The one client session of a proxy: no connection cap, no decompression, no cookies.

    ``source_address`` binds outgoing connections (the chaos harness cuts links by address, and an
    unbound socket would leave from 127.0.0.1, see DESIGN.md §6).
    """
    local_addr = (source_address, 0) if source_address else None
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=10, local_addr=local_addr)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """The fixed hop-by-hop names plus those listed in ``Connection`` (lower-cased)."""
    names = set(HOP_BY_HOP)
    for value in headers.getall("Connection", []):
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop headers (repeated headers kept in order)."""
    drop = hop_by_hop(headers)
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def upstream_headers(request: web.Request, client_ip: str) -> CIMultiDict[str]:
    """Headers for the upstream request before plugins run: end-to-end + X-Forwarded-*."""
    headers = end_to_end(request.headers)
    for name in ("Host", "Expect", "Content-Length"):
        headers.popall(name, None)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    prior = ", ".join(request.headers.getall("X-Forwarded-For", []))
    headers["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def upstream_path(raw: str, decoded: str, matched: str, strip: bool, *, normalized: bool = False) -> str:
    """The (percent-encoded) path for the upstream, with the matched prefix removed if asked.

    ``raw`` is the path as received, ``decoded`` the decoded path that was routed on. When routing
    removed dot segments (``normalized``), the routed path is re-encoded and sent instead of the
    raw one, so the upstream acts on the path that was routed.
    """
    if normalized:
        raw = quote(decoded, safe=_PATH_SAFE)
    if not strip or not matched:
        return raw
    if raw.startswith(matched):
        rest = raw[len(matched):]
    else:  # the prefix was written encoded differently in the request; work on the decoded form
        rest = quote(decoded[len(matched):], safe=_PATH_SAFE)
    return rest if rest.startswith("/") else "/" + rest


def _query_string(ctx: RequestContext) -> str:
    if ctx.upstream_query == ctx.request.query:
        return ctx.request.rel_url.raw_query_string
    return URL.build(query=ctx.upstream_query).raw_query_string


class Forwarder:
    """Sends requests upstream with ``session``; one per DataPlane."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def forward(
        self,
        ctx: RequestContext,
        pool: Pool,
        on_response: Callable[[web.StreamResponse], None],
    ) -> web.StreamResponse:
        """Forward ``ctx`` to a target of ``pool``.

        Returns either a response already streamed to the client (prepared) or an unprepared
        error response for the caller to finish. ``on_response`` may edit the headers of a
        streamed response before they are sent.
        """
        request = ctx.request
        settings = pool.settings
        ctx.upstream = pool.id
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        key = None
        if settings.hash_on is not None:
            key = pool.hash_key(request.headers, request.cookies, ctx.client_ip)
        query = _query_string(ctx)
        path_qs = ctx.upstream_path + (f"?{query}" if query else "")
        data = request.content if request.body_exists else None
        tried: set[Target] = set()
        timed_out = False
        for _attempt in range(settings.retries + 1):
            target = pool.pick(key, tried)
            if target is None:
                break
            tried.add(target)
            ctx.target = target.address
            url = URL(f"http://{target.address}{path_qs}", encoded=True)
            pool.acquire(target)
            try:
                upstream = await self.session.request(
                    ctx.method,
                    url,
                    headers=ctx.upstream_headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                    skip_auto_headers=SKIP_AUTO,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                pool.release(target)
                pool.report_failure(target)
                timed_out = isinstance(exc, aiohttp.ConnectionTimeoutError)
                log.info("upstream %s: connect to %s failed: %s", pool.id, target.address, exc)
                continue
            except (TimeoutError, aiohttp.ServerTimeoutError):
                pool.release(target)
                pool.report_failure(target)
                return json_error(504, "upstream_timeout", f"upstream {pool.id} did not answer in time")
            except (aiohttp.ClientError, OSError) as exc:
                pool.release(target)
                if not _client_closed(request):  # a client that hung up mid-upload is not the target's fault
                    pool.report_failure(target)
                log.info("upstream %s: request to %s failed: %s", pool.id, target.address, exc)
                if ctx.method in RETRY_AFTER_SEND and data is None and not _client_closed(request):
                    continue  # no response began and the request is idempotent: another target
                return json_error(502, "upstream_error", f"upstream {pool.id} failed: {type(exc).__name__}")
            return await self._relay(ctx, pool, target, upstream, on_response)
        if not tried:
            return json_error(503, "no_healthy_target", f"upstream {pool.id} has no healthy target")
        if timed_out:
            return json_error(504, "upstream_timeout", f"connecting to upstream {pool.id} timed out")
        return json_error(502, "upstream_unavailable", f"upstream {pool.id}: no target accepted the connection")

    async def _relay(
        self,
        ctx: RequestContext,
        pool: Pool,
        target: Target,
        upstream: aiohttp.ClientResponse,
        on_response: Callable[[web.StreamResponse], None],
    ) -> web.StreamResponse:
        """Stream the upstream answer to the client, then settle health and counters.

        Read errors (upstream) and write errors (client gone) are told apart: only the former
        count against the target's health.
        """
        ok = upstream.status not in UNHEALTHY_STATUSES
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        try:
            resp.headers.extend(end_to_end(upstream.headers))
            on_response(resp)
            ctx.status = upstream.status
            try:
                await resp.prepare(ctx.request)
            except ConnectionResetError:
                return _client_gone(ctx, target, resp)
            while True:
                try:
                    chunk = await upstream.content.readany()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    # Headers are gone already: the only honest signal left is a broken connection.
                    ok = False
                    log.info("upstream %s: body from %s broke off: %s", pool.id, target.address, exc)
                    _abort(ctx.request)
                    return resp
                if not chunk:
                    break
                try:
                    await resp.write(chunk)
                except ConnectionResetError:  # includes aiohttp.ClientConnectionResetError
                    return _client_gone(ctx, target, resp)
                ctx.bytes_sent += len(chunk)
            try:
                await resp.write_eof()
            except ConnectionResetError:
                return _client_gone(ctx, target, resp)
            return resp
        finally:
            upstream.release()
            pool.release(target)
            if ok:
                pool.report_success(target)
            else:
                pool.report_failure(target)


def _client_gone(ctx: RequestContext, target: Target, resp: web.StreamResponse) -> web.StreamResponse:
    log.debug("client went away while streaming from %s", target.address)
    _abort(ctx.request)
    return resp


def _client_closed(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    """Close the client connection so a truncated body cannot pass for a complete one."""
    transport = request.transport
    if transport is not None:
        transport.abort()
