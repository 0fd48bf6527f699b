"""Readiness rules and the merged status view: pure functions, no sockets."""

from __future__ import annotations

from typing import Any

from cli.status import merge_cluster_views, node_readiness


def member(id: str, role: str, commit: int = 5, applied: int = 5, reachable: bool = True) -> dict[str, Any]:
    return {
        "id": id, "role": role, "term": 2, "commit_index": commit, "applied_index": applied, "revision": 3,
        "has_quorum": True, "reachable": reachable, "admin_url": f"http://127.0.0.1:70{id[-1]}",
        "raft_addr": f"127.0.0.1:80{id[-1]}",
    }  # fmt: skip


def view(leader: str | None, *members: dict[str, Any]) -> dict[str, Any]:
    return {"leader": leader, "members": list(members)}


IDS = ["n1", "n2", "n3"]
HEALTHY = [member("n1", "leader"), member("n2", "follower"), member("n3", "follower")]


def test_ready_when_one_leader_all_reachable_and_caught_up() -> None:
    probes = {nid: view("n1", *HEALTHY) for nid in IDS}
    assert node_readiness(IDS, probes) == {}


def test_no_leader_yet() -> None:
    probes = {nid: view(None, *HEALTHY) for nid in IDS}
    assert node_readiness(IDS, probes) == {nid: "no leader yet" for nid in IDS}


def test_unreachable_node_is_named_with_the_reason() -> None:
    probes: dict[str, Any] = {
        "n1": view("n1", *HEALTHY),
        "n2": view("n1", *HEALTHY),
        "n3": "connection refused",
    }
    assert node_readiness(IDS, probes) == {"n3": "not answering (connection refused)"}


def test_disagreeing_leaders() -> None:
    probes = {"n1": view("n1", *HEALTHY), "n2": view("n2", *HEALTHY), "n3": view("n1", *HEALTHY)}
    pending = node_readiness(IDS, probes)
    assert set(pending) == set(IDS) and "disagree" in pending["n1"]


def test_lagging_follower_and_member_unreachable_from_leader() -> None:
    lead_view = view("n1", member("n1", "leader", commit=9, applied=9), member("n2", "follower", applied=9),
                     member("n3", "follower", reachable=False))  # fmt: skip
    lagging = view("n1", member("n2", "follower", commit=7, applied=7))
    probes = {"n1": lead_view, "n2": lagging, "n3": view("n1", member("n3", "follower", applied=9))}
    assert node_readiness(IDS, probes) == {
        "n2": "applied 7 < leader commit 9",
        "n3": "not reachable from the leader n1",
    }


def test_leader_not_answering() -> None:
    probes: dict[str, Any] = {"n1": "timed out", "n2": view("n1", *HEALTHY), "n3": view("n1", *HEALTHY)}
    assert node_readiness(IDS, probes) == {"n1": "not answering (timed out)"}


def test_merge_prefers_each_nodes_own_view_and_marks_unreachable() -> None:
    n2_self = member("n2", "follower", commit=4, applied=4)
    probes: dict[str, Any] = {
        "n1": view("n1", *HEALTHY),
        "n2": view("n1", member("n1", "leader"), n2_self),
        "n3": "connection refused",
    }
    nodes = [{"id": nid, "admin_url": f"http://127.0.0.1:70{nid[-1]}", "pid": 10} for nid in IDS]
    merged = merge_cluster_views(nodes, probes)
    assert merged["leader"] == "n1"
    rows = {r["id"]: r for r in merged["nodes"]}
    assert rows["n2"]["applied_index"] == 4  # its own view, not the leader's
    assert rows["n1"]["role"] == "leader" and rows["n1"]["reachable"] is True and rows["n1"]["pid"] == 10
    assert rows["n3"]["reachable"] is False and rows["n3"]["role"] == "unreachable"
    assert rows["n3"]["error"] == "connection refused"


def test_merge_learns_members_from_views_when_none_are_known() -> None:
    merged = merge_cluster_views([], {"n1": view("n1", *HEALTHY)})
    assert [r["id"] for r in merged["nodes"]] == IDS
    assert [r["reachable"] for r in merged["nodes"]] == [True, False, False]
