"""Admission for the push stream: how many streams a node holds, per client address and in total,
and the ``[push]`` table of node.toml that sets these and the other stream limits.

Split from cluster/push.py (the protocol logic). A stream counts from the moment it is admitted
(before the websocket upgrade) until its handler ends, handshaking or streaming alike, so idle
connections that never say hello occupy a slot only until ``hello_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("gwadm.push")

MAX_STREAMS = 4096  # open /v1/stream websockets per node, handshaking or streaming
MAX_STREAMS_PER_ADDRESS = 256  # of those, from one client IP address

PUSH_SETTINGS: dict[str, tuple[type, float]] = {
    "hello_timeout": (float, 0.1),  # seconds a new stream may take to send hello
    "max_frame": (int, 1024),  # bytes of one inbound frame; bigger ones close the stream (1009)
    "max_streams": (int, 1),  # open streams on this node
    "max_streams_per_address": (int, 1),  # open streams from one client address
    "status_interval": (float, 0.1),  # seconds between status frames (and token re-checks)
}
"""The ``[push]`` keys of node.toml (docs/contracts.md §4a): type and minimum of each."""


def check_push_settings(values: dict[str, Any]) -> None:
    """``ValueError`` naming the key if a ``[push]`` table has an unknown key or a bad value."""
    for key, value in values.items():
        if key not in PUSH_SETTINGS:
            raise ValueError(f"unknown [push] setting {key!r}; expected some of {', '.join(sorted(PUSH_SETTINGS))}")
        kind, minimum = PUSH_SETTINGS[key]
        ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok_type or value < minimum:
            raise ValueError(f"[push] {key} must be {'a number' if kind is float else 'an integer'} >= {minimum:g}")


class Admission:
    """Counts open streams; ``refusal`` says why a new one may not open (None: it may)."""

    def __init__(self, max_streams: int = MAX_STREAMS, max_per_address: int = MAX_STREAMS_PER_ADDRESS) -> None:
        self.max_streams, self.max_per_address = max_streams, max_per_address
        self._open: dict[str, int] = {}  # client address -> open streams
        self.total = 0
        self.refused: dict[str, int] = {}  # reason -> streams refused or closed for it

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def refusal(self, remote: str) -> tuple[int, str] | None:
        """(HTTP status, message) if a stream from ``remote`` is over a limit; counted and logged."""
        if self._open.get(remote, 0) >= self.max_per_address:
            answer = 429, f"too many push streams from {remote} (limit {self.max_per_address})"
        elif self.total >= self.max_streams:
            answer = 503, f"too many push streams on this node (limit {self.max_streams})"
        else:
            return None
        self.count("too_many_streams")
        n = self.refused["too_many_streams"]
        if n in (1, 10, 100) or n % 1000 == 0:  # a flood must not flood the log too
            log.warning("refusing push stream: %s (%d refused so far)", answer[1], n)
        return answer

    @contextmanager
    def holding(self, remote: str) -> Iterator[None]:
        """One slot for a stream from ``remote`` while the block runs."""
        self._open[remote] = self._open.get(remote, 0) + 1
        self.total += 1
        try:
            yield
        finally:
            self.total -= 1
            left = self._open[remote] - 1
            if left > 0:
                self._open[remote] = left
            else:
                del self._open[remote]
