"""PushHub against a raw websocket client: exactly which frames go out, and when."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from cluster.auth import mint_token_claims
from cluster.push import PushHub
from gateway.codec import decode
from gateway.delta import Delta, apply_delta
from gateway.state import ConfigState
from tests.cluster.test_push_fakes import (
    PROXY_TOKEN,
    SECRET,
    VIEWER_TOKEN,
    FakeCluster,
    FakeStore,
    HubServer,
    RawProxy,
    delete,
    put,
    route,
    seed,
    until,
)


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    store = FakeStore()
    cluster = FakeCluster(store)
    servers: list[HubServer] = []
    clients: list[RawProxy] = []

    async def server(**kw: Any) -> HubServer:
        s = await HubServer(store, **kw).start()
        servers.append(s)
        return s

    async def client(srv: HubServer, token: str = PROXY_TOKEN) -> RawProxy:
        c = await RawProxy.connect(srv.url, token)
        clients.append(c)
        return c

    yield {"store": store, "cluster": cluster, "server": server, "client": client}
    for c in clients:
        await c.close()
    for s in servers:
        await s.stop()


def assemble(frames: list[dict[str, Any]]) -> ConfigState:
    data = b"".join(f["data"] for f in frames)
    return ConfigState.from_snapshot(decode(zlib.decompress(data)))


async def snapshot(
    c: RawProxy, first: dict[str, Any] | None = None
) -> tuple[ConfigState, list[dict[str, Any]]]:
    f = first or await c.recv_config()
    assert f["t"] == "snapshot" and f["chunk"] == 0
    frames = [f]
    while len(frames) < f["chunks"]:
        frames.append(await c.recv_config())
        assert frames[-1]["chunk"] == len(frames) - 1
    return assemble(frames), frames


async def test_hello_at_zero_gets_status_then_snapshot(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    c = await env["client"](await env["server"]())
    await c.hello(0)
    status = await c.recv()
    assert status == {
        "t": "status",
        "node_id": "n1",
        "leader_id": "n1",
        "term": 1,
        "has_quorum": True,
        "revision": head,
        "members": ["http://127.0.0.1:8001"],
        "hash": env["store"].state.hash(),  # hybrid proxies compare theirs (anti-entropy)
    }
    state, frames = await snapshot(c)
    assert len(frames) == 1 and frames[0]["revision"] == head
    assert state == env["store"].state and frames[0]["hash"] == state.hash()


async def test_empty_cluster_sends_nothing_to_empty_proxy(env: dict[str, Any]) -> None:
    c = await env["client"](await env["server"]())
    await c.hello(0)
    assert (await c.recv())["t"] == "status"
    env["store"].set_status(term=2)  # next frame must be the status, not a snapshot
    assert (await c.recv())["term"] == 2


async def test_small_lag_gets_one_composed_delta_then_live_deltas(env: dict[str, Any]) -> None:
    cluster = env["cluster"]
    seed(cluster, routes=0)
    old = env["store"].state
    cluster.write(put("routes", "a", route("/a")))
    head = cluster.write(put("routes", "b", route("/b")))
    head = cluster.write(delete("routes", "a"))
    c = await env["client"](await env["server"]())
    await c.hello(old.revision, old.hash())
    d = await c.recv_config()
    assert d["t"] == "delta" and (d["base"], d["revision"]) == (old.revision, head)
    new = apply_delta(old, Delta(d["base"], d["revision"], d["ops"]))
    assert new.hash() == d["hash"] == env["store"].state.hash()
    await c.send({"t": "ack", "revision": head})
    rev = cluster.write(put("routes", "c", route("/c")))
    d = await c.recv_config()
    assert (d["t"], d["base"], d["revision"]) == ("delta", head, rev)


async def test_a_hub_without_sessions_is_not_woken_by_writes_and_the_next_session_is_current(
    env: dict[str, Any],
) -> None:
    """With no session the hub declines config changes (ConfigStore.subscribe: on a follower each
    wake-up cost the tick thread a GIL hand-off per write); a proxy that connects later still gets
    the newest state, and a session that has left unsubscribes the hub from writes again."""
    cluster, store = env["cluster"], env["store"]
    seed(cluster, routes=0)
    old = store.state
    srv = await env["server"]()
    srv.hub.start()
    declined = store.changes_declined
    head = cluster.write(put("routes", "a", route("/a")))
    assert store.changes_declined == declined + 1
    c = await env["client"](srv)
    await c.hello(old.revision, old.hash())
    d = await c.recv_config()
    assert (d["t"], d["base"], d["revision"]) == ("delta", old.revision, head)
    await c.send({"t": "ack", "revision": head})
    rev = cluster.write(put("routes", "b", route("/b")))  # a session: reported and pushed
    assert store.changes_declined == declined + 1
    assert (await c.recv_config())["revision"] == rev
    await c.close()
    await until(lambda: not srv.hub._sessions, what="the session dropped")
    cluster.write(put("routes", "c", route("/c")))
    assert store.changes_declined == declined + 2


async def test_outside_window_gets_snapshot(env: dict[str, Any]) -> None:
    env["store"].window = 2
    head = seed(env["cluster"], routes=5)
    c = await env["client"](await env["server"]())
    await c.hello(2, "whatever")
    state, _ = await snapshot(c)
    assert state.revision == head


async def test_hash_mismatch_at_same_revision_gets_snapshot(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    c = await env["client"](await env["server"]())
    await c.hello(head, "0" * 64)
    state, _ = await snapshot(c)
    assert state.revision == head


async def test_in_sync_proxy_gets_nothing(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    c = await env["client"](await env["server"]())
    await c.hello(head, env["store"].state.hash())
    assert (await c.recv())["t"] == "status"
    env["store"].set_status(term=5)
    assert (await c.recv())["term"] == 5


async def test_proxy_ahead_gets_status_only(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    c = await env["client"](await env["server"]())
    await c.hello(head + 10, "future")
    st = await c.recv()
    assert st["t"] == "status" and st["revision"] == head
    env["store"].set_status(leader_id="n2", term=2)
    st = await c.recv()
    assert (st["t"], st["leader_id"]) == ("status", "n2")


async def test_status_frames_follow_the_membership(env: dict[str, Any]) -> None:
    """A member added or removed reaches the proxy with the next status frame (periodic, at the
    latest), so proxies can fail over to nodes their --cp never named."""
    head = seed(env["cluster"])
    c = await env["client"](await env["server"](status_interval=0.2))
    await c.hello(head, env["store"].state.hash())
    assert (await c.recv())["members"] == ["http://127.0.0.1:8001"]
    env["store"].members = ["http://127.0.0.1:8001", "http://127.0.0.1:8004"]  # no notification
    assert (await c.recv())["members"] == ["http://127.0.0.1:8001", "http://127.0.0.1:8004"]


async def test_quorum_loss_is_announced(env: dict[str, Any]) -> None:
    seed(env["cluster"])
    c = await env["client"](await env["server"]())
    await c.hello(0)
    await snapshot(c)
    env["store"].set_status(has_quorum=False, leader_id=None)
    st = await c.recv()
    assert st["t"] == "status" and st["has_quorum"] is False and st["leader_id"] is None


async def test_resync_restarts_from_the_given_revision(env: dict[str, Any]) -> None:
    head = seed(env["cluster"], routes=4)
    c = await env["client"](await env["server"]())
    await c.hello(head, env["store"].state.hash())
    await c.send({"t": "resync", "revision": 2})
    d = await c.recv_config()
    assert (d["t"], d["base"], d["revision"]) == ("delta", 2, head)


async def test_coalescing_under_burst(env: dict[str, Any]) -> None:
    cluster = env["cluster"]
    head = seed(cluster)
    srv = await env["server"]()
    c = await env["client"](srv)
    await c.hello(head, env["store"].state.hash())
    first = cluster.write(put("routes", "x0", route("/x0")))
    d = await c.recv_config()
    assert (d["base"], d["revision"]) == (head, first)
    for i in range(1, 30):  # the proxy has not acked: these must not be sent one by one
        last = cluster.write(put("routes", f"x{i}", route(f"/x{i}")))
    env["store"].set_status(term=9)
    assert (await c.recv())["term"] == 9  # nothing was sent in between
    await c.send({"t": "ack", "revision": first})
    d = await c.recv_config()
    assert (d["t"], d["base"], d["revision"]) == ("delta", first, last)
    assert len(d["ops"]) == 29
    assert srv.hub.frames_sent["delta"] == 2


async def test_nack_records_error_and_sends_snapshot_then_waits(env: dict[str, Any]) -> None:
    cluster = env["cluster"]
    head = seed(cluster)
    srv = await env["server"]()
    c = await env["client"](srv)
    await c.hello(head, env["store"].state.hash())
    rev = cluster.write(put("routes", "bad", route("/bad")))
    d = await c.recv_config()
    await c.send({"t": "nack", "revision": d["revision"], "error": "boom"})
    state, _ = await snapshot(c)
    assert state.revision == rev
    entry = srv.hub.proxies()[0]
    assert entry["last_error"] == "boom" and entry["revision"] == head and entry["lag"] == 1
    # The snapshot fails too: the hub must not loop on it; it waits for a newer revision.
    await c.send({"t": "nack", "revision": rev, "error": "still boom"})
    env["store"].set_status(term=3)
    assert (await c.recv())["term"] == 3
    fixed = cluster.write(delete("routes", "bad"))
    state, _ = await snapshot(c)
    assert state.revision == fixed
    await c.send({"t": "ack", "revision": fixed})
    await until(lambda: srv.hub.proxies()[0]["revision"] == fixed, what="ack recorded")
    assert srv.hub.proxies()[0]["last_error"] is None


async def test_chunked_snapshot(env: dict[str, Any]) -> None:
    cluster = env["cluster"]
    seed(cluster, routes=0)
    cluster.write(*[put("routes", f"r{i:04d}", route(f"/some/long/path/{i:04d}")) for i in range(400)])
    c = await env["client"](await env["server"](chunk_size=512))
    await c.hello(0)
    state, frames = await snapshot(c)
    assert len(frames) > 2 and all(len(f["data"]) <= 512 for f in frames)
    assert state == env["store"].state


async def test_default_chunk_size_is_256k(env: dict[str, Any]) -> None:
    import random

    rng = random.Random(7)
    cluster = env["cluster"]

    def keys() -> list[dict[str, str]]:  # random keys barely compress: ~370 KiB of snapshot
        return [{"key": f"{rng.getrandbits(256):064x}"} for _ in range(3)]

    consumers = [put("consumers", f"c{i}", {"credentials": {"key-auth": keys()}}) for i in range(3000)]
    cluster.write(*consumers)
    c = await env["client"](await env["server"]())
    await c.hello(0)
    state, frames = await snapshot(c)
    assert len(frames) == 2 and len(frames[0]["data"]) == 256 * 1024
    assert state.hash() == env["store"].state.hash()


async def test_wrong_protocol_is_refused_clearly(env: dict[str, Any]) -> None:
    c = await env["client"](await env["server"]())
    await c.hello(0, proto=2)
    err = await c.recv()
    assert err["t"] == "error" and "protocol version 2" in err["message"]
    closed = await c.recv()
    assert closed["t"] == "_closed" and closed["code"] == 4002


async def test_first_frame_must_be_hello(env: dict[str, Any]) -> None:
    c = await env["client"](await env["server"]())
    await c.send({"t": "ack", "revision": 1})
    err = await c.recv()
    assert err["t"] == "error" and "expected a hello" in err["message"]


async def test_roles(env: dict[str, Any]) -> None:
    srv = await env["server"]()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(srv.url + "/v1/stream", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
        assert exc.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(srv.url + "/v1/stream")
        assert exc.value.status == 401
        r = await http.get(srv.url + "/v1/proxies", headers={"Authorization": f"Bearer {PROXY_TOKEN}"})
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "forbidden"


async def test_fleet_registry(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    srv = await env["server"]()
    c = await env["client"](srv)
    await c.hello(0, proxy_id="edge-1")
    await snapshot(c)
    await c.send({"t": "mode", "mode": "synced"})
    await c.send({"t": "ack", "revision": head})
    async with aiohttp.ClientSession() as http:

        async def fetch() -> dict[str, Any]:
            r = await http.get(srv.url + "/v1/proxies", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body

        await until(lambda: srv.hub.proxies()[0]["mode"] == "synced", what="mode recorded")
        item = (await fetch())["items"][0]
        assert item["id"] == "edge-1" and item["address"] == "127.0.0.1:1" and item["software"] == "raw/1"
        assert (item["revision"], item["lag"], item["mode"], item["node"]) == (head, 0, "synced", "n1")
        assert item["connected"] is True and item["last_error"] is None and item["connected_since"] > 0
        await c.close()
        await until(lambda: not srv.hub.proxies()[0]["connected"], what="disconnect recorded")
        env["cluster"].write(delete("routes", "r0"))
        item = (await fetch())["items"][0]
        assert (item["id"], item["connected"], item["lag"]) == ("edge-1", False, 1)


async def test_a_ping_read_after_our_heartbeat_gave_up_ends_the_session_quietly(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by chaos pause-leader: a node resumed from SIGSTOP runs its overdue pong deadline (which
    closes the transport) before it handles the ping the proxy sent meanwhile; aiohttp's automatic
    pong to that ping then raised out of the stream handler, logged as an unhandled error."""
    seed(env["cluster"])
    srv = await env["server"](heartbeat=0.2)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(srv.url + "/v1/stream", headers={"Authorization": f"Bearer {PROXY_TOKEN}"},
                                   autoping=False)  # fmt: skip  # this proxy never answers the hub's pings
        await RawProxy(http, ws).hello(0)
        while (await ws.receive(timeout=5)).type != aiohttp.WSMsgType.PING:
            pass  # status and snapshot frames first; then the hub's heartbeat ping
        await until(lambda: srv.hub.proxies() and srv.hub.proxies()[0]["connected"], what="session registered")
        await ws.ping()
        time.sleep(0.3)  # the loop (the node) stands still past the pong deadline, our ping unread
        await until(lambda: not srv.hub.proxies()[0]["connected"], what="session ended")
        await ws.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_close_ends_sessions_with_going_away(env: dict[str, Any]) -> None:
    srv = await env["server"]()
    c = await env["client"](srv)
    await c.hello(0)
    await c.recv()
    await srv.hub.close()
    closed = await c.recv()
    assert closed["t"] == "_closed" and closed["code"] == 1001
    await until(lambda: not srv.hub._sessions, what="session dropped")


