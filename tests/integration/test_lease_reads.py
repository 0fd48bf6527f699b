"""Leader leases on three real node processes on loopback ([raft] lease_reads = true).

Linearizable reads on the leader are answered from its lease, without a heartbeat round each
(``read_index_rounds`` in /v1/status counts them); once both followers are paused (SIGSTOP) the
leader stops answering from its lease when the lease ends, although it still believes it leads."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, NodeProc, running_cluster, upstream_body

LEASE = 0.08  # seconds; < min_timeout (0.15) - lease_clock_drift (0.02)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, fsync=False, raft={"lease_reads": True, "lease_duration": LEASE}) as c:
        yield c


def _status(cluster: Cluster, node: NodeProc) -> dict[str, object]:
    st = cluster.status(node)
    assert st is not None, f"{node.id} does not answer /v1/status"
    return st


def test_lease_reads_cost_no_heartbeat_round_and_stop_when_the_lease_ends(cluster: Cluster) -> None:
    leader = cluster.wait_ready()
    assert cluster.api(leader, "PUT", "/v1/upstreams/u1", upstream_body()).status in (200, 201)
    before = _status(cluster, leader)
    assert before["lease"]["enabled"] is True  # type: ignore[index]
    for _ in range(30):
        r = cluster.api(leader, "GET", "/v1/upstreams/u1")  # linearizable: the default
        assert r.status == 200, r.body
    after = _status(cluster, leader)
    assert after["term"] == before["term"], "leadership moved during the reads: rerun"
    rounds = int(after["read_index_rounds"]) - int(before["read_index_rounds"])  # type: ignore[call-overload]
    leased = int(after["lease"]["reads"]) - int(before["lease"]["reads"])  # type: ignore[index]
    assert leased >= 28 and rounds <= 2, (leased, rounds)

    followers = [n for n in cluster.nodes if n is not leader]
    try:
        for f in followers:
            assert f.proc is not None
            os.kill(f.proc.pid, signal.SIGSTOP)
        paused = time.monotonic()
        answered_late = []
        while time.monotonic() - paused < 0.6:  # well inside leader_fallback_timeout (1 s)
            started = time.monotonic()
            r = cluster.api(leader, "GET", "/v1/upstreams/u1", headers={"X-Request-Timeout": "0.2"})
            if r.status == 200 and started - paused > LEASE:
                answered_late.append(round(started - paused, 3))
        assert answered_late == [], f"reads answered after the lease ended: {answered_late}"
        st = _status(cluster, leader)
        assert st["role"] == "leader" or not st["has_quorum"]
        assert st["lease"]["valid_for_s"] in (None, 0.0)  # type: ignore[index]
        served = st["lease"]["reads"]  # type: ignore[index]
        r = cluster.api(leader, "GET", "/v1/upstreams/u1", headers={"X-Request-Timeout": "0.2"})
        assert r.status == 503, r.body
        assert _status(cluster, leader)["lease"]["reads"] == served  # type: ignore[index]
    finally:
        for f in followers:
            if f.proc is not None:
                os.kill(f.proc.pid, signal.SIGCONT)
