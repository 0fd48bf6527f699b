"""End to end: `gwadm cluster up/stop/start/status/down` with real node processes (no proxies)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import procs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def gwadm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=procs.child_env(),
    )


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "gw"
    try:
        yield d
    finally:
        if (d / "cluster.json").exists():
            gwadm("cluster", "down", "--dir", str(d), "--timeout", "5")
            data = json.loads((d / "cluster.json").read_text())
            assert all(m["pid"] is None for g in ("nodes", "proxies", "upstreams") for m in data[g])


def test_up_status_stop_start_down(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    up = gwadm("cluster", "up", "--dir", d, "--nodes", "3", "--proxies", "0", "--json", "--timeout", "40")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert [n["id"] for n in info["nodes"]] == ["n1", "n2", "n3"] and info["admin_token"]
    pids = [n["pid"] for n in info["nodes"]]
    assert all(procs.is_alive(p) for p in pids)

    put = gwadm(
        "upstream", "put", "u1", "--dir", d, "--data", '{"targets": [{"host": "127.0.0.1", "port": 9}]}'
    )
    assert put.returncode == 0, put.stderr

    status = json.loads(gwadm("status", "--dir", d, "--json").stdout)
    assert status["leader"] in {"n1", "n2", "n3"}
    assert all(n["reachable"] and n["process"] == "running" for n in status["nodes"])

    stop = gwadm("cluster", "stop", "n2", "--dir", d, "--json")
    assert json.loads(stop.stdout)[0]["result"] in {"stopped", "killed"}
    assert not procs.is_alive(pids[1])
    start = gwadm("cluster", "start", "n2", "--dir", d, "--json")
    assert start.returncode == 0, start.stderr
    assert json.loads(start.stdout)[0]["result"] == "started"

    # a second `up` leaves running members alone and keeps the data
    again = gwadm("cluster", "up", "--dir", d, "--proxies", "0", "--json")
    assert again.returncode == 0, again.stderr
    assert [n["pid"] for n in json.loads(again.stdout)["nodes"]][0] == pids[0]
    listing = json.loads(gwadm("upstream", "list", "--dir", d, "--json").stdout)
    assert [u["id"] for u in listing["items"]] == ["u1"]

    down = gwadm("cluster", "down", "--dir", d, "--json")
    assert down.returncode == 0 and not any(procs.is_alive(p) for p in pids)


def test_default_up_serves_the_sample_route_through_the_proxy(cluster_dir: Path) -> None:
    """What `make up` promises: 3 nodes, 1 proxy, the demo upstream and a curl line that works."""
    d = str(cluster_dir)
    up = gwadm("cluster", "up", "--dir", d, "--timeout", "40")
    assert up.returncode == 0, up.stderr
    curl = next(line for line in up.stdout.splitlines() if line.strip().startswith("curl "))
    # TLS by default: the proxy serves https with a certificate of DIR's CA, and the line says so
    ca = str(cluster_dir.resolve() / "tls" / "ca.pem")
    assert curl.split()[1:3] == ["--cacert", ca] and curl.split()[-1].startswith("https://127.0.0.1:"), curl
    done = subprocess.run([*shlex.split(curl), "-sS", "--max-time", "10"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr  # the line works exactly as printed (plus quiet flags)
    body = json.loads(done.stdout)
    assert body["upstream"] == "demo" and body["path"] == "/hello"
    assert body["headers"]["X-Forwarded-Proto"] == "https"
    no_ca = subprocess.run(["curl", "-sS", "--max-time", "10", curl.split()[-1]], capture_output=True, text=True,
                           timeout=30)
    assert no_ca.returncode == 60, (no_ca.returncode, no_ca.stderr)  # 60: peer certificate cannot be verified
    info = json.loads((cluster_dir / "cluster.json").read_text())
    assert len(info["proxies"]) == 1 and len(info["upstreams"]) == 1
    status = json.loads(gwadm("status", "--dir", d, "--json").stdout)
    assert status["proxies"][0]["mode"] == "synced"
