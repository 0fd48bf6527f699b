"""Balancer: WRR exactness, least-conn, consistent hashing, passive + active health."""

from __future__ import annotations

from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from proxy.balancer import Pool
from tests.proxy.conftest import FakeClock, ServeFn, upstream


def pool(*targets: tuple, clock: FakeClock | None = None, **over: object) -> Pool:
    return Pool("u1", upstream(*targets, **over), clock=clock or FakeClock())


def test_smooth_wrr_exact_over_a_cycle_and_interleaved() -> None:
    p = pool(("a", 1, 5), ("b", 2, 1), ("c", 3, 1))
    picks = [p.pick().host for _ in range(7)]
    assert Counter(picks) == {"a": 5, "b": 1, "c": 1}
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth sequence for 5/1/1
    many = Counter(p.pick().host for _ in range(7 * 100))
    assert many == {"a": 500, "b": 100, "c": 100}


def test_zero_weight_never_picked() -> None:
    p = pool(("a", 1, 1), ("b", 2, 0))
    assert {p.pick().host for _ in range(10)} == {"a"}


def test_exclude_for_retries() -> None:
    p = pool(("a", 1), ("b", 2))
    first = p.pick()
    second = p.pick(exclude={first})
    assert second is not None and second is not first
    assert p.pick(exclude={first, second}) is None


def test_least_conn_prefers_fewest_inflight_per_weight() -> None:
    p = pool(("a", 1, 1), ("b", 2, 1), ("c", 3, 2), lb="least_conn")
    a, b, c = p.targets
    p.acquire(a)
    p.acquire(b)
    p.acquire(c)
    assert p.pick() is c  # 1/2 < 1/1
    p.acquire(c)
    p.acquire(c)  # c: 3/2
    assert p.pick() in (a, b)
    p.release(a)
    assert p.pick() is a


def test_least_conn_ties_rotate() -> None:
    p = pool(("a", 1), ("b", 2), ("c", 3), lb="least_conn")
    assert {p.pick().host for _ in range(3)} == {"a", "b", "c"}


def hashed(**hash_on: object) -> Pool:
    targets = [(f"10.0.0.{i}", 80) for i in range(1, 6)]
    return pool(*targets, lb="consistent_hash", hash_on=hash_on)


def test_consistent_hash_is_stable_and_spreads() -> None:
    p = hashed(type="header", name="x-user")
    keys = [f"user-{i}" for i in range(2000)]
    first = {k: p.pick(k) for k in keys}
    assert all(p.pick(k) is first[k] for k in keys[:200])
    spread = Counter(t.host for t in first.values())
    assert len(spread) == 5 and min(spread.values()) > 2000 / 5 * 0.6


def test_consistent_hash_moves_few_keys_when_a_target_goes_away() -> None:
    p = hashed(type="ip", name=None)
    keys = [f"192.168.{i // 250}.{i % 250}" for i in range(2000)]
    before = {k: p.pick(k).host for k in keys}
    gone = p.targets[2]
    after = {k: p.pick(k, exclude={gone}).host for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == gone.host for k in moved)  # only the removed target's keys move
    # same ring, rebuilt from a spec without that target: the keys of the others stay put
    spec = upstream(*[(t.host, t.port) for t in p.targets if t is not gone], lb="consistent_hash",
                    hash_on={"type": "ip", "name": None})
    smaller = Pool("u1", spec, clock=FakeClock())
    assert all(smaller.pick(k).host == before[k] for k in keys if before[k] != gone.host)


def test_hash_key_sources() -> None:
    p = hashed(type="header", name="x-user")
    assert p.hash_key({"x-user": "bob"}, {}, "1.2.3.4") == "bob"
    assert p.hash_key({}, {}, "1.2.3.4") == "1.2.3.4"  # falls back to the client IP
    c = hashed(type="cookie", name="sid")
    assert c.hash_key({}, {"sid": "abc"}, "1.2.3.4") == "abc"
    ip = hashed(type="ip", name=None)
    assert ip.hash_key({"x-user": "bob"}, {}, "1.2.3.4") == "1.2.3.4"
    assert pool(("a", 1)).hash_key({}, {}, "1.2.3.4") is None


