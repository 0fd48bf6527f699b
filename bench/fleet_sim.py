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
a change (decoding and acking 1,000 frames), which delayed the last acks it measured. Streams
use ``RawStream``, a minimal RFC 6455 client (upgrade, masked frames out, pong, a ping after
``heartbeat`` s without a message like aiohttp's client heartbeat that the proxy uses): it costs
~30 us per frame and ack where aiohttp's client took ~45, CPU the CP would otherwise compete with on
a small machine (``"client": "aiohttp"`` in the config brings the aiohttp client back).

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
import base64
import contextlib
import json
import os
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
        self.heartbeat = float(cfg.get("heartbeat", 2.0))

    def _session(self, i: int) -> aiohttp.ClientSession:
        return self.sessions[i % len(self.sessions)]

    async def start(self) -> None:
        ips = int(self.cfg.get("source_ips", 8))
        for k in range(ips):
            connector = aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.{100 + k // 250}.{1 + k % 250}", 0))
            self.sessions.append(aiohttp.ClientSession(connector=connector))
        raw = self.cfg.get("client", "raw") == "raw"
        runner = (self._push_raw if raw else self._push) if self.mode in ("push", "hybrid") else self._pull
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

    def _raw_factory(self, s: Sub, host: str) -> Any:
        return lambda: RawStream(self, s, host)

    async def _push_raw(self, s: Sub) -> None:
        """The stream over ``RawStream`` (a minimal RFC 6455 client): the same frames, a fraction
        of aiohttp's client cost per message, so the simulator's CPU does not crowd the CP's."""
        k = s.i
        loop = asyncio.get_running_loop()
        ips = len(self.sessions)
        while True:
            url = self.urls[k % len(self.urls)].rstrip("/")
            host, _, port = url.split("://", 1)[1].partition(":")
            src = f"127.0.{100 + (s.i % ips) // 250}.{1 + (s.i % ips) % 250}"
            try:
                _, proto = await loop.create_connection(self._raw_factory(s, f"{host}:{port}"), host, int(port),
                                                        local_addr=(src, 0))  # fmt: skip
                await proto.done
            except (OSError, TimeoutError, ValueError):
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


class RawStream(asyncio.Protocol):
    """One subscriber's ``/v1/stream`` websocket, by hand: upgrade, unmasked server frames in,
    masked frames out, pong for ping, a client ping every ``heartbeat`` s like the proxy's."""

    def __init__(self, fleet: Fleet, sub: Sub, host: str) -> None:
        self.fleet, self.sub, self.host = fleet, sub, host
        self.buf = bytearray()
        self.upgraded = False
        self.transport: Any = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ping: asyncio.TimerHandle | None = None
        self.last_rx = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /v1/stream HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {self.fleet.token}\r\n\r\n".encode()
        )  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ping is not None:
            self._ping.cancel()
        if not self.done.done():
            self.done.set_result(None)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        n = len(payload)
        mask = os.urandom(4)
        head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        if n:
            keys = (mask * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")
        self.transport.write(head + mask + payload)

    def _heartbeat(self) -> None:
        """Ping after ``heartbeat`` s without a message, as aiohttp's client heartbeat (the proxy's) does."""
        if self.transport.is_closing():
            return
        loop, beat = asyncio.get_running_loop(), self.fleet.heartbeat
        quiet_since = loop.time() - self.last_rx
        if quiet_since >= beat:
            self.send(b"", 0x9)
            quiet_since = 0.0
        self._ping = loop.call_later(beat - quiet_since, self._heartbeat)

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
            s = self.sub
            s.ws, s.fresh = self, False
            self.send(encode_frame(Hello(f"sim-{s.i}", "gwadm-bench-fleet", s.rev, s.hash)))
            self._ping = asyncio.get_running_loop().call_later(self.fleet.heartbeat, self._heartbeat)
        while len(buf) >= 2:
            opcode, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                return
            payload = bytes(buf[off : off + n])
            del buf[: off + n]
            if opcode == 0x2:
                self._message(payload)
            elif opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                self.transport.close()
                return

    def _message(self, data: bytes) -> None:
        fleet, s = self.fleet, self.sub
        fleet.bytes += len(data)
        try:
            f = decode_frame(data, CP_FRAMES)
        except ValueError:
            self.transport.close()
            return
        if isinstance(f, Status):
            if not f.has_quorum:
                self.transport.close()
                return
            s.fresh = True
        elif isinstance(f, DeltaFrame):
            if f.base != s.rev:
                self.send(encode_frame(Resync(s.rev)))
                return
            s.got(f.revision, f.hash)
            self.send(encode_frame(Ack(f.revision)))
        elif isinstance(f, SnapshotChunk) and f.chunk == f.chunks - 1:
            s.got(f.revision, f.hash)
            self.send(encode_frame(Ack(f.revision)))


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
