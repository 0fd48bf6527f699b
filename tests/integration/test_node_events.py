"""A node tells what it does: elections, leader changes and peer links as events (GET /v1/events),
and its peer links in /v1/status — on a real 3-node cluster whose leader is killed."""

from __future__ import annotations

from typing import Any

from tests.support.cluster import Cluster
from tests.support.http import wait_for


def events(cluster: Cluster, node: Any, since: int = 0) -> list[dict[str, Any]]:
    r = cluster.api(node, "GET", f"/v1/events?since={since}")
    assert r.status == 200, r
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_leader_loss_shows_up_as_events_and_link_state(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    survivors = [n for n in cluster.nodes if n is not leader]
    wait_for(lambda: cluster.api(survivors[0], "GET", "/v1/status").json()["links_down"] == [], timeout=15,
             what="every link of a survivor up after the start")
    status = cluster.api(survivors[0], "GET", "/v1/status").json()
    assert set(status["links"]) == {n.id for n in cluster.nodes if n is not survivors[0]}, status["links"]
    assert status["links_down"] == [] and all(v["state"] == "up" for v in status["links"].values())
    marks = {n.id: (events(cluster, n)[-1]["seq"] if events(cluster, n) else 0) for n in survivors}
    cluster.kill(leader)
    new_leader = cluster.wait_leader()
    assert new_leader is not leader

    def seen() -> bool:
        kinds = {n.id: {e["event"] for e in events(cluster, n, marks[n.id])} for n in survivors}
        return all({"link_down", "leader_changed"} <= k for k in kinds.values()) and any(
            "election_won" in k for k in kinds.values())

    wait_for(seen, timeout=15, what="link_down, leader_changed and election_won events on the survivors")
    won = [e for e in events(cluster, new_leader, marks[new_leader.id]) if e["event"] == "election_won"]
    assert won and won[-1]["term"] >= 1 and won[-1]["node"] == new_leader.id
    down = [e for e in events(cluster, survivors[0], marks[survivors[0].id]) if e["event"] == "link_down"]
    assert any(e["peer"] == leader.id for e in down), down
    st = cluster.api(survivors[0], "GET", "/v1/status").json()
    assert st["links_down"] == [leader.id] and st["links"][leader.id]["state"] in ("down", "connecting")
    r = cluster.api(survivors[0], "GET", "/v1/events?since=x")
    assert r.status == 422 and r.json()["error"]["path"] == "since"


def test_gwadm_top_shows_the_nodes_own_events(cluster: Cluster) -> None:
    """The TUI's poller (cli/tui.py Monitor) pulls each node's /v1/events into its event list."""
    from cli.tui import Monitor, Targets

    leader = cluster.wait_leader()
    nodes = tuple({"id": n.id, "admin_url": n.url} for n in cluster.nodes)
    monitor = Monitor(lambda: Targets(token=cluster.token, endpoints=(), nodes=nodes), timeout=2.0)
    monitor.poll()
    first = [e["message"] for e in monitor.events]
    assert any(m.startswith(f"{leader.id}: election won") for m in first), first
    follower = next(n for n in cluster.nodes if n is not leader)
    cluster.kill(follower)
    wait_for(lambda: any(f"link down (peer={follower.id})" in e["message"] for e in monitor.events)
             or monitor.poll() is None, timeout=15, what="the leader's link_down event in the view")
