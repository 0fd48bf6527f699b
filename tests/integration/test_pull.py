"""Pull sync (`gwadm proxy run --sync pull`) end to end: 3 real CP nodes, a real proxy polling them.

Propagation over long-polls, the fleet entry (sync pull), a node without quorum answering
``no_quorum`` (the proxy goes cached and keeps serving), recovery, and a snapshot for a proxy whose
revision is outside the delta window.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request, wait_for

PULL = ["--sync", "pull", "--poll-interval", "1"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    e = DataPlaneEnv(tmp_path, proxies=1, upstreams=("a",), cp_toml="delta_log_entries = 5\n")
    e.proxies[0].extra_args = list(PULL)
    with e:
        yield e


def fleet_entry(env: DataPlaneEnv, pid: str) -> dict[str, Any] | None:
    live = next(n for n in env.cluster.nodes if n.alive)
    items = env.cluster.api(live, "GET", "/v1/proxies").json()["items"]
    return next((i for i in items if i["id"] == pid), None)


def test_pull_propagates_reports_and_survives_quorum_loss(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    env.put("upstreams", "ua", env.upstream_spec("a"))
    rev = env.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"}, node=1)
    p.wait_revision(rev)
    assert p.get("/hello").status == 200
    sync = request("GET", p.status_url + "/status/sync").json()
    assert sync["sync"] == "pull" and sync["polls"] >= 1, sync

    # A change reaches the polling proxy (it was long-polling, nothing else wakes it).
    rev = env.put("routes", "bye", {"paths": ["/bye"], "upstream": "ua"}, node=2)
    p.wait_revision(rev)
    assert p.get("/bye").status == 200

    entry = wait_for(lambda: (e := fleet_entry(env, "p1")) and e["revision"] == rev and e or None, 15,
                     "fleet entry of the pull proxy at the head")  # fmt: skip
    assert entry["sync"] == "pull" and entry["mode"] == "synced" and entry["connected"], entry

    # Two nodes die: the last one knows no quorum, answers no_quorum; the proxy serves cached.
    for node in env.cluster.nodes[:2]:
        env.cluster.kill(node)
    wait_for(lambda: p.status()["mode"] == "cached", 20, "pull proxy cached without quorum")
    last = env.cluster.nodes[2]

    def no_quorum_answer() -> dict[str, Any] | None:
        r = request("GET", last.url + "/v1/changes?since=0", token=env.cluster.proxy_token)
        return r.json() if r.status == 503 else None

    answer = wait_for(no_quorum_answer, 20, "no_quorum from the node left alone")
    assert answer["error"]["code"] == "no_quorum" and answer["status"]["has_quorum"] is False, answer
    assert p.get("/hello").status == 200 and p.status()["revision"] == rev

    # Quorum back: synced again, and new changes flow.
    env.cluster.start_all()
    env.cluster.wait_ready()
    rev = env.delete("routes", "bye")
    p.wait_revision(rev, timeout=30)
    assert p.get("/bye").status == 404 and p.get("/hello").status == 200


def test_pull_gets_a_snapshot_from_outside_the_delta_window(env: DataPlaneEnv) -> None:
    p = env.proxies[0]
    env.put("upstreams", "ua", env.upstream_spec("a"))
    rev = env.put("routes", "r0", {"paths": ["/r0"], "upstream": "ua"})
    p.wait_revision(rev)
    before = wait_for(lambda: fleet_entry(env, "p1"), 15, "fleet entry")["snapshots_sent"]
    p.stop()
    for i in range(1, 12):  # more than the 5 deltas the nodes keep
        rev = env.put("routes", f"r{i}", {"paths": [f"/r{i}"], "upstream": "ua"}, node=i % 3)
    p.start()
    st = p.wait_revision(rev, timeout=30)
    live = env.cluster.nodes[0]
    assert st["hash"] == env.cluster.api(live, "GET", "/v1/config").json()["hash"]
    assert p.get("/r11").status == 200 and p.get("/r0").status == 200
    entry = wait_for(lambda: (e := fleet_entry(env, "p1")) and e["snapshots_sent"] > before and e or None, 15,
                     "snapshot counted for the pull proxy")  # fmt: skip
    assert entry["sync"] == "pull"
