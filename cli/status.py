"""Cluster status: probe nodes, proxies and upstreams; decide readiness; the live view's snapshots.

``node_readiness``, ``merge_cluster_views``, ``merge_fleet`` and ``assemble`` are pure (dicts in,
dicts out) so that the rules for "the cluster is up" and what the status view shows are unit-tested
without sockets; ``probe_*`` and ``collect_status`` do the IO.

The live view (``cli/tui.py: Monitor``) asks every node for its *own* state (``/v1/status``, ``/v1/proxies/local``)
in parallel with a short timeout, rather than one node for everybody's: a node's ``/v1/cluster``
waits up to its peer timeout for a paused peer, which would freeze the screen exactly when it matters.
Cluster-wide reads (config counts: the ``counts`` of that node's ``/v1/status``; membership) come from
one node, the first reachable endpoint from the last one used, so the view fails over when that node dies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cli.client import get_json
from cli.metrics_scrape import Rates
from cli.view_model import proxy_rows

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


def members_by_id(resp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
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
    members = members_by_id(view)
    commit = int((members.get(leader) or {}).get("commit_index") or 0)
    for nid in node_ids:
        if nid in pending:
            continue
        in_view = members.get(nid)
        own = members_by_id(ok[nid]).get(nid) or in_view
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
        for mid, m in members_by_id(view).items():
            known.setdefault(
                mid, {"id": mid, "admin_url": m.get("admin_url"), "raft_addr": m.get("raft_addr")}
            )
    rows: list[dict[str, Any]] = []
    for nid, base in known.items():
        own = members_by_id(ok[nid]).get(nid) if nid in ok else None
        other = next((members_by_id(v)[nid] for v in views if nid in members_by_id(v)), None)
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
    row: dict[str, Any] = {
        k: entry.get(k) for k in ("id", "url", "status_url", "pid", "process") if k in entry
    }
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
        seconds_since_sync=body.get("seconds_since_sync"),
        last_error=body.get("last_error"),
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
                (m for m in members_by_id(res).values() if str(m.get("admin_url", "")).rstrip("/") == url),
                None,
            )
            key = str(match["id"]) if match else url
        probes[key] = res
    merged = merge_cluster_views(nodes, {k: v for k, v in probes.items() if not k.startswith("http")})
    if not merged["nodes"] and probes:
        merged["errors"] = [f"{k}: {v}" for k, v in probes.items() if isinstance(v, str)]
    merged["proxies"] = parallel(lambda p: probe_proxy(p, timeout), list(proxies))
    return merged


# ---- the live view ----------------------------------------------------------------------------------
def _self_entry(resp: Mapping[str, Any], node_id: str | None, admin_url: str) -> dict[str, Any] | None:
    members = members_by_id(resp)
    own = members.get(str(resp.get("node") or node_id or ""))
    if own is None:
        own = next(
            (m for m in members.values() if str(m.get("admin_url", "")).rstrip("/") == admin_url), None
        )
    return None if own is None else {**own, "leader": resp.get("leader")}


def probe_self(node_id: str | None, admin_url: str, token: str, timeout: float = 0.8) -> Probe:
    """One node's own state (``GET /v1/status``: no barrier, no peer fan-out).

    A node without ``/v1/status`` (an older one, or a stand-in) is asked ``/v1/cluster?consistency=stale``
    and its entry for itself is used.
    """
    url = admin_url.rstrip("/")
    try:
        status, body = get_json(url + "/v1/status", token, timeout)
    except ConnectionError as exc:
        return str(exc).split(": ", 1)[-1]
    if status == 200 and isinstance(body, dict) and "role" in body:
        return body
    if status in (401, 403):
        return f"HTTP {status} (token rejected)"
    whole = probe_node(url, token, timeout)
    if isinstance(whole, str):
        return whole
    return _self_entry(whole, node_id, url) or f"HTTP {status}"


def process_uptime(pid: Any) -> float | None:
    """Seconds since process ``pid`` started (Linux /proc), None when unknown.

    For nodes that do not report ``started_at`` (older servers) when a local cluster knows their PIDs.
    """
    if not isinstance(pid, int):
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, boot_uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def merge_fleet(lists: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each node's local proxy registry merged as the server does: a live session wins, then revision."""
    fleet: dict[str, dict[str, Any]] = {}
    for items in lists:
        for e in items:
            if not isinstance(e, Mapping) or "id" not in e:
                continue
            best = fleet.get(str(e["id"]))
            rank = (bool(e.get("connected")), int(e.get("revision") or 0))
            if best is None or rank > (bool(best.get("connected")), int(best.get("revision") or 0)):
                fleet[str(e["id"])] = dict(e)
    return fleet


