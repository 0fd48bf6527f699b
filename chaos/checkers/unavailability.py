"""Write unavailability per fault: how long no write/cas/add succeeded on any client, per nemesis window.

For each fault window the gap starts at the fault's injection (``injected_at`` of the nemesis
start record; older histories only have the record's ``time``, stamped after the partition was
verified, so the first unavailability failure since the last success before it counts as the start
instead) and ends at the first acknowledged write/cas/add *invoked* at or after that start: a
write already in flight may have committed before the fault and proves nothing. A fault after
which no write ever succeeds counts until the end of the history.

A definite 4xx (a CAS whose precondition failed) is an answer from a working cluster, not
unavailability: only refusals, timeouts, resets and 5xx mark the start.

Figures per fault name (``<fault>.max_s``, ``<fault>.windows``, ``<fault>.target_s``); the check
fails when a fault with a target in :data:`TARGETS` exceeds it in any window. Faults without a
target (kill-all, packet loss, ...) are only reported, and so is every fault of a run whose
``scenario`` is not that fault's own nemesis ("mixed", "discovery" with its 50 heartbeating
instances): the targets are per nemesis of the suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chaos.history import History, HistoryError, Op, end_time, nemesis_windows, ops

from .result import CheckResult, Figure, Problems

__all__ = ["TARGETS", "Gap", "check_write_unavailability", "write_gaps"]

NAME = "write_unavailability"
_MUTATIONS = frozenset({"write", "cas", "add"})

# The control plane's target (issue "control plane"): the longest time without an acknowledged
# write that one fault of this kind may cause, on 3 and 5 nodes.
TARGETS: dict[str, float] = {
    "kill-leader": 0.6,
    "pause-leader": 0.6,
    "isolate-leader": 1.2,
    "random-halves": 1.2,
    "majority-ring": 1.2,
    "bridge": 1.2,
}


@dataclass(frozen=True, slots=True)
class Gap:
    """One fault window's write unavailability: from ``begin`` to ``end`` (``recovered`` False: the
    history ended first)."""

    fault: str
    window_start: float
    begin: float
    end: float
    recovered: bool

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.begin)


def _unavailable(op: Op) -> bool:
    """A failed or unknown mutation that says "the cluster could not take it" (not a 4xx answer)."""
    return op.status != "ok" and not (op.error or "").startswith("HTTP 4")


def write_gaps(history: History) -> list[Gap]:
    """Every nemesis window's gap, in window order. Raises HistoryError on an unusable history."""
    mutations = [op for op in ops(history) if op.f in _MUTATIONS]
    oks = sorted((op for op in mutations if op.status == "ok" and op.complete_time is not None),
                 key=lambda op: op.invoke_time)  # fmt: skip
    last = end_time(history)
    gaps: list[Gap] = []
    previous_end = 0.0
    for window in nemesis_windows(history):
        start = window.injected if window.injected is not None else window.start
        done_before = [op.complete_time for op in oks if op.complete_time is not None and op.complete_time <= start]
        since = max([previous_end, *done_before])
        first_failure = min(
            (op.invoke_time for op in mutations if _unavailable(op) and since <= op.invoke_time < start),
            default=start,
        )
        begin = min(start, first_failure)
        ends = [op.complete_time for op in oks if op.invoke_time >= begin and op.complete_time is not None]
        recovered = bool(ends)
        gaps.append(Gap(window.fault, window.start, begin, min(ends) if ends else last, recovered))
        previous_end = window.end
    return gaps


def check_write_unavailability(
    history: History, *, scenario: str | None = None, targets: Mapping[str, float] | None = None
) -> CheckResult:
    """Per fault name the longest write gap; fails when a fault with a target exceeds it (in a run of
    that nemesis, when ``scenario`` is given)."""
    table = TARGETS if targets is None else targets
    if scenario is not None:
        table = {fault: t for fault, t in table.items() if fault == scenario}
    try:
        gaps = write_gaps(history)
    except HistoryError as exc:
        return CheckResult(NAME, False, {}, [f"history unusable: {exc}"])
    problems = Problems()
    figures: dict[str, Figure] = {"windows": len(gaps)}
    worst: dict[str, Gap] = {}
    for gap in gaps:
        figures[f"{gap.fault}.windows"] = int(figures.get(f"{gap.fault}.windows", 0)) + 1
        if gap.fault not in worst or gap.seconds > worst[gap.fault].seconds:
            worst[gap.fault] = gap
        target = table.get(gap.fault)
        if target is not None and gap.seconds > target:
            how = f"until t={gap.end:.3f}" if gap.recovered else "and none succeeded until the history ended"
            problems.add(f"{gap.fault} at t={gap.window_start:.3f}: no write succeeded for {gap.seconds:.3f}s "
                         f"(target {target}s), from t={gap.begin:.3f} {how}")  # fmt: skip
    for fault, gap in worst.items():
        figures[f"{fault}.max_s"] = round(gap.seconds, 3)
        if fault in table:
            figures[f"{fault}.target_s"] = table[fault]
    return problems.result(NAME, figures)
