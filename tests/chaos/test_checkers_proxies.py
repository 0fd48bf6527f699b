"""proxies and proxy_availability: monotonic, converged within the bound, serving through CP faults."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checkers import check_proxies, check_proxy_availability

History = list[dict[str, Any]]


def ps(proxy: str, t: float, rev: int | None, h: str | None = None, mode: str = "synced",
       reachable: bool = True) -> dict[str, Any]:  # fmt: skip
    return {"type": "proxy_status", "time": t, "proxy": proxy, "reachable": reachable, "mode": mode,
            "revision": rev, "hash": h if h is not None else (f"h{rev}" if rev is not None else None)}  # fmt: skip


def final(heal: float = 10.0, rev: int = 5) -> dict[str, Any]:
    return {"type": "final", "time": 30.0, "heal_time": heal, "committed_revision": rev, "committed_hash": f"h{rev}",
            "nodes": {"n1": {"revision": rev, "hash": f"h{rev}", "present": []}}}  # fmt: skip


def req(t: float, ok: bool = True, proxy: str = "p1") -> dict[str, Any]:
    return {"type": "proxy_request", "time": t, "proxy": proxy, "route": "/r", "status": 200 if ok else 502,
            "ok": ok, "latency": 0.001, "error": None if ok else "bad gateway"}  # fmt: skip


def nemesis(t: float, phase: str, fault: str) -> dict[str, Any]:
    return {"type": "nemesis", "time": t, "phase": phase, "fault": fault, "detail": {}}


def test_monotonic_and_converged_proxies_pass() -> None:
    h = [ps("p1", 1.0, 3), ps("p2", 1.0, 2), ps("p1", 5.0, 4, mode="cached"), ps("p1", 6.0, None, reachable=False),
         ps("p2", 11.0, 4), ps("p1", 11.5, 5), ps("p2", 12.0, 5), final()]  # fmt: skip
    result = check_proxies(h)
    assert result.ok, result.problems
    assert result.figures == {"proxies": 2, "p1.converge_s": 1.5, "p2.converge_s": 2.0, "max_converge_s": 2.0}


def test_revision_going_backwards_is_rejected() -> None:
    h = [ps("p1", 1.0, 4), ps("p1", 2.0, 3, mode="cached"), ps("p1", 11.0, 5), final()]
    result = check_proxies(h)
    assert not result.ok
    assert result.problems == [
        "proxy p1: revision went back from 4 at t=1.000 (synced) to 3 at t=2.000 (cached)"
    ]


def test_proxy_not_converged_within_the_bound_is_rejected() -> None:
    h = [ps("p1", 11.0, 4), ps("p1", 16.5, 5), final()]
    result = check_proxies(h)
    assert not result.ok and result.figures["p1.converge_s"] == 6.5
    assert "reached the committed revision 5 6.500s after t=10.000, bound is 5.0s" in result.problems[0]
    assert check_proxies(h, proxy_converge_within=7.0).ok


def test_proxy_that_never_converges_is_rejected() -> None:
    h = [ps("p1", 11.0, 4), ps("p1", 12.0, 4, mode="cached"), final()]
    result = check_proxies(h)
    assert (
        not result.ok
        and result.figures["p1.converge_s"] == "never"
        and result.figures["max_converge_s"] == "never"
    )
    assert (
        "never reached the committed revision 5" in result.problems[0] and "mode cached" in result.problems[0]
    )


def test_bound_starts_at_the_last_write_after_the_heal() -> None:
    late_write = [{"type": "invoke", "process": 0, "f": "write", "key": "k0", "value": "z", "time": 13.0},
                  {"type": "ok", "process": 0, "f": "write", "key": "k0", "value": "z", "time": 14.0}]  # fmt: skip
    h = [ps("p1", 11.0, 4), *late_write, ps("p1", 16.0, 5), final()]
    result = check_proxies(h)
    assert result.ok and result.figures["p1.converge_s"] == 2.0


def test_right_revision_with_wrong_hash_is_rejected() -> None:
    h = [ps("p1", 11.0, 5, h="bogus"), final()]
    result = check_proxies(h)
    assert not result.ok and any(
        "revision 5 at t=11.000 has hash bogus, the nodes had h5" in p for p in result.problems
    )


def test_revision_beyond_the_committed_one_is_rejected() -> None:
    h = [ps("p1", 11.0, 5), ps("p1", 12.0, 6), final()]
    result = check_proxies(h)
    assert not result.ok and "beyond the final committed revision 5" in result.problems[0]


def test_expected_proxy_without_samples_is_rejected() -> None:
    result = check_proxies([ps("p1", 11.0, 5), final()], proxies=["p1", "p2"])
    assert not result.ok and result.problems == ["proxy p2: no status samples"]


def test_no_proxy_samples_fails_unless_the_run_had_no_proxies() -> None:
    assert not check_proxies([final()]).ok
    assert check_proxies([final()], proxies=()).ok


def test_missing_final_record_is_rejected() -> None:
    result = check_proxies([ps("p1", 1.0, 3)])
    assert not result.ok and "no final record" in result.problems[0]


def test_availability_above_threshold_passes_with_per_fault_breakdown() -> None:
    h = [nemesis(10.0, "start", "kill-leader"), nemesis(20.0, "heal", "kill-leader")]
    h += [req(float(t)) for t in range(30)]
    h.append(req(15.5, ok=False))
    result = check_proxy_availability(h, min_success_rate=0.95)
    assert result.ok, result.problems
    assert result.figures["total"] == 31 and result.figures["failed"] == 1
    assert result.figures["kill-leader.total"] == 12 and result.figures["kill-leader.rate"] == pytest.approx(
        11 / 12, abs=1e-6
    )
    assert result.figures["none.total"] == 19 and result.figures["none.rate"] == 1.0


def test_availability_below_threshold_is_rejected_with_the_outage() -> None:
    h = [nemesis(2.0, "start", "partition-cp"), nemesis(8.0, "heal", "partition-cp")]
    h += [req(t / 10, ok=not 30 <= t < 55) for t in range(100)]
    result = check_proxy_availability(h)
    assert not result.ok
    assert result.figures["failed"] == 25 and result.figures["rate"] == 0.75
    assert result.figures["longest_failure_s"] == 2.4 and result.figures["longest_failure_requests"] == 25
    assert "longest outage 2.400s (25 requests) from t=3.000" in result.problems[0]
    assert result.problems[1] == "  during partition-cp: 25 of 61 failed"
    assert result.problems[2] == "  25 x 502 bad gateway"


def test_excluded_fault_windows_do_not_count_against_the_rate() -> None:
    h = [nemesis(2.0, "start", "kill-proxies"), nemesis(8.0, "heal", "kill-proxies")]
    h += [req(t / 10, ok=not 30 <= t < 55) for t in range(100)]
    result = check_proxy_availability(h, exclude_faults=["kill-proxies"])
    assert result.ok and result.figures["counted"] == 39 and float(result.figures["kill-proxies.rate"]) < 1


def test_no_proxy_traffic_fails_unless_allowed() -> None:
    result = check_proxy_availability([])
    assert not result.ok and "only 0 proxy requests counted" in result.problems[0]
    assert check_proxy_availability([], min_requests=0).ok
