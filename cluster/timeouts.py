"""Request timeouts of the admin API: defaults from node.toml, overridable per request.

``[timeouts]`` in node.toml (seconds; defaults in brackets):

* ``request`` [5.0] — how long a read or write may wait for Raft before it is answered 503;
* ``no_leader_wait`` [0.5] — how long a request waits for a leader when this node knows none with
  quorum, before it answers ``503 no_quorum`` (about one election timeout: an election takes
  0.15-0.5 s here). A linearizable read that loses quorum while waiting also gives up after it;
* ``forward`` [5.0] — extra time a request forwarded to the leader over HTTP (membership changes)
  may take beyond its own timeout.

Per request: header ``X-Request-Timeout: SECONDS`` or query ``?timeout=SECONDS`` (0.05-120),
replacing ``request`` for that request (membership endpoints already read ``?timeout=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.errors import ValidationError

MIN_TIMEOUT, MAX_TIMEOUT = 0.05, 120.0
HEADER = "X-Request-Timeout"


@dataclass(frozen=True)
class Timeouts:
    request: float = 5.0
    no_leader_wait: float = 0.5
    forward: float = 5.0

    @classmethod
    def from_toml(cls, raw: Any) -> Timeouts:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError("[timeouts] must be a table")
        unknown = set(raw) - {"request", "no_leader_wait", "forward"}
        if unknown:
            raise ValueError(f"unknown [timeouts] setting(s): {', '.join(sorted(unknown))}; "
                             "expected some of forward, no_leader_wait, request")
        values = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
                raise ValueError(f"[timeouts] {key} must be a number of seconds between {MIN_TIMEOUT} and {MAX_TIMEOUT}")
            values[key] = float(value)
        return cls(**values)


def request_timeout(request: web.Request, default: float) -> float:
    """This request's timeout: ``X-Request-Timeout`` or ``?timeout=`` (the header wins when both are
    given; each given one must be valid), else ``default``."""
    header = _seconds(request.headers.get(HEADER), HEADER)
    query = _seconds(request.query.get("timeout"), "timeout")
    if header is not None:
        return header
    return query if query is not None else default


def _seconds(raw: str | None, where: str) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:  # also NaN
        raise ValidationError(f"must be a number of seconds between {MIN_TIMEOUT} and {MAX_TIMEOUT}", where)
    return value
