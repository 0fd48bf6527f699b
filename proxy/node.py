"""Process lifecycle of one proxy: settings, boot from the cache, servers, sync, clean shutdown.

Start order matters for availability: the cached config is installed *before* the traffic port
opens, so a proxy restarted while the control plane is down serves its last-known-good config from
its first request (mode ``cached``). Stop order is the reverse: first stop following the control
plane (no swap can race the shutdown), then drain traffic, then the status port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster import tls
from proxy.cache import ConfigCache
from proxy.http_common import Limits
from proxy.server import DataPlane, TrafficRunner, create_status_app
from proxy.sync import SyncClient
from proxy.sync_modes import DEFAULT_SYNC, SYNC_MODES, add_status_routes, make_sync_client
from proxy.workers import HubDataPlane, HubSync, WorkerHub, create_hub_status_app, reserve_port

log = logging.getLogger("gwadm.proxy")

CACHE_FILE = "config.lkg"
MEMBERS_FILE = "cp-members.json"  # control-plane URLs learned from the cluster
ID_FILE = "proxy.id"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the flag and what is wrong."""


@dataclass(frozen=True)
class ProxySettings:
    cp_urls: tuple[str, ...]
    listen: tuple[str, int]
    status_listen: tuple[str, int]
    state_dir: Path
    token: str
    proxy_id: str
    source_address: str | None = None
    shutdown_timeout: float = 10.0
    sync: str = DEFAULT_SYNC  # push | pull | hybrid (proxy/sync_modes.py)
    poll_interval: float = 10.0  # pull: long-poll wait
    check_interval: float = 30.0  # hybrid: anti-entropy HTTP check at least this often
    # TLS (cluster/tls.py): ca verifies the control plane (wss); tls_cert/tls_key are presented to it
    # (mutual TLS); listen_tls_cert/listen_tls_key make the traffic listener serve https.
    ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    listen_tls_cert: str | None = None
    listen_tls_key: str | None = None

    def cp_ssl_context(self) -> ssl.SSLContext | None:
        """Client context for wss:// control-plane URLs; None = aiohttp's default (system CAs)."""
        if not (self.ca or self.tls_cert or self.tls_key):
            return None
        try:
            return tls.client_context(self.ca, self.tls_cert, self.tls_key)
        except tls.TLSConfigError as exc:
            raise SettingsError(f"--ca/--tls-cert/--tls-key: {exc}") from None

    def listen_ssl_context(self) -> ssl.SSLContext | None:
        if not (self.listen_tls_cert or self.listen_tls_key):
            return None
        if not (self.listen_tls_cert and self.listen_tls_key):
            raise SettingsError("--listen-tls-cert and --listen-tls-key go together")
        try:
            return tls.server_context(self.listen_tls_cert, self.listen_tls_key)
        except tls.TLSConfigError as exc:
            raise SettingsError(f"--listen-tls-cert/--listen-tls-key: {exc}") from None


