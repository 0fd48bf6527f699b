"""A proxy's credentials are re-checked while it streams, and the fleet view says where to find it.

Streams authenticate once, at the websocket handshake; without a re-check a revoked or rotated proxy
token would keep receiving config until the proxy happened to reconnect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(tmp_path, proxies=1, upstreams=("a",)) as e:
        yield e


def test_revoking_the_proxy_token_cuts_its_stream_and_the_proxy_keeps_serving_cached(env: DataPlaneEnv) -> None:
    env.put("upstreams", "ua", env.upstream_spec("a"))
    revision = env.put("routes", "hello", {"paths": ["/hello"], "upstream": "ua"})
    proxy = env.proxies[0]
    proxy.wait_revision(revision)
    cluster = env.cluster
    node = cluster.nodes[0]

    # The fleet entry says where the proxy's status/metrics live and when it last acknowledged.
    def entry() -> dict | None:  # type: ignore[type-arg]
        items = cluster.api(node, "GET", "/v1/proxies").json()["items"]
        return next((p for p in items if p["id"] == proxy.id and p["connected"] and p["last_ack_at"]), None)

    fleet = wait_for(entry, 10, "fleet entry with last_ack_at")
    assert fleet["status_address"] == f"127.0.0.1:{proxy.status_port}"
    assert abs(fleet["last_ack_at"] - time.time()) < 60
    status = cluster.api(node, "GET", "/v1/status").json()
    assert status["counts"]["routes"] == 1 and status["counts"]["upstreams"] == 1
    assert 0 < time.time() - status["started_at"] < 300

    r = cluster.api(node, "POST", "/v1/tokens/revoke", {"token": cluster.proxy_token})
    assert r.status == 200, r
    # Re-checked at least every status interval (3 s); reconnecting is then refused with 401.
    wait_for(lambda: proxy.status()["mode"] == "cached", 15, "proxy in cached mode after revocation")
    assert request("GET", proxy.url + "/hello/x").status == 200  # still serving its last config
    later = env.put("routes", "later", {"paths": ["/later"], "upstream": "ua"})
    time.sleep(1.0)
    assert proxy.status()["revision"] < later  # and no longer receiving any
    assert "revoked" in proxy.log_tail(200)
