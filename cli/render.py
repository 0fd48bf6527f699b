"""Pure rendering: plain dicts in, rich renderables out. The only module that builds rich Tables.

Nothing here does IO, reads clocks or touches the console; ``cli/console.py`` prints what these
functions return. Every table has a ``--json`` twin: the command prints the input dict instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

DASH = Text("-", style="dim")


def _cell(value: Any) -> Text:
    if value is None:
        return DASH.copy()
    if isinstance(value, bool):
        return Text("yes", style="green") if value else Text("no", style="red")
    return Text(str(value))


def _short_json(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _joined(values: Any) -> Text:
    if not values:
        return DASH.copy()
    return Text(", ".join(str(v) for v in values))


def _process(value: Any) -> Text:
    if value is None:
        return DASH.copy()
    return Text(str(value), style="green" if value == "running" else "red")


# ---- cluster.json ---------------------------------------------------------------------------------
def cluster_table(cluster: Mapping[str, Any]) -> Table:
    """The members of DIR/cluster.json: kind, id, url, second address, pid."""
    table = Table(title="gwadm local cluster", title_justify="left", caption_justify="left")
    for col in ("kind", "id", "url", "address", "pid"):
        table.add_column(col, no_wrap=col != "address")
    for n in cluster.get("nodes", []):
        table.add_row(
            "node", n["id"], n.get("admin_url"), Text(f"raft {n.get('raft_addr')}"), _cell(n.get("pid"))
        )
    for p in cluster.get("proxies", []):
        table.add_row(
            "proxy", p["id"], p.get("url"), Text(f"status {p.get('status_url')}"), _cell(p.get("pid"))
        )
    for u in cluster.get("upstreams", []):
        table.add_row("upstream", u["id"], u.get("url"), DASH.copy(), _cell(u.get("pid")))
    if cluster.get("token_file"):
        table.caption = f"admin token file: {cluster['token_file']}"
    return table


def actions_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """Result of stop/start/kill/down: member, pid, what happened."""
    table = Table(title=title, title_justify="left")
    for col in ("id", "pid", "result"):
        table.add_column(col)
    styles = {"started": "green", "stopped": "yellow", "killed": "red", "already running": "green"}
    for r in rows:
        res = str(r.get("result"))
        table.add_row(str(r["id"]), _cell(r.get("pid")), Text(res, style=styles.get(res, "dim")))
    return table


# ---- status ---------------------------------------------------------------------------------------
# The status view is built from one snapshot (``cli/status.py: assemble``) and the recent events
# (``cli/events.py``). Columns are dropped, least useful first, when the terminal is narrow, so a
# row stays on one line and the states (down, cached, lag) stay visible.
WIDE = 118
NARROW = 72
MODE_STYLES = {"synced": "green", "cached": "bold yellow", "empty": "red"}
LEVEL_STYLES = {"info": "", "ok": "green", "warn": "yellow", "error": "bold red"}


def _role(role: Any) -> Text:
    if role is None:
        return DASH.copy()
    style = {"leader": "bold green", "follower": "cyan", "candidate": "yellow"}.get(str(role), "red")
    return Text(str(role), style=style)


def duration(seconds: Any) -> str:
    """Compact human duration: 42s, 7m05s, 3h12m, 2d4h."""
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _rate(value: Any, bad: bool = False) -> Text:
    if not isinstance(value, int | float):
        return DASH.copy()
    text = f"{value:.0f}" if value >= 100 or value == 0 else f"{value:.1f}"
    return Text(text, style="bold red" if bad and value > 0 else "")


def _latency(seconds: Any) -> Text:
    if not isinstance(seconds, int | float):
        return DASH.copy()
    return Text(f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s")


def _lag(value: Any) -> Text:
    if not isinstance(value, int):
        return DASH.copy()
    return Text(str(value), style="" if value == 0 else ("yellow" if value < 100 else "bold red"))


def _state(row: Mapping[str, Any]) -> Text:
    """up / down; a node that answers but whose Raft links to some peers are down says which."""
    if not row.get("reachable"):
        return Text("down", style="bold red")
    links_down = row.get("links_down")
    if isinstance(links_down, list) and links_down:
        return Text("up, links down: " + ",".join(map(str, links_down)), style="bold yellow")
    return Text("up", style="green")


def _role_or_why(row: Mapping[str, Any]) -> Text:
    """A node that does not answer has no role to show: show why it does not answer instead."""
    if row.get("reachable"):
        return _role(row.get("role"))
    return Text(str(row.get("error") or "-"), style="red")


def _uptime(row: Mapping[str, Any]) -> Text:
    if not row.get("reachable") or row.get("uptime") is None:
        return DASH.copy()
    if row.get("uptime_observed"):  # only how long this view has seen it up
        return Text("≥" + duration(row["uptime"]), style="dim")
    return Text(duration(row["uptime"]))


def nodes_table(status: Mapping[str, Any], width: int = WIDE) -> Table:
    """Control-plane nodes: role, state, Raft indexes, lag behind the leader's commit, uptime."""
    wide = width >= WIDE
    leader = status.get("leader")
    table = Table(title=f"control plane (leader: {leader or 'none'})", title_justify="left")
    local = any("process" in r for r in status.get("nodes", []))
    cols = ["node", "role", "state", "term"] + (["commit", "applied"] if wide else []) + ["lag"]
    cols += ["revision", "quorum", "uptime"] if width >= NARROW else ["quorum"]
    cols += ["process"] if local and wide else []  # admin URLs: `gwadm cluster status --json`
    for col in cols:
        numeric = col in ("term", "commit", "applied", "lag", "revision", "uptime")
        table.add_column(
            col, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis",
            max_width=18 if col == "role" else None, min_width=4 if col == "state" else None,
        )  # fmt: skip
    for r in status.get("nodes", []):
        cells: dict[str, RenderableType] = {
            "node": Text(str(r["id"]), style="bold" if r["id"] == leader else ""),
            "role": _role_or_why(r),
            "state": _state(r),
            "term": _cell(r.get("term")),
            "commit": _cell(r.get("commit_index")),
            "applied": _cell(r.get("applied_index")),
            "lag": _lag(r.get("lag")),
            "revision": _cell(r.get("revision")),
            "quorum": _cell(r.get("has_quorum")),
            "uptime": _uptime(r),
            "process": _process(r.get("process")),
        }
        table.add_row(*(cells[c] for c in cols))
    if not status.get("nodes"):
        table.caption = "; ".join(status.get("errors") or ["no node answered"])
    return table


