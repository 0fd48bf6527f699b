"""The inline request path: a route whose plugins never await, on a warm pooled connection, is
served without a task per request; whatever has to wait goes on in a task with the same result."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.plugins.base import Consumer, Later, Plugin, PluginChain, RequestContext
from proxy.plugins.rate_limit import RateLimit
from proxy.plugins.request_id import RequestId
from tests.proxy.conftest import Proxy, ServeFn, consumer, plugin_config, plugins, route, snapshot, upstream
from tests.proxy.test_plugins import ctx_for


def count_deferred(proxy: Proxy) -> list[int]:
    """Count the requests that took the task path (``DataPlane._later``)."""
    calls = [0]
    original = proxy.dp._later

    def counting(*args: Any) -> None:
        calls[0] += 1
        original(*args)

    proxy.dp._later = counting  # type: ignore[method-assign]
    return calls


async def upstream_with_ratelimit_header(serve: ServeFn) -> int:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.Response(text="ok")
        resp.headers["RateLimit-Limit"] = "999"  # the plugin's value must replace it, not join it
        resp.headers["X-Upstream"] = "1"
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return await serve(app)


async def test_sync_plugins_on_a_pooled_connection_need_no_task(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    port = await upstream_with_ratelimit_header(serve)
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port))},
        consumers={"alice": consumer(key_auth=["k1"])},
        routes={"a": route(paths=["/a"], plugins=plugins(
            request_id={}, key_auth={}, rate_limit={"limit": 1000, "window": 60, "key": "consumer"}))},
    ))  # fmt: skip
    deferred = count_deferred(proxy)
    async with http.get(proxy.url("/a"), headers={"apikey": "k1"}) as resp:  # opens the pooled connection
        assert resp.status == 200
    assert deferred[0] == 1
    for i in range(20):
        async with http.get(proxy.url("/a"), headers={"apikey": "k1"}) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
            assert resp.headers.getall("RateLimit-Limit") == ["1000"]
            assert resp.headers["RateLimit-Remaining"] == str(1000 - 2 - i)
            assert resp.headers["X-Upstream"] == "1" and len(resp.headers["X-Request-Id"]) == 32
    assert deferred[0] == 1, "requests on a warm connection through sync plugins took the task path"
    async with http.get(proxy.url("/a")) as resp:  # refused inline, with the plugin's JSON body
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
        assert "X-Request-Id" in resp.headers
    assert deferred[0] == 1


async def test_a_plugin_that_awaits_takes_the_task_path(
    proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    port = await upstream_with_ratelimit_header(serve)
    proxy.install(snapshot(
        upstreams={"u1": upstream(("127.0.0.1", port))},
        routes={"j": route(paths=["/j"], plugins=plugins(jwt_auth={"jwks_url": "http://127.0.0.1:9/jwks"}))},
    ))  # fmt: skip
    chain = proxy.dp.runtime.chains["j"]  # type: ignore[union-attr]
    assert not chain.sync
    deferred = count_deferred(proxy)
    async with http.get(proxy.url("/j")) as resp:
        assert resp.status == 401  # no token: refused by the awaiting plugin, in its task
    assert deferred[0] == 1


class Awaiting(Plugin):
    """A consumer plugin whose access phase awaits (it cannot run inline)."""

    name = "awaiting"
    priority = 100

    def __init__(self) -> None:
        super().__init__({})
        self.ran = 0

    async def access(self, ctx: RequestContext) -> Any:
        self.ran += 1
        return None


class Accepting(Plugin):
    name = "accepting"
    priority = 1000
    is_auth = True

    def __init__(self, who: Consumer) -> None:
        super().__init__({})
        self.who = who

    def check(self, ctx: RequestContext) -> Any:
        ctx.consumer = self.who
        return None


async def test_a_consumer_plugin_that_awaits_is_left_for_later() -> None:
    awaiting = Awaiting()
    assert not awaiting.sync
    alice = Consumer("alice", None, (awaiting,))
    limiter = RateLimit(plugin_config("rate-limit", limit=5, window=1.0))
    chain = PluginChain([Accepting(alice), limiter, RequestId(plugin_config("request-id"))])
    assert chain.sync
    ctx = ctx_for()
    later = chain.access_now(ctx)
    assert isinstance(later, Later) and awaiting in later.plugins and limiter in later.plugins
    assert ctx.request_id is not None and ctx.consumer is alice and awaiting.ran == 0
    assert await chain.access_later(ctx, later) is None
    assert awaiting.ran == 1


@pytest.mark.parametrize("plugin", ["rate-limit", "request-id"])
def test_header_lines_and_response_set_the_same_headers(plugin: str) -> None:
    p = RateLimit(plugin_config(plugin, limit=7, window=1.0)) if plugin == "rate-limit" else RequestId(
        plugin_config(plugin))
    ctx = ctx_for()
    assert p.check(ctx) is None
    resp = web.Response()
    p.response(ctx, resp)  # type: ignore[arg-type]
    lines = p.header_lines(ctx)
    assert lines and {name for name, _ in lines} == {k.lower().encode() for k in resp.headers if k.lower() != "content-type"}
    for name, line in lines:
        key, _, value = line.decode().rstrip("\r\n").partition(": ")
        assert resp.headers[key] == value and key.lower().encode() == name
