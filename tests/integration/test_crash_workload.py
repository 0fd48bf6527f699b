"""Concurrent writers on every node while nodes are SIGKILLed and restarted (seeded schedule):
no acknowledged write is lost and all nodes converge to the same revision and config hash."""

from __future__ import annotations

import random
import threading
import time

from tests.support.cluster import Cluster, upstream_body
from tests.support.http import request, wait_for

SEED = 7151


def test_acknowledged_writes_survive_a_crash_schedule(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    acked: dict[str, int] = {}
    maybe: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(wid: int) -> None:
        n = 0
        while not stop.is_set():
            key, port = f"w{wid}-{n}", 20000 + n % 10000
            node = cluster.nodes[(wid + n) % len(cluster.nodes)]
            n += 1
            if not node.alive:
                continue
            try:
                r = request("PUT", node.url + f"/v1/upstreams/{key}", token=cluster.token,
                            json_body=upstream_body(port), headers={"X-Request-Id": key}, timeout=6)
            except OSError:
                with lock:
                    maybe.add(key)  # the reply was lost: the write may or may not have happened
                continue
            with lock:
                if r.status in (200, 201):
                    acked[key] = port
                else:
                    assert r.status == 503 and r.json()["error"]["retryable"], r
                    maybe.add(key)

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 1.2))  # schedule spacing (seeded), not ordering
            victim = rng.choice(cluster.nodes)
            cluster.kill(victim)
            time.sleep(rng.uniform(0.2, 0.8))
            cluster.start(victim)
            cluster.wait_leader()
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    cluster.wait_ready()
    print(f"acknowledged={len(acked)} unknown-outcome={len(maybe)}")
    assert len(acked) > 20, f"too few writes acknowledged to mean anything: {len(acked)}"
    leader = cluster.wait_leader()
    head = cluster.api(leader, "GET", "/v1/config").json()

    def converged() -> bool:
        views = [cluster.status(n) for n in cluster.nodes]
        return all(v and v["revision"] == head["revision"] and v["hash"] == head["hash"] for v in views)

    wait_for(converged, 20, "all nodes at the same revision and hash")
    for node in cluster.nodes:
        items = {i["id"]: i for i in cluster.api(node, "GET", "/v1/upstreams").json()["items"]}
        lost = [k for k in acked if k not in items]
        assert not lost, f"acknowledged writes lost on {node.id}: {lost[:5]}"
        assert all(items[k]["targets"][0]["port"] == p for k, p in acked.items())
        unknown = set(items) - set(acked) - maybe
        assert not unknown, f"writes nobody made appeared: {sorted(unknown)[:5]}"
