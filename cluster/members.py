"""Cluster-wide admin endpoints: views across nodes and membership changes (tokens: tokens_api.py).

A node knows its own Raft state and its own proxy sessions; ``/v1/cluster`` and ``/v1/proxies``
ask every current member (``/v1/status``, ``/v1/proxies/local``) with a short-lived viewer token
and merge, so any node answers for the whole cluster and unreachable members are reported, not
hidden. The member list is the live Raft configuration (cluster/membership.py), so added nodes
show up everywhere and removed ones disappear.

Membership changes are judged and made by the leader (a follower forwards the request to it): only
the leader knows which members answer it, and one lock there makes "one change at a time" hold
for requests arriving at any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.auth import mint_token
from cluster.membership import MembershipUnavailable
from cluster.membership_policy import Refusal, check_add, check_remove
from cluster.membership_records import Member
from cluster.raft import OutcomeUnknown
from gateway.errors import ValidationError
from gateway.model import KINDS, check_id

FORWARDED_BY = "X-Gwadm-Forwarded-By"
MEMBERSHIP_TIMEOUT = 10.0
LEADER_SETTLE = 3.0  # seconds a non-leader waits for a usable leader view
UNSAFE_GRACE = 1.5  # seconds an "unsafe change" verdict must hold before it is the answer
T = TypeVar("T")
_HTTP_ERRORS: dict[int, type[web.HTTPException]] = {
    404: web.HTTPNotFound, 409: web.HTTPConflict, 503: web.HTTPServiceUnavailable,
}


def _member_status(request: web.Request) -> dict[str, Any]:
    store = request.app[STORE_KEY]
    settings = request.app[SETTINGS_KEY]
    st = store.raft_status()
    return {
        "id": store.node_id,
        "role": st["role"],
        "leader": st["leader_id"],
        "term": st["term"],
        "commit_index": st["commit_index"],
        "applied_index": st["applied_index"],
        "revision": st["revision"],
        "hash": st["hash"],
        "has_quorum": st["has_quorum"],
        "reachable": True,
        "admin_url": settings["admin_url"],
        "raft_addr": settings["raft_addr"],
        "log_len": st["log_len"],
        "stale_append_entries_trimmed": st["stale_append_entries_trimmed"],
        "links": st.get("links", {}),  # each peer's Raft link: {"state": up|connecting|down, ...}
        "link_counters": st.get("link_counters", {}),
        "read_index_rounds": st.get("read_index_rounds", 0),  # heartbeat rounds that confirmed reads
        "lease": st.get("lease", {"enabled": False}),  # leader leases (cluster/raft_read.py)
        # log entries this node proposed and commands that went in batch entries
        # (cluster/raft_proposals.py); AppendEntries rounds sent and saved (cluster/raft_batch.py)
        "proposals": st.get("proposals", {}),
        "append_entries": st.get("append_entries", {}),
        "links_down": sorted(p for p, link in st.get("links", {}).items() if link["state"] != "up"),
        "started_at": settings.get("started_at"),
        "insecure": bool(settings.get("insecure", False)),  # plain HTTP admin API (--insecure)
        "counts": {kind: store.state.count(kind) for kind in KINDS},
        # the collector's tuning (cluster/node.py GC_THRESHOLD) and what boot froze out of it
        "gc": {
            "threshold": list(gc.get_threshold()),
            # taken once, when boot froze it: counting walks every frozen object, in the loop
            "frozen": settings.get("gc_frozen", 0),
            "collections": [generation["collections"] for generation in gc.get_stats()],
        },
    }


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(_member_status(request))


def _peers(request: web.Request) -> list[Member]:
    store = request.app[STORE_KEY]
    return [m for m in store.members() if m.id != store.node_id]


def _session(request: web.Request, timeout: float) -> aiohttp.ClientSession:
    source = request.app[SETTINGS_KEY].get("source_address")
    peer_ssl = request.app[SETTINGS_KEY].get("peer_ssl")  # the cluster CA (cluster/tls.py); None: insecure
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None, ssl=peer_ssl or True)
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), connector=connector)


async def fetch_peers(request: web.Request, path: str) -> list[tuple[Member, Any, str | None]]:
    """GET ``path`` on every other member concurrently: ``(member, json or None, error or None)`` each."""
    settings = request.app[SETTINGS_KEY]
    store = request.app[STORE_KEY]
    token = mint_token(settings["secret"], "viewer", f"node:{store.node_id}", ttl_seconds=60,
                       generation=store.token_generation)

    async def fetch(session: aiohttp.ClientSession, peer: Member) -> tuple[Member, Any, str | None]:
        if not peer.admin_url:
            return peer, None, "admin URL unknown"
        try:
            async with session.get(
                peer.admin_url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                if resp.status == 200:
                    return peer, await resp.json(), None
                return peer, None, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return peer, None, str(exc) or type(exc).__name__

    async with _session(request, settings["peer_timeout"]) as session:
        return list(await asyncio.gather(*(fetch(session, p) for p in _peers(request))))


async def get_cluster(request: web.Request) -> web.Response:
    me = _member_status(request)
    members = [me]
    for peer, data, error in await fetch_peers(request, "/v1/status"):
        if data is not None:
            members.append({**data, "reachable": True})
        else:
            members.append({**peer.to_json(), "reachable": False, "error": error})
    members.sort(key=lambda m: m["id"])
    leaders = {m["id"] for m in members if m.get("reachable") and m.get("role") == "leader" and m.get("has_quorum")}
    leader = me["leader"] if me["leader"] else (next(iter(leaders)) if len(leaders) == 1 else None)
    return web.json_response({"leader": leader, "node": me["id"], "members": members})


async def get_fleet(request: web.Request) -> web.Response:
    """Every proxy known to any node: connected sessions win over remembered disconnections."""
    local_fleet = request.app[SETTINGS_KEY]["local_fleet"]
    entries: list[dict[str, Any]] = list(local_fleet()) if local_fleet is not None else []
    unreachable = []
    for peer, data, error in await fetch_peers(request, "/v1/proxies/local"):
        if data is None:
            unreachable.append({"id": peer.id, "error": error})
        else:
            entries.extend(data.get("items", []))
    fleet: dict[str, dict[str, Any]] = {}
    for entry in entries:
        best = fleet.get(entry["id"])
        rank = (bool(entry.get("connected")), entry.get("revision", 0))
        if best is None or rank > (bool(best.get("connected")), best.get("revision", 0)):
            fleet[entry["id"]] = entry
    state = request.app[STORE_KEY].state
    items = sorted(fleet.values(), key=lambda e: (not e.get("connected"), e["id"]))
    for item in items:  # lag against this node's head, so every row compares to the same revision
        item["lag"] = max(0, state.revision - int(item.get("revision") or 0))
    return web.json_response({"items": items, "revision": state.revision, "unreachable_nodes": unreachable})


# -- membership ----------------------------------------------------------------------------------
def _refuse(status: int, code: str, message: str) -> web.HTTPException:
    """An HTTP error the admin API's error middleware renders as ``{"error": {code, message}}``
    (it derives the code from the reason phrase)."""
    return _HTTP_ERRORS[status](reason=code.replace("_", " ").title(), text=message)


def _leader_member(request: web.Request) -> Member | None:
    member: Member | None = request.app[STORE_KEY].leader_member()
    return member


async def _forward(request: web.Request, to: Member, body: bytes | None, timeout: float,
                   handed_over: bool = False) -> web.Response:
    """The same request, answered by member ``to``. The hops travel along: a request takes two
    hops at most (follower -> leader -> its successor) and never goes back to a node it came
    through, unless this node has just ``handed_over`` leadership to that very node (a leader
    asked to remove itself, with the request forwarded by the member that became its successor)."""
    hops = [h for h in request.headers.get(FORWARDED_BY, "").split(",") if h]
    if (to.id in hops and not handed_over) or len(hops) >= 2:
        raise _refuse(503, "unavailable",
                      f"leadership moved while the request went through {', '.join(hops)}; retry")
    headers = {k: v for k in ("Authorization", "Content-Type", "X-Request-Id") if (v := request.headers.get(k))}
    headers[FORWARDED_BY] = ",".join([*hops, request.app[STORE_KEY].node_id])
    try:
        async with _session(request, timeout) as session, session.request(
            request.method, to.admin_url.rstrip("/") + request.path_qs, data=body, headers=headers
        ) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _refuse(503, "unavailable", f"the leader {to.id} ({to.admin_url}) did not answer: "
                                          f"{exc or type(exc).__name__}; retry") from None


async def _leader_or_forward(request: web.Request, body: bytes | None, timeout: float) -> web.Response | None:
    """None on the leader; elsewhere the leader's answer to this request.

    While leadership moves, views disagree for a moment: this node may still name as leader the
    node that just forwarded the request here (which in turn named this one). Rather than bounce
    the request back or refuse it at once, wait a little (at most LEADER_SETTLE seconds) for a
    leader this request has not already passed through; nothing has been proposed yet, so waiting
    is always safe."""
    store = request.app[STORE_KEY]
    hops = {h for h in request.headers.get(FORWARDED_BY, "").split(",") if h}
    deadline = time.monotonic() + min(timeout, LEADER_SETTLE)
    while True:
        if store.is_leader():
            return None
        leader = _leader_member(request)
        usable = leader is not None and bool(leader.admin_url) and leader.id not in hops
        if usable or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    if leader is None or not leader.admin_url:
        up = store.reachable_ids()
        every = ", ".join(m.id for m in store.members())
        raise _refuse(503, "unavailable", f"no leader: {store.node_id} reaches only {', '.join(sorted(up))} of "
                      f"{every}; a membership change needs a leader with a working majority (retry, or bring "
                      "members back)")
    return await _forward(request, leader, body, timeout + request.app[SETTINGS_KEY].get("forward_timeout", 5.0))


def _timeout(request: web.Request) -> float:
    raw = request.query.get("timeout", str(MEMBERSHIP_TIMEOUT))
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not 0.5 <= value <= 120:
        raise ValidationError("must be a number of seconds between 0.5 and 120", "timeout")
    return value


@contextlib.contextmanager
def _one_change(request: web.Request, what: str) -> Iterator[None]:
    """The leader's lock: one membership change at a time, a second one meanwhile is a 409. Also
    turns the membership module's refusals into API errors."""
    settings = request.app[SETTINGS_KEY]
    busy = settings.get("membership_change")
    if busy is not None:
        age = time.monotonic() - busy[1]
        raise _refuse(409, "conflict", f"a membership change is in progress ({busy[0]}, {age:.1f}s ago): "
                                       "one change at a time, retry when it is done")
    settings["membership_change"] = (what, time.monotonic())
    try:
        yield
    except Refusal as exc:
        raise _refuse(exc.status, exc.code, exc.message) from None
    except MembershipUnavailable as exc:
        raise OutcomeUnknown(str(exc)) from None
    finally:
        settings["membership_change"] = None


