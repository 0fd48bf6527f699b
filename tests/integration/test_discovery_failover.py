"""Registration expiry across a leader's SIGKILL: 50 heartbeating instances, none expires."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, running_cluster, upstream_body
from tests.support.http import request, wait_for

INSTANCES = 50
# 5 missed-beat intervals of margin: on a loaded 2-core machine a heartbeat round of 10 instances
# can take a few seconds while the new leader grants and the clients fail over (a live instance
# whose heartbeats cannot get through for a whole TTL is rightly expired: not what this tests)
TTL = 5.0
INTERVAL = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        assert c.api(c.nodes[0], "PUT", "/v1/upstreams/svc", upstream_body(9001)).status == 201
        yield c


class Heartbeats(threading.Thread):
    """Heartbeats for some instances, each to the next node, failing over on errors."""

    def __init__(self, c: Cluster, ports: list[int], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.c, self.ports, self.stop = c, ports, stop
        self.missing: list[tuple[float, int, str]] = []  # 404s: the registration was gone
        self.next_node = 0

    def beat(self, port: int) -> None:
        for _ in range(len(self.c.nodes) * 2):
            node = self.c.nodes[self.next_node % len(self.c.nodes)]
            self.next_node += 1
            try:
                r = request("POST", f"{node.url}/v1/upstreams/svc/targets/127.0.0.1:{port}/heartbeat",
                            token=self.c.token, timeout=1)
            except OSError:
                continue
            if r.status == 200:
                return
            if r.status == 404:
                self.missing.append((time.monotonic(), port, node.id))
                return

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            for port in self.ports:
                self.beat(port)
            self.stop.wait(max(0.0, INTERVAL - (time.monotonic() - started)))


def _revision(c: Cluster) -> int:
    leader = c.wait_leader()
    return int(c.api(leader, "GET", "/v1/status").json()["revision"])


def test_leader_sigkill_while_50_instances_heartbeat_expires_none(cluster: Cluster) -> None:
    c = cluster
    ports = list(range(20000, 20000 + INSTANCES))
    for i, port in enumerate(ports):
        r = c.api(c.nodes[i % 3], "PUT", f"/v1/upstreams/svc/targets/127.0.0.1:{port}", {"ttl": TTL})
        assert r.status == 201, r
    stop = threading.Event()
    beaters = [Heartbeats(c, ports[i::5], stop) for i in range(5)]
    for b in beaters:
        b.start()
    try:
        time.sleep(TTL)
        before = _revision(c)
        old = c.wait_leader()
        c.kill(old)
        new = wait_for(lambda: (lead := c.leader()) is not None and lead is not old and lead, 20, "a new leader")
        print(f"leader {old.id} killed; {new.id} leads")
        time.sleep(3 * TTL)  # three TTLs on the new leader
        after = _revision(c)
        listing = c.api(new, "GET", "/v1/upstreams/svc/targets").json()
    finally:
        stop.set()
        for b in beaters:
            b.join(10)
    missing = [m for b in beaters for m in b.missing]
    assert not missing, f"heartbeats found registrations gone: {missing[:5]}"
    assert after == before, f"revision moved from {before} to {after}: something expired"
    assert len(listing["registered"]) == INSTANCES
    assert all(t["expires_in"] is not None and t["expires_in"] > 0 for t in listing["registered"])
    # Now they stop: the new leader expires them all (in batches, few revisions).
    wait_for(lambda: not c.api(new, "GET", "/v1/upstreams/svc/targets").json()["registered"], TTL + 10,
             "all expired after the heartbeats stopped")
