"""SyncClient against real PushHubs (in-memory stores) and against a scripted fake CP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from proxy.cache import ConfigCache
from proxy.runtime import build_runtime
from proxy.server import DataPlane
from proxy.sync import SyncClient, stream_url
from tests.cluster.test_push_fakes import (
    PROXY_TOKEN,
    FakeCluster,
    FakeStore,
    HubServer,
    delete,
    put,
    route,
    seed,
    until,
)
from tests.cluster.test_push_fakes import wire_decode as decode_frame
from tests.cluster.test_push_fakes import wire_encode as encode_frame


class Env:
    """Hubs, clients and servers created by a test; everything is stopped in teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stores = [FakeStore("n1"), FakeStore("n2")]
        self.cluster = FakeCluster(*self.stores)
        self.hubs: list[HubServer] = []
        self.clients: list[SyncClient] = []
        self.runners: list[web.AppRunner] = []

    async def hub(self, store: FakeStore, **kw: Any) -> HubServer:
        h = await HubServer(store, **kw).start()
        self.hubs.append(h)
        return h

    def client(self, urls: list[str], *, cache_name: str = "lkg", **kw: Any) -> SyncClient:
        kw.setdefault("seed", 1)
        kw.setdefault("backoff_initial", 0.02)
        kw.setdefault("backoff_max", 0.2)
        kw.setdefault("hold", 0.3)
        kw.setdefault("heartbeat", 2.0)
        kw.setdefault("first_endpoint", 0)
        c = SyncClient(urls, PROXY_TOKEN, "p1", DataPlane(), ConfigCache(self.tmp / cache_name), **kw)
        self.clients.append(c)
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.stop()
        for h in self.hubs:
            await h.stop()
        for r in self.runners:
            await r.cleanup()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.close()


def at(c: SyncClient, revision: int, mode: str = "synced") -> Callable[[], bool]:
    return lambda: c.dp.revision == revision and c.dp.mode == mode


def test_stream_url() -> None:
    assert stream_url("http://127.0.0.1:7001") == "ws://127.0.0.1:7001/v1/stream"
    assert stream_url("https://cp.example/") == "wss://cp.example/v1/stream"
    assert stream_url("127.0.0.1:7001") == "ws://127.0.0.1:7001/v1/stream"
    assert stream_url("ws://h:1/v1/stream") == "ws://h:1/v1/stream"


def test_backoff_is_seeded_jittered_and_capped() -> None:
    def seq(seed: int) -> list[float]:
        c = SyncClient(
            ["http://x"], "t", "p", DataPlane(), None, seed=seed, backoff_initial=0.1, backoff_max=2.0
        )
        return [c.backoff(i) for i in range(8)]

    a, b = seq(3), seq(3)
    assert a == b and a != seq(4)
    for i, d in enumerate(a):
        cap = min(2.0, 0.1 * 2**i)
        assert cap / 2 <= d <= cap


async def test_snapshot_then_deltas_then_cache(env: Env) -> None:
    head = seed(env.cluster)
    h = await env.hub(env.stores[0])
    c = env.client([h.url])
    assert c.dp.mode == "empty"
    c.start()
    await until(at(c, head), what="initial snapshot")
    assert c.dp.runtime is not None and c.dp.hash == env.stores[0].state.hash()
    assert c.dp.connected_cp == stream_url(h.url) and c.dp.last_sync is not None
    rev = env.cluster.write(put("routes", "new", route("/new")))
    await until(at(c, rev), what="delta")
    await until(lambda: h.hub.proxies()[0]["revision"] == rev, what="ack")
    assert c.applied == [head, rev] and c.nacks == []
    entry = ConfigCache(env.tmp / "lkg").load()
    assert entry is not None and (entry.revision, entry.hash) == (rev, c.dp.hash)
    assert h.hub.proxies()[0]["mode"] == "synced"


async def test_revisions_are_monotonic_under_a_burst(env: Env) -> None:
    seed(env.cluster)
    h = await env.hub(env.stores[0])
    c = env.client([h.url])
    c.start()
    await until(lambda: c.dp.mode == "synced", what="synced")
    for i in range(40):
        last = env.cluster.write(put("routes", f"b{i}", route(f"/b{i}")))
        if i % 7 == 0:
            await asyncio.sleep(0)
    await until(at(c, last), what="burst applied")
    assert c.applied == sorted(set(c.applied))
    assert h.hub.frames_sent["delta"] < 40  # coalesced while acks were outstanding
    assert c.state is not None and c.state == env.stores[0].state


async def test_boot_from_cache_then_resume_with_deltas(env: Env) -> None:
    head = seed(env.cluster)
    h = await env.hub(env.stores[0])
    first = env.client([h.url])
    first.start()
    await until(at(first, head), what="first sync")
    await first.stop()
    rev = env.cluster.write(delete("routes", "r0"))
    c = env.client([h.url])
    assert c.boot_from_cache() and c.dp.mode == "cached" and c.dp.revision == head
    c.start()
    await until(at(c, rev), what="resumed")
    assert c.applied == [head, rev] and h.hub.frames_sent["snapshot"] == 1  # resume used a delta


