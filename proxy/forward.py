"""Forwarding one request to an upstream target and relaying the answer, both ways streamed.

``Forwarder.forward`` picks a target (balancer), takes a pooled keep-alive connection to it (or
opens one), sends the request head and hands the connection a ``Relay``: the per-attempt object
that receives the parsed response and writes it to the client as it arrives (no await per chunk),
while the request body flows the other way (``Exchange.attach_sink``). Flow control is end to
end: a full client socket pauses reading from the upstream, a full upstream socket pauses reading
from the client.

Headers: hop-by-hop headers (RFC 9110 7.6.1, and every header named in ``Connection``) are dropped
both ways; the upstream gets ``Host`` of the target (pre-encoded per target), and
``X-Forwarded-For`` (appended), ``-Proto`` and ``-Host``. Framing is the proxy's: a chunked request
stays chunked, a response without a length is re-chunked for HTTP/1.1 clients. ``Upgrade``
requests (websockets) keep their ``Upgrade`` header; after a 101 the connection becomes a byte
tunnel in both directions.

Retries: a failure to *connect* (refused, unreachable, connect timeout) is retried on another
target, up to the upstream's ``retries``; nothing was sent then, so any method is safe. A failure
after the request was sent, before any response header came back, is retried only for
GET/HEAD/OPTIONS without a body (an instance that died under a request: docs/discovery.md); for
other methods it may have had effects, so it is a 502. A read timeout is never retried. A pooled
connection the upstream had closed meanwhile (no answer byte) is retried once on a fresh connection
to the same target when the request has no body, without counting as an attempt.

Errors are the proxy's JSON bodies: 502 upstream failure, 503 no eligible target, 504 timeout; a
failure after the response head went out cuts the client connection. Every failed attempt counts
against the target's passive health, as do 502/503/504 answers; a client that hangs up does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httptools
from multidict import CIMultiDict
from yarl import URL

from proxy.balancer import Pool, Target
from proxy.http_common import HOP_BY_HOP, Response, encode_header, json_error, status_line
from proxy.http_server import _P_UPSTREAM, Exchange
from proxy.upstream import TargetPool, UpstreamConnection, Upstreams

if TYPE_CHECKING:
    from proxy.plugins.base import PluginChain, RequestContext

log = logging.getLogger(__name__)

_PATH_SAFE = "/:@!$&'()*+,;=-._~"
UNHEALTHY_STATUSES = frozenset({502, 503, 504})
RETRY_AFTER_SEND = frozenset({"GET", "HEAD", "OPTIONS"})
# request headers the proxy sets itself (framing, target Host, forwarding facts)
_OWN_REQUEST = frozenset(
    {b"host", b"expect", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
_DROP_REQUEST = HOP_BY_HOP | _OWN_REQUEST
_EMPTY: frozenset[Target] = frozenset()
_NONE: frozenset[bytes] = frozenset()
_NONE_LENGTHS: frozenset[int] = frozenset()
_FRAMING_LENGTHS = frozenset(len(n) for n in HOP_BY_HOP | {b"content-length"})
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b""})
# status -> (the reason upstreams usually send, its status line): no formatting per response
_STATUS_LINES = {code: (reason, b"HTTP/1.1 %d %b\r\n" % (code, reason)) for code, reason in (
    (200, b"OK"), (201, b"Created"), (204, b"No Content"), (301, b"Moved Permanently"), (302, b"Found"),
    (304, b"Not Modified"), (400, b"Bad Request"), (401, b"Unauthorized"), (403, b"Forbidden"),
    (404, b"Not Found"), (500, b"Internal Server Error"), (502, b"Bad Gateway"), (503, b"Service Unavailable"),
)}  # fmt: skip

OK, RETRY, FAILED, TIMEOUT, BROKEN, GONE = range(6)
Done = Callable[["RequestContext", "PluginChain", "Response | None"], None]


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


def upstream_headers(ex: Exchange, client_ip: str) -> CIMultiDict[str]:
    """The upstream request headers as an editable multidict (built only when a plugin asks)."""
    drop = _DROP_REQUEST | ex.connection_tokens
    headers: CIMultiDict[str] = CIMultiDict()
    prior: list[str] = []
    for name, value in ex.raw_headers:
        low = name.lower()
        if low in drop:
            if low == b"x-forwarded-for":
                prior.append(value.decode("latin-1"))
            continue
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    joined = ", ".join(prior)
    headers["X-Forwarded-For"] = f"{joined}, {client_ip}" if joined else client_ip
    headers["X-Forwarded-Proto"] = ex.scheme
    headers["X-Forwarded-Host"] = ex.host
    return headers


_encode = encode_header


def request_head_tail(ctx: RequestContext, ex: Exchange) -> bytes:
    """Everything of the upstream request head after the ``Host`` line (the same for every target)."""
    parts: list[bytes] = []
    edited = ctx.upstream_headers_if_built()
    if edited is None:
        drop = _DROP_REQUEST
        if ex.connection_tokens:
            drop = drop | ex.connection_tokens
        dropped = ctx.dropped_headers()
        if dropped:
            drop = drop | dropped
        prior = b""
        for name, value in ex.raw_headers:
            low = name.lower()
            if low in drop:
                if low == b"x-forwarded-for":
                    prior = prior + b", " + value if prior else value
                continue
            parts += (name, b": ", value, b"\r\n")
        for _, _, line in ctx.added_headers():
            parts.append(line)
        proto = ex.proto
        if prior or ctx.client_ip != proto.client_ip:
            ip = ctx.client_ip.encode()
            parts += (b"X-Forwarded-For: ", prior + b", " + ip if prior else ip, b"\r\nX-Forwarded-Proto: ",
                      ex.scheme.encode(), b"\r\nX-Forwarded-Host: ", ex.host.encode("latin-1"), b"\r\n")  # fmt: skip
        else:
            parts.append(proto.forwarded_lines(ex.host))
    else:
        for key, text in edited.items():
            if key.lower() not in ("content-length", "transfer-encoding", "host"):
                parts.append(_encode(key, text))
    if ex.upgrade:
        parts += (b"Connection: upgrade\r\nUpgrade: ", ex.upgrade_value, b"\r\n")
    elif ex.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif ex.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % ex.content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


def _query_string(ctx: RequestContext, ex: Exchange) -> str:
    query = ctx.upstream_query_if_built()
    if query is None or query == ex.query:
        return ex.query_string
    return URL.build(query=query).raw_query_string


class Picked:
    """What ``Forwarder.start`` planned and picked for a request it could not start inline."""

    __slots__ = ("plan", "target")

    def __init__(self, plan: tuple[Any, bytes, bytes], target: Target | None) -> None:
        self.plan = plan
        self.target = target


class Relay:
    """One attempt: the request sent on ``conn``, its response relayed to the client."""

    __slots__ = (
        "fw", "ex", "ctx", "chain", "conn", "reused", "future", "headers", "reason", "status", "head_sent",
        "out_chunked", "until_close", "skip", "body_sent", "got_bytes", "last_read", "fresh", "timeout", "tunnel",
        "outcome", "error", "out", "pool", "target", "tp", "plan", "on_done", "done",
    )  # fmt: skip

    def __init__(self, fw: Forwarder, ex: Exchange, ctx: RequestContext, chain: PluginChain,
                 conn: UpstreamConnection, reused: bool, timeout: float) -> None:  # fmt: skip
        self.fw = fw
        self.ex = ex
        self.ctx = ctx
        self.chain = chain
        self.conn = conn
        self.reused = reused
        self.future: asyncio.Future[int] | None = None  # the coroutine path awaits it
        self.on_done: Callable[[Relay, int], None] | None = None  # the inline path's continuation
        self.pool: Pool | None = None
        self.done: Done | None = None
        self.target: Target | None = None
        self.tp: TargetPool | None = None
        self.plan: tuple[bytes | None, bytes, bytes] | None = None  # hash key, request line, head tail
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.status = 0
        self.head_sent = False
        self.out_chunked = False
        self.until_close = False
        self.skip = False
        self.body_sent = not (ex.chunked or ex.content_length) or ex.upgrade  # Exchange.body_exists, inlined
        self.got_bytes = False
        self.last_read = 0.0
        self.fresh = False  # read since the timeout sweep last looked (it then moves last_read)
        self.timeout = timeout
        self.tunnel = False
        self.outcome: int | None = None
        self.error: BaseException | None = None
        self.out: list[bytes] | None = None  # client output of one upstream read, sent in one write

    def start(self, head: bytes) -> None:
        ex, conn = self.ex, self.conn
        if ex.client_closed or ex.finished:
            self._done(GONE, True)
            return
        conn.relay = self
        conn.used += 1
        self.fresh = True  # the timeout sweep dates the start (no clock read here)
        self.fw.active.add(self)
        ex.on_client_lost = self.client_lost
        proto = ex.proto
        proto.upstream_reader = conn
        if proto.write_paused:
            conn.pause_reading()
        conn.write(head)
        if not self.body_sent:
            ex.attach_sink(self)

    # -- request body (BodySink) ------------------------------------------------------------------

    def body_chunk(self, data: bytes) -> None:
        if self.outcome is not None:
            return
        if self.ex.chunked:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.conn.write(data)

    def body_end(self) -> None:
        if self.outcome is not None:
            return
        if self.ex.chunked:
            self.conn.write(b"0\r\n\r\n")
        self.body_sent = True

    def upstream_full(self, full: bool) -> None:
        if full:
            self.ex.proto.pause(_P_UPSTREAM)
        else:
            self.ex.proto.resume(_P_UPSTREAM)

    # -- response -----------------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        self.fresh = self.got_bytes = True
        if self.tunnel:
            self.ex.write(data)
            return
        self.out = []
        try:
            self.conn.parser.feed_data(data)
            self._flush()
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            if self.status == 101 and self.outcome is None:
                self._begin_tunnel(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            self._flush()
            if self.outcome is None:
                log.info("upstream %s: unparsable response from %s: %s", self.ctx.upstream, self.ctx.target, exc)
                self.error = exc
                if self.head_sent:
                    self.ex.abort()
                    self._done(BROKEN, False)
                else:
                    self._done(FAILED, False)

    def on_head(self, status: int) -> None:
        if status < 200 and status != 101:
            self.skip = True  # 100 Continue and friends: the proxy speaks for itself to the client
            self.headers = []
            return
        self.status = status
        ex, ctx = self.ex, self.ctx
        ctx.status = status
        chain = self.chain
        plugins = ctx.plugins
        responders = chain.responders if not plugins or plugins is chain.plugins else ctx.responders(chain)
        full = False  # a response phase that needs the headers as a dict (not just setting some)
        added: list[tuple[bytes, bytes]] | None = None
        replaced: set[bytes] | frozenset[bytes] = _NONE
        replaced_lengths: set[int] | frozenset[int] = _NONE_LENGTHS
        if responders:
            setters = chain.setters_only if responders is chain.responders else all(p.sets_headers for p in responders)
            if setters:
                added = [entry for p in responders for entry in p.header_lines(ctx)]
                if added:
                    replaced = {entry[0] for entry in added}
                    replaced_lengths = {len(name) for name in replaced}
            else:
                full = True
        reason = self.reason
        cached = _STATUS_LINES.get(status)
        parts = [cached[1] if cached is not None and cached[0] == reason else status_line(status, reason or None)]
        # one pass: framing and hop-by-hop headers out (only names of their lengths are lowered)
        kept: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        chunked = False
        upgrade = b""
        tokens: set[bytes] | None = None
        for name, value in self.headers:
            n = len(name)
            if n in _FRAMING_LENGTHS:
                low = name.lower()
                if low in HOP_BY_HOP:
                    if low == b"transfer-encoding":
                        chunked = b"chunked" in value.lower()
                    elif low == b"upgrade":
                        upgrade = value
                    elif low == b"connection" and value.lower() not in _CONNECTION_OPTIONS:
                        named = {t.strip().lower() for t in value.split(b",")} - _CONNECTION_OPTIONS
                        tokens = named if tokens is None else tokens | named
                    continue
                if low == b"content-length":
                    length = value
                    continue
            if full:
                kept.append((name, value))
            elif n not in replaced_lengths or name.lower() not in replaced:
                parts += (name, b": ", value, b"\r\n")
        if tokens:  # headers the upstream named in Connection are hop-by-hop too: filter again
            drop = HOP_BY_HOP | tokens | replaced | {b"content-length"}
            kept = [(k, v) for k, v in self.headers if k.lower() not in drop]
            if not full:
                del parts[1:]
                for name, value in kept:
                    parts += (name, b": ", value, b"\r\n")
        if full:
            resp = Response(status)
            resp.headers.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in kept)
            chain.response(ctx, resp)
            for n2, v2 in resp.headers.items():
                if n2.lower() not in ("content-length", "transfer-encoding", "connection"):
                    parts.append(_encode(n2, v2))
        elif added:
            parts += [entry[1] for entry in added]
        no_body = status == 101 or status in (204, 304) or ex.method == "HEAD"
        if status == 101:
            parts += (b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n")
        elif no_body:
            if length is not None:
                parts += (b"Content-Length: ", length, b"\r\n")
        elif length is not None and not chunked:
            parts += (b"Content-Length: ", length, b"\r\n")
        else:
            self.until_close = not chunked
            if ex.http11:
                parts.append(b"Transfer-Encoding: chunked\r\n")
                self.out_chunked = True
            else:
                ex.keep_alive = False
        if status != 101:
            ex.keep_alive = ex.keep_alive and ex.body_done and not ex.upgrade and not ex.proto.dp.draining
            if not ex.keep_alive:
                parts.append(b"Connection: close\r\n")
            elif not ex.http11:
                parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        ex.head_sent = self.head_sent = True
        self._emit(b"".join(parts))
        if ex.method == "HEAD" and status != 101:
            # llhttp cannot know that this response has no body: it ends here, the connection too
            self._flush()
            self._done(OK, False)
            ex.finish()

    def on_body(self, body: bytes) -> None:
        if self.skip or self.outcome is not None:
            return
        if self.out_chunked:
            self._emit(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self._emit(body)
        self.ctx.bytes_sent += len(body)

    def on_complete(self) -> None:
        if self.skip:
            self.skip = False
            return
        if self.status == 101 or self.outcome is not None:
            return
        if self.out_chunked:
            self._emit(b"0\r\n\r\n")
        self._flush()
        reusable = self.body_sent and self.conn.parser.should_keep_alive()
        self._done(OK, reusable)
        self.ex.finish()

    def _emit(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.ex.write(data)
        else:
            out.append(data)

    def _flush(self) -> None:
        out, self.out = self.out, None
        if out:
            self.ex.write(out[0] if len(out) == 1 else b"".join(out))

    def _begin_tunnel(self, tail: bytes) -> None:
        self.tunnel = True
        self.fw.active.discard(self)  # a quiet websocket is not a stalled response: no read timeout
        if tail:
            self.ex.write(tail)
        self.ex.start_tunnel(self)

    # -- tunnel (after 101) --------------------------------------------------------------------------

    def tunnel_write(self, data: bytes) -> None:
        self.conn.write(data)

    def tunnel_close(self) -> None:
        if self.outcome is None:
            self.conn.close()
            self._done(OK, False)

    # -- endings --------------------------------------------------------------------------------------

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.outcome is not None:
            return
        if self.tunnel:
            self.ex.proto.close()
            self._done(OK, False)
            return
        if not self.head_sent:
            if self.reused and not self.got_bytes and self.body_sent and not self.ex.body_exists:
                self._done(RETRY, False)
                return
            self.error = exc or ConnectionResetError("upstream closed the connection")
            self._done(FAILED, False)
            return
        if self.until_close and exc is None:  # a body delimited by the connection's end is complete
            if self.out_chunked:
                self.ex.write(b"0\r\n\r\n")
            self._done(OK, False)
            self.ex.finish()
            return
        log.info("upstream %s: body from %s broke off: %s", self.ctx.upstream, self.ctx.target, exc)
        self.ex.abort()
        self._done(BROKEN, False)

    def client_lost(self) -> None:
        if self.outcome is None:
            log.debug("client went away while relaying from %s", self.ctx.target)
            self.conn.abort()
            self._done(GONE, False)

    def timed_out(self) -> None:
        if self.outcome is not None:
            return
        self.conn.abort()
        if self.head_sent:
            log.info("upstream %s: %s stalled mid-body", self.ctx.upstream, self.ctx.target)
            self.ex.abort()
            self._done(BROKEN, False)
        else:
            self._done(TIMEOUT, False)

    def _done(self, outcome: int, reusable: bool) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.fw.active.discard(self)
        ex = self.ex
        ex.on_client_lost = None
        if ex.body_sink is self:
            ex.detach_sink()
        proto = ex.proto
        if proto.upstream_reader is self.conn:
            proto.upstream_reader = None
        if proto.paused & _P_UPSTREAM:
            proto.resume(_P_UPSTREAM)
        if not self.tunnel or outcome != OK:
            self.conn.release(reusable)
        if self.on_done is not None:
            on_done, self.on_done = self.on_done, None
            on_done(self, outcome)
        elif self.future is not None and not self.future.done():
            self.future.set_result(outcome)


class Forwarder:
    """Sends requests upstream over pooled connections; one per DataPlane."""

    def __init__(self, upstreams: Upstreams, draining: Any = None) -> None:
        self.upstreams = upstreams
        self.loop = asyncio.get_running_loop()
        self.active: set[Relay] = set()
        self.resuming: set[asyncio.Task[None]] = set()  # inline requests gone on to a retry
        self._draining = draining
        self._ticker: asyncio.Task[None] | None = self.loop.create_task(self._tick(), name="upstream-timeouts")

    def draining(self) -> bool:
        return bool(self._draining is not None and self._draining())

    async def _tick(self) -> None:
        """Read timeouts: one sweep every 50 ms instead of a timer per request."""
        while True:
            await asyncio.sleep(0.05)
            if self.active:
                now = self.loop.time()
                stalled = []
                for relay in self.active:
                    if relay.fresh:  # no clock read per upstream read: the sweep dates it (<= 50 ms late)
                        relay.fresh = False
                        relay.last_read = now
                    elif now - relay.last_read >= relay.timeout:
                        stalled.append(relay)
                for relay in stalled:
                    relay.timed_out()

    async def close(self) -> None:
        task, self._ticker = self._ticker, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for relay in list(self.active):
            relay.client_lost()

    def _plan(self, ctx: RequestContext, pool: Pool) -> tuple[Any, bytes, bytes]:
        ex: Exchange = ctx.request
        ctx.upstream = pool.id
        key = None
        if pool.settings.hash_on is not None:
            key = pool.hash_key(ex.headers, ex.cookies, ctx.client_ip)
        query = ex.query_string if ctx.upstream_query_if_built() is None else _query_string(ctx, ex)
        line = b"%b %b%b HTTP/1.1\r\n" % (
            ex.method_bytes, ctx.upstream_path.encode("latin-1", "replace"),
            b"?" + query.encode("latin-1", "replace") if query else b"",
        )  # fmt: skip
        return key, line, request_head_tail(ctx, ex)

    def start(self, ctx: RequestContext, pool: Pool, chain: PluginChain, done: Done) -> Picked | None:
        """Forward inline when a pooled connection to the picked target is idle: no task, no
        coroutine; ``done(ctx, chain, error response or None)`` is called when the relay ends.
        Returns None when it started; otherwise what it planned and picked, for ``forward(...,
        picked=)`` to go on with on the coroutine path (a connect first, or no eligible target).
        A first attempt that fails in a retryable way continues in a task (``_resume``)."""
        plan = self._plan(ctx, pool)
        target = pool.pick(plan[0], _EMPTY)
        if target is None:
            return Picked(plan, None)
        tp = target.connections
        if tp is None or tp.upstreams is not self.upstreams:
            tp = target.connections = self.upstreams.pool(target.host, target.port)
        conn = tp.take()
        if conn is None:
            return Picked(plan, target)
        ctx.target = target.address
        pool.acquire(target)
        relay = Relay(self, ctx.request, ctx, chain, conn, True, pool.settings.read_timeout)
        relay.pool, relay.target, relay.tp, relay.plan = pool, target, tp, plan
        relay.done = done
        relay.on_done = self._inline_done
        relay.start(plan[1] + target.host_header + plan[2])
        return None

    def _inline_done(self, relay: Relay, outcome: int) -> None:
        pool, target, done = relay.pool, relay.target, relay.done
        assert done is not None
        assert pool is not None and target is not None
        if outcome == OK or outcome == GONE or outcome == BROKEN:
            pool.release(target)
            if outcome == BROKEN or relay.status in UNHEALTHY_STATUSES:
                pool.report_failure(target)
            else:
                pool.report_success(target)
            done(relay.ctx, relay.chain, None)
            return
        task = self.loop.create_task(self._resume(relay, outcome, done))
        self.resuming.add(task)
        task.add_done_callback(self.resuming.discard)

    async def _resume(self, relay: Relay, outcome: int, done: Done) -> None:
        ctx, chain = relay.ctx, relay.chain
        try:
            resp = await self.forward(ctx, relay.pool, chain, relay, outcome)  # type: ignore[arg-type]
        except Exception:
            log.exception("proxy: forwarding failed")
            resp = json_error(500, "internal_error", "the proxy failed to handle this request")
            if ctx.request.head_sent:
                ctx.request.abort()
                resp = None
        done(ctx, chain, resp)

    async def _attempt(self, relay: Relay, head: bytes) -> int:
        relay.future = self.loop.create_future()
        relay.start(head)
        return await relay.future

    async def forward(
        self, ctx: RequestContext, pool: Pool, chain: PluginChain, resumed: Relay | None = None, outcome: int = OK,
        picked: Picked | None = None,
    ) -> Response | None:  # fmt: skip
        """Forward ``ctx`` to a target of ``pool`` (or go on after ``resumed``, an inline first
        attempt that ended with ``outcome``, or with the target ``start`` ``picked``).

        Returns None when a response was relayed (or the client is gone), or an error response
        for the caller to send.
        """
        ex: Exchange = ctx.request
        settings = pool.settings
        attempts = settings.retries + 1
        relay = resumed
        first: Target | None = None
        if resumed is None:
            key, line, tail = self._plan(ctx, pool) if picked is None else picked.plan
            tried: set[Target] | None = None
            if picked is not None:
                if picked.target is None:
                    return json_error(503, "no_healthy_target", f"upstream {pool.id} has no healthy target")
                first = picked.target
        else:
            assert resumed.plan is not None and resumed.target is not None and resumed.tp is not None
            key, line, tail = resumed.plan
            target, tp, tried = resumed.target, resumed.tp, {resumed.target}
            attempts -= 1
        timed_out = False
        while True:
            if relay is None:
                if attempts <= 0:
                    break
                attempts -= 1
                target, first = first or pool.pick(key, tried or _EMPTY), None  # type: ignore[assignment]
                if target is None:
                    break
                if tried is None:
                    tried = set()
                tried.add(target)
                ctx.target = target.address
                pool.acquire(target)
                tp = self.upstreams.pool(target.host, target.port)
                conn = tp.take()
                reused = conn is not None
                if conn is None:
                    try:
                        conn = await tp.connect(settings.connect_timeout)
                    except (OSError, TimeoutError) as exc:
                        pool.release(target)
                        pool.report_failure(target)
                        timed_out = isinstance(exc, TimeoutError)
                        log.info("upstream %s: connect to %s failed: %r", pool.id, target.address, exc)
                        continue
                relay = Relay(self, ex, ctx, chain, conn, reused, settings.read_timeout)
                outcome = await self._attempt(relay, line + target.host_header + tail)
            head = line + target.host_header + tail
            while outcome == RETRY:  # a pooled connection the upstream had closed: once more, fresh
                try:
                    conn = await tp.connect(settings.connect_timeout)
                except (OSError, TimeoutError) as exc:
                    relay.error = exc
                    outcome = FAILED
                    break
                relay = Relay(self, ex, ctx, chain, conn, False, settings.read_timeout)
                outcome = await self._attempt(relay, head)
            pool.release(target)
            if outcome == OK or outcome == GONE:
                if relay.status in UNHEALTHY_STATUSES:
                    pool.report_failure(target)
                else:
                    pool.report_success(target)
                return None
            if outcome == BROKEN:
                pool.report_failure(target)
                return None
            if outcome == TIMEOUT:
                pool.report_failure(target)
                return json_error(504, "upstream_timeout", f"upstream {pool.id} did not answer in time")
            if not ex.client_closed:  # a client that hung up mid-upload is not the target's fault
                pool.report_failure(target)
            log.info("upstream %s: request to %s failed: %r", pool.id, target.address, relay.error)
            if ctx.method in RETRY_AFTER_SEND and not ex.body_exists and not ex.client_closed:
                relay = None
                continue  # no response began and the request is idempotent: another target
            exc_name = type(relay.error).__name__ if relay.error is not None else "error"
            return json_error(502, "upstream_error", f"upstream {pool.id} failed: {exc_name}")
        if tried is None:
            return json_error(503, "no_healthy_target", f"upstream {pool.id} has no healthy target")
        if timed_out:
            return json_error(504, "upstream_timeout", f"connecting to upstream {pool.id} timed out")
        return json_error(502, "upstream_unavailable", f"upstream {pool.id}: no target accepted the connection")
