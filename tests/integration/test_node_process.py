"""Node process edge cases: busy ports and bad settings give clear errors; dumps survive restarts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster.node import GC_THRESHOLD
from tests.integration.test_failover import assert_all_present, write_any
from tests.support.cluster import ROOT, Cluster, upstream_body
from tests.support.http import request


def run_node(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster", "run", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize(
    ("which", "message"),
    [("raft_addr", "cannot bind Raft address"), ("admin_addr", "cannot listen on admin address")],
)
def test_busy_port_is_a_clear_error(tmp_path: Path, which: str, message: str) -> None:
    c = Cluster(tmp_path, size=1)
    node = c.nodes[0]
    host, port = getattr(node, which).split(":")
    with socket.socket() as blocker:
        blocker.bind((host, int(port)))
        blocker.listen()
        result = run_node(node.dir / "node.toml")
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('node_id = "n1"\nraft_addr = "127.0.0.1:1"\nadmin_addr = "nope"\ndata_dir = "d"\nsecret = "s"\n')
    result = run_node(cfg)
    assert result.returncode != 0 and "admin_addr must look like host:port" in result.stderr
    cfg.write_text('node_id = "n1"\nraft_addr = "127.0.0.1:1"\nadmin_addr = "127.0.0.1:2"\ndata_dir = "d"\n')
    result = run_node(cfg)
    assert result.returncode != 0 and "secret is required" in result.stderr
    cfg.write_text('node_id = "n1"\nraft_addr = "127.0.0.1:1"\nadmin_addr = "127.0.0.1:2"\ndata_dir = "d"\n'
                   'secret = "s"\n[raft]\nmin_timout = 0.2\n')
    result = run_node(cfg)
    assert result.returncode != 0 and "unknown [raft] setting(s): min_timout" in result.stderr


def test_log_compaction_dumps_are_msgpack_and_survive_kill_all(tmp_path: Path) -> None:
    c = Cluster(tmp_path, raft={"compaction_min_entries": 10})
    c.start_all()
    try:
        c.wait_ready()
        acked = {}
        for i in range(60):
            write_any(c, f"c{i}", 14000 + i, f"c-{i}", time.monotonic() + 10)
            acked[f"c{i}"] = 14000 + i
        dumps = list(tmp_path.glob("n*/data/raft/raft.dump"))
        assert dumps, "no log compaction dump was written"
        for dump in dumps:
            assert not dump.read_bytes().startswith(b"\x1f\x8b"), "dump must be msgpack, not gzip+pickle"
        c.kill_all()
        c.start_all()
        c.wait_ready()
        assert_all_present(c, acked)
        write_any(c, "after", 15000, "after", time.monotonic() + 10)
    finally:
        c.stop_all()


def test_a_running_node_tunes_its_collector_and_freezes_what_boot_built(cluster: Cluster) -> None:
    leader = cluster.wait_ready()

    def young_collections() -> int:
        status = cluster.status(leader)
        assert status is not None
        return int(status["gc"]["collections"][0])

    before = young_collections()
    for i in range(100):
        r = request("PUT", leader.url + f"/v1/upstreams/gc{i}", token=cluster.token, json_body=upstream_body(20000 + i))
        assert r.status in (200, 201), r.body
    # At the default threshold (700) the leader collects its young generation about 6 times in
    # these 100 writes.
    assert young_collections() - before <= 2
    for node in cluster.nodes:
        status = cluster.status(node)
        assert status is not None, node.id
        assert tuple(status["gc"]["threshold"]) == GC_THRESHOLD, node.id
        assert status["gc"]["frozen"] > 10_000, node.id  # modules, settings, the restored config


def test_concurrent_writes_share_log_entries_and_the_status_counts_them(cluster: Cluster) -> None:
    """/v1/status `proposals` (cluster/raft_proposals.py) and `append_entries` (raft_batch.py)."""
    leader = cluster.wait_ready()
    writers, each = 32, 8

    def write(w: int) -> None:
        for i in range(each):
            r = request("PUT", leader.url + f"/v1/upstreams/cw{w}", token=cluster.token,
                        json_body=upstream_body(21000 + i))
            assert r.status in (200, 201), r.body

    status = cluster.status(leader)
    assert status is not None
    before = status["proposals"]["entries"]
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    status = cluster.status(leader)
    assert status is not None
    proposals, rounds = status["proposals"], status["append_entries"]
    assert set(proposals) == {"entries", "batched"}
    assert proposals["batched"] > 0 and proposals["entries"] - before < writers * each, proposals
    assert set(rounds) == {"rounds", "coalesced"} and rounds["rounds"] > 0, rounds
