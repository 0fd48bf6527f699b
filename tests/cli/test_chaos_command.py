"""`gwadm chaos run` as an operator uses it: ended by a signal, or run again into the same directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.test_net import require_namespace
from tests.support.cluster import ROOT
from tests.support.http import wait_for


def chaos_argv(out: Path, duration: int) -> list[str]:
    argv = [sys.executable, "-m", "cli", "chaos", "run", "--scenario", "kill-leader", "--seed", "1",
            "--duration", str(duration), "--out", str(out), "--json"]
    print("seed 1", " ".join(argv))
    return argv


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (members in the run's namespace included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_run_stops_its_cluster_and_proxies(tmp_path: Path, signum: int) -> None:
    require_namespace()
    out = tmp_path / "out"
    run = subprocess.Popen(chaos_argv(out, 60), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        history = out / "kill-leader-n3-s1" / "history.jsonl"
        # members and proxies up, and the workload writing: the run is in full swing
        wait_for(lambda: len(processes_mentioning(str(out / "kill-leader-n3-s1" / "members"))) >= 5
                 and history.exists() and '"type":"ok"' in history.read_text(), 60, "the run under way")
        run.send_signal(signum)
        assert run.wait(60) == 128 + signum
        wait_for(lambda: not processes_mentioning(str(out)), 20, "every member and proxy of the run gone")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
        for pid in processes_mentioning(str(out)):  # what a failed run left: never leak it
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(150)
def test_a_run_into_a_used_directory_starts_from_nothing(tmp_path: Path) -> None:
    """Found re-running one scenario: its members booted from the last run's Raft data and
    appended to its logs, and the last run's traceback failed the new run's processes checker."""
    require_namespace()
    out = tmp_path / "out"
    stale = out / "kill-leader-n3-s1" / "members" / "n1"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "left-by-the-last-run").write_text("x")
    (stale / "process.log").write_text("Traceback (most recent call last):\n  a crash of the last run\n")
    done = subprocess.run(chaos_argv(out, 3), cwd=ROOT, capture_output=True, text=True, timeout=140)
    report = json.loads((out / "kill-leader-n3-s1" / "report.json").read_text())
    processes = next(c for c in report["checkers"] if c["name"] == "processes")
    assert processes["ok"], (processes, done.stderr[-2000:])
    assert not (stale / "data" / "left-by-the-last-run").exists()
    assert "a crash of the last run" not in (stale / "process.log").read_text()
