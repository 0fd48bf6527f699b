"""Relays: `gwadm relay run` fans the config out to a region that has no voting CP node.

A relay follows the control plane exactly like a proxy (the same sync client, modes and endpoint
ring, a last-known-good cache on disk) but installs no runtime: what it receives becomes the state
of a ``RelayStore``, and the CP node's own push hub and pull API (cluster/push.py,
cluster/changes_api.py) serve that store to downstream proxies, which list the relay in ``--cp``.

Safety, by construction:

* The store only ever holds what the sync client installed, and the sync client installs only
  frames of a node that said ``has_quorum`` (or of another relay serving a config it received that
  way), never going backwards: a relay cannot serve an uncommitted or an older revision.
* While the upstream is healthy the relay's status says ``has_quorum: true``; when it is lost the
  relay keeps serving its revision with ``has_quorum: false, cached: true``. A downstream proxy
  takes a cached revision only when it is newer than its own, and is ``cached`` then, never
  ``synced`` (proxy/sync.py ``_on_status``).
* Members: the relay announces none, so downstream proxies never learn (unreachable) CP URLs.

The relay reports itself (its own stream session on the CP, ``role: relay``) and its downstream
proxies (``POST /v1/changes/fleet``, every ``REPORT_INTERVAL``) to the fleet view, ``via`` the relay.

Downstream authentication: a bearer token equal to the relay's own proxy token, or listed in
``--downstream-token-file`` (one per line). The relay holds no cluster secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cluster import push
from cluster.auth import AuthError, unverified_claims
from cluster.changes_api import ChangesAPI
from gateway.delta import Delta, DeltaOp
from gateway.protocol import Status
from gateway.state import ConfigState
from proxy.cache import ConfigCache
from proxy.pull import changes_url
from proxy.sync import SyncClient, software_version
from proxy.sync_modes import make_sync_client

log = logging.getLogger("gwadm.relay")

DELTA_LOG_ENTRIES = 1000
REPORT_INTERVAL = 2.0
CACHE_FILE = "config.lkg"
MEMBERS_FILE = "cp-members.json"


def diff_states(old: ConfigState, new: ConfigState) -> Delta:
    """The delta from ``old`` to ``new`` (resources compared by their revisions), for the relay's
    delta log: its downstream proxies resume with deltas like from a CP node."""
    before, after = old.to_snapshot()["resources"], new.to_snapshot()["resources"]
    ops: list[DeltaOp] = []
    for kind in sorted(set(before) | set(after)):
        was, now = before.get(kind, {}), after.get(kind, {})
        for rid in sorted(now):
            res = now[rid]
            prev = was.get(rid)
            if prev is None or (prev["mod_revision"], prev["created_revision"]) != (
                res["mod_revision"], res["created_revision"]
            ):  # fmt: skip
                ops.append(("put", kind, rid, res))
        ops.extend(("delete", kind, rid, None) for rid in sorted(set(was) - set(now)))
    return Delta(old.revision, new.revision, tuple(ops))


class RelayStore:
    """The Store of cluster/push.py's hub and cluster/changes_api.py, fed by the upstream sync client."""

    def __init__(self, relay_id: str, *, delta_log_entries: int = DELTA_LOG_ENTRIES) -> None:
        self.node_id = relay_id
        self._state = ConfigState.empty()
        self._deltas: deque[Delta] = deque(maxlen=delta_log_entries)
        self._subscribers: list[Callable[[int], None]] = []
        self.healthy = False  # streaming from a node with quorum
        self.upstream: Status | None = None  # last status frame of the upstream node
        self.installed: list[int] = []  # revisions installed, in order (tests, /status)

    @property
    def state(self) -> ConfigState:
        return self._state

    def deltas_since(self, revision: int) -> list[Delta] | None:
        head = self._state.revision
        if revision == head:
            return []
        if revision > head:
            return None
        deltas = list(self._deltas)
        start = next((i for i, d in enumerate(deltas) if d.base == revision), None)
        return None if start is None else deltas[start:]

    def subscribe(
        self, callback: Callable[[int], None], wants_changes: Callable[[], bool] | None = None
    ) -> Callable[[], None]:
        """Every change is reported (``wants_changes`` is for ConfigStore, whose writes are applied
        on another thread; here a change is already on the loop)."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def member_urls(self) -> list[str]:
        return []  # downstream proxies must not learn CP URLs they may not reach

    # The hub's TokenPolicy: a relay knows no revocations (it holds no cluster secret); expiry of
    # a downstream token is still enforced (its claims carry ``exp``), and revoking the relay's
    # own token cuts the relay off upstream.
    @property
    def token_generation(self) -> int:
        return 0

    def token_revoked(self, jti: str) -> bool:
        return False

    def feed_status(self) -> dict[str, Any]:
        return self.raft_status()

    def raft_status(self) -> dict[str, Any]:
        up = self.upstream
        return {
            "node_id": self.node_id, "leader_id": up.leader_id if up is not None and self.healthy else None,
            "term": up.term if up is not None else 0, "has_quorum": self.healthy,
            "cached": not self.healthy and self._state.revision > 0, "revision": self._state.revision,
        }  # fmt: skip

    # ---- fed by the sync client --------------------------------------------------------------

    def install(self, state: ConfigState) -> None:
        old = self._state
        if state.revision < old.revision:  # the sync client never goes backwards; belt and braces
            log.error("refusing to install revision %d below %d", state.revision, old.revision)
            return
        if state.revision > old.revision:
            self._deltas.append(diff_states(old, state))
        elif state.hash() != old.hash():  # same revision, other content (an anti-entropy repair)
            self._deltas.clear()
        self._state = state
        self.installed.append(state.revision)
        self._notify()

    def set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            log.info("upstream %s: %s", "healthy" if healthy else "lost", "serving" if healthy else "serving cached")
            self._notify()

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            try:
                cb(self._state.revision)
            except Exception:
                log.exception("relay subscriber failed")


class RelayDataPlane:
    """What the sync client drives instead of a proxy's DataPlane: no runtime, a mode."""

    def __init__(self, relay_id: str, on_mode: Callable[[str], None]) -> None:
        self.proxy_id, self._on_mode = relay_id, on_mode
        self._mode = "empty"
        self.runtime: Any = None
        self.revision, self.hash = 0, ""
        self.connected_cp: str | None = None
        self.cp_endpoints: list[str] = []
        self.last_sync: float | None = None
        self.last_error: str | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        self._on_mode(value)

    def swap(self, runtime: Any, *, mode: str | None = None) -> Any:
        old, self.runtime = self.runtime, runtime
        if mode is not None:
            self.mode = mode
        return old

    def mark_synced(self, cp: str | None) -> None:
        self.last_sync = time.monotonic()


