"""The data plane under control-plane faults: proxies stay monotonic, converge, and keep serving.

Why these properties: a proxy that goes back to an older config would resurrect deleted routes or
credentials; one that never catches up after a heal serves stale config indefinitely; and the whole
point of the CP/DP split is that proxies keep serving from their last config while the CP is down.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from chaos.history import History, final_record, nemesis_windows, records

from .result import CheckResult, Problems

__all__ = ["check_proxies", "check_proxy_availability"]

_MUTATIONS = frozenset({"write", "cas", "add"})


def check_proxies(
    history: History, *, proxy_converge_within: float = 5.0, proxies: Collection[str] | None = None
) -> CheckResult:
    """Per proxy: revision never decreases, never exceeds the committed one, matches the nodes' hash
    at the same revision, and reaches the final committed revision+hash within the bound after the heal.

    The bound runs from the later of ``heal_time`` and the last write completion (a write still landing
    after the heal moves the target). ``proxies``: the ids expected to report; by default those seen.
    Pass ``proxies=()`` for a run without proxies -- otherwise no samples at all is a failure.
    """
    name = "proxies"
    samples = sorted(records(history, "proxy_status"), key=lambda r: float(r["time"]))
    expected = set(proxies) if proxies is not None else {str(s["proxy"]) for s in samples}
    if not expected:
        ok = proxies is not None
        return CheckResult(name, ok, {"proxies": 0}, [] if ok else ["no proxy_status samples in the history"])
    problems = Problems()
    final = final_record(history)
    if final is None:
        problems.add("no final record: cannot check convergence after the heal")
    node_hash = {s["revision"]: s["hash"] for s in records(history, "node_status")
                 if s.get("revision") is not None and s.get("hash") is not None}  # fmt: skip
    if final is not None:
        node_hash[final["committed_revision"]] = final["committed_hash"]
    figures: dict[str, float | int | str] = {"proxies": len(expected)}
    worst = 0.0
    for proxy in sorted(expected):
        mine = [s for s in samples if s["proxy"] == proxy]
        if not mine:
            problems.add(f"proxy {proxy}: no status samples")
            continue
        _monotonic(proxy, mine, node_hash, final, problems)
        if final is not None:
            took = _converged(proxy, mine, history, final, proxy_converge_within, problems)
            figures[f"{proxy}.converge_s"] = took if took is not None else "never"
            worst = max(worst, took if took is not None else float("inf"))
    if final is not None:
        figures["max_converge_s"] = round(worst, 3) if worst != float("inf") else "never"
    return problems.result(name, figures)


def _monotonic(proxy: str, mine: list[Mapping[str, Any]], node_hash: Mapping[Any, Any],
               final: Mapping[str, Any] | None, problems: Problems) -> None:  # fmt: skip
    prev: Mapping[str, Any] | None = None
    for s in mine:
        rev = s.get("revision")
        if rev is None:  # unreachable, or empty: nothing claimed
            continue
        if prev is not None and rev < prev["revision"]:
            problems.add(f"proxy {proxy}: revision went back from {prev['revision']} at t={float(prev['time']):.3f} "
                         f"({prev.get('mode')}) to {rev} at t={float(s['time']):.3f} ({s.get('mode')})")  # fmt: skip
        if final is not None and rev > final["committed_revision"]:
            problems.add(f"proxy {proxy}: revision {rev} at t={float(s['time']):.3f} is beyond the final committed "
                         f"revision {final['committed_revision']} (uncommitted config reached a proxy?)")  # fmt: skip
        h = s.get("hash")
        if h is not None and rev in node_hash and node_hash[rev] != h:
            problems.add(f"proxy {proxy}: revision {rev} at t={float(s['time']):.3f} has hash {str(h)[:12]}, "
                         f"the nodes had {str(node_hash[rev])[:12]}")  # fmt: skip
        prev = s


def _converged(proxy: str, mine: list[Mapping[str, Any]], history: History, final: Mapping[str, Any],
               within: float, problems: Problems) -> float | None:  # fmt: skip
    """Seconds from the reference time to the first sample at the committed revision+hash, or None."""
    last_write = max((float(r["time"]) for r in records(history, "ok", "info") if r.get("f") in _MUTATIONS),
                     default=0.0)  # fmt: skip
    ref = max(float(final["heal_time"]), last_write)
    target = (final["committed_revision"], final["committed_hash"])
    after = [s for s in mine if float(s["time"]) >= ref]
    hit = next(
        (s for s in after if s.get("reachable") and (s.get("revision"), s.get("hash")) == target), None
    )
    if hit is None:
        last = after[-1] if after else mine[-1]
        problems.add(f"proxy {proxy}: never reached the committed revision {target[0]} after t={ref:.3f}; last "
                     f"sample t={float(last['time']):.3f}: revision {last.get('revision')} mode {last.get('mode')}")  # fmt: skip
        return None
    took = round(float(hit["time"]) - ref, 3)
    if took > within:
        problems.add(f"proxy {proxy}: reached the committed revision {target[0]} {took:.3f}s after t={ref:.3f}, "
                     f"bound is {within}s")  # fmt: skip
    return took


def check_proxy_availability(
    history: History, *, min_success_rate: float = 0.999, min_requests: int = 1,
    exclude_faults: Collection[str] = (),
) -> CheckResult:  # fmt: skip
    """Share of proxy_request records that succeeded, overall and per nemesis fault.

    Requests during windows of ``exclude_faults`` (faults that take proxies down on purpose) count in
    the breakdown but not in the pass/fail rate. Fewer than ``min_requests`` requests is a failure
    (pass ``min_requests=0`` for a run without proxy traffic).
    """
    name = "proxy_availability"
    reqs = sorted(records(history, "proxy_request"), key=lambda r: float(r["time"]))
    windows = nemesis_windows(history)
    problems = Problems()
    figures: dict[str, float | int | str] = {}
    per_fault: dict[str, list[int]] = {}  # fault -> [total, failed]
    counted = failed = 0
    for r in reqs:
        t, failing = float(r["time"]), int(not r["ok"])
        faults = {w.fault for w in windows if w.contains(t)} or {"none"}
        for f in faults:
            tally = per_fault.setdefault(f, [0, 0])
            tally[0] += 1
            tally[1] += failing
        if not faults & set(exclude_faults):
            counted += 1
            failed += failing
    rate = (counted - failed) / counted if counted else 0.0
    longest, longest_at, longest_n = _longest_failure_run(reqs)
    figures.update({"total": len(reqs), "counted": counted, "failed": failed, "rate": round(rate, 6),
                    "longest_failure_s": longest, "longest_failure_requests": longest_n})  # fmt: skip
    for f, (total, n_bad) in sorted(per_fault.items()):
        figures[f"{f}.total"] = total
        figures[f"{f}.rate"] = round((total - n_bad) / total, 6)
    if counted < min_requests:
        problems.add(f"only {counted} proxy requests counted, at least {min_requests} required")
    elif counted and rate < min_success_rate:
        problems.add(f"proxy success rate {rate:.4%} ({failed} of {counted} failed) is below {min_success_rate:.4%}; "
                     f"longest outage {longest:.3f}s ({longest_n} requests) from t={longest_at:.3f}")  # fmt: skip
        for f, (total, n_bad) in sorted(per_fault.items(), key=lambda kv: -kv[1][1]):
            if n_bad:
                problems.add(f"  during {f}: {n_bad} of {total} failed")
        errors: dict[str, int] = {}
        for r in reqs:
            if not r["ok"]:
                key = f"{r.get('status')} {r.get('error') or ''}".strip()
                errors[key] = errors.get(key, 0) + 1
        for err, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
            problems.add(f"  {n} x {err}")
    return problems.result(name, figures)


def _longest_failure_run(reqs: list[Mapping[str, Any]]) -> tuple[float, float, int]:
    """(seconds from first to last failure of the longest consecutive run, its start, its length)."""
    best = (0.0, 0.0, 0)
    start: float | None = None
    n = 0
    for r in reqs:
        t = float(r["time"])
        if r["ok"]:
            start, n = None, 0
            continue
        if start is None:
            start = t
        n += 1
        if (t - start, n) > (best[0], best[2]):
            best = (round(t - start, 3), start, n)
    return best
