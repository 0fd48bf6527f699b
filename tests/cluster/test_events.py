"""A node's event log (cluster/events.py): bounded, rate-limited where asked, JSON lines."""

from __future__ import annotations

import json
import logging

from cluster.events import EventLog, JsonFormatter


def test_ring_buffer_sequence_and_since() -> None:
    log = EventLog("n1", capacity=3, clock=lambda: 100.0)
    for i in range(5):
        log.emit("link_down", peer=f"n{i}")
    items = log.since(0)
    assert [e["seq"] for e in items] == [3, 4, 5] and items[0]["peer"] == "n2" and items[0]["node"] == "n1"
    assert [e["seq"] for e in log.since(4)] == [5] and log.last_seq == 5


def test_rate_limit_one_per_key_per_interval_with_suppressed_count() -> None:
    now = [0.0]
    log = EventLog("n1", clock=lambda: now[0])
    assert log.emit("unavailable", rate_key="503:no_quorum", code="no_quorum") is not None
    for _ in range(7):
        now[0] += 0.1
        assert log.emit("unavailable", rate_key="503:no_quorum", code="no_quorum") is None
    assert log.emit("unavailable", rate_key="503:unavailable", code="unavailable") is not None  # other key
    now[0] = 1.5
    again = log.emit("unavailable", rate_key="503:no_quorum", code="no_quorum")
    assert again is not None and again["suppressed"] == 7
    assert len(log.since(0)) == 3


def test_json_formatter_carries_the_event_fields() -> None:
    log = EventLog("n2")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger = logging.getLogger("gwadm.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log.emit("election_won", term=7)
    finally:
        logger.removeHandler(handler)
    line = json.loads(JsonFormatter().format(captured[-1]))
    assert line["event"] == "election_won" and line["term"] == 7 and line["node"] == "n2"
    assert line["level"] == "INFO" and line["logger"] == "gwadm.events" and "election_won" in line["message"]