async def test_failover_to_second_hub(env: Env) -> None:
    head = seed(env.cluster)
    h1, h2 = await env.hub(env.stores[0]), await env.hub(env.stores[1])
    c = env.client([h1.url, h2.url])
    c.start()
    await until(at(c, head), what="sync")
    first = c.connected_url
    dead, alive = (h1, h2) if first == stream_url(h1.url) else (h2, h1)
    await dead.stop()
    rev = env.cluster.write(put("routes", "after", route("/after")), to=[alive.store])
    await until(lambda: at(c, rev)() and c.connected_url == stream_url(alive.url), what="failover")
    assert c.applied == [head, rev]


async def test_leaves_node_without_quorum(env: Env) -> None:
    head = seed(env.cluster)
    h1, h2 = await env.hub(env.stores[0]), await env.hub(env.stores[1])
    c = env.client([h1.url, h2.url])
    c.start()
    await until(lambda: at(c, head)() and c.connected_url == stream_url(h1.url), what="on n1")
    env.stores[0].set_status(has_quorum=False, leader_id=None)
    await until(lambda: c.connected_url == stream_url(h2.url) and c.dp.mode == "synced", what="moved to n2")
    assert c.endpoints[0].has_quorum is False


async def test_leaves_node_that_is_behind(env: Env) -> None:
    seed(env.cluster)
    rev = env.cluster.write(put("routes", "only-n2", route("/n2")), to=[env.stores[1]])
    h1, h2 = await env.hub(env.stores[0]), await env.hub(env.stores[1])
    c = env.client([h2.url])
    c.start()
    await until(at(c, rev), what="sync from n2")
    await c.stop()
    c2 = env.client([h1.url, h2.url])  # n1 is behind the cached revision
    assert c2.boot_from_cache()
    c2.start()
    await until(lambda: c2.connected_url == stream_url(h2.url) and c2.dp.mode == "synced", what="chose n2")
    assert c2.endpoints[0].revision == rev - 1 and c2.dp.revision == rev  # never went backwards


async def test_cached_mode_when_all_hubs_gone_then_recovers(env: Env) -> None:
    head = seed(env.cluster)
    h1, h2 = await env.hub(env.stores[0]), await env.hub(env.stores[1])
    c = env.client([h1.url, h2.url])
    c.start()
    await until(at(c, head), what="sync")
    await h1.stop()
    await h2.stop()
    await until(at(c, head, "cached"), what="cached mode")
    assert c.dp.connected_cp is None and c.dp.runtime is not None
    await h1.start()  # same port: the client comes back on its own
    await until(at(c, head, "synced"), timeout=10, what="resynced")


async def test_empty_mode_when_nothing_reachable(env: Env) -> None:
    h = await env.hub(env.stores[0])
    url = h.url
    await h.stop()
    c = env.client([url])
    c.start()
    await until(lambda: c.endpoints[0].reason == "unreachable", what="attempt")
    assert c.dp.mode == "empty" and c.dp.runtime is None


async def test_build_error_is_nacked_and_old_config_kept(env: Env) -> None:
    def picky(snapshot: Any, **kw: Any) -> Any:
        if snapshot.get("routes", "bad") is not None:  # the sync client builds from a ConfigState
            raise ValueError("routes[bad]: refused by test")
        return build_runtime(snapshot, **kw)

    head = seed(env.cluster)
    h = await env.hub(env.stores[0])
    c = env.client([h.url], build_runtime=picky)
    c.start()
    await until(at(c, head), what="sync")
    runtime = c.dp.runtime
    bad = env.cluster.write(put("routes", "bad", route("/bad")))
    await until(lambda: len(c.nacks) >= 2, what="delta and snapshot nacked")
    assert c.dp.runtime is runtime and c.dp.revision == head and c.dp.mode == "synced"
    assert all(r == bad for r, _ in c.nacks) and "refused by test" in c.dp.last_error
    await until(lambda: h.hub.proxies()[0]["last_error"] is not None, what="nack recorded")
    fixed = env.cluster.write(delete("routes", "bad"))
    await until(at(c, fixed), what="recovered")
    assert c.dp.last_error is None


async def test_chunked_snapshot_for_large_config(env: Env) -> None:
    seed(env.cluster, routes=0)
    env.cluster.write(*[put("routes", f"r{i:04d}", route(f"/long/path/{i:04d}")) for i in range(300)])
    h = await env.hub(env.stores[0], chunk_size=1024)
    c = env.client([h.url])
    c.start()
    await until(at(c, env.cluster.state.revision), what="snapshot installed")
    assert c.state == env.stores[0].state


# ---- a scripted control plane, to send what a correct hub never would ----------------------------

Script = Callable[[web.WebSocketResponse, list[dict[str, Any]]], Awaitable[None]]


