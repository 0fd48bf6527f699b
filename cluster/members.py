"""Views across the control plane: this node's status, the cluster, and the proxy fleet.

A node knows its own Raft state and its own proxy sessions; ``/v1/cluster`` and ``/v1/proxies``
ask every peer (``/v1/status``, ``/v1/proxies/local``) with a short-lived viewer token and merge,
so any node answers for the whole cluster and unreachable members are reported, not hidden.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.auth import mint_token


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
    }


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(_member_status(request))


async def _fetch_peers(request: web.Request, path: str) -> list[tuple[dict[str, str], Any, str | None]]:
    """GET ``path`` on every peer concurrently: ``(peer, json or None, error or None)`` each."""
    settings = request.app[SETTINGS_KEY]
    store = request.app[STORE_KEY]
    token = mint_token(settings["secret"], "viewer", f"node:{store.node_id}", ttl_seconds=60)
    timeout = aiohttp.ClientTimeout(total=settings["peer_timeout"])

    async def fetch(session: aiohttp.ClientSession, peer: dict[str, str]) -> tuple[dict[str, str], Any, str | None]:
        try:
            async with session.get(
                peer["admin_url"].rstrip("/") + path, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                if resp.status == 200:
                    return peer, await resp.json(), None
                return peer, None, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return peer, None, str(exc) or type(exc).__name__

    source = settings.get("source_address")
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        return list(await asyncio.gather(*(fetch(session, p) for p in settings["peers"])))


async def get_cluster(request: web.Request) -> web.Response:
    me = _member_status(request)
    members = [me]
    for peer, data, error in await _fetch_peers(request, "/v1/status"):
        if data is not None:
            members.append({**data, "reachable": True})
        else:
            members.append({"id": peer["id"], "admin_url": peer["admin_url"], "raft_addr": peer["raft_addr"],
                            "reachable": False, "error": error})
    members.sort(key=lambda m: m["id"])
    leaders = {m["id"] for m in members if m.get("reachable") and m.get("role") == "leader" and m.get("has_quorum")}
    leader = me["leader"] if me["leader"] else (next(iter(leaders)) if len(leaders) == 1 else None)
    return web.json_response({"leader": leader, "node": me["id"], "members": members})


async def get_fleet(request: web.Request) -> web.Response:
    """Every proxy known to any node: connected sessions win over remembered disconnections."""
    local_fleet = request.app[SETTINGS_KEY]["local_fleet"]
    entries: list[dict[str, Any]] = list(local_fleet()) if local_fleet is not None else []
    unreachable = []
    for peer, data, error in await _fetch_peers(request, "/v1/proxies/local"):
        if data is None:
            unreachable.append({"id": peer["id"], "error": error})
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


