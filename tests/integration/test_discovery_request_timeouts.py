"""Service registration honours the per-request timeout (cluster/discovery_api.py, cluster/timeouts.py):
``X-Request-Timeout`` / ``?timeout=`` replace ``[timeouts] request`` for PUT / DELETE / GET targets.

How a write is made to wait: both followers are SIGSTOPped, so the leader appends the command but
can never commit it, and its connections stay open (it keeps "quorum" until its links time out):
the request then waits for its timeout, 20 s from node.toml unless the request says otherwise.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, running_cluster, upstream_body
from tests.support.http import request

DEFAULT = 20.0  # [timeouts] request: a handler that ignores the per-request timeout waits this long


@pytest.fixture
def slow_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, extra_toml=f"[timeouts]\nrequest = {DEFAULT}\n") as c:
        yield c


@pytest.mark.timeout(120)
def test_register_and_deregister_answer_within_the_request_timeout(slow_cluster: Cluster) -> None:
    c = slow_cluster
    leader = c.wait_leader()
    assert c.api(leader, "PUT", "/v1/upstreams/svc", upstream_body(9001)).status in (200, 201)
    target = "/v1/upstreams/svc/targets/127.0.0.1:7001"
    assert c.api(leader, "PUT", target, {"ttl": 30}).status == 201
    # Bad values are refused with the field named, before anything is proposed.
    r = request("PUT", leader.url + target, token=c.token, json_body={"ttl": 30},
                headers={"X-Request-Timeout": "0"}, timeout=10)
    assert r.status == 422 and r.json()["error"]["path"] == "X-Request-Timeout", r
    r = c.api(leader, "GET", "/v1/upstreams/svc/targets?timeout=soon")
    assert r.status == 422 and r.json()["error"]["path"] == "timeout", r
    assert c.api(leader, "GET", "/v1/upstreams/svc/targets?timeout=3").status == 200

    for method, path, headers in (
        ("PUT", target, {"X-Request-Timeout": "1"}),
        ("DELETE", target + "?timeout=1", {}),
    ):
        leader = c.wait_leader()
        followers = [n for n in c.nodes if n is not leader]
        for n in followers:
            assert n.proc is not None
            n.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = request(method, leader.url + path, token=c.token, json_body={"ttl": 30} if method == "PUT" else None,
                        headers=headers, timeout=DEFAULT + 10)
            took = time.monotonic() - started
        finally:
            for n in followers:
                if n.proc is not None:
                    n.proc.send_signal(signal.SIGCONT)
        print(f"{method} {path} {headers} answered {r.status} {r.json()} after {took:.2f}s")
        # The leader took the command (no "no_quorum" refusal) and gave up on it at the deadline.
        assert r.status == 503 and r.json()["error"]["code"] != "no_quorum", r
        assert took < DEFAULT / 2, f"{method} waited {took:.1f}s: the 1 s request timeout was ignored"