def parse_hostport(value: str, flag: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``:port`` (all interfaces) -> (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SettingsError(f"{flag}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_cp_urls(value: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    if not urls:
        raise SettingsError("--cp: at least one control-plane URL is needed")
    for url in urls:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("http", "https", "ws", "wss") or not url.split("://", 1)[1].strip("/"):
            raise SettingsError(f"--cp: {url!r} is not an http(s):// or ws(s):// URL")
    return urls


def parse_workers(value: str) -> int:
    """``--workers``: a count 1..256 or ``auto`` (the cores this process may use)."""
    from proxy.workers import cpu_count

    text = value.strip().lower()
    if text == "auto":
        return cpu_count()
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise SettingsError(f"--workers: expected a number 1..256 or 'auto', got {value!r}")
    return int(text)


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    if not token:
        raise SettingsError(f"--token-file: {path} is empty")
    return token


def stable_proxy_id(state_dir: Path) -> str:
    """The id kept in the state dir, created on first start: stable across restarts."""
    path = state_dir / ID_FILE
    with contextlib.suppress(OSError):
        existing = path.read_text().strip()
        if existing:
            return existing
    new = f"{socket.gethostname().split('.')[0]}-{secrets.token_hex(3)}"
    path.write_text(new + "\n")
    return new


def load_settings(
    *,
    cp: str,
    listen: str,
    status_listen: str,
    state_dir: str,
    token_file: str,
    proxy_id: str | None = None,
    source_address: str | None = None,
    sync: str = DEFAULT_SYNC,
    poll_interval: float = 10.0,
    check_interval: float = 30.0,
    ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    listen_tls_cert: str | None = None,
    listen_tls_key: str | None = None,
) -> ProxySettings:
    """Validate flags into settings; raises SettingsError with a one-line, flag-named message."""
    urls = parse_cp_urls(cp)
    listen_at = parse_hostport(listen, "--listen")
    status_at = parse_hostport(status_listen, "--status-listen")
    if listen_at == status_at and listen_at[1] != 0:
        raise SettingsError("--status-listen must differ from --listen")
    token = read_token(token_file)
    directory = Path(state_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(13, "not writable")
        pid = proxy_id or stable_proxy_id(directory)
    except OSError as exc:
        raise SettingsError(f"--state-dir: {state_dir}: {exc.strerror or exc}") from None
    try:
        Limits.from_env()  # the listener's limits (GWADM_PROXY_MAX_HEADER_BYTES...): fail here, not later
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if sync not in SYNC_MODES:
        raise SettingsError(f"--sync: expected one of {', '.join(SYNC_MODES)}, got {sync!r}")
    if not 0.1 <= poll_interval <= 30:
        raise SettingsError(f"--poll-interval: expected 0.1..30 seconds, got {poll_interval:g}")
    if not 0.1 <= check_interval <= 3600:
        raise SettingsError(f"--check-interval: expected 0.1..3600 seconds, got {check_interval:g}")
    settings = ProxySettings(
        urls, listen_at, status_at, directory, token, pid, source_address or None,
        sync=sync, poll_interval=poll_interval, check_interval=check_interval,
        ca=ca or None, tls_cert=tls_cert or None, tls_key=tls_key or None,
        listen_tls_cert=listen_tls_cert or None, listen_tls_key=listen_tls_key or None,
    )  # fmt: skip
    settings.cp_ssl_context(), settings.listen_ssl_context()  # bad files: a clear error before anything starts
    return settings


def make_sync(
    settings: ProxySettings,
    dp: Any,
    cache: ConfigCache,
    listen: tuple[str, int],
    *,
    cls: type[SyncClient] = SyncClient,
    **sync_options: object,
) -> SyncClient:
    """The one control-plane stream of a proxy host (``listen`` is the traffic address it reports)."""
    host, port = listen
    status_host, status_port = settings.status_listen
    return make_sync_client(
        settings.sync, settings.cp_urls, settings.token, settings.proxy_id, dp, cache, base=cls,
        address=f"{host}:{port}", source_address=settings.source_address,
        status_address=f"{status_host}:{status_port}", members_file=settings.state_dir / MEMBERS_FILE,
        poll_interval=settings.poll_interval, check_interval=settings.check_interval,
        ssl_context=settings.cp_ssl_context(),
        why_dropped=functools.partial(tls.why_stream_dropped, ca=settings.ca, cert=settings.tls_cert)
        if settings.tls_cert else None,
        **sync_options,
    )  # fmt: skip


async def start_site(
    app: web.Application, listen: tuple[str, int], flag: str, shutdown_timeout: float
) -> web.AppRunner:
    """Run ``app`` on ``listen``; a port that cannot be bound is a SettingsError naming ``flag``."""
    host, port = listen
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SettingsError(f"{flag}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return runner


class ProxyNode:
    """One running proxy: DataPlane, traffic and status servers, SyncClient."""

    def __init__(self, settings: ProxySettings, **sync_options: object) -> None:
        self.settings = settings
        self.dp = DataPlane(proxy_id=settings.proxy_id)
        self.cache = ConfigCache(settings.state_dir / CACHE_FILE)
        self.sync = make_sync(settings, self.dp, self.cache, settings.listen, **sync_options)  # type: ignore[arg-type]
        self._runners: list[web.AppRunner | TrafficRunner] = []

    async def start(self) -> None:
        """Boot from the cache, open both ports, start following the control plane."""
        if self.sync.boot_from_cache():
            log.info("serving cached config revision %d until a control-plane node answers", self.dp.revision)
        else:
            log.info("no cached config: serving 503 until the first config arrives")
        try:
            for app, (host, port), name in (
                (None, self.settings.listen, "--listen"),
                (self._status_app(), self.settings.status_listen, "--status-listen"),
            ):
                runner: web.AppRunner | TrafficRunner
                if app is None:
                    runner = TrafficRunner(self.dp, shutdown_timeout=self.settings.shutdown_timeout,
                                           ssl_context=self.settings.listen_ssl_context())
                else:
                    runner = web.AppRunner(app, shutdown_timeout=self.settings.shutdown_timeout, access_log=None)
                await runner.setup()
                self._runners.append(runner)
                try:
                    if isinstance(runner, TrafficRunner):
                        await runner.start(host, port)
                    else:
                        await web.TCPSite(runner, host, port).start()
                except OSError as exc:
                    raise SettingsError(
                        f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None
        except BaseException:
            await self.stop()
            raise
        self.sync.start()
        log.info(
            "proxy %s listening on %s:%d (status %s:%d), control plane %s", self.settings.proxy_id,
            *self.settings.listen, *self.settings.status_listen, ", ".join(self.settings.cp_urls),
        )  # fmt: skip

    def _status_app(self) -> web.Application:
        app = create_status_app(self.dp)
        add_status_routes(app, self.sync)  # /status/sync (and the test-only debug hook)
        return app

    async def stop(self) -> None:
        """Stop syncing first (no swap during shutdown), then drain traffic, then status."""
        await self.sync.stop()
        while self._runners:
            await self._runners.pop(0).cleanup()


class WorkersNode:
    """``--workers N`` (N > 1): this process is the hub (one CP stream, status port), N workers serve."""

    def __init__(
        self, settings: ProxySettings, workers: int, *, log_level: str = "INFO", **sync_options: object
    ) -> None:
        self.settings = settings
        if settings.listen_ssl_context() is not None:
            raise SettingsError("--listen-tls-cert: not supported with --workers > 1 yet (use one process)")
        self.dp = HubDataPlane(proxy_id=settings.proxy_id)
        self.cache = ConfigCache(settings.state_dir / CACHE_FILE)
        host, port = settings.listen
        try:
            self._reserved = reserve_port(host, port)
        except OSError as exc:
            raise SettingsError(f"--listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.listen = (host, self._reserved.getsockname()[1])
        sync = make_sync(settings, self.dp, self.cache, self.listen, cls=HubSync, **sync_options)
        assert isinstance(sync, HubSync)
        self.sync = sync
        self.hub = WorkerHub(
            count=workers, listen=self.listen, proxy_id=settings.proxy_id, sync=sync, dp=self.dp,
            shutdown_timeout=settings.shutdown_timeout, log_level=log_level,
        )  # fmt: skip
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self.sync.boot_from_cache():
            log.info("serving cached config revision %d until a control-plane node answers", self.dp.revision)
        try:
            await self.hub.start()
            status_app = create_hub_status_app(self.hub)
            add_status_routes(status_app, self.sync)
            self._runner = await start_site(
                status_app, self.settings.status_listen, "--status-listen",
                self.settings.shutdown_timeout,
            )  # fmt: skip
        except BaseException:
            await self.stop()
            raise
        self.sync.start()
        log.info(
            "proxy %s: %d workers on %s:%d (status %s:%d), control plane %s", self.settings.proxy_id,
            self.hub.count, *self.listen, *self.settings.status_listen, ", ".join(self.settings.cp_urls),
        )  # fmt: skip

    async def stop(self) -> None:
        await self.sync.stop()
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._reserved.close()


async def serve(settings: ProxySettings, workers: int = 1, log_level: str = "INFO") -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node: ProxyNode | WorkersNode = (
        ProxyNode(settings) if workers <= 1 else WorkersNode(settings, workers, log_level=log_level)
    )
    try:
        await node.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
