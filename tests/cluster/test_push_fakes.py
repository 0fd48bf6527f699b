"""Shared fixtures for push-hub and sync-client tests: an in-memory store and a hub server.

The fake store implements the contracts §7 interface on top of the real ``ConfigState.apply``,
so every delta it hands out is a real one. Writes are applied synchronously in the test's loop
and subscribers are called via ``call_soon``, like the real store's loop bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from cluster.auth import AuthError, mint_token, verify_token
from cluster.push import PushHub, add_routes
from gateway.codec import decode, encode
from gateway.delta import Delta
from gateway.model import Op, Txn
from gateway.protocol import decode_frame
from gateway.state import ConfigState


def wire_encode(frame: dict[str, Any]) -> bytes:
    """A frame written as its wire dict, checked by the real schema (no test sends what no peer could)."""
    data = encode(frame)
    decode_frame(data)
    return data


def wire_decode(data: bytes) -> dict[str, Any]:
    """The wire dict of a valid frame (``FrameError`` otherwise)."""
    return decode_frame(data).wire()


SECRET = "test-secret-0123456789"
PROXY_TOKEN = mint_token(SECRET, "proxy", "p1")
VIEWER_TOKEN = mint_token(SECRET, "viewer", "v")
_ids = itertools.count(1)


def upstream(port: int = 9001) -> dict[str, Any]:
    return {"targets": [{"host": "127.0.0.1", "port": port}]}


def route(path: str, up: str = "u1") -> dict[str, Any]:
    return {"paths": [path], "upstream": up}


class FakeStore:
    """In-memory ConfigStore: real state transitions, bounded delta window, settable raft status."""

    def __init__(self, node_id: str = "n1", window: int = 1000) -> None:
        self.node_id = node_id
        self.window = window
        self._state = ConfigState.empty()
        self._deltas: list[Delta] = []
        self._subs: dict[Callable[[int], None], Callable[[], bool] | None] = {}  # -> wants_changes
        self.changes_declined = 0  # config changes no subscriber wanted (ConfigStore.subscribe)
        self.status: dict[str, Any] = {"leader_id": "n1", "term": 1, "has_quorum": True}
        self.members: list[str] = ["http://127.0.0.1:8001"]  # admin URLs in status frames
        self.token_generation = 0  # the token policy every Store is (cluster/auth.py TokenPolicy)
        self.revoked: set[str] = set()

    def token_revoked(self, jti: str) -> bool:
        return jti in self.revoked

    @property
    def state(self) -> ConfigState:
        return self._state

    def deltas_since(self, revision: int) -> list[Delta] | None:
        head = self._state.revision
        if revision == head:
            return []
        if revision > head or not self._deltas or self._deltas[0].base > revision:
            return None
        return [d for d in self._deltas if d.base >= revision]

    def subscribe(
        self, callback: Callable[[int], None], wants_changes: Callable[[], bool] | None = None
    ) -> Callable[[], None]:
        self._subs[callback] = wants_changes
        return lambda: self._subs.pop(callback, None)

    def raft_status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "revision": self._state.revision, **self.status}

    def feed_status(self) -> dict[str, Any]:
        return self.raft_status()

    def member_urls(self) -> list[str]:
        return list(self.members)

    # -- test controls --------------------------------------------------------------------------
    def install(self, state: ConfigState, delta: Delta) -> None:
        assert delta.base == self._state.revision
        self._state = state
        self._deltas = (self._deltas + [delta])[-self.window :]
        self._notify(config_change=True)

    def set_status(self, **kw: Any) -> None:
        self.status.update(kw)
        self._notify()

    def _notify(self, config_change: bool = False) -> None:
        """As ConfigStore: a config change reaches the subscribers only if one wants it."""
        if config_change and not any(w is None or w() for w in self._subs.values()):
            self.changes_declined += 1
            return
        loop = asyncio.get_running_loop()
        for cb in list(self._subs):
            loop.call_soon(cb, self._state.revision)


class FakeCluster:
    """Several stores that receive the same committed transactions (a replicated log, in memory)."""

    def __init__(self, *stores: FakeStore) -> None:
        self.stores = list(stores)

    @property
    def state(self) -> ConfigState:
        return self.stores[0].state

    def write(self, *ops: Op, to: list[FakeStore] | None = None) -> int:
        targets = to if to is not None else self.stores
        new, delta = targets[0].state.apply(Txn(f"req-{next(_ids)}", tuple(ops)))
        for s in targets:
            s.install(new, delta)
        return new.revision


def put(kind: str, id: str, body: dict[str, Any]) -> Op:
    return Op("put", kind, id, body)


def delete(kind: str, id: str) -> Op:
    return Op("delete", kind, id)


def seed(cluster: FakeCluster, routes: int = 3) -> int:
    """u1 then one revision per route r0..r{n-1}; returns the head revision."""
    rev = cluster.write(put("upstreams", "u1", upstream()))
    for i in range(routes):
        rev = cluster.write(put("routes", f"r{i}", route(f"/r{i}")))
    return rev


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Stand-in for the admin API's middleware: verify the bearer token, store claims."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        with contextlib.suppress(AuthError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aiohttp's NotAppKeyWarning for the contract's str key
            request["auth"] = verify_token(SECRET, header[7:])
    return await handler(request)


class HubServer:
    """A real PushHub in a real aiohttp server on 127.0.0.1 (random port)."""

    def __init__(self, store: FakeStore, **hub_kw: Any) -> None:
        self.store = store
        hub_kw.setdefault("heartbeat", 2.0)
        self.hub = PushHub(store, "gwadm/test", **hub_kw)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HubServer:
        app = web.Application(middlewares=[auth_middleware])
        add_routes(app, self.hub)
        self.runner = web.AppRunner(app, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class RawProxy:
    """A hand-driven proxy speaking raw frames, to observe exactly what the hub sends."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, token: str = PROXY_TOKEN) -> RawProxy:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(url + "/v1/stream", headers={"Authorization": f"Bearer {token}"})
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def hello(self, revision: int = 0, hash: str = "", proxy_id: str = "p1", proto: int = 1) -> None:
        await self.send_raw(
            {
                "t": "hello",
                "proto": proto,
                "proxy_id": proxy_id,
                "software": "raw/1",
                "revision": revision,
                "hash": hash,
                "address": "127.0.0.1:1",
            }
        )

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_bytes(wire_encode(frame))

    async def send_raw(self, frame: dict[str, Any]) -> None:
        await self.ws.send_bytes(encode(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.BINARY:
            return {"t": "_closed", "type": msg.type, "code": self.ws.close_code, "extra": msg.extra}
        try:
            return wire_decode(msg.data)
        except Exception:
            obj: dict[str, Any] = decode(msg.data)
            return obj

    async def recv_config(self, timeout: float = 5.0) -> dict[str, Any]:
        """Next non-status frame."""
        while True:
            f = await self.recv(timeout)
            if f["t"] != "status":
                return f

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``pred`` until true; fail after ``timeout`` seconds (never a bare sleep for ordering)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
