"""No zombie writes: a write the API answered with an error must not take effect after that answer.

The linearizability checker lets an ``info`` write (outcome unknown) take effect at any time after
its invocation, forever; that hides the bug this checker is for: a ``PUT`` answered ``503`` whose
command stayed queued (or buffered on a cut link) and was applied after the heal, over writes that
were acknowledged later (issue 11, item 2).

The rule, per register key, with written values unique per write: take a write ``W`` (value ``V``)
that the API *answered* with an error (``fail``, or ``info`` whose error is an HTTP answer; a
client-side timeout is not an answer) at time ``ta``. If an acknowledged operation ``O`` invoked
after ``ta`` established a different value (an ok write/cas of another value, or an ok read that
returned another value), and a read invoked after ``O`` completed returns ``V``, then ``V`` took
effect after its error answer: a violation. Values seen only before ``O`` are not judged (the
write may have taken effect before its answer, which linearizability already allows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.history import OP_TYPES, History, HistoryError

from .result import CheckResult, Problems

__all__ = ["check_no_zombie_writes"]

NAME = "no_zombie_writes"
_WRITES = ("write", "cas")


def _written(f: str, value: Any) -> Any:
    return value[1] if f == "cas" and isinstance(value, list) and len(value) == 2 else value


def _pairs(history: History) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(invoke, completion) records per process, in history order; raises HistoryError if unpaired."""
    pending: dict[Any, Mapping[str, Any]] = {}
    out: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for i, rec in enumerate(history):
        if rec.get("type") not in OP_TYPES:
            continue
        proc = rec.get("process")
        if rec["type"] == "invoke":
            pending[proc] = rec
            continue
        inv = pending.pop(proc, None)
        if inv is None:
            raise HistoryError(f"record {i}: {rec['type']} of process {proc} without an invoke")
        out.append((inv, rec))
    return out


def check_no_zombie_writes(history: History) -> CheckResult:
    try:
        pairs = _pairs(history)
    except HistoryError as exc:
        return CheckResult(NAME, False, {}, [f"history unusable: {exc}"])
    errored: dict[str, list[tuple[Any, float, Mapping[str, Any]]]] = {}
    established: dict[str, list[tuple[float, float, Any]]] = {}  # key -> (invoke, complete, value)
    reads: dict[str, list[tuple[float, Any, Mapping[str, Any]]]] = {}  # key -> (invoke, value, record)
    for inv, done in pairs:
        f, key = inv.get("f"), str(inv.get("key"))
        if f in _WRITES:
            value = _written(str(f), inv.get("value"))
            answered = done["type"] == "fail" or (
                done["type"] == "info" and str(done.get("error") or "").startswith("HTTP ")
            )
            if done["type"] == "ok":
                established.setdefault(key, []).append((float(inv["time"]), float(done["time"]), value))
            elif answered:
                errored.setdefault(key, []).append((value, float(done["time"]), done))
        elif f == "read" and done["type"] == "ok":
            value = done.get("value")
            established.setdefault(key, []).append((float(inv["time"]), float(done["time"]), value))
            reads.setdefault(key, []).append((float(inv["time"]), value, done))
    problems = Problems()
    zombies = 0
    checked = sum(len(v) for v in errored.values())
    for key, writes in sorted(errored.items()):
        for value, answered_at, done in writes:
            after = [c for i, c, v in established.get(key, []) if i > answered_at and v != value]
            if not after:
                continue
            other_done = min(after)
            seen = next((r for r in sorted(reads.get(key, []), key=lambda r: r[0])
                         if r[0] > other_done and r[1] == value), None)  # fmt: skip
            if seen is not None:
                zombies += 1
                problems.add(
                    f"{key}: write of {value!r} answered {done['type']} ({done.get('error')}) at t={answered_at:.3f}, "
                    f"another value was acknowledged by t={other_done:.3f}, and a read invoked at t={seen[0]:.3f} "
                    f"returned {value!r} again"
                )
    return problems.result(NAME, {"errored_writes": checked, "zombies": zombies})
