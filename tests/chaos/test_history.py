"""The history file format: writing from threads, reading with clear errors, pairing ops into intervals."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from chaos.history import (
    HistoryError,
    HistoryWriter,
    Op,
    end_time,
    final_record,
    nemesis_windows,
    ops,
    read_history,
)


def test_writer_stamps_time_from_the_given_clock_and_reads_back(tmp_path: Path) -> None:
    ticks = iter([1.5, 2.5])
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=lambda: next(ticks)) as w:
        rec = w.record("invoke", process=0, f="write", key="k0", value="a", node="n1")
        w.record("ok", process=0, f="write", key="k0", value="a", node="n1", revision=3)
        w.record("nemesis", phase="start", fault="kill", detail={}, time=9.0)  # explicit time wins
    assert rec["time"] == 1.5
    assert [(r["type"], r["time"]) for r in read_history(path)] == [
        ("invoke", 1.5),
        ("ok", 2.5),
        ("nemesis", 9.0),
    ]


def test_default_clock_is_monotonic_from_creation(tmp_path: Path) -> None:
    with HistoryWriter(tmp_path / "h.jsonl") as w:
        a = w.record("node_status", node="n1", reachable=True)["time"]
        b = w.now()
    assert 0.0 <= a <= b < 5.0


def test_writer_appends_and_flushes_each_line(tmp_path: Path) -> None:
    """A crash mid-run must leave every record written so far readable: flushed per line."""
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path, clock=lambda: 1.0)
    w.record("node_status", node="n1", reachable=False)
    assert len(read_history(path)) == 1  # visible before close
    w.close()
    with HistoryWriter(path, clock=lambda: 2.0) as w2:
        w2.record("node_status", node="n2", reachable=True)
    assert [r["node"] for r in read_history(path)] == ["n1", "n2"]


def test_a_record_after_close_is_dropped_not_raised(tmp_path: Path) -> None:
    """A run torn down by an error closes its history while its traffic threads still report:
    they must not die with "I/O operation on closed file" (seen when a kill-all run could not
    converge)."""
    path = tmp_path / "h.jsonl"
    writer = HistoryWriter(path, clock=lambda: 1.0)
    writer.record("kept")
    writer.close()
    assert writer.record("late", x=1) == {"type": "late", "x": 1, "time": 1.0}
    assert [r["type"] for r in read_history(path)] == ["kept"]


def test_writer_rejects_non_json_without_corrupting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=lambda: 1.0) as w:
        with pytest.raises(TypeError):
            w.record("node_status", node=object(), reachable=True)
        w.record("node_status", node="n1", reachable=True)
    assert len(read_history(path)) == 1


def test_concurrent_writers_produce_whole_lines_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:

        def spam(proc: int) -> None:
            for i in range(200):
                w.record(
                    "proxy_request", proxy=f"p{proc}", route="/r", status=200, ok=True, latency=0.001, n=i
                )

        threads = [threading.Thread(target=spam, args=(p,)) for p in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    history = read_history(path)
    assert len(history) == 1600
    times = [r["time"] for r in history]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"time": 1.0}', "without a string 'type'"),
        ('{"type": "ok", "process": 0, "f": "read", "key": "k0"}', "numeric 'time'"),
        ('{"type": "invoke", "time": 1.0, "f": "read", "key": "k0"}', "lacks process"),
        (
            '{"type": "invoke", "time": 1.0, "process": 0, "f": "delete", "key": "k0"}',
            "unknown op f='delete'",
        ),
        (
            '{"type": "final", "time": 1.0, "nodes": {}}',
            "lacks heal_time, committed_revision, committed_hash",
        ),
    ],
)
def test_read_history_names_the_bad_line(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"type": "nemesis", "time": 0.5, "phase": "start", "fault": "kill"}\n\n' + line + "\n")
    with pytest.raises(HistoryError) as err:
        read_history(path)
    assert f"{path}:3:" in str(err.value) and needle in str(err.value)


def test_unknown_record_types_are_kept() -> None:
    """Forward compatibility: the harness may log extra record types that no checker reads."""
    assert ops([{"type": "note", "time": 1.0, "text": "hello"}]) == []


def rec(type_: str, p: int, f: str, key: str, value: Any, t: float, **kw: Any) -> dict[str, Any]:
    return {"type": type_, "process": p, "f": f, "key": key, "value": value, "time": t, **kw}


def test_ops_pairs_invokes_with_completions_per_process() -> None:
    history = [
        rec("invoke", 0, "write", "k0", "a", 0.0, node="n1"),
        rec("invoke", 1, "read", "k0", None, 0.1, node="n2"),
        rec("ok", 1, "read", "k0", "a", 0.5, node="n2"),
        rec("info", 0, "write", "k0", "a", 0.9, node="n1", error="timeout"),
        rec("invoke", 0, "cas", "k0", ["a", "b"], 1.0, node="n3"),
        rec("fail", 0, "cas", "k0", ["a", "b"], 1.2, node="n3", error="409"),
        rec("invoke", 2, "add", "w-2-1", "x", 1.3, node="n1"),
    ]
    got = ops(history)
    assert got == [
        Op(0, "write", "k0", "a", None, "info", 0.0, None, "n1", None, "timeout"),
        Op(1, "read", "k0", None, "a", "ok", 0.1, 0.5, "n2"),
        Op(0, "cas", "k0", ["a", "b"], None, "fail", 1.0, 1.2, "n3", None, "409"),
        Op(2, "add", "w-2-1", "x", None, "info", 1.3, None, "n1", None, "no completion recorded"),
    ]
    assert "read k0 -> 'a' ok [0.100, 0.500] via n2" in got[1].describe()
    assert "open" in got[0].describe() and "timeout" in got[0].describe()


@pytest.mark.parametrize(
    ("history", "needle"),
    [
        ([rec("ok", 0, "read", "k0", None, 1.0)], "without an invoke"),
        (
            [rec("invoke", 0, "read", "k0", None, 1.0), rec("invoke", 0, "read", "k0", None, 2.0)],
            "still open",
        ),
        ([rec("invoke", 0, "read", "k0", None, 1.0), rec("ok", 0, "read", "k1", None, 2.0)], "but invoked"),
    ],
)
def test_ops_rejects_histories_that_do_not_pair_up(history: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(HistoryError, match=needle):
        ops(history)


def test_nemesis_windows_pair_start_and_heal_by_fault() -> None:
    history = [
        {"type": "nemesis", "time": 1.0, "phase": "start", "fault": "kill", "detail": {"nodes": ["n1"]}},
        {"type": "nemesis", "time": 2.0, "phase": "start", "fault": "partition", "detail": {}},
        {"type": "nemesis", "time": 3.0, "phase": "heal", "fault": "kill", "detail": {}},
        {"type": "nemesis", "time": 5.0, "phase": "start", "fault": "kill"},
        {"type": "node_status", "time": 9.0, "node": "n1", "reachable": True},
    ]
    windows = nemesis_windows(history)
    assert [(w.fault, w.start, w.end) for w in windows] == [
        ("kill", 1.0, 3.0),
        ("partition", 2.0, 9.0),
        ("kill", 5.0, 9.0),
    ]
    assert (
        windows[0].detail == {"nodes": ["n1"]} and windows[0].contains(3.0) and not windows[0].contains(3.1)
    )
    assert end_time(history) == 9.0 and end_time([]) == 0.0


def test_final_record_is_the_last_one() -> None:
    assert final_record([{"type": "ok", "time": 1.0}]) is None
    finals = [{"type": "final", "time": 1.0, "n": 1}, {"type": "final", "time": 2.0, "n": 2}]
    assert final_record(finals) == finals[1]


def test_round_trip_of_every_record_type(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=lambda: 0.25) as w:
        w.record("invoke", process=0, f="add", key="w-0-1", value="v", node="n1")
        w.record("ok", process=0, f="add", key="w-0-1", value="v", node="n1", revision=7)
        w.record("nemesis", phase="start", fault="pause-leader", detail={"node": "n1"})
        w.record("node_status", node="n1", reachable=True, role="leader", term=2, leader="n1", revision=7,
                 hash="abc", has_quorum=True)  # fmt: skip
        w.record("proxy_status", proxy="p1", reachable=True, mode="synced", revision=7, hash="abc")
        w.record("proxy_request", proxy="p1", route="/a", status=200, ok=True, latency=0.002, error=None)
        w.record("final", heal_time=0.2, nodes={"n1": {"revision": 7, "hash": "abc", "present": ["w-0-1"]}},
                 committed_revision=7, committed_hash="abc")  # fmt: skip
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(line)["time"] == 0.25 for line in lines)
    assert final_record(read_history(path)) is not None
