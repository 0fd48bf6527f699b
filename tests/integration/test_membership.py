"""Dynamic membership on real node processes: add, remove, restart-all, unsafe and concurrent changes."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.integration.test_failover import assert_all_present, write_any
from tests.support.cluster import Cluster, NodeProc, free_port
from tests.support.http import Response, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def new_node(cluster: Cluster, node_id: str) -> NodeProc:
    """A node directory and node.toml whose peers are the cluster's current nodes (not started);
    its [raft] settings are those of the first node."""
    node = NodeProc(node_id, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", cluster.base / node_id)
    node.dir.mkdir()
    peers = "".join(
        f'[[peers]]\nid = "{p.id}"\nraft_addr = "{p.raft_addr}"\nadmin_url = "{p.url}"\n\n' for p in cluster.nodes
    )
    raft = (cluster.nodes[0].dir / "node.toml").read_text().partition("[raft]")
    (node.dir / "node.toml").write_text(
        f'node_id = "{node_id}"\nraft_addr = "{node.raft_addr}"\nadmin_addr = "{node.admin_addr}"\n'
        f'data_dir = "data"\nsecret_file = "{cluster.base / "secret"}"\nfsync = true\ninsecure = true\n{peers}'
        + "".join(raft[1:])
    )
    return node


def add(cluster: Cluster, via: NodeProc, node: NodeProc, **kw: Any) -> Response:
    body = {"id": node.id, "raft_addr": node.raft_addr, "admin_url": node.url}
    return cluster.api(via, "POST", "/v1/cluster/members" + kw.pop("query", ""), body, **kw)


def member_ids(cluster: Cluster, node: NodeProc) -> list[str]:
    data = cluster.api(node, "GET", "/v1/cluster").json()
    assert all(m["reachable"] for m in data["members"]), data
    return [m["id"] for m in data["members"]]


def same_config(cluster: Cluster, a: NodeProc, b: NodeProc) -> bool:
    sa, sb = cluster.status(a), cluster.status(b)
    return bool(sa and sb and (sa["revision"], sa["hash"]) == (sb["revision"], sb["hash"]))


def test_add_remove_then_restart_all_keeps_the_changed_membership(tmp_path: Path) -> None:
    c = Cluster(tmp_path, raft={"compaction_min_entries": 10})
    c.start_all()
    try:
        leader = c.wait_ready()
        acked = {}
        for i in range(5):
            write_any(c, f"a{i}", 14000 + i, f"a-{i}", time.monotonic() + 10)
            acked[f"a{i}"] = 14000 + i
        follower = next(n for n in c.nodes if n is not leader)
        n4 = new_node(c, "n4")
        r = add(c, follower, n4)  # a follower forwards the change to the leader
        assert r.status == 201, r
        assert [m["id"] for m in r.json()["members"]] == ["n1", "n2", "n3", "n4"]
        assert add(c, leader, n4).json()["unchanged"] is True  # a retried add is idempotent
        fleet = c.api(leader, "GET", "/v1/proxies").json()  # the fan-out asks n4 too: not started yet
        assert [u["id"] for u in fleet["unreachable_nodes"]] == ["n4"]
        c.nodes.append(n4)
        c.start(n4)
        wait_for(lambda: same_config(c, leader, n4), 20, "n4 caught up")
        wait_for(lambda: c.api(leader, "GET", "/v1/proxies").json()["unreachable_nodes"] == [], 10, "n4 in the fleet view")
        for node in c.nodes:
            wait_for(lambda node=node: member_ids(c, node) == ["n1", "n2", "n3", "n4"], 10, f"n4 seen by {node.id}")
        n4_view = {m["id"]: m for m in c.api(leader, "GET", "/v1/cluster").json()["members"]}["n4"]
        assert n4_view["admin_url"] == n4.url and n4_view["revision"] == c.status(leader)["revision"]

        gone = next(n for n in c.nodes if n is not leader and n is not n4)
        r = c.api(n4, "DELETE", f"/v1/cluster/members/{gone.id}")
        assert r.status == 200, r
        assert gone.id not in [m["id"] for m in r.json()["members"]]
        c.kill(gone)
        c.nodes.remove(gone)
        for i in range(25):  # enough for log compaction: the dumps must carry the new membership
            write_any(c, f"b{i}", 15000 + i, f"b-{i}", time.monotonic() + 10)
            acked[f"b{i}"] = 15000 + i
        expected = sorted(n.id for n in c.nodes)
        for node in c.nodes:
            wait_for(lambda node=node: member_ids(c, node) == expected, 10, f"{gone.id} gone on {node.id}")
        dumped = msgpack.unpackb((n4.dir / "data" / "raft" / "raft.dump").read_bytes(), raw=False)
        assert sorted(m["id"] for m in dumped["cluster"]) == expected

        # every node's node.toml still lists the removed member, and n4's lacks nobody: neither matters
        c.kill_all()
        c.start_all()
        c.wait_ready()
        for node in c.nodes:
            wait_for(lambda node=node: member_ids(c, node) == expected, 10, f"membership after restart on {node.id}")
        assert_all_present(c, acked)
        # the removed node, restarted with its old data and peers, cannot get back in
        c.start(gone)
        write_any(c, "after", 16000, "after", time.monotonic() + 10)
        assert member_ids(c, c.wait_leader()) == expected
        assert not (c.status(gone) or {}).get("has_quorum")
        c.kill(gone)
    finally:
        c.stop_all()


def test_unsafe_changes_are_refused_with_the_reason(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    down, other = (n for n in cluster.nodes if n is not leader)
    cluster.kill(down)
    wait_for(lambda: down.id not in _reachable(cluster, leader), 10, f"{down.id} seen down")
    r = cluster.api(leader, "DELETE", f"/v1/cluster/members/{other.id}")
    assert r.status == 409 and r.json()["error"]["code"] == "unsafe_change", r
    assert "could not form a quorum" in r.json()["error"]["message"] and down.id in r.json()["error"]["message"]
    n4 = new_node(cluster, "n4")
    r = add(cluster, other, n4)
    assert r.status == 409 and "would lose its quorum" in r.json()["error"]["message"], r
    dup = cluster.api(leader, "POST", "/v1/cluster/members",
                      {"id": "n9", "raft_addr": other.raft_addr, "admin_url": "http://127.0.0.1:1"})
    assert dup.status == 409 and f"already used by member {other.id}" in dup.json()["error"]["message"], dup
    bad = cluster.api(leader, "POST", "/v1/cluster/members", {"id": "n9", "raft_addr": "nope", "admin_url": "x"})
    assert bad.status == 422 and bad.json()["error"]["path"] == "member.raft_addr", bad
    assert cluster.api(leader, "DELETE", "/v1/cluster/members/n9").status == 404
    # removing the member that is down is safe: the other two are up
    r = cluster.api(other, "DELETE", f"/v1/cluster/members/{down.id}")
    assert r.status == 200, r
    write_any(cluster, "two-left", 17000, "two-left", time.monotonic() + 10)
    cluster.nodes.remove(down)
    # without a majority there is no leader to make any change
    cluster.kill(other)
    r = add(cluster, leader, n4)  # 409 while it still believes it leads, 503 once it has stepped down
    assert r.status in (409, 503) and "working majority" in r.json()["error"]["message"], r


def _reachable(cluster: Cluster, node: NodeProc) -> list[str]:
    members = cluster.api(node, "GET", "/v1/cluster").json()["members"]
    return [m["id"] for m in members if m["reachable"]]


def test_removing_the_leader_hands_leadership_over_first(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    r = cluster.api(leader, "DELETE", f"/v1/cluster/members/{leader.id}")
    assert r.status == 200, r
    body = r.json()
    assert body["removed"]["id"] == leader.id and body["leader"] not in (None, leader.id)
    cluster.kill(leader)
    cluster.nodes.remove(leader)
    new_leader = cluster.wait_leader()
    assert member_ids(cluster, new_leader) == sorted(n.id for n in cluster.nodes)
    write_any(cluster, "after", 18000, "after", time.monotonic() + 10)


def test_a_second_change_while_one_is_in_progress_is_refused(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    followers = [n for n in cluster.nodes if n is not leader]
    for f in followers:  # the first change cannot commit while they are paused
        assert f.proc is not None
        f.proc.send_signal(signal.SIGSTOP)
    results: dict[str, Response] = {}
    first = threading.Thread(target=lambda: results.update(
        first=add(cluster, leader, new_node(cluster, "n4"), query="?timeout=2", timeout=15)))
    try:
        first.start()
        wait_for(lambda: "n4" in [m["id"] for m in cluster.api(leader, "GET", "/v1/cluster/members").json()["members"]],
                 5, "n4 proposed (a change takes effect when appended)")
        second = add(cluster, leader, new_node(cluster, "n5"))
    finally:
        for f in followers:
            assert f.proc is not None
            f.proc.send_signal(signal.SIGCONT)
        first.join(20)
    assert second.status == 409, second
    assert "membership change is in progress (adding n4" in second.json()["error"]["message"]
    assert results["first"].status in (201, 503), results["first"]
    cluster.wait_ready()
