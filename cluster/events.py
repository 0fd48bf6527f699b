"""A node's structured event log: what it does, one record per event, for operators and `gwadm top`.

Events (``event`` field): ``election_started`` / ``election_won`` / ``election_lost`` (with
``term``), ``leader_changed`` (``leader``, ``term``), ``quorum_lost`` / ``quorum_regained``,
``link_up`` / ``link_down`` (``peer``), ``snapshot_sent`` (leader: ``peer``, ``size`` in bytes),
``snapshot_installed`` / ``stale_snapshots_ignored`` (with ``count``: bursts become one record),
``membership_changed``,
``unavailable`` (503 answers, at most one record per reason per second, with ``suppressed``).

Each event is logged as one line (logger ``gwadm.events``; JSON with ``--log-format json``, see
``JsonFormatter``) and kept in a bounded ring buffer served by ``GET /v1/events?since=SEQ``.
Emitting is thread-safe (the Raft tick thread and the asyncio loop both emit) and never raises.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gwadm.events")

CAPACITY = 512


class EventLog:
    def __init__(self, node_id: str, capacity: int = CAPACITY, clock: Callable[[], float] = time.time,
                 logger: logging.Logger = log) -> None:
        self.node_id = node_id
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = 0
        self._clock = clock
        self._log = logger
        self._last_by_key: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def emit(self, event: str, *, level: int = logging.INFO, rate_key: str | None = None,
             every: float = 1.0, **fields: Any) -> dict[str, Any] | None:
        """Record one event; with ``rate_key``, at most one per ``every`` seconds per key (the next
        one that goes out carries ``suppressed``: how many were dropped since the last)."""
        try:
            now = self._clock()
            with self._lock:
                if rate_key is not None:
                    last = self._last_by_key.get(rate_key)
                    if last is not None and now - last < every:
                        self._suppressed[rate_key] = self._suppressed.get(rate_key, 0) + 1
                        return None
                    self._last_by_key[rate_key] = now
                    dropped = self._suppressed.pop(rate_key, 0)
                    if dropped:
                        fields["suppressed"] = dropped
                self._seq += 1
                record = {"seq": self._seq, "time": round(now, 3), "node": self.node_id, "event": event, **fields}
                self._events.append(record)
            self._log.log(level, "%s %s", event, _fmt(fields), extra={"gwadm_event": record})
            return record
        except Exception:  # an event must never break the caller
            return None

    def since(self, seq: int = 0, limit: int = CAPACITY) -> list[dict[str, Any]]:
        with self._lock:
            items = [e for e in self._events if e["seq"] > seq]
        return items[-limit:]

    @property
    def last_seq(self) -> int:
        return self._seq


def _fmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an event's fields if it is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }  # fmt: skip
        event = getattr(record, "gwadm_event", None)
        if isinstance(event, dict):
            out.update({k: v for k, v in event.items() if k not in ("time",)})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))
