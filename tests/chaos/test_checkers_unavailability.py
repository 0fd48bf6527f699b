"""write_unavailability: per fault window, the longest time no write/cas/add succeeded on any client."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checkers import check_write_unavailability, run_all
from chaos.checkers.unavailability import TARGETS, write_gaps

History = list[dict[str, Any]]


def op(p: int, f: str, t0: float, t1: float, status: str = "ok", error: str | None = None) -> History:
    done: dict[str, Any] = {"type": status, "process": p, "f": f, "key": "k0", "value": "v", "time": t1, "node": "n1"}
    if error:
        done["error"] = error
    return [{"type": "invoke", "process": p, "f": f, "key": "k0", "value": "v", "time": t0, "node": "n1"}, done]


def fault(name: str, start: float, heal: float, injected: float | None = None) -> History:
    begin: dict[str, Any] = {"type": "nemesis", "phase": "start", "fault": name, "detail": {}, "time": start}
    if injected is not None:
        begin["injected_at"] = injected
    return [begin, {"type": "nemesis", "phase": "heal", "fault": name, "detail": {}, "time": heal}]


def by_time(h: History) -> History:
    return sorted(h, key=lambda r: r["time"])


def test_the_gap_runs_from_the_injection_to_the_first_write_invoked_after_it() -> None:
    h = by_time(
        op(0, "write", 0.0, 0.01) + op(1, "add", 0.9, 0.95)
        + fault("kill-leader", 1.4, 3.0, injected=1.0)
        + op(0, "write", 0.99, 1.2)  # in flight at the kill: proves nothing
        + op(1, "cas", 1.05, 1.6, "info", "TimeoutError: timed out")
        + op(2, "write", 1.1, 1.45)  # the first write invoked after the kill that succeeded
        + op(3, "add", 1.5, 1.55)
    )  # fmt: skip
    result = check_write_unavailability(h)
    assert result.ok, result.problems
    assert result.figures["kill-leader.max_s"] == pytest.approx(0.45)
    assert result.figures["kill-leader.windows"] == 1 and result.figures["kill-leader.target_s"] == 0.6


def test_a_gap_over_the_target_fails_and_names_the_window() -> None:
    h = by_time(
        op(0, "write", 0.0, 0.01)
        + fault("isolate-leader", 2.4, 5.0, injected=2.0)
        + op(0, "write", 2.1, 3.6, "info", "TimeoutError: timed out")
        + op(1, "add", 2.2, 3.5)
    )  # fmt: skip
    result = check_write_unavailability(h)
    assert not result.ok
    assert result.figures["isolate-leader.max_s"] == pytest.approx(1.5)
    assert "isolate-leader at t=2.400: no write succeeded for 1.500s (target 1.2s)" in result.problems[0]


def test_without_injected_at_the_first_failure_after_the_last_success_starts_the_gap() -> None:
    # An old history: the start record was written after the partition was verified (0.5 s late).
    h = by_time(
        op(0, "write", 0.0, 1.0) + op(1, "write", 1.02, 1.6, "fail", "HTTP 503 no_quorum: no leader")
        + fault("pause-leader", 1.5, 4.0) + op(2, "add", 1.55, 1.8)
    )  # fmt: skip
    [gap] = write_gaps(h)
    assert gap.begin == pytest.approx(1.02) and gap.end == pytest.approx(1.8)
    assert not check_write_unavailability(h).ok  # 0.78 s > 0.6 s


def test_a_cas_precondition_failure_is_an_answer_not_unavailability() -> None:
    h = by_time(
        op(0, "write", 0.0, 1.0) + op(1, "cas", 1.01, 1.02, "fail", "HTTP 409 conflict: mod_revision")
        + fault("kill-leader", 1.5, 4.0) + op(2, "add", 1.55, 1.8)
    )  # fmt: skip
    [gap] = write_gaps(h)
    assert gap.begin == pytest.approx(1.5) and gap.seconds == pytest.approx(0.3)


def test_no_write_after_the_fault_counts_to_the_end_of_the_history() -> None:
    h = by_time(op(0, "write", 0.0, 0.1) + fault("bridge", 1.0, 3.0, injected=0.8)
                + [{"type": "node_status", "time": 9.8, "node": "n1", "reachable": True}])  # fmt: skip
    result = check_write_unavailability(h)
    assert not result.ok and result.figures["bridge.max_s"] == pytest.approx(9.0)
    assert "none succeeded until the history ended" in result.problems[0]


def test_faults_without_a_target_are_reported_only_and_each_fault_keeps_its_worst_window() -> None:
    h = by_time(
        op(0, "write", 0.0, 0.1)
        + fault("kill-all", 1.0, 3.0, injected=1.0) + op(0, "write", 4.0, 9.0)
        + fault("kill-leader", 10.0, 12.0, injected=10.0) + op(1, "write", 10.1, 10.3)
        + fault("kill-leader", 14.0, 16.0, injected=14.0) + op(1, "write", 14.1, 14.5)
    )  # fmt: skip
    result = check_write_unavailability(h)
    assert result.ok, result.problems
    f = result.figures
    assert f["kill-all.max_s"] == pytest.approx(8.0) and "kill-all.target_s" not in f
    assert f["kill-leader.max_s"] == pytest.approx(0.5) and f["kill-leader.windows"] == 2
    assert "kill-all" not in TARGETS
    assert not check_write_unavailability(h, targets={"kill-all": 5.0}).ok


def test_run_all_includes_it_and_an_unusable_history_fails() -> None:
    names = [r.name for r in run_all(op(0, "write", 0.0, 0.1))]
    assert "write_unavailability" in names
    broken = [{"type": "ok", "process": 0, "f": "write", "key": "k0", "time": 1.0}]
    result = check_write_unavailability(broken)
    assert not result.ok and "history unusable" in result.problems[0]


def test_targets_hold_only_in_a_run_of_that_nemesis() -> None:
    h = by_time(op(0, "write", 0.0, 0.1) + fault("kill-leader", 1.0, 3.0, injected=1.0) + op(1, "write", 1.1, 2.0))
    assert not check_write_unavailability(h, scenario="kill-leader").ok
    for scenario in ("mixed", "discovery"):
        result = check_write_unavailability(h, scenario=scenario)
        assert result.ok and result.figures["kill-leader.max_s"] == pytest.approx(1.0)
        assert "kill-leader.target_s" not in result.figures
