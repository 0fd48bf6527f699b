"""Plugins in isolation: configs, phases, chain order, consumer merging (no sockets)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, MultiDict

from proxy.plugins import PLUGINS
from proxy.plugins.access_log import AccessLog
from proxy.plugins.base import Consumer, ConsumerIndex, Plugin, PluginChain, RequestContext, Services
from proxy.plugins.cors import Cors
from proxy.plugins.ip_restriction import IpRestriction
from proxy.plugins.rate_limit import RateLimit
from proxy.plugins.request_id import RequestId
from tests.proxy.conftest import FakeClock, plugin_config


def ctx_for(
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    *,
    client_ip: str = "10.0.0.1",
    services: Services | None = None,
    consumers: ConsumerIndex | None = None,
) -> RequestContext:
    request = make_mocked_request(method, path, headers=CIMultiDict(headers or {}))
    return RequestContext(
        request=request,
        services=services or Services(),
        consumers=consumers or ConsumerIndex(),
        method=method,
        host=request.headers.get("Host", ""),
        path=request.path,
        client_ip=client_ip,
        upstream_path=request.rel_url.raw_path,
        upstream_query=MultiDict(request.query),
        upstream_headers=CIMultiDict(request.headers),
    )


def make(name: str, scope: str = "global", **config: Any) -> Plugin:
    return PLUGINS[name](plugin_config(name, **config), scope=scope)


def test_registry_and_fixed_order() -> None:
    chain = PluginChain([make(n, limit=1) if n == "rate-limit" else make(n, allow=["10.0.0.0/8"])
                         if n == "ip-restriction" else make(n) for n in PLUGINS])
    assert chain.names() == ["request-id", "ip-restriction", "cors", "jwt-auth", "key-auth", "rate-limit",
                             "request-transformer", "access-log"]


@pytest.mark.parametrize(
    "name, config, message",
    [
        ("rate-limit", {"limit": 0}, "limit"),
        ("rate-limit", {"limit": 1, "key": "header", "header_name": None}, "header_name"),
        ("ip-restriction", {"allow": ["not-a-cidr"]}, "CIDR"),
        ("ip-restriction", {}, "non-empty"),
        ("jwt-auth", {"algorithms": ["none"]}, "algorithms"),
        ("jwt-auth", {"jwks_url": "ftp://x"}, "jwks_url"),
        ("access-log", {"fields": ["nope"]}, "fields"),
        ("access-log", {"sample_rate": 2}, "sample_rate"),
        ("request-transformer", {"rewrite_path": "x"}, "rewrite_path"),
        ("cors", {"max_age": -1}, "max_age"),
    ],
)
def test_bad_configs(name: str, config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(name, **config)


# -- rate-limit ------------------------------------------------------------------------------------------


def test_token_bucket_refills_smoothly() -> None:
    clock = FakeClock()
    rl = RateLimit(plugin_config("rate-limit", limit=2, window=1.0))
    assert rl.take("k", clock())[0]
    assert rl.take("k", clock())[0]
    assert not rl.take("k", clock())[0]
    clock.advance(0.25)
    assert not rl.take("k", clock())[0]  # half a token back
    clock.advance(0.25)
    allowed, left = rl.take("k", clock())
    assert allowed and left == pytest.approx(0.0)
    clock.advance(10)
    assert rl.take("k", clock()) == (True, 1.0)  # capped at capacity


def test_burst_sets_capacity() -> None:
    rl = RateLimit(plugin_config("rate-limit", limit=1, window=1.0, burst=3))
    assert [rl.take("k", 0.0)[0] for _ in range(4)] == [True, True, True, False]


async def test_rate_limit_headers_and_retry_after() -> None:
    clock = FakeClock()
    services = Services(clock=clock)
    rl = RateLimit(plugin_config("rate-limit", limit=10, window=60.0))  # one token per 6 s
    for _ in range(10):
        ctx = ctx_for(services=services)
        assert await rl.access(ctx) is None
    resp = web.Response()
    rl.response(ctx, resp)
    assert resp.headers["RateLimit-Remaining"] == "0" and resp.headers["RateLimit-Reset"] == "60"
    ctx = ctx_for(services=services)
    refused = await rl.access(ctx)
    assert refused is not None and refused.status == 429 and refused.headers["Retry-After"] == "6"
    clock.advance(6)
    assert await rl.access(ctx_for(services=services)) is None


@pytest.mark.parametrize(
    "key, extra, expected",
    [
        ("ip", {}, "ip:10.0.0.1"),
        ("consumer", {}, "c:alice"),
        ("route", {}, "ip:10.0.0.1"),  # no route in this context: falls back to the IP
        ("header", {"header_name": "x-tenant"}, "h:t1"),
    ],
)
def test_bucket_keys(key: str, extra: dict, expected: str) -> None:
    rl = RateLimit(plugin_config("rate-limit", limit=1, key=key, **extra))
    ctx = ctx_for(headers={"X-Tenant": "t1"})
    ctx.consumer = Consumer("alice", None)
    assert rl.bucket_key(ctx) == expected


def test_bucket_eviction_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.plugins.rate_limit as mod

    monkeypatch.setattr(mod, "MAX_BUCKETS", 50)
    rl = RateLimit(plugin_config("rate-limit", limit=1, window=1.0))
    for i in range(200):
        rl.take(f"k{i}", 0.0)
    assert len(rl.buckets) <= 50
    rl.take("late", 100.0)  # all others are full again by now and dropped
    assert list(rl.buckets) == ["late"]


def test_inherit_keeps_buckets() -> None:
    old = RateLimit(plugin_config("rate-limit", limit=1))
    old.take("k", 0.0)
    new = RateLimit(plugin_config("rate-limit", limit=1))
    new.inherit(old)
    assert not new.take("k", 0.0)[0]


# -- ip-restriction ---------------------------------------------------------------------------------------


def test_ip_restriction_rules() -> None:
    p = IpRestriction(plugin_config("ip-restriction", allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.1.0.0/16"]))
    assert p.permits("10.2.3.4")
    assert not p.permits("10.1.2.3")  # deny wins
    assert not p.permits("192.168.1.1")
    assert p.permits("2001:db8::1")
    assert p.permits("::ffff:10.2.3.4")  # IPv4-mapped
    assert not p.permits("garbage")
    deny_only = IpRestriction(plugin_config("ip-restriction", deny=["1.2.3.4/32"]))
    assert deny_only.permits("5.6.7.8") and not deny_only.permits("1.2.3.4")


# -- cors -------------------------------------------------------------------------------------------------


async def test_cors_preflight_echoes_requested_headers_and_vary() -> None:
    cors = Cors(plugin_config("cors", origins=["https://a.test"]))
    ctx = ctx_for("OPTIONS", headers={"Origin": "https://a.test", "Access-Control-Request-Method": "PUT",
                                      "Access-Control-Request-Headers": "x-one"})
    resp = await cors.access(ctx)
    assert resp is not None and resp.status == 204
    assert resp.headers["Access-Control-Allow-Headers"] == "x-one"
    assert resp.headers["Vary"] == "Origin, Access-Control-Request-Headers"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_cors_plain_options_is_not_a_preflight() -> None:
    cors = Cors(plugin_config("cors"))
    assert await cors.access(ctx_for("OPTIONS", headers={"Origin": "https://a.test"})) is None


def test_cors_star_with_credentials_echoes_origin() -> None:
    cors = Cors(plugin_config("cors", credentials=True))
    ctx = ctx_for(headers={"Origin": "https://x.test"})
    resp = web.Response(headers={"Vary": "Accept-Encoding"})
    cors.response(ctx, resp)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://x.test"
    assert resp.headers["Vary"] == "Accept-Encoding, Origin"


# -- request-id and access-log --------------------------------------------------------------------------------


async def test_request_id_rejects_unreasonable_incoming_ids() -> None:
    rid = RequestId(plugin_config("request-id", echo_downstream=False))
    ctx = ctx_for(headers={"X-Request-Id": "x" * 500})
    await rid.access(ctx)
    assert ctx.request_id and len(ctx.request_id) == 32
    assert ctx.upstream_headers["x-request-id"] == ctx.request_id
    resp = web.Response()
    rid.response(ctx, resp)
    assert "x-request-id" not in resp.headers


def test_access_log_fields_and_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(50.0)
    services = Services(clock=clock, wall=lambda: 1000.0)
    al = AccessLog(plugin_config("access-log", fields=["status", "latency_ms", "time", "consumer"]))
    ctx = ctx_for(services=services)
    ctx.start, ctx.status = 49.5, 204
    al.log(ctx)
    line = json.loads(capsys.readouterr().out)
    # time: when the request started (wall clock now minus the 0.5 s it took)
    assert line == {"status": 204, "latency_ms": 500.0, "time": "1970-01-01T00:16:39.500+00:00", "consumer": None}


def test_access_log_sampling_is_seeded() -> None:
    sink = io.StringIO()
    services = Services(random=random.Random(7).random, log_sinks={"/mem": sink})
    al = AccessLog(plugin_config("access-log", path="/mem", sample_rate=0.25))
    for _ in range(400):
        al.log(ctx_for(services=services))
    expected_rng = random.Random(7)
    expected = sum(1 for _ in range(400) if expected_rng.random() < 0.25)
    assert len(sink.getvalue().splitlines()) == expected
    assert 60 < expected < 140
    none = AccessLog(plugin_config("access-log", path="/mem", sample_rate=0.0))
    before = sink.getvalue()
    none.log(ctx_for(services=services))
    assert sink.getvalue() == before


# -- chains -------------------------------------------------------------------------------------------------


class Recorder(Plugin):
    """A test plugin that records phases and may refuse."""

    def __init__(self, name: str, priority: int, log_: list[str], *, refuse: bool = False, auth: Consumer | None = None,
                 is_auth: bool = False) -> None:
        self.name, self.priority, self.is_auth = name, priority, is_auth  # type: ignore[misc]
        self.config, self.scope, self.trace, self.refuse, self.auth = {}, "t", log_, refuse, auth

    async def access(self, ctx: RequestContext) -> web.StreamResponse | None:
        self.trace.append(f"access:{self.name}")
        if self.refuse:
            return web.Response(status=401, text=self.name)
        if self.auth is not None:
            ctx.consumer = self.auth
        return None

    def response(self, ctx: RequestContext, resp: web.StreamResponse) -> None:
        self.trace.append(f"response:{self.name}")


async def test_auth_group_first_success_wins_and_refusal_is_the_first() -> None:
    trace: list[str] = []
    chain = PluginChain([
        Recorder("a-auth", 1000, trace, refuse=True, is_auth=True),
        Recorder("b-auth", 1000, trace, refuse=True, is_auth=True),
        Recorder("after", 900, trace),
    ])
    resp = await chain.access(ctx_for())
    assert resp is not None and resp.text == "a-auth"
    assert trace == ["access:a-auth", "access:b-auth"]
    trace.clear()
    chain = PluginChain([
        Recorder("a-auth", 1000, trace, is_auth=True),
        Recorder("b-auth", 1000, trace, refuse=True, is_auth=True),
        Recorder("after", 900, trace),
    ])
    assert await chain.access(ctx_for()) is None
    assert trace == ["access:a-auth", "access:after"]


async def test_consumer_plugins_replace_same_name_and_join_after_auth() -> None:
    trace: list[str] = []
    consumer_rl = Recorder("rate-limit", 900, trace)
    consumer_ip = Recorder("ip-restriction", 1900, trace)
    alice = Consumer("alice", None, (consumer_rl, consumer_ip))
    route_rl = Recorder("rate-limit", 900, trace, refuse=True)
    chain = PluginChain([Recorder("key-auth", 1000, trace, auth=alice, is_auth=True), route_rl,
                         Recorder("request-id", 2000, trace)])
    ctx = ctx_for()
    assert await chain.access(ctx) is None  # the route's refusing rate-limit was replaced
    assert trace == ["access:request-id", "access:key-auth", "access:ip-restriction", "access:rate-limit"]
    assert consumer_rl in ctx.plugins and route_rl not in ctx.plugins
    trace.clear()
    chain.response(ctx, web.Response())
    assert "response:rate-limit" in trace and trace.count("response:rate-limit") == 1
