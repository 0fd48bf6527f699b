"""Token revocation and rotation on real node processes, through the API and through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cli.test_node_membership_e2e import gwadm, local_cluster_dir
from tests.support.cluster import Cluster, upstream_body
from tests.support.http import request, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def statuses(cluster: Cluster, token: str, path: str = "/v1/upstreams") -> list[int]:
    return [request("GET", n.url + path, token=token).status for n in cluster.nodes]


def test_a_revoked_token_is_rejected_by_every_node_at_once_and_after_a_restart(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    follower = next(n for n in cluster.nodes if n is not leader)
    minted = cluster.api(follower, "POST", "/v1/tokens", {"role": "viewer", "subject": "alice", "ttl_seconds": 600})
    assert minted.status == 201, minted
    token, jti = minted.json()["token"], minted.json()["jti"]
    assert minted.json()["generation"] == 0 and minted.json()["exp"] == int(jti.rsplit("-", 1)[1])
    assert statuses(cluster, token) == [200, 200, 200]

    r = cluster.api(follower, "POST", "/v1/tokens/revoke", {"jti": jti})
    assert r.status == 200, r
    assert r.json()["enforced_on"] == ["n1", "n2", "n3"] and r.json()["pending"] == []
    assert r.json()["until"] == minted.json()["exp"]
    assert statuses(cluster, token) == [401, 401, 401]  # no waiting: every node applied it before the answer
    assert request("GET", leader.url + "/v1/upstreams", token=token).json()["error"]["message"] == "token revoked"
    assert statuses(cluster, cluster.viewer_token) == [200, 200, 200]
    # a whole token may be given instead of its jti (its exp comes with it)
    r = cluster.api(leader, "POST", "/v1/tokens/revoke", {"token": cluster.viewer_token})
    assert r.status == 200 and r.json()["until"] > time.time(), r
    assert statuses(cluster, cluster.viewer_token) == [401, 401, 401]

    cluster.kill_all()
    cluster.start_all()
    cluster.wait_ready()
    assert statuses(cluster, token) == [401, 401, 401]
    assert statuses(cluster, cluster.viewer_token) == [401, 401, 401]
    listed = cluster.api(cluster.nodes[2], "GET", "/v1/tokens").json()
    assert sorted(e["jti"] for e in listed["revoked"]) == sorted([jti, r.json()["revoked"]])


def test_rotation_rejects_every_older_token_and_the_new_ones_work(cluster: Cluster) -> None:
    cluster.wait_ready()
    n1, _, n3 = cluster.nodes
    r = cluster.api(n3, "POST", "/v1/tokens/rotate", headers={"X-Request-Id": "rotate-1"})
    assert r.status == 200, r
    rotated = r.json()
    assert rotated["generation"] == 1 and rotated["role"] == "admin" and rotated["enforced_on"] == ["n1", "n2", "n3"]
    again = cluster.api(n1, "POST", "/v1/tokens/rotate", headers={"X-Request-Id": "rotate-1"}, token=rotated["token"])
    assert again.status == 200 and again.json()["generation"] == 1  # a retried rotation applies once

    for old in (cluster.token, cluster.viewer_token):
        assert statuses(cluster, old) == [401, 401, 401]
    message = request("GET", n1.url + "/v1/upstreams", token=cluster.token).json()["error"]["message"]
    assert "revoked by a rotation" in message and "generation 0" in message
    assert request("GET", n1.url + "/v1/stream", token=cluster.proxy_token).status == 401

    new_admin = again.json()["token"]
    assert statuses(cluster, new_admin) == [200, 200, 200]
    put = request("PUT", n1.url + "/v1/upstreams/u1", token=new_admin, json_body=upstream_body(9001))
    assert put.status == 201, put
    viewer = cluster.api(n1, "POST", "/v1/tokens", {"role": "viewer"}, token=new_admin).json()
    assert viewer["generation"] == 1 and statuses(cluster, viewer["token"]) == [200, 200, 200]
    proxy = cluster.api(n1, "POST", "/v1/tokens", {"role": "proxy"}, token=new_admin).json()
    assert request("GET", n1.url + "/v1/stream", token=proxy["token"]).status != 401
    # nodes mint their peer requests for the current generation: the cluster view still sees everyone
    members = cluster.api(n1, "GET", "/v1/cluster", token=new_admin).json()["members"]
    assert [m["reachable"] for m in members] == [True, True, True]


def test_token_endpoints_check_arguments_and_roles(cluster: Cluster) -> None:
    node = cluster.wait_ready()
    cases = [
        ("/v1/tokens", {"role": "root"}, "token.role"),
        ("/v1/tokens", {"role": "viewer", "ttl_seconds": 0}, "token.ttl_seconds"),
        ("/v1/tokens", {"role": "viewer", "scope": "x"}, "token.scope"),
        ("/v1/tokens/revoke", {}, "revoke"),
        ("/v1/tokens/revoke", {"jti": "x", "token": "y"}, "revoke"),
        ("/v1/tokens/revoke", {"token": "not-a-token"}, "revoke.token"),
        ("/v1/tokens/revoke", {"jti": "x", "exp": "tomorrow"}, "revoke.exp"),
    ]
    for path, body, where in cases:
        r = cluster.api(node, "POST", path, body)
        assert r.status == 422 and r.json()["error"]["path"] == where, (path, body, r)
    for path in ("/v1/tokens", "/v1/tokens/revoke", "/v1/tokens/rotate"):
        assert cluster.api(node, "POST", path, {"role": "admin"}, token=cluster.viewer_token).status == 403
    assert cluster.api(node, "GET", "/v1/tokens", token=cluster.viewer_token).json()["generation"] == 0


# -- the same through the CLI, on a local cluster with a proxy -----------------------------------------

def test_cli_revoke_and_rotate_reissue_the_local_tokens_and_restart_the_proxy(tmp_path: Path) -> None:
    with local_cluster_dir(tmp_path) as cluster_dir:
        cli_revoke_and_rotate(cluster_dir)


def cli_revoke_and_rotate(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    up = gwadm("cluster", "up", "--dir", d, "--proxies", "1", "--json", "--timeout", "40")
    assert up.returncode == 0, up.stderr
    created = gwadm("token", "create", "--role", "viewer", "--ttl", "1h", "--dir", d, "--json")
    assert created.returncode == 0, created.stderr
    viewer = json.loads(created.stdout)
    assert gwadm("route", "list", "--dir", d, "--token", viewer["token"]).returncode == 0
    revoked = gwadm("token", "revoke", viewer["jti"], "--dir", d)
    assert revoked.returncode == 0 and "enforced on n1, n2, n3" in revoked.stdout, revoked.stderr
    denied = gwadm("route", "list", "--dir", d, "--token", viewer["token"])
    assert denied.returncode != 0 and denied.stderr.strip().splitlines() == [
        "error: token revoked (401 unauthorized) — is the token right? (--token, --token-file, GWADM_TOKEN)"]

    admin_before = (cluster_dir / "admin.token").read_text()
    proxy_pid = json.loads((cluster_dir / "cluster.json").read_text())["proxies"][0]["pid"]
    rotated = gwadm("token", "rotate", "--dir", d)
    assert rotated.returncode == 0, rotated.stderr
    assert "token generation 1" in rotated.stdout and "restarted p1" in rotated.stdout
    assert (cluster_dir / "admin.token").read_text() != admin_before
    old = gwadm("route", "list", "--dir", d, "--token", admin_before.strip())
    assert old.returncode != 0 and "revoked by a rotation" in old.stderr
    put = gwadm("upstream", "put", "u2", "--dir", d, "--data", '{"targets": [{"host": "127.0.0.1", "port": 9}]}')
    assert put.returncode == 0, put.stderr
    revision = json.loads(gwadm("upstream", "list", "--dir", d, "--json").stdout)["revision"]
    proxy = json.loads((cluster_dir / "cluster.json").read_text())["proxies"][0]
    assert proxy["pid"] != proxy_pid
    wait_for(lambda: request("GET", proxy["status_url"] + "/status").json()["revision"] >= revision, 20,
             "the proxy, restarted with the new proxy token, receives the new config")
    status = json.loads(gwadm("token", "status", "--dir", d, "--json").stdout)
    assert status["generation"] == 1
    offline = gwadm("token", "create", "--offline", "--generation", "1", "--role", "viewer", "--dir", d)
    assert gwadm("route", "list", "--dir", d, "--token", offline.stdout.strip()).returncode == 0