def _mode(row: Mapping[str, Any], wide: bool) -> Text:
    mode = row.get("mode")
    if not row.get("reachable") and row.get("status_url"):  # a local proxy whose /status is silent
        why = f" ({row['error']})" if wide and row.get("error") else ""
        return Text("down" + why, style="bold red")
    return Text(str(mode), style=MODE_STYLES.get(str(mode), "")) if mode else DASH.copy()


def proxies_table(status: Mapping[str, Any], width: int = WIDE) -> Table:
    """Proxies: mode, revision and lag behind the committed revision, last sync, traffic."""
    wide = width >= WIDE
    table = Table(title="proxies", title_justify="left")
    local = any("process" in r for r in status.get("proxies", []))
    rows = status.get("proxies", [])
    relayed = any(r.get("via") for r in rows)  # columns only when a row has something to show
    models = wide and any(r.get("sync") for r in rows)
    cols = ["proxy", "mode"] + (["sync"] if models else []) + (["via"] if relayed else [])
    cols += ["revision", "lag"] + (["last sync"] if wide else [])
    cols += ["req/s", "5xx/s", "p99"] + (["node", "last error"] if wide else [])
    cols += ["process"] if local and wide else []
    for col in cols:
        left = col in ("proxy", "mode", "sync", "via", "node", "last error", "process")
        table.add_column(col, justify="left" if left else "right", no_wrap=True, overflow="ellipsis",
                         max_width=40 if col == "last error" else None)  # fmt: skip
    for r in status.get("proxies", []):
        since = r.get("sync_age")  # the proxy's own word, else the time since its last ack
        cells: dict[str, RenderableType] = {
            "proxy": Text(str(r["id"])),
            "mode": _mode(r, wide),
            "sync": _cell(r.get("sync")),
            "via": Text(f"relay {r['via']}", style="cyan") if r.get("via") else Text("direct", style="dim"),
            "revision": _cell(r.get("revision")),
            "lag": _lag(r.get("lag")),
            "last sync": Text(f"{duration(since)} ago") if isinstance(since, int | float) else DASH.copy(),
            "req/s": _rate(r.get("req_s")),
            "5xx/s": _rate(r.get("err_s"), bad=True),
            "p99": _latency(r.get("p99")),
            "node": _cell(r.get("node")),
            "last error": Text(str(r["last_error"]), style="red") if r.get("last_error") else DASH.copy(),
            "process": _process(r.get("process")),
        }
        table.add_row(*(cells[c] for c in cols))
    if not status.get("proxies"):
        table.caption = "no proxies known"
    return table