@dataclass(frozen=True)
class _Built:
    """The relay's "runtime": nothing to compile, only the revision (the sync client checks it)."""

    revision: int


def _build(snapshot: dict[str, Any], *, revision: int, hash: str) -> _Built:
    return _Built(revision)


@dataclass(frozen=True)
class RelaySettings:
    cp_urls: tuple[str, ...]
    listen: tuple[str, int]
    state_dir: Path
    token: str
    relay_id: str
    sync: str = "hybrid"
    poll_interval: float = 10.0
    check_interval: float = 30.0
    downstream_tokens: tuple[str, ...] = ()
    # TLS (cluster/tls.py), as on a proxy: cp_ssl verifies the upstream (https/wss, the cluster's CA,
    # a client certificate under mutual TLS); listen_ssl makes the downstream listener serve https/wss.
    cp_ssl: ssl.SSLContext | None = None
    listen_ssl: ssl.SSLContext | None = None


class RelayNode:
    """One running relay: upstream sync client, store, hub + pull API on ``listen``, fleet reports."""

    def __init__(self, settings: RelaySettings, **sync_options: Any) -> None:
        self.settings = settings
        self.store = RelayStore(settings.relay_id)
        self.dp = RelayDataPlane(settings.relay_id, lambda mode: self.store.set_healthy(mode == "synced"))
        self.cache = ConfigCache(settings.state_dir / CACHE_FILE)
        host, port = settings.listen
        self.software = software_version().replace("gwadm/", "gwadm-relay/", 1)
        self.sync: SyncClient = make_sync_client(
            settings.sync, settings.cp_urls, settings.token, settings.relay_id, self.dp, self.cache,
            address=f"{host}:{port}", software=self.software, build_runtime=_build,
            members_file=settings.state_dir / MEMBERS_FILE, poll_interval=settings.poll_interval,
            check_interval=settings.check_interval, ssl_context=settings.cp_ssl, **sync_options,
        )  # fmt: skip
        previous = self.sync.on_status  # anti-entropy's, in hybrid mode

        def on_status(frame: Status) -> None:
            self.store.upstream = frame
            if previous is not None:
                previous(frame)

        self.sync.on_status = on_status
        self.sync.on_install = self.store.install
        self.hub = push.PushHub(self.store, self.software)
        self.changes = ChangesAPI(self.store, sessions=self.hub.proxies)
        self._tokens = (settings.token, *settings.downstream_tokens)
        self._runner: web.AppRunner | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.reports = 0
        self.bound: tuple[str, int] | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        push.add_routes(app, self.hub, proxies_path="/v1/proxies/streams")
        self.changes.add_routes(app)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)  # type: ignore[no-any-return]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token, t) for t in self._tokens):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "unknown or missing bearer token", "path": None}},
                status=401,
            )
        claims: dict[str, Any] = {"role": "proxy", "sub": "relay-downstream"}
        with contextlib.suppress(AuthError):  # a known token: its expiry still counts
            exp = unverified_claims(token).get("exp")
            if isinstance(exp, int | float):
                if exp <= time.time():
                    return web.json_response(
                        {"error": {"code": "unauthorized", "message": "token expired", "path": None}}, status=401
                    )
                claims["exp"] = exp
        request["auth"] = claims
        return await handler(request)  # type: ignore[no-any-return]

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def status(self) -> dict[str, Any]:
        st = self.store.state
        return {
            "id": self.settings.relay_id, "mode": self.dp.mode, "revision": st.revision, "hash": st.hash(),
            "upstream_healthy": self.store.healthy, "connected_cp": self.sync.connected_url,
            "cp_endpoints": [e.url for e in self.sync.endpoints], "delta_log": len(self.store._deltas),
            "installed": self.store.installed[-20:], "reports": self.reports, "downstream": self.changes.fleet(),
        }  # fmt: skip

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def start(self) -> None:
        if self.sync.boot_from_cache():
            log.info("relay serving cached revision %d until a control-plane node answers", self.store.state.revision)
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        host, port = self.settings.listen
        try:
            site = web.TCPSite(runner, host, port, ssl_context=self.settings.listen_ssl)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RelayError(f"--listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        self.sync.start()
        self._reporter = asyncio.create_task(self._report_loop(), name="relay-fleet-report")
        log.info("relay %s listening on %s://%s:%d, control plane %s", self.settings.relay_id,
                 "https" if self.settings.listen_ssl is not None else "http", host, port,
                 ", ".join(self.settings.cp_urls))  # fmt: skip

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
        await self.sync.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _report_loop(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.settings.cp_ssl or True)  # https: the cluster's CA
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:
                await asyncio.sleep(REPORT_INTERVAL)
                url = self.sync.connected_url
                if url is None:
                    continue
                body = {"relay": self.settings.relay_id, "items": self.changes.fleet()}
                try:
                    async with http.post(
                        changes_url(url) + "/fleet", json=body, headers={"Authorization": f"Bearer {self.settings.token}"},
                        timeout=aiohttp.ClientTimeout(total=5),
                    ) as resp:  # fmt: skip
                        if resp.status == 200:
                            self.reports += 1
                        else:
                            log.warning("fleet report to %s: HTTP %s", url, resp.status)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    log.debug("fleet report to %s failed: %s", url, exc)


class RelayError(Exception):
    """A setting or a port problem; the message names the flag."""


async def serve(settings: RelaySettings) -> None:
    """Run until SIGTERM or SIGINT."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = RelayNode(settings)
    try:
        await node.start()
        await stop.wait()
        log.info("relay shutting down")
    finally:
        await node.stop()
