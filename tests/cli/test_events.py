"""cli/events.py: events are derived purely from two successive snapshots."""

from __future__ import annotations

from typing import Any

from cli.events import diff, initial


def node(id: str, role: str | None = "follower", reachable: bool = True, **kw: Any) -> dict[str, Any]:
    return {"id": id, "role": role if reachable else None, "reachable": reachable, "has_quorum": reachable,
            "term": 2, **kw}  # fmt: skip


def proxy(id: str, mode: str = "synced", **kw: Any) -> dict[str, Any]:
    return {"id": id, "mode": mode, "revision": 5, "reachable": True, **kw}


def snap(
    leader: str | None = "n1",
    nodes: list[dict[str, Any]] | None = None,
    proxies: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": 100.0, "leader": leader, "last_leader": leader, "term": 2, "revision": 5,
        "source": {"id": "n1", "url": "http://n1"},
        "nodes": nodes if nodes is not None else [node("n1", "leader"), node("n2"), node("n3")],
        "proxies": proxies if proxies is not None else [proxy("p1")],
    }  # fmt: skip
    base.update(kw)
    return base


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events]


def test_no_change_no_events() -> None:
    assert diff(snap(), snap(time=101.0)) == []


def test_first_snapshot_says_where_things_stand_and_what_is_wrong() -> None:
    first = snap(nodes=[node("n1", "leader"), node("n2", reachable=False, error="connection refused")],
                 proxies=[proxy("p1", "cached")])  # fmt: skip
    got = diff(None, first)
    assert got == initial(first)
    assert messages(got) == [
        "watching 2 nodes, 1 proxies; leader n1 (term 2)",
        "n2 down (connection refused)",
        "p1 in cached mode (revision 5)",
    ]
    assert [e["level"] for e in got] == ["info", "error", "warn"]
    assert messages(initial(snap(leader=None, nodes=[], proxies=[]))) == [
        "watching 0 nodes, 0 proxies; no leader"
    ]


def test_leader_change_names_old_and_new_leader_and_term() -> None:
    got = diff(snap(), snap(leader="n2", term=3, time=107.5))
    assert messages(got) == ["leader n1 → n2 (term 3)"]
    assert got[0]["time"] == 107.5 and got[0]["subject"] == "cluster" and got[0]["level"] == "warn"


def test_leader_lost_then_a_new_one_is_a_change_from_the_last_known_leader() -> None:
    before = snap()
    gap = snap(leader=None, last_leader="n1")
    assert messages(diff(before, gap)) == ["no leader (was n1)"]
    assert messages(diff(gap, snap(leader="n3", term=4))) == ["leader n1 → n3 (term 4)"]
    assert messages(diff(snap(leader=None, last_leader=None), snap(leader="n2"))) == [
        "leader n2 elected (term 2)"
    ]


def test_term_change_without_leader_change() -> None:
    assert messages(diff(snap(), snap(term=5))) == ["term 2 → 5, leader still n1"]


def test_node_down_and_up() -> None:
    down = snap(nodes=[node("n1", "leader"), node("n2", reachable=False, error="timed out"), node("n3")])
    assert messages(diff(snap(), down)) == ["n2 down (timed out)"]
    assert messages(diff(down, snap())) == ["n2 up (follower)"]
    assert [e["level"] for e in diff(down, snap())] == ["ok"]


def test_restart_seen_from_process_uptime_only() -> None:
    old = snap(nodes=[node("n1", "leader", uptime=500.0)])
    new = snap(nodes=[node("n1", "leader", uptime=3.0)])
    assert messages(diff(old, new)) == ["n1 restarted (up 3s)"]
    observed = snap(nodes=[node("n1", "leader", uptime=3.0, uptime_observed=True)])
    assert diff(old, observed) == []  # "seen up for" restarts with the view, not with the node


def test_restart_seen_from_a_new_started_at() -> None:
    old = snap(nodes=[node("n1", "leader", started_at=1000.0, uptime=500.0)])
    new = snap(nodes=[node("n1", "leader", started_at=1499.0, uptime=1.0)])
    assert messages(diff(old, new)) == ["n1 restarted (up 1s)"]
    same = snap(nodes=[node("n1", "leader", started_at=1000.0, uptime=3.0)])
    assert diff(old, same) == []  # same start: the view's clock moved back, not the node
    bare = snap(nodes=[node("n1", "leader", started_at=1499.0)])
    assert messages(diff(old, bare)) == ["n1 restarted"]
    mixed = snap(nodes=[node("n1", "leader", started_at=None, uptime=600.0)])
    assert diff(old, mixed) == []  # an older server after a rolling downgrade: uptime went up


