"""Admin API on a real 3-node cluster: writes anywhere, linearizable reads, CAS, auth, bad input."""

from __future__ import annotations

import time

import jwt

from cluster.auth import token_key
from tests.support.cluster import Cluster, route_body, upstream_body


def test_write_through_follower_is_visible_linearizably_on_another_node(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    followers = [n for n in cluster.nodes if n is not leader]
    r = cluster.api(followers[0], "PUT", "/v1/upstreams/u1", upstream_body())
    assert r.status == 201, r
    rev = r.json()["revision"]
    # a default (linearizable) read on the other follower sees it immediately
    for n in (followers[1], leader, followers[0]):
        got = cluster.api(n, "GET", "/v1/upstreams/u1")
        assert got.status == 200, got
        assert got.json()["mod_revision"] == rev
        assert got.json()["targets"][0]["port"] == 9001
    r = cluster.api(followers[1], "PUT", "/v1/routes/r1", route_body("u1"))
    assert r.status == 201, r
    listed = cluster.api(followers[0], "GET", "/v1/routes").json()
    assert [i["id"] for i in listed["items"]] == ["r1"]


def test_cas_conflict_and_if_match(cluster: Cluster) -> None:
    n1, n2, _ = cluster.nodes
    first = cluster.api(n1, "PUT", "/v1/upstreams/u1", upstream_body(9001)).json()
    ok = cluster.api(n2, "PUT", "/v1/upstreams/u1", upstream_body(9002),
                     headers={"If-Match": str(first["mod_revision"])})
    assert ok.status == 200, ok
    stale = cluster.api(n1, "PUT", "/v1/upstreams/u1", upstream_body(9003),
                        headers={"If-Match": str(first["mod_revision"])})
    assert stale.status == 409, stale
    assert stale.json()["error"]["code"] == "conflict"
    assert cluster.api(n1, "GET", "/v1/upstreams/u1").json()["targets"][0]["port"] == 9002
    created = cluster.api(n1, "POST", "/v1/upstreams", {"id": "u1", **upstream_body()})
    assert created.status == 409, created


def test_request_id_dedupes_retried_write(cluster: Cluster) -> None:
    n1, n2, _ = cluster.nodes
    headers = {"X-Request-Id": "retry-me-1"}
    a = cluster.api(n1, "PUT", "/v1/upstreams/u1", upstream_body(9001), headers=headers)
    b = cluster.api(n2, "PUT", "/v1/upstreams/u1", upstream_body(9001), headers=headers)
    assert a.status == 201 and b.status == 201, (a, b)
    assert a.json()["revision"] == b.json()["revision"]
    assert cluster.api(n1, "GET", "/v1/config").json()["revision"] == a.json()["revision"]


def test_txn_is_atomic_and_referential_integrity_holds(cluster: Cluster) -> None:
    n1 = cluster.nodes[0]
    ops = [
        {"op": "put", "kind": "upstreams", "id": "u1", "body": upstream_body()},
        {"op": "put", "kind": "routes", "id": "r1", "body": route_body("u1")},
    ]
    r = cluster.api(n1, "POST", "/v1/txn", {"ops": ops})
    assert r.status == 200, r
    rev = r.json()["revision"]
    bad = cluster.api(n1, "POST", "/v1/txn", {"ops": [
        {"op": "put", "kind": "routes", "id": "r2", "body": route_body("u1", "/b")},
        {"op": "put", "kind": "routes", "id": "r3", "body": route_body("missing", "/c")},
    ]})
    assert bad.status == 422, bad
    assert bad.json()["error"]["path"] == "routes[r3].upstream"
    in_use = cluster.api(n1, "DELETE", "/v1/upstreams/u1")
    assert in_use.status == 409 and in_use.json()["error"]["code"] == "in_use", in_use
    cfg = cluster.api(n1, "GET", "/v1/config").json()
    assert cfg["revision"] == rev
    assert [r["id"] for r in cfg["resources"]["routes"]] == ["r1"]
    assert cluster.api(n1, "DELETE", "/v1/routes/r1").status == 200
    assert cluster.api(n1, "DELETE", "/v1/upstreams/u1").status == 200
    assert cluster.api(n1, "GET", "/v1/upstreams/u1").status == 404


def test_bad_inputs_get_4xx_and_change_nothing(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    assert cluster.api(n1, "PUT", "/v1/upstreams/u1", upstream_body()).status == 201
    before = cluster.api(n2, "GET", "/v1/config").json()

    def put(node, path, **kw):  # type: ignore[no-untyped-def]
        from tests.support.http import request
        return request("PUT", node.url + path, **kw)

    cases = []
    cases.append((put(n1, "/v1/upstreams/u2", token=cluster.token, data=b"{not json",
                      headers={"Content-Type": "application/json"}), 400, None))
    cases.append((cluster.api(n2, "PUT", "/v1/upstreams/u2", {**upstream_body(), "tragets": []}), 422, "tragets"))
    cases.append((cluster.api(n3, "PUT", "/v1/upstreams/u2",
                              {"targets": [{"host": "127.0.0.1", "port": "80"}]}), 422, "targets[0].port"))
    cases.append((cluster.api(n1, "PUT", "/v1/routes/r1", route_body("nope")), 422, "upstream"))
    cases.append((put(n1, "/v1/upstreams/u2", token=cluster.token, data=b"x" * (1024 * 1024 + 10),
                      headers={"Content-Type": "application/json"}), 413, None))
    cases.append((put(n1, "/v1/upstreams/u2", token=cluster.token, data=b"targets=1",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, None))
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/u2", upstream_body(), token=None), 401, None))
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/u2", upstream_body(), token="garbage"), 401, None))
    expired = jwt.encode({"iss": "gwadm", "sub": "x", "role": "admin", "iat": int(time.time()) - 100,
                          "exp": int(time.time()) - 50}, token_key(cluster.secret), algorithm="HS256")
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/u2", upstream_body(), token=expired), 401, None))
    forged = jwt.encode({"iss": "gwadm", "sub": "x", "role": "admin", "iat": int(time.time()),
                         "exp": int(time.time()) + 50}, b"wrong-key" * 4, algorithm="HS256")
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/u2", upstream_body(), token=forged), 401, None))
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/u2", upstream_body(), token=cluster.viewer_token), 403, None))
    cases.append((cluster.api(n1, "GET", "/v1/routes", token=cluster.proxy_token), 403, None))
    cases.append((cluster.api(n1, "PUT", "/v1/widgets/w1", {}), 404, None))
    cases.append((cluster.api(n1, "PUT", "/v1/upstreams/bad%20id", upstream_body()), 422, None))
    cases.append((cluster.api(n1, "POST", "/v1/txn", {"ops": []}), 422, "ops"))
    for resp, status, path_part in cases:
        assert resp.status == status, (status, resp)
        err = resp.json()["error"]
        assert err["code"] and err["message"], resp
        if path_part:
            assert path_part in (err["path"] or ""), resp
    assert resp.headers  # last response has headers
    # viewers can read
    assert cluster.api(n1, "GET", "/v1/upstreams", token=cluster.viewer_token).status == 200
    after = cluster.api(n3, "GET", "/v1/config").json()
    assert after == before


def test_cluster_view_reports_every_member(cluster: Cluster) -> None:
    view = cluster.api(cluster.nodes[2], "GET", "/v1/cluster").json()
    assert view["leader"] in {n.id for n in cluster.nodes}
    members = {m["id"]: m for m in view["members"]}
    assert set(members) == {"n1", "n2", "n3"}
    assert sum(1 for m in members.values() if m["role"] == "leader") == 1
    for m in members.values():
        assert m["reachable"] and m["has_quorum"]
        assert m["applied_index"] <= m["commit_index"] or m["role"] != "leader"
        assert {"term", "commit_index", "applied_index", "admin_url", "raft_addr"} <= set(m)


def test_node_data_is_private_to_its_owner(cluster: Cluster) -> None:
    """The journal holds consumer credentials: data dirs are 0700."""
    import stat

    for node in cluster.nodes:
        for path in (node.dir / "data", node.dir / "data" / "raft"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
