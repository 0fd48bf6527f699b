"""One worker process of ``gwadm proxy run --workers N``: serves traffic, gets its config from the hub.

Started by the hub (``proxy/workers.py``) as ``python -m proxy.worker --feed SOCKET --index I``
with the hub's one-time key in the environment. The worker never talks to the control plane: it
connects to the hub's feed socket, installs the config frames it receives (the CP's own delta
frames, or snapshot chunks) exactly as the sync client would (``proxy/frames_apply.py``), acks
them, and opens its listener (SO_REUSEPORT, shared by all workers) once it has the hub's config.
When the feed ends (the hub stopped or died) the worker drains and exits: no orphan keeps serving
a config nobody updates. SIGTERM drains and exits too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

from gateway.protocol import DeltaFrame, Nack, OutOfSequence, SnapshotAssembler, SnapshotChunk
from gateway.state import ConfigState
from proxy.feed import KEY_ENV, FeedError, read_message, write_message
from proxy.frames_apply import prepare_delta, prepare_snapshot
from proxy.runtime import build_runtime, update_runtime
from proxy.server import DataPlane, TrafficRunner, run_loop

log = logging.getLogger("gwadm.proxy.worker")


async def open_traffic_listener(
    dp: DataPlane, host: str, port: int, shutdown_timeout: float
) -> TrafficRunner:
    """The traffic port with SO_REUSEPORT (every worker binds the same address)."""
    runner = TrafficRunner(dp, shutdown_timeout=shutdown_timeout, reuse_port=True)
    await runner.setup()
    try:
        await runner.start(host, port)
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class Worker:
    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader, self.writer = reader, writer
        self.dp: DataPlane | None = None
        self.state: ConfigState | None = None
        self.assembler = SnapshotAssembler()
        self.runner: TrafficRunner | None = None
        self.listen: tuple[str, int] = ("127.0.0.1", 0)
        self.shutdown_timeout = 10.0
        self.deltas = self.snapshots = 0
        self.hub_mode = "synced"

    async def run(self, stop: asyncio.Event) -> None:
        reading = asyncio.create_task(self._read_loop())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done() and reading.exception() is not None:
                raise reading.exception()  # type: ignore[misc]
        finally:
            for task in (reading, stopping):
                task.cancel()
            if self.runner is not None:
                await self.runner.cleanup()  # drains in-flight requests, closes the DataPlane
            elif self.dp is not None:
                await self.dp.close()

    async def _read_loop(self) -> None:
        while (msg := await read_message(self.reader)) is not None:
            await self._handle(msg)
        log.info("worker %d: the hub closed the feed; exiting", self.index)

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "setup":
            self.listen = (str(msg["host"]), int(msg["port"]))
            self.shutdown_timeout = float(msg.get("shutdown_timeout", 10.0))
            self.dp = DataPlane(proxy_id=str(msg["proxy_id"]))
        elif self.dp is None:
            raise FeedError(f"{kind!r} before setup")
        elif kind == "hub":
            self._on_hub(msg)
            if not msg["revision"]:  # the hub has no config either: serve 503 like an empty proxy
                await self._open()
        elif kind == "delta":
            await self._on_delta(msg)
        elif kind == "snapshot":
            await self._on_snapshot(msg)
        elif kind == "scrape":
            self._send({
                "t": "scraped", "id": msg["id"], "status": {**self.dp.status(), **self._facts()},
                "metrics": self.dp.metrics.render(),
            })  # fmt: skip

    def _facts(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), "listening": self.runner is not None,
                "deltas": self.deltas, "snapshots": self.snapshots}  # fmt: skip

    def _on_hub(self, msg: dict[str, Any]) -> None:
        assert self.dp is not None
        dp = self.dp
        dp.mode = msg["mode"] if dp.runtime is not None else "empty"
        self.hub_mode = msg["mode"]
        dp.connected_cp = msg["connected_cp"]
        dp.cp_endpoints = list(msg["cp_endpoints"])
        dp.last_error = msg["last_error"]
        age = msg["sync_age"]
        dp.last_sync = None if age is None else dp.clock() - float(age)

    async def _on_delta(self, msg: dict[str, Any]) -> None:
        f = DeltaFrame.parse(msg)  # the feed checked it; parsing the wire map again is cheap
        state = self.state or ConfigState.empty()
        if f.base != state.revision:  # the hub sends a snapshot when it cannot send a fitting delta
            self._send(Nack(f.revision, f"delta base {f.base} != {state.revision}").wire())
            return
        started = time.perf_counter()
        try:
            new, runtime, _ = prepare_delta(state, f, self._runtime_of(state), update_runtime, build_runtime)
        except Exception as exc:
            self._send(Nack(f.revision, str(exc)[:1000] or type(exc).__name__).wire())
            return
        self._install(new, runtime, started)
        self.deltas += 1

    async def _on_snapshot(self, msg: dict[str, Any]) -> None:
        f = SnapshotChunk.parse(msg)
        try:
            joined = self.assembler.add(f)
        except OutOfSequence as exc:
            self._send(Nack(f.revision, str(exc)).wire())
            return
        if joined is None:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:  # a full build can take 100+ ms: off the loop, the old config keeps serving meanwhile
            new, runtime, _ = await loop.run_in_executor(
                None, prepare_snapshot, joined, build_runtime
            )
        except Exception as exc:
            self._send(Nack(joined.revision, str(exc)[:1000] or type(exc).__name__).wire())
            return
        self._install(new, runtime, started)
        self.snapshots += 1
        await self._open()

    def _runtime_of(self, state: ConfigState) -> Any:
        rt = self.dp.runtime if self.dp is not None else None
        return rt if rt is not None and rt.revision == state.revision else None

    def _install(self, state: ConfigState, runtime: Any, started: float) -> None:
        assert self.dp is not None
        self.dp.swap(runtime, mode=self.hub_mode)
        self.dp.revision, self.dp.hash = state.revision, runtime.hash
        self.state = state
        took = time.perf_counter() - started
        self.dp.metrics.apply_duration.observe(took)
        self._send({"t": "ack", "revision": state.revision})
        log.info("worker %d: installed config revision %d (%.1f ms)", self.index, state.revision, took * 1000)

    async def _open(self) -> None:
        if self.runner is not None or self.dp is None:
            return
        host, port = self.listen
        self.runner = await open_traffic_listener(self.dp, host, port, self.shutdown_timeout)
        self._send({"t": "listening"})
        log.info("worker %d (pid %d) listening on %s:%d", self.index, os.getpid(), host, port)

    def _send(self, msg: dict[str, Any]) -> None:
        write_message(self.writer, msg)


async def main_async(feed: str, index: int, key: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader, writer = await asyncio.open_unix_connection(feed)
    write_message(writer, {"t": "worker-hello", "key": key, "index": index, "pid": os.getpid()})
    worker = Worker(index, reader, writer)
    try:
        await worker.run(stop)
    except (FeedError, OSError) as exc:
        log.error("worker %d: feed failed: %s", index, exc)
        return 1
    finally:
        with contextlib.suppress(Exception):
            writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.worker", description=__doc__)
    parser.add_argument("--feed", required=True, help="the hub's feed socket")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    key = os.environ.pop(KEY_ENV, "")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s[{args.index}]: %(message)s",
    )  # fmt: skip
    try:
        return run_loop(main_async(args.feed, args.index, key))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
