"""Held long-polls: one change wakes every waiter at once; timeouts share slotted timers; a poll
that goes away (cancelled) takes nothing with it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster.changes_api import TIMER_SLOT, ChangesAPI
from tests.cluster.test_changes_api import changes, env  # noqa: F401  (the fixture)
from tests.cluster.test_push_fakes import put, route, seed


async def test_one_change_wakes_every_held_poll(env: dict[str, Any]) -> None:  # noqa: F811
    head = seed(env["cluster"])
    api: ChangesAPI = env["api"]
    _, headers, _ = await changes(env, since=head)
    etag = headers["ETag"]
    polls = [asyncio.create_task(changes(env, {"If-None-Match": etag}, since=head, wait=20)) for _ in range(30)]
    deadline = time.monotonic() + 5
    while len(api._waiters) < 30:
        assert time.monotonic() < deadline, f"only {len(api._waiters)} polls held"
        await asyncio.sleep(0.01)
    assert len(api._slots) <= 2  # 30 polls started together: one or two shared timers, not 30
    t0 = time.monotonic()
    new = env["cluster"].write(put("routes", "x", route("/x")))
    answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert time.monotonic() - t0 < 5
    assert all(status == 200 and answer["status"]["revision"] == new for status, _, answer in answers)
    assert len({id(a) for a in api._answers.values()}) == 1  # built once for all 30
    assert api._waiters == []


async def test_a_held_poll_times_out_with_304_no_earlier_than_its_wait(env: dict[str, Any]) -> None:  # noqa: F811
    head = seed(env["cluster"])
    _, headers, _ = await changes(env, since=head)
    t0 = time.monotonic()
    status, _, _ = await changes(env, {"If-None-Match": headers["ETag"]}, since=head, wait=0.25)
    took = time.monotonic() - t0
    assert status == 304 and took >= 0.25, took
    assert took < 0.25 + TIMER_SLOT + 2.0  # generous: a hang, not a timing, is what this catches


async def test_a_cancelled_wait_leaves_the_others_waiting(env: dict[str, Any]) -> None:  # noqa: F811
    api: ChangesAPI = env["api"]
    seed(env["cluster"])
    api.start()
    waits = [asyncio.create_task(api._wait_change(20, api.store.state.revision)) for _ in range(3)]
    await asyncio.sleep(0.01)
    waits[0].cancel()
    await asyncio.sleep(0.01)
    assert [w.done() for w in waits] == [True, False, False] and waits[0].cancelled()
    env["cluster"].write(put("routes", "y", route("/y")))
    await asyncio.wait_for(asyncio.gather(waits[1], waits[2]), 5)


async def test_a_pollers_fleet_entry_follows_its_headers_poll_after_poll(env: dict[str, Any]) -> None:  # noqa: F811
    head = seed(env["cluster"])
    api: ChangesAPI = env["api"]

    def entry() -> dict[str, Any]:
        return next(e for e in api.fleet() if e["id"] == "p9")

    base = {"X-Gwadm-Proxy": "p9", "X-Gwadm-Mode": "synced", "X-Gwadm-Software": "gwadm/1"}
    await changes(env, base, since=head - 1)
    assert (entry()["mode"], entry()["last_error"], entry()["revision"]) == ("synced", None, head - 1)
    await changes(env, base | {"X-Gwadm-Mode": "cached", "X-Gwadm-Last-Error": "upstream down"}, since=head)
    assert (entry()["mode"], entry()["last_error"], entry()["revision"]) == ("cached", "upstream down", head)
    await changes(env, base | {"X-Gwadm-Address": "10.0.0.9:8000"}, since=head)
    e = entry()
    assert (e["mode"], e["last_error"], e["address"], e["software"]) == ("synced", None, "10.0.0.9:8000", "gwadm/1")
    assert e["connected"] and e["sync"] == "pull" and e["via"] is None and "lag" in e


async def test_a_poll_whose_revision_moved_before_it_was_held_returns_at_once(env: dict[str, Any]) -> None:  # noqa: F811
    """While no poll is held a write wakes nobody (ConfigStore.subscribe), so a poll that read its
    revision just before a write and registers just after must see it, not sleep out its wait."""
    api: ChangesAPI = env["api"]
    head = seed(env["cluster"])
    api.start()
    env["cluster"].write(put("routes", "z", route("/z")))  # applied, reported to nobody
    await asyncio.sleep(0)
    assert env["cluster"].stores[0].changes_declined >= 1
    t0 = time.monotonic()
    await asyncio.wait_for(api._wait_change(20, head), 5)
    assert time.monotonic() - t0 < 2.0  # generous: the bug waits the full 20 s
