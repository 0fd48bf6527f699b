"""Pure pieces of the live status view's model: what the server reports in, view fields out.

The server tells what the view used to guess or fetch at length: ``GET /v1/status`` has ``started_at``
(uptime without PIDs, so in --endpoint mode too) and ``counts`` per kind (no full ``/v1/config``
export per refresh); fleet entries (``/v1/proxies/local``) have ``status_address`` (where a proxy's
``/metrics`` is, so remote proxies get traffic figures) and ``last_ack_at`` (when it last acked a
config). Older servers omit these fields: every function here then answers None, and the caller
falls back to what it did before. No IO, no clocks: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cli.client import KINDS
from cli.metrics_scrape import Rates

_UNSPECIFIED = {"", "0.0.0.0", "::", "[::]"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def seconds_since(t: Any, now: float) -> float | None:
    """Seconds from wall time ``t`` to ``now`` (never negative: clocks of two hosts differ), or None."""
    at = _number(t)
    return None if at is None else round(max(0.0, now - at), 1)


def node_uptime(started_at: Any, now: float, process: float | None, seen_since: float) -> tuple[float, bool]:
    """``(seconds up, observed by this view only)`` of a node that answers.

    The node's own ``started_at`` first; else the process uptime (a local cluster knows PIDs);
    else how long this view has seen it up (``seen_since``), which the view marks as a lower bound.
    """
    up = seconds_since(started_at, now)
    if up is not None:
        return up, False
    if process is not None:
        return round(process, 1), False
    return round(max(0.0, now - seen_since), 1), True


def config_from_status(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"revision", "hash", "counts"}`` from a node's ``/v1/status``; None when it has no counts.

    Kinds come in the order of ``KINDS`` (then any the CLI does not know yet, by name).
    """
    counts = status.get("counts") if status else None
    if status is None or not isinstance(counts, Mapping):
        return None
    valid = {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
    if not valid:
        return None
    order = [k for k in KINDS if k in valid] + sorted(k for k in valid if k not in KINDS)
    return {
        "revision": status.get("revision"),
        "hash": status.get("hash"),
        "counts": {k: valid[k] for k in order},
    }


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def metrics_url(entry: Mapping[str, Any]) -> str | None:
    """``http://host:port`` of a fleet entry's status server (``/metrics`` below it), or None.

    A proxy listening on every interface reports ``0.0.0.0:port``: the host the control plane saw
    it connect from (``address``) is used instead.
    """
    raw = entry.get("status_address")
    if not isinstance(raw, str) or not raw.strip():
        return None
    host, _, port = raw.strip().rpartition(":")
    if not port.isdigit():
        return None
    seen = str(entry.get("address") or "").strip()
    if host in _UNSPECIFIED and seen:
        host = seen
    return f"http://{_bracket(host or '127.0.0.1')}:{port}"


def fleet_metrics_urls(fleet: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Proxy id -> metrics base URL, for the fleet proxies that report a status address."""
    urls = {pid: metrics_url(entry) for pid, entry in fleet.items()}
    return {pid: url for pid, url in urls.items() if url is not None}


def proxy_rows(
    proxies: Sequence[Mapping[str, Any]],
    fleet: Mapping[str, Mapping[str, Any]],
    traffic: Mapping[str, Rates | None],
    committed: int | None,
    node_by_url: Mapping[str, str],
    now: float,
) -> list[dict[str, Any]]:
    """One row per proxy: local ``probe_proxy`` rows joined with the control plane's fleet entries.

    ``since_ack``: seconds since the proxy last acked a config (fleet ``last_ack_at``); ``sync_age``
    (the "last sync" column): what the proxy itself says when its /status answered, else ``since_ack``.
    """
    local = {str(p["id"]): p for p in proxies}
    out: list[dict[str, Any]] = []
    for pid in sorted(set(local) | set(fleet)):
        mine, theirs = local.get(pid), fleet.get(pid) or {}
        row: dict[str, Any] = dict(mine) if mine else {"id": pid, "url": theirs.get("address")}
        if mine is None:  # known from the CP registries only: connected to a node = reachable
            row.update(
                mode=theirs.get("mode"),
                revision=theirs.get("revision"),
                reachable=bool(theirs.get("connected")),
                status_address=theirs.get("status_address"),
            )
        cp = str(row.get("connected_cp") or "").rstrip("/")
        row["node"] = theirs.get("node") if theirs.get("connected") else node_by_url.get(cp, cp or None)
        row.setdefault("connected_cp", row["node"])
        row["last_error"] = theirs.get("last_error") or row.get("last_error")
        rev = row.get("revision")
        row["lag"] = max(0, committed - int(rev)) if committed is not None and isinstance(rev, int) else None
        row["last_ack_at"] = theirs.get("last_ack_at")
        row["sync"] = theirs.get("sync") or row.get("sync")  # push, pull or hybrid
        row["via"] = theirs.get("via")  # the relay it syncs through, None when direct
        row["since_ack"] = seconds_since(theirs.get("last_ack_at"), now)
        own = _number(row.get("seconds_since_sync")) if mine and mine.get("reachable") else None
        row["sync_age"] = own if own is not None else row["since_ack"]
        got = traffic.get(pid)
        row.update(req_s=got.requests_per_s if got else None, err_s=got.errors_per_s if got else None,
                   p99=got.p99 if got else None)  # fmt: skip
        out.append(row)
    return out
