"""Service registration on a real 3-node cluster: register, heartbeat, expire, deregister, roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.auth import mint_token
from tests.support.cluster import Cluster, running_cluster, upstream_body
from tests.support.http import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("disco")) as c:
        r = c.api(c.nodes[0], "PUT", "/v1/upstreams/svc", upstream_body(9001))
        assert r.status in (200, 201), r
        # The leader opens its expiry epoch (reg_grant) in its first discovery round after the election.
        wait_for(lambda: c.api(c.wait_leader(), "GET", "/v1/discovery").json()["leading"], 15, "expiry epoch open")
        yield c


def _revision(c: Cluster) -> int:
    return int(c.api(c.wait_leader(), "GET", "/v1/status").json()["revision"])


def _registered(c: Cluster, node: Any, upstream: str = "svc") -> list[dict[str, Any]]:
    r = c.api(node, "GET", f"/v1/upstreams/{upstream}")
    assert r.status == 200, r
    regs: list[dict[str, Any]] = r.json()["registered"]
    return regs


def test_register_through_a_follower_heartbeat_without_revision_then_expiry(cluster: Cluster) -> None:
    c = cluster
    follower = c.follower()
    r = c.api(follower, "PUT", "/v1/upstreams/svc/targets/127.0.0.1:7001",
              {"weight": 2, "ttl": 2, "metadata": {"zone": "a"}})
    assert r.status == 201, r
    body = r.json()
    assert body["registered"] and body["weight"] == 2 and body["changed"]
    rev = body["revision"]
    regs = _registered(c, c.wait_leader())
    assert [(g["host"], g["port"], g["weight"]) for g in regs] == [("127.0.0.1", 7001, 2)]
    assert regs[0]["expires_in"] is not None and regs[0]["age"] >= 0
    # Heartbeats (on the follower, batched to the leader) keep it alive well past its TTL, and no
    # heartbeat creates a revision.
    until = time.monotonic() + 5
    while time.monotonic() < until:
        hb = c.api(follower, "POST", "/v1/upstreams/svc/targets/127.0.0.1:7001/heartbeat")
        assert hb.status == 200, hb
        time.sleep(0.5)
    assert _revision(c) == rev
    assert len(_registered(c, follower)) == 1
    # The same PUT again is a renewal: no revision either.
    again = c.api(follower, "PUT", "/v1/upstreams/svc/targets/127.0.0.1:7001",
                  {"weight": 2, "ttl": 2, "metadata": {"zone": "a"}})
    assert again.status == 200 and again.json()["changed"] is False and _revision(c) == rev
    # Silence: the leader expires it through a replicated command (one revision).
    stopped = time.monotonic()
    wait_for(lambda: not _registered(c, follower), 10, "registration expired")
    assert time.monotonic() - stopped < 2 + 2.5
    assert _revision(c) == rev + 1
    hb = c.api(follower, "POST", "/v1/upstreams/svc/targets/127.0.0.1:7001/heartbeat")
    assert hb.status == 404 and hb.json()["error"]["code"] == "not_found"


def test_deregister_validation_and_listing(cluster: Cluster) -> None:
    c = cluster
    node = c.nodes[1]
    r = c.api(node, "PUT", "/v1/upstreams/svc/targets/[::1]:7002", {"ttl": 30})
    assert r.status == 201, r
    listing = c.api(node, "GET", "/v1/upstreams/svc/targets").json()
    assert [t["port"] for t in listing["static"]] == [9001] and listing["static"][0]["registered"] is False
    assert [(t["host"], t["port"]) for t in listing["registered"]] == [("::1", 7002)]
    d = c.api(node, "DELETE", "/v1/upstreams/svc/targets/[::1]:7002")
    assert d.status == 200, d
    assert c.api(node, "DELETE", "/v1/upstreams/svc/targets/[::1]:7002").status == 404
    for target, body, path in (
        ("127.0.0.1:7003", {}, "upstreams[svc].targets[127.0.0.1:7003].ttl"),
        ("127.0.0.1:7003", {"ttl": 5, "wieght": 1}, "upstreams[svc].targets[127.0.0.1:7003].wieght"),
        ("127.0.0.1:0", {"ttl": 5}, "upstreams[svc].targets"),
    ):
        bad = c.api(node, "PUT", f"/v1/upstreams/svc/targets/{target}", body)
        assert bad.status == 422, bad
        assert bad.json()["error"]["path"] == path
    missing = c.api(node, "PUT", "/v1/upstreams/nope/targets/127.0.0.1:7003", {"ttl": 5})
    assert missing.status == 404 and missing.json()["error"]["path"] == "upstreams[nope]"


def test_registrar_role_may_only_register(cluster: Cluster) -> None:
    c = cluster
    token = mint_token(c.secret, "registrar", "agent", 600)
    node = c.nodes[2]
    ok = c.api(node, "PUT", "/v1/upstreams/svc/targets/127.0.0.1:7004", {"ttl": 30}, token=token)
    assert ok.status == 201, ok
    assert c.api(node, "POST", "/v1/upstreams/svc/targets/127.0.0.1:7004/heartbeat", token=token).status == 200
    for method, path, body in (("GET", "/v1/upstreams/svc", None), ("PUT", "/v1/upstreams/svc", upstream_body()),
                               ("GET", "/v1/cluster", None), ("POST", "/v1/discovery/heartbeats", {"ids": []})):
        denied = c.api(node, method, path, body, token=token)
        assert denied.status == 403, (method, path, denied)
    assert c.api(node, "DELETE", "/v1/upstreams/svc/targets/127.0.0.1:7004", token=token).status == 200


def test_deleting_the_upstream_deregisters(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    node = c.nodes[0]
    assert c.api(node, "PUT", "/v1/upstreams/gone", upstream_body(9002)).status == 201
    assert c.api(node, "PUT", "/v1/upstreams/gone/targets/127.0.0.1:7005", {"ttl": 30}).status == 201
    assert c.api(node, "DELETE", "/v1/upstreams/gone").status == 200
    assert c.api(node, "POST", "/v1/upstreams/gone/targets/127.0.0.1:7005/heartbeat").status == 404
