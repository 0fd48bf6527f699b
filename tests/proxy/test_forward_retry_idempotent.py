"""An idempotent request whose target breaks after it was sent goes to another target (an instance
that dies under a request: docs/discovery.md); a POST is not retried."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.proxy.conftest import Proxy, ServeFn, echo_app, route, snapshot, upstream


def _rude_app() -> web.Application:
    async def rude(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # like an instance killed after it read the request
        raise asyncio.CancelledError

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rude)
    return app


async def test_get_is_retried_on_another_target_after_send(proxy: Proxy, serve: ServeFn,
                                                           http: aiohttp.ClientSession) -> None:
    dying, good = await serve(_rude_app()), await serve(echo_app("good"))
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", dying), ("127.0.0.1", good)),
                                      "u2": upstream(("127.0.0.1", dying))},
                           routes={"a": route(paths=["/"]), "p": route("u2", paths=["/post"])}))
    for _ in range(6):  # round robin: every other request picks the dying target first
        async with http.get(proxy.url("/x")) as resp:
            assert resp.status == 200, await resp.text()
    async with http.post(proxy.url("/post"), data=b"x") as resp:  # may have had effects: not retried
        assert resp.status == 502 and (await resp.json())["error"]["code"] == "upstream_error"
