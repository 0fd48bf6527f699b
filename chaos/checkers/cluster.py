"""Control-plane safety and liveness seen from the outside: convergence and one leader per term.

Why from samples and the final record rather than from the nodes' logs: the checkers must hold for
whatever the monitor could observe over HTTP, the same view an operator has; they need no access to
Raft internals and keep working if the storage format changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.history import History, final_record, records

from .result import CheckResult, Problems

__all__ = ["check_convergence", "check_single_leader"]


def check_convergence(history: History) -> CheckResult:
    """All nodes end at the committed revision and hash; no revision ever had two hashes.

    Figure ``convergence_s``: the first time after ``heal_time`` at which the latest post-heal
    samples of all nodes agree on revision and hash ("not observed" if that never happened).
    """
    name = "convergence"
    final = final_record(history)
    if final is None:
        return CheckResult(name, False, {}, ["no final record: the run did not reach the end-of-run check"])
    problems = Problems()
    nodes: Mapping[str, Any] = final["nodes"]
    c_rev, c_hash = final["committed_revision"], final["committed_hash"]
    if not nodes:
        problems.add("final record lists no nodes")
    groups: dict[tuple[Any, Any], list[str]] = {}
    for node, info in sorted(nodes.items()):
        rev, h = info.get("revision"), info.get("hash")
        if rev is None or h is None:
            problems.add(f"node {node} reported no revision/hash at the end (unreachable or not ready)")
            continue
        groups.setdefault((rev, h), []).append(node)
        if (rev, h) != (c_rev, c_hash):
            problems.add(f"node {node} ended at revision {rev} hash {_short(h)}, "
                         f"committed is revision {c_rev} hash {_short(c_hash)}")  # fmt: skip
    if len(groups) > 1:
        parts = "; ".join(
            f"{', '.join(ns)} at revision {r} hash {_short(h)}" for (r, h), ns in sorted(groups.items())
        )
        problems.add(f"nodes disagree at the end: {parts}")

    samples = sorted(records(history, "node_status"), key=lambda r: float(r["time"]))
    seen: dict[Any, tuple[Any, str, float]] = {}  # revision -> (hash, who, when), across samples and final
    for s in samples:
        if s.get("revision") is not None and s.get("hash") is not None:
            _same_hash(seen, s["revision"], s["hash"], f"node {s['node']}", float(s["time"]), problems)
    for node, info in nodes.items():
        if info.get("revision") is not None and info.get("hash") is not None:
            _same_hash(
                seen, info["revision"], info["hash"], f"node {node} (final)", float(final["time"]), problems
            )

    heal = float(final["heal_time"])
    figures: dict[str, float | int | str] = {"nodes": len(nodes), "committed_revision": c_rev,
                                              "convergence_s": _convergence_time(samples, set(nodes), heal)}  # fmt: skip
    return problems.result(name, figures)


def _same_hash(seen: dict[Any, tuple[Any, str, float]], rev: Any, h: Any, who: str, t: float,
               problems: Problems) -> None:  # fmt: skip
    """A revision names one config: the same revision with two hashes means the replicas diverged."""
    if rev not in seen:
        seen[rev] = (h, who, t)
    elif seen[rev][0] != h:
        first_h, first_who, first_t = seen[rev]
        problems.add(f"revision {rev} has two hashes: {_short(first_h)} on {first_who} at t={first_t:.3f}, "
                     f"{_short(h)} on {who} at t={t:.3f}")  # fmt: skip


def _convergence_time(samples: list[Mapping[str, Any]], nodes: set[str], heal: float) -> float | str:
    if not nodes:
        return "not observed"
    latest: dict[str, tuple[Any, Any] | None] = {}
    for s in samples:
        t = float(s["time"])
        if t < heal or s["node"] not in nodes:
            continue
        ok = s.get("reachable") and s.get("revision") is not None and s.get("hash") is not None
        latest[s["node"]] = (s["revision"], s["hash"]) if ok else None
        if len(latest) == len(nodes) and None not in latest.values() and len(set(latest.values())) == 1:
            return round(t - heal, 3)
    return "not observed"


def check_single_leader(history: History) -> CheckResult:
    """No two nodes ever claim to lead the same term (Raft's election safety), from node_status samples."""
    name = "single_leader"
    samples = records(history, "node_status")
    if not samples:
        return CheckResult(name, False, {}, ["no node_status samples: nothing to check"])
    problems = Problems()
    claims: dict[int, dict[str, float]] = {}  # term -> node -> first time it claimed leadership
    terms: set[int] = set()
    for s in samples:
        term = s.get("term")
        if term is None:
            continue
        terms.add(term)
        if s.get("role") == "leader" and s.get("reachable", True):
            claims.setdefault(term, {}).setdefault(s["node"], float(s["time"]))
    for term, who in sorted(claims.items()):
        if len(who) > 1:
            parts = ", ".join(f"{n} (from t={t:.3f})" for n, t in sorted(who.items(), key=lambda kv: kv[1]))
            problems.add(f"split brain: term {term} has {len(who)} leaders: {parts}")
    leaders = sum(len(who) for who in claims.values())
    figures: dict[str, float | int | str] = {
        "terms_seen": len(terms), "max_term": max(terms, default=0), "leaders": leaders,
        "leader_changes": max(0, leaders - 1),
    }  # fmt: skip
    return problems.result(name, figures)


def _short(h: Any) -> str:
    return str(h)[:12] if h is not None else "None"
