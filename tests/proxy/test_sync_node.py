"""The proxy process: settings validation, boot from cache, serving, `gwadm proxy run` itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from cli.commands.proxy import proxy_group
from proxy.node import ProxyNode, SettingsError, load_settings
from tests.cluster.test_push_fakes import PROXY_TOKEN, FakeCluster, FakeStore, HubServer, put, route, until


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "proxy.token"
    path.write_text(PROXY_TOKEN + "\n")
    return str(path)


def settings(tmp_path: Path, token_file: str, **kw: Any) -> Any:
    args = dict(cp="http://127.0.0.1:1", listen="127.0.0.1:0", status_listen="127.0.0.1:0",
                state_dir=str(tmp_path / "state"), token_file=token_file, proxy_id="px")  # fmt: skip
    args.update(kw)
    return load_settings(**args)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cp": "nonsense"}, "--cp: 'nonsense' is not an http"),
        ({"cp": " , "}, "--cp: at least one"),
        ({"listen": "localhost"}, "--listen: expected HOST:PORT"),
        ({"status_listen": "127.0.0.1:99999"}, "--status-listen: expected HOST:PORT"),
        ({"listen": "127.0.0.1:5", "status_listen": "127.0.0.1:5"}, "must differ"),
        ({"token_file": "/nonexistent/token"}, "--token-file: cannot read"),
    ],
)
def test_bad_settings(tmp_path: Path, token_file: str, override: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(tmp_path, **{"token_file": token_file, **override})


def test_empty_token_and_generated_id(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        settings(tmp_path, str(empty))
    good = tmp_path / "t"
    good.write_text("tok")
    a = settings(tmp_path, str(good), proxy_id=None)
    b = settings(tmp_path, str(good), proxy_id=None)
    assert a.proxy_id == b.proxy_id and a.proxy_id  # kept in the state dir
    assert a.cp_urls == ("http://127.0.0.1:1",) and a.listen == ("127.0.0.1", 0)


def test_cli_bad_flag_is_one_line_without_traceback(tmp_path: Path, token_file: str) -> None:
    result = CliRunner().invoke(
        proxy_group,
        ["run", "--cp", "nope", "--listen", "127.0.0.1:1", "--status-listen", "127.0.0.1:2",
         "--state-dir", str(tmp_path), "--token-file", token_file],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--cp: 'nope' is not an http" in result.output and "Traceback" not in result.output


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"up:{request.path}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


def ports(node: ProxyNode) -> tuple[int, int]:
    return node._runners[0].addresses[0][1], node._runners[1].addresses[0][1]


async def test_node_syncs_serves_and_boots_from_cache(tmp_path: Path, token_file: str, upstream: int) -> None:
    store = FakeStore()
    cluster = FakeCluster(store)
    cluster.write(put("upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": upstream}]}))
    head = cluster.write(put("routes", "r1", route("/api")))
    hub = await HubServer(store).start()
    nodes: list[ProxyNode] = []
    try:
        node = ProxyNode(settings(tmp_path, token_file, cp=hub.url), seed=1, backoff_max=0.2)
        nodes.append(node)
        await node.start()
        traffic, status = ports(node)
        async with aiohttp.ClientSession() as http:
            r = await http.get(f"http://127.0.0.1:{traffic}/api/x")
            assert r.status in (503, 200)  # 503 JSON while empty; the first sync may already be done
            await until(lambda: node.dp.mode == "synced" and node.dp.revision == head, what="synced")
            r = await http.get(f"http://127.0.0.1:{traffic}/api/x")
            assert (r.status, await r.text()) == (200, "up:/api/x")
            st = await (await http.get(f"http://127.0.0.1:{status}/status")).json()
            assert (st["mode"], st["revision"], st["connected_cp"]) == (
                "synced",
                head,
                node.sync.connected_url,
            )
            await node.stop()
            await hub.stop()

            # Control plane gone: a restarted proxy serves the cached config from its first request.
            again = ProxyNode(settings(tmp_path, token_file, cp=hub.url), seed=1, backoff_max=0.2)
            nodes.append(again)
            await again.start()
            assert (again.dp.mode, again.dp.revision) == ("cached", head)
            traffic, status = ports(again)
            r = await http.get(f"http://127.0.0.1:{traffic}/api/y")
            assert (r.status, await r.text()) == (200, "up:/api/y")
            assert (await http.get(f"http://127.0.0.1:{status}/ready")).status == 200
    finally:
        for n in nodes:
            await n.stop()
        await hub.stop()


async def test_port_in_use_is_a_settings_error(tmp_path: Path, token_file: str) -> None:
    blocker = web.AppRunner(web.Application())
    await blocker.setup()
    await web.TCPSite(blocker, "127.0.0.1", 0).start()
    busy = blocker.addresses[0][1]
    try:
        node = ProxyNode(settings(tmp_path, token_file, listen=f"127.0.0.1:{busy}"))
        with pytest.raises(SettingsError, match=f"--listen: cannot listen on 127.0.0.1:{busy}"):
            await node.start()
        assert node._runners == []
    finally:
        await blocker.cleanup()


def test_gwadm_proxy_run_stops_cleanly_on_sigterm(tmp_path: Path, token_file: str) -> None:
    """The real command: comes up in mode empty (no CP reachable) and exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "proxy", "run", "--cp", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
         "--status-listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"), "--token-file", token_file],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        lines: list[str] = []
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "listening on" in line or not line:
                break
        assert any("listening on" in ln for ln in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=20)[1]
        assert proc.returncode == 0, rest
        assert "shutting down" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
