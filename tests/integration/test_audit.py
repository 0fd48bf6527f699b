"""The audit log against a real 3-node cluster: who changed what, replicated identically on every
node, rejected writes counted in /metrics but not stored, no credential in any record, and
`gwadm audit` (also --json, --follow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.auth import mint_token
from tests.support.cluster import ROOT, Cluster, running_cluster
from tests.support.http import request, wait_for

pytestmark = pytest.mark.integration

KEY = "audit-test-key-Zq81x"
HS_SECRET = "audit-hs256-secret-Wn72p"


def audit(c: Cluster, node: Any, query: str = "", token: str | None = None) -> Any:
    r = request("GET", node.url + "/v1/audit" + query, token=token or c.token)
    assert r.status == 200, r
    return r.json()


def metric(c: Cluster, node: Any, reason: str) -> float:
    text = request("GET", node.url + "/metrics", token=c.viewer_token).body.decode()
    for line in text.splitlines():
        if line.startswith(f'gwadm_admin_rejected_writes_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no series for {reason}:\n{text}")


def test_audit_log(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.follower()
    other = mint_token(cluster.secret, "admin", "alice", 600)
    # writes, through a follower too (forwarded to the leader): each leaves records
    assert cluster.api(follower, "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": 9}]},
                       headers={"X-Request-Id": "req-u1"}).status == 201
    assert cluster.api(leader, "POST", "/v1/txn", {"ops": [
        {"op": "put", "kind": "routes", "id": "r1", "body": {"paths": ["/a"], "upstream": "u1"}},
        {"op": "put", "kind": "consumers", "id": "c1", "body": {"credentials": {
            "key-auth": [{"key": KEY}], "jwt-auth": [{"key": "iss", "algorithm": "HS256", "secret": HS_SECRET}]}}},
    ]}, token=other).status == 200
    assert cluster.api(leader, "DELETE", "/v1/routes/r1").status == 200
    assert cluster.api(leader, "POST", "/v1/tokens/revoke", {"jti": "some-jti-123"}).status == 200
    assert cluster.api(leader, "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": 9}]},
                       headers={"X-Request-Id": "req-u1"}).status in (200, 201)  # a retry: no new record

    # rejected writes: counted per reason on the node that answered them, never stored
    node = cluster.nodes[2]
    before = {r: metric(cluster, node, r) for r in ("unauthorized", "forbidden", "conflict", "invalid")}
    assert request("PUT", node.url + "/v1/upstreams/x", json_body={}).status == 401
    assert cluster.api(node, "PUT", "/v1/upstreams/x", {"targets": []}, token=cluster.viewer_token).status == 403
    assert cluster.api(node, "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": 9}]},
                       headers={"If-Match": "999"}).status == 409
    assert cluster.api(node, "PUT", "/v1/consumers/c2", {"credentials": {"key-auth": [{"key": KEY}]},
                                                          "nope": 1}).status == 422
    after = {r: metric(cluster, node, r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"unauthorized": 1, "forbidden": 1, "conflict": 1,
                                                         "invalid": 1}

    page = audit(cluster, leader)
    items = page["items"]
    summary = [(r["subject"], r["role"], r["op"], r["kind"], r["id"]) for r in items]
    assert summary == [
        ("test-admin", "admin", "put", "upstreams", "u1"),
        ("alice", "admin", "put", "routes", "r1"),
        ("alice", "admin", "put", "consumers", "c1"),
        ("test-admin", "admin", "delete", "routes", "r1"),
        ("test-admin", "admin", "revoke", "tokens", "some-jti-123"),
    ], summary
    assert items[0]["request_id"] == "req-u1" and items[0]["client"] == "127.0.0.1"
    assert items[1]["revision"] == items[2]["revision"] == items[0]["revision"] + 1  # one txn, one revision
    assert all(isinstance(r["jti"], str) and r["jti"] for r in items)
    assert all(abs(r["time"] - time.time()) < 120 for r in items)
    assert [r["seq"] for r in items] == sorted(r["seq"] for r in items) and page["dropped"] == 0
    text = json.dumps(page)
    assert KEY not in text and HS_SECRET not in text

    # replicated: every node holds the same records (time included: it travels in the command)
    for n in cluster.nodes:
        wait_for(lambda n=n: audit(cluster, n, "?consistency=stale")["items"] == items, 10, f"audit on {n.id}")

    # filters
    assert [r["kind"] for r in audit(cluster, follower, "?subject=alice")["items"]] == ["routes", "consumers"]
    assert [r["op"] for r in audit(cluster, follower, "?kind=routes")["items"]] == ["put", "delete"]
    since = items[1]["revision"]
    assert [r["op"] for r in audit(cluster, follower, f"?since={since}")["items"]] == ["delete", "revoke"]
    assert request("GET", leader.url + "/v1/audit?since=x", token=cluster.token).status == 422
    assert request("GET", leader.url + "/v1/audit", token=cluster.viewer_token).status == 403

    # gwadm audit
    env = {"GWADM_ENDPOINTS": ",".join(n.url for n in cluster.nodes), "GWADM_TOKEN": cluster.token,
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "cli", "audit", "--kind", "routes"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "alice (admin)  put routes/r1" in lines[0], lines
    out = subprocess.run([sys.executable, "-m", "cli", "audit", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["items"] == items
    follow = subprocess.Popen([sys.executable, "-m", "cli", "audit", "--follow", "--json", "--interval", "0.2"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        first = [json.loads(follow.stdout.readline()) for _ in items]  # type: ignore[union-attr]
        assert first == items
        assert cluster.api(leader, "PUT", "/v1/upstreams/u2", {"targets": [{"host": "127.0.0.1", "port": 8}]},
                           token=other).status == 201
        new = json.loads(follow.stdout.readline())  # type: ignore[union-attr]
        assert (new["subject"], new["op"], new["kind"], new["id"]) == ("alice", "put", "upstreams", "u2")
    finally:
        follow.kill()
        follow.wait(10)
    assert request("GET", leader.url + "/metrics").status == 401
    metrics = request("GET", leader.url + "/metrics", token=cluster.viewer_token).body.decode()
    assert "gwadm_audit_records 6.0" in metrics and KEY not in metrics and HS_SECRET not in metrics



def test_audit_bounded_by_node_toml_and_kept_across_a_restart_from_the_dump(tmp_path: Path) -> None:
    # compaction after a few entries: the restart loads the Raft dump, where the audit log must be
    raft = {"compaction_min_entries": 4, "compaction_min_time": 0.2}
    with running_cluster(tmp_path, size=1, fsync=True, raft=raft, extra_toml="audit_entries = 3") as c:
        node = c.nodes[0]
        for i in range(6):
            assert c.api(node, "PUT", f"/v1/upstreams/u{i}", {"targets": [{"host": "127.0.0.1", "port": 9}]}).status == 201
            time.sleep(0.3)  # let compaction run between writes
        page = audit(c, node)
        assert [r["id"] for r in page["items"]] == ["u3", "u4", "u5"] and page["dropped"] == 3
        wait_for(lambda: any((node.dir / "data").rglob("raft.dump*")), 10, "a raft dump on disk")
        c.kill(node)
        c.start(node)
        c.wait_ready()
        assert audit(c, node) == page