def _leader(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The reachable node that says it leads (highest term), else what most reachable nodes believe."""
    up = [r for r in rows if r.get("reachable")]
    leaders = [r for r in up if r.get("role") == "leader"]
    if leaders:
        best = max(leaders, key=lambda r: (bool(r.get("has_quorum")), int(r.get("term") or 0)))
        return str(best["id"])
    down = {str(r["id"]) for r in rows if not r.get("reachable")}
    votes: dict[str, int] = {}
    for r in up:
        if r.get("leader") and str(r["leader"]) not in down:
            votes[str(r["leader"])] = votes.get(str(r["leader"]), 0) + 1
    return max(votes, key=lambda k: (votes[k], k)) if votes else None


_NODE_KEYS = (
    "role", "term", "commit_index", "applied_index", "revision", "has_quorum", "hash", "leader", "started_at",
    "links_down",
)  # fmt: skip


def assemble(
    *,
    now: float,
    nodes: Sequence[Mapping[str, Any]],
    probes: Mapping[str, Probe],
    proxies: Sequence[Mapping[str, Any]] = (),
    fleet: Mapping[str, Mapping[str, Any]] | None = None,
    traffic: Mapping[str, Rates | None] | None = None,
    config: Mapping[str, Any] | None = None,
    uptimes: Mapping[str, tuple[float, bool]] | None = None,
    source: Mapping[str, Any] | None = None,
    last_leader: str | None = None,
) -> dict[str, Any]:
    """One status snapshot: what the view and ``--json`` show, derived from this poll's answers.

    ``nodes``: known members (id, admin_url, optional pid/process); ``probes``: each one's own state
    or why there is none; ``proxies``: ``probe_proxy`` rows; ``fleet``: merged CP registries by id;
    ``traffic``: req/s etc. by proxy id; ``uptimes``: (seconds, observed-by-us-only) by node id
    (``cli/view_model.py: node_uptime``); ``config``: revision, hash and counts per kind.
    """
    rows: list[dict[str, Any]] = []
    for n in nodes:
        nid = str(n["id"])
        row = dict(n)
        p = probes.get(nid, "not probed")
        if isinstance(p, dict):
            row.update({k: p.get(k) for k in _NODE_KEYS}, reachable=True, error=None)
            seen = (uptimes or {}).get(nid)
            row["uptime"], row["uptime_observed"] = seen if seen else (None, False)
        else:
            row.update(
                {k: None for k in _NODE_KEYS}, reachable=False, error=p, uptime=None, uptime_observed=False
            )
        rows.append(row)
    rows.sort(key=lambda r: str(r["id"]))
    leader = _leader(rows)
    lead = next((r for r in rows if r["id"] == leader and r["reachable"]), None)
    alive = [r for r in rows if r["reachable"]]
    commit = (
        lead.get("commit_index") if lead else max((r.get("commit_index") or 0 for r in alive), default=None)
    )
    revision = lead.get("revision") if lead else max((r.get("revision") or 0 for r in alive), default=None)
    if revision is None and config:
        revision = config.get("revision")
    for r in rows:
        applied = r.get("applied_index")
        r["lag"] = (
            max(0, int(commit) - int(applied))
            if r["reachable"] and commit is not None and applied is not None
            else None
        )
    urls = {str(r.get("admin_url") or "").rstrip("/"): str(r["id"]) for r in rows}
    return {
        "time": now,
        "leader": leader,
        "last_leader": leader or last_leader,
        "term": max((int(r.get("term") or 0) for r in alive), default=None),
        "revision": revision,
        "source": dict(source) if source else None,
        "nodes": rows,
        "proxies": proxy_rows(proxies, fleet or {}, traffic or {}, revision, urls, now),
        "config": dict(config) if config else None,
    }
