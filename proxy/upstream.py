"""Pooled keep-alive connections to upstream targets (asyncio Protocols, httptools response parsing).

``Upstreams`` holds one ``TargetPool`` per ``host:port``: a stack of idle connections (the most
recently used is reused first, so a few warm connections serve a steady load and the rest expire
after ``Limits.upstream_idle``). A connection serves one request at a time; what to do with the
parsed response is the business of its current ``relay`` (``proxy.forward.Relay``), to which every
parser callback is handed on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools

from proxy.http_common import Limits

log = logging.getLogger(__name__)


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a target; ``relay`` receives the parsed response."""

    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.relay: Any = None
        self.closed = False
        self.reading_paused = False
        self.idle_since = 0.0
        self.used = 0

    # -- asyncio ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        relay = self.relay
        if relay is not None:
            self.relay = None
            relay.upstream_lost(exc)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None:  # nothing asked: an idle connection must not talk; drop it
            self.close()
            return
        relay.received(data)

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.upstream_full(True)

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.upstream_full(False)

    # httptools callbacks, handed on to the relay

    def on_status(self, status: bytes) -> None:
        self.relay.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.relay.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.relay.on_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.relay.on_body(body)

    def on_message_complete(self) -> None:
        self.relay.on_complete()

    # -- control ------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def release(self, reusable: bool) -> None:
        """The relay is done with the connection: back to the idle stack, or closed."""
        self.relay = None
        if reusable and not self.closed:
            self.resume_reading()
            self.pool.put(self)
        else:
            self.close()


class TargetPool:
    """Idle keep-alive connections to one ``host:port``."""

    def __init__(self, upstreams: Upstreams, host: str, port: int) -> None:
        self.upstreams = upstreams
        self.host = host
        self.port = port
        self.idle: list[UpstreamConnection] = []

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A new connection; raises OSError (refused, unreachable) or TimeoutError."""
        loop = asyncio.get_running_loop()
        local = (self.upstreams.source_address, 0) if self.upstreams.source_address else None
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port, local_addr=local),
            timeout,
        )
        return proto

    def put(self, conn: UpstreamConnection) -> None:
        if self.upstreams.closed or len(self.idle) >= self.upstreams.limits.max_idle_per_target:
            conn.close()
            return
        conn.idle_since = self.upstreams.loop.time()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        if self.idle and conn in self.idle:
            self.idle.remove(conn)

    def expire(self, before: float) -> None:
        stale = [c for c in self.idle if c.idle_since < before]
        for conn in stale:
            conn.close()

    def close(self) -> None:
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


class Upstreams:
    """Every target pool of one DataPlane, plus the sweeper that closes long-idle connections."""

    def __init__(self, limits: Limits, source_address: str | None = None) -> None:
        self.limits = limits
        self.source_address = source_address
        self.pools: dict[tuple[str, int], TargetPool] = {}
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._sweeper: asyncio.Task[None] | None = None

    def pool(self, host: str, port: int) -> TargetPool:
        key = (host, port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = TargetPool(self, host, port)
        return pool

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="upstream-idle-sweeper")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.5, min(5.0, self.limits.upstream_idle / 2))
        while True:
            await asyncio.sleep(interval)
            before = loop.time() - self.limits.upstream_idle
            for pool in list(self.pools.values()):
                pool.expire(before)

    async def close(self) -> None:
        self.closed = True
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
