"""Raft events (cluster/events.py) produced by real in-process members on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.test_membership_raft import Nodes
from tests.support.http import wait_for


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


async def test_a_lagging_follower_gets_a_snapshot_and_the_leader_records_snapshot_sent(nodes: Nodes) -> None:
    peers = {"n1": ["n2", "n3"], "n2": ["n1", "n3"], "n3": ["n1", "n2"]}
    for nid in peers:
        nodes.start(nid, peers[nid], compaction=10)
    leader = nodes.leader()
    await leader.submit(b"first", timeout=5)
    lagging = next(nid for nid, n in nodes.running.items() if n is not leader)
    nodes.running.pop(lagging).destroy_synchronous()
    for i in range(40):  # far past the compaction threshold: the leader's log no longer reaches back
        await leader.submit(f"w{i}".encode(), timeout=5)
    leader_id = leader.settings.node_id
    wait_for(lambda: os.path.exists(nodes.base / leader_id / "raft.dump"), 10, "the leader compacted its log")
    before = [e for e in leader.events.since() if e["event"] == "snapshot_sent"]
    back = nodes.start(lagging, peers[lagging], compaction=10)
    sent = wait_for(lambda: next((e for e in leader.events.since() if e["event"] == "snapshot_sent"
                                  and e not in before), None), 10, "snapshot_sent on the leader")
    assert sent["peer"] == lagging
    assert isinstance(sent["size"], int) and sent["size"] > 0
    assert leader.status()["link_counters"]["snapshots_sent"] >= 1
    wait_for(lambda: any(e["event"] == "snapshot_installed" for e in back.events.since()), 10,
             "snapshot_installed on the follower")
    await leader.submit(b"after", timeout=5)
    wait_for(lambda: nodes.applied[lagging][-1:] == [b"after"], 10, "the follower applies after the snapshot")
