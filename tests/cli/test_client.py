"""AdminClient against real aiohttp servers on 127.0.0.1: failover, request ids, error mapping."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from cli.client import AdminClient, ApiError, ClusterUnreachable, normalize_kind, split_endpoints
from tests.cli.conftest import Serve, json_app


def ok(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


def unavailable(_: web.Request) -> web.Response:
    body = {"error": {"code": "unavailable", "message": "outcome unknown", "path": None, "retryable": True}}
    return web.json_response(body, status=503)


def test_dead_endpoint_then_live_one(serve: Serve, dead_url: str) -> None:
    log: list[dict[str, Any]] = []
    live = serve(json_app(lambda r: ok({"items": [], "revision": 7}), log))
    client = AdminClient([dead_url, live.url], "tok", timeout=2.0, retry_for=0)
    assert client.list("route") == {"items": [], "revision": 7}
    assert log[0]["path"] == "/v1/routes"
    assert log[0]["headers"]["Authorization"] == "Bearer tok"
    assert client.last_endpoint == live.url
    # the next call starts from the endpoint that worked
    client.endpoints[0] = "http://127.0.0.1:9"  # would fail if it were tried first
    client.get("upstreams", "u1")
    assert [e["path"] for e in log] == ["/v1/routes", "/v1/upstreams/u1"]


def test_write_keeps_its_request_id_across_failover(serve: Serve, dead_url: str) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    flaky = serve(json_app(unavailable, first))
    live = serve(json_app(lambda r: ok({"id": "r1", "revision": 3, "mod_revision": 3}), second))
    client = AdminClient([dead_url, flaky.url, live.url], "tok", timeout=2.0, retry_for=0)
    out = client.put("routes", "r1", {"paths": ["/a"], "upstream": "u"}, if_match=2)
    assert out["revision"] == 3
    assert len(first) == 1 and len(second) == 1
    rid = first[0]["headers"]["X-Request-Id"]
    assert rid and second[0]["headers"]["X-Request-Id"] == rid
    assert second[0]["headers"]["If-Match"] == "2"
    assert json.loads(second[0]["body"]) == {"paths": ["/a"], "upstream": "u"}
    # a new logical call gets a new id
    client.put("routes", "r1", {"paths": ["/a"], "upstream": "u"})
    assert second[1]["headers"]["X-Request-Id"] != rid


def test_txn_request_id_in_body_and_header(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    srv = serve(json_app(lambda r: ok({"revision": 4, "results": []}), log))
    client = AdminClient([srv.url], "tok", retry_for=0)
    client.txn([{"op": "put", "kind": "route", "id": "r", "body": {}}], expect_revision=3)
    body = json.loads(log[0]["body"])
    assert log[0]["method"] == "POST" and log[0]["path"] == "/v1/txn"
    assert body["request_id"] == log[0]["headers"]["X-Request-Id"]
    assert body["expect_revision"] == 3
    assert body["ops"] == [{"op": "put", "kind": "routes", "id": "r", "body": {}}]


def test_timeout_moves_to_next_endpoint(serve: Serve) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return ok({})

    hung = serve(json_app(slow))
    live = serve(json_app(lambda r: ok({"leader": "n1", "members": []})))
    client = AdminClient([hung.url, live.url], "tok", timeout=0.2, retry_for=0)
    assert client.cluster()["leader"] == "n1"


def test_4xx_error_maps_to_api_error_without_failover(serve: Serve) -> None:
    log: list[dict[str, Any]] = []

    def invalid(_: web.Request) -> web.Response:
        err = {"code": "invalid", "message": "must start with /", "path": "routes[r1].paths[0]"}
        return web.json_response({"error": err}, status=422)

    bad = serve(json_app(invalid))
    other = serve(json_app(lambda r: ok({}), log))
    client = AdminClient([bad.url, other.url], "tok", retry_for=0)
    with pytest.raises(ApiError) as info:
        client.put("routes", "r1", {"paths": ["x"]})
    err = info.value
    assert (err.status, err.code, err.message, err.path) == (
        422,
        "invalid",
        "must start with /",
        "routes[r1].paths[0]",
    )
    assert err.describe() == "routes[r1].paths[0]: must start with / (422 invalid)"
    assert log == []  # a 4xx is an answer: no failover


def test_non_json_error_body(serve: Serve) -> None:
    srv = serve(json_app(lambda r: web.Response(status=404, text="404: Not Found")))
    with pytest.raises(ApiError) as info:
        AdminClient([srv.url], "tok", retry_for=0).get("routes", "nope")
    assert info.value.status == 404 and info.value.code == "http_404"
    assert "Not Found" in info.value.message


def test_all_503_raises_last_api_error(serve: Serve) -> None:
    a = serve(json_app(unavailable))
    b = serve(json_app(unavailable))
    with pytest.raises(ApiError) as info:
        AdminClient([a.url, b.url], "tok", retry_for=0).delete("routes", "r1")
    assert info.value.status == 503 and info.value.retryable


def test_all_dead_raises_cluster_unreachable(dead_url: str) -> None:
    with pytest.raises(ClusterUnreachable) as info:
        AdminClient([dead_url], "tok", timeout=0.5, retry_for=0).config()
    assert isinstance(info.value, ConnectionError)
    assert "connection refused" in str(info.value)


def test_retry_for_cycles_until_an_endpoint_recovers(serve: Serve) -> None:
    calls: list[int] = []

    def sometimes(_: web.Request) -> web.Response:
        calls.append(1)
        return unavailable(_) if len(calls) < 3 else ok({"items": []})

    srv = serve(json_app(sometimes))
    client = AdminClient([srv.url], "tok", retry_for=5.0, retry_pause=0.01)
    assert client.proxies() == {"items": []}
    assert len(calls) == 3


def test_ids_are_quoted_in_paths(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    srv = serve(json_app(lambda r: ok({}), log))
    AdminClient([srv.url], "tok", retry_for=0).get("consumers", "a/b c")
    assert log[0]["path"] == "/v1/consumers/a%2Fb%20c"


def test_helpers() -> None:
    assert split_endpoints(["a:1,b:2", "http://c:3/", "a:1"]) == ["http://a:1", "http://b:2", "http://c:3"]
    assert normalize_kind("Route") == "routes" and normalize_kind("plugins") == "plugins"
    with pytest.raises(ValueError, match="unknown kind"):
        normalize_kind("widget")
    with pytest.raises(ValueError):
        AdminClient([], "tok")
