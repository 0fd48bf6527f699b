"""no_lost_writes: acknowledged adds are on every node; unknown adds may be anywhere; failed ones nowhere."""

from __future__ import annotations

from typing import Any

from chaos.checkers import check_no_lost_writes

History = list[dict[str, Any]]


def add(p: int, key: str, t0: float, t1: float, status: str = "ok") -> History:
    base = {"process": p, "f": "add", "key": key, "value": f"val-{key}", "node": "n1"}
    return [{"type": "invoke", "time": t0, **base}, {"type": status, "time": t1, **base}]


def final(present: dict[str, list[str] | None]) -> dict[str, Any]:
    nodes = {n: {"revision": 9, "hash": "h9", "present": keys} for n, keys in present.items()}
    return {"type": "final", "time": 20.0, "heal_time": 15.0, "nodes": nodes, "committed_revision": 9,
            "committed_hash": "h9"}  # fmt: skip


def test_all_acknowledged_adds_present_everywhere_passes() -> None:
    everywhere = ["w-0-1", "w-1-1"]
    h = add(0, "w-0-1", 0.0, 1.0) + add(1, "w-1-1", 0.5, 1.5) + [final({"n1": everywhere, "n2": everywhere})]
    result = check_no_lost_writes(h)
    assert result.ok, result.problems
    assert result.figures["adds_ok"] == 2 and result.figures["nodes"] == 2 and result.figures["lost"] == 0


def test_acknowledged_add_missing_on_one_node_is_rejected() -> None:
    h = add(0, "w-0-1", 0.0, 1.0) + add(1, "w-1-1", 0.5, 1.5)
    h.append(final({"n1": ["w-0-1", "w-1-1"], "n2": ["w-0-1", "w-1-1"], "n3": ["w-0-1"]}))
    result = check_no_lost_writes(h)
    assert not result.ok and result.figures["lost"] == 1
    assert result.problems == [
        "acknowledged add w-1-1 lost on n3: p1 add w-1-1 'val-w-1-1' ok [0.500, 1.500] via n1"
    ]


def test_info_add_may_or_may_not_be_present() -> None:
    h = add(0, "w-0-1", 0.0, 1.0, "info") + add(1, "w-1-1", 0.5, 1.5, "info")
    h.append(final({"n1": ["w-0-1"], "n2": ["w-0-1"]}))
    result = check_no_lost_writes(h)
    assert result.ok, result.problems
    assert result.figures["adds_info"] == 2 and result.figures["info_adds_present"] == 1


def test_add_without_completion_counts_as_info() -> None:
    h = add(0, "w-0-1", 0.0, 1.0)[:1] + [final({"n1": []})]
    assert check_no_lost_writes(h).ok


def test_failed_add_that_is_present_is_rejected() -> None:
    h = add(0, "w-0-1", 0.0, 1.0, "fail") + [final({"n1": ["w-0-1"], "n2": []})]
    result = check_no_lost_writes(h)
    assert not result.ok and "reported failed but is present on n1" in result.problems[0]


def test_missing_final_record_is_rejected() -> None:
    result = check_no_lost_writes(add(0, "w-0-1", 0.0, 1.0))
    assert not result.ok and "no final record" in result.problems[0]


def test_node_that_did_not_report_its_resources_is_rejected() -> None:
    h = add(0, "w-0-1", 0.0, 1.0) + [final({"n1": ["w-0-1"], "n2": None})]
    result = check_no_lost_writes(h)
    assert not result.ok and "node n2 did not report" in result.problems[0]


def test_final_without_nodes_is_rejected() -> None:
    assert not check_no_lost_writes([final({})]).ok


def test_many_losses_are_capped() -> None:
    h: History = []
    for i in range(50):
        h += add(i, f"w-{i}-1", float(i), i + 0.5)
    h.append(final({"n1": []}))
    result = check_no_lost_writes(h)
    assert (
        result.figures["lost"] == 50
        and len(result.problems) == 21
        and result.problems[-1] == "... and 30 more"
    )
