"""Supervisor readiness waits and the sample config, against small fake servers (short deadlines)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cli.supervisor import NotReady, Supervisor
from tests.cli.conftest import Serve, json_app


def leader_view(url: str) -> web.Application:
    def handler(request: web.Request) -> web.Response:
        member = {"id": "n1", "role": "leader", "term": 1, "commit_index": 3, "applied_index": 3, "revision": 0,
                  "has_quorum": True, "reachable": True, "admin_url": url, "raft_addr": "127.0.0.1:1"}  # fmt: skip
        if request.path == "/health":
            return web.json_response({"status": "ok"})
        return web.json_response({"leader": "n1", "members": [member]})

    return json_app(handler)


def cluster_for(
    node_url: str, upstream_url: str, proxies: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "nodes": [{"id": "n1", "admin_url": node_url, "raft_addr": "127.0.0.1:1", "pid": None}],
        "proxies": proxies or [],
        "upstreams": [{"id": "demo", "url": upstream_url, "pid": None}],
    }


def test_wait_nodes_returns_when_ready(serve: Serve, tmp_path: Path) -> None:
    srv = serve(leader_view("x"))
    sup = Supervisor(tmp_path)
    sup.wait_nodes(cluster_for(srv.url, srv.url), "tok", time.monotonic() + 5, [])


def test_wait_nodes_times_out_naming_the_member_and_its_log(
    serve: Serve, dead_url: str, tmp_path: Path
) -> None:
    up = serve(leader_view("x"))
    sup = Supervisor(tmp_path)
    log = sup.layout.log_file("nodes", "n1")
    log.parent.mkdir(parents=True)
    log.write_text("line one\nbind failed: address in use\n")
    with pytest.raises(NotReady) as info:
        sup.wait_nodes(cluster_for(dead_url, up.url), "tok", time.monotonic() + 0.3, [])
    err = info.value
    assert err.member == "n1" and "connection refused" in err.reason and not err.exited
    assert err.log_tail[-1] == "bind failed: address in use" and err.log_path == log


def test_wait_proxies_needs_ready_and_revision(serve: Serve, tmp_path: Path) -> None:
    state = {"ready": 503, "revision": 0}

    def status(request: web.Request) -> web.Response:
        if request.path == "/ready":
            return web.json_response({}, status=state["ready"])
        return web.json_response({"mode": "synced", "revision": state["revision"], "connected_cp": "n1"})

    proxy = serve(json_app(status))
    cluster = cluster_for(
        "http://unused", "http://unused", [{"id": "p1", "url": "http://x", "status_url": proxy.url}]
    )
    sup = Supervisor(tmp_path)
    with pytest.raises(NotReady, match="p1 is not ready: /ready answers 503"):
        sup.wait_proxies(cluster, "tok", time.monotonic() + 0.2, [], revision=2)
    state["ready"] = 200
    with pytest.raises(NotReady, match="at revision 0, waiting for 2"):
        sup.wait_proxies(cluster, "tok", time.monotonic() + 0.2, [], revision=2)
    state["revision"] = 2
    sup.wait_proxies(cluster, "tok", time.monotonic() + 5, [], revision=2)


def test_load_sample_posts_one_txn(serve: Serve, tmp_path: Path) -> None:
    log: list[dict[str, Any]] = []
    srv = serve(json_app(lambda r: web.json_response({"revision": 1, "results": []}), log))
    cluster = cluster_for(srv.url, "http://127.0.0.1:4567")
    assert Supervisor(tmp_path).load_sample(cluster, "tok") == 1
    body = json.loads(log[0]["body"])
    assert log[0]["path"] == "/v1/txn"
    assert body["ops"] == [
        {
            "op": "put",
            "kind": "upstreams",
            "id": "demo",
            "body": {"targets": [{"host": "127.0.0.1", "port": 4567}]},
        },
        {"op": "put", "kind": "routes", "id": "hello", "body": {"paths": ["/hello"], "upstream": "demo"}},
    ]


def test_ensure_sample_only_on_an_empty_config(serve: Serve, tmp_path: Path) -> None:
    log: list[dict[str, Any]] = []
    state: dict[str, Any] = {"revision": 0, "items": []}

    def api(request: web.Request) -> web.Response:
        if request.path == "/v1/txn":
            state["revision"] = 1
            return web.json_response({"revision": 1, "results": []})
        return web.json_response(state)

    srv = serve(json_app(api, log))
    cluster = cluster_for(srv.url, "http://127.0.0.1:4567")
    sup = Supervisor(tmp_path)
    assert sup.ensure_sample(cluster, "tok") == (1, True)
    assert [e["path"] for e in log] == ["/v1/routes", "/v1/txn"]
    assert sup.ensure_sample(cluster, "tok") == (1, False)  # written before: left alone
    state["items"] = [{"id": "hello"}]
    assert sup.ensure_sample(cluster, "tok") == (1, True)
    assert [e["path"] for e in log].count("/v1/txn") == 1
