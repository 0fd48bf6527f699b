"""``--workers`` flag parsing, the port check, and the feed's door: only our own workers get in."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cli.commands.proxy import proxy_group
from proxy.feed import read_message, write_message
from proxy.node import SettingsError, WorkersNode, load_settings, parse_workers
from proxy.workers import HubDataPlane, WorkerHub, cpu_count


def test_workers_flag() -> None:
    assert parse_workers("1") == 1 and parse_workers(" 4 ") == 4
    assert parse_workers("auto") == parse_workers("AUTO") == cpu_count() >= 1
    for bad in ("0", "-2", "two", "257", ""):
        with pytest.raises(SettingsError, match="--workers: expected a number 1..256 or 'auto'"):
            parse_workers(bad)


def test_cli_bad_workers_is_one_line(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("tok")
    result = CliRunner().invoke(
        proxy_group,
        ["run", "--cp", "http://127.0.0.1:1", "--listen", "127.0.0.1:1", "--status-listen", "127.0.0.1:2",
         "--state-dir", str(tmp_path / "s"), "--token-file", str(token), "--workers", "lots"],
    )  # fmt: skip
    assert (
        result.exit_code == 2 and "--workers: expected" in result.output and "Traceback" not in result.output
    )


def test_a_port_held_without_reuseport_fails_at_start(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("tok")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = load_settings(cp="http://127.0.0.1:1", listen=f"127.0.0.1:{port}", status_listen="127.0.0.1:0",
                                 state_dir=str(tmp_path / "s"), token_file=str(token))  # fmt: skip
        with pytest.raises(SettingsError, match=f"--listen: cannot listen on 127.0.0.1:{port}"):
            WorkersNode(settings, 2)


async def test_the_feed_refuses_a_wrong_key_and_a_stranger_pid() -> None:
    dp = HubDataPlane(proxy_id="p")
    sync = SimpleNamespace(state=None, hash="", revision=0, pending_delta=None)
    hub = WorkerHub(count=1, listen=("127.0.0.1", 1), proxy_id="p", sync=sync, dp=dp)  # type: ignore[arg-type]
    hub.workers[0].proc = SimpleNamespace(pid=os.getpid(), returncode=None)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as d:
        hub._dir = d
        server = await asyncio.start_unix_server(hub._on_connect, path=hub.feed_path)
        try:

            async def hello(**fields: object) -> dict[str, object] | None:
                reader, writer = await asyncio.open_unix_connection(hub.feed_path)
                write_message(writer, {"t": "worker-hello", "index": 0, "pid": os.getpid(), **fields})
                try:
                    return await asyncio.wait_for(read_message(reader), 5)
                finally:
                    writer.close()

            assert await hello(key="wrong") is None  # closed without a word
            assert await hello(key=hub.key, pid=1) is None  # the right key, but not our worker's pid
            assert await hello(key=hub.key, index=5) is None
            setup = await hello(key=hub.key)
            assert setup is not None and setup["t"] == "setup" and setup["proxy_id"] == "p"
        finally:
            server.close()
            hub._dir = None


async def test_hub_status_port_without_serving_workers() -> None:
    """No worker is up yet: /ready is a 503 JSON error, /status and /metrics still answer."""
    from aiohttp.test_utils import TestClient, TestServer

    from proxy.workers import create_hub_status_app

    dp = HubDataPlane(proxy_id="p")
    sync = SimpleNamespace(state=None, hash="", revision=0, pending_delta=None)
    hub = WorkerHub(count=2, listen=("127.0.0.1", 1), proxy_id="p", sync=sync, dp=dp)  # type: ignore[arg-type]
    async with TestClient(TestServer(create_hub_status_app(hub))) as client:
        ready = await client.get("/ready")
        assert ready.status == 503 and (await ready.json())["error"]["code"] == "not_ready"
        status = await (await client.get("/status")).json()
        assert status["workers_serving"] == 0 and status["revision"] == 0 and len(status["workers"]) == 2
        assert not any(w["alive"] for w in status["workers"])
        metrics = await (await client.get("/metrics")).text()
        assert 'gwadm_proxy_workers{state="configured"} 2.0' in metrics
