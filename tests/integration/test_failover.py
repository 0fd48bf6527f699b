"""Crash faults on a real 3-node cluster: leader SIGKILL, follower restart, SIGKILL of all nodes."""

from __future__ import annotations

import time

from tests.support.cluster import Cluster, upstream_body
from tests.support.http import request, wait_for


def write_any(cluster: Cluster, key: str, port: int, request_id: str, deadline: float) -> int:
    """Write through whichever live node answers, retrying with the same request id (as a client would)."""
    last = None
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not node.alive:
                continue
            try:
                r = request("PUT", node.url + f"/v1/upstreams/{key}", token=cluster.token,
                            json_body=upstream_body(port), headers={"X-Request-Id": request_id}, timeout=3)
            except OSError as exc:
                last = exc
                continue
            if r.status in (200, 201):
                return int(r.json()["revision"])
            last = r
            assert r.status == 503 and r.json()["error"]["retryable"], r
        time.sleep(0.02)
    raise AssertionError(f"write {key} never succeeded: {last!r}")


def assert_all_present(cluster: Cluster, acked: dict[str, int]) -> None:
    for node in cluster.nodes:
        items = {i["id"]: i for i in cluster.api(node, "GET", "/v1/upstreams").json()["items"]}
        for key, port in acked.items():
            assert key in items, f"acknowledged write {key} lost on {node.id}"
            assert items[key]["targets"][0]["port"] == port


def test_leader_sigkill_new_write_commits_fast_and_nothing_acked_is_lost(cluster: Cluster) -> None:
    acked: dict[str, int] = {}
    for i in range(20):
        write_any(cluster, f"k{i}", 10000 + i, f"pre-{i}", time.monotonic() + 10)
        acked[f"k{i}"] = 10000 + i
    leader = cluster.wait_leader()
    cluster.kill(leader)
    killed_at = time.monotonic()
    write_any(cluster, "after-kill", 20000, "after-kill", killed_at + 10)
    failover = time.monotonic() - killed_at
    acked["after-kill"] = 20000
    assert failover < 2.0, f"first write after leader SIGKILL took {failover:.2f}s"
    new_leader = cluster.wait_leader()
    assert new_leader is not leader
    # the killed node comes back as a follower and catches up
    cluster.start(leader)
    cluster.wait_ready()
    assert_all_present(cluster, acked)


def test_restarted_follower_catches_up(cluster: Cluster) -> None:
    follower = cluster.follower()
    cluster.kill(follower)
    acked = {}
    for i in range(30):
        write_any(cluster, f"f{i}", 11000 + i, f"f-{i}", time.monotonic() + 10)
        acked[f"f{i}"] = 11000 + i
    cluster.start(follower)
    head = cluster.api(cluster.wait_leader(), "GET", "/v1/config").json()["revision"]
    wait_for(lambda: (cluster.status(follower) or {}).get("revision") == head, 20, "follower caught up")
    stale = cluster.api(follower, "GET", "/v1/upstreams?consistency=stale").json()
    assert {i["id"] for i in stale["items"]} >= set(acked)


def test_sigkill_all_nodes_then_restart_keeps_every_acked_write(cluster: Cluster) -> None:
    acked = {}
    for i in range(40):
        write_any(cluster, f"d{i}", 12000 + i, f"d-{i}", time.monotonic() + 10)
        acked[f"d{i}"] = 12000 + i
    revision = cluster.api(cluster.nodes[0], "GET", "/v1/config").json()["revision"]
    cluster.kill_all()
    cluster.start_all()
    cluster.wait_ready()
    assert_all_present(cluster, acked)
    assert cluster.api(cluster.nodes[1], "GET", "/v1/config").json()["revision"] >= revision
    # the cluster still takes writes after the restart
    write_any(cluster, "post-restart", 13000, "post-restart", time.monotonic() + 10)


def test_write_without_quorum_is_503_retryable_and_a_retry_applies_once(cluster: Cluster) -> None:
    survivor, *others = cluster.nodes
    for node in others:
        cluster.kill(node)
    r = request("PUT", survivor.url + "/v1/upstreams/q1", token=cluster.token, json_body=upstream_body(17000),
                headers={"X-Request-Id": "no-quorum-1"}, timeout=15)
    assert r.status == 503, r
    err = r.json()["error"]
    assert err["retryable"] is True and err["request_id"] == "no-quorum-1"
    # The survivor saw its peers' connections drop: it refuses before proposing, and says so.
    assert err["code"] == "no_quorum", err
    # linearizable reads on a minority node cannot be served either; stale reads can
    assert cluster.api(survivor, "GET", "/v1/upstreams", timeout=15).status == 503
    assert cluster.api(survivor, "GET", "/v1/upstreams?consistency=stale").status == 200
    for node in others:
        cluster.start(node)
    cluster.wait_ready()
    # no_quorum is definite: nothing was proposed, so nothing committed when the majority returned.
    assert cluster.api(survivor, "GET", "/v1/upstreams/q1").status == 404
    revision = write_any(cluster, "q1", 17000, "no-quorum-1", time.monotonic() + 10)
    again = write_any(cluster, "q1", 17000, "no-quorum-1", time.monotonic() + 10)
    assert again == revision  # the same request id applied once, whatever the first attempt did
