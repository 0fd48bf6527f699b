"""DataPlane and the status app: modes, /status /ready /live /metrics, health-check lifecycle."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from proxy.plugins.base import Plugin
from proxy.runtime import build_runtime
from proxy.server import DataPlane
from tests.proxy.conftest import Proxy, ServeFn, echo_app, route, snapshot, upstream


async def test_status_live_ready_metrics(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession) -> None:
    async with http.get(proxy.status_url("/status")) as resp:
        st = await resp.json()
        assert st["mode"] == "empty" and st["revision"] == 0 and st["hash"] is None
        assert st["connected_cp"] is None and st["seconds_since_sync"] is None and st["routes"] == 0
    async with http.get(proxy.status_url("/live")) as resp:
        assert resp.status == 200
    port = await serve(echo_app())
    proxy.install(snapshot(7, upstreams={"u1": upstream(("127.0.0.1", port))},
                           routes={"r1": route(paths=["/a"]), "r2": route(paths=["/b"])}))
    proxy.dp.mark_synced("http://cp-1:7000")
    async with http.get(proxy.status_url("/ready")) as resp:
        assert resp.status == 200
    async with http.get(proxy.status_url("/status")) as resp:
        st = await resp.json()
        assert st["mode"] == "synced" and st["revision"] == 7 and st["hash"] == "h7"
        assert st["connected_cp"] == "http://cp-1:7000" and st["seconds_since_sync"] >= 0
        assert st["routes"] == 2 and st["upstreams"] == {"u1": {f"127.0.0.1:{port}": True}}
    for path in ("/a", "/a", "/zzz"):
        async with http.get(proxy.url(path)) as resp:
            await resp.read()
    async with http.get(proxy.status_url("/metrics")) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'gwadm_proxy_requests_total{route="r1",status="200"} 2.0' in text
    assert 'gwadm_proxy_requests_total{route="",status="404"} 1.0' in text
    assert 'gwadm_proxy_request_duration_seconds_count{route="r1"} 2.0' in text
    assert "gwadm_proxy_config_revision 7.0" in text
    assert 'gwadm_proxy_mode{mode="synced"} 1.0' in text and 'gwadm_proxy_mode{mode="empty"} 0.0' in text
    assert f'gwadm_proxy_upstream_target_healthy{{target="127.0.0.1:{port}",upstream="u1"}} 1.0' in text
    assert "gwadm_proxy_config_apply_duration_seconds_count 1.0" in text
    assert "gwadm_proxy_sync_lag_seconds" in text


def test_metrics_registries_are_per_dataplane() -> None:
    a, b = DataPlane(), DataPlane()
    a.metrics.observe_request("r", 200, 0.01)
    assert b'route="r"' in a.metrics.render() and b'route="r"' not in b.metrics.render()


def test_swap_modes() -> None:
    dp = DataPlane()
    rt = build_runtime(snapshot(1), revision=1, hash="a")
    dp.swap(rt)
    assert dp.mode == "synced" and dp.revision == 1 and dp.hash == "a"
    dp.swap(build_runtime(snapshot(2), revision=2, hash="b"), mode="cached")
    assert dp.mode == "cached"
    dp.swap(build_runtime(snapshot(3), revision=3, hash="c"))
    assert dp.mode == "cached"  # unchanged unless asked
    with pytest.raises(ValueError):
        dp.swap(rt, mode="weird")


def test_install_failure_keeps_the_old_runtime() -> None:
    dp = DataPlane()
    dp.install(snapshot(1), revision=1, hash="a")
    old = dp.runtime
    with pytest.raises(ValueError):
        dp.install(snapshot(2, routes={"r": route("missing", paths=["/"])}), revision=2, hash="b")
    assert dp.runtime is old and dp.revision == 1


async def test_active_checks_follow_pools_across_swaps(serve: ServeFn) -> None:
    hits: list[str] = []

    async def health(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", health)
    port = await serve(app)
    active = {"path": "/hc", "interval": 0.01, "timeout": 1.0, "healthy_threshold": 1, "unhealthy_threshold": 1}
    checked = upstream(("127.0.0.1", port), health={"passive": {"max_failures": 3, "cooldown": 1.0}, "active": active})
    dp = DataPlane()
    dp.install(snapshot(1, upstreams={"u1": checked}), revision=1, hash="a")
    pool = dp.runtime.pools["u1"]
    assert not pool.checking  # no session before start
    await dp.start()
    try:
        assert pool.checking
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not hits and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert hits and hits[0] == "/hc"
        dp.install(snapshot(2, upstreams={"u1": checked}), revision=2, hash="b")
        assert dp.runtime.pools["u1"] is pool and pool.checking  # unchanged upstream: same checker
        dp.install(snapshot(3), revision=3, hash="c")  # upstream gone: checker stops
        deadline = loop.time() + 5
        while pool.checking and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not pool.checking
    finally:
        await dp.close()


class Boom(Plugin):
    name = "boom"
    priority = 500

    async def access(self, ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")


async def test_plugin_crash_is_a_500_json(proxy: Proxy, serve: ServeFn, http: aiohttp.ClientSession,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import runtime as runtime_mod

    monkeypatch.setitem(runtime_mod.PLUGINS, "boom", Boom)
    port = await serve(echo_app())
    proxy.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))},
                           routes={"r": route(paths=["/"], plugins={"boom": {}})}))
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 500 and (await resp.json())["error"]["code"] == "internal_error"
