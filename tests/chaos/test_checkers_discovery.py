"""chaos/checkers/discovery.py on hand-made histories."""

from __future__ import annotations

from typing import Any

from chaos.checkers.discovery import check_discovery


def _h(*events: tuple[float, str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"time": t, "type": kind, **fields} for t, kind, fields in events]


BASE = [
    (0.0, "disco_config", {"ttl": 3.0, "interval": 0.5, "instances": 2}),
    (0.5, "disco_registered", {"instance": 0}),
    (0.6, "disco_registered", {"instance": 1}),
    (0.1, "node_status", {"node": "n1", "reachable": True, "role": "leader", "term": 2, "has_quorum": True}),
]


def test_passes_when_live_stay_and_stopped_expire_in_time() -> None:
    result = check_discovery(_h(*BASE,
                                (1.0, "disco_view", {"node": "n1", "present": [0, 1]}),
                                (2.0, "disco_stop", {"instance": 1, "last_beat": 1.9}),
                                (5.0, "disco_view", {"node": "n2", "present": [0, 1]}),
                                (6.0, "disco_view", {"node": "n1", "present": [0]})))
    assert result.ok, result.problems
    assert result.figures["stopped"] == 1 and result.figures["live_expired"] == 0


def test_a_live_instance_missing_fails() -> None:
    result = check_discovery(_h(*BASE,
                                (1.0, "disco_view", {"node": "n1", "present": [0, 1]}),
                                (2.0, "disco_view", {"node": "n3", "present": [1]})))
    assert not result.ok and "live instance 0" in result.problems[0]
    missing = check_discovery(_h(*BASE, (1.0, "disco_view", {"node": "n1", "present": [0, 1]}),
                                 (1.5, "disco_missing", {"instance": 1, "node": "n2"})))
    assert not missing.ok and "instance 1 heartbeating" in missing.problems[0]


def test_a_stopped_instance_late_or_never_expired_fails_unless_a_leader_change_restarted_its_ttl() -> None:
    late = check_discovery(_h(*BASE,
                              (2.0, "disco_stop", {"instance": 1, "last_beat": 1.9}),
                              (7.5, "disco_view", {"node": "n1", "present": [0, 1]}),
                              (8.0, "disco_view", {"node": "n1", "present": [0]})))
    assert not late.ok and "still registered at t=7.50s" in late.problems[0]
    never = check_discovery(_h(*BASE, (2.0, "disco_stop", {"instance": 1, "last_beat": 1.9}),
                               (9.0, "disco_view", {"node": "n1", "present": [0, 1]})))
    assert not never.ok and "never expired" in never.problems[0]
    regrant = check_discovery(_h(*BASE,
                                 (2.0, "disco_stop", {"instance": 1, "last_beat": 1.9}),
                                 (4.0, "node_status", {"node": "n2", "reachable": True, "role": "leader", "term": 3,
                                                       "has_quorum": True}),
                                 (7.5, "disco_view", {"node": "n2", "present": [0, 1]}),
                                 (8.0, "disco_view", {"node": "n2", "present": [0]})))
    assert regrant.ok, regrant.problems


def test_without_the_workload_it_is_skipped() -> None:
    assert check_discovery([]).ok
