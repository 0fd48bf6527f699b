"""``gwadm proxy run --workers 2`` with real processes: one CP stream, two SO_REUSEPORT workers.

A 3-node CP cluster, one demo upstream and one proxy with two workers. Checked: both workers
listen on the one port and both serve; a config change reaches both (as a forwarded delta); the
fleet has one entry; /status and /metrics answer for both workers; a SIGKILLed worker is
restarted; stopping the proxy (SIGTERM, and SIGKILL of the hub) ends every worker.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dataplane import DataPlaneEnv, ProxyProc
from tests.support.http import request, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneEnv]:
    e = DataPlaneEnv(tmp_path_factory.mktemp("workers"), proxies=1, upstreams=("a",))
    e.proxies[0].extra_args = ["--workers", "2"]
    with e:
        e.put("upstreams", "ua", e.upstream_spec("a"))
        revision = e.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"})
        wait_serving(e.proxies[0], revision)
        yield e


def wait_serving(p: ProxyProc, revision: int, timeout: float = 30) -> dict[str, Any]:
    """Both workers alive, listening and at ``revision`` (or later)."""

    def check() -> dict[str, Any] | None:
        st = p.status()
        rows = st["workers"]
        if len(rows) == 2 and all(w["listening"] and (w["revision"] or 0) >= revision for w in rows):
            return st
        return None

    result: dict[str, Any] = wait_for(check, timeout, f"both workers of {p.id} at revision {revision}")
    return result


def counter(p: ProxyProc, name: str, **labels: str) -> float:
    text = request("GET", p.status_url + "/metrics", timeout=5).body.decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_two_workers_serve_one_port(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    st = wait_serving(p, 1)
    pids = {w["pid"] for w in st["workers"]}
    assert len(pids) == 2 and st["hub_pid"] not in pids, st["workers"]
    before = {w["index"]: w["requests"] or 0 for w in st["workers"]}
    for _ in range(200):  # one connection per request: the kernel spreads them over both workers
        r = p.get("/hello")
        assert r.status == 200, r
    after = {w["index"]: w["requests"] or 0 for w in p.status()["workers"]}
    assert all(after[i] > before[i] for i in (0, 1)), (before, after)
    assert sum(after.values()) - sum(before.values()) == 200


def test_config_change_reaches_both_workers_as_a_delta(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    deltas_before = sum(w["deltas"] or 0 for w in p.status()["workers"])
    revision = env.put("routes", "moved", {"paths": ["/moved"], "upstream": "ua"}, node=1)
    st = wait_serving(p, revision)
    assert st["revision"] >= revision and st["synced_revision"] >= revision
    assert {w["hash"] for w in st["workers"]} == {st["hash"]}
    assert sum(w["deltas"] or 0 for w in st["workers"]) >= deltas_before + 2, st["workers"]
    for _ in range(20):
        assert p.get("/moved").status == 200


def test_one_fleet_entry_for_the_host(env: DataPlaneEnv) -> None:
    r = env.cluster.api(env.cluster.nodes[0], "GET", "/v1/proxies")
    items = [i for i in r.json()["items"] if i.get("connected", True)]
    assert [i["id"] for i in items] == ["p1"], items
    assert items[0]["address"].endswith(f":{env.proxies[0].port}")


def test_status_and_metrics_cover_every_worker(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    revision = env.put("routes", "count", {"paths": ["/count"], "upstream": "ua"})
    wait_serving(p, revision)
    for _ in range(100):
        assert p.get("/count").status == 200
    st = p.status()
    assert st["workers_serving"] == 2 and st["mode"] == "synced"
    assert counter(p, "gwadm_proxy_requests_total", route="count", status="200") == 100
    assert counter(p, "gwadm_proxy_workers", state="running") == 2
    ready = request("GET", p.status_url + "/ready", timeout=5)
    assert ready.status == 200 and ready.json()["workers_serving"] == 2


def test_a_killed_worker_is_restarted(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    st = wait_serving(p, 1)
    served = counter(p, "gwadm_proxy_requests_total")  # scraped: the hub remembers the dead one's counts
    victim = st["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        row = p.status()["workers"][0]
        return row if row["pid"] not in (None, victim["pid"]) and row["listening"] else None

    row = wait_for(restarted, 30, "worker 0 restarted")
    assert row["restarts"] == victim["restarts"] + 1 and row["revision"] == st["synced_revision"]
    wait_serving(p, st["synced_revision"])
    for _ in range(50):
        assert p.get("/hello").status == 200
    assert counter(p, "gwadm_proxy_requests_total") >= served + 50


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of ours still answers kill(0): look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("how", ["sigterm", "sigkill-hub"])
def test_stopping_the_proxy_stops_every_worker(env: DataPlaneEnv, tmp_path: Path, how: str) -> None:
    p = ProxyProc("p9", [n.url for n in env.cluster.nodes], env.token_file, tmp_path / "p9",
                  extra_args=["--workers", "2"])  # fmt: skip
    try:
        p.start()
        pids = [w["pid"] for w in wait_serving(p, 1)["workers"]]
        assert p.proc is not None
        if how == "sigterm":
            p.stop()
        else:
            p.kill()  # the workers see their feed end and exit on their own
        wait_for(lambda: all(_gone(pid) for pid in pids), 20, f"workers {pids} gone")
    finally:
        p.stop()
        for pid in pids if "pids" in locals() else []:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
