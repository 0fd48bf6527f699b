"""`gwadm register` end to end: registers, survives a CP node's death, stops heartbeating while its
health URL fails, re-registers when it passes again, deregisters on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.auth import mint_token
from tests.support.cluster import ROOT, Cluster, free_port, running_cluster, upstream_body
from tests.support.dataplane import UpstreamProc
from tests.support.http import wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    (tmp_path / "cp").mkdir()
    with running_cluster(tmp_path / "cp") as c:
        assert c.api(c.nodes[0], "PUT", "/v1/upstreams/svc", upstream_body(9001)).status == 201
        yield c


def _agent(c: Cluster, tmp: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    token_file = tmp / "registrar.token"
    token_file.write_text(mint_token(c.secret, "registrar", "agent", 600))
    log = open(tmp / f"agent-{name}.log", "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "register", "-e", ",".join(n.url for n in c.nodes),
             "--token-file", str(token_file), "--upstream", "svc", *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    finally:
        log.close()


def _registered(c: Cluster) -> dict[int, dict[str, Any]]:
    for node in c.nodes:
        if not node.alive:
            continue
        try:
            r = c.api(node, "GET", "/v1/upstreams/svc/targets", timeout=3)
        except OSError:
            continue
        if r.status == 200:
            return {t["port"]: t for t in r.json()["registered"]}
    raise AssertionError("no node answered")


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def test_register_agent_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    inst = UpstreamProc("inst", free_port(), tmp_path)
    inst.start()
    other_port = free_port()
    a = _agent(c, tmp_path, "a", "--target", f"127.0.0.1:{inst.port}", "--ttl", "2", "--interval", "0.3",
               "--health-url", f"http://127.0.0.1:{inst.port}/health")
    b = _agent(c, tmp_path, "b", "--target", f"127.0.0.1:{other_port}", "--ttl", "60", "--meta", "zone=z1")
    bad = subprocess.run(
        [sys.executable, "-m", "cli", "register", "-e", c.nodes[0].url, "--token", c.token, "--upstream", "nope",
         "--target", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode != 0 and "error:" in bad.stderr and "does not exist" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    try:
        wait_for(lambda: {inst.port, other_port} <= set(_registered(c)), 20, "both agents registered")
        assert _registered(c)[other_port]["metadata"] == {"zone": "z1"}
        shown = subprocess.run(
            [sys.executable, "-m", "cli", "upstream", "targets", "svc", "-e", c.nodes[1].url, "--token", c.token],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"127.0.0.1:{inst.port}" in shown.stdout and "registered" in shown.stdout and "static" in shown.stdout

        # The agents' first endpoint dies: they fail over, nothing expires.
        c.kill(c.nodes[0])
        time.sleep(4)  # two TTLs of agent a
        assert {inst.port, other_port} <= set(_registered(c))

        # Health fails: agent a stops heartbeating and its registration expires.
        inst.stop()
        wait_for(lambda: inst.port not in _registered(c), 10, "unhealthy instance expired")
        inst.start()
        wait_for(lambda: inst.port in _registered(c), 10, "healthy again: registered again")

        # SIGTERM deregisters at once (agent b's TTL is 60 s).
        assert _stop(b) == 0
        assert other_port not in _registered(c)
        log_b = (tmp_path / "agent-b.log").read_text()
        assert "deregistered" in log_b
        assert a.poll() is None, (tmp_path / "agent-a.log").read_text()
    finally:
        _stop(a)
        _stop(b)
        inst.stop()
