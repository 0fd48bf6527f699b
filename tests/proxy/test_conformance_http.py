"""HTTP/1.1 conformance of the proxy listener, spoken to with raw sockets (tests/support/raw_http.py)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.proxy.conftest import Proxy, ServeFn, echo_app, plugins, route, snapshot, upstream
from tests.support.raw_http import RawConn, get


def install_one(proxy: Proxy, port: int, **route_over: object) -> None:
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))},
                           routes={"r": route(paths=["/"], **route_over)}))  # fmt: skip


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(proxy: Proxy, serve: ServeFn) -> None:
    async def handler(request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "0"))
        await asyncio.sleep(delay)  # the first answer is ready last upstream
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    install_one(proxy, await serve(app))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/one?delay=0.3") + get("/two") + get("/three"))  # one write: pipelined
        bodies = [(await conn.response()).body for _ in range(3)]
        assert bodies == [b"/one", b"/two", b"/three"]
        for i in range(3):  # the same connection keeps serving
            await conn.send(get(f"/again{i}"))
            resp = await conn.response()
            assert resp.status == 200 and resp.body == f"/again{i}".encode()
            assert (resp.header("Connection") or "").lower() != "close"
    finally:
        await conn.close()


async def test_connection_close_and_http10_are_honoured(proxy: Proxy, serve: ServeFn) -> None:
    install_one(proxy, await serve(echo_app()))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/a", extra="Connection: close\r\n"))
        resp = await conn.response()
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert await conn.closed(5)
    finally:
        await conn.close()
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"GET /b HTTP/1.0\r\nHost: t\r\n\r\n")
        resp = await conn.response()
        assert resp.status == 200 and json.loads(resp.body)["path"] == "/b"
        assert await conn.closed(5)  # HTTP/1.0 without keep-alive: one request per connection
    finally:
        await conn.close()


async def test_head_204_and_304_have_no_body(proxy: Proxy, serve: ServeFn) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304, headers={"ETag": '"x"'})
        return web.Response(body=b"x" * 100)  # HEAD: aiohttp sends Content-Length 100, no body

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    install_one(proxy, await serve(app))
    conn = await RawConn.open(proxy.port)
    try:
        # each answer is followed by a probe on the same connection: a stray body byte would corrupt it
        for request, status in ((b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", 200), (get("/204"), 204),
                                (get("/304"), 304)):  # fmt: skip
            await conn.send(request + get("/probe"))
            resp = await conn.head()
            assert resp.status == status
            if status == 200:
                assert resp.header("Content-Length") == "100"
            assert resp.header("Transfer-Encoding") is None
            probe = await conn.response()
            assert probe.status == 200 and probe.body == b"x" * 100, probe
    finally:
        await conn.close()


async def test_hop_by_hop_headers_are_removed_both_ways(proxy: Proxy, serve: ServeFn) -> None:
    async def handler(request: web.Request) -> web.Response:
        resp = web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})
        resp.headers["Connection"] = "X-Resp-Hop"
        resp.headers["X-Resp-Hop"] = "1"
        resp.headers["Proxy-Authenticate"] = "Basic"
        resp.headers["Trailer"] = "X-T"
        resp.headers["X-Resp-Kept"] = "yes"
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    install_one(proxy, await serve(app))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/h", extra="Connection: keep-alive, X-Named\r\nConnection: X-Second\r\n"
                                        "X-Named: 1\r\nX-Second: 2\r\nTE: trailers\r\nTrailer: X-T\r\n"
                                        "Proxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                                        "X-Kept: yes\r\n"))  # fmt: skip
        resp = await conn.response()
        names = {k.lower() for k, _ in json.loads(resp.body)["headers"]}
        for gone in ("x-named", "x-second", "te", "trailer", "proxy-connection", "keep-alive"):
            assert gone not in names, gone
        assert "x-kept" in names
        got = {k.lower() for k, _ in resp.headers}
        assert not got & {"x-resp-hop", "proxy-authenticate", "trailer"}, resp.headers
        assert resp.header("X-Resp-Kept") == "yes"
    finally:
        await conn.close()


async def test_x_forwarded_headers_are_appended(proxy: Proxy, serve: ServeFn) -> None:
    install_one(proxy, await serve(echo_app()))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/", host="front.example:8443",
                            extra="X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
                                  "X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed\r\n"))  # fmt: skip
        resp = await conn.response()
        headers: dict[str, list[str]] = {}
        for k, v in json.loads(resp.body)["headers"]:
            headers.setdefault(k.lower(), []).append(v)
        assert headers["x-forwarded-for"] == ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        assert headers["x-forwarded-proto"] == ["http"]  # what this hop saw, not what the client claimed
        assert headers["x-forwarded-host"] == ["front.example:8443"]
        await conn.send(get("/"))
        resp = await conn.response()
        assert [v for k, v in json.loads(resp.body)["headers"] if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]
    finally:
        await conn.close()


async def test_upstream_closing_mid_response_is_a_clean_error(proxy: Proxy, serve: ServeFn) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"p" * 10)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/broken", broken)
    app.router.add_get("/ok", ok)
    install_one(proxy, await serve(app))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/broken"))
        head = await conn.head()
        assert head.status == 200 and head.header("Content-Length") == "1000"
        data = await asyncio.wait_for(conn.reader.read(), 10)  # the proxy cuts the connection: EOF, not a hang
        assert len(data) < 1000
    finally:
        await conn.close()
    conn = await RawConn.open(proxy.port)  # and keeps serving
    try:
        await conn.send(get("/ok"))
        resp = await conn.response()
        assert resp.status == 200 and resp.body == b"fine"
    finally:
        await conn.close()


async def test_upstream_closing_before_the_head_is_a_502_json(proxy: Proxy, serve: ServeFn) -> None:
    async def rude(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError

    app = web.Application()
    app.router.add_post("/", rude)
    install_one(proxy, await serve(app))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        resp = await conn.response()
        assert resp.status == 502 and resp.header("Content-Type") == "application/json"
        assert json.loads(resp.body)["error"]["code"] == "upstream_error"
    finally:
        await conn.close()


async def test_expect_100_continue(proxy: Proxy, serve: ServeFn) -> None:
    port = await serve(echo_app())
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port))},
        routes={"open": route(paths=["/open"]),
                "locked": route(paths=["/locked"], plugins=plugins(key_auth={}))},
    ))  # fmt: skip
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"PUT /open HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await conn.head()  # the proxy invites the body before any byte of it was sent
        assert interim.status == 100
        await conn.send(b"hello")
        resp = await conn.response()
        body = json.loads(resp.body)
        assert resp.status == 200 and body["body_len"] == 5
        assert "expect" not in {k.lower() for k, _ in body["headers"]}  # this hop answered it
    finally:
        await conn.close()
    conn = await RawConn.open(proxy.port)
    try:  # refused by a plugin: a final answer instead of 100, and the unread body closes the connection
        await conn.send(b"PUT /locked HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        resp = await conn.response()
        assert resp.status == 401 and resp.header("Connection") == "close"
        assert await conn.closed(5)
    finally:
        await conn.close()


async def test_a_half_closed_client_still_gets_its_answers(proxy: Proxy, serve: ServeFn) -> None:
    install_one(proxy, await serve(echo_app()))
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(get("/one") + get("/two"))
        conn.writer.write_eof()  # "that is all": the answers must still come, then the close
        paths = [json.loads((await conn.response()).body)["path"] for _ in range(2)]
        assert paths == ["/one", "/two"]
        assert await conn.closed(5)
    finally:
        await conn.close()
