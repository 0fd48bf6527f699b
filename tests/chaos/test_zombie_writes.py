"""No zombie writes, on real processes with a real cut (chaos/probes.py ``zombie-write``).

A follower is cut off while writers hammer it, so some PUTs are accepted while it still has a
leader and forwarded into the dead link; they are answered 503. A newer value is then acknowledged
through the majority, the cut heals, and the key is read on every node for a while: no value whose
PUT was answered with an error may come back (before the fix one did, 2 s after the heal), and the
no_zombie_writes and linearizable checkers must pass on the recorded history.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.test_net import require_namespace


@pytest.mark.timeout(150)
def test_a_write_answered_with_an_error_never_reappears(tmp_path: Path) -> None:
    require_namespace()
    argv = [sys.executable, "-m", "chaos.probes", "zombie-write", "--out", str(tmp_path / "probe")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    errored = [a for a in result["old_answers"] if a["status"] not in (200, 201)]
    assert any(a.get("code") == "unavailable" for a in errored), (
        f"no PUT was caught in flight by the cut, the probe proved nothing: {result['old_answers']}")
    assert result["newer"]["status"] in (200, 201) and result["reads_after_heal"] > 10
    reappeared = {a["value"] for a in errored} & set(result["values_after_heal"])
    assert not reappeared, f"writes answered with an error took effect after the heal: {sorted(reappeared)}"
    assert result["values_after_heal"] == ["zombie-new"], result["values_after_heal"]
    for name, verdict in result["checkers"].items():
        assert verdict["ok"], f"{name}: {verdict['problems']}"
