"""The pull endpoints (cluster/changes_api.py) against a real aiohttp server and the fake store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cluster.changes_api import ChangesAPI
from gateway.codec import decode
from gateway.delta import apply_delta
from gateway.protocol import DeltaFrame, SnapshotChunk, assemble_snapshot, decode_frame
from tests.cluster.test_push_fakes import (
    PROXY_TOKEN,
    VIEWER_TOKEN,
    FakeCluster,
    FakeStore,
    auth_middleware,
    put,
    route,
    seed,
)


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    store = FakeStore(window=5)
    cluster = FakeCluster(store)
    api = ChangesAPI(store, sessions=lambda: [{"id": "streamer", "connected": True, "revision": 0}])
    app = web.Application(middlewares=[auth_middleware])
    api.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {PROXY_TOKEN}"}) as http:
        yield {"store": store, "cluster": cluster, "api": api, "url": url, "http": http}
    await runner.cleanup()


async def changes(env: dict[str, Any], headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any, Any]:
    async with env["http"].get(env["url"] + "/v1/changes", params={k: str(v) for k, v in params.items()},
                               headers=headers or {}) as r:  # fmt: skip
        body = await r.read()
        return r.status, r.headers, decode(body) if r.status == 200 else body


def frames(answer: dict[str, Any]) -> list[Any]:
    return [decode_frame(f) for f in answer["frames"]]


async def test_since_zero_gets_a_snapshot_and_the_status(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    status, headers, answer = await changes(env, since=0)
    assert status == 200 and answer["status"]["revision"] == head and answer["status"]["has_quorum"]
    assert answer["status"]["hash"] == env["store"].state.hash()
    chunks = frames(answer)
    assert all(isinstance(c, SnapshotChunk) for c in chunks)
    assert assemble_snapshot(chunks) == env["store"].state
    assert headers["ETag"].startswith(f'"{head}-')


async def test_inside_the_window_one_composed_delta(env: dict[str, Any]) -> None:
    seed(env["cluster"], routes=1)
    base = env["store"].state
    for i in range(3):
        head = env["cluster"].write(put("routes", f"x{i}", route(f"/x{i}")))
    _, _, answer = await changes(env, since=base.revision)
    (f,) = frames(answer)
    assert isinstance(f, DeltaFrame) and (f.base, f.revision) == (base.revision, head)
    assert apply_delta(base, f.delta).hash() == f.hash == env["store"].state.hash()


async def test_outside_the_window_a_diverged_hash_or_full_get_a_snapshot(env: dict[str, Any]) -> None:
    head = seed(env["cluster"], routes=8)  # more revisions than the window of 5
    for params in ({"since": 1}, {"since": head, "hash": "0" * 64}, {"since": head - 1, "full": 1}):
        _, _, answer = await changes(env, **params)
        assert [type(f) for f in frames(answer)] == [SnapshotChunk], params
    _, _, answer = await changes(env, since=head, hash=env["store"].state.hash())
    assert answer["frames"] == []


async def test_a_proxy_ahead_gets_status_only(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    _, _, answer = await changes(env, since=head + 5)
    assert answer["frames"] == [] and answer["status"]["revision"] == head


async def test_long_poll_wakes_on_a_change_and_304_on_a_matching_etag(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    _, headers, _ = await changes(env, since=head)
    etag = headers["ETag"]
    t0 = time.monotonic()
    status, _, _ = await changes(env, {"If-None-Match": etag}, since=head, wait=0.3)
    assert status == 304 and time.monotonic() - t0 >= 0.25

    async def later() -> None:
        await asyncio.sleep(0.2)
        env["cluster"].write(put("routes", "late", route("/late")))

    task = asyncio.create_task(later())
    status, _, answer = await changes(env, {"If-None-Match": etag}, since=head, wait=20)
    await task
    assert status == 200 and [f.revision for f in frames(answer)] == [head + 1]


async def test_no_quorum_is_a_503_naming_it(env: dict[str, Any]) -> None:
    seed(env["cluster"])
    env["store"].set_status(has_quorum=False, leader_id=None)
    await asyncio.sleep(0)
    status, _, body = await changes(env, since=0)
    data = json.loads(body)
    assert status == 503 and data["error"]["code"] == "no_quorum" and data["status"]["has_quorum"] is False


async def test_bad_parameters_and_roles(env: dict[str, Any]) -> None:
    status, _, body = await changes(env, since="x")
    assert status == 400 and b'"since"' in body
    async with env["http"].get(env["url"] + "/v1/changes", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}) as r:
        assert r.status == 403


async def test_fleet_lists_pull_proxies_hybrid_checks_and_relayed_proxies(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    await changes(env, {"X-Gwadm-Proxy": "puller", "X-Gwadm-Mode": "synced"}, since=head)
    async with env["http"].get(env["url"] + "/v1/changes/head",
                               headers={"X-Gwadm-Proxy": "streamer", "X-Gwadm-Repairs": "2"}) as r:  # fmt: skip
        head_answer = await r.json()
    assert head_answer["revision"] == head and head_answer["hash"] == env["store"].state.hash()
    report = {"relay": "streamer", "items": [{"id": "far", "connected": True, "revision": head, "mode": "synced"}]}
    async with env["http"].post(env["url"] + "/v1/changes/fleet", json=report) as r:
        assert r.status == 200
    async with env["http"].post(env["url"] + "/v1/changes/fleet", json={"relay": "x", "items": [{}]}) as r:
        assert r.status == 422 and (await r.json())["error"]["path"] == "items[0].id"
    fleet = {e["id"]: e for e in env["api"].fleet()}
    assert fleet["puller"]["sync"] == "pull" and fleet["puller"]["revision"] == head and fleet["puller"]["via"] is None
    assert fleet["streamer"]["sync"] == "hybrid" and fleet["streamer"]["antientropy_repairs"] == 2
    assert fleet["streamer"]["role"] == "relay"
    assert fleet["far"]["via"] == "streamer" and fleet["far"]["lag"] == 0


async def test_pollers_at_one_revision_share_one_answer_until_the_head_moves(env: dict[str, Any]) -> None:
    head = seed(env["cluster"])
    answers = [await changes(env, since=head - 1) for _ in range(3)]
    assert [f.revision for f in frames(answers[0][2])] == [head]
    assert answers[0][2] == answers[1][2] == answers[2][2]
    assert env["api"].frames_sent["delta"] == 3 and len(env["api"]._answers) == 1
    new = env["cluster"].write(put("routes", "n", route("/n")))
    await asyncio.sleep(0.05)
    (f,) = frames((await changes(env, since=head - 1))[2])
    assert (f.base, f.revision) == (head - 1, new) and f.hash == env["store"].state.hash()
    assert all(k[1] == new for k in env["api"]._answers)
