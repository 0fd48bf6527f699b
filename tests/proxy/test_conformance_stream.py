"""Bodies stream through the proxy: chunked both ways as the bytes arrive, and a 100 MB body each way
with the proxy's memory bounded (flow control in both directions)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from tests.proxy.conftest import Proxy, ServeFn, route, snapshot, upstream
from tests.support.raw_http import RawConn

MB = 1024 * 1024


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_chunked_request_and_response_stream_as_they_arrive(proxy: Proxy, serve: ServeFn) -> None:
    got_first = asyncio.Event()
    release = asyncio.Event()

    async def upload(request: web.Request) -> web.StreamResponse:
        seen = []
        async for chunk in request.content.iter_any():
            seen.append(bytes(chunk))
            got_first.set()
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"total=%d;" % sum(map(len, seen)))
        await release.wait()  # the client must see the first piece before the rest exists
        await resp.write(b"te=" + request.headers.get("Transfer-Encoding", "").encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/up", upload)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", await serve(app)))},
                           routes={"r": route(paths=["/"])}))  # fmt: skip
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.wait_for(got_first.wait(), 10)  # upstream has the first chunk, the client still holds the rest
        await conn.send(b"6\r\n world\r\n0\r\n\r\n")
        head = await conn.head()
        assert head.status == 200 and head.header("Transfer-Encoding") == "chunked"
        size = await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), 10)
        first = await asyncio.wait_for(conn.reader.readexactly(int(size, 16) + 2), 10)
        assert first == b"total=11;\r\n"
        release.set()
        rest = await conn.body(head)
        assert rest == b"te=chunked"
    finally:
        release.set()
        await conn.close()


async def test_response_without_length_is_rechunked_for_http11(proxy: Proxy, serve: ServeFn) -> None:
    async def until_close(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.force_close()
        await resp.prepare(request)  # HTTP/1.0-style body: no length, ends with the connection
        await resp.write(b"abc")
        await resp.write(b"def")
        return resp

    app = web.Application()
    app.router.add_get("/", until_close)

    async def http10_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
        await writer.drain()
        writer.write(b"def")
        writer.close()

    server = await asyncio.start_server(http10_upstream, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"r": route(paths=["/"])}))
        conn = await RawConn.open(proxy.port)
        try:
            await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = await conn.response()
            assert resp.header("Transfer-Encoding") == "chunked" and resp.body == b"abcdef"
            await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # and the client connection stays usable
            assert (await conn.response()).body == b"abcdef"
        finally:
            await conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_100_mb_each_way_with_bounded_proxy_memory(proxy: Proxy, serve: ServeFn) -> None:
    size = 100 * MB
    piece = b"z" * (256 * 1024)
    peak = {"rss": 0}

    async def sink(request: web.Request) -> web.Response:
        total = 0
        while True:
            chunk = await request.content.read(64 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total % (4 * MB) < 64 * 1024:
                await asyncio.sleep(0.005)  # a slow reader: without flow control the proxy would buffer
        return web.Response(text=str(total))

    async def source(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // len(piece)):
            await resp.write(piece)
        return resp

    app = web.Application(client_max_size=2 * size)
    app.router.add_post("/sink", sink)
    app.router.add_get("/source", source)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", await serve(app)))},
                           routes={"r": route(paths=["/"])}))  # fmt: skip
    baseline = rss()

    async def sample() -> None:
        while True:
            peak["rss"] = max(peak["rss"], rss())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    conn = await RawConn.open(proxy.port)
    try:
        await conn.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            await conn.send(piece)
        resp = await conn.response(timeout=60)
        assert resp.status == 200 and resp.body == str(size).encode()

        await conn.send(b"GET /source HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await conn.head(timeout=60)
        assert head.header("Content-Length") == str(size)
        received = 0
        while received < size:  # a slow client this time
            chunk = await asyncio.wait_for(conn.reader.read(256 * 1024), 60)
            assert chunk
            received += len(chunk)
            if received % (4 * MB) < 256 * 1024:
                await asyncio.sleep(0.005)
        assert received == size
    finally:
        sampler.cancel()
        await conn.close()
    growth = peak["rss"] - baseline
    print(f"rss baseline {baseline / MB:.1f} MB, peak growth {growth / MB:.1f} MB for 2 x {size // MB} MB")
    assert growth < 40 * MB, f"proxy buffered the body: RSS grew by {growth / MB:.1f} MB"