def config_line(status: Mapping[str, Any]) -> Text:
    """Committed revision, config hash, resources per kind (counts of the last revision fetched)."""
    cfg = status.get("config") or {}
    rev = status.get("revision")
    line = Text("config  ", style="bold")
    line.append(f"revision {rev if rev is not None else '?'}")
    if cfg.get("hash"):
        line.append(f" · hash {str(cfg['hash'])[:12]}", style="dim")
    counts = cfg.get("counts")
    if counts:
        line.append(" · " + " · ".join(f"{n} {kind}" for kind, n in counts.items()))
        if cfg.get("revision") != rev:
            line.append(f" (counts as of revision {cfg.get('revision')})", style="yellow")
    else:
        line.append(" · resource counts unavailable", style="dim")
    return line


def _clock(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, int | float) else "--:--:--"


def events_panel(events: Sequence[Mapping[str, Any]], limit: int = 12) -> Panel:
    """The most recent events, newest first."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for e in list(events)[::-1][:limit]:
        grid.add_row(
            _clock(e.get("time")),
            Text(str(e.get("message")), style=LEVEL_STYLES.get(str(e.get("level")), "")),
        )
    body: RenderableType = grid if events else Text("no events yet", style="dim")
    return Panel(body, title="recent events", title_align="left", border_style="dim")


def header(status: Mapping[str, Any], title: str, live: bool) -> Text:
    """One line: leader, term, revision, which node the cluster-wide reads came from, time."""
    line = Text(title, style="bold")
    leader = status.get("leader")
    line.append("  leader ")
    line.append(str(leader) if leader else "none", style="bold green" if leader else "bold red")
    line.append(f" · term {status.get('term') if status.get('term') is not None else '?'}")
    src = status.get("source") or {}
    line.append(f" · via {src.get('id') or src.get('url')}" if src else " · no node answering", style="dim")
    line.append(f" · {_clock(status.get('time'))}", style="dim")
    if live:
        line.append(" · q quits", style="dim")
    return line


def _upstreams_line(status: Mapping[str, Any]) -> Text | None:
    ups = status.get("upstreams") or []
    if not ups:
        return None
    line = Text("upstreams: ", style="dim")
    for i, u in enumerate(ups):
        line.append(("  " if i else "") + f"{u['id']} {u.get('url')} ")
        line.append_text(_process(u.get("process")))
    return line


def status_view(status: Mapping[str, Any], width: int = WIDE) -> Group:
    """`gwadm status`: nodes, proxies, config summary, local upstream processes."""
    parts: list[RenderableType] = [
        nodes_table(status, width),
        proxies_table(status, width),
        config_line(status),
    ]
    ups = _upstreams_line(status)
    if ups is not None:
        parts.append(ups)
    return Group(*parts)


def live_view(
    status: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    width: int = WIDE,
    title: str = "gwadm top",
    height: int | None = None,
) -> Group:
    """`gwadm top`: a header line, the status view, then as many recent events as the height allows."""
    fixed = 15 + len(status.get("nodes") or ()) + len(status.get("proxies") or ())  # tables, borders, lines
    limit = 12 if height is None else max(3, height - fixed)
    return Group(header(status, title, live=True), status_view(status, width), events_panel(events, limit))


def waiting_view(title: str) -> Text:
    """Shown until the first poll answers (at most about a second)."""
    return Text(f"{title}: asking the cluster…  (q quits)", style="dim")


def pending_view(pending: Mapping[str, str], title: str = "waiting for") -> Table:
    """Progress display of `cluster up`: which member is not ready and why."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(style="yellow")
    for member, reason in pending.items():
        table.add_row(member, reason)
    if title:
        table.title = title
    return table