async def _judged(check: Callable[[], T]) -> T:
    """``check`` (a membership safety check), with a grace period for "unsafe" verdicts.

    Reachability is the leader's view of the last leader_fallback_timeout: right after a start, an
    election or a reconnection a member that is fine can look unreachable for a moment (a test loop
    saw a just-started cluster refuse a safe removal). An unsafe verdict is therefore only final once
    it has held for UNSAFE_GRACE seconds; a safe one is acted on at once."""
    deadline = time.monotonic() + UNSAFE_GRACE
    while True:
        try:
            return check()
        except Refusal as exc:
            if exc.code != "unsafe_change" or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.1)


def _members_json(request: web.Request) -> dict[str, Any]:
    store = request.app[STORE_KEY]
    return {"members": [m.to_json() for m in store.members()], "leader": store.raft_status()["leader_id"],
            "node": store.node_id}


async def get_members(request: web.Request) -> web.Response:
    """The Raft configuration as this node sees it (no fan-out, no barrier)."""
    return web.json_response(_members_json(request))


async def add_member(request: web.Request) -> web.Response:
    timeout = _timeout(request)
    raw = await request.read()
    new = _parse_member(raw)
    forwarded = await _leader_or_forward(request, raw, timeout)
    if forwarded is not None:
        return forwarded
    store = request.app[STORE_KEY]
    if new in store.members():  # a retried add whose first attempt committed
        return web.json_response({"member": new.to_json(), "unchanged": True, **_members_json(request)})
    with _one_change(request, f"adding {new.id}"):
        await _judged(lambda: check_add(store.members(), new, store.reachable_ids()))
        await store.change_membership("add", new, timeout)
    return web.json_response({"member": new.to_json(), **_members_json(request)}, status=201)


