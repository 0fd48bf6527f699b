"""render.py is pure: dicts in, rich renderables out; rendered here to plain text to check content."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType
from rich.table import Table

from cli import render
from cli.metrics_scrape import Rates
from cli.status import assemble


def text(r: RenderableType) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None, force_terminal=False).print(r)
    return buf.getvalue()


CLUSTER = {
    "nodes": [{"id": "n1", "admin_url": "http://127.0.0.1:7001", "raft_addr": "127.0.0.1:8001", "pid": 11}],
    "proxies": [
        {"id": "p1", "url": "http://127.0.0.1:9001", "status_url": "http://127.0.0.1:9101", "pid": None}
    ],
    "upstreams": [{"id": "demo", "url": "http://127.0.0.1:9201", "pid": 13}],
    "token_file": "/x/admin.token",
}


def test_cluster_table() -> None:
    table = render.cluster_table(CLUSTER)
    assert isinstance(table, Table) and table.row_count == 3
    out = text(table)
    for s in ("node", "n1", "http://127.0.0.1:7001", "raft 127.0.0.1:8001", "11", "p1", "status http://127.0.0.1:9101",
              "demo", "13", "/x/admin.token"):  # fmt: skip
        assert s in out, s


def view_text(r: RenderableType, width: int = 120) -> str:
    """Render at a fixed width without colour, as the terminal would show it."""
    con = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    con.print(r)
    return con.export_text()


def row_of(out: str, first_cell: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"│ {first_cell} "))


NODES = [{"id": f"n{i}", "admin_url": f"http://127.0.0.1:700{i}", "process": "running"} for i in (1, 2, 3)]


def member(id: str, role: str, applied: int = 40) -> dict[str, Any]:
    return {"id": id, "role": role, "term": 7, "commit_index": 40, "applied_index": applied, "revision": 12,
            "has_quorum": True, "leader": "n1", "hash": "abc"}  # fmt: skip


def snapshot(**kw: Any) -> dict[str, Any]:
    """A snapshot as the live view gets it: one leader, a lagging follower, a dead node, two proxies."""
    nodes = [dict(n) for n in NODES]
    nodes[2]["process"] = "stopped"
    proxies = [
        {"id": "p1", "status_url": "http://s1", "reachable": True, "mode": "synced", "revision": 12,
         "connected_cp": "http://127.0.0.1:7001", "seconds_since_sync": 0.4, "process": "running"},
        {"id": "p2", "status_url": "http://s2", "reachable": True, "mode": "cached", "revision": 9,
         "seconds_since_sync": 75.0, "process": "running"},
    ]  # fmt: skip
    fleet = {
        "p2": {"id": "p2", "connected": False, "revision": 9, "last_error": "revision 10: routes[r9]: bad"}
    }
    args: dict[str, Any] = dict(
        now=1_700_000_000.0, nodes=nodes,
        probes={"n1": member("n1", "leader"), "n2": member("n2", "follower", 37), "n3": "connection refused"},
        proxies=proxies, fleet=fleet, traffic={"p1": Rates(152.25, 0.5, 0.0032)},
        config={"revision": 12, "hash": "0123456789abcdef", "counts": {"upstreams": 2, "routes": 5,
                                                                        "consumers": 1, "plugins": 0}},
        uptimes={"n1": (3725.0, False), "n2": (42.0, True)}, source={"id": "n1", "url": "http://127.0.0.1:7001"},
    )  # fmt: skip
    args.update(kw)
    return assemble(**args)


def test_status_view_nodes_lag_down_uptime() -> None:
    out = view_text(render.status_view(snapshot(), 120), 120)
    assert "control plane (leader: n1)" in out
    n1, n2, n3 = row_of(out, "n1"), row_of(out, "n2"), row_of(out, "n3")
    for s in ("leader", "up", "7", "40", "12", "yes", "1h02m", "running"):
        assert s in n1, s
    assert n2.split("│")[7].strip() == "3"  # lag = leader commit 40 - applied 37
    assert "≥42s" in n2  # only seen up for 42 s by this view
    assert "down" in n3 and "connection refused" in n3 and "stopped" in n3
    assert " up " not in n3


def test_status_view_proxies_modes_lag_traffic_errors() -> None:
    out = view_text(render.status_view(snapshot(), 120), 120)
    p1, p2 = row_of(out, "p1"), row_of(out, "p2")
    for s in ("synced", "152", "0.5", "3.2ms", "0s ago", "n1"):
        assert s in p1, s
    assert "cached" in p2 and "1m15s ago" in p2 and "revision 10: routes[r9]" in p2
    assert p2.split("│")[4].strip() == "3"  # committed 12 - served 9
    assert "config  revision 12 · hash 0123456789ab · 2 upstreams · 5 routes · 1 consumers · 0 plugins" in out


def test_remote_proxies_last_sync_from_the_last_ack_and_traffic_from_their_metrics() -> None:
    """--endpoint mode: no local proxies, only fleet entries (status_address, last_ack_at)."""
    fleet = {
        "p1": {"id": "p1", "connected": True, "revision": 12, "mode": "synced", "node": "n2",
               "status_address": "10.0.0.1:81", "last_ack_at": 1_700_000_000.0 - 75},
        "p2": {"id": "p2", "connected": True, "revision": 12, "mode": "synced", "node": "n1",
               "status_address": "10.0.0.2:81", "last_ack_at": None},
    }  # fmt: skip
    snap = snapshot(proxies=[], fleet=fleet, traffic={"p1": Rates(7.25, 0.0, 0.0125), "p2": None})
    out = view_text(render.status_view(snap, 120), 120)
    p1, p2 = row_of(out, "p1"), row_of(out, "p2")
    for s in ("synced", "1m15s ago", "7.2", "12.5ms", "n2"):
        assert s in p1, s
    cells = [c.strip() for c in p2.split("│")[1:-1]]
    assert cells[4:8] == ["-", "-", "-", "-"]  # no ack yet, metrics silent: last sync, req/s, 5xx/s, p99


def test_proxies_show_their_sync_model_and_the_relay_they_sync_through() -> None:
    fleet = {
        "p1": {"id": "p1", "connected": True, "revision": 12, "mode": "synced", "node": "n1", "sync": "pull"},
        "p2": {"id": "p2", "connected": True, "revision": 12, "mode": "cached", "node": "n1", "sync": "hybrid",
               "via": "relay-eu"},
    }  # fmt: skip
    out = view_text(render.status_view(snapshot(proxies=[], fleet=fleet), 160), 160)
    p1, p2 = row_of(out, "p1"), row_of(out, "p2")
    assert "pull" in p1 and "direct" in p1
    assert "hybrid" in p2 and "relay relay-eu" in p2 and "cached" in p2


def test_node_uptime_reported_by_the_node_is_not_a_lower_bound() -> None:
    snap = snapshot(probes={"n1": {**member("n1", "leader"), "started_at": 1_700_000_000.0 - 7200},
                            "n2": member("n2", "follower"), "n3": "timed out"},
                    uptimes={"n1": (7200.0, False), "n2": (5.0, True)})  # fmt: skip
    out = view_text(render.status_view(snap, 120), 120)
    assert "2h00m" in row_of(out, "n1") and "≥2h" not in row_of(out, "n1") and "≥5s" in row_of(out, "n2")


def test_live_view_header_and_events_newest_first() -> None:
    events = [
        {
            "time": 1_700_000_001.0,
            "level": "error",
            "subject": "n3",
            "message": "n3 down (connection refused)",
        },
        {
            "time": 1_700_000_002.0,
            "level": "warn",
            "subject": "cluster",
            "message": "leader n3 → n1 (term 7)",
        },
    ]
    out = view_text(render.live_view(snapshot(), events, 120, "gwadm top"), 120)
    head = out.splitlines()[0]
    assert head.startswith("gwadm top  leader n1 · term 7 · via n1 · ") and head.endswith("q quits")
    assert "recent events" in out
    assert out.index("leader n3 → n1 (term 7)") < out.index("n3 down (connection refused)")


def test_events_panel_fits_the_terminal_height() -> None:
    many = [{"time": 0.0, "level": "info", "subject": "x", "message": f"event {i:02d}"} for i in range(40)]
    out = view_text(render.live_view(snapshot(), many, 120, height=30), 120)
    assert len(out.splitlines()) <= 30
    assert "event 39" in out and "event 30" in out and "event 29" not in out  # the newest 10
    tiny = view_text(render.live_view(snapshot(), many, 120, height=5), 120)
    assert "event 37" in tiny and "event 36" not in tiny  # never fewer than 3


def test_empty_states() -> None:
    empty = assemble(now=0.0, nodes=[], probes={})
    out = view_text(render.live_view(empty, [], 120), 120)
    for s in ("control plane (leader: none)", "no node answered", "no proxies known", "revision ?",
              "resource counts unavailable", "no events yet", "leader none", "no node answering"):  # fmt: skip
        assert s in out, s


def test_nothing_answers_every_node_is_down() -> None:
    snap = snapshot(probes={n["id"]: "timed out" for n in NODES}, source=None)
    out = view_text(render.live_view(snap, [], 120), 120)
    for nid in ("n1", "n2", "n3"):
        line = row_of(out, nid)
        assert "down" in line and "timed out" in line
    assert "leader none" in out


def test_config_counts_of_an_older_revision_are_marked() -> None:
    snap = snapshot(config={"revision": 10, "hash": "h", "counts": {"routes": 1}})
    assert "(counts as of revision 10)" in view_text(render.config_line(snap))


@pytest.mark.parametrize("width", [60, 80, 100])
def test_narrow_terminals_keep_one_line_per_row_and_the_states(width: int) -> None:
    out = view_text(render.live_view(snapshot(), [], width), width)
    assert max(len(line) for line in out.splitlines()) <= width
    for nid in ("n1", "n2", "n3", "p1", "p2"):
        assert sum(1 for line in out.splitlines() if line.startswith(f"│ {nid} ")) == 1, nid
    assert "down" in row_of(out, "n3") and "cached" in row_of(out, "p2")
    assert "running" not in out  # the process columns go first


def test_down_local_proxy_and_unknown_values() -> None:
    snap = snapshot(
        proxies=[{"id": "p1", "status_url": "http://s1", "reachable": False, "error": "timed out"}]
    )
    line = row_of(view_text(render.status_view(snap, 120), 120), "p1")
    assert "down (timed out)" in line
    assert line.count("-") >= 5  # revision, lag, traffic unknown


def test_duration() -> None:
    assert [render.duration(s) for s in (None, 0, 59.9, 61, 3725, 90000)] == ["-", "0s", "59s", "1m01s", "1h02m",
                                                                              "1d1h"]  # fmt: skip


def test_upstreams_line_of_a_local_cluster() -> None:
    snap = snapshot()
    snap["upstreams"] = [{"id": "demo", "url": "http://u", "process": "running"}]
    assert "upstreams: demo http://u running" in view_text(render.status_view(snap))


def test_resource_tables() -> None:
    routes = {"revision": 5, "items": [
        {"id": "r1", "paths": ["/a", "/b"], "hosts": [], "methods": ["GET"], "upstream": "u1", "priority": 2,
         "plugins": {"cors": {}, "key-auth": {}}, "mod_revision": 4},
    ]}  # fmt: skip
    out = text(render.resource_table("routes", routes))
    assert "routes (revision 5)" in out
    row = next(line for line in out.splitlines() if "r1" in line)
    for s in ("/a, /b", "GET", "u1", "2", "cors, key-auth", "4"):
        assert s in row
    ups = {"revision": 1, "items": [{"id": "u1", "targets": [{"host": "h", "port": 1, "weight": 1},
                                                             {"host": "g", "port": 2, "weight": 5}],
                                     "lb": "round_robin", "retries": 1, "mod_revision": 1}]}  # fmt: skip
    assert "h:1, g:2*5" in text(render.resource_table("upstreams", ups))
    cons = {"revision": 1, "items": [{"id": "c1", "username": None, "credentials": {"key-auth": [{"key": "k"}],
                                                                                    "jwt-auth": []}}]}  # fmt: skip
    assert "key-auth: 1" in text(render.resource_table("consumers", cons))
    plugins = {
        "revision": 1,
        "items": [{"id": "g", "name": "cors", "enabled": True, "config": {"origins": ["*"]}}],
    }
    out = text(render.resource_table("plugins", plugins))
    assert "cors" in out and '{"origins":["*"]}' in out
    assert "no routes" in text(render.resource_table("routes", {"items": [], "revision": 0}))


def test_actions_and_progress() -> None:
    out = text(render.actions_table([{"id": "n1", "pid": 5, "result": "stopped"}], "stopped"))
    assert "n1" in out and "5" in out
    out = text(render.progress_view({"n2": "no leader yet"}, ["started n1"], "waiting for"))
    assert "started n1" in out and "n2" in out and "no leader yet" in out
    assert render.pending_line({"a": "x", "b": "y"}) == "a: x; b: y"


def test_render_does_not_mutate_input() -> None:
    import copy

    before = copy.deepcopy(CLUSTER)
    render.cluster_table(CLUSTER)
    assert CLUSTER == before
    snap = snapshot()
    frozen = copy.deepcopy(snap)
    view_text(render.live_view(snap, [], 60), 60)
    assert snap == frozen


def test_a_node_whose_raft_links_are_down_says_which() -> None:
    nodes = [{"id": "n1", "admin_url": "http://a"}, {"id": "n2", "admin_url": "http://b"}]
    probes = {
        "n1": {"role": "leader", "term": 3, "has_quorum": True, "leader": "n1", "links_down": ["n2"]},
        "n2": {"role": "follower", "term": 3, "has_quorum": True, "leader": "n1", "links_down": []},
    }
    out = text(render.nodes_table(assemble(now=0.0, nodes=nodes, probes=probes)))
    assert "links down: n2" in out
    assert out.count("links down") == 1
