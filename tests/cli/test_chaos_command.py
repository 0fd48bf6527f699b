"""`gwadm chaos run` ended by a signal: nothing of the run is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.test_net import require_namespace
from tests.support.cluster import ROOT
from tests.support.http import wait_for


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
    argv = [sys.executable, "-m", "cli", "chaos", "run", "--scenario", "kill-leader", "--seed", "1",
            "--duration", "60", "--out", str(out), "--json"]
    print("seed 1", " ".join(argv))
    run = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
