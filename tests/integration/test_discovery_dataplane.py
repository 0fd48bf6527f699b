"""Registered targets reach every proxy through the delta stream and leave it after their TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dataplane import DataPlaneEnv
from tests.support.http import wait_for

TTL = 2.0


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(tmp_path, proxies=2, upstreams=("static", "inst")) as e:
        yield e


def _served_by(env: DataPlaneEnv, proxy_index: int, n: int = 12) -> set[str]:
    names = set()
    for _ in range(n):
        r = env.proxies[proxy_index].get("/svc/x")
        assert r.status == 200, r
        names.add(r.json()["upstream"])
    return names


def test_registered_instance_gets_traffic_and_leaves_every_proxy_within_ttl_plus_1s(env: DataPlaneEnv) -> None:
    c = env.cluster
    env.put("upstreams", "svc", env.upstream_spec("static"))
    env.put("routes", "r", {"paths": ["/svc"], "upstream": "svc"})
    target = f"127.0.0.1:{env.upstreams['inst'].port}"
    r = c.api(c.nodes[1], "PUT", f"/v1/upstreams/svc/targets/{target}", {"ttl": TTL, "weight": 1})
    assert r.status == 201, r
    for i in range(len(env.proxies)):
        env.proxies[i].wait_revision(r.json()["revision"])
        assert _served_by(env, i) == {"static", "inst"}

    stop = threading.Event()
    last_beat = [time.monotonic()]

    def beat() -> None:
        n = 0
        while not stop.is_set():
            node = c.nodes[n % len(c.nodes)]
            n += 1
            resp = c.api(node, "POST", f"/v1/upstreams/svc/targets/{target}/heartbeat", timeout=2)
            if resp.status == 200:
                last_beat[0] = time.monotonic()
            stop.wait(0.4)

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        time.sleep(TTL * 2)  # alive well past one TTL on heartbeats alone
        for i in range(len(env.proxies)):
            assert "inst" in _served_by(env, i)
    finally:
        stop.set()
        t.join(5)
    silent_since = last_beat[0]

    def gone_everywhere() -> bool:
        return all(_served_by(env, i, 6) == {"static"} for i in range(len(env.proxies)))

    wait_for(gone_everywhere, 15, "instance gone from every proxy", interval=0.05)
    took = time.monotonic() - silent_since
    assert took <= TTL + 1.0, f"gone from every proxy {took:.2f}s after the last heartbeat (ttl {TTL})"