def test_nodes_joining_and_leaving_the_view() -> None:
    two = snap(nodes=[node("n1", "leader"), node("n2")])
    assert messages(diff(two, snap())) == ["n3 joined the view"]
    assert messages(diff(snap(), two)) == ["n3 left the view"]


def test_quorum_lost_and_regained() -> None:
    lost = snap(leader=None, nodes=[node("n1", reachable=False), node("n2", has_quorum=False)])
    lost["nodes"][1]["has_quorum"] = False
    got = messages(diff(snap(), lost))
    assert "no reachable node has a quorum" in got and "no leader (was n1)" in got
    assert "quorum regained" in messages(diff(lost, snap()))


def test_revision_jumps() -> None:
    assert messages(diff(snap(), snap(revision=6))) == ["revision 5 → 6"]
    assert messages(diff(snap(), snap(revision=9))) == ["revision 5 → 9 (+4)"]
    assert messages(diff(snap(), snap(revision=4))) == ["revision went back 5 → 4"]
    assert diff(snap(revision=None), snap(revision=5)) == []


def test_proxy_cached_mode_enter_and_leave() -> None:
    cached = snap(proxies=[proxy("p1", "cached")])
    got = diff(snap(), cached)
    assert messages(got) == ["p1 entered cached mode (serving revision 5 read-only)"]
    assert got[0]["level"] == "warn" and got[0]["subject"] == "p1"
    assert messages(diff(cached, snap())) == ["p1 left cached mode (synced)"]
    assert messages(diff(snap(proxies=[proxy("p1", "empty")]), snap())) == ["p1 empty → synced"]


def test_proxy_nack_reported_once_per_new_error() -> None:
    nacked = snap(proxies=[proxy("p1", last_error="revision 6: routes[r1]: bad")])
    assert messages(diff(snap(), nacked)) == ["p1 rejected a config: revision 6: routes[r1]: bad"]
    assert diff(nacked, nacked) == []
    assert diff(nacked, snap()) == []  # a cleared error is not news


def test_proxy_reachability_and_membership() -> None:
    gone = snap(proxies=[proxy("p1", reachable=False, error="connection refused")])
    assert messages(diff(snap(), gone)) == ["p1 not answering (connection refused)"]
    assert messages(diff(gone, snap())) == ["p1 answering again"]
    assert messages(diff(snap(proxies=[]), snap())) == ["p1 appeared (synced)"]
    assert messages(diff(snap(), snap(proxies=[]))) == ["p1 left the view"]


def test_failover_of_the_node_the_view_reads_from() -> None:
    moved = snap(source={"id": "n2", "url": "http://n2"})
    assert messages(diff(snap(), moved)) == ["reading cluster data from n2 (was n1)"]
    assert messages(diff(snap(), snap(source=None))) == ["reading cluster data from no node (was n1)"]


def test_raft_links_going_down_and_up_are_events() -> None:
    from cli.events import diff as d

    before = snap(nodes=[node("n1", "leader"), node("n2"), node("n3")])
    cut = snap(time=101.0, nodes=[node("n1", "leader", links_down=["n3"]), node("n2"), node("n3", links_down=["n1"])])
    assert messages(d(before, cut)) == ["n1: Raft link to n3 down", "n3: Raft link to n1 down"]
    assert messages(d(cut, before)) == ["n1: Raft link to n3 up again", "n3: Raft link to n1 up again"]


def test_node_events_from_the_nodes_themselves() -> None:
    from cli.events import node_events

    out = node_events([
        {"seq": 4, "time": 10.0, "node": "n2", "event": "election_won", "term": 7},
        {"seq": 5, "time": 11.0, "node": "n2", "event": "quorum_lost", "term": 7},
        {"seq": 6, "time": 12.0, "node": "n2", "event": "unavailable", "code": "no_quorum", "suppressed": 3},
    ])  # fmt: skip
    assert messages(out) == ["n2: election won (term=7)", "n2: quorum lost (term=7)",
                             "n2: unavailable (code=no_quorum suppressed=3)"]
    assert [e["level"] for e in out] == ["ok", "error", "warn"] and out[0]["time"] == 10.0
