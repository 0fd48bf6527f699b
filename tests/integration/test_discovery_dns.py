"""DNS targets in a real proxy process, against a DNS server the test runs on loopback: traffic
follows the record, and when DNS fails the last good address keeps serving, with the failure in
/status and /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ROOT, free_port
from tests.support.dataplane import DataPlaneEnv, UpstreamProc
from tests.support.dns import DnsServer
from tests.support.http import request, wait_for


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def upstream_b(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A second demo upstream on 127.0.0.2 (loopback), on a port chosen by the test."""
    port = free_port()
    log = open(tmp_path / "upstream-b.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "demo-upstream", "--listen", f"127.0.0.2:{port}",
                             "--name", "b"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ}, start_new_session=True)
    log.close()
    try:
        yield "127.0.0.2", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _served_by(env: DataPlaneEnv) -> str:
    r = env.proxies[0].get("/svc/x")
    assert r.status == 200, r
    name: str = r.json()["upstream"]
    return name


def test_proxy_follows_dns_and_keeps_the_last_good_address(tmp_path: Path, dns: DnsServer,
                                                         upstream_b: tuple[str, int]) -> None:
    host_b, port = upstream_b
    env = DataPlaneEnv(tmp_path, proxies=1, upstreams=())
    env.proxies[0].env.update(GWADM_DNS_SERVERS=dns.spec, GWADM_DNS_INTERVAL="1")
    # Upstream a on 127.0.0.1 on the same port as b, so the record alone decides.
    env.upstreams["a"] = UpstreamProc("a", port, tmp_path)
    dns.records["svc.test"] = [("127.0.0.1", 1)]
    with env:
        wait_for(lambda: request("GET", f"http://{host_b}:{port}/health", timeout=1).status == 200, 15, "b up")
        env.put("upstreams", "svc", {"targets": [{"host": "svc.test", "port": port, "weight": 1}]})
        rev = env.put("routes", "r", {"paths": ["/svc"], "upstream": "svc"})
        env.proxies[0].wait_revision(rev)
        wait_for(lambda: _served_by(env) == "a", 10, "traffic to the address DNS gave")

        dns.records["svc.test"] = [(host_b, 1)]
        wait_for(lambda: _served_by(env) == "b", 10, "traffic follows the new record")

        dns.mode = "servfail"

        def failing() -> dict[str, Any] | None:
            st: dict[str, Any] = env.proxies[0].status()["dns"]["svc.test"]
            return st if st["last_error"] else None

        st = wait_for(failing, 10, "the DNS failure shown in /status")
        assert st["addresses"] == [host_b] and "SERVFAIL" in st["last_error"]
        assert all(_served_by(env) == "b" for _ in range(5))  # the last good address keeps serving
        metrics = request("GET", env.proxies[0].status_url + "/metrics", timeout=5).body.decode()
        assert 'gwadm_proxy_dns_failing{name="svc.test"} 1.0' in metrics
