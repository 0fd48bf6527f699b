"""Relays end to end with real processes: 3 CP nodes, a relay, proxies that only know the relay.

Propagation through the relay (push and pull downstream), the fleet view listing the relay and its
proxies ``via`` it, the CP going down (the relay serves its cached revision, also to a proxy that
starts empty; downstream proxies are ``cached``, never ``synced``), recovery, and the relay never
forwarding an uncommitted revision (a minority node) nor an older one (a proxy ahead of it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dataplane import DataPlaneEnv, ProxyProc
from tests.support.http import request, wait_for
from tests.support.relay import RelayProc


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[DataPlaneEnv, RelayProc]]:
    e = DataPlaneEnv(tmp_path, proxies=2, upstreams=("a",))
    relay = RelayProc("r1", [n.url for n in e.cluster.nodes], e.token_file, tmp_path / "r1",
                      extra_args=["--check-interval", "2"])  # fmt: skip
    e.proxies[0].cp_urls = [relay.url]
    e.proxies[1].cp_urls = [relay.url]
    e.proxies[1].extra_args = ["--sync", "pull", "--poll-interval", "1"]
    try:
        with e:
            relay.start()
            yield e, relay
    finally:
        relay.stop()


def fleet(env: DataPlaneEnv) -> dict[str, dict[str, Any]]:
    live = next(n for n in env.cluster.nodes if n.alive)
    return {i["id"]: i for i in env.cluster.api(live, "GET", "/v1/proxies").json()["items"]}


def test_relay_serves_its_region_and_keeps_serving_cached_when_the_cp_is_down(
    env: tuple[DataPlaneEnv, RelayProc], tmp_path: Path
) -> None:
    e, relay = env
    p1, p2 = e.proxies
    e.put("upstreams", "ua", e.upstream_spec("a"))
    rev = e.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"}, node=1)
    for p in (p1, p2):
        p.wait_revision(rev, timeout=30)
        assert p.get("/hello").status == 200
    assert relay.status()["mode"] == "synced"

    def listed() -> dict[str, dict[str, Any]] | None:
        f = fleet(e)
        ok = all(f.get(pid, {}).get("via") == "r1" and f[pid]["revision"] == rev for pid in ("p1", "p2"))
        return f if ok and f.get("r1", {}).get("role") == "relay" else None

    f = wait_for(listed, 20, "relay and its proxies in the fleet view")
    assert f["p2"]["sync"] == "pull" and f["p1"]["mode"] == "synced" and f["r1"]["connected"], f

    rev = e.put("routes", "bye", {"paths": ["/bye"], "upstream": "ua"}, node=2)
    for p in (p1, p2):
        p.wait_revision(rev, timeout=30)
        assert p.get("/bye").status == 200

    # The whole control plane goes down: the relay serves what it has, marked cached.
    e.cluster.kill_all()
    wait_for(lambda: relay.status()["mode"] == "cached", 20, "relay cached")
    for p in (p1, p2):
        wait_for(lambda p=p: p.status()["mode"] == "cached", 20, f"{p.id} cached")
        assert p.get("/bye").status == 200 and p.status()["revision"] == rev
    # A proxy of the region that starts empty gets the relay's cached revision (and says cached).
    p3 = ProxyProc("p3", [relay.url], e.token_file, tmp_path / "p3")
    try:
        p3.start()
        st = p3.wait_revision(rev, timeout=30, mode="cached")
        assert st["hash"] == relay.status()["hash"] and p3.get("/hello").status == 200
    finally:
        p3.stop()

    # The control plane returns: relay and proxies synced, changes flow again.
    e.cluster.start_all()
    e.cluster.wait_ready()
    rev = e.delete("routes", "bye")
    for p in (p1, p2):
        p.wait_revision(rev, timeout=40)
        assert p.get("/bye").status == 404
    assert relay.status()["mode"] == "synced"


def test_relay_never_forwards_uncommitted_or_older_revisions(env: tuple[DataPlaneEnv, RelayProc], tmp_path: Path) -> None:
    e, relay = env
    p1 = e.proxies[0]
    e.put("upstreams", "ua", e.upstream_spec("a"))
    rev = e.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"})
    p1.wait_revision(rev, timeout=30)

    # Uncommitted: only a minority node is left; a write there cannot commit and reaches nobody.
    for node in e.cluster.nodes[:2]:
        e.cluster.kill(node)
    last = e.cluster.nodes[2]
    r = e.cluster.api(last, "PUT", "/v1/routes/late", {"paths": ["/late"], "upstream": "ua"})
    assert r.status == 503, r
    wait_for(lambda: relay.status()["mode"] == "cached", 20, "relay cached without quorum upstream")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # a window in which a forwarded entry would show
        st = relay.status()
        assert st["revision"] == rev and max(st["installed"]) == rev, st
        assert p1.status()["revision"] == rev
        time.sleep(0.5)
    assert p1.get("/late").status == 404

    # Older: the CP moves on while the relay is down; a proxy that follows the CP directly and
    # lists the relay too never takes the relay's older revision once the CP is gone.
    e.cluster.start_all()
    e.cluster.wait_ready()
    relay.stop()
    direct = ProxyProc("pd", [relay.url] + [n.url for n in e.cluster.nodes], e.token_file, tmp_path / "pd")
    try:
        direct.start()
        newer = e.put("routes", "newer", {"paths": ["/newer"], "upstream": "ua"})
        direct.wait_revision(newer, timeout=30)
        e.cluster.kill_all()
        relay.start()  # boots from its cache, below the proxy's revision, and cannot reach the CP
        wait_for(lambda: relay.status()["mode"] == "cached", 20, "relay cached from its own cache")
        assert relay.status()["revision"] < newer
        answer = request("GET", relay.url + f"/v1/changes?since={newer}", token=e.cluster.proxy_token)
        assert answer.status == 200  # status only: the relay is behind and says so
        deadline = time.monotonic() + 6  # the proxy cycles through the relay several times
        while time.monotonic() < deadline:
            st = direct.status()
            assert st["revision"] == newer, st
            time.sleep(0.5)
        assert direct.get("/newer").status == 200
    finally:
        direct.stop()
