"""CI smoke of the chaos suite: every nemesis once on a fixed seed, on real processes in a private
network namespace (`gwadm chaos run`), with every checker required to pass.

Beyond "the checkers passed", each test asserts that its fault really happened (a new leader after
the leader was isolated, proxies in cached mode while cut from the CP, ...): a fault that silently
did nothing would otherwise pass every checker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.test_net import require_namespace

SEED = 1
DURATION = 6
REPORT_ONLY = {"write_unavailability"}
SMOKE = [
    ("kill-leader", 3), ("kill-random", 3), ("kill-all", 3), ("pause-leader", 3), ("isolate-leader", 3),
    ("random-halves", 3), ("cut-cp-proxies", 3), ("packet-loss", 3), ("member-churn", 3), ("mixed", 3),
    ("majority-ring", 5), ("bridge", 5), ("isolate-leader", 5),
]  # fmt: skip


def run_chaos(tmp_path: Path, scenario: str, nodes: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cli", "chaos", "run", "--scenario", scenario, "--seed", str(SEED),
            "--duration", str(DURATION), "--nodes", str(nodes), "--out", str(out), "--json"]
    print("seed", SEED, " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=170)
    run_dir = out / f"{scenario}-n{nodes}-s{SEED}"
    report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else {}
    # write_unavailability holds the control plane to a latency target (0.6 s / 1.2 s without an
    # acknowledged write per fault): `gwadm chaos run` fails on it, but a short smoke on a loaded CI
    # machine is no measurement, so here it only reports (its unit tests prove that it can fail).
    failed = [c for c in report.get("checkers", []) if not c["ok"] and c["name"] not in REPORT_ONLY]
    measured_only = report.get("checkers") and all(
        c["ok"] or c["name"] in REPORT_ONLY for c in report["checkers"]) and not report.get("error")
    assert (done.returncode == 0 and report.get("ok")) or (done.returncode == 1 and measured_only), (
        f"exit {done.returncode}; failed checkers: {json.dumps(failed, indent=1)[:4000]}\n"
        f"error: {report.get('error')}\nstderr: {done.stderr[-3000:]}"
    )
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return report, history


def windows(history: list[dict[str, Any]]) -> list[tuple[float, float, dict[str, Any]]]:
    starts: list[dict[str, Any]] = []
    result = []
    for r in history:
        if r["type"] == "nemesis" and r["phase"] == "start":
            starts.append(r)
        elif r["type"] == "nemesis" and r["phase"] == "heal":
            s = starts.pop(0)
            result.append((s["time"], r["time"], s["detail"]))
    return result


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("scenario", "nodes"), SMOKE, ids=[f"{s}-{n}" for s, n in SMOKE])
def test_chaos_smoke(tmp_path: Path, scenario: str, nodes: int) -> None:
    require_namespace()
    report, history = run_chaos(tmp_path, scenario, nodes)
    faults = windows(history)
    assert faults, "no fault was injected"
    names = {c["name"] for c in report["checkers"]}
    assert {"linearizable", "no_lost_writes", "convergence", "proxies", "proxy_availability",
            "single_leader", "processes"} <= names
    oks = [r for r in history if r["type"] == "ok" and r["f"] in ("write", "cas", "add")]
    assert len(oks) > 20, "the workload barely wrote anything"
    if scenario == "isolate-leader":
        # The isolated leader's peers must elect someone else while the cut holds: proof that the
        # Raft traffic really went through the rules (unbound sockets would slip past them).
        start, end, detail = faults[0]
        leaders = {r["node"] for r in history if r["type"] == "node_status" and start < r["time"] <= end + 0.5
                   and r.get("role") == "leader" and r.get("has_quorum")}
        assert leaders - {detail["node"]}, f"no other leader while {detail['node']} was isolated"
    if scenario in ("cut-cp-proxies", "kill-all"):
        start, end, _ = faults[0]
        cached = {r["proxy"] for r in history if r["type"] == "proxy_status" and start < r["time"] <= end + 0.5
                  and r.get("mode") == "cached"}
        assert cached == {"p1", "p2"}, f"proxies never went cached during {scenario}: {cached}"
    if scenario == "member-churn":
        # The membership really changed both ways, and the node that came back empty caught up
        # (the convergence checker compares every node's final revision and hash).
        heals = [r["detail"] for r in history if r["type"] == "nemesis" and r["phase"] == "heal"]
        for d in heals:
            assert d["node"] not in d["members_after_remove"] and len(d["members_after_remove"]) == nodes - 1, d
            assert sorted(d["members_after_add"]) == [f"n{i}" for i in range(1, nodes + 1)], d
    if scenario in ("kill-leader", "kill-random", "kill-all"):
        assert all(d.get("node") or d.get("nodes") for _, _, d in faults)
