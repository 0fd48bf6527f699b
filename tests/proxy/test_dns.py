"""proxy/dns.py against a DNS server the test runs on loopback (never the host's resolver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from proxy.balancer import Pool
from proxy.dns import DnsError, DnsTargets, Resolver, expand_pool, nameservers_from_env, parse_server
from proxy.server import DataPlane
from tests.support.dns import DnsServer


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def _resolver(dns: DnsServer) -> Resolver:
    return Resolver([dns.address], timeout=0.3)


async def _until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_resolver_a_aaaa_ttl_and_errors(dns: DnsServer) -> None:
    dns.records["svc.test"] = [("10.0.0.2", 30), ("10.0.0.1", 5), ("fd00::1", 60)]
    addresses, ttl = await _resolver(dns).resolve("svc.test")
    assert addresses == ["10.0.0.1", "10.0.0.2", "fd00::1"] and ttl == 5
    with pytest.raises(DnsError, match="NXDOMAIN"):
        await _resolver(dns).resolve("nope.test")
    dns.mode = "servfail"
    with pytest.raises(DnsError, match="SERVFAIL"):
        await _resolver(dns).resolve("svc.test")
    dns.mode = "silent"
    with pytest.raises(DnsError, match="Timeout"):
        await _resolver(dns).resolve("svc.test")


def test_server_settings() -> None:
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:53") == ("::1", 53)
    assert parse_server("10.0.0.1") == ("10.0.0.1", 53)
    with pytest.raises(ValueError):
        parse_server("dns.example:53")
    assert nameservers_from_env({"GWADM_DNS_SERVERS": "127.0.0.1:1, 127.0.0.2"}) == [("127.0.0.1", 1), ("127.0.0.2", 53)]


def test_expand_pool_keeps_targets_of_unchanged_addresses() -> None:
    pool = Pool("u", {"targets": [{"host": "svc.test", "port": 80, "weight": 3}, {"host": "127.0.0.1", "port": 81}]})
    assert expand_pool(pool, {"svc.test": ["10.0.0.1", "10.0.0.2"]})
    assert [(t.host, t.port, t.weight) for t in pool.targets] == [("10.0.0.1", 80, 3), ("10.0.0.2", 80, 3),
                                                                  ("127.0.0.1", 81, 1)]
    assert pool.targets[0].host_header == b"Host: svc.test:80\r\n"  # the upstream sees the name
    kept = pool.targets[1]
    kept.failures = 2
    assert expand_pool(pool, {"svc.test": ["10.0.0.2", "10.0.0.3"]})
    assert pool.targets[0] is kept and kept.failures == 2
    assert not expand_pool(pool, {"svc.test": ["10.0.0.2", "10.0.0.3"]})
    assert expand_pool(pool, {})  # never resolved: no target for the name (503, not the system resolver)
    assert [t.host for t in pool.targets] == ["127.0.0.1"]


async def test_re_resolution_on_ttl_and_last_good_kept_on_failure(dns: DnsServer) -> None:
    dns.records["svc.test"] = [("10.0.0.1", 1)]
    targets = DnsTargets(_resolver(dns), interval=30.0, min_interval=0.2)
    pool = Pool("u", {"targets": [{"host": "svc.test", "port": 80, "weight": 2}]})
    targets.attach([pool])
    assert pool.targets == []  # not resolved yet
    targets.start()
    try:
        await _until(lambda: [t.host for t in pool.targets] == ["10.0.0.1"])
        # The record's TTL (1 s) is shorter than the interval (30 s): the change is seen soon.
        dns.records["svc.test"] = [("10.0.0.1", 1), ("10.0.0.9", 1)]
        await _until(lambda: [t.host for t in pool.targets] == ["10.0.0.1", "10.0.0.9"])
        dns.mode = "servfail"
        await _until(lambda: targets.names["svc.test"].failures > 0)
        assert [t.host for t in pool.targets] == ["10.0.0.1", "10.0.0.9"]  # last good addresses kept
        status = targets.status()["svc.test"]
        assert "SERVFAIL" in status["last_error"] and status["addresses"] == ["10.0.0.1", "10.0.0.9"]
        dns.mode = "answer"
        await _until(lambda: targets.names["svc.test"].last_error is None, timeout=8)
    finally:
        await targets.stop()


async def test_dataplane_feeds_named_targets_into_pools_and_reports_them(
    dns: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GWADM_DNS_SERVERS", dns.spec)
    dns.records["api.test"] = [("127.0.0.1", 60)]
    dp = DataPlane()
    snapshot = {"revision": 1, "resources": {
        "upstreams": {"u": {"spec": {"targets": [{"host": "api.test", "port": 9, "weight": 1}]},
                            "created_revision": 1, "mod_revision": 1}},
        "routes": {}, "consumers": {}, "plugins": {}}}
    await dp.start()
    try:
        dp.install(snapshot, revision=1, hash="h")
        pool = dp.runtime.pools["u"]  # type: ignore[union-attr]
        await _until(lambda: [t.host for t in pool.targets] == ["127.0.0.1"])
        assert dp.status()["dns"]["api.test"]["addresses"] == ["127.0.0.1"]
        dns.mode = "silent"
        dp.dns.names["api.test"].next_at = 0.0
        dp.dns._wake.set()
        await _until(lambda: dp.dns.names["api.test"].failures > 0)
        assert dp.status()["dns"]["api.test"]["last_error"]
        metrics = dp.metrics.render().decode()
        assert 'gwadm_proxy_dns_failing{name="api.test"} 1.0' in metrics
        assert 'gwadm_proxy_dns_addresses{name="api.test"} 1.0' in metrics
        # A new runtime with the same upstream gets the known addresses at once.
        dp.install({**snapshot, "revision": 2}, revision=2, hash="h2")
        assert [t.host for t in dp.runtime.pools["u"].targets] == ["127.0.0.1"]  # type: ignore[union-attr]
    finally:
        await dp.close()
