"""Membership requests forwarded between nodes whose leader views disagree for a moment.

Three real aiohttp servers run ``cluster.members``' handlers on loopback over fake Raft views: the
views are what is under test (who each node believes leads), not Raft itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cluster import members as members_module
from cluster.admin_api import error_middleware
from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.members import remove_member
from cluster.membership_records import Member


class FakeRaft:
    """A Raft view: ``leader_of()`` names the member this node believes leads (may change over time)."""

    def __init__(self, me: str, roster: list[Member], leader_of: Callable[[], str]) -> None:
        self.me, self.roster, self.leader_of = me, roster, leader_of
        self.changes: list[tuple[str, str]] = []

    def status(self) -> dict[str, Any]:
        leader = self.leader_of()
        addr = next(m.raft_addr for m in self.roster if m.id == leader)
        return {"role": "leader" if leader == self.me else "follower", "leader": addr, "has_quorum": True}

    def members(self) -> list[Member]:
        return list(self.roster)

    def reachable_ids(self) -> set[str]:
        return {m.id for m in self.roster} - self.unreachable()

    def unreachable(self) -> set[str]:
        """Set by a test: members this node's view counts as unreachable right now."""
        return set()

    async def transfer_leadership(self, timeout: float) -> None:
        """Set by a test: what handing leadership over does to the views."""
        raise AssertionError("this test does not expect a leadership transfer")

    async def change_membership(self, action: str, member: Member, timeout: float) -> None:
        self.changes.append((action, member.id))
        self.roster = [m for m in self.roster if m.id != member.id]