async def remove_member(request: web.Request) -> web.Response:
    timeout = _timeout(request)
    forwarded = await _leader_or_forward(request, None, timeout)
    if forwarded is not None:
        return forwarded
    store = request.app[STORE_KEY]
    target_id = request.match_info["id"]
    with _one_change(request, f"removing {target_id}"):
        target = await _judged(lambda: check_remove(store.members(), target_id, store.reachable_ids()))
        if target.id != store.node_id:
            await store.change_membership("remove", target, timeout)
            return web.json_response({"removed": target.to_json(), **_members_json(request)})
        # pysyncobj refuses to remove the leader itself: hand leadership over, let the new leader do it.
        deadline = time.monotonic() + timeout
        await store.transfer_leadership(timeout)
        while (leader := _leader_member(request)) is None or leader.id == target_id:
            if time.monotonic() > deadline:
                raise _refuse(503, "unavailable", "leadership was handed over but no new leader emerged; retry")
            await asyncio.sleep(0.05)
        return await _forward(request, leader, None, max(deadline - time.monotonic(), 1.0) + 5, handed_over=True)


def _parse_member(raw: bytes) -> Member:
    body = json_object(raw, "member")
    unknown = set(body) - {"id", "raft_addr", "admin_url"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", f"member.{sorted(unknown)[0]}")
    for name in ("id", "raft_addr", "admin_url"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise ValidationError("required, a non-empty string", f"member.{name}")
    check_id(body["id"], "member.id")
    host, _, port = body["raft_addr"].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError("must look like host:port", "member.raft_addr")
    url = body["admin_url"].rstrip("/")
    host, _, port = url.partition("://")[2].rpartition(":")
    if not url.startswith(("http://", "https://")) or not host or not port.isdigit():
        raise ValidationError("must look like http://host:port", "member.admin_url")
    return Member(body["id"], body["raft_addr"], url)


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"malformed JSON: {exc}", what) from exc
    if not isinstance(body, dict):
        raise ValidationError("must be a JSON object", what)
    return body


async def get_events(request: web.Request) -> web.Response:
    """This node's recent events (cluster/events.py), oldest first; ``?since=SEQ`` for newer ones."""
    raw = request.query.get("since", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is True, int("²") raises
        raise ValidationError("must be a non-negative integer (an event's seq)", "since")
    events = request.app[STORE_KEY].events
    return web.json_response({"node": request.app[STORE_KEY].node_id, "last_seq": events.last_seq,
                              "items": events.since(int(raw))})


def add_routes(app: web.Application) -> None:
    """Membership routes; fixed paths, so they must precede ``/v1/{kind}/...``."""
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/cluster/members", get_members)
    app.router.add_post("/v1/cluster/members", add_member)
    app.router.add_delete("/v1/cluster/members/{id}", remove_member)
