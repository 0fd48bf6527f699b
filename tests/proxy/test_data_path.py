"""End to end: real upstreams and the proxy on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from yarl import URL

from tests.proxy.conftest import ListenFn, Proxy, ServeFn, echo_app, free_dead_port, route, snapshot, upstream


async def start_echo(serve: ServeFn, name: str = "up") -> int:
    return await serve(echo_app(name))


def hdrs(body: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in body["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


async def test_empty_mode_is_503_json(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    async with http.get(proxy.url("/x")) as resp:
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "no_config"
    async with http.get(proxy.status_url("/ready")) as resp:
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "not_ready"


async def test_routing_and_404(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    p1, p2 = await start_echo(serve, "one"), await start_echo(serve, "two")
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", p1)), "u2": upstream(("127.0.0.1", p2))},
        routes={"a": route("u1", paths=["/a"]), "b": route("u2", paths=["/b"], hosts=["b.test"])},
    ))
    async with http.get(proxy.url("/a/x?q=1&q=2")) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["name"] == "one"
        assert body["path"] == "/a/x" and body["query"] == "q=1&q=2"
    async with http.get(proxy.url("/b"), headers={"Host": "b.test"}) as resp:
        assert (await resp.json())["name"] == "two"
    async with http.get(proxy.url("/b")) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("application/json")
        assert (await resp.json()) == {"error": {"code": "no_route", "message": "no route matches this request"}}


async def test_strip_prefix_keeps_encoding_and_query(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    port = await start_echo(serve)
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port))},
        routes={"a": route(paths=["/api"], strip_prefix=True), "e": route(paths=["=/exact"], strip_prefix=True)},
    ))
    for path, expected in [("/api/users/a%20b?x=%2F", "/users/a%20b"), ("/api", "/"), ("/exact", "/")]:
        async with http.get(proxy.url(path)) as resp:
            body = await resp.json()
            assert body["path"] == expected, path
    async with http.get(URL(proxy.url("/api/x?x=%2F&y=a+b"), encoded=True)) as resp:
        assert (await resp.json())["query"] == "x=%2F&y=a+b"


async def test_header_handling(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})
        resp.headers["Connection"] = "keep-alive, X-Drop-Me"
        resp.headers["X-Drop-Me"] = "secret"
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    req_headers = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic xx",
        "Upgrade": "h2c",
        "X-Forwarded-For": "10.9.9.9",
        "X-Custom": "kept",
        "Host": "front.test:8080",
    }
    async with http.get(proxy.url("/h"), headers=req_headers) as resp:
        body = await resp.json()
        h = hdrs(body)
        for gone in ("x-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
            assert gone not in h, gone
        assert h["x-custom"] == ["kept"]
        assert h["x-forwarded-for"] == ["10.9.9.9, 127.0.0.1"]
        assert h["x-forwarded-proto"] == ["http"]
        assert h["x-forwarded-host"] == ["front.test:8080"]
        assert h["host"] == [f"127.0.0.1:{port}"]
        assert "user-agent" in h  # the client's own, not added by the proxy
        assert "X-Drop-Me" not in resp.headers and "Keep-Alive" not in resp.headers
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_streaming_both_ways(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    first_chunk_seen = asyncio.Event()
    release = asyncio.Event()

    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            first_chunk_seen.set()
        return web.json_response({"total": total, "te": request.headers.get("Transfer-Encoding")})

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first-")
        await release.wait()  # the client must see the first chunk before the rest exists
        await resp.write(b"second")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/up", upload)
    app.router.add_get("/down", download)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))

    gate = asyncio.Event()

    async def body():
        yield b"x" * 65536
        await gate.wait()  # the upstream has the first chunk while the client still holds the rest
        for _ in range(15):
            yield b"y" * 65536

    async def wait_and_open() -> None:
        await asyncio.wait_for(first_chunk_seen.wait(), 10)
        gate.set()

    opener = asyncio.create_task(wait_and_open())
    async with http.post(proxy.url("/up"), data=body()) as resp:
        result = await resp.json()
    await opener
    assert result == {"total": 16 * 65536, "te": "chunked"}

    async with http.get(proxy.url("/down")) as resp:
        assert resp.status == 200
        first = await asyncio.wait_for(resp.content.readexactly(6), 10)
        assert first == b"first-"
        release.set()
        assert await resp.content.read() == b"second"


async def test_content_length_body_and_compressed_passthrough(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    import gzip

    payload = gzip.compress(b"hello " * 1000)

    async def handler(request: web.Request) -> web.Response:
        data = await request.read()
        return web.Response(body=payload, headers={"Content-Encoding": "gzip", "X-Got": str(len(data)),
                                                   "X-CL": request.headers.get("Content-Length", "")})

    app = web.Application()
    app.router.add_route("*", "/", handler)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    async with http.put(proxy.url("/"), data=b"z" * 5000) as resp:
        assert resp.headers["X-Got"] == "5000" and resp.headers["X-CL"] == "5000"
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(payload))
        assert await resp.read() == payload
    async with http.head(proxy.url("/")) as resp:
        assert resp.status == 200
        assert await resp.read() == b""


async def test_retry_on_connect_failure_to_dead_port(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    port = await start_echo(serve, "alive")
    dead = free_dead_port()
    try:
        dead_port = dead.getsockname()[1]
        proxy.install(snapshot(
            upstreams={"u1": upstream(("127.0.0.1", dead_port), ("127.0.0.1", port), retries=1,
                                     health={"passive": {"max_failures": 2, "cooldown": 60.0}, "active": None})},
            routes={"a": route(paths=["/"])},
        ))
        for _ in range(4):  # round robin starts at the dead target half of the time
            async with http.post(proxy.url("/r"), data=b"body") as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["name"] == "alive" and body["body_len"] == 4
        pool = proxy.dp.runtime.pools["u1"]
        dead_target = pool.targets[0]
        assert not pool.eligible(dead_target)  # two connect failures: passively ejected
        assert pool.targets[1].inflight == 0
    finally:
        dead.close()


async def test_all_targets_dead_is_502(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    dead = free_dead_port()
    try:
        proxy.install(snapshot(
            upstreams={"u1": upstream(("127.0.0.1", dead.getsockname()[1]), retries=2)},
            routes={"a": route(paths=["/"])},
        ))
        async with http.get(proxy.url("/")) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["code"] == "upstream_unavailable"
    finally:
        dead.close()


async def test_read_timeout_is_504(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    never = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/", slow)
    port = await serve(app)
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port), timeouts={"connect": 2.0, "read": 0.2})},
        routes={"a": route(paths=["/"])},
    ))
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 504
        assert (await resp.json())["error"]["code"] == "upstream_timeout"
    never.set()


async def test_upstream_drops_connection_is_502(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    async def rude(request: web.Request) -> web.Response:
        request.transport.close()
        raise asyncio.CancelledError

    app = web.Application()
    app.router.add_post("/", rude)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    async with http.post(proxy.url("/"), data=b"x") as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_error"


async def test_upstream_error_statuses_pass_through(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="upstream says no")

    app = web.Application()
    app.router.add_get("/{code}", h)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    for code in (404, 500, 302):
        async with http.get(proxy.url(f"/{code}"), allow_redirects=False) as resp:
            assert resp.status == code and await resp.text() == "upstream says no"


async def test_no_healthy_target_is_503(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    port = await start_echo(serve)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    pool = proxy.dp.runtime.pools["u1"]
    for _ in range(3):
        pool.report_failure(pool.targets[0])
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "no_healthy_target"


async def test_least_conn_counters_return_to_zero(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    port = await start_echo(serve)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port), lb="least_conn")},
                           routes={"a": route(paths=["/"])}))
    await asyncio.gather(*(http.get(proxy.url(f"/{i}")) for i in range(10)))
    assert proxy.dp.runtime.pools["u1"].targets[0].inflight == 0


async def test_swap_keeps_pool_state_when_upstream_unchanged(proxy: Proxy, serve: ServeFn) -> None:
    port = await start_echo(serve)
    base = {"upstreams": {"u1": upstream(("127.0.0.1", port)), "u2": upstream(("127.0.0.1", port))}}
    proxy.install(snapshot(1, routes={"a": route(paths=["/a"])}, **base))
    pool_u1 = proxy.dp.runtime.pools["u1"]
    changed = {"upstreams": {"u1": upstream(("127.0.0.1", port)), "u2": upstream(("127.0.0.1", port), retries=3)}}
    old_u2 = proxy.dp.runtime.pools["u2"]
    proxy.install(snapshot(2, routes={"a": route(paths=["/b"])}, **changed))
    assert proxy.dp.runtime.pools["u1"] is pool_u1
    assert proxy.dp.runtime.pools["u2"] is not old_u2
    assert proxy.dp.revision == 2 and proxy.dp.hash == "h2"


async def test_json_errors_have_json_bodies(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", 1))}, routes={"a": route(paths=["/a"])}))
    async with http.get(proxy.url("/zzz")) as resp:
        raw = await resp.read()
        assert json.loads(raw)["error"]["message"]


async def test_upstream_breaking_off_mid_body_is_not_a_complete_response(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.query.get("cl"):
            resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b"partial")
        await asyncio.sleep(0)
        request.transport.abort()
        return resp

    app = web.Application()
    app.router.add_get("/", broken)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}))
    for query in ("", "?cl=1"):
        async with http.get(proxy.url("/" + query)) as resp:
            assert resp.status == 200
            try:
                await resp.read()
            except aiohttp.ClientPayloadError:
                pass
            else:
                raise AssertionError(f"truncated body{query} looked complete")
    pool = proxy.dp.runtime.pools["u1"]
    assert pool.targets[0].failures == 2 and pool.targets[0].inflight == 0


async def test_dot_segments_are_routed_and_forwarded_normalized(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    open_port, admin_port = await start_echo(serve, "open"), await start_echo(serve, "admin")
    proxy.install(snapshot(
        upstreams={"open": upstream(("127.0.0.1", open_port)), "admin": upstream(("127.0.0.1", admin_port))},
        routes={"public": route("open", paths=["/public"]), "admin": route("admin", paths=["/admin"])},
    ))
    for raw in ("/public/../admin/x", "/public/..%2Fadmin/x", "/public/%2E%2E/admin/x"):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET {raw} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert body["name"] == "admin" and body["path"] == "/admin/x", raw


async def test_client_going_away_mid_stream_does_not_blame_the_target(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    more = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"a" * 1024)
        await more.wait()
        try:
            for _ in range(64):
                await resp.write(b"b" * 65536)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    app = web.Application()
    app.router.add_get("/", slow)
    port = await serve(app)
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port), lb="least_conn")},
                           routes={"a": route(paths=["/"])}))
    resp = await http.get(proxy.url("/"))
    assert await resp.content.readexactly(1024) == b"a" * 1024
    resp.close()  # the client hangs up
    more.set()
    target = proxy.dp.runtime.pools["u1"].targets[0]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while target.inflight and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert target.inflight == 0 and target.failures == 0 and target.ejected_until == 0


async def test_source_address_binds_outgoing_connections(
    serve: ServeFn, listen: ListenFn, http: aiohttp.ClientSession
) -> None:
    from proxy.server import DataPlane

    async def who(request: web.Request) -> web.Response:
        return web.Response(text=request.remote or "")

    app = web.Application()
    app.router.add_get("/", who)
    port = await serve(app)
    dp = DataPlane(source_address="127.0.0.2")  # any 127/8 address is local on Linux
    proxy_port = await listen(dp)
    dp.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"a": route(paths=["/"])}),
               revision=1, hash="h")
    async with http.get(f"http://127.0.0.1:{proxy_port}/") as resp:
        assert resp.status == 200 and await resp.text() == "127.0.0.2"
