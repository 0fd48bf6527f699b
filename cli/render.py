"""Pure rendering: plain dicts in, rich renderables out. The only module that builds rich Tables.

Nothing here does IO, reads clocks or touches the console; ``cli/console.py`` prints what these
functions return. Every table has a ``--json`` twin: the command prints the input dict instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
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
def _role(role: Any, leader: bool) -> Text:
    if role is None:
        return DASH.copy()
    style = {"leader": "bold green", "follower": "cyan", "candidate": "yellow"}.get(str(role), "red")
    return Text(str(role) + (" *" if leader and role != "leader" else ""), style=style)


def nodes_table(status: Mapping[str, Any]) -> Table:
    leader = status.get("leader")
    table = Table(title=f"control plane (leader: {leader or 'none'})", title_justify="left")
    local = any("process" in r for r in status.get("nodes", []))
    cols = ["node", "role", "term", "commit", "applied", "revision", "quorum", "reachable", "admin_url"]
    for col in cols + (["process"] if local else []):
        table.add_column(col, justify="right" if col in ("term", "commit", "applied", "revision") else "left")
    for r in status.get("nodes", []):
        row: list[RenderableType] = [
            Text(str(r["id"]), style="bold" if r["id"] == leader else ""),
            _role(r.get("role"), False),
            _cell(r.get("term")),
            _cell(r.get("commit_index")),
            _cell(r.get("applied_index")),
            _cell(r.get("revision")),
            _cell(r.get("has_quorum")),
            _cell(bool(r.get("reachable"))),
            _cell(r.get("admin_url")),
        ]
        if local:
            row.append(_process(r.get("process")))
        table.add_row(*row)
    if not status.get("nodes"):
        table.caption = "; ".join(status.get("errors") or ["no node answered"])
    return table


def proxies_table(status: Mapping[str, Any]) -> Table:
    table = Table(title="proxies", title_justify="left")
    local = any("process" in r for r in status.get("proxies", []))
    cols = ["proxy", "mode", "revision", "connected_cp", "url", "reachable"]
    for col in cols + (["process"] if local else []):
        table.add_column(col, justify="right" if col == "revision" else "left")
    modes = {"synced": "green", "cached": "yellow", "empty": "red"}
    for r in status.get("proxies", []):
        mode = r.get("mode")
        row: list[RenderableType] = [
            Text(str(r["id"])),
            Text(str(mode), style=modes.get(str(mode), ""))
            if mode
            else Text(str(r.get("error") or "-"), style="red"),
            _cell(r.get("revision")),
            _cell(r.get("connected_cp")),
            _cell(r.get("url")),
            _cell(bool(r.get("reachable"))),
        ]
        if local:
            row.append(_process(r.get("process")))
        table.add_row(*row)
    return table


def status_view(status: Mapping[str, Any]) -> Group:
    """The whole `gwadm status` screen: nodes, then proxies (when any), then upstream processes."""
    parts: list[RenderableType] = [nodes_table(status)]
    if status.get("proxies"):
        parts.append(proxies_table(status))
    ups = status.get("upstreams") or []
    if ups:
        line = Text("upstreams: ", style="dim")
        for i, u in enumerate(ups):
            line.append(("  " if i else "") + f"{u['id']} {u.get('url')} ")
            line.append_text(_process(u.get("process")))
        parts.append(line)
    return Group(*parts)


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
