"""The listener's limits: slow heads time out, oversize heads get 414/431, garbage gets 400, all as
JSON and never a crash (a hypothesis fuzz of the request parser included)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.http_common import Limits
from proxy.server import DataPlane
from tests.proxy.conftest import ListenFn, ServeFn, echo_app, route, snapshot, upstream
from tests.support.raw_http import RawConn, get

LIMITS = Limits(max_url=200, max_header_bytes=1000, max_headers=20, header_timeout=0.5, keepalive_timeout=0.8)


async def limited_proxy(listen: ListenFn, serve: ServeFn) -> tuple[DataPlane, int]:
    dp = DataPlane(limits=LIMITS)
    port = await serve(echo_app())
    dp.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"r": route(paths=["/"])}),
               revision=1, hash="h")  # fmt: skip
    return dp, await listen(dp)


def error_code(resp_body: bytes) -> str:
    code: str = json.loads(resp_body)["error"]["code"]
    return code


async def test_slow_headers_time_out_with_408(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    conn = await RawConn.open(port)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # slowloris: a byte at a time, each well inside any per-read timeout, the head never complete
        answer = asyncio.ensure_future(conn.response())
        for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100:
            if answer.done() or loop.time() - started > 3:
                break
            await conn.send(bytes([byte]))
            await asyncio.sleep(0.05)
        resp = await answer
        assert resp.status == 408 and error_code(resp.body) == "request_timeout"
        assert resp.header("Connection") == "close" and await conn.closed(5)
        assert loop.time() - started < 5
    finally:
        await conn.close()


async def test_silent_and_idle_connections_are_closed(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    silent = await RawConn.open(port)
    idle = await RawConn.open(port)
    try:
        await idle.send(get("/"))
        assert (await idle.response()).status == 200
        assert await idle.closed(5)  # keep-alive timeout
        assert await silent.closed(5)  # never sent a byte: header timeout
    finally:
        await silent.close()
        await idle.close()


async def test_oversize_url_is_414_and_oversize_headers_431(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    cases = [
        (get("/" + "u" * 300), 414, "uri_too_long"),
        (get("/", extra="X-Big: " + "h" * 1200 + "\r\n"), 431, "headers_too_large"),
        (get("/", extra="".join(f"X-H{i}: v\r\n" for i in range(30))), 431, "headers_too_large"),
    ]
    for request, status, code in cases:
        conn = await RawConn.open(port)
        try:
            await conn.send(request)
            resp = await conn.response()
            assert resp.status == status and resp.header("Content-Type") == "application/json"
            assert error_code(resp.body) == code
            assert await conn.closed(5)
        finally:
            await conn.close()
    conn = await RawConn.open(port)
    try:  # within the limits: served
        await conn.send(get("/" + "u" * 150, extra="X-Fine: " + "h" * 500 + "\r\n"))
        assert (await conn.response()).status == 200
    finally:
        await conn.close()


async def test_a_huge_header_is_refused_before_it_is_buffered(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    conn = await RawConn.open(port)
    try:
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        for _ in range(64):  # 1 MB of one header value that never ends
            try:
                await conn.send(b"a" * 16384)
            except (ConnectionResetError, BrokenPipeError):
                break
        resp = await conn.response()
        assert resp.status == 431
    finally:
        await conn.close()


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
]


async def test_malformed_requests_get_400_json(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    for request in MALFORMED:
        conn = await RawConn.open(port)
        try:
            await conn.send(request)
            resp = await conn.response()
            assert resp.status == 400, request
            assert error_code(resp.body) == "bad_request"
            assert await conn.closed(5)
        finally:
            await conn.close()


async def test_a_bad_request_after_a_good_one_is_answered_after_it(listen: ListenFn, serve: ServeFn) -> None:
    _, port = await limited_proxy(listen, serve)
    conn = await RawConn.open(port)
    try:
        await conn.send(get("/fine") + b"NONSENSE\r\n\r\n")
        first = await conn.response()
        assert first.status == 200 and json.loads(first.body)["path"] == "/fine"
        second = await conn.response()
        assert second.status == 400
        assert await conn.closed(5)
    finally:
        await conn.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"GET ", b"POST ", b"/", b"?", b" HTTP/1.1", b"\r\n", b"Host: t", b": ",
                              b"Content-Length: ", b"Transfer-Encoding: chunked", b"0", b"5", b"\x00", b"\xff",
                              b"Expect: 100-continue", b"Connection: upgrade", b"Upgrade: x"]),
             max_size=25).map(b"".join),
))  # fmt: skip
def test_fuzz_garbage_in_is_4xx_or_close_and_the_proxy_keeps_serving(data: bytes) -> None:
    asyncio.run(_fuzz_one(data))


async def _fuzz_one(data: bytes) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up_port = runner.addresses[0][1]
    dp = DataPlane(limits=Limits(header_timeout=0.3, keepalive_timeout=0.3))
    dp.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", up_port), timeouts={"connect": 1.0, "read": 0.5})},
                        routes={"r": route(paths=["/"])}), revision=1, hash="h")  # fmt: skip
    try:
        server = await dp.listen("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await RawConn.open(port)
        try:
            await conn.send(data)
            try:
                raw = await asyncio.wait_for(conn.reader.read(), 5)
            except ConnectionResetError:
                raw = b""
            for line in raw.split(b"\r\n"):
                if line.startswith(b"HTTP/1.1 "):
                    status = int(line.split(b" ")[1])
                    assert status < 500 or status in (502, 504), (data, raw[:300])
        finally:
            await conn.close()
        probe = await RawConn.open(port)
        try:
            await probe.send(get("/probe"))
            resp = await probe.response()
            assert resp.status == 200 and resp.body == b"ok"
        finally:
            await probe.close()
    finally:
        await dp.close()
        await runner.cleanup()
