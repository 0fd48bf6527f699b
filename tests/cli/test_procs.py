"""Process helpers on one real child (the demo upstream), and the demo upstream's answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli import procs
from cli.client import get_json
from cli.demo_upstream import create_app, parse_listen


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    port = procs.free_ports(1)[0]
    log = tmp_path / "demo.log"
    pid = procs.spawn(procs.python_argv("demo-upstream", "--listen", f"127.0.0.1:{port}", "--name", "t"), log)
    try:
        yield pid, f"http://127.0.0.1:{port}", log
    finally:
        procs.terminate([pid], timeout=5.0)


def wait_health(url: str, deadline: float) -> None:
    while True:
        try:
            if get_json(url + "/health", timeout=0.5)[0] == 200:
                return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.timeout(30)
def test_spawned_member_is_ours_and_stops_on_sigterm(demo_process: tuple[int, str, Path]) -> None:
    pid, url, log = demo_process
    wait_health(url, time.monotonic() + 15)
    listen = url[len("http://") :]
    assert procs.is_alive(pid)
    assert procs.looks_like_ours(pid, [f"--listen {listen}", "--name t"])
    assert not procs.looks_like_ours(pid, [f"--listen {listen}", "--name other"])  # not this member
    status, body = get_json(url + "/x/y?a=1", timeout=2)
    assert status == 200 and body["upstream"] == "t" and body["path"] == "/x/y" and body["query"] == "a=1"
    assert procs.port_in_use("127.0.0.1", int(url.rsplit(":", 1)[1]))
    assert procs.terminate([pid], timeout=5.0) == {pid: "stopped"}
    assert not procs.is_alive(pid) and not procs.looks_like_ours(pid, [listen])
    assert procs.exit_code(pid) is not None
    assert any("listening on" in line for line in procs.tail(log))


def test_is_alive_for_unknown_pids() -> None:
    assert not procs.is_alive(None) and not procs.is_alive(0) and not procs.is_alive(2**22 + 7)
    assert procs.looks_like_ours(2**22 + 7, ["x"]) is False


def test_free_ports_are_distinct_and_free_and_never_ephemeral() -> None:
    """No outgoing connection can take a picked port before its server binds it: the kernel gives
    outgoing sockets ports from the ephemeral range only (the CI flake "cannot bind Raft address")."""
    ports = procs.free_ports(20)
    more = procs.free_ports(20)
    assert len(set(ports + more)) == 40  # never the same port twice, also across calls
    assert not any(procs.port_in_use("127.0.0.1", p) for p in ports[:3])
    low = procs._ephemeral_start()
    assert all(procs.PICK_FLOOR <= p < low for p in ports + more), (low, ports)


def test_free_ports_let_the_kernel_choose_when_the_range_is_odd(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    odd = tmp_path / "range"
    odd.write_text("10500\t60999\n")  # too little room below the ephemeral range
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", odd)
    ports = procs.free_ports(3)
    assert len(set(ports)) == 3 and all(p >= 1024 for p in ports)


async def test_demo_upstream_app() -> None:
    async with TestClient(TestServer(create_app("demo"))) as client:
        resp = await client.post("/hello/there?x=1&x=2", data=b"body", headers={"X-Test": "1"})
        body = await resp.json()
        assert resp.status == 200
        assert body["upstream"] == "demo" and body["method"] == "POST"
        assert body["path"] == "/hello/there" and body["query"] == "x=1&x=2"
        assert body["headers"]["X-Test"] == "1"
        health = await client.get("/health")
        assert health.status == 200 and (await health.json())["status"] == "ok"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_listen(":81") == ("127.0.0.1", 81)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_listen("nope")
