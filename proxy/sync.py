"""Proxy side of the push protocol: follow any healthy control-plane node and install its config.

Safety rules, and where they are enforced:

* never go backwards: a snapshot below our revision is ignored (``_on_snapshot``);
* never skip: a delta is applied only if ``base == our revision``, otherwise we ``resync``
  (``_on_delta``); the resulting state's hash must equal the frame's hash or we ``nack``;
* never serve a broken config: build errors are ``nack``-ed and the old runtime keeps serving;
* only count as ``synced`` on a node that has quorum and is not behind us (``_on_status``).
  Any node's stream is committed state, so even a node without quorum cannot hand us an
  uncommitted config; we leave it only because it cannot give us *new* configs.

The websocket is read by one loop that also answers pings (aiohttp does that inside ``receive``),
while config frames are applied by a worker task: a large build in an executor must not make the
heartbeat miss. Install order: build (executor) -> ``dataplane.swap`` -> persist -> ``ack``.

Applying is separate from the transport: ``_on_status``, ``_on_delta`` and ``_on_snapshot`` take
typed frames (``gateway.protocol``) and a ``Peer`` to send the replies (ack, nack, resync) to. The
websocket is one Peer; the pull transport (proxy/pull.py) passes an outbox that turns the replies
into its next poll, and the worker hub (proxy/workers.py) hooks ``_on_delta`` to forward frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from gateway.errors import GatewayError
from gateway.protocol import (
    CP_FRAMES,
    Ack,
    DeltaFrame,
    ErrorFrame,
    Frame,
    FrameError,
    Hello,
    Mode,
    Nack,
    OutOfSequence,
    Resync,
    SnapshotAssembler,
    SnapshotChunk,
    Status,
    UnknownFrameType,
    decode_frame,
    encode_frame,
    peek_type,
)
from gateway.state import ConfigState
from proxy.cache import ConfigCache, load_learned_endpoints, save_learned_endpoints
from proxy.endpoints import Endpoint, EndpointRing, stream_url
from proxy.frames_apply import build_for, prepare_delta, prepare_snapshot

log = logging.getLogger("gwadm.proxy.sync")
INLINE_DELTA_OPS = 64  # deltas up to this many ops are applied on the loop (see SyncClient._apply)

WS = aiohttp.ClientWebSocketResponse
ConfigFrame = DeltaFrame | SnapshotChunk


class Peer(Protocol):
    """Where the replies to applied frames go: the node's websocket, or a transport's stand-in."""

    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...


def software_version() -> str:
    try:
        from importlib.metadata import version

        return f"gwadm/{version('gwadm')}"
    except Exception:
        return "gwadm/unknown"


class _Leave(Exception):
    """Stop streaming from this node (no quorum or behind us)."""


class SyncClient:
    """Keeps ``dataplane`` on the newest committed config that any healthy CP node can give."""

    def __init__(
        self,
        cp_urls: Sequence[str],
        token: str,
        proxy_id: str,
        dataplane: Any,
        cache: ConfigCache | None,
        *,
        address: str = "",
        software: str | None = None,
        seed: int | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        hold: float = 2.0,
        connect_timeout: float = 3.0,
        heartbeat: float = 2.0,  # ping every 2 s, pong due within 1 s: a dead link is noticed in <= 3 s
        source_address: str | None = None,
        status_address: str = "",
        build_runtime: Callable[..., Any] | None = None,
        first_endpoint: int | None = None,
        members_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,  # wss: the cluster CA, and the client cert under mTLS
        why_dropped: Callable[[str], Awaitable[str | None]] | None = None,  # cluster/tls.py why_stream_dropped
    ) -> None:
        self.ring = EndpointRing(
            [stream_url(u) for u in cp_urls], proxy_id, seed=seed, backoff_initial=backoff_initial,
            backoff_max=backoff_max, hold=hold, first=first_endpoint,
        )  # fmt: skip
        self.endpoints = self.ring.endpoints
        self.members_file = members_file  # learned CP URLs, kept across restarts
        if members_file is not None:
            self.ring.learn(load_learned_endpoints(members_file))
        self.token, self.proxy_id, self.dp, self.cache = token, proxy_id, dataplane, cache
        self._publish_endpoints()
        self.address = address
        self.status_address = status_address  # told to the CP so fleet views can read our /metrics
        self.software = software or software_version()
        self.connect_timeout, self.heartbeat = connect_timeout, heartbeat
        self.source_address = source_address
        self.ssl_context = ssl_context
        self.why_dropped = why_dropped
        self._last_why: dict[str, str] = {}  # endpoint -> the reason last logged for it
        self._update: Callable[..., Any] | None = None
        if build_runtime is None:
            from proxy.runtime import build_runtime as default_build
            from proxy.runtime import update_runtime

            clock = getattr(dataplane, "clock", None)
            build_runtime = functools.partial(default_build, clock=clock) if clock else default_build
            # Deltas recompile only what they touch; an injected builder (tests) sees every build.
            self._update = functools.partial(update_runtime, clock=clock) if clock else update_runtime
        self._build = build_runtime
        self.state: ConfigState | None = None  # installed config; None = nothing installed
        self.hash = ""
        self.connected_url: str | None = None
        self.applied: list[int] = []  # every revision installed, in order (tests, debugging)
        self.nacks: list[tuple[int, str]] = []
        self._ws: WS | None = None
        self._reported_mode: str | None = None
        self._persisting: asyncio.Future[None] | None = None
        self._healthy = False
        self._resync_for: int | None = None
        self._snapshot = SnapshotAssembler()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Hooks of the sync modes (proxy/antientropy.py, proxy/relay.py): each status frame from a
        # healthy node, and each installed config.
        self.on_status: Callable[[Status], None] | None = None
        self.on_install: Callable[[ConfigState], None] | None = None

    @property
    def revision(self) -> int:
        return self.state.revision if self.state is not None else 0

    # ---- lifecycle ----------------------------------------------------------------------------

    def boot_from_cache(self) -> bool:
        """Install the cached last-known-good config in mode ``cached``; False if there is none.

        Called before the servers start, so the proxy serves from its very first request.
        """
        if self.cache is None or (entry := self.cache.load()) is None:
            return False
        state = entry.state
        try:
            if state.hash() != entry.hash:
                raise GatewayError("config hash does not match the cache header")
            runtime = build_for(self._build, state, entry.hash)
        except Exception as exc:
            log.warning("cached config in %s unusable (%s); starting empty", self.cache.path, _why(exc))
            return False
        self._install(state, runtime, entry.hash, from_cp=False)
        log.info("booted from cache at revision %d", entry.revision)
        return True

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.run(), name="proxy-sync")

    async def stop(self) -> None:
        """Close the stream and stop reconnecting; the installed config keeps serving."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._persisting is not None:
            with contextlib.suppress(Exception):
                await self._persisting

    async def run(self) -> None:
        """Connect, stream, fail over -- until ``stop``. Backoff after each full failed round."""
        local = (self.source_address, 0) if self.source_address else None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=local, ssl=self.ssl_context or True)) as http:
            failures = 0
            while not self._stop.is_set():
                if await self._stream(http, self._pick()):
                    failures = 0
                    continue
                failures += 1
                if failures % len(self.endpoints) == 0:
                    await self._sleep(self.backoff(failures // len(self.endpoints) - 1))

    # ---- endpoint choice ----------------------------------------------------------------------

    def _pick(self) -> Endpoint:
        return self.ring.pick()

    def _put_on_hold(self, ep: Endpoint, reason: str) -> None:
        self.ring.put_on_hold(ep, reason)

    def backoff(self, attempt: int) -> float:
        return self.ring.backoff(attempt)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ---- one stream ---------------------------------------------------------------------------

    async def _stream(self, http: aiohttp.ClientSession, ep: Endpoint) -> bool:
        """Stream from ``ep`` until it ends; True if it was healthy (quorum, not behind) at some point."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await http.ws_connect(
                    ep.url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=self.heartbeat,
                    max_msg_size=64 * 1024 * 1024, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                )  # fmt: skip
        except aiohttp.WSServerHandshakeError as exc:
            level = logging.ERROR if exc.status in (401, 403) else logging.WARNING
            log.log(level, "control-plane %s refused the stream: HTTP %s", ep.url, exc.status)
            self._put_on_hold(ep, f"HTTP {exc.status}")
            return False
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Once per outage (and reason) at WARNING; the retries of a node that stays down only at DEBUG.
            why = _why(exc)
            if self.why_dropped is not None and isinstance(exc, (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)) \
                    and not isinstance(exc, aiohttp.ClientConnectorError):
                why = await self.why_dropped(ep.url) or why  # a TLS peer that hung up on our certificate?
            same = ep.reason == "unreachable" and self._last_why.get(ep.url) == why
            self._last_why[ep.url] = why
            log.log(logging.DEBUG if same else logging.WARNING, "control-plane %s unreachable: %s", ep.url, why)
            self._put_on_hold(ep, "unreachable")
            return False
        self._ws, self._healthy, self._resync_for = ws, False, None
        self._snapshot.reset()
        queue: asyncio.Queue[ConfigFrame] = asyncio.Queue()
        worker = asyncio.create_task(self._worker(ws, queue), name="proxy-sync-apply")
        was_healthy = False
        try:
            await ws.send_bytes(encode_frame(Hello(
                proxy_id=self.proxy_id, software=self.software, revision=self.revision, hash=self.hash,
                address=self.address, status_address=self.status_address,
            )))  # fmt: skip
            self._reported_mode = self.dp.mode
            await ws.send_bytes(encode_frame(Mode(self.dp.mode)))
            async for msg in ws:
                frame = await self._decode(ws, msg.data) if msg.type == aiohttp.WSMsgType.BINARY else None
                if isinstance(frame, Status):
                    self._on_status(ep, frame)
                    was_healthy = was_healthy or self._healthy
                elif isinstance(frame, (DeltaFrame, SnapshotChunk)):
                    queue.put_nowait(frame)
                elif isinstance(frame, ErrorFrame):
                    log.error("control-plane refused us: %s (%s)", frame.message, frame.code)
                if worker.done():
                    break
            log.warning("control-plane %s closed the stream (code %s)", ep.url, ws.close_code)
            self._put_on_hold(ep, "closed")
        except _Leave as exc:
            log.warning("leaving control-plane %s: %s", ep.url, exc)
            self._put_on_hold(ep, str(exc))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("stream from %s broke: %s", ep.url, _why(exc))
            self._put_on_hold(ep, "broken")
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
            with contextlib.suppress(Exception):
                await ws.close()
            self._ws, self._healthy, self.connected_url = None, False, None
            self.dp.connected_cp = None
            self._set_mode()
        return was_healthy

    async def _decode(self, ws: Peer, data: bytes) -> Frame | None:
        """Decode one frame; an invalid config frame is nacked when it names its revision (the old
        config keeps serving); frame types a proxy does not take are skipped."""
        try:
            return decode_frame(data, CP_FRAMES)
        except UnknownFrameType as exc:
            log.warning("skipping a frame this proxy does not take: %s", exc)
        except FrameError as exc:
            kind, revision = peek_type(data)
            if kind in ("delta", "snapshot") and revision is not None:
                await self._nack(ws, revision, f"invalid frame: {exc}")
            else:
                log.warning("ignoring undecodable frame: %s", exc)
        return None

    def _on_status(self, ep: Endpoint, f: Status) -> None:
        ep.has_quorum, ep.revision = f.has_quorum, f.revision
        if not f.has_quorum and f.cached and f.revision > self.revision:
            # A relay cut off from the CP serves its last-known-good config (docs/sync-modes.md):
            # committed (it holds only what nodes with quorum sent it) and newer than ours, so we
            # take it, in mode cached; at its revision we leave it like any node without quorum.
            self._healthy, self.connected_url = False, None
            self._set_mode()
            return
        if not f.has_quorum:
            raise _Leave(f"node {f.node_id} has no quorum")
        if f.revision < self.revision:
            raise _Leave(f"node {f.node_id} is behind us ({f.revision} < {self.revision})")
        self._healthy, self.connected_url = True, ep.url
        if f.members is not None and self.ring.learn([stream_url(u) for u in f.members]):
            self._remember_members(f.node_id)
        self.dp.connected_cp = ep.url
        if f.revision == self.revision:
            self._mark_synced()
        self._set_mode()
        if self.on_status is not None:
            self.on_status(f)

    def request_resync(self) -> bool:
        """Ask the node for our revision again, telling it our hash: a node whose hash differs sends
        a snapshot (anti-entropy repair). False if no stream is open."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        task = asyncio.get_running_loop().create_task(ws.send_bytes(encode_frame(Resync(self.revision, self.hash))))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return True

    def _publish_endpoints(self) -> None:
        self.dp.cp_endpoints = [e.url for e in self.endpoints]  # shown in the proxy's /status

    def _remember_members(self, node_id: str) -> None:
        self._publish_endpoints()
        log.info("control-plane members (from %s): %s", node_id, ", ".join(e.url for e in self.endpoints))
        if self.members_file is not None:
            try:
                save_learned_endpoints(self.members_file, self.ring.learned)
            except OSError as exc:
                log.warning("could not keep the learned control-plane URLs in %s: %s", self.members_file, exc)

    # ---- applying -----------------------------------------------------------------------------

    async def _worker(self, ws: Peer, queue: asyncio.Queue[ConfigFrame]) -> None:
        while True:
            frame = await queue.get()
            await (self._on_delta(ws, frame) if isinstance(frame, DeltaFrame) else self._on_snapshot(ws, frame))

    async def _on_delta(self, ws: Peer, f: DeltaFrame) -> None:
        if f.base != self.revision:
            if self._resync_for != self.revision:  # one resync per position, not one per stale frame
                self._resync_for = self.revision
                log.info("delta %d->%d does not fit revision %d: resync", f.base, f.revision, self.revision)
                await ws.send_bytes(encode_frame(Resync(self.revision)))
            return
        state = self.state if self.state is not None else ConfigState.empty()
        prepare = functools.partial(
            prepare_delta, state, f, current_runtime=self.dp.runtime, update=self._update, build=self._build
        )
        await self._apply(ws, f.revision, f.hash, prepare, inline=len(f.ops) <= INLINE_DELTA_OPS)

    async def _on_snapshot(self, ws: Peer, f: SnapshotChunk) -> None:
        try:
            joined = self._snapshot.add(f)
        except OutOfSequence as exc:
            await self._nack(ws, f.revision, str(exc))
            return
        if joined is None:
            return
        if joined.revision < self.revision:  # never go backwards; tell the node where we are
            log.warning("ignoring snapshot %d older than our revision %d", joined.revision, self.revision)
            await ws.send_bytes(encode_frame(Resync(self.revision)))
        elif self.state is not None and joined.revision == self.revision and joined.hash == self.hash:
            self._resync_for = None
            await ws.send_bytes(encode_frame(Ack(joined.revision)))
        else:
            prepare = functools.partial(prepare_snapshot, joined, build=self._build)
            await self._apply(ws, joined.revision, joined.hash, prepare)

    async def _apply(self, ws: Peer, revision: int, config_hash: str, prepare: Callable[[], Any], *,
                     inline: bool = False) -> None:  # fmt: skip
        """Build (off the loop unless ``inline``), swap, persist, ack; any failure is a nack and the
        old config stays. A small delta is applied inline: its copy-on-write update takes about a
        millisecond, while an executor thread would wait for the GIL behind the request path
        (the interpreter's 5 ms switch interval) and take several."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            state, runtime, body = prepare() if inline else await loop.run_in_executor(None, prepare)
        except Exception as exc:
            await self._nack(ws, revision, _why(exc))
            return
        if state.revision < self.revision:  # unreachable given the checks above; belt and braces
            return
        self._install(state, runtime, config_hash, from_cp=True)
        _observe(self.dp, time.perf_counter() - started)
        if self.cache is not None:
            # Shielded and remembered: ``stop`` waits for it, so a SIGTERM right after an install
            # still leaves that revision on disk.
            self._persisting = loop.run_in_executor(
                None, self._persist, state, body, config_hash
            )
            try:
                await asyncio.shield(self._persisting)
            except Exception as exc:  # serving matters more than the cache; say so loudly
                log.error("could not write config cache %s: %s", self.cache.path, _why(exc))
        await ws.send_bytes(encode_frame(Ack(state.revision)))

    def _persist(self, state: ConfigState, body: bytes | None, config_hash: str) -> None:
        """Executor thread: write the cache: a received snapshot as is, a state after a delta packed."""
        assert self.cache is not None
        if body is None:
            self.cache.save_state(state, config_hash)
        else:
            self.cache.save_encoded(body, state.revision, config_hash)

    def _install(self, state: ConfigState, runtime: Any, config_hash: str, *, from_cp: bool) -> None:
        """Swap and record, with no await in between (a cancelled worker cannot split them)."""
        self.dp.swap(runtime, mode="synced" if self._healthy else "cached")
        self.state, self.hash, self._resync_for = state, config_hash, None
        self.dp.revision, self.dp.hash = state.revision, config_hash
        self.dp.last_error = None
        if from_cp:
            self._mark_synced()
        self.applied.append(state.revision)
        log.info("installed config revision %d", state.revision)
        self._set_mode()
        if self.on_install is not None:
            self.on_install(state)

    def _mark_synced(self) -> None:
        mark = getattr(self.dp, "mark_synced", None)
        if mark is not None:
            mark(self.connected_url)
        else:
            self.dp.last_sync = time.monotonic()

    async def _nack(self, ws: Peer, revision: int, error: str) -> None:
        log.warning(
            "rejecting config revision %d: %s (still serving revision %d)", revision, error, self.revision
        )
        self.nacks.append((revision, error))
        self.dp.last_error = f"revision {revision}: {error}"
        await ws.send_bytes(encode_frame(Nack(revision, error[:1000])))

    def _set_mode(self) -> None:
        """empty without a config; synced while on a healthy node; cached otherwise (read-only)."""
        mode = "empty" if self.state is None else ("synced" if self._healthy else "cached")
        if mode != self.dp.mode:
            log.info("mode %s -> %s", self.dp.mode, mode)
            self.dp.mode = mode
        ws = self._ws
        if mode != self._reported_mode and ws is not None and not ws.closed:  # for the fleet registry
            self._reported_mode = mode
            task = asyncio.get_running_loop().create_task(
                ws.send_bytes(encode_frame(Mode(mode)))
            )
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _observe(dp: Any, seconds: float) -> None:
    with contextlib.suppress(AttributeError):
        dp.metrics.apply_duration.observe(seconds)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
