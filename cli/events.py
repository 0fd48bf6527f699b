"""What changed between two successive status snapshots, as a list of events for the TUI.

Pure: two snapshot dicts (``cli/status.py: assemble``) in, events out; no clock (an event carries the
newer snapshot's ``time``). Deriving events from snapshots, instead of asking the cluster for an
event stream, means the view works against any node of any version and never misses an event
because a node died: whatever the CLI saw change is what it reports.

An event is ``{"time", "level", "subject", "message"}``; ``level`` is ``info``, ``ok`` (a recovery),
``warn`` or ``error`` and only picks the colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Event = dict[str, Any]
Snapshot = Mapping[str, Any]


def _by_id(rows: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    return {str(r["id"]): r for r in rows or () if isinstance(r, Mapping) and "id" in r}


def _quorum(snap: Snapshot) -> bool:
    return any(n.get("reachable") and n.get("has_quorum") for n in snap.get("nodes") or ())


def initial(cur: Snapshot) -> list[Event]:
    """Events for the first snapshot: where things stand, and what is already wrong."""
    t = cur.get("time")
    nodes, proxies = cur.get("nodes") or [], cur.get("proxies") or []
    leader = cur.get("leader")
    where = f"leader {leader} (term {cur.get('term')})" if leader else "no leader"
    out = [_ev(t, "info", "cluster", f"watching {len(nodes)} nodes, {len(proxies)} proxies; {where}")]
    for n in nodes:
        if not n.get("reachable"):
            out.append(_ev(t, "error", str(n["id"]), f"{n['id']} down" + _why(n)))
    for p in proxies:
        if p.get("mode") == "cached":
            out.append(
                _ev(t, "warn", str(p["id"]), f"{p['id']} in cached mode (revision {p.get('revision')})")
            )
    return out


def diff(prev: Snapshot | None, cur: Snapshot) -> list[Event]:
    """Events explaining the step from ``prev`` to ``cur`` (``initial(cur)`` when there is no prev)."""
    if prev is None:
        return initial(cur)
    return [*_cluster_events(prev, cur), *_node_events(prev, cur), *_proxy_events(prev, cur)]


def _ev(t: Any, level: str, subject: str, message: str) -> Event:
    return {"time": t, "level": level, "subject": subject, "message": message}


def _why(row: Mapping[str, Any]) -> str:
    return f" ({row['error']})" if row.get("error") else ""


def _cluster_events(prev: Snapshot, cur: Snapshot) -> list[Event]:
    t = cur.get("time")
    out: list[Event] = []
    known = prev.get("leader") or prev.get("last_leader")
    leader, term, old_term = cur.get("leader"), cur.get("term"), prev.get("term")
    if leader and leader != known:
        was = f"{known} → {leader}" if known else f"{leader} elected"
        out.append(_ev(t, "warn" if known else "ok", "cluster", f"leader {was} (term {term})"))
    elif not leader and prev.get("leader"):
        out.append(_ev(t, "error", "cluster", f"no leader (was {prev['leader']})"))
    elif isinstance(term, int) and isinstance(old_term, int) and term > old_term:
        still = f", leader still {leader}" if leader else ""
        out.append(_ev(t, "warn", "cluster", f"term {old_term} → {term}{still}"))
    if _quorum(prev) and not _quorum(cur):
        out.append(_ev(t, "error", "cluster", "no reachable node has a quorum"))
    elif not _quorum(prev) and _quorum(cur) and prev.get("nodes"):
        out.append(_ev(t, "ok", "cluster", "quorum regained"))
    rev, old_rev = cur.get("revision"), prev.get("revision")
    if isinstance(rev, int) and isinstance(old_rev, int) and rev != old_rev:
        if rev > old_rev:
            step = f" (+{rev - old_rev})" if rev - old_rev > 1 else ""
            out.append(_ev(t, "info", "config", f"revision {old_rev} → {rev}{step}"))
        else:
            out.append(_ev(t, "warn", "config", f"revision went back {old_rev} → {rev}"))
    src, old_src = (cur.get("source") or {}).get("id"), (prev.get("source") or {}).get("id")
    if src != old_src and old_src is not None:
        out.append(_ev(t, "info", "view", f"reading cluster data from {src or 'no node'} (was {old_src})"))
    return out


def _node_events(prev: Snapshot, cur: Snapshot) -> list[Event]:
    t = cur.get("time")
    out: list[Event] = []
    before, after = _by_id(prev.get("nodes")), _by_id(cur.get("nodes"))
    for nid, n in after.items():
        p = before.get(nid)
        if p is None:
            out.append(_ev(t, "info", nid, f"{nid} joined the view"))
        elif p.get("reachable") and not n.get("reachable"):
            out.append(_ev(t, "error", nid, f"{nid} down" + _why(n)))
        elif not p.get("reachable") and n.get("reachable"):
            out.append(_ev(t, "ok", nid, f"{nid} up ({n.get('role') or 'no role yet'})"))
        elif _restarted(p, n):
            up = _num(n.get("uptime"))
            since = f" (up {up:.0f}s)" if up is not None else ""
            out.append(_ev(t, "warn", nid, f"{nid} restarted{since}"))
        if p is not None and p.get("reachable") and n.get("reachable"):
            was, now = set(p.get("links_down") or ()), set(n.get("links_down") or ())
            for peer in sorted(now - was):
                out.append(_ev(t, "warn", nid, f"{nid}: Raft link to {peer} down"))
            for peer in sorted(was - now):
                out.append(_ev(t, "ok", nid, f"{nid}: Raft link to {peer} up again"))
    for nid in before.keys() - after.keys():
        out.append(_ev(t, "info", nid, f"{nid} left the view"))
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _restarted(p: Mapping[str, Any], n: Mapping[str, Any]) -> bool:
    """The node restarted between two polls while it stayed up: its reported ``started_at`` moved on,
    or (a node that does not report it) its process uptime went down."""
    if not (p.get("reachable") and n.get("reachable")):
        return False
    was, now = _num(p.get("started_at")), _num(n.get("started_at"))
    if was is not None and now is not None:
        return now > was
    a, b = _num(p.get("uptime")), _num(n.get("uptime"))
    return not n.get("uptime_observed") and a is not None and b is not None and b + 1.0 < a


def _proxy_events(prev: Snapshot, cur: Snapshot) -> list[Event]:
    t = cur.get("time")
    out: list[Event] = []
    before, after = _by_id(prev.get("proxies")), _by_id(cur.get("proxies"))
    for pid, p in after.items():
        old = before.get(pid)
        if old is None:
            out.append(_ev(t, "info", pid, f"{pid} appeared ({p.get('mode') or 'mode unknown'})"))
            continue
        if old.get("reachable") and not p.get("reachable"):
            out.append(_ev(t, "error", pid, f"{pid} not answering" + _why(p)))
        elif not old.get("reachable") and p.get("reachable"):
            out.append(_ev(t, "ok", pid, f"{pid} answering again"))
        mode, old_mode = p.get("mode"), old.get("mode")
        if mode and old_mode and mode != old_mode:
            if mode == "cached":
                msg = f"{pid} entered cached mode (serving revision {p.get('revision')} read-only)"
                out.append(_ev(t, "warn", pid, msg))
            elif old_mode == "cached":
                out.append(_ev(t, "ok", pid, f"{pid} left cached mode ({mode})"))
            else:
                out.append(_ev(t, "ok" if mode == "synced" else "warn", pid, f"{pid} {old_mode} → {mode}"))
        err = p.get("last_error")
        if err and err != old.get("last_error"):
            out.append(_ev(t, "error", pid, f"{pid} rejected a config: {err}"))
    for pid in before.keys() - after.keys():
        out.append(_ev(t, "info", pid, f"{pid} left the view"))
    return out


_NODE_EVENT_LEVELS = {
    "quorum_lost": "error", "link_down": "warn", "election_started": "warn", "election_lost": "warn",
    "unavailable": "warn", "stale_snapshots_ignored": "warn", "quorum_regained": "ok", "link_up": "ok",
    "election_won": "ok",
}  # fmt: skip
_NODE_EVENT_SKIP = {"seq", "time", "node", "event"}


def node_events(records: Sequence[Mapping[str, Any]]) -> list[Event]:
    """A node's own events (``GET /v1/events``, cluster/events.py) as view events, oldest first."""
    out: list[Event] = []
    for r in records:
        node, kind = str(r.get("node") or "?"), str(r.get("event") or "?")
        fields = " ".join(f"{k}={v}" for k, v in r.items() if k not in _NODE_EVENT_SKIP and v is not None)
        out.append(_ev(r.get("time"), _NODE_EVENT_LEVELS.get(kind, "info"), node,
                       f"{node}: {kind.replace('_', ' ')}" + (f" ({fields})" if fields else "")))
    return out
