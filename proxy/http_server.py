"""The proxy listener: an asyncio Protocol with httptools (llhttp) parsing.

Modelled on uvicorn's ``httptools_impl.py``: one ``HttpProtocol`` per client connection, one
``Exchange`` per request (the request/response cycle), served by ``DataPlane.serve`` in a task of
its own. Requests on a keep-alive connection are answered strictly in order: a pipelined request
waits in ``queue`` until the one before it has finished (its body is buffered meanwhile, bounded by
pausing the socket).

Headers stay the ``(name, value)`` byte pairs httptools hands over; ``Exchange`` decodes only what
is asked for (``headers``, ``query``, ``cookies`` are built on first use, by plugins that need
them). Request bodies go to the upstream as they arrive (``attach_sink``); both directions have
flow control: a full client socket pauses the upstream connection and vice versa.

Limits (``Limits``): an oversize request target gets 414, oversize headers 431, unparsable input
400, all as JSON with ``Connection: close``; headers that take longer than ``header_timeout`` get
408 (slowloris), an idle keep-alive connection is closed after ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from proxy.http_common import Limits, encode_response, json_error

if TYPE_CHECKING:
    from proxy.server import DataPlane

log = logging.getLogger(__name__)

BUFFER_HIGH = 256 * 1024  # request body bytes buffered before the socket is paused
PIPELINE_MAX = 32  # queued pipelined requests before the socket is paused
# reasons for a paused socket (bit mask)
_P_BUFFER, _P_UPSTREAM, _P_PIPELINE = 1, 2, 4
_HEADER, _IDLE, _LINGER = 1, 2, 3
LINGER = 2.0  # seconds to keep reading (and dropping) input after an error answer, so it is not lost to a RST
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodySink(Protocol):
    """Where a request body goes once it is being forwarded (an upstream connection)."""

    def body_chunk(self, data: bytes) -> None: ...
    def body_end(self) -> None: ...


class Tunnel(Protocol):
    def tunnel_write(self, data: bytes) -> None: ...
    def tunnel_close(self) -> None: ...


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Exchange:
    """One request on a client connection and the handle to answer it.

    It is also the request object plugins see (``ctx.request``): ``headers``, ``query``,
    ``cookies``, ``method``, ``path``, ``remote``, ``host``, ``scheme``, ``transport``.
    """

    __slots__ = (
        "proto", "method", "raw_url", "raw_headers", "http11", "keep_alive", "upgrade", "expect_continue",
        "content_length", "chunked", "host", "body_buf", "body_buffered", "body_done", "body_sink",
        "head_sent", "finished", "on_client_lost", "tunnel_buf", "_headers", "_query", "_cookies",
        "raw_path", "query_string", "path", "connection_tokens", "upgrade_value", "method_bytes",
    )  # fmt: skip

    def __init__(self, proto: HttpProtocol, method: str, raw_url: bytes, raw_headers: list[tuple[bytes, bytes]],
                 http11: bool, keep_alive: bool, upgrade: bool) -> None:  # fmt: skip
        self.proto = proto
        self.method = method
        self.method_bytes = method.encode("latin-1")
        self.raw_url = raw_url
        self.raw_headers = raw_headers
        self.http11 = http11
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.expect_continue = False
        self.content_length: int | None = None
        self.chunked = False
        host = b""
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.upgrade_value = b""
        for name, value in raw_headers:
            n = len(name)
            if n == 4 and not host and name.lower() == b"host":
                host = value
            elif n == 10 and name.lower() == b"connection":
                self.connection_tokens = self.connection_tokens | {
                    t.strip().lower() for t in value.split(b",") if t.strip()
                }
            elif n == 7 and name.lower() == b"upgrade":
                self.upgrade_value = value
            elif n == 14 and name.lower() == b"content-length":
                self.content_length = int(value)
            elif n == 17 and name.lower() == b"transfer-encoding":
                self.chunked = self.chunked or b"chunked" in value.lower()
            elif n == 6 and name.lower() == b"expect":
                self.expect_continue = http11 and value.strip().lower() == b"100-continue"
        if self.chunked:
            self.content_length = None
        self.host = host.decode("latin-1")
        self.body_done = not self.chunked and not self.content_length
        self.body_buf: list[bytes] = []
        self.body_buffered = 0
        self.body_sink: BodySink | None = None
        self.head_sent = False
        self.finished = False
        self.on_client_lost: Callable[[], None] | None = None
        self.tunnel_buf: list[bytes] | None = None
        self._headers: CIMultiDictProxy[str] | None = None
        self._query: MultiDictProxy[str] | None = None
        self._cookies: dict[str, str] | None = None
        url = raw_url
        if url[:1] != b"/" and url != b"*":
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        path, sep, query = url.partition(b"?")
        self.raw_path = path.decode("latin-1")
        self.query_string = query.decode("latin-1")
        self.path = unquote(self.raw_path) if "%" in self.raw_path else self.raw_path

    # -- the request, as plugins see it ----------------------------------------------------------

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        h = self._headers
        if h is None:
            h = self._headers = CIMultiDictProxy(
                CIMultiDict([(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw_headers])
            )
        return h

    def header(self, name: str) -> str | None:
        """The first header ``name`` (case-insensitive) by a scan of the raw pairs."""
        h = self._headers
        if h is not None:
            return h.get(name)
        want = name.lower().encode("latin-1")
        n = len(want)
        for key, value in self.raw_headers:
            if len(key) == n and key.lower() == want:
                return value.decode("latin-1")
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        """Header lookup (case-insensitive), so the router can take the exchange as its mapping."""
        return self.headers.get(name, default)

    @property
    def query(self) -> MultiDictProxy[str]:
        q = self._query
        if q is None:
            q = self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return q

    @property
    def cookies(self) -> dict[str, str]:
        c = self._cookies
        if c is None:
            c = {}
            for value in self.headers.getall("Cookie", []):
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value)
                except Exception:  # a malformed cookie header is just no cookies
                    continue
                c.update({k: m.value for k, m in jar.items()})
            self._cookies = c
        return c

    @property
    def remote(self) -> str:
        return self.proto.client_ip

    @property
    def scheme(self) -> str:
        return self.proto.scheme

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.proto.transport

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    # -- body -------------------------------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        sink = self.body_sink
        if sink is not None:
            sink.body_chunk(data)
            return
        self.body_buf.append(data)
        self.body_buffered += len(data)
        if self.body_buffered > BUFFER_HIGH:
            self.proto.pause(_P_BUFFER)

    def attach_sink(self, sink: BodySink) -> None:
        """Start sending the body to ``sink``: what is buffered now, the rest as it arrives."""
        self.body_sink = sink
        if self.expect_continue and not self.body_done:
            self.expect_continue = False
            self.proto.write(CONTINUE)
        buf, self.body_buf, self.body_buffered = self.body_buf, [], 0
        for chunk in buf:
            sink.body_chunk(chunk)
        if self.body_done:
            sink.body_end()
        self.proto.resume(_P_BUFFER)

    def detach_sink(self) -> None:
        self.body_sink = None

    # -- answering --------------------------------------------------------------------------------

    @property
    def client_closed(self) -> bool:
        return self.proto.closed

    def send_response(self, resp: Any) -> int:
        """Send a complete proxy-made response and finish; returns the body bytes sent."""
        if self.finished:
            return 0
        self.keep_alive = self.keep_alive and self.body_done and not self.upgrade
        data = encode_response(resp, keep_alive=self.keep_alive, head_only=self.method == "HEAD")
        self.head_sent = True
        self.proto.write(data)
        self.finish()
        body = getattr(resp, "body", b"")
        return len(body) if isinstance(body, (bytes, bytearray)) and self.method != "HEAD" else 0

    def write(self, data: bytes) -> None:
        self.proto.write(data)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.proto.finished(self)

    def abort(self) -> None:
        """Cut the client connection (a truncated body must not pass for a complete one)."""
        self.finished = True
        self.proto.abort()

    def start_tunnel(self, tunnel: Tunnel) -> None:
        """After a 101: bytes from the client go to ``tunnel`` from now on."""
        self.proto.start_tunnel(tunnel)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, dp: DataPlane, limits: Limits, scheme: str = "http") -> None:
        self.dp = dp
        self.limits = limits
        self.scheme = scheme
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.closed = False
        self.current: Exchange | None = None  # being received
        self.last: Exchange | None = None  # the latest request whose head arrived
        self.active: Exchange | None = None  # being answered
        self.queue: deque[Exchange] = deque()
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.in_headers = False
        self.head_bytes = 0
        self.paused = 0
        self.write_paused = False
        self.upstream_reader: Any = None  # upstream connection to pause while our socket is full
        self.tunnel: Tunnel | None = None
        self.tunnel_pending: list[bytes] | None = None
        self.pending_error: bytes | None = None
        self.lingering = False
        self.eof = False
        self.deadline: float | None = None
        self.timer_kind = 0
        self._timer: asyncio.TimerHandle | None = None
        self.served = 0
        self.forwarded_host = ""
        self.forwarded: bytes | None = None  # forwarded_lines for forwarded_host

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.dp.connections.add(self)
        self._arm(self.limits.header_timeout, _HEADER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.dp.connections.discard(self)
        for ex in (self.active, *self.queue):
            if ex is not None and ex.on_client_lost is not None:
                ex.on_client_lost()
        if self.tunnel is not None:
            self.tunnel.tunnel_close()
            self.tunnel = None
        self.queue.clear()

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it asked for, then close (no further requests)."""
        self.eof = True
        if self.active is not None or self.queue or self.tunnel is not None:
            return True  # keep the transport open for writing
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream_reader is not None:
            self.upstream_reader.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream_reader is not None:
            self.upstream_reader.resume_reading()

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def linger(self) -> None:
        """Close after an answer to input that was not (all) read: send FIN, drop what still comes
        in for a moment, then close. Closing at once would make the kernel answer the unread bytes
        with a RST, and a RST may destroy the answer before the client has read it."""
        if self.transport is None or self.closed or self.lingering:
            return
        self.lingering = True
        self.resume(self.paused)
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self.close()
            return
        self._arm(LINGER, _LINGER)

    def forwarded_lines(self, host: str) -> bytes:
        """The X-Forwarded-For/-Proto/-Host lines for a request from this connection without a
        prior X-Forwarded-For: the same for every request with the same Host, so built once."""
        if host != self.forwarded_host or self.forwarded is None:
            self.forwarded_host = host
            self.forwarded = b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\nX-Forwarded-Host: %b\r\n" % (
                self.client_ip.encode(), self.scheme.encode(), host.encode("latin-1"))
        return self.forwarded

    @property
    def idle(self) -> bool:
        return self.active is None and not self.in_headers and self.tunnel is None

    # -- timers (one lazy timer: re-armed by moving the deadline, no timer churn per request) -------

    def _arm(self, seconds: float, kind: int) -> None:
        self.deadline = self.loop.time() + seconds
        self.timer_kind = kind
        if self._timer is None:
            self._timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.deadline is None or self.closed:
            return
        if self.loop.time() < self.deadline:
            self._timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.deadline = None
        if self.timer_kind == _LINGER:
            self.abort()
        elif self.timer_kind == _HEADER and self.active is None:
            self._reject(_Reject(408, "request_timeout", "the request headers did not arrive in time"))
        elif self.active is None:
            self.close()

    # -- input --------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.tunnel is not None:
            self.tunnel.tunnel_write(data)
            return
        if self.tunnel_pending is not None:
            self.tunnel_pending.append(data)
            return
        if self.pending_error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            ex, self.last = self.last, None  # llhttp completed the message before it stopped
            self.current = None
            if ex is None or not ex.upgrade:
                self._reject(_Reject(400, "bad_request", "unexpected protocol upgrade"))
                return
            ex.body_done = True
            self.in_headers = False
            self.tunnel_pending = [data[exc.args[0]:]] if len(data) > exc.args[0] else []
            self.pause(_P_PIPELINE)
            return
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, _Reject):
                self._reject(ctx)
            else:
                log.error("proxy: request parsing callback failed: %r", ctx)
                self._reject(_Reject(400, "bad_request", "malformed request"))
            return
        except httptools.HttpParserError as exc:
            self._reject(_Reject(400, "bad_request", f"malformed request: {exc}"))
            return
        if self.in_headers:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_url + self.limits.max_header_bytes + 8192:
                self._reject(_Reject(431, "headers_too_large", "request headers too large"))

    def _reject(self, err: _Reject) -> None:
        """Answer a request the parser refused, then close (after any response in progress)."""
        body = json_error(err.status, err.code, err.message)
        data = encode_response(body, keep_alive=False)
        self.in_headers = False
        ex = self.current
        if ex is not None and ex is self.active and not ex.body_done:  # its body is garbage: it ends here
            self.current = self.active = None
            ex.finished = True
            if ex.on_client_lost is not None:
                ex.on_client_lost()
            if ex.head_sent:
                self.abort()
                return
            self.write(data)
            self.linger()
            return
        if self.current is not None and self.current is not self.active and self.current not in self.queue:
            self.current = None
        self.pause(_P_PIPELINE)
        if self.active is None and not self.queue:
            self.dp.metrics.observe_request(None, err.status, 0.0)
            self.write(data)
            self.linger()
        else:
            self.pending_error = data

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.head_bytes = 0
        self.in_headers = True
        if self.timer_kind != _HEADER or self.deadline is None:
            self._arm(self.limits.header_timeout, _HEADER)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_url:
            raise _Reject(414, "uri_too_long", f"request target longer than {self.limits.max_url} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        self.headers.append((name, value))
        if self.header_bytes > self.limits.max_header_bytes or len(self.headers) > self.limits.max_headers:
            raise _Reject(431, "headers_too_large", "request headers too large")

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.deadline = None
        p = self.parser
        try:
            ex = Exchange(
                self, p.get_method().decode("latin-1"), self.url, self.headers,
                p.get_http_version() == "1.1", p.should_keep_alive(), p.should_upgrade(),
            )  # fmt: skip
        except (ValueError, UnicodeError) as exc:
            raise _Reject(400, "bad_request", "malformed request") from exc
        self.current = self.last = ex
        if self.active is None:
            self._start(ex)
        else:
            self.queue.append(ex)
            if len(self.queue) >= PIPELINE_MAX:
                self.pause(_P_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is not None:
            ex.feed_body(body)

    def on_message_complete(self) -> None:
        ex = self.current
        if ex is None:
            return
        self.current = None
        ex.body_done = True
        if ex.body_sink is not None:
            ex.body_sink.body_end()

    # -- serving ------------------------------------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        self.active = ex
        self.served += 1
        if ex.body_done:
            self.dp.dispatch(ex)
        else:  # the body still arrives: serve once this input is parsed (a refusal keeps the connection)
            self.loop.call_soon(self.dp.dispatch, ex)

    def finished(self, ex: Exchange) -> None:
        if ex is not self.active:
            return
        self.active = None
        self.upstream_reader = None
        if self.pending_error is not None:
            self.write(self.pending_error)
            self.linger()
            return
        if self.closed:
            return
        if not ex.body_done:
            self.linger()
            return
        if not ex.keep_alive or (self.eof and not self.queue):
            self.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
            if len(self.queue) < PIPELINE_MAX:
                self.resume(_P_PIPELINE)
            return
        self.resume(_P_PIPELINE)
        if self.dp.draining:
            self.close()
        elif not self.in_headers:
            self._arm(self.limits.keepalive_timeout, _IDLE)

    def start_tunnel(self, tunnel: Tunnel) -> None:
        pending, self.tunnel_pending = self.tunnel_pending or [], None
        self.tunnel = tunnel
        self.active = None
        self.deadline = None
        for chunk in pending:
            tunnel.tunnel_write(chunk)
        self.resume(_P_PIPELINE)
