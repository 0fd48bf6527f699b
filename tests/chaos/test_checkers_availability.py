"""availability figures, and run_all: every checker once, parameters routed, crashes contained."""

from __future__ import annotations

from typing import Any

import pytest

import chaos.checkers as checkers
from chaos.checkers import CheckResult, check_availability, run_all

History = list[dict[str, Any]]


def op(p: int, f: str, key: str, value: Any, t0: float, t1: float, status: str = "ok") -> History:
    return [{"type": "invoke", "process": p, "f": f, "key": key, "value": value, "time": t0, "node": "n1"},
            {"type": status, "process": p, "f": f, "key": key, "value": value, "time": t1, "node": "n1"}]  # fmt: skip


def test_availability_figures() -> None:
    h = (op(0, "write", "k0", "a", 0.0, 0.1) + op(1, "add", "w-1-1", "x", 0.5, 0.7)
         + op(0, "cas", "k0", ["a", "b"], 1.0, 1.3, "fail") + op(2, "write", "k0", "c", 1.0, 2.0, "info")
         + op(0, "read", "k0", None, 1.5, 1.6) + op(1, "cas", "k0", ["a", "d"], 4.0, 4.7))  # fmt: skip
    result = check_availability(h)
    assert result.ok, result.problems
    f = result.figures
    counts = [f[k] for k in ("write.ok", "write.info", "cas.fail", "cas.ok", "add.ok", "read.ok")]
    assert counts == [1] * 6
    assert f["ok_writes"] == 3 and f["max_write_gap_s"] == 4.0 and f["max_write_gap_from"] == 0.7
    assert f["write_p50_s"] == pytest.approx(0.2) and f["write_p99_s"] == pytest.approx(0.7)


def test_availability_fails_only_without_any_acknowledged_write() -> None:
    h = op(0, "write", "k0", "a", 0.0, 0.1, "info") + op(1, "read", "k0", None, 0.0, 0.1)
    result = check_availability(h)
    assert not result.ok and "no write/cas/add was acknowledged" in result.problems[0]


def good_history() -> History:
    h = (
        op(0, "write", "k0", "a", 0.0, 0.1)
        + op(1, "add", "w-1-1", "x", 0.2, 0.3)
        + op(0, "read", "k0", None, 0.4, 0.5)
    )
    h[-1]["value"] = "a"
    h += [
        {"type": "node_status", "time": 0.6, "node": "n1", "reachable": True, "role": "leader", "term": 1,
         "leader": "n1", "revision": 2, "hash": "h2", "has_quorum": True},
        {"type": "proxy_status", "time": 0.7, "proxy": "p1", "reachable": True, "mode": "synced", "revision": 2,
         "hash": "h2"},
        {"type": "proxy_request", "time": 0.8, "proxy": "p1", "route": "/r", "status": 200, "ok": True,
         "latency": 0.001, "error": None},
        {"type": "final", "time": 1.0, "heal_time": 0.5, "committed_revision": 2, "committed_hash": "h2",
         "nodes": {"n1": {"revision": 2, "hash": "h2", "present": ["w-1-1"]}}},
    ]  # fmt: skip
    return h


def test_run_all_runs_every_checker_in_order_on_a_good_history() -> None:
    results = run_all(good_history())
    assert [r.name for r in results] == list(checkers.CHECKERS)
    assert all(r.ok for r in results), [(r.name, r.problems) for r in results if not r.ok]
    assert results[0].summary() == "linearizable: PASS"
    assert results[0].to_dict()["figures"]["ops"] == 2


def test_run_all_routes_parameters_to_the_checkers_that_declare_them() -> None:
    results = {r.name: r for r in run_all(good_history(), min_success_rate=1.0, max_states=1)}
    assert not results["linearizable"].ok and "UNKNOWN" in results["linearizable"].problems[0]
    assert results["proxy_availability"].ok


def test_run_all_rejects_unknown_parameters() -> None:
    with pytest.raises(TypeError, match="unknown checker parameter.*min_sucess_rate"):
        run_all(good_history(), min_sucess_rate=0.5)


def test_run_all_turns_a_crashing_checker_into_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(history: Any) -> CheckResult:
        raise KeyError("revision")

    monkeypatch.setitem(checkers.CHECKERS, "convergence", boom)
    results = {r.name: r for r in run_all(good_history())}
    assert not results["convergence"].ok and results["convergence"].problems == [
        "checker crashed: KeyError: 'revision'"
    ]
    assert results["single_leader"].ok


def test_run_all_on_an_empty_history_fails_loudly_everywhere_it_should() -> None:
    failed = {r.name for r in run_all([]) if not r.ok}
    assert failed == {
        "no_lost_writes",
        "convergence",
        "proxies",
        "proxy_availability",
        "single_leader",
        "availability",
    }
