"""Prometheus metrics of one DataPlane, in a registry of its own.

A registry per DataPlane (not the global default) keeps tests and multiple proxies in one process
apart. Request counters and histograms are updated on the request path; everything that describes
the current state (config revision, mode, sync lag, per-target health) is read from the DataPlane
at scrape time by a custom collector, so it can never go stale or keep label sets of targets that
were removed from the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
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


class ProxyMetrics:
    """The metric objects; ``render()`` produces the text exposition for /metrics."""

    def __init__(self, dp: DataPlane) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gwadm_proxy_requests_total", "Proxied requests by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gwadm_proxy_request_duration_seconds", "Time to the end of the response, by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.apply_duration = Histogram(
            "gwadm_proxy_config_apply_duration_seconds", "Time to build and install a runtime",
            buckets=APPLY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_StateCollector(dp))

    def observe_request(self, route: str | None, status: int, seconds: float) -> None:
        label = route or ""
        self.requests.labels(route=label, status=str(status)).inc()
        self.latency.labels(route=label).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
