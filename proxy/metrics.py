"""Prometheus metrics of one DataPlane, in a registry of its own.

A registry per DataPlane (not the global default) keeps tests and multiple proxies in one process
apart. Request counts and latencies are plain integers in dicts on the request path (one dict
update and one bisect per request, no locks: the proxy is one thread) and become the
``gwadm_proxy_requests_total`` counter and ``gwadm_proxy_request_duration_seconds`` histogram at
scrape time. Everything that describes
the current state (config revision, mode, sync lag, per-target health) is read from the DataPlane
at scrape time by a custom collector, so it can never go stale or keep label sets of targets that
were removed from the config.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from proxy.server import DataPlane

MODES = ("synced", "cached", "empty")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
APPLY_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges computed from the DataPlane when scraped."""

    def __init__(self, dp: DataPlane) -> None:
        self.dp = dp

    def collect(self) -> Iterator[Metric]:
        dp = self.dp
        revision = GaugeMetricFamily("gwadm_proxy_config_revision", "Config revision being served")
        revision.add_metric([], float(dp.revision))
        yield revision
        mode = GaugeMetricFamily("gwadm_proxy_mode", "1 for the current mode", labels=["mode"])
        for m in MODES:
            mode.add_metric([m], 1.0 if dp.mode == m else 0.0)
        yield mode
        lag = GaugeMetricFamily(
            "gwadm_proxy_sync_lag_seconds", "Seconds since the last successful sync (NaN if never)"
        )
        lag.add_metric([], math.nan if dp.last_sync is None else max(0.0, dp.clock() - dp.last_sync))
        yield lag
        routes = GaugeMetricFamily("gwadm_proxy_routes", "Routes in the served config")
        routes.add_metric([], float(len(dp.runtime.router) if dp.runtime is not None else 0))
        yield routes
        health = GaugeMetricFamily(
            "gwadm_proxy_upstream_target_healthy", "1 if the target is eligible by health", labels=["upstream", "target"]
        )
        if dp.runtime is not None:
            for uid, pool in sorted(dp.runtime.pools.items()):
                for address, healthy in pool.health().items():
                    health.add_metric([uid, address], 1.0 if healthy else 0.0)
        yield health


class _RequestCollector(Collector):
    """Request counts and latency histograms kept as plain numbers, exposed when scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}  # route -> per-bucket (not cumulative) counts, +Inf last
        self.sums: dict[str, float] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        hist = self.buckets.get(route)
        if hist is None:
            hist = self.buckets[route] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[route] = 0.0
        hist[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sums[route] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gwadm_proxy_requests", "Proxied requests by route and status", labels=["route", "status"]
        )
        for (route, status), n in sorted(self.counts.items()):
            requests.add_metric([route, str(status)], float(n))
        yield requests
        latency = HistogramMetricFamily(
            "gwadm_proxy_request_duration_seconds", "Time to the end of the response, by route", labels=["route"]
        )
        for route, hist in sorted(self.buckets.items()):
            cumulative, acc = [], 0
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), hist, strict=True):
                acc += n
                cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), float(acc)))
            latency.add_metric([route], cumulative, sum_value=self.sums[route])
        yield latency


class ProxyMetrics:
    """The metric objects; ``render()`` produces the text exposition for /metrics."""

    def __init__(self, dp: DataPlane) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = _RequestCollector()
        self.registry.register(self._requests)
        self.apply_duration = Histogram(
            "gwadm_proxy_config_apply_duration_seconds", "Time to build and install a runtime",
            buckets=APPLY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_StateCollector(dp))

    def observe_request(self, route: str | None, status: int, seconds: float) -> None:
        self._requests.observe(route or "", status, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
