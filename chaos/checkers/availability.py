"""Admin-API availability figures: how long writes stalled, outcome counts, write latency.

Why figures only: a CP that refuses writes during a partition is doing its job (it is CP), so
unavailability is a number for the report and for comparing runs, not a pass/fail property. The one
failure is a run with no acknowledged write at all, where every other checker passes vacuously.
"""

from __future__ import annotations

from chaos.history import History, HistoryError, ops

from .result import CheckResult, Problems, percentile

__all__ = ["check_availability"]

NAME = "availability"
_MUTATIONS = frozenset({"write", "cas", "add"})


def check_availability(history: History) -> CheckResult:
    """Longest gap between consecutive ok write/cas/add completions, counts per f, write p50/p99."""
    try:
        all_ops = ops(history)
    except HistoryError as exc:
        return CheckResult(NAME, False, {}, [f"history unusable: {exc}"])
    problems = Problems()
    figures: dict[str, float | int | str] = {}
    for op in all_ops:
        k = f"{op.f}.{op.status}"
        figures[k] = int(figures.get(k, 0)) + 1
    done = [(op.invoke_time, op.complete_time) for op in all_ops
            if op.f in _MUTATIONS and op.status == "ok" and op.complete_time is not None]  # fmt: skip
    ends = sorted(end for _, end in done)
    gap, gap_from = 0.0, 0.0
    for a, b in zip(ends, ends[1:], strict=False):
        if b - a > gap:
            gap, gap_from = b - a, a
    latencies = sorted(end - start for start, end in done)
    figures.update({
        "ok_writes": len(done), "max_write_gap_s": round(gap, 3), "max_write_gap_from": round(gap_from, 3),
        "write_p50_s": round(percentile(latencies, 50), 4), "write_p99_s": round(percentile(latencies, 99), 4),
    })  # fmt: skip
    if not done:
        problems.add("no write/cas/add was acknowledged in the whole run: the other checks pass vacuously")
    return problems.result(NAME, figures)
