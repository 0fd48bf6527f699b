"""render.py is pure: dicts in, rich renderables out; rendered here to plain text to check content."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from cli import render


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


def test_status_view() -> None:
    status: dict[str, Any] = {
        "leader": "n1",
        "nodes": [
            {"id": "n1", "role": "leader", "term": 3, "commit_index": 40, "applied_index": 40, "revision": 12,
             "has_quorum": True, "reachable": True, "admin_url": "http://a", "process": "running"},
            {"id": "n2", "role": "unreachable", "reachable": False, "admin_url": "http://b", "process": "stopped"},
        ],
        "proxies": [
            {"id": "p1", "mode": "synced", "revision": 12, "connected_cp": "n1", "url": "http://p", "reachable": True},
            {"id": "p2", "reachable": False, "error": "connection refused"},
        ],
        "upstreams": [{"id": "demo", "url": "http://u", "process": "running"}],
    }  # fmt: skip
    out = text(render.status_view(status))
    assert "control plane (leader: n1)" in out
    line_n1 = next(line for line in out.splitlines() if "│ n1" in line)
    for s in ("leader", "3", "40", "12", "yes", "http://a", "running"):
        assert s in line_n1
    line_n2 = next(line for line in out.splitlines() if "│ n2" in line)
    assert "unreachable" in line_n2 and "stopped" in line_n2
    assert "synced" in out and "connection refused" in out
    assert "upstreams: demo http://u running" in out


def test_nodes_table_without_answers() -> None:
    out = text(render.nodes_table({"leader": None, "nodes": [], "errors": ["http://x: connection refused"]}))
    assert "leader: none" in out and "connection refused" in out


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