async def test_status_is_repeated_periodically(env: dict[str, Any]) -> None:
    c = await env["client"](await env["server"](status_interval=0.05))
    await c.hello(0)
    frames = [await c.recv() for _ in range(3)]  # no store change at all: the timer alone
    assert [f["t"] for f in frames] == ["status"] * 3


def test_claims_from_request_key_or_string_key() -> None:
    import warnings

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from cluster.push import request_claims

    key = web.RequestKey("auth", dict)
    req = make_mocked_request("GET", "/v1/stream")
    assert request_claims(req) is None
    req[key] = {"role": "proxy"}
    assert request_claims(req) == {"role": "proxy"}
    req2 = make_mocked_request("GET", "/v1/stream")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        req2["auth"] = {"role": "viewer"}
    assert request_claims(req2) == {"role": "viewer"}


async def test_a_resync_loop_gets_at_most_three_snapshots_of_one_revision(env: dict[str, Any]) -> None:
    cluster = env["cluster"]
    head = seed(cluster)
    srv = await env["server"]()
    c = await env["client"](srv)
    await c.hello(0)
    for _ in range(3):
        state, _ = await snapshot(c)
        assert state.revision == head
        await c.send({"t": "resync", "revision": 0})  # "give me everything again", over and over
    for _ in range(5):
        await c.send({"t": "resync", "revision": 0})
    await until(lambda: any(s.blocked_at == head for s in srv.hub._sessions.values()), what="session blocked")
    assert srv.hub.frames_sent["snapshot"] == 3
    newer = cluster.write(put("routes", "n", route("/n")))  # the head moves: served again
    state, _ = await snapshot(c)
    assert state is not None and state.revision == newer and srv.hub.frames_sent["snapshot"] == 4