class FakeStore:
    """Set on the app before it starts; its Raft view is filled in once every server's URL is known."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.raft: FakeRaft  # private to this fake: handlers only use the methods below

    def raft_status(self) -> dict[str, Any]:
        return {"leader_id": self.raft.leader_of()}

    # The ConfigStore surface the handlers use (they never reach into ``store.raft``).
    def members(self) -> list[Member]:
        return self.raft.members()

    def reachable_ids(self) -> set[str]:
        return self.raft.reachable_ids()

    def is_leader(self) -> bool:
        return bool(self.raft.status()["role"] == "leader")

    def leader_member(self) -> Member | None:
        addr = self.raft.status()["leader"]
        return next((m for m in self.raft.members() if m.raft_addr == addr), None)

    async def change_membership(self, action: str, member: Member, timeout: float) -> None:
        await self.raft.change_membership(action, member, timeout)

    async def transfer_leadership(self, timeout: float) -> None:
        await self.raft.transfer_leadership(timeout)


@pytest.fixture
async def three() -> AsyncIterator[tuple[dict[str, FakeRaft], dict[str, str]]]:
    """Three servers n1..n3, each naming n1 as leader until the test sets their views."""
    servers: dict[str, TestServer] = {}
    for node_id in ("n1", "n2", "n3"):
        app = web.Application(middlewares=[error_middleware])  # renders errors as the admin API does
        app.router.add_delete("/v1/cluster/members/{id}", remove_member)
        app[STORE_KEY] = FakeStore(node_id)  # type: ignore[assignment]
        app[SETTINGS_KEY] = {}
        servers[node_id] = TestServer(app, host="127.0.0.1")
        await servers[node_id].start_server()
    urls = {i: str(s.make_url("")).rstrip("/") for i, s in servers.items()}
    roster = [Member(i, f"127.0.0.1:{7100 + k}", url) for k, (i, url) in enumerate(urls.items())]
    rafts = {}
    for node_id, server in servers.items():
        rafts[node_id] = server.app[STORE_KEY].raft = FakeRaft(node_id, list(roster), lambda: "n1")
    try:
        yield rafts, urls
    finally:
        for server in servers.values():
            await server.close()


async def delete(url: str, member: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.delete(f"{url}/v1/cluster/members/{member}") as resp:
        return resp.status, await resp.json()


def set_view(rafts: dict[str, FakeRaft], node_id: str, view: Callable[[], str]) -> None:
    rafts[node_id].leader_of = view


async def test_a_request_bounced_by_a_stale_view_waits_for_the_new_leader(three: Any) -> None:
    """n1 believes n2 leads; n2 still believes the leader is n1 (who just forwarded to it) until,
    0.3 s later, it learns that n3 won the election. The request must reach n3, not bounce."""
    rafts, urls = three
    t0 = time.monotonic()
    set_view(rafts, "n1", lambda: "n2")
    set_view(rafts, "n2", lambda: "n1" if time.monotonic() - t0 < 0.3 else "n3")
    set_view(rafts, "n3", lambda: "n3")
    status, body = await delete(urls["n1"], "n2")
    assert status == 200, body
    assert body["removed"]["id"] == "n2" and body["node"] == "n3"
    assert rafts["n3"].changes == [("remove", "n2")]
    assert rafts["n1"].changes == rafts["n2"].changes == []


async def test_a_leader_removing_itself_may_send_the_request_back_to_its_successor(three: Any) -> None:
    """n1 forwards "remove n3" to the leader n3, which hands leadership over, and n1 wins: the
    request goes back to n1, the node it came through, because n1 now leads (the CI flake of
    2026-11-26: this was answered 503 "leadership moved while the request went through n1")."""
    rafts, urls = three
    leader = {"id": "n3"}
    for raft in rafts.values():
        raft.leader_of = lambda: leader["id"]

    async def hand_over(timeout: float) -> None:
        leader["id"] = "n1"

    rafts["n3"].transfer_leadership = hand_over  # type: ignore[method-assign]
    status, body = await delete(urls["n1"], "n3")
    assert status == 200, body
    assert body["removed"]["id"] == "n3" and body["node"] == "n1"
    assert rafts["n1"].changes == [("remove", "n3")] and rafts["n3"].changes == []


async def test_views_that_never_settle_give_a_retryable_503_and_change_nothing(
    three: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(members_module, "LEADER_SETTLE", 0.3)
    rafts, urls = three
    set_view(rafts, "n1", lambda: "n2")
    set_view(rafts, "n2", lambda: "n1")
    set_view(rafts, "n3", lambda: "n3")
    started = time.monotonic()
    status, body = await delete(urls["n1"], "n3")
    assert status == 503 and body["error"]["code"] == "unavailable", body
    assert "leadership moved while the request went through n1" in body["error"]["message"]
    assert time.monotonic() - started < 5  # bounded by LEADER_SETTLE, not by the request timeout
    assert all(r.changes == [] for r in rafts.values())


async def test_a_momentary_unreachable_member_does_not_refuse_a_safe_change(three: Any) -> None:
    """Right after a start the leader may not have heard from a member for a moment (seen in a test loop):
    the "unsafe" verdict must hold for a grace period before it is the answer."""
    rafts, urls = three
    t0 = time.monotonic()
    for raft in rafts.values():
        raft.leader_of = lambda: "n1"
    rafts["n1"].unreachable = lambda: {"n3"} if time.monotonic() - t0 < 0.4 else set()  # type: ignore[method-assign]
    status, body = await delete(urls["n1"], "n2")  # n1 + n3 remain: safe once n3 is seen again
    assert status == 200, body
    assert rafts["n1"].changes == [("remove", "n2")]


async def test_a_lasting_unsafe_verdict_is_the_answer(three: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(members_module, "UNSAFE_GRACE", 0.3)
    rafts, urls = three
    for raft in rafts.values():
        raft.leader_of = lambda: "n1"
    rafts["n1"].unreachable = lambda: {"n3"}  # type: ignore[method-assign]
    status, body = await delete(urls["n1"], "n2")
    assert status == 409 and body["error"]["code"] == "unsafe_change", body
    assert rafts["n1"].changes == []
