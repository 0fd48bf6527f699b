"""Traffic figures of a proxy (req/s, 5xx/s, p99) from two successive scrapes of its ``/metrics``.

A proxy exports cumulative counters only (``proxy/metrics.py``): requests by route and status, and a
latency histogram by route. Rates and a p99 therefore need two scrapes: the difference between them
is the traffic of that interval. ``parse`` and ``rates`` are pure (text and timestamps in, numbers
out) so the arithmetic is unit-tested; ``scrape`` is the one GET.

Counters that went down between two scrapes mean the proxy restarted: that interval has no figures
(``None``) rather than a negative or made-up rate.
"""

from __future__ import annotations

import http.client
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "gwadm_proxy_requests"  # family name: the parser strips the counter's ``_total``
LATENCY = "gwadm_proxy_request_duration_seconds"


@dataclass(frozen=True)
class Scrape:
    """Cumulative totals of one scrape, summed over routes; ``at`` is a monotonic timestamp."""

    at: float
    requests: float
    errors: float  # responses with a 5xx status
    buckets: tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), sorted, +Inf last


@dataclass(frozen=True)
class Rates:
    """Traffic between two scrapes; ``p99`` in seconds, None when the interval had no requests."""

    requests_per_s: float
    errors_per_s: float
    p99: float | None


def parse(text: str, at: float) -> Scrape:
    """Sum the request counter and latency histogram over every route and status.

    Raises ValueError when ``text`` is not the Prometheus text format.
    """
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for s in family.samples:
                if s.name.endswith("_total"):
                    requests += s.value
                    if str(s.labels.get("status", "")).startswith("5"):
                        errors += s.value
        elif family.name == LATENCY:
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])  # "+Inf" parses as inf
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return Scrape(at, requests, errors, tuple(sorted(buckets.items())))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear inside the bucket holding rank q.

    The answer is never above the highest finite bound (a request slower than every bucket counts as
    that bound: the histogram knows nothing finer).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


def rates(prev: Scrape | None, cur: Scrape) -> Rates | None:
    """Figures for the interval between two scrapes; None without a usable previous scrape."""
    if prev is None:
        return None
    dt = cur.at - prev.at
    if dt <= 0 or cur.requests < prev.requests or cur.errors < prev.errors:
        return None
    old: Mapping[float, float] = dict(prev.buckets)
    delta: list[tuple[float, float]] = []
    for le, count in cur.buckets:
        d = count - old.get(le, 0.0)
        if d < 0:
            return None
        delta.append((le, d))
    return Rates(
        (cur.requests - prev.requests) / dt,
        (cur.errors - prev.errors) / dt,
        quantile(0.99, tuple(delta)),
    )


def scrape(status_url: str, at: float, timeout: float = 0.8) -> Scrape | str:
    """GET ``<status_url>/metrics`` and parse it; a string says why there are no figures."""
    parts = urlsplit(status_url.rstrip("/") + "/metrics")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"metrics unavailable: {type(exc).__name__}"
    finally:
        conn.close()
    if status != 200:
        return f"metrics: HTTP {status}"
    try:
        return parse(raw.decode("utf-8", "replace"), at)
    except (ValueError, KeyError, IndexError) as exc:
        return f"metrics unreadable: {exc}"
