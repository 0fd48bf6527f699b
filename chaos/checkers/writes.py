"""No acknowledged write lost: every ``add`` that returned ok exists, at the end, on every node.

Why adds and not the registers: an ``add`` creates a unique key that nothing later overwrites or
deletes, so "is it still there" has a yes/no answer per node with no model. Register writes are
legitimately overwritten; whether their effects survived is the linearizability checker's job.
An ``info`` add (outcome unknown) may or may not be present; a ``fail`` add definitely did not
happen, so finding it is a violation too (an error reported to the client for a write that applied).
"""

from __future__ import annotations

from chaos.history import History, HistoryError, final_record, ops

from .result import CheckResult, Problems

__all__ = ["check_no_lost_writes"]

NAME = "no_lost_writes"


def check_no_lost_writes(history: History) -> CheckResult:
    """Compare the adds' outcomes with each node's ``present`` list in the ``final`` record."""
    final = final_record(history)
    if final is None:
        return CheckResult(NAME, False, {}, ["no final record: the run did not reach the end-of-run check"])
    try:
        adds = [op for op in ops(history) if op.f == "add"]
    except HistoryError as exc:
        return CheckResult(NAME, False, {}, [f"history unusable: {exc}"])
    problems = Problems()
    nodes = dict(final["nodes"])
    if not nodes:
        problems.add("final record lists no nodes")
    present: dict[str, set[str]] = {}
    for node, info in sorted(nodes.items()):
        keys = info.get("present") if isinstance(info, dict) else None
        if keys is None:
            problems.add(f"node {node} did not report its resources in the final record: cannot verify it")
        else:
            present[node] = set(keys)
    counts = {"ok": 0, "info": 0, "fail": 0}
    lost = info_present = fail_present = 0
    for op in adds:
        counts[op.status] += 1
        have = [n for n in present if op.key in present[n]]
        if op.status == "ok":
            missing = [n for n in present if op.key not in present[n]]
            if missing:
                lost += 1
                problems.add(f"acknowledged add {op.key} lost on {', '.join(missing)}: {op.describe()}")
        elif op.status == "info":
            info_present += bool(have)
        elif have:
            fail_present += 1
            problems.add(
                f"add {op.key} was reported failed but is present on {', '.join(have)}: {op.describe()}"
            )
    figures: dict[str, float | int | str] = {
        "adds_ok": counts["ok"], "adds_info": counts["info"], "adds_fail": counts["fail"],
        "info_adds_present": info_present, "lost": lost, "failed_adds_present": fail_present,
        "nodes": len(nodes),
    }  # fmt: skip
    return problems.result(NAME, figures)
