"""A fleet spreads over the CP nodes: the first node a proxy tries depends on its id."""

from __future__ import annotations

from proxy.server import DataPlane
from proxy.sync import SyncClient


def test_proxies_start_on_different_nodes_and_keep_theirs() -> None:
    urls = [f"http://127.0.0.1:{8000 + i}" for i in range(3)]
    firsts = {SyncClient(urls, "t", f"p{i}", DataPlane(), None)._pick().url for i in range(10)}
    assert len(firsts) >= 2, firsts  # not every proxy on the first URL
    again = {SyncClient(urls, "t", "p3", DataPlane(), None)._pick().url for _ in range(3)}
    assert len(again) == 1  # a restarted proxy goes back to the same node