def progress_view(pending: Mapping[str, str], notes: Sequence[str], title: str) -> Group:
    """Live display while waiting: recent notes, a spinner line, the pending members."""
    parts: list[RenderableType] = [Text(n, style="dim") for n in notes[-8:]]
    if pending:
        parts.append(Spinner("dots", text=Text(f"{title}: {len(pending)} not ready", style="bold")))
        parts.append(pending_view(pending, ""))
    return Group(*parts)


def pending_line(pending: Mapping[str, str]) -> str:
    """Plain one-line form of the pending members (logs, non-TTY output)."""
    return "; ".join(f"{k}: {v}" for k, v in pending.items())


# ---- resources ------------------------------------------------------------------------------------
def _targets(spec: Mapping[str, Any]) -> Text:
    parts = [
        f"{t.get('host')}:{t.get('port')}" + (f"*{t['weight']}" if t.get("weight", 1) != 1 else "")
        for t in spec.get("targets") or []
    ]
    return _joined(parts)


def _credentials(spec: Mapping[str, Any]) -> Text:
    creds = spec.get("credentials") or {}
    parts = [f"{name}: {len(items)}" for name, items in sorted(creds.items()) if items]
    return _joined(parts)


_COLUMNS: dict[str, list[tuple[str, Any]]] = {
    "routes": [
        ("paths", lambda s: _joined(s.get("paths"))),
        ("hosts", lambda s: _joined(s.get("hosts"))),
        ("methods", lambda s: _joined(s.get("methods"))),
        ("upstream", lambda s: _cell(s.get("upstream"))),
        ("priority", lambda s: _cell(s.get("priority"))),
        ("plugins", lambda s: _joined(sorted(s.get("plugins") or {}))),
    ],
    "upstreams": [
        ("targets", _targets),
        ("lb", lambda s: _cell(s.get("lb"))),
        ("retries", lambda s: _cell(s.get("retries"))),
    ],
    "consumers": [
        ("username", lambda s: _cell(s.get("username"))),
        ("credentials", _credentials),
        ("plugins", lambda s: _joined(sorted(s.get("plugins") or {}))),
    ],
    "plugins": [
        ("name", lambda s: _cell(s.get("name"))),
        ("enabled", lambda s: _cell(s.get("enabled"))),
        ("config", lambda s: Text(_short_json(s.get("config") or {}))),
    ],
}


def resource_table(kind: str, listing: Mapping[str, Any]) -> Table:
    """``GET /v1/{kind}`` answer -> table with the columns that matter for that kind."""
    items = listing.get("items") or []
    table = Table(title=f"{kind} (revision {listing.get('revision', '?')})", title_justify="left")
    table.add_column("id", style="bold", no_wrap=True)
    columns = _COLUMNS.get(kind, [])
    for name, _ in columns:
        table.add_column(name)
    table.add_column("mod_rev", justify="right")
    for item in items:
        cells: list[RenderableType] = [Text(str(item.get("id")))]
        cells += [fn(item) for _, fn in columns]
        cells.append(_cell(item.get("mod_revision")))
        table.add_row(*cells)
    if not items:
        table.caption = f"no {kind}"
    return table