async def scripted(env: Env, script: Script) -> tuple[str, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        reader = asyncio.create_task(_collect(ws, received))
        try:
            await script(ws, received)
            await reader
        finally:
            reader.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/v1/stream", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    env.runners.append(runner)
    return f"http://127.0.0.1:{runner.addresses[0][1]}", received


async def _collect(ws: web.WebSocketResponse, out: list[dict[str, Any]]) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            out.append(decode_frame(msg.data))


STATUS = {"t": "status", "node_id": "f1", "leader_id": "f1", "term": 1, "has_quorum": True}


async def test_base_mismatch_asks_resync_once(env: Env) -> None:
    src = FakeStore()
    head = seed(FakeCluster(src))
    snap_hub = await env.hub(src)
    c = env.client([snap_hub.url])
    c.start()
    await until(at(c, head), what="baseline")
    await c.stop()

    async def script(ws: web.WebSocketResponse, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) >= 2, what="hello+mode")
        await ws.send_bytes(encode_frame({**STATUS, "revision": head + 5}))
        for base in (head + 2, head + 3):  # two stale deltas: one resync, not two
            await ws.send_bytes(
                encode_frame({"t": "delta", "base": base, "revision": base + 1, "ops": [], "hash": "x"})
            )
        await until(lambda: any(f["t"] == "resync" for f in got), what="resync")

    url, got = await scripted(env, script)
    c2 = env.client([url])
    assert c2.boot_from_cache()
    c2.start()
    await until(lambda: any(f["t"] == "resync" for f in got), what="resync")
    await until(lambda: c2.dp.mode == "synced", what="synced")
    assert [f for f in got if f["t"] == "resync"] == [{"t": "resync", "revision": head}]
    assert got[0]["t"] == "hello" and got[0]["revision"] == head and c2.dp.revision == head


async def test_invalid_frames_are_nacked(env: Env) -> None:
    src = FakeStore()
    head = seed(FakeCluster(src))
    h = await env.hub(src)
    c = env.client([h.url])
    c.start()
    await until(at(c, head), what="baseline")
    await c.stop()
    good_hash = c.dp.hash

    async def script(ws: web.WebSocketResponse, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) >= 2, what="hello+mode")
        await ws.send_bytes(encode_frame({**STATUS, "revision": head + 1}))
        # 1: hash does not match the result of applying the delta
        await ws.send_bytes(
            encode_frame({"t": "delta", "base": head, "revision": head + 1, "ops": [], "hash": "f" * 64})
        )
        # 2: structurally invalid frame (ops is not a list) -> decode error naming its revision
        from gateway.codec import encode

        await ws.send_bytes(encode({"t": "delta", "base": head, "revision": head + 1, "ops": 7, "hash": "x"}))
        # 3: a snapshot whose body is garbage
        await ws.send_bytes(encode_frame({"t": "snapshot", "revision": head + 1, "hash": "h", "chunk": 0,
                                          "chunks": 1, "data": b"not zlib"}))  # fmt: skip
        await until(lambda: sum(f["t"] == "nack" for f in got) >= 3, what="three nacks")

    url, got = await scripted(env, script)
    c2 = env.client([url])
    assert c2.boot_from_cache()
    c2.start()
    await until(lambda: sum(f["t"] == "nack" for f in got) >= 3, what="nacks")
    nacks = [f for f in got if f["t"] == "nack"]
    assert all(n["revision"] == head + 1 for n in nacks)
    errors = " | ".join(n["error"] for n in nacks)  # the decode error is nacked by the reader, first
    assert "hash mismatch" in errors and "invalid frame" in errors and "decompress" in errors
    assert c2.dp.revision == head and c2.dp.hash == good_hash and c2.applied == [head]


async def test_older_snapshot_is_never_applied(env: Env) -> None:
    src = FakeStore()
    cl = FakeCluster(src)
    seed(cl)
    h = await env.hub(src)
    old_snapshot = {}
    c = env.client([h.url])
    c.start()
    await until(at(c, src.state.revision), what="baseline")
    old_rev = c.dp.revision
    from gateway.codec import encode_snapshot

    old_snapshot["data"], old_snapshot["hash"] = encode_snapshot(src.state), src.state.hash()
    newer = cl.write(put("routes", "n", route("/n")))
    await until(at(c, newer), what="newer")
    await c.stop()

    async def script(ws: web.WebSocketResponse, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) >= 2, what="hello")
        await ws.send_bytes(encode_frame({**STATUS, "revision": newer}))
        await ws.send_bytes(encode_frame({"t": "snapshot", "revision": old_rev, "hash": old_snapshot["hash"],
                                          "chunk": 0, "chunks": 1, "data": old_snapshot["data"]}))  # fmt: skip
        await until(lambda: any(f["t"] == "resync" for f in got), what="resync")

    url, got = await scripted(env, script)
    c2 = env.client([url])
    assert c2.boot_from_cache()
    c2.start()
    await until(lambda: any(f["t"] == "resync" for f in got), what="resync")
    assert c2.dp.revision == newer and c2.applied == [newer]
