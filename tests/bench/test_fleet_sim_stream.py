"""bench/fleet_sim.py's hand-written websocket subscriber (RawStream) against a real push hub."""

from __future__ import annotations

import asyncio
import time

from bench.fleet_sim import Fleet
from tests.cluster.test_push_fakes import (
    PROXY_TOKEN,
    FakeCluster,
    FakeStore,
    HubServer,
    put,
    route,
    seed,
    until,
)


async def test_raw_subscribers_follow_ack_and_answer_the_hubs_pings() -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    head = seed(cluster)
    srv = await HubServer(store, heartbeat=0.3).start()  # a subscriber that never pongs is dropped after 0.15 s
    fleet = Fleet({"urls": [srv.url], "token": PROXY_TOKEN, "mode": "push", "n": 3, "heartbeat": 5.0, "source_ips": 1})
    try:
        await fleet.start()
        await until(lambda: all(s.rev == head for s in fleet.subs), what="snapshot installed")
        new = cluster.write(put("routes", "x", route("/x")))
        await until(lambda: all(s.rev == new for s in fleet.subs), what="delta applied")
        await until(lambda: sorted(s.acked for s in srv.hub._sessions.values()) == [new] * 3, what="acks")
        keys = set(srv.hub._sessions)
        deadline = time.monotonic() + 1.0  # several server heartbeats: still the same three streams
        while time.monotonic() < deadline:
            assert set(srv.hub._sessions) == keys
            await asyncio.sleep(0.05)
        assert fleet.bytes > 0 and all(s.fresh for s in fleet.subs)
    finally:
        for t in fleet.tasks:
            t.cancel()
        await asyncio.gather(*fleet.tasks, return_exceptions=True)
        for s in fleet.subs:
            if s.ws is not None:
                await s.ws.close()
        for sess in fleet.sessions:
            await sess.close()
        await srv.stop()