# -- the stream re-check of the token policy (revocation, rotation) is never switched off ----------
async def _cut_off(c: RawProxy) -> dict[str, Any]:
    """Frames until the hub's error frame (or the close)."""
    while True:
        f = await c.recv(timeout=5.0)
        if f["t"] in ("error", "_closed"):
            return f


async def test_a_revoked_proxy_token_cuts_the_open_stream(env: dict[str, Any]) -> None:
    token, claims = mint_token_claims(SECRET, "proxy", "p-revoked")
    c = await env["client"](await env["server"](status_interval=0.05), token)
    await c.hello(0)
    assert (await c.recv())["t"] == "status"
    env["store"].revoked.add(claims["jti"])
    f = await _cut_off(c)
    assert f["t"] == "error" and f["code"] == "unauthorized" and "revoked" in f["message"]


async def test_a_rotation_cuts_streams_of_the_older_generation(env: dict[str, Any]) -> None:
    c = await env["client"](await env["server"](status_interval=0.05))
    await c.hello(0)
    assert (await c.recv())["t"] == "status"
    env["store"].token_generation = 1
    f = await _cut_off(c)
    assert f["t"] == "error" and f["code"] == "unauthorized" and "rotation" in f["message"]


def test_a_store_without_a_token_policy_is_refused_by_the_hub() -> None:
    """The re-check used to switch itself off (expiry only) for a store without token_generation."""

    class NoGeneration:
        def token_revoked(self, jti: str) -> bool:
            return False

    with pytest.raises(TypeError, match="token_generation"):
        PushHub(NoGeneration(), "gwadm/test")  # type: ignore[arg-type]
