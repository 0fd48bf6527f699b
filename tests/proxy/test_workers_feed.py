"""The pure parts of ``--workers``: feed framing (proxy/feed.py) and the /metrics merge."""

from __future__ import annotations

import asyncio

import pytest

from proxy import metrics_merge
from proxy.feed import FeedError, pack, read_message, unpack
from proxy.server import DataPlane


def test_feed_round_trip_and_config_frames_are_checked() -> None:
    delta = {"t": "delta", "base": 1, "revision": 2, "ops": [], "hash": "h"}
    assert unpack(pack(delta)[4:]) == delta
    assert unpack(pack({"t": "scrape", "id": 3})[4:]) == {"t": "scrape", "id": 3}
    with pytest.raises(FeedError, match="must be greater than base"):
        unpack(pack({"t": "delta", "base": 2, "revision": 2, "ops": [], "hash": "h"})[4:])
    with pytest.raises(FeedError):
        unpack(b"\xc1garbage")
    with pytest.raises(FeedError, match="not a map"):
        unpack(pack([1, 2])[4:])  # type: ignore[arg-type]


def test_read_message_ends_cleanly_and_rejects_truncation() -> None:
    async def read(data: bytes) -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_message(reader)

    assert asyncio.run(read(b"")) is None
    assert asyncio.run(read(pack({"t": "listening"}))) == {"t": "listening"}
    with pytest.raises(FeedError, match="inside a message"):
        asyncio.run(read(pack({"t": "listening"})[:-1]))


def _worker(requests: int, revision: int) -> list[metrics_merge.Metric]:
    dp = DataPlane()
    dp.revision = revision
    for _ in range(requests):
        dp.metrics.observe_request("r1", 200, 0.002)
    return metrics_merge.parse(dp.metrics.render())


def _value(families: list[metrics_merge.Metric], name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in families
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_merge_sums_counters_and_histograms_and_takes_the_lowest_gauge() -> None:
    merged = metrics_merge.merge([_worker(3, 7), _worker(2, 6)])
    assert _value(merged, "gwadm_proxy_requests_total", route="r1", status="200") == 5
    assert _value(merged, "gwadm_proxy_request_duration_seconds_count", route="r1") == 5
    assert _value(merged, "gwadm_proxy_request_duration_seconds_bucket", route="r1", le="0.0025") == 5
    assert _value(merged, "gwadm_proxy_config_revision") == 6  # the slowest worker
    # what render() writes parses back to the same numbers
    again = metrics_merge.parse(metrics_merge.render(merged))
    assert _value(again, "gwadm_proxy_requests_total", route="r1", status="200") == 5


def test_retired_counts_keep_totals_monotonic_and_hub_only_families_are_kept() -> None:
    retired = metrics_merge.Retired()
    retired.add(_worker(4, 7))  # a worker that died after counting 4
    hub = metrics_merge.parse(
        b"# HELP gwadm_proxy_workers w\n# TYPE gwadm_proxy_workers gauge\ngwadm_proxy_workers 2\n"
    )
    merged = metrics_merge.merge([_worker(1, 7)], hub, retired)
    assert _value(merged, "gwadm_proxy_requests_total", route="r1", status="200") == 5
    assert _value(merged, "gwadm_proxy_config_revision") == 7  # gauges of dead workers are not kept
    assert _value(merged, "gwadm_proxy_workers") == 2
