"""Errors arrive promptly and timeouts can be set: a node that knows it has no quorum answers
``503 no_quorum`` after ``no_leader_wait`` (about one election timeout), not after the request
timeout; the request timeout is settable in node.toml and per request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, running_cluster, upstream_body
from tests.support.http import request, wait_for


@pytest.fixture
def slow_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, extra_toml="[timeouts]\nrequest = 20.0\nno_leader_wait = 0.4\n") as c:
        yield c


def test_no_quorum_is_answered_after_the_leader_wait_not_the_request_timeout(slow_cluster: Cluster) -> None:
    c = slow_cluster
    leader = c.wait_leader()
    assert c.api(leader, "PUT", "/v1/upstreams/u1", upstream_body()).status in (200, 201)
    survivor = c.nodes[0]
    for n in c.nodes[1:]:
        c.kill(n)
    wait_for(lambda: not (c.status(survivor) or {}).get("has_quorum", True), timeout=15,
             what="the survivor to know it has no quorum")
    for method, path, body in (("PUT", "/v1/upstreams/u2", upstream_body()), ("GET", "/v1/upstreams", None)):
        started = time.monotonic()
        r = request(method, survivor.url + path, token=c.token, json_body=body, timeout=30)
        took = time.monotonic() - started
        print(f"{method} {path} answered {r.status} after {took:.3f}s")
        assert r.status == 503 and r.json()["error"]["code"] == "no_quorum", r
        # The request timeout is 20 s: an answer long before it comes from no_leader_wait (0.4 s).
        assert took < 10, f"{method} {path} took {took:.1f}s"


def test_per_request_timeout_bad_values_are_refused(slow_cluster: Cluster) -> None:
    c = slow_cluster
    leader = c.wait_leader()
    r = c.api(leader, "GET", "/v1/upstreams?timeout=soon")
    assert r.status == 422 and r.json()["error"]["path"] == "timeout"
    r = request("PUT", leader.url + "/v1/upstreams/u3", token=c.token, json_body=upstream_body(),
                headers={"X-Request-Timeout": "999"}, timeout=10)
    assert r.status == 422 and r.json()["error"]["path"] == "X-Request-Timeout"
    r = request("PUT", leader.url + "/v1/upstreams/u3", token=c.token, json_body=upstream_body(),
                headers={"X-Request-Timeout": "3"}, timeout=10)
    assert r.status in (200, 201), r
    # the query form is accepted wherever the header is: reads, writes, deletes and transactions
    assert c.api(leader, "GET", "/v1/upstreams?timeout=2").status == 200
    assert c.api(leader, "GET", "/v1/upstreams/u3?timeout=2.5").status == 200
    r = request("PUT", leader.url + "/v1/upstreams/u4?timeout=3", token=c.token, json_body=upstream_body(), timeout=10)
    assert r.status in (200, 201), r
    r = request("DELETE", leader.url + "/v1/upstreams/u4?timeout=3", token=c.token, timeout=10)
    assert r.status == 200, r
