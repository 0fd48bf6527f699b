"""Hybrid sync (the default): the push stream plus anti-entropy hash checks, with real processes.

The proxy's in-memory config is corrupted on purpose through its test-only debug hook
(``GWADM_PROXY_DEBUG_HOOKS=1``): one route silently disappears while revision and believed hash
stay. The next check (a status frame or the HTTP check) finds the hash mismatch, the proxy resyncs,
and the route serves again; the repair is counted in /status/sync, /metrics and the fleet view.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request, wait_for


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    e = DataPlaneEnv(tmp_path, proxies=1, upstreams=("a",))
    e.proxies[0].extra_args = ["--check-interval", "2"]  # no --sync: hybrid is the default
    e.proxies[0].env = {"GWADM_PROXY_DEBUG_HOOKS": "1"}
    with e:
        yield e


def test_hybrid_repairs_a_silently_corrupted_proxy(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    env.put("upstreams", "ua", env.upstream_spec("a"))
    env.put("routes", "keep", {"paths": ["/keep"], "upstream": "ua"})
    rev = env.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"}, node=1)
    p.wait_revision(rev)
    info = request("GET", p.status_url + "/status/sync").json()
    assert info["sync"] == "hybrid" and info["antientropy"]["repairs"] == 0, info
    assert p.get("/hello").status == 200

    r = request("POST", p.status_url + "/debug/corrupt?route=hello")
    assert r.status == 200, r
    assert r.json()["hash"] != r.json()["believed_hash"]
    # The corruption is real until repaired (a 404 may already be gone if a check ran at once).
    wait_for(lambda: p.get("/hello").status == 200, 20, "corrupted route served again")
    info = wait_for(
        lambda: (i := request("GET", p.status_url + "/status/sync").json())["antientropy"]["repairs"] >= 1 and i,
        10, "repair counted",
    )  # fmt: skip
    assert info["antientropy"]["last_mismatch"]["revision"] == rev
    st = p.status()
    assert st["revision"] == rev and st["mode"] == "synced"
    live = env.cluster.nodes[0]
    assert st["hash"] == env.cluster.api(live, "GET", "/v1/config").json()["hash"]
    metrics = request("GET", p.status_url + "/metrics").body.decode()
    assert "gwadm_proxy_antientropy_repairs_total 1.0" in metrics, metrics[-2000:]

    def fleet_repairs() -> dict[str, object] | None:
        items = env.cluster.api(live, "GET", "/v1/proxies").json()["items"]
        e = next((i for i in items if i["id"] == "p1"), None)
        return e if e is not None and e.get("antientropy_repairs", 0) >= 1 else None

    entry = wait_for(fleet_repairs, 15, "repair in the fleet view")
    assert entry["sync"] == "hybrid" and entry["connected"], entry


def test_debug_hook_is_off_by_default(tmp_path: Path) -> None:
    with DataPlaneEnv(tmp_path, proxies=1, upstreams=("a",)) as e:
        p = e.proxies[0]
        assert request("POST", p.status_url + "/debug/corrupt").status == 404
        assert request("GET", p.status_url + "/status/sync").json()["sync"] == "hybrid"
