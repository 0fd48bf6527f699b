"""An instance dies (SIGKILL) under steady traffic: passive health and retries cover the window
until its registration expires, so idempotent requests see no error at all."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import free_port
from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request, wait_for

TTL = 2.0
# An instance that takes 50 ms per answer, so that requests are in flight when it is killed.
SLOW = """
import asyncio, sys
from aiohttp import web
async def h(request):
    await asyncio.sleep(0.05)
    return web.json_response({"upstream": sys.argv[2]})
app = web.Application()
app.router.add_route("*", "/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(tmp_path, proxies=1, upstreams=("static",)) as e:
        yield e


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[dict[str, tuple[int, subprocess.Popen[bytes]]]]:
    procs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for name in ("i1", "i2"):
            port = free_port()
            procs[name] = (port, subprocess.Popen([sys.executable, "-c", SLOW, str(port), name],
                                                  env={**os.environ}, start_new_session=True))
        for port, _ in procs.values():
            wait_for(lambda port=port: request("GET", f"http://127.0.0.1:{port}/", timeout=1).status == 200,
                     15, "instance up")
        yield procs
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


class Traffic:
    """Keep-alive GETs through the proxy from several concurrent connections, counting every non-200."""

    def __init__(self, port: int, stop: threading.Event, conns: int = 6) -> None:
        self.port, self.stop = port, stop
        self.ok = 0
        self.errors: list[str] = []
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(conns)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                conn.request("GET", f"/svc/{i}")
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.errors.append(f"client: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            with self.lock:
                if resp.status != 200:
                    self.errors.append(f"{resp.status}: {body[:200]!r}")
                else:
                    self.ok += 1
                    name = body.split(b'"upstream": "', 1)[-1].split(b'"', 1)[0].decode()
                    self.seen[name] = self.seen.get(name, 0) + 1
        conn.close()


def test_killing_an_instance_under_traffic_fails_no_idempotent_request(
    env: DataPlaneEnv, instances: dict[str, tuple[int, subprocess.Popen[bytes]]]
) -> None:
    c = env.cluster
    env.put("upstreams", "svc", env.upstream_spec("static", retries=2))
    env.put("routes", "r", {"paths": ["/svc"], "upstream": "svc"})
    targets = {name: f"127.0.0.1:{port}" for name, (port, _) in instances.items()}
    rev = 0
    for target in targets.values():
        r = c.api(c.nodes[0], "PUT", f"/v1/upstreams/svc/targets/{target}", {"ttl": TTL})
        assert r.status == 201, r
        rev = r.json()["revision"]
    env.proxies[0].wait_revision(rev)
    alive = dict(targets)
    stop_beats = threading.Event()

    def beat() -> None:
        while not stop_beats.is_set():
            for target in list(alive.values()):
                c.api(c.nodes[1], "POST", f"/v1/upstreams/svc/targets/{target}/heartbeat", timeout=2)
            stop_beats.wait(0.4)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    stop = threading.Event()
    traffic = Traffic(env.proxies[0].port, stop)
    traffic.start()
    try:
        wait_for(lambda: traffic.seen.get("i1", 0) > 20 and traffic.seen.get("i2", 0) > 20, 20, "traffic on both")
        victim = instances["i1"][1]
        victim.kill()  # SIGKILL: in-flight requests and pooled connections break
        victim.wait(5)
        del alive["i1"]
        killed_at = time.monotonic()
        wait_for(lambda: targets["i1"] not in {
            f"{t['host']}:{t['port']}" for t in c.api(c.nodes[0], "GET", "/v1/upstreams/svc/targets").json()["registered"]
        }, 15, "the dead instance's registration expired")
        print(f"registration expired {time.monotonic() - killed_at:.2f}s after the kill")
        before = traffic.ok
        time.sleep(1.0)
        assert traffic.ok > before  # still serving
    finally:
        stop.set()
        stop_beats.set()
        traffic.join(15)
        beater.join(5)
    print(f"ok={traffic.ok} seen={traffic.seen}")
    assert traffic.errors == [], f"{len(traffic.errors)} failed requests: {traffic.errors[:5]}"
