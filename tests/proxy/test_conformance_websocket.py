"""Websocket (Upgrade) pass-through: the handshake goes through the route's plugins, then the proxy is
a byte tunnel in both directions."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.conftest import Proxy, ServeFn, consumer, plugins, route, snapshot, upstream
from tests.support.raw_http import RawConn


def ws_app(closed: asyncio.Event) -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello from upstream")  # server -> client without being asked
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_websocket_both_ways_with_auth_and_rate_limit_on_the_handshake(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    closed = asyncio.Event()
    port = await serve(ws_app(closed))
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port))},
        routes={"ws": route(paths=["/ws"], plugins=plugins(key_auth={}, rate_limit={"limit": 2, "window": 60.0}))},
        consumers={"c1": consumer(key_auth=["k1"])},
    ))  # fmt: skip
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(proxy.url("/ws"))
    assert refused.value.status == 401

    async with http.ws_connect(proxy.url("/ws"), headers={"apikey": "k1"}) as ws:
        assert (await ws.receive(timeout=10)).data == "hello from upstream"
        await ws.send_str("ping")
        assert (await ws.receive(timeout=10)).data == "echo:ping"
        payload = bytes(range(256)) * 300  # larger than one read: the tunnel carries it whole
        await ws.send_bytes(payload)
        assert (await ws.receive(timeout=10)).data == payload[::-1]
    await asyncio.wait_for(closed.wait(), 10)  # the client's close reached the upstream

    async with http.ws_connect(proxy.url("/ws"), headers={"apikey": "k1"}) as ws:
        assert (await ws.receive(timeout=10)).data == "hello from upstream"
    with pytest.raises(aiohttp.WSServerHandshakeError) as limited:
        await http.ws_connect(proxy.url("/ws"), headers={"apikey": "k1"})
    assert limited.value.status == 429


async def test_upgrade_refused_by_the_upstream_is_relayed_and_closes(proxy: Proxy, serve: ServeFn) -> None:
    async def plain(_: web.Request) -> web.Response:
        return web.Response(status=400, text="no websockets here")

    app = web.Application()
    app.router.add_get("/ws", plain)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", await serve(app)))},
                           routes={"r": route(paths=["/"])}))  # fmt: skip
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")  # fmt: skip
        resp = await conn.response()
        assert resp.status == 400 and resp.body == b"no websockets here"
        assert await conn.closed(5)
    finally:
        await conn.close()


async def test_a_quiet_websocket_outlives_the_upstream_read_timeout(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    closed = asyncio.Event()
    port = await serve(ws_app(closed))
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port), timeouts={"connect": 2.0, "read": 0.2})},
                           routes={"ws": route(paths=["/ws"])}))  # fmt: skip
    async with http.ws_connect(proxy.url("/ws"), autoping=False) as ws:
        assert (await ws.receive(timeout=10)).data == "hello from upstream"
        await asyncio.sleep(0.8)  # four read timeouts of silence: a tunnel has none
        await ws.send_str("still there?")
        assert (await ws.receive(timeout=10)).data == "echo:still there?"
