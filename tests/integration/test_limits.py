"""Admin listener limits against a real node (small limits from node.toml's [limits]), and a
hypothesis fuzz of its request parsing: every answer is a JSON 4xx (or a close), the node stays up
and the config does not change."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.auth import mint_token
from cluster.limits import URL_SLACK, Limits, TokenBuckets
from tests.support.cluster import Cluster, running_cluster
from tests.support.http import request

pytestmark = pytest.mark.integration

LIMITS = {"max_url_length": 2048, "max_header_size": 4096, "max_headers": 30,
          "max_connections_per_address": 8, "token_rate": 5.0, "token_burst": 10}
TOML = "[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in LIMITS.items())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("limits")), size=1, fsync=False, extra_toml=TOML) as c:
        assert c.api(c.nodes[0], "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": 9}]}).status == 201
        yield c


def raw(c: Cluster, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; what the node answers until it closes. A node still waiting
    for more after ``timeout`` gets EOF (half-close) and a short while more to answer or close."""
    host, port = c.nodes[0].admin_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the node may close before reading everything (a limit hit): the answer still counts
        out = b""
        half_closed = False
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if half_closed:
                    raise AssertionError(f"no answer and no close for {data[:200]!r}") from None
                half_closed = True
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2.0)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def fingerprint(c: Cluster) -> tuple[int, str]:
    r = request("GET", c.nodes[0].url + "/v1/config", token=fresh_token(c))  # fresh: not rate-limited
    assert r.status == 200, r
    body = r.json()
    return body["revision"], body["hash"]


def get(c: Cluster, path: str, token: str, extra: bytes = b"") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n".encode() + extra
            + b"Connection: close\r\n\r\n")


def fresh_token(c: Cluster) -> str:
    return mint_token(c.secret, "admin", "limits-test", 600)


def test_url_too_long_is_414_json(node: Cluster) -> None:
    token = fresh_token(node)
    status, _, body = parse(raw(node, get(node, "/v1/upstreams?" + "a" * 2100, token)))
    assert (status, body["error"]["code"]) == (414, "url_too_long")
    # beyond the parser's own limit: still JSON, still 414
    status, _, body = parse(raw(node, get(node, "/v1/upstreams?" + "a" * (2048 + URL_SLACK + 100), token)))
    assert (status, body["error"]["code"]) == (414, "url_too_long")


def test_headers_too_large_is_431_json(node: Cluster) -> None:
    token = fresh_token(node)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(25))  # 25 x ~210 bytes > 4096
    status, _, body = parse(raw(node, get(node, "/v1/upstreams", token, many)))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    too_many = b"".join(b"X-H%d: 1\r\n" % i for i in range(40))
    status, _, body = parse(raw(node, get(node, "/v1/upstreams", token, too_many)))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    # one line over the parser's field limit: the parser answers, as JSON, and does not log the line
    secret_looking = "Bearer " + "S3CRET" * 1000
    status, _, body = parse(raw(node, get(node, "/v1/upstreams", token, f"X-Long: {secret_looking}\r\n".encode())))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    assert "S3CRET" not in (node.nodes[0].dir / "node.log").read_text(errors="replace")


def test_per_token_rate_limit_is_429_with_retry_after(node: Cluster) -> None:
    token, other = fresh_token(node), fresh_token(node)
    statuses = [request("GET", node.nodes[0].url + "/v1/status", token=token).status for _ in range(25)]
    assert 429 in statuses and statuses[0] == 200, statuses
    r = request("GET", node.nodes[0].url + "/v1/status", token=token)
    if r.status == 429:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
    assert request("GET", node.nodes[0].url + "/v1/status", token=other).status == 200  # per token


def test_connections_per_address(node: Cluster) -> None:
    host, port = node.nodes[0].admin_addr.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.2)  # let the node accept them
        status, _, body = parse(raw(node, get(node, "/v1/status", fresh_token(node))))
        assert (status, body["error"]["code"]) == (429, "too_many_connections")
        idle[0].sendall(get(node, "/v1/status", fresh_token(node)))  # the ones let in still work
        assert idle[0].recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in idle:
            s.close()

    def served() -> bool:
        return request("GET", node.nodes[0].url + "/v1/status", token=fresh_token(node)).status == 200

    deadline = time.monotonic() + 10
    while not served():  # the count drops as the node sees the closes
        assert time.monotonic() < deadline, "connections were not released"
        time.sleep(0.05)


def test_limits_settings_are_validated() -> None:
    assert Limits.from_dict({"token_rate": 3}).token_rate == 3.0
    for bad in ({"nope": 1}, {"max_url_length": 0}, {"max_headers": 1.5}, {"token_burst": True}):
        with pytest.raises(ValueError):
            Limits.from_dict(bad)


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=2, max_keys=3, clock=lambda: now[0])
    assert b.take("a") == 0.0 and b.take("a") == 0.0
    assert b.take("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert b.take("a") == 0.0
    for key in "bcdefg":
        b.take(key)
    assert len(b._buckets) <= 3


# -- fuzz: bytes on a raw socket --------------------------------------------------------------------
_methods = st.sampled_from([b"GET", b"PUT", b"POST", b"DELETE", b"PATCH", b"G\x00T", b"", b"\x16\x03\x01"])
_targets = st.one_of(st.sampled_from([b"/v1/upstreams/u1", b"/v1/config", b"/v1/txn", b"*", b"http://x/v1/status"]),
                     st.binary(max_size=300))
_versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b""])
_header = st.tuples(st.binary(min_size=0, max_size=40), st.binary(max_size=300)).map(lambda kv: kv[0] + b": " + kv[1])
_request = st.builds(
    lambda m, t, v, hs, body, sep, te: m + b" " + t + b" " + v + sep + sep.join(hs) + sep
    + (b"Transfer-Encoding: chunked" + sep if te else b"") + sep + body,
    _methods, _targets, _versions, st.lists(_header, max_size=8), st.binary(max_size=400),
    st.sampled_from([b"\r\n", b"\n", b"\r"]), st.booleans(),
)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
@given(data=st.one_of(_request, st.binary(max_size=2000)))
def test_fuzz_request_parsing(node: Cluster, data: bytes) -> None:
    before = fingerprint(node)
    answer = raw(node, data, timeout=0.5)
    if answer:
        status, headers, body = parse(answer)
        assert 400 <= status < 500 or status in (200, 201, 404), (status, answer[:300])
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/json"), answer[:300]
            assert set(body["error"]) >= {"code", "message", "path"}
    assert node.nodes[0].alive
    assert fingerprint(node) == before  # none of these carries a valid token: nothing may change
