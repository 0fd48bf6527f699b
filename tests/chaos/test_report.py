"""chaos/report.py on hand-made histories: exact figures, report shape, console table, timeline PNG."""

from __future__ import annotations

import io
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType

from chaos import report as rep


@dataclass
class Result:
    """Stands in for chaos.checkers.CheckResult: the report only relies on these attributes."""

    name: str
    ok: bool
    figures: dict[str, float | int | str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def op(process: int, f: str, t0: float, kind: str | None, t1: float = 0.0) -> list[dict[str, Any]]:
    inv = {"type": "invoke", "process": process, "f": f, "key": "k", "value": 1, "time": t0, "node": "n1"}
    return [inv] if kind is None else [inv, {**inv, "type": kind, "time": t1}]


def status(t: float, node: str, h: str, rev: int, reachable: bool = True) -> dict[str, Any]:
    return {"type": "node_status", "time": t, "node": node, "reachable": reachable, "role": "follower",
            "term": 2, "leader": "n1", "revision": rev, "hash": h, "has_quorum": True}  # fmt: skip


def preq(t: float, proxy: str, ok: bool) -> dict[str, Any]:
    return {"type": "proxy_request", "time": t, "proxy": proxy, "route": "/demo", "status": 200 if ok else 502,
            "ok": ok, "latency": 0.01, "error": None if ok else "bad gateway"}  # fmt: skip


def history() -> list[dict[str, Any]]:
    h: list[dict[str, Any]] = []
    h += op(0, "write", 1.0, "ok", 1.1)
    h += op(1, "read", 1.0, "ok", 1.05)
    h.append(
        {"type": "nemesis", "time": 2.0, "phase": "start", "fault": "partition", "detail": {"cut": ["n1"]}}
    )
    h += [status(2.1, "n1", "h0", 4), status(2.1, "n2", "h0", 4)]
    h += op(0, "write", 2.0, "info", 5.0)
    h += op(1, "cas", 2.5, "fail", 2.7)
    h += [preq(3.2, "pa", True), preq(3.4, "pa", False), preq(4.0, "pb", True)]
    h.append({"type": "nemesis", "time": 6.0, "phase": "heal", "fault": "partition", "detail": {}})
    h += op(0, "add", 6.0, "ok", 6.3)
    h += [status(6.5, "n1", "h1", 5), status(6.5, "n2", "h0", 4)]
    h += op(1, "write", 6.5, "ok", 6.7)
    h.append({"type": "proxy_status", "time": 6.6, "proxy": "pa", "reachable": True, "mode": "synced",
              "revision": 5, "hash": "h1"})  # fmt: skip
    h += op(2, "write", 7.0, None)  # never completed: counts as info
    h.append(preq(7.2, "pa", True))
    h.append(status(7.5, "n2", "h1", 5))
    h.append({"type": "final", "time": 8.0})
    return h


def test_summarize_exact_figures() -> None:
    s = rep.summarize_ops(history())
    assert s["ops"] == {
        "add": {"invoked": 1, "ok": 1, "fail": 0, "info": 0},
        "cas": {"invoked": 1, "ok": 0, "fail": 1, "info": 0},
        "read": {"invoked": 1, "ok": 1, "fail": 0, "info": 0},
        "write": {"invoked": 4, "ok": 2, "fail": 0, "info": 2},
    }
    assert s["totals"] == {"invoked": 7, "ok": 4, "fail": 1, "info": 2}
    assert s["ok_writes"] == 3
    lat = s["write_latency"]  # ok writes: 0.1 (write), 0.3 (add), 0.2 (write); nearest rank
    assert lat["count"] == 3
    assert (lat["p50"], lat["p99"], lat["max"]) == pytest.approx((0.2, 0.3, 0.3))
    gap = s["unavailability"]  # ok completions 1.1, 6.3, 6.7; bounds 1.0 .. 7.0
    assert (gap["seconds"], gap["start"], gap["end"]) == pytest.approx((5.2, 1.1, 6.3))
    assert gap["faults"] == ["partition"]
    assert s["proxy"]["requests"] == 4 and s["proxy"]["ok"] == 3
    assert s["proxy"]["success_pct"] == pytest.approx(75.0)
    assert s["proxy"]["per_proxy"]["pa"] == {"requests": 3, "ok": 2, "success_pct": pytest.approx(200 / 3)}
    assert s["faults"] == [("partition", 2.0, 6.0, {"cut": ["n1"]})]
    # n1 and pa agree on h1 at 6.6, n2 catches up at 7.5 -> 1.5 s after the heal at 6.0
    assert s["convergence"] == {"heal": 6.0, "converged_at": 7.5, "seconds": pytest.approx(1.5)}
    assert s["duration"] == 8.0


def test_unavailability_includes_a_tail_that_never_recovers() -> None:
    h = op(0, "write", 0.5, "ok", 1.0) + op(0, "write", 1.5, "info", 4.0) + op(0, "write", 4.0, "fail", 9.0)
    gap = rep.summarize_ops(h)["unavailability"]
    assert (gap["seconds"], gap["start"], gap["end"]) == pytest.approx((8.0, 1.0, 9.0))
    empty = rep.summarize_ops([])
    assert empty["unavailability"]["seconds"] is None and empty["write_latency"]["p50"] is None
    assert empty["proxy"]["success_pct"] is None and empty["convergence"]["heal"] is None


def test_fault_windows_pairing() -> None:
    def nem(t: float, phase: str, fault: str) -> dict[str, Any]:
        return {"type": "nemesis", "time": t, "phase": phase, "fault": fault, "detail": {}}

    h = [nem(1, "start", "kill"), nem(2, "start", "pause"), nem(3, "heal", "pause"), nem(4, "heal", "all"),
         nem(5, "start", "loss")]  # fmt: skip
    assert rep.fault_windows(h) == [("kill", 1.0, 4.0, {}), ("pause", 2.0, 3.0, {}), ("loss", 5.0, None, {})]


def test_build_report_with_a_failing_checker(tmp_path: Path) -> None:
    results = [Result("linearizability", True, {"keys": 3}),
               Result("convergence", False, {"max_lag_s": float("inf")}, ["n2 stuck at revision 4"])]  # fmt: skip
    meta = {"scenario": "partition-leader", "seed": 7, "nodes": 3, "started_at": "2025-01-01T00:00:00Z"}
    r = rep.build_report(meta, history(), results)
    assert r["ok"] is False
    assert r["meta"]["scenario"] == "partition-leader" and r["meta"]["duration"] == 8.0
    assert "python" in r["meta"]["software"]
    assert [c["name"] for c in r["checkers"]] == ["linearizability", "convergence"]
    assert r["checkers"][1]["problems"] == ["n2 stuck at revision 4"]
    assert r["checkers"][1]["figures"]["max_lag_s"] is None  # strict JSON: no Infinity
    assert r["summary"]["faults"] == [["partition", 2.0, 6.0, {"cut": ["n1"]}]]
    assert rep.build_report(meta, history(), [Result("a", True)])["ok"] is True
    assert rep.build_report(meta, history(), [])["ok"] is False  # no checker ran: not a pass

    path = tmp_path / "run" / "report.json"
    rep.write_report(path, r)
    assert rep.read_report(path) == json.loads(json.dumps(r)) == r
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind


def text(r: RenderableType) -> str:
    buf = io.StringIO()
    Console(width=160, file=buf, color_system=None).print(r)
    return buf.getvalue()


def test_render_summary_table() -> None:
    meta = {"scenario": "partition-leader", "seed": 7, "nodes": ["n1", "n2", "n3"]}
    bad = rep.build_report(meta, history(), [Result("linearizability", True),
                                             Result("convergence", False, {}, ["n2 stuck at revision 4"])])  # fmt: skip
    good = rep.build_report({"scenario": "kill-leader", "seed": 1, "nodes": 5}, history(),
                            [Result("linearizability", True), Result("convergence", True)])  # fmt: skip
    out = text(rep.render_summary([bad, good]))
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert "partition-leader" in rows and "kill-leader" in rows
    assert "✗" in rows["partition-leader"] and "✗" not in rows["kill-leader"]
    assert "✓" in rows["kill-leader"]
    assert "5.20s @1.1" in rows["partition-leader"] and "75.00%" in rows["partition-leader"]
    assert "✗ convergence" in rows["partition-leader"]
    assert "1.50s" in rows["partition-leader"] and "1/2" in rows["partition-leader"]
    assert "Problems" in out and "n2 stuck at revision 4" in out and "partition-leader n=3 seed=7" in out
    assert "Problems" not in text(rep.render_summary([good]))


def big_history(n: int = 20_000) -> list[dict[str, Any]]:
    rnd = random.Random(3)
    h: list[dict[str, Any]] = [{"type": "nemesis", "time": 20.0, "phase": "start", "fault": "kill-leader",
                                "detail": {"node": "n1"}},
                               {"type": "nemesis", "time": 35.0, "phase": "heal", "fault": "kill-leader",
                                "detail": {}}]  # fmt: skip
    t = 0.0
    while len(h) < n:
        t += 0.01
        f = rnd.choice(["write", "cas", "add", "read"])
        kind = "info" if 20 < t < 35 and rnd.random() < 0.3 else rnd.choice(["ok", "ok", "ok", "fail"])
        h += op(rnd.randrange(8), f, t, kind, t + rnd.uniform(0.002, 0.2))
        h.append(preq(t, rnd.choice(["p1", "p2"]), rnd.random() > (0.5 if 20 < t < 35 else 0.01)))
    return h


def test_timeline_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed: timeline.png is optional")
    path = tmp_path / "timeline.png"
    assert rep.write_timeline(path, history()) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    big = big_history()
    started = time.monotonic()
    assert rep.write_timeline(tmp_path / "big.png", big) is True
    assert time.monotonic() - started < 4.0  # ~1 s here; the budget is 2 s, slack for a busy shared box
    assert rep.write_timeline(tmp_path / "empty.png", []) is True


def test_timeline_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    path = tmp_path / "timeline.png"
    assert rep.write_timeline(path, history()) is False
    assert not path.exists() and list(tmp_path.iterdir()) == []
