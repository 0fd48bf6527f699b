"""CI smoke of the chaos suite's `discovery` scenario: kill and isolate the leader while 50
registered instances heartbeat (chaos/discovery.py); its checker must pass with every other one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.test_net import require_namespace
from tests.chaos.test_smoke import run_chaos, windows


@pytest.mark.timeout(240)
def test_discovery_scenario_3_nodes(tmp_path: Path) -> None:
    require_namespace()
    report, history = run_chaos(tmp_path, "discovery", 3)
    faults = windows(history)
    assert faults, "no fault was injected"
    # The first fault isolates the leader: a minority leader, which must expire nothing (checked by
    # the discovery checker), while the others elect a new one.
    start, end, detail = faults[0]
    assert "cut" in detail, detail
    leaders = {r["node"] for r in history if r["type"] == "node_status" and start < r["time"] <= end + 0.5
               and r.get("role") == "leader" and r.get("has_quorum")}
    assert leaders - {detail["node"]}, f"no other leader while {detail['node']} was isolated"
    disco = next(c for c in report["checkers"] if c["name"] == "discovery")
    figures = disco["figures"]
    # The scenario really ran: instances registered, some stopped, leadership changed under them.
    assert figures["instances"] == 50 and figures["stopped"] > 0, figures
    assert figures["leader_changes"] >= 2, figures
    assert figures["live_expired"] == 0
    expired = {r["instance"] for r in history if r["type"] == "disco_stop"}
    last_view = [r for r in history if r["type"] == "disco_view"][-1]
    assert not expired & set(last_view["present"]), "stopped instances still registered at the end"
