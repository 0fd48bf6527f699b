"""Service-registration expiry under faults (the ``discovery`` scenario, chaos/discovery.py).

Two properties, from the workload's linearizable views of the registrations:

1. No live instance ever expired: an instance that never stopped heartbeating is present in every
   view taken after it registered, and no heartbeat of it found its registration gone.
2. Every stopped instance expired in time: it is absent from the last view, and no view showed it
   present later than ``ttl + slack`` seconds after its bound, where the bound is its last
   heartbeat or, when leadership changed while it was silent, that change (a new leader grants every
   registration a fresh full TTL, docs/discovery.md).

A run without discovery records passes (the workload only runs in the ``discovery`` scenario).
"""

from __future__ import annotations

from typing import Any

from chaos.history import History, records

from .result import CheckResult, Problems

__all__ = ["check_discovery"]

SLACK = 2.0


def _leader_changes(history: History) -> list[float]:
    """Times at which a node first reported leading (with quorum) in a term not seen leading before."""
    seen: set[Any] = set()
    out = []
    for r in records(history, "node_status"):
        if r.get("role") == "leader" and r.get("has_quorum") and r.get("term") not in seen:
            seen.add(r.get("term"))
            out.append(float(r["time"]))
    return out


def check_discovery(history: History, *, discovery_slack: float = SLACK) -> CheckResult:
    name = "discovery"
    configs = records(history, "disco_config")
    if not configs:
        return CheckResult(name, True, {"skipped": "no discovery workload in this scenario"})
    ttl = float(configs[0]["ttl"])
    problems = Problems()
    registered = {int(r["instance"]): float(r["time"]) for r in records(history, "disco_registered")}
    stops = {int(r["instance"]): r for r in records(history, "disco_stop")}
    views = records(history, "disco_view")
    if not views:
        return CheckResult(name, False, {}, ["no view of the registrations was ever taken"])
    elections = _leader_changes(history)
    for r in records(history, "disco_missing"):
        i = int(r["instance"])
        if i not in stops or float(r["time"]) < float(stops[i]["time"]):
            problems.add(f"t={r['time']:.2f}s instance {i} heartbeating, but node {r['node']} had no registration")
    live_missing: dict[int, float] = {}
    last_present: dict[int, float] = {}
    for v in views:
        # The view reflects one moment between ``invoked`` and ``time``: it proves presence at or
        # after ``invoked``, and absence at or before ``time``.
        t, invoked = float(v["time"]), float(v.get("invoked", v["time"]))
        present = set(v["present"])
        for i in present:
            last_present[i] = max(last_present.get(i, invoked), invoked)
        for i, since in registered.items():
            alive = i not in stops or t < float(stops[i]["time"])
            if alive and invoked > since and i not in present and i not in live_missing:
                live_missing[i] = t
                problems.add(f"t={t:.2f}s live instance {i} missing from the view of node {v['node']}")
    final_present = set(views[-1]["present"])
    worst = 0.0
    for i, stop in sorted(stops.items()):
        last_beat = stop.get("last_beat")
        bound = float(last_beat) if last_beat is not None else float(stop["time"])
        gone_at = last_present.get(i, bound)
        later = [e for e in elections if bound < e <= gone_at]
        if later:
            bound = max(later)
        late = gone_at - bound - ttl
        worst = max(worst, late + ttl)
        if i in final_present:
            problems.add(f"stopped instance {i} (last heartbeat t={last_beat}) never expired "
                         f"(last view at t={float(views[-1]['time']):.2f}s)")
        elif late > discovery_slack:
            problems.add(f"stopped instance {i}: still registered at t={gone_at:.2f}s, {gone_at - bound:.2f}s after "
                         f"its last heartbeat/leader change at t={bound:.2f}s (ttl {ttl:g}s + {discovery_slack:g}s)")
    figures: dict[str, float | int | str] = {
        "instances": len(registered), "stopped": len(stops), "views": len(views), "leader_changes": len(elections),
        "live_expired": len(live_missing), "worst_expiry_s": round(worst, 2), "ttl_s": ttl,
    }
    if len(registered) == 0:
        problems.add("no instance ever registered")
    return problems.result(name, figures)
