"""One /metrics for a proxy with several workers: the workers' expositions merged (pure).

Each worker renders its own registry (``ProxyMetrics.render``); the hub parses them with
prometheus_client's text parser and merges sample by sample (same name and labels):

* counters, histograms and summaries are summed, plus what workers that have since died had
  counted at their last scrape (``Retired``), so a restart never makes a total go backwards;
* gauges: the minimum over workers (revision, mode, routes, target health: a proxy is only as far
  as its slowest worker), except ``*_seconds`` gauges (sync lag): the maximum.

Families only the hub has (its own gauges) are appended unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

__all__ = ["Metric", "Retired", "merge", "parse", "render"]
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
SUMMED = ("counter", "histogram", "summary", "gaugehistogram", "unknown", "untyped")


def parse(text: str | bytes) -> list[Metric]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return list(text_string_to_metric_families(text))


def _key(name: str, labels: dict[str, str]) -> SampleKey:
    return name, tuple(sorted(labels.items()))


class Retired:
    """Counter-like samples of workers that died, kept so merged totals stay monotonic."""

    def __init__(self) -> None:
        self.samples: dict[SampleKey, float] = {}

    def add(self, families: Iterable[Metric]) -> None:
        for family in families:
            if family.type not in SUMMED:
                continue
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                key = _key(s.name, s.labels)
                self.samples[key] = self.samples.get(key, 0.0) + s.value


def merge(
    workers: Sequence[Sequence[Metric]], hub: Sequence[Metric] = (), retired: Retired | None = None
) -> list[Metric]:
    """The merged families, in the order first seen (workers first, then hub-only families)."""
    order: list[str] = []
    meta: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for families in workers:
        for family in families:
            if family.name not in meta:
                order.append(family.name)
                meta[family.name] = (family.documentation, family.type)
                values[family.name] = {}
            summed = family.type in SUMMED
            bucket = values[family.name]
            for s in family.samples:
                key = _key(s.name, s.labels)
                if key not in bucket:
                    bucket[key] = s.value
                elif summed and not s.name.endswith("_created"):
                    bucket[key] += s.value
                elif s.name.endswith("_seconds") and not summed:
                    bucket[key] = max(bucket[key], s.value)
                else:
                    bucket[key] = min(bucket[key], s.value)
    if retired is not None:
        for (name, labels), value in retired.samples.items():
            for fam_name in order:
                if meta[fam_name][1] in SUMMED and name.startswith(fam_name):
                    bucket = values[fam_name]
                    bucket[(name, labels)] = bucket.get((name, labels), 0.0) + value
                    break
    out: list[Metric] = []
    for name in order:
        doc, typ = meta[name]
        metric = Metric(name, doc, typ)
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        out.append(metric)
    out.extend(f for f in hub if f.name not in meta)
    return out


class _Fixed(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(families: Sequence[Metric]) -> bytes:
    """The text exposition of ``families`` (prometheus_client's own formatter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
