"""The hub encodes a delta frame once per (base, head) and every session at that base gets it."""

from __future__ import annotations

from gateway.delta import Delta, apply_delta
from tests.cluster.test_push_fakes import FakeCluster, FakeStore, HubServer, RawProxy, put, route, seed


async def test_sessions_at_one_base_share_one_frame_and_others_get_their_own() -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    srv = await HubServer(store).start()
    proxies: list[RawProxy] = []
    try:
        head = seed(cluster)
        base_state = store.state
        for i in range(3):
            c = await RawProxy.connect(srv.url)
            proxies.append(c)
            await c.hello(head, base_state.hash(), proxy_id=f"p{i}")
        late = await RawProxy.connect(srv.url)
        proxies.append(late)
        older = head - 1
        await late.hello(older, "", proxy_id="late")  # no hash: the node cannot tell, sends deltas
        first = await late.recv_config()
        assert (first["base"], first["revision"]) == (older, head)
        await late.send({"t": "ack", "revision": head})
        new = cluster.write(put("routes", "x", route("/x")))
        frames = [await c.recv_config() for c in proxies]
        assert all((f["t"], f["base"], f["revision"]) == ("delta", head, new) for f in frames), frames
        assert len({repr(f) for f in frames}) == 1
        assert srv.hub.frames_sent["delta"] == 5
        assert list(srv.hub._delta_frames) == [(head, new)]
        d = frames[0]
        got = apply_delta(base_state, Delta(d["base"], d["revision"], tuple(tuple(op) for op in d["ops"])))
        assert got.hash() == d["hash"] == store.state.hash()
    finally:
        for c in proxies:
            await c.close()
        await srv.stop()
