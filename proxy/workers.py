"""``gwadm proxy run --workers N``: N worker processes on one port, fed by ONE control-plane stream.

The process started by the operator becomes the *hub*. It runs the only ``SyncClient`` of the
host (one stream, one fleet entry at the control plane, one cache file), builds each runtime once
itself (so a config it cannot build is nacked exactly as a single proxy would), and forwards
every config it installs to its workers over a unix socket (``proxy/feed.py``): the control
plane's ``delta`` frame as it arrived when the worker is at that delta's base, else snapshot
chunks of the hub's state. The workers (``proxy/worker.py``) each bind the traffic port with
SO_REUSEPORT, so the kernel spreads connections over them.

* The hub owns the status port: ``/status`` and ``/metrics`` scrape every worker over the feed and
  answer for all of them (``proxy/metrics_merge.py``); ``revision`` is the lowest revision any live
  worker serves, ``synced_revision`` the hub's; ``workers`` lists each one.
* A worker that exits is restarted (backoff 0.2 s doubling to 5 s while it keeps dying young); the
  new one gets a snapshot. Stopping the hub stops every worker by PID (SIGTERM, then SIGKILL after
  the shutdown timeout). A worker whose feed ends (the hub died) drains and exits.
* Per-worker state: rate-limit counters, balancer state, passive and active health, JWKS caches
  are per worker. A rate limit of L per window admits up to N x L per proxy host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.protocol import DeltaFrame, snapshot_chunks
from gateway.state import ConfigState
from proxy import metrics_merge
from proxy.feed import KEY_ENV, FeedError, read_message, write_message
from proxy.server import DataPlane
from proxy.sync import SyncClient

log = logging.getLogger("gwadm.proxy.workers")

RESTART_MIN, RESTART_MAX, YOUNG = 0.2, 5.0, 10.0
MAX_BACKLOG = 64 << 20  # bytes queued to one worker before its feed is dropped


def cpu_count() -> int:
    """Cores this process may run on (``--workers auto``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class HubDataPlane(DataPlane):
    """The hub's DataPlane: it serves no traffic; every swap is forwarded to the workers."""

    on_swap: Any = None

    def swap(self, runtime: Any, *args: Any, **kwargs: Any) -> Any:
        installed = super().swap(runtime, *args, **kwargs)
        if self.on_swap is not None:
            self.on_swap()
        return installed


class HubSync(SyncClient):
    """The sync client, remembering the delta frame being applied so the hub can forward it."""

    pending_delta: DeltaFrame | None = None

    async def _on_delta(self, ws: Any, f: DeltaFrame) -> None:
        self.pending_delta = f
        try:
            await super()._on_delta(ws, f)
        finally:
            self.pending_delta = None


# Guarded override: if the sync client no longer has this hook, workers still get every config,
# as snapshots (slower on large configs); /status says so through the workers' snapshot counts.
FORWARDS_DELTAS = inspect.iscoroutinefunction(getattr(SyncClient, "_on_delta", None))


@dataclass
class Session:
    """The feed connection of one live worker."""

    writer: asyncio.StreamWriter
    sent: tuple[int, str] | None = None  # last config (revision, hash) written to it
    acked: int = 0
    listening: bool = False
    facts: tuple[Any, ...] | None = None
    scrapes: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class WorkerProc:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive exits soon after start (backoff)
    session: Session | None = None
    last_metrics: list[Any] = field(default_factory=list)
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


class WorkerHub:
    """Spawns, feeds, scrapes and restarts the workers."""

    def __init__(
        self, *, count: int, listen: tuple[str, int], proxy_id: str, sync: HubSync, dp: HubDataPlane,
        shutdown_timeout: float = 10.0, log_level: str = "INFO",
    ) -> None:  # fmt: skip
        self.count, self.listen, self.proxy_id = count, listen, proxy_id
        self.sync, self.dp = sync, dp
        self.shutdown_timeout, self.log_level = shutdown_timeout, log_level
        self.workers = [WorkerProc(i) for i in range(count)]
        self.retired = metrics_merge.Retired()
        self.key = secrets.token_hex(16)
        self._dir: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._frames: tuple[tuple[int, str], list[dict[str, Any]]] | None = None
        self._scrape_ids = itertools.count(1)
        self.deltas_forwarded = self.snapshots_forwarded = 0
        dp.on_swap = self._on_swap

    @property
    def feed_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "feed.sock")

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="gwadm-feed-")  # 0700: only this user reaches the feed
        self._server = await asyncio.start_unix_server(self._on_connect, path=self.feed_path)
        os.chmod(self.feed_path, 0o600)
        for wp in self.workers:
            await self._spawn(wp)
        self._task(self._refresh_loop())

    async def stop(self) -> None:
        """SIGTERM every worker by PID, SIGKILL what is left after the shutdown timeout."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        procs = [wp.proc for wp in self.workers if wp.proc is not None and wp.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        if procs:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                            timeout=self.shutdown_timeout)  # fmt: skip
            for proc in procs:
                if proc.returncode is None:
                    log.warning(
                        "worker pid %d did not stop in %.0fs: SIGKILL", proc.pid, self.shutdown_timeout
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _spawn(self, wp: WorkerProc) -> None:
        wp.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.worker", "--feed", self.feed_path, "--index", str(wp.index),
            "--log-level", self.log_level, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, KEY_ENV: self.key},
        )  # fmt: skip
        wp.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", wp.index, wp.proc.pid)
        self._task(self._watch(wp, wp.proc))

    async def _watch(self, wp: WorkerProc, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        wp.last_exit = code
        if wp.last_metrics:  # keep what it counted: merged totals never go backwards
            self.retired.add(wp.last_metrics)
            wp.last_metrics = []
        if self._stopping:
            return
        young = time.monotonic() - wp.started_at < YOUNG
        wp.failures = wp.failures + 1 if young else 0
        delay = min(RESTART_MAX, RESTART_MIN * 2 ** max(0, wp.failures - 1))
        log.warning(
            "worker %d (pid %d) exited with code %s; restarting in %.1fs", wp.index, proc.pid, code, delay
        )
        await asyncio.sleep(delay)
        if not self._stopping:
            wp.restarts += 1
            await self._spawn(wp)

    # ---- feed -------------------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wp: WorkerProc | None = None
        session = Session(writer)
        try:
            hello = await asyncio.wait_for(read_message(reader), 10)
            if (
                hello is None or hello.get("t") != "worker-hello"
                or not hmac.compare_digest(str(hello.get("key", "")), self.key)
                or not isinstance(hello.get("index"), int) or not 0 <= hello["index"] < self.count
                or self.workers[hello["index"]].pid != hello.get("pid")
            ):  # fmt: skip
                log.warning("refusing a feed connection that is not one of our workers")
                return
            wp = self.workers[hello["index"]]
            wp.session = session
            host, port = self.listen
            write_message(writer, {"t": "setup", "host": host, "port": port, "proxy_id": self.proxy_id,
                                   "shutdown_timeout": self.shutdown_timeout})  # fmt: skip
            self._feed(session)
            while (msg := await read_message(reader)) is not None:
                self._on_message(wp, session, msg)
        except (FeedError, OSError, TimeoutError) as exc:
            log.warning("feed of worker %s broke: %s", wp.index if wp else "?", exc)
        finally:
            if wp is not None and wp.session is session:
                wp.session = None
            for fut in session.scrapes.values():
                if not fut.done():
                    fut.cancel()
            writer.close()

    def _on_message(self, wp: WorkerProc, s: Session, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "ack":
            s.acked = msg["revision"]
        elif kind == "listening":
            s.listening = True
        elif kind == "nack":
            log.error(
                "worker %d rejected revision %d: %s; sending a snapshot",
                wp.index,
                msg["revision"],
                msg["error"],
            )
            self.dp.last_error = f"worker {wp.index}: revision {msg['revision']}: {msg['error']}"
            if s.sent is not None and s.sent[0] == msg["revision"] and s.acked != -1:
                s.sent, s.acked = None, -1  # one snapshot retry; a failing snapshot stays an error
                self._feed(s)
        elif kind == "scraped":
            fut = s.scrapes.pop(msg["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _on_swap(self) -> None:
        # The sync client records its new state right after the swap, with no await in between:
        # forward once it has (on the next loop iteration).
        asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        for wp in self.workers:
            if wp.session is not None:
                self._feed(wp.session)

    def _hub_frame(self) -> dict[str, Any]:
        dp = self.dp
        age = None if dp.last_sync is None else max(0.0, dp.clock() - dp.last_sync)
        return {"t": "hub", "mode": dp.mode, "connected_cp": dp.connected_cp, "cp_endpoints": list(dp.cp_endpoints),
                "last_error": dp.last_error, "sync_age": age, "revision": self.sync.revision}  # fmt: skip

    def _feed(self, s: Session) -> None:
        """Bring one worker up to date: the hub facts if they changed, then the config."""
        if s.writer.is_closing():
            return
        if s.writer.transport.get_write_buffer_size() > MAX_BACKLOG:  # a stopped or stuck worker
            log.error("worker feed backlog above %d MiB: dropping the feed (the worker exits and is restarted)",
                      MAX_BACKLOG >> 20)  # fmt: skip
            s.writer.close()
            return
        frame = self._hub_frame()
        facts = (frame["mode"], frame["connected_cp"], tuple(frame["cp_endpoints"]), frame["last_error"],
                 self.dp.last_sync, frame["revision"])  # fmt: skip
        if facts != s.facts:
            s.facts = facts
            write_message(s.writer, frame)
        state, digest = self.sync.state, self.sync.hash
        if state is None or s.sent == (state.revision, digest):
            return
        d = self.sync.pending_delta if isinstance(self.sync, HubSync) else None
        if (
            d is not None and s.sent is not None and d.base == s.sent[0]
            and d.revision == state.revision and d.hash == digest
        ):  # fmt: skip
            write_message(s.writer, d.wire())
            self.deltas_forwarded += 1
        else:
            for chunk in self._snapshot(state, digest):
                write_message(s.writer, chunk)
            self.snapshots_forwarded += 1
        s.sent = (state.revision, digest)

    def _snapshot(self, state: ConfigState, digest: str) -> list[dict[str, Any]]:
        key = (state.revision, digest)
        if self._frames is None or self._frames[0] != key:
            self._frames = (key, [chunk.wire() for chunk in snapshot_chunks(state)])
        return self._frames[1]

    async def _refresh_loop(self) -> None:
        """Mode, CP and sync time change without a swap: pass them on within 0.2 s."""
        while True:
            await asyncio.sleep(0.2)
            self._publish()

    # ---- scraping -----------------------------------------------------------------------------------

    async def scrape(self, timeout: float = 1.0) -> list[dict[str, Any] | None]:
        """Each worker's status and metrics (None for a worker that is down or did not answer)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[dict[str, Any]] | None] = []
        for wp in self.workers:
            s = wp.session
            if s is None:
                futures.append(None)
                continue
            sid = next(self._scrape_ids)
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            s.scrapes[sid] = fut
            write_message(s.writer, {"t": "scrape", "id": sid})
            futures.append(fut)
        waiting = [f for f in futures if f is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        replies: list[dict[str, Any] | None] = []
        for wp, pending in zip(self.workers, futures, strict=True):
            if pending is not None and pending.done() and not pending.cancelled():
                reply = pending.result()
                wp.last_metrics = metrics_merge.parse(reply["metrics"])
                replies.append(reply)
            else:
                if pending is not None:
                    pending.cancel()
                replies.append(None)
        return replies

    def worker_rows(self, replies: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        rows = []
        for wp, reply in zip(self.workers, replies, strict=True):
            st = reply["status"] if reply else {}
            served = sum(
                s.value for f in wp.last_metrics for s in f.samples if s.name == "gwadm_proxy_requests_total"
            ) if reply else None  # fmt: skip
            rows.append({
                "index": wp.index, "pid": wp.pid, "alive": wp.pid is not None, "answered": reply is not None,
                "listening": bool(st.get("listening")), "revision": st.get("revision"), "hash": st.get("hash"),
                "mode": st.get("mode"), "restarts": wp.restarts, "last_exit": wp.last_exit,
                "uptime": round(time.monotonic() - wp.started_at, 1) if wp.pid else None,
                "deltas": st.get("deltas"), "snapshots": st.get("snapshots"), "requests": served,
            })  # fmt: skip
        return rows


def _merge_health(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Per upstream and target: healthy only if every answering worker says so."""
    merged: dict[str, Any] = {}
    for st in statuses:
        for uid, targets in (st.get("upstreams") or {}).items():
            if not isinstance(targets, dict):
                merged.setdefault(uid, targets)
                continue
            into = merged.setdefault(uid, {})
            for addr, healthy in targets.items():
                into[addr] = bool(into.get(addr, True)) and bool(healthy)
    return merged


async def aggregate_status(hub: WorkerHub) -> dict[str, Any]:
    base = hub.dp.status()
    replies = await hub.scrape()
    statuses = [r["status"] for r in replies if r is not None]
    serving = [s for s in statuses if s.get("listening")]
    base["synced_revision"] = base["revision"]
    if serving:
        lowest = min(serving, key=lambda s: s["revision"])
        base["revision"], base["hash"] = lowest["revision"], lowest["hash"]
        base["upstreams"] = _merge_health(serving)
    else:
        base["revision"], base["hash"] = 0, None
    base["workers"] = hub.worker_rows(replies)
    base["workers_configured"] = hub.count
    base["workers_serving"] = len(serving)
    base["hub_pid"] = os.getpid()
    base["deltas_forwarded"], base["snapshots_forwarded"] = hub.deltas_forwarded, hub.snapshots_forwarded
    return base


def create_hub_status_app(hub: WorkerHub) -> web.Application:
    """/status, /ready, /live and /metrics for the whole proxy (every worker)."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await aggregate_status(hub))

    async def ready(_: web.Request) -> web.Response:
        doc = await aggregate_status(hub)
        if hub.dp.runtime is None or not any(w["listening"] and w["revision"] for w in doc["workers"]):
            err = {"error": {"code": "not_ready", "message": "no worker serves a configuration yet", "path": None}}
            return web.json_response(err, status=503)
        return web.json_response({"ready": True, "mode": doc["mode"], "revision": doc["revision"],
                                  "workers_serving": doc["workers_serving"]})  # fmt: skip

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def metrics(_: web.Request) -> web.Response:
        replies = await hub.scrape()
        workers = [wp.last_metrics for wp, r in zip(hub.workers, replies, strict=True) if r is not None]
        hub_families = metrics_merge.parse(hub.dp.metrics.render()) + _hub_families(hub)
        merged = metrics_merge.merge(workers, hub_families, hub.retired)
        return web.Response(body=metrics_merge.render(merged), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    app.router.add_get("/metrics", metrics)
    return app


def _hub_families(hub: WorkerHub) -> list[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    alive = GaugeMetricFamily("gwadm_proxy_workers", "Worker processes running, by state", labels=["state"])
    alive.add_metric(["configured"], float(hub.count))
    alive.add_metric(["running"], float(sum(1 for w in hub.workers if w.pid is not None)))
    restarts = CounterMetricFamily(
        "gwadm_proxy_worker_restarts", "Worker processes restarted after they exited"
    )
    restarts.add_metric([], float(sum(w.restarts for w in hub.workers)))
    return [alive, restarts]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) the traffic address with SO_REUSEPORT: resolves port 0 once for all workers,
    fails early if another program holds the port, and keeps it ours while workers restart."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
