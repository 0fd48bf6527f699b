"""The simulated fleet of bench/fleet.py: N subscribers in ONE process, speaking the real protocol.

Run by bench/fleet.py as ``python -m bench.fleet_sim CONFIG_JSON``; commands arrive as JSON lines
on stdin, answers go as JSON lines to stdout. Each subscriber is what a proxy is to the control
plane, without building runtimes:

* ``push`` / ``hybrid``: one websocket ``/v1/stream`` (hello with its revision and hash, client
  heartbeat like the proxy's 2 s), decodes every frame with ``gateway.protocol.decode_frame``,
  follows deltas (base check) and snapshot chunks, and acks each config frame at once. ``hybrid``
  adds the anti-entropy HTTP check (``GET /v1/changes/head``) every ``check_interval`` s, staggered.
* ``pull``: ``GET /v1/changes?since=&wait=`` long-polls with ``If-None-Match``, as proxy/pull.py.

bench/fleet.py runs several of these processes (``procs``), each with a slice of the fleet
(``first``, ``n``: subscriber indices first..first+n-1, so ids and the spread below are those of one
fleet), on uvloop when it is installed: one process of 1,000 subscribers saturated its core during
a change (decoding and acking 1,000 frames), which delayed the last acks it measured.

Subscribers spread over the given URLs (``i % len(urls)``) and over ``source_ips`` loopback source
addresses (a node admits at most 256 streams per client address). On a drop a subscriber reconnects
to the next URL after a short seeded jitter. Commands:

``{"cmd": "wait", "revision": R, "timeout": S}`` -> ``{"times": [wall time each subscriber first had
>= R], "missing": k}``; ``{"cmd": "storm", "revision": R, "timeout": S}`` closes every connection at
once and answers when all are connected again (a status on the new connection) at >= R:
``{"seconds": s, "missing": k}``; ``{"cmd": "bytes"}`` -> received payload bytes; ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.codec import decode
from gateway.protocol import (
    CP_FRAMES,
    Ack,
    DeltaFrame,
    Hello,
    Resync,
    SnapshotChunk,
    Status,
    decode_frame,
    encode_frame,
)


@dataclass
class Sub:
    i: int
    rev: int = 0
    hash: str = ""
    fresh: bool = False  # a status arrived on the current connection
    history: list[tuple[int, float]] = field(default_factory=list)
    ws: Any = None
    drop: asyncio.Event = field(default_factory=asyncio.Event)

    def got(self, revision: int, config_hash: str) -> None:
        self.rev, self.hash = revision, config_hash
        self.history.append((revision, time.time()))
        del self.history[:-64]

    def first_at(self, revision: int) -> float | None:
        return next((t for r, t in self.history if r >= revision), None)


class Fleet:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.urls: list[str] = cfg["urls"]
        self.token: str = cfg["token"]
        self.mode: str = cfg["mode"]
        first = int(cfg.get("first", 0))
        self.subs = [Sub(first + i) for i in range(int(cfg["n"]))]
        self.rng = random.Random(int(cfg.get("seed", 1)))
        self.bytes = 0
        self.http_requests = 0
        self.sessions: list[aiohttp.ClientSession] = []

    def _session(self, i: int) -> aiohttp.ClientSession:
        return self.sessions[i % len(self.sessions)]

    async def start(self) -> None:
        ips = int(self.cfg.get("source_ips", 8))
        for k in range(ips):
            connector = aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.{100 + k // 250}.{1 + k % 250}", 0))
            self.sessions.append(aiohttp.ClientSession(connector=connector))
        runner = self._push if self.mode in ("push", "hybrid") else self._pull
        self.tasks = [asyncio.create_task(runner(s)) for s in self.subs]
        if self.mode == "hybrid":
            self.tasks += [asyncio.create_task(self._checks(s)) for s in self.subs]

    async def _push(self, s: Sub) -> None:
        k = s.i
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            url = self.urls[k % len(self.urls)].rstrip("/") + "/v1/stream"
            url = url.replace("http://", "ws://", 1)
            try:
                async with self._session(s.i).ws_connect(url, headers=headers, heartbeat=self.cfg.get("heartbeat", 2.0),
                                                         max_msg_size=64 << 20) as ws:  # fmt: skip
                    s.ws, s.fresh = ws, False
                    await ws.send_bytes(encode_frame(Hello(f"sim-{s.i}", "gwadm-bench-fleet", s.rev, s.hash)))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.BINARY:
                            continue
                        self.bytes += len(msg.data)
                        f = decode_frame(msg.data, CP_FRAMES)
                        if isinstance(f, Status):
                            if not f.has_quorum:
                                break
                            s.fresh = True
                        elif isinstance(f, DeltaFrame):
                            if f.base != s.rev:
                                await ws.send_bytes(encode_frame(Resync(s.rev)))
                                continue
                            s.got(f.revision, f.hash)
                            await ws.send_bytes(encode_frame(Ack(f.revision)))
                        elif isinstance(f, SnapshotChunk) and f.chunk == f.chunks - 1:
                            s.got(f.revision, f.hash)
                            await ws.send_bytes(encode_frame(Ack(f.revision)))
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                pass
            s.ws, s.fresh = None, False
            k += 1
            await asyncio.sleep(0.05 + self.rng.random() * 0.2)

    async def _pull(self, s: Sub) -> None:
        k, etag = s.i, None
        wait = float(self.cfg.get("poll_wait", 1.0))
        headers = {"Authorization": f"Bearer {self.token}", "X-Gwadm-Proxy": f"sim-{s.i}",
                   "X-Gwadm-Sync": "pull", "X-Gwadm-Mode": "synced"}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=wait + 10)
        while True:
            url = self.urls[k % len(self.urls)].rstrip("/") + "/v1/changes"
            h = dict(headers, **({"If-None-Match": etag} if etag else {}))
            try:
                params = {"since": str(s.rev), "wait": f"{wait:g}"}
                async with self._session(s.i).get(url, params=params, headers=h, timeout=timeout) as r:
                    body = await r.read()
                    self.http_requests += 1
                    self.bytes += len(body)
                    if r.status == 304:
                        s.fresh = True
                        continue
                    if r.status != 200:
                        raise aiohttp.ClientError(f"HTTP {r.status}")
                    etag = r.headers.get("ETag")
                answer = decode(body)
                s.fresh = True
                for raw in answer["frames"]:
                    f = decode_frame(raw, CP_FRAMES)
                    if isinstance(f, DeltaFrame) and f.base == s.rev:
                        s.got(f.revision, f.hash)
                    elif isinstance(f, SnapshotChunk) and f.chunk == f.chunks - 1:
                        s.got(f.revision, f.hash)
                if s.drop.is_set():
                    s.drop.clear()
                    raise aiohttp.ClientError("storm")
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                s.fresh, etag = False, None
                k += 1
                await asyncio.sleep(0.05 + self.rng.random() * 0.2)

    async def _checks(self, s: Sub) -> None:
        interval = float(self.cfg.get("check_interval", 30.0))
        await asyncio.sleep(self.rng.random() * interval)
        headers = {"Authorization": f"Bearer {self.token}", "X-Gwadm-Proxy": f"sim-{s.i}", "X-Gwadm-Sync": "hybrid"}
        while True:
            url = self.urls[s.i % len(self.urls)].rstrip("/") + "/v1/changes/head"
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                async with self._session(s.i).get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    self.bytes += len(await r.read())
                    self.http_requests += 1
            await asyncio.sleep(interval)

    # ---- commands --------------------------------------------------------------------------

    async def wait(self, revision: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        behind = [s for s in self.subs if s.rev < revision]  # rescanned shrinking, not all 1,000 each time
        while behind and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
            behind = [s for s in behind if s.rev < revision]
        times = [t for s in self.subs if (t := s.first_at(revision)) is not None]
        return {"times": times, "missing": len(self.subs) - len(times)}

    async def storm(self, revision: int, timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        for s in self.subs:
            s.fresh = False
            if s.ws is not None:
                asyncio.get_running_loop().create_task(s.ws.close())
            s.drop.set()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if all(s.fresh and s.rev >= revision for s in self.subs):
                break
            await asyncio.sleep(0.01)
        missing = sum(1 for s in self.subs if not (s.fresh and s.rev >= revision))
        return {"seconds": time.monotonic() - t0, "missing": missing}


async def main(cfg: dict[str, Any]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fleet = Fleet(cfg)
    await fleet.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "nofile": hard, "loop": type(loop).__module__.split(".")[0]}), flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "wait":
            out = await fleet.wait(int(cmd["revision"]), float(cmd["timeout"]))
        elif cmd["cmd"] == "storm":
            out = await fleet.storm(int(cmd["revision"]), float(cmd["timeout"]))
        elif cmd["cmd"] == "bytes":
            out = {"bytes": fleet.bytes, "http_requests": fleet.http_requests}
        else:
            break
        print(json.dumps(out), flush=True)
    for t in fleet.tasks:
        t.cancel()
    for sess in fleet.sessions:
        await sess.close()


def run(cfg: dict[str, Any]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(cfg))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(cfg))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        run(json.loads(sys.argv[1]))