def test_passive_ejection_and_recovery_with_fake_clock(clock: FakeClock) -> None:
    p = pool(("a", 1), ("b", 2), clock=clock,
             health={"passive": {"max_failures": 2, "cooldown": 10.0}, "active": None})
    a, b = p.targets
    p.report_failure(a)
    assert p.eligible(a)
    p.report_success(a)  # success resets the consecutive count
    p.report_failure(a)
    assert p.eligible(a)
    p.report_failure(a)
    assert not p.eligible(a)
    assert {p.pick().host for _ in range(4)} == {"b"}
    assert p.health() == {"a:1": False, "b:2": True}
    clock.advance(9.9)
    assert not p.eligible(a)
    clock.advance(0.2)
    assert p.eligible(a)
    # half-open: one failure ejects again at once
    p.report_failure(a)
    assert not p.eligible(a)
    clock.advance(10.1)
    p.report_success(a)
    p.report_failure(a)
    assert p.eligible(a)  # closed again: needs max_failures


def test_all_ejected_gives_none(clock: FakeClock) -> None:
    p = pool(("a", 1), clock=clock, health={"passive": {"max_failures": 1, "cooldown": 5.0}, "active": None})
    p.report_failure(p.targets[0])
    assert p.pick() is None
    clock.advance(5)
    assert p.pick() is p.targets[0]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"lb": "random"}, "lb"),
        ({"lb": "consistent_hash", "hash_on": None}, "hash_on"),
        ({"lb": "consistent_hash", "hash_on": {"type": "header", "name": None}}, "name"),
        ({"targets": "a:1"}, "targets"),
        ({"retries": -1}, "retries"),
        ({"timeouts": {"connect": 0, "read": 1}}, "connect"),
    ],
)
def test_bad_upstream_specs(over: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pool("u1", upstream(("a", 1), **over))


async def test_active_health_checks_thresholds(serve: ServeFn) -> None:
    state = {"status": 200}

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_get("/health", health)
    port = await serve(app)
    active = {"path": "/health", "interval": 0.05, "timeout": 1.0, "healthy_threshold": 2, "unhealthy_threshold": 2}
    p = pool(("127.0.0.1", port), health={"passive": {"max_failures": 3, "cooldown": 10.0}, "active": active})
    target = p.targets[0]
    async with aiohttp.ClientSession() as session:
        state["status"] = 500
        await p.probe_all(session)
        assert target.active_healthy  # one failure is below the threshold
        await p.probe_all(session)
        assert not target.active_healthy and p.pick() is None
        state["status"] = 200
        await p.probe_all(session)
        assert not target.active_healthy
        await p.probe_all(session)
        assert target.active_healthy and p.pick() is target


async def test_active_checker_task_runs_and_stops(serve: ServeFn) -> None:
    import asyncio

    seen = asyncio.Event()

    async def health(_: web.Request) -> web.Response:
        seen.set()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/hc", health)
    port = await serve(app)
    active = {"path": "/hc", "interval": 0.01, "timeout": 1.0, "healthy_threshold": 1, "unhealthy_threshold": 1}
    p = pool(("127.0.0.1", port), health={"passive": {"max_failures": 3, "cooldown": 10.0}, "active": active})
    async with aiohttp.ClientSession() as session:
        p.start(session)
        assert p.checking
        await asyncio.wait_for(seen.wait(), 5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while p.targets[0].active_healthy and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not p.targets[0].active_healthy
        await p.stop()
        assert not p.checking


async def test_active_check_unreachable_target_counts_as_failure() -> None:
    from tests.proxy.conftest import free_dead_port

    dead = free_dead_port()
    try:
        port = dead.getsockname()[1]
        active = {"path": "/", "interval": 1.0, "timeout": 1.0, "healthy_threshold": 1, "unhealthy_threshold": 1}
        p = pool(("127.0.0.1", port), health={"passive": {"max_failures": 3, "cooldown": 10.0}, "active": active})
        async with aiohttp.ClientSession() as session:
            await p.probe_all(session)
        assert not p.targets[0].active_healthy
    finally:
        dead.close()


def test_consistent_hash_weights_and_ring_size() -> None:
    p = pool(("a", 1, 1), ("b", 2, 3), lb="consistent_hash", hash_on={"type": "ip", "name": None})
    counts = Counter(p.pick(f"k{i}").host for i in range(4000))
    assert 2.0 < counts["b"] / counts["a"] < 4.5
    big = pool(*[(f"10.0.{i // 250}.{i % 250}", 80, 1000) for i in range(256)], lb="consistent_hash",
               hash_on={"type": "ip", "name": None})
    assert len(big._ring) <= 160 * 256 + 256
