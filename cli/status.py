"""Cluster status: probe nodes, proxies and upstreams; decide readiness.

``node_readiness`` and ``merge_cluster_views`` are pure (dicts in, dicts out) so that the rules for
"the cluster is up" are unit-tested without sockets; ``probe_*`` and ``collect_status`` do the IO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cli.client import get_json

T = TypeVar("T")
R = TypeVar("R")
Probe = dict[str, Any] | str  # a decoded answer, or why there is none


def parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


def probe_node(admin_url: str, token: str, timeout: float = 1.0) -> Probe:
    """``GET /v1/cluster?consistency=stale`` of one node (no barrier: works without quorum too)."""
    try:
        status, body = get_json(admin_url.rstrip("/") + "/v1/cluster?consistency=stale", token, timeout)
    except ConnectionError as exc:
        return str(exc).split(": ", 1)[-1]
    if status != 200 or not isinstance(body, dict):
        err = body.get("error", {}) if isinstance(body, dict) else {}
        return f"HTTP {status}" + (f" {err.get('message')}" if isinstance(err, dict) and err else "")
    return body


def probe_http(url: str, timeout: float = 1.0) -> tuple[int, Any] | str:
    try:
        return get_json(url, None, timeout)
    except ConnectionError as exc:
        return str(exc).split(": ", 1)[-1]


def _members(resp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in resp.get("members") or []:
        if isinstance(m, dict) and "id" in m:
            out[str(m["id"])] = m
    return out


def node_readiness(node_ids: Sequence[str], probes: Mapping[str, Probe]) -> dict[str, str]:
    """Which nodes are not ready yet, and why. Empty dict = ready.

    Ready: every node answers; they report one and the same leader; in the leader's view every member
    is reachable; every node's own applied_index >= the leader's commit_index.
    """
    pending: dict[str, str] = {}
    ok: dict[str, Mapping[str, Any]] = {}
    for nid in node_ids:
        p = probes.get(nid, "not probed")
        if isinstance(p, str):
            pending[nid] = f"not answering ({p})"
        else:
            ok[nid] = p
    leaders = {str(r["leader"]) for r in ok.values() if r.get("leader")}
    if not leaders:
        for nid in ok:
            pending[nid] = "no leader yet"
        return pending
    if len(leaders) > 1:
        for nid in ok:
            pending[nid] = f"nodes disagree on the leader ({', '.join(sorted(leaders))})"
        return pending
    leader = leaders.pop()
    for nid, r in ok.items():
        if not r.get("leader"):
            pending[nid] = f"does not know the leader {leader} yet"
    view = ok.get(leader)
    if view is None:
        pending.setdefault(leader, "leader is not answering")
        return pending
    members = _members(view)
    commit = int((members.get(leader) or {}).get("commit_index") or 0)
    for nid in node_ids:
        if nid in pending:
            continue
        in_view = members.get(nid)
        own = _members(ok[nid]).get(nid) or in_view
        if in_view is None:
            pending[nid] = f"not a member in the leader's ({leader}) view"
        elif in_view.get("reachable") is False:
            pending[nid] = f"not reachable from the leader {leader}"
        elif own is not None and int(own.get("applied_index") or 0) < commit:
            pending[nid] = f"applied {own.get('applied_index')} < leader commit {commit}"
    return pending


NODE_FIELDS = ("role", "term", "commit_index", "applied_index", "revision", "has_quorum")


def merge_cluster_views(nodes: Sequence[Mapping[str, Any]], probes: Mapping[str, Probe]) -> dict[str, Any]:
    """One row per node: its own view of itself when it answered, else what the others say.

    ``nodes`` are the known members (``{"id", "admin_url", ...}``, e.g. from cluster.json, possibly
    empty); members reported by answering nodes are added. ``reachable`` = this CLI reached it.
    """
    ok = {nid: p for nid, p in probes.items() if isinstance(p, dict)}
    leader_votes: dict[str, int] = {}
    for r in ok.values():
        if r.get("leader"):
            leader_votes[str(r["leader"])] = leader_votes.get(str(r["leader"]), 0) + 1
    leader = max(leader_votes, key=lambda k: (leader_votes[k], k)) if leader_votes else None
    known: dict[str, dict[str, Any]] = {str(n["id"]): dict(n) for n in nodes}
    views = ([ok[leader]] if leader in ok else []) + list(ok.values())
    for view in views:
        for mid, m in _members(view).items():
            known.setdefault(
                mid, {"id": mid, "admin_url": m.get("admin_url"), "raft_addr": m.get("raft_addr")}
            )
    rows: list[dict[str, Any]] = []
    for nid, base in known.items():
        own = _members(ok[nid]).get(nid) if nid in ok else None
        other = next((_members(v)[nid] for v in views if nid in _members(v)), None)
        src = own or other or {}
        row = dict(base)
        row.update({f: src.get(f) for f in NODE_FIELDS})
        row["reachable"] = nid in ok
        if nid not in ok:
            row["role"] = "unreachable" if isinstance(probes.get(nid), str) or not src else src.get("role")
            row["error"] = probes.get(nid) if isinstance(probes.get(nid), str) else None
        rows.append(row)
    rows.sort(key=lambda r: str(r["id"]))
    return {"leader": leader, "nodes": rows}


def probe_proxy(entry: Mapping[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    row: dict[str, Any] = {k: entry.get(k) for k in ("id", "url", "status_url", "pid")}
    got = probe_http(str(entry.get("status_url", "")).rstrip("/") + "/status", timeout)
    if isinstance(got, str):
        row.update(reachable=False, error=got)
        return row
    status, body = got
    body = body if isinstance(body, dict) else {}
    row.update(
        reachable=status == 200,
        mode=body.get("mode"),
        revision=body.get("revision"),
        hash=body.get("hash"),
        connected_cp=body.get("connected_cp"),
    )
    if status != 200:
        row["error"] = f"HTTP {status}"
    return row


def collect_status(
    nodes: Sequence[Mapping[str, Any]],
    endpoints: Sequence[str],
    token: str,
    proxies: Sequence[Mapping[str, Any]] = (),
    timeout: float = 1.0,
) -> dict[str, Any]:
    """Probe every known node (or bare endpoint) and local proxy in parallel; never raises on IO."""
    targets: list[tuple[str, str]] = [(str(n["id"]), str(n["admin_url"])) for n in nodes]
    known_urls = {url.rstrip("/") for _, url in targets}
    targets += [(ep, ep) for ep in endpoints if ep.rstrip("/") not in known_urls]
    results = parallel(lambda t: probe_node(t[1], token, timeout), targets)
    probes: dict[str, Probe] = {}
    for (key, url), res in zip(targets, results, strict=True):
        if key == url and isinstance(res, dict):
            # a bare endpoint: find which member it is by its admin_url
            match = next(
                (m for m in _members(res).values() if str(m.get("admin_url", "")).rstrip("/") == url), None
            )
            key = str(match["id"]) if match else url
        probes[key] = res
    merged = merge_cluster_views(nodes, {k: v for k, v in probes.items() if not k.startswith("http")})
    if not merged["nodes"] and probes:
        merged["errors"] = [f"{k}: {v}" for k, v in probes.items() if isinstance(v, str)]
    merged["proxies"] = parallel(lambda p: probe_proxy(p, timeout), list(proxies))
    return merged
