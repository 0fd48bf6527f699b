"""Proxies follow the cluster's membership: nodes their ``--cp`` never named are learned from status
frames, kept across restarts, and forgotten once removed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache import load_learned_endpoints
from proxy.endpoints import EndpointRing
from proxy.sync import stream_url
from tests.cluster.test_push_fakes import put, route, seed, until
from tests.proxy.test_sync import Env, at


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.close()


A, B, C, D = (f"ws://127.0.0.1:{p}/v1/stream" for p in (8001, 8002, 8003, 8004))


def test_the_ring_learns_members_keeps_seeds_and_forgets_removed_members() -> None:
    ring = EndpointRing([A, B], "p1", first=1)
    assert ring.learn([A, B]) is False and ring.learned == []
    assert ring.learn([B, C, C, D]) is True  # A is a seed: kept although the cluster does not list it
    assert [e.url for e in ring.endpoints] == [A, B, C, D] and ring.learned == [C, D]
    assert ring.pick().url == B  # the round-robin position stayed on the same node
    endpoints = ring.endpoints
    assert ring.learn([A, B, D]) is True  # C removed from the cluster: forgotten
    assert ring.endpoints is endpoints and [e.url for e in endpoints] == [A, B, D]
    assert ring.learn([]) is True and [e.url for e in ring.endpoints] == [A, B]  # seeds never go


async def test_a_proxy_seeded_with_one_node_fails_over_to_a_member_it_learned(env: Env) -> None:
    head = seed(env.cluster)
    h1, h2 = await env.hub(env.stores[0]), await env.hub(env.stores[1])
    for store in env.stores:
        store.members = [h1.url, h2.url]
    members_file = env.tmp / "cp-members.json"
    c = env.client([h1.url], members_file=members_file)  # --cp names n1 only
    c.start()
    await until(lambda: at(c, head)() and len(c.endpoints) == 2, what="synced, n2 learned")
    assert json.loads(members_file.read_text()) == [stream_url(h2.url)]

    await h1.stop()
    rev = env.cluster.write(put("routes", "after", route("/after")), to=[env.stores[1]])
    await until(lambda: at(c, rev)() and c.connected_url == stream_url(h2.url), what="failover to n2")
    await c.stop()

    # a restart with the same --cp still knows n2
    again = env.client([h1.url], cache_name="lkg2", members_file=members_file)
    again.start()
    await until(lambda: at(again, rev)(), what="restarted proxy synced from n2")


async def test_a_removed_member_is_forgotten_and_the_file_follows(env: Env) -> None:
    head = seed(env.cluster)
    h1, h2 = await env.hub(env.stores[0], status_interval=0.1), await env.hub(env.stores[1])
    env.stores[0].members = [h1.url, h2.url]
    members_file = env.tmp / "cp-members.json"
    c = env.client([h1.url], members_file=members_file)
    assert c.dp.status()["cp_endpoints"] == [stream_url(h1.url)]  # the seeds, before any stream
    c.start()
    await until(lambda: at(c, head)() and len(c.endpoints) == 2, what="n2 learned")
    assert c.dp.status()["cp_endpoints"] == [stream_url(h1.url), stream_url(h2.url)]
    env.stores[0].members = [h1.url]
    await until(lambda: [e.url for e in c.endpoints] == [stream_url(h1.url)], what="n2 forgotten")
    assert load_learned_endpoints(members_file) == []
    assert c.dp.status()["cp_endpoints"] == [stream_url(h1.url)]  # what /status shows operators


def test_an_unreadable_members_file_is_only_a_lost_hint(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    for text in ("{not json", '{"a": 1}', "[1, 2]"):
        bad.write_text(text)
        assert load_learned_endpoints(bad) == []
    assert load_learned_endpoints(tmp_path / "missing.json") == []
