"""rate-limit: a token bucket per consumer, client IP, route or header value.

``limit`` tokens are refilled per ``window`` seconds, smoothly; the bucket holds at most ``burst``
tokens (``null`` or 0 mean ``limit``: a client may spend one window's quota at once, not more).
Each request costs one token. A refused request gets 429 with ``Retry-After`` (seconds until one token is
back); every response carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
(seconds until the bucket is full again), following the IETF RateLimit header draft.

Keys that cannot be determined fall back to the client IP (no consumer yet, header absent). Buckets
are limited in number: idle ones are full by now and dropping them changes nothing; beyond
``MAX_BUCKETS`` the least recently used are dropped. State survives runtime swaps via ``inherit``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from proxy.http_common import Response
from proxy.plugins.base import Plugin, RequestContext, json_error

MAX_BUCKETS = 100_000
KEYS = ("consumer", "ip", "route", "header")


class RateLimit(Plugin):
    name = "rate-limit"
    priority = 900

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        super().__init__(config, scope=scope)
        self.capacity = float(self.config["burst"] or self.config["limit"])
        self.rate = self.config["limit"] / self.config["window"]  # tokens per second
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._slot = f"rate-limit:{id(self)}"
        self._limit_line = b"RateLimit-Limit: %d\r\n" % self.config["limit"]

    def inherit(self, old: Plugin) -> None:
        if isinstance(old, RateLimit):
            self.buckets = old.buckets

    def bucket_key(self, ctx: RequestContext) -> str:
        kind = self.config["key"]
        if kind == "consumer" and ctx.consumer is not None:
            return "c:" + ctx.consumer.id
        if kind == "route" and ctx.route_id is not None:
            return "r:" + ctx.route_id
        if kind == "header":
            value = ctx.request_header(self.config["header_name"])
            if value:
                return "h:" + str(value)
        return "ip:" + ctx.client_ip

    def take(self, key: str, now: float) -> tuple[bool, float]:
        """Spend one token if available; returns (allowed, tokens left)."""
        tokens, at = self.buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > MAX_BUCKETS:
            self._evict(now)
        return allowed, tokens

    def _evict(self, now: float) -> None:
        full_after = self.capacity / self.rate
        for key in [k for k, (_, at) in self.buckets.items() if now - at >= full_after]:
            del self.buckets[key]
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)

    def check(self, ctx: RequestContext) -> Response | None:
        allowed, tokens = self.take(self.bucket_key(ctx), ctx.services.clock())
        ctx.data[self._slot] = tokens
        if allowed:
            return None
        retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
        return json_error(429, "rate_limited", "rate limit exceeded", {"Retry-After": str(retry_after)})

    sets_headers = True

    def header_lines(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        tokens = ctx.data.get(self._slot)
        if tokens is None:
            return []
        return [
            (b"ratelimit-limit", self._limit_line),
            (b"ratelimit-remaining", b"RateLimit-Remaining: %d\r\n" % math.floor(tokens)),
            (b"ratelimit-reset", b"RateLimit-Reset: %d\r\n" % math.ceil((self.capacity - tokens) / self.rate)),
        ]
