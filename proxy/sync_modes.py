"""The three ways a proxy follows the control plane (docs/sync-modes.md), and their status routes.

* ``push``: the websocket stream alone (proxy/sync.py).
* ``hybrid`` (the default): the stream plus anti-entropy hash checks (proxy/antientropy.py).
* ``pull``: HTTP long-polls (proxy/pull.py); each poll carries our hash, so the node's answer is a
  check as well, and status frames are compared like on the stream.

``/status/sync`` on the status listener shows the mode and the anti-entropy counters. With
``GWADM_PROXY_DEBUG_HOOKS=1`` in the environment (tests only, off by default) the status listener
also serves ``POST /debug/corrupt``: it removes one route from the in-memory config *without*
telling anyone, the silent divergence anti-entropy exists to repair.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from gateway.state import ConfigState
from proxy.antientropy import DEFAULT_INTERVAL, AntiEntropy
from proxy.pull import PullClient
from proxy.sync import SyncClient

SYNC_MODES = ("push", "pull", "hybrid")
DEFAULT_SYNC = "hybrid"
DEFAULT_POLL_INTERVAL = 10.0
DEBUG_ENV = "GWADM_PROXY_DEBUG_HOOKS"
SYNC_KEY = web.AppKey("sync_client", SyncClient)


class HybridMixin(SyncClient):
    """Push stream plus anti-entropy (mixed into SyncClient or a subclass of it)."""

    sync_mode = "hybrid"

    def __init__(self, *args: Any, check_interval: float = DEFAULT_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.antientropy = AntiEntropy(self, interval=check_interval)

    def start(self) -> None:
        super().start()
        self.antientropy.start()

    async def stop(self) -> None:
        await self.antientropy.stop()
        await super().stop()


class CheckedPullClient(PullClient):
    """Pull with the status comparison counted (the poll's ``hash`` makes the node repair us)."""

    def __init__(self, *args: Any, check_interval: float = DEFAULT_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.antientropy = AntiEntropy(self, interval=check_interval)


def make_sync_client(
    mode: str, *args: Any, base: type[SyncClient] = SyncClient, poll_interval: float = DEFAULT_POLL_INTERVAL,
    check_interval: float = DEFAULT_INTERVAL, **kwargs: Any,
) -> SyncClient:  # fmt: skip
    """The client for ``mode`` (one of SYNC_MODES), built on ``base`` (SyncClient or a subclass
    such as the worker hub's); the other arguments are SyncClient's."""
    if mode == "push":
        return base(*args, **kwargs)
    if mode == "hybrid":
        cls: type[SyncClient] = type(f"Hybrid{base.__name__}", (HybridMixin, base), {})
        return cls(*args, check_interval=check_interval, **kwargs)  # type: ignore[call-arg]
    if mode == "pull":
        cls = CheckedPullClient if base is SyncClient else type(f"Pull{base.__name__}", (base, CheckedPullClient), {})
        return cls(*args, poll_interval=poll_interval, check_interval=check_interval, **kwargs)  # type: ignore[call-arg]
    raise ValueError(f"sync mode must be one of {', '.join(SYNC_MODES)}, not {mode!r}")


def sync_info(sync: SyncClient) -> dict[str, Any]:
    ae: AntiEntropy | None = getattr(sync, "antientropy", None)
    info: dict[str, Any] = {
        "sync": getattr(sync, "sync_mode", "push"), "revision": sync.revision, "hash": sync.hash,
        "connected_cp": sync.connected_url, "antientropy": ae.info() if ae is not None else None,
    }  # fmt: skip
    if isinstance(sync, PullClient):
        info["poll_interval"], info["polls"] = sync.poll_interval, sync.polls
    return info


def add_status_routes(app: web.Application, sync: SyncClient) -> None:
    """``/status/sync`` always; ``POST /debug/corrupt`` only with GWADM_PROXY_DEBUG_HOOKS=1."""
    app[SYNC_KEY] = sync

    async def status_sync(_: web.Request) -> web.Response:
        return web.json_response(sync_info(sync))

    app.router.add_get("/status/sync", status_sync)
    if os.environ.get(DEBUG_ENV) == "1":
        app.router.add_post("/debug/corrupt", _corrupt)


async def _corrupt(request: web.Request) -> web.Response:
    """Drop one route (``?route=ID``, default the first) from the served config, keeping the revision
    and the hash the proxy believes it has: exactly what a buggy apply would leave behind."""
    sync = request.app[SYNC_KEY]
    state = sync.state
    if state is None:
        return web.json_response({"error": {"code": "empty", "message": "no config installed", "path": None}},
                                 status=409)  # fmt: skip
    snapshot = state.to_snapshot()
    routes = snapshot["resources"].get("routes", {})
    rid = request.query.get("route") or next(iter(sorted(routes)), None)
    if rid is None or rid not in routes:
        return web.json_response({"error": {"code": "not_found", "message": f"no route {rid!r}", "path": "route"}},
                                 status=404)  # fmt: skip
    del routes[rid]
    bad = ConfigState.from_snapshot(snapshot)
    runtime = sync._build(snapshot, revision=bad.revision, hash=sync.hash)
    sync.dp.swap(runtime)
    sync.state = bad
    return web.json_response({"removed": f"routes/{rid}", "revision": bad.revision, "hash": bad.hash(),
                              "believed_hash": sync.hash})  # fmt: skip
