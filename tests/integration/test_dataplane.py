"""Data plane end to end with real processes: 3 CP nodes, 2 proxies, echo upstreams.

Covers propagation (create/update/delete on any node), CP loss (cached mode with zero failed
requests), proxy restart from cache, corrupt cache fallback, resync after the CP returns, failover
of a proxy's CP connection, and a snapshot for a proxy behind the delta window.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request, wait_for


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(tmp_path, cp_toml="delta_log_entries = 20\n") as e:
        yield e


def serve_hello(env: DataPlaneEnv) -> int:
    env.put("upstreams", "ua", env.upstream_spec("a"), node=1)
    return env.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"}, node=2)


def cp_hash(env: DataPlaneEnv) -> str:
    live = next(n for n in env.cluster.nodes if n.alive)
    return str(env.cluster.api(live, "GET", "/v1/config").json()["hash"])


class Traffic:
    """Background GETs against every proxy, counting failures (a request is one attempt)."""

    def __init__(self, env: DataPlaneEnv, path: str) -> None:
        self.env, self.path = env, path
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.env.proxies:
                try:
                    r = p.get(self.path, timeout=5)
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{p.id}: {r.status} {r.body[:100]!r}")
                except OSError as exc:
                    self.failures.append(f"{p.id}: {exc!r}")
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_changes_on_any_node_propagate_to_both_proxies(env: DataPlaneEnv) -> None:
    rev = serve_hello(env)
    for p in env.proxies:
        p.wait_revision(rev)
        r = p.get("/hello/world?x=1")
        assert r.status == 200, r
        body = r.json()
        assert body["upstream"] == "a" and body["path"] == "/hello/world" and body["query"] == "x=1"
        assert body["headers"]["X-Forwarded-For"] == "127.0.0.1"
    # update: point the route at upstream b (through another node)
    env.put("upstreams", "ub", env.upstream_spec("b"), node=0)
    rev = env.put("routes", "hello", {"paths": ["/hello"], "upstream": "ub"}, node=1)
    for p in env.proxies:
        p.wait_revision(rev)
        assert p.get("/hello").json()["upstream"] == "b"
    # delete propagates: 404 with a JSON body
    rev = env.delete("routes", "hello", node=2)
    for p in env.proxies:
        st = p.wait_revision(rev)
        assert st["hash"] == cp_hash(env)
        r = p.get("/hello")
        assert r.status == 404 and r.json()["error"]["code"], r
    # every node reports the whole fleet, whichever node each proxy streams from
    for node in env.cluster.nodes:
        def fleet_synced(node=node) -> bool:  # type: ignore[no-untyped-def]
            items = {i["id"]: i for i in env.cluster.api(node, "GET", "/v1/proxies").json()["items"]}
            return all(items.get(p.id, {}).get("connected") and items[p.id]["revision"] == rev
                       and items[p.id]["lag"] == 0 for p in env.proxies)

        wait_for(fleet_synced, 10, f"fleet view of {node.id}")
    item = env.cluster.api(env.cluster.nodes[0], "GET", "/v1/proxies").json()["items"][0]
    assert {"id", "address", "software", "revision", "lag", "mode", "last_error", "connected_since"} <= set(item)
    assert item["mode"] == "synced" and item["software"]


def test_cp_loss_cached_mode_restart_from_cache_corrupt_cache_and_resync(env: DataPlaneEnv) -> None:
    rev = serve_hello(env)
    for p in env.proxies:
        p.wait_revision(rev)
    with Traffic(env, "/hello") as traffic:
        env.cluster.stop_all()
        for p in env.proxies:
            wait_for(lambda p=p: p.status()["mode"] == "cached", 20, f"{p.id} cached")
        before = traffic.ok
        wait_for(lambda: traffic.ok >= before + 20, 20, "traffic while cached")
    assert traffic.failures == [], traffic.failures[:5]
    for p in env.proxies:
        st = p.status()
        assert st["mode"] == "cached" and st["revision"] == rev

    # a proxy restarted while every CP node is down boots from its cache and serves
    p1, p2 = env.proxies
    p1.stop()
    p1.start()
    wait_for(lambda: p1.status()["mode"] == "cached", 15, "p1 cached after restart")
    assert p1.status()["revision"] == rev
    assert p1.get("/hello").status == 200
    assert request("GET", p1.status_url + "/ready").status == 200

    # corrupt the newest cache generation: one clear log line, previous generation used
    cache = p2.dir / "state" / "config.lkg"
    assert cache.exists() and cache.with_name("config.lkg.prev").exists()
    p2.stop()
    data = bytearray(cache.read_bytes())
    data[-5] ^= 0xFF
    cache.write_bytes(bytes(data))
    p2.start()
    wait_for(lambda: p2.status()["mode"] == "cached", 15, "p2 cached from previous generation")
    lines = [ln for ln in p2.log_path.read_text().splitlines() if "config.lkg" in ln and "unusable" in ln]
    assert len(lines) == 1 and "checksum" in lines[0], lines
    assert p2.status()["revision"] < rev  # the previous generation
    assert p2.get("/hello").status in (200, 404)

    # CP back: both proxies resync to the latest revision and report synced
    env.cluster.start_all()
    env.cluster.wait_ready()
    rev = env.put("routes", "hello2", {"paths": ["/hello2"], "upstream": "ua"})
    for p in env.proxies:
        st = p.wait_revision(rev, timeout=30)
        assert st["hash"] == cp_hash(env)
        assert p.get("/hello2").status == 200


def test_proxy_follows_another_node_when_its_node_dies_without_missing_a_revision(env: DataPlaneEnv) -> None:
    rev = serve_hello(env)
    p1 = env.proxies[0]
    st = p1.wait_revision(rev)
    connected = st["connected_cp"]
    victim = next(n for n in env.cluster.nodes if n.admin_addr in str(connected))
    env.cluster.kill(victim)
    revisions = [rev]
    for i in range(5):
        for node_index, node in enumerate(env.cluster.nodes):
            if node.alive:
                revisions.append(env.put("routes", f"r{i}", {"paths": [f"/r{i}"], "upstream": "ua"}, node=node_index))
                break
    st = p1.wait_revision(revisions[-1], timeout=20)
    assert st["connected_cp"] != connected
    assert st["hash"] == cp_hash(env)
    for i in range(5):
        assert p1.get(f"/r{i}").status == 200


def test_proxy_behind_the_delta_window_gets_a_snapshot(env: DataPlaneEnv) -> None:
    rev = serve_hello(env)
    p2 = env.proxies[1]
    p2.wait_revision(rev)
    p2.stop()
    for i in range(30):  # more than the 20-entry delta window
        rev = env.put("routes", f"w{i}", {"paths": [f"/w{i}"], "upstream": "ua"})
    p2.start()
    st = p2.wait_revision(rev, timeout=20)
    assert st["hash"] == cp_hash(env)
    assert p2.get("/w29").status == 200
    fleet = [
        item
        for node in env.cluster.nodes
        for item in env.cluster.api(node, "GET", "/v1/proxies").json()["items"]
        if item["id"] == "p2" and item["connected"]
    ]
    assert fleet and fleet[0]["revision"] == rev and fleet[0]["lag"] == 0
    assert fleet[0]["snapshots_sent"] >= 1


def test_node_without_quorum_is_not_followed(env: DataPlaneEnv) -> None:
    rev = serve_hello(env)
    for p in env.proxies:
        p.wait_revision(rev)
    survivor = env.cluster.nodes[0]
    for node in env.cluster.nodes[1:]:
        env.cluster.kill(node)
    # the last node is up but has no quorum: proxies must not call themselves synced to it
    for p in env.proxies:
        wait_for(lambda p=p: p.status()["mode"] == "cached", 20, f"{p.id} cached while only a minority is up")
        assert p.get("/hello").status == 200
    assert survivor.alive
    for node in env.cluster.nodes[1:]:
        env.cluster.start(node)
    env.cluster.wait_ready()
    rev = env.put("routes", "again", {"paths": ["/again"], "upstream": "ua"})
    for p in env.proxies:
        p.wait_revision(rev, timeout=30)
        assert p.get("/again").status == 200


def test_a_proxy_told_one_node_learns_the_others_and_survives_that_node(tmp_path: Path) -> None:
    """--cp names only n1: the proxy learns n2 and n3 from n1's status frames (kept in its state
    dir), so when n1 dies it follows another node instead of going to cached mode, also after a
    restart with the same --cp."""
    e = DataPlaneEnv(tmp_path, proxies=1)
    n1 = e.cluster.nodes[0]
    p1 = e.proxies[0]
    p1.cp_urls = [n1.url]
    try:
        e.start()
        rev = serve_hello(e)
        assert p1.wait_revision(rev)["connected_cp"].startswith(n1.url.replace("http", "ws"))
        members_file = p1.dir / "state" / "cp-members.json"
        others = sorted(n.url.replace("http", "ws") + "/v1/stream" for n in e.cluster.nodes[1:])
        wait_for(lambda: members_file.exists() and sorted(json.loads(members_file.read_text())) == others,
                 10, "n2 and n3 learned")
        assert sorted(p1.status()["cp_endpoints"]) == sorted([n1.url.replace("http", "ws") + "/v1/stream", *others])
        e.cluster.kill(n1)
        rev = e.put("routes", "after", {"paths": ["/after"], "upstream": "ua"}, node=1)
        st = p1.wait_revision(rev, timeout=20)
        assert not st["connected_cp"].startswith(n1.url.replace("http", "ws"))
        assert p1.get("/after").status == 200
        p1.stop()
        rev = e.put("routes", "after-restart", {"paths": ["/after-restart"], "upstream": "ua"}, node=2)
        p1.start()
        p1.wait_revision(rev, timeout=20)
    finally:
        e.close()
