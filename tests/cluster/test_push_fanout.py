"""A change is fanned out from the store callback: framed once, the same bytes to every parked
session at its base; anything a parked sender would do first (status, credentials) still goes first."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cli.certs import create_ca, issue
from cluster.auth import mint_token_claims
from cluster.push import PushHub, add_routes
from cluster.push_session import ws_binary_frame
from cluster.tls import client_context, server_context
from gateway.codec import decode
from gateway.delta import Delta, apply_delta
from tests.cluster.test_push_fakes import (
    PROXY_TOKEN,
    SECRET,
    FakeCluster,
    FakeStore,
    HubServer,
    RawProxy,
    auth_middleware,
    put,
    route,
    seed,
    until,
    upstream,
)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_ws_binary_frame_header_is_rfc6455(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = ws_binary_frame(payload)
    assert frame[0] == 0x82  # FIN, opcode 2 (binary), no RSV bits: not compressed
    assert frame[1] & 0x80 == 0  # a server never masks
    if size < 126:
        assert frame[1] == size and frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size and frame[4:] == payload
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size and frame[10:] == payload


async def _raw_config(c: RawProxy) -> bytes:
    """The next non-status message, as the bytes that arrived."""
    while True:
        msg = await c.ws.receive(timeout=5.0)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        if decode(msg.data)["t"] != "status":
            return bytes(msg.data)


async def _parked(srv: HubServer, count: int) -> None:
    sessions = srv.hub._sessions.values()
    await until(lambda: len(sessions) == count and all(s.parked for s in sessions), what="parked senders")


@pytest.mark.parametrize("paths", [1, 40])  # frames of ~0.3 and ~80 KB: 2- and 8-byte lengths
async def test_a_change_reaches_every_parked_session_as_the_same_bytes(paths: int) -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    srv = await HubServer(store).start()
    proxies: list[RawProxy] = []
    try:
        head = seed(cluster)
        base = store.state
        for i in range(4):
            c = await RawProxy.connect(srv.url)
            proxies.append(c)
            await c.hello(head, base.hash(), proxy_id=f"p{i}")
            assert (await c.recv())["t"] == "status"
        await _parked(srv, 4)
        before = srv.hub.fanned_out
        body = {"paths": [f"/x{i}" + "y" * (2000 if paths > 1 else 0) for i in range(paths)], "upstream": "u1"}
        new = cluster.write(put("routes", "x", body))
        got = [await _raw_config(c) for c in proxies]
        assert 126 <= len(got[0]) < 65536 if paths == 1 else len(got[0]) > 65536
        assert len(set(got)) == 1 and got[0] == srv.hub._delta_frames[(head, new)]
        assert srv.hub.fanned_out - before == 4  # all from the store callback, none by a sender
        d = decode(got[0])
        assert (d["t"], d["base"], d["revision"]) == ("delta", head, new)
        state = apply_delta(base, Delta(d["base"], d["revision"], tuple(tuple(op) for op in d["ops"])))
        assert state.hash() == d["hash"] == store.state.hash()
        for c in proxies:  # the session book-keeping saw the frame: its ack moves the registry
            await c.send({"t": "ack", "revision": new})
        await until(lambda: all(s.acked == new for s in srv.hub._sessions.values()), what="acks")
        assert all(s.deltas_sent == 1 and not s.inflight for s in srv.hub._sessions.values())
    finally:
        for c in proxies:
            await c.close()
        await srv.stop()


async def test_an_unacked_session_gets_the_coalesced_delta_after_its_ack() -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    srv = await HubServer(store).start()
    c = await RawProxy.connect(srv.url)
    try:
        head = seed(cluster)
        await c.hello(head, store.state.hash())
        await _parked(srv, 1)
        first = cluster.write(put("routes", "a", route("/a")))
        assert decode(await _raw_config(c))["revision"] == first
        second = cluster.write(put("routes", "b", route("/b")))
        third = cluster.write(put("routes", "c", route("/c")))  # in flight: nothing more is sent yet
        await c.send({"t": "ack", "revision": first})
        d = decode(await _raw_config(c))
        assert (d["base"], d["revision"]) == (first, third) and second < third
    finally:
        await c.close()
        await srv.stop()


async def test_a_status_change_still_goes_before_the_delta() -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    srv = await HubServer(store).start()
    c = await RawProxy.connect(srv.url)
    try:
        head = seed(cluster)
        await c.hello(head, store.state.hash())
        assert (await c.recv())["term"] == 1
        await _parked(srv, 1)
        store.status["term"] = 2  # a new term and a change in one store notification
        new = cluster.write(put("routes", "x", route("/x")))
        status = await c.recv()
        assert (status["t"], status["term"], status["revision"]) == ("status", 2, new)
        assert (await c.recv())["revision"] == new
        assert srv.hub.fanned_out == 0
    finally:
        await c.close()
        await srv.stop()


async def test_a_token_revoked_with_the_change_gets_no_delta() -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    srv = await HubServer(store).start()
    token, claims = mint_token_claims(SECRET, "proxy", "p-revoked")
    c = await RawProxy.connect(srv.url, token)
    try:
        head = seed(cluster)
        await c.hello(head, store.state.hash())
        assert (await c.recv())["t"] == "status"
        await _parked(srv, 1)
        store.revoked.add(claims["jti"])
        cluster.write(put("routes", "x", route("/x")))
        f: dict[str, Any] = await c.recv()
        assert f["t"] == "error" and f["code"] == "unauthorized", f
        assert srv.hub.fanned_out == 0 and srv.hub.frames_sent["delta"] == 0
    finally:
        await c.close()
        await srv.stop()


async def test_the_fan_out_writes_through_a_tls_transport(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    leaf = issue(tmp_path, "n1", ["127.0.0.1"])
    store = FakeStore()
    cluster = FakeCluster(store)
    hub = PushHub(store, "gwadm/test", heartbeat=2.0)
    app = web.Application(middlewares=[auth_middleware])
    add_routes(app, hub)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(str(leaf.cert), str(leaf.key))).start()
    url = f"wss://127.0.0.1:{runner.addresses[0][1]}/v1/stream"
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {PROXY_TOKEN}"}, ssl=client_context(str(ca.cert)))
        c = RawProxy(http, ws)
        head = seed(cluster)
        await c.hello(head, store.state.hash())
        await until(lambda: len(hub._sessions) == 1 and all(s.parked for s in hub._sessions.values()), what="parked")
        new = cluster.write(put("routes", "x", route("/x")))
        assert decode(await _raw_config(c))["revision"] == new
        assert hub.fanned_out == 1
        await c.close()
    finally:
        await http.close()
        await runner.cleanup()


async def test_without_sessions_a_store_change_reads_no_status() -> None:
    """Every applied batch of writes wakes the hub: with no proxy connected it reads nothing (the
    status is read when a session asks), and the session then sees the status as it is now."""
    reads = 0

    class CountingStore(FakeStore):
        def feed_status(self) -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return super().feed_status()

    store = CountingStore()
    cluster = FakeCluster(store)
    hub = PushHub(store, "gwadm/test", heartbeat=2.0)
    hub.start()
    reads = 0
    for i in range(5):
        cluster.write(put("upstreams", f"u{i}", upstream()))
    await asyncio.sleep(0)  # the store's subscriber calls run in the loop
    await asyncio.sleep(0)
    assert reads == 0
    store.status = {"leader_id": "n2", "term": 7, "has_quorum": True}
    store._notify()
    await asyncio.sleep(0)
    assert hub._status is None and hub._read_status().term == 7 and reads == 1
