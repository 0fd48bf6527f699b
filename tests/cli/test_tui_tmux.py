"""The live view over time: Monitor against stand-in nodes, keys on a pty, and `gwadm top` in tmux.

The tmux test is the end-to-end promise of `gwadm top`: against a real 3-node cluster with a proxy,
the screen shows the leader, keeps refreshing after the leader is SIGKILLed (showing it down and the
leader change), and `q` ends the process with the terminal restored. It needs tmux; without it the
test is skipped, except under CI=true where a missing tmux is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from cli import procs
from cli.main import cli
from cli.tui import KeyReader, Monitor, Targets
from tests.cli.conftest import Serve


# ---- stand-in nodes -------------------------------------------------------------------------------
def node_app(
    nid: str,
    role: str,
    *,
    delay: float = 0.0,
    revision: int = 4,
    status: dict[str, Any] | None = None,
    fleet: list[dict[str, Any]] | None = None,
    seen: list[str] | None = None,
) -> web.Application:
    """A CP node's read endpoints as the live view uses them; ``delay`` plays a paused node.

    Without ``status`` (extra ``/v1/status`` fields) it is an older server: no started_at, no counts,
    fleet entries without status_address/last_ack_at. ``seen`` collects the paths asked.
    """
    me = {"id": nid, "role": role, "leader": "n1", "term": 3, "commit_index": 9, "applied_index": 9,
          "revision": revision, "has_quorum": True, "reachable": True, "hash": "h", **(status or {})}  # fmt: skip
    items = fleet if fleet is not None else [{"id": "p1", "connected": True, "revision": revision,
                                              "mode": "synced", "node": nid}]  # fmt: skip

    async def handle(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.path)
        if delay:
            await asyncio.sleep(delay)
        if request.path == "/v1/status":
            return web.json_response(me)
        if request.path == "/v1/proxies/local":
            return web.json_response({"items": items})
        if request.path == "/v1/config":
            routes = [{"id": "r1"}, {"id": "r2"}]
            return web.json_response({"revision": revision, "hash": "h", "resources": {"routes": routes}})
        if request.path == "/v1/cluster":
            return web.json_response({"leader": "n1", "node": nid, "members": [me]})
        return web.json_response({"error": {"code": "not_found", "message": request.path}}, status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


def test_a_paused_node_costs_one_timeout_not_a_frozen_screen(serve: Serve, dead_url: str) -> None:
    live = serve(node_app("n2", "follower"))
    paused = serve(node_app("n3", "follower", delay=5.0))
    targets = Targets(token="t", endpoints=(dead_url, paused.url, live.url))
    monitor = Monitor(lambda: targets, timeout=0.5)
    started = time.monotonic()
    snap = monitor.poll()
    assert time.monotonic() - started < 2.0
    rows = {r["id"]: r for r in snap["nodes"]}
    assert rows["n2"]["reachable"] and rows["n2"]["role"] == "follower"
    assert rows[dead_url]["error"] == "connection refused" and rows[paused.url]["error"] == "timed out"
    assert snap["source"] == {"id": "n2", "url": live.url}  # failed over past the dead and the paused
    # an older server: no counts in /v1/status (config export instead), no started_at (uptime as seen)
    assert snap["config"] == {"revision": 4, "hash": "h",
                              "counts": {"upstreams": 0, "routes": 2, "consumers": 0, "plugins": 0}}  # fmt: skip
    assert rows["n2"]["uptime_observed"] is True
    assert [(p["id"], p["mode"], p["node"]) for p in snap["proxies"]] == [("p1", "synced", "n2")]


def metrics_app(delay: float = 0.0) -> web.Application:
    """A proxy's /metrics whose counters grow by 10 requests (1 a 503) at every scrape."""
    scrapes = [0]

    async def handle(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        scrapes[0] += 1
        n = 10 * scrapes[0]
        text = (
            "# TYPE gwadm_proxy_requests_total counter\n"
            f'gwadm_proxy_requests_total{{route="r1",status="200"}} {n - scrapes[0]}\n'
            f'gwadm_proxy_requests_total{{route="r1",status="503"}} {scrapes[0]}\n'
            "# TYPE gwadm_proxy_request_duration_seconds histogram\n"
            f'gwadm_proxy_request_duration_seconds_bucket{{le="0.01",route="r1"}} {n}\n'
            f'gwadm_proxy_request_duration_seconds_bucket{{le="+Inf",route="r1"}} {n}\n'
        )
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


def test_remote_mode_uses_started_at_counts_and_status_addresses(serve: Serve, dead_url: str) -> None:
    """A current server: uptime and counts from /v1/status (no /v1/config export), proxies' "last
    sync" from last_ack_at and traffic from their /metrics; silent proxies cost no extra time."""
    live, paused = serve(metrics_app()), serve(metrics_app(delay=5.0))
    wall = time.time()

    def entry(pid: str, url: str | None, ack: float | None) -> dict[str, Any]:
        return {"id": pid, "connected": True, "revision": 4, "mode": "synced", "node": "n1",
                "address": "127.0.0.1", "status_address": url.split("//")[1] if url else None,
                "last_ack_at": ack}  # fmt: skip

    fleet = [entry("p1", live.url, wall - 30), entry("p2", dead_url, wall - 5), entry("p3", paused.url, None),
             entry("p4", None, wall - 1)]  # fmt: skip
    seen: list[str] = []
    counts = {"upstreams": 1, "routes": 3, "consumers": 0, "plugins": 2}
    node = serve(node_app("n1", "leader", status={"started_at": wall - 3600, "counts": counts},
                          fleet=fleet, seen=seen))  # fmt: skip
    monitor = Monitor(lambda: Targets(token="t", endpoints=(node.url,)), timeout=0.5)
    first = monitor.poll()
    assert first["config"] == {"revision": 4, "hash": "h", "counts": counts}
    n1 = first["nodes"][0]
    assert n1["id"] == "n1" and n1["uptime_observed"] is False and 3599 <= n1["uptime"] < 3700
    rows = {r["id"]: r for r in first["proxies"]}
    assert 29 <= rows["p1"]["sync_age"] < 60 and rows["p3"]["sync_age"] is None
    # Scraped from the next poll on (addresses learnt from this fleet), alongside the node probes;
    # rates need two scrapes.
    second = monitor.poll()
    assert all(r["req_s"] is None for r in first["proxies"] + second["proxies"])
    started = time.monotonic()
    third = monitor.poll()
    assert time.monotonic() - started < 1.5  # the paused proxy costs one timeout, in parallel
    rows = {r["id"]: r for r in third["proxies"]}
    p1 = rows["p1"]
    assert p1["req_s"] is not None and p1["req_s"] > 0 and p1["err_s"] > 0 and p1["p99"] is not None
    for pid in ("p2", "p3", "p4"):  # refused, timed out, no status address
        assert (rows[pid]["req_s"], rows[pid]["p99"], rows[pid]["mode"]) == (None, None, "synced"), pid
    assert "/v1/config" not in seen


def test_failover_when_the_node_in_use_dies(serve: Serve) -> None:
    a, b = serve(node_app("n1", "leader")), serve(node_app("n2", "follower"))
    nodes = ({"id": "n1", "admin_url": a.url}, {"id": "n2", "admin_url": b.url})
    monitor = Monitor(lambda: Targets(token="t", endpoints=(a.url, b.url), nodes=nodes), timeout=0.5)
    first = monitor.poll()
    assert first["source"]["id"] == "n1" and first["leader"] == "n1"
    a.stop()
    second = monitor.poll()
    assert second["source"]["id"] == "n2"
    assert {r["id"]: r["reachable"] for r in second["nodes"]} == {"n1": False, "n2": True}
    messages = [e["message"] for e in second["events"]]
    assert "n1 down (connection refused)" in messages and "reading cluster data from n2 (was n1)" in messages
    assert [e["message"] for e in monitor.events][0].startswith("watching 2 nodes")


def test_status_json_against_an_endpoint_and_bad_interval(serve: Serve) -> None:
    node = serve(node_app("n1", "leader"))
    result = CliRunner().invoke(cli, ["status", "--json", "-e", node.url, "--token", "t"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["leader"] == "n1" and doc["nodes"][0]["lag"] == 0 and doc["config"]["counts"]["routes"] == 2
    bad = CliRunner().invoke(cli, ["top", "--interval", "0.01", "-e", node.url, "--token", "t"])
    assert bad.exit_code != 0 and "--interval" in bad.output and "Traceback" not in bad.output


# ---- keys ------------------------------------------------------------------------------------------
def test_key_reader_reads_single_keys_and_restores_the_terminal() -> None:
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        with open(slave, closefd=False) as stream, KeyReader(stream) as keys:
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: no line buffering
            assert keys.read(0.05) == ""
            os.write(master, b"q")
            assert keys.read(1.0) == "q"  # no Enter needed
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_key_reader_without_a_terminal_just_waits() -> None:
    with open(os.devnull) as stream, KeyReader(stream) as keys:
        assert keys.fd is None and keys.read(0.01) == ""


# ---- gwadm top in tmux against a real cluster -----------------------------------------------------
def gwadm(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=procs.child_env())  # fmt: skip


def wait_for(what: str, check: Callable[[], Any], deadline: float, screen: Callable[[], str]) -> Any:
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; the screen:\n{screen()}")


@pytest.fixture
def tmux() -> Iterator[Callable[..., str]]:
    """``tmux(*args)`` on a private server socket, so the user's own tmux is never touched."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is required under CI=true (apt-get install tmux)")
        pytest.skip("tmux is not installed: the full-screen test of `gwadm top` needs it")
    socket = f"gwadm-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def run(*args: str) -> str:
        out = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        yield run
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_top_follows_a_leader_kill_and_quits_on_q(tmp_path: Path, tmux: Callable[..., str]) -> None:
    d = tmp_path / "gw"
    up = gwadm(
        "cluster", "up", "--dir", str(d), "--nodes", "3", "--proxies", "1", "--json", "--timeout", "60"
    )
    try:
        assert up.returncode == 0, up.stderr
        pids = {n["id"]: n["pid"] for n in json.loads(up.stdout)["nodes"]}
        rc_file, stty_file = tmp_path / "rc", tmp_path / "stty"
        env = " ".join(
            f"{k}={shlex.quote(v)}" for k, v in procs.child_env().items() if k in ("PYTHONPATH", "PATH")
        )
        top = f"{shlex.join([sys.executable, '-m', 'cli', 'top', '--dir', str(d)])}"
        script = f"env {env} {top}; echo $? > {rc_file}; stty -a > {stty_file}"
        tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "50", f"sh -c {shlex.quote(script)}")
        tmux("set-option", "-t", "top", "remain-on-exit", "on")

        def screen() -> str:
            return tmux("capture-pane", "-p", "-t", "top")

        deadline = time.monotonic() + 60
        leader = wait_for("the leader", lambda: re.findall(r"control plane \(leader: (n\d)\)", screen()),
                          deadline, screen)[0]  # fmt: skip
        os.kill(pids[leader], signal.SIGKILL)

        def failed_over() -> bool:
            text = screen()
            down = re.search(rf"^│ {leader} .*│ down ", text, re.M)
            return bool(down and re.search(rf"leader {leader} → n\d \(term \d+\)", text))

        wait_for(f"{leader} down and a new leader", failed_over, time.monotonic() + 30, screen)
        tmux("send-keys", "-t", "top", "q")
        wait_for("the pane's process to exit", lambda: tmux("display", "-p", "-t", "top", "#{pane_dead}").strip()
                 == "1", time.monotonic() + 10, screen)  # fmt: skip
        assert rc_file.read_text().strip() == "0"
        modes = stty_file.read_text().split()
        assert "icanon" in modes and "echo" in modes  # cbreak undone
        assert "Traceback" not in screen()
    finally:
        gwadm("cluster", "down", "--dir", str(d), "--timeout", "5")
