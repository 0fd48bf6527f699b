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

from aiohttp import web

from cluster import tls
from proxy.cache import ConfigCache
from proxy.server import DataPlane, create_proxy_app, create_status_app
from proxy.sync import SyncClient

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
    settings = ProxySettings(
        urls, listen_at, status_at, directory, token, pid, source_address or None,
        ca=ca or None, tls_cert=tls_cert or None, tls_key=tls_key or None,
        listen_tls_cert=listen_tls_cert or None, listen_tls_key=listen_tls_key or None,
    )  # fmt: skip
    settings.cp_ssl_context(), settings.listen_ssl_context()  # bad files: a clear error before anything starts
    return settings


class ProxyNode:
    """One running proxy: DataPlane, traffic and status servers, SyncClient."""

    def __init__(self, settings: ProxySettings, **sync_options: object) -> None:
        self.settings = settings
        self.dp = DataPlane(proxy_id=settings.proxy_id)
        self.cache = ConfigCache(settings.state_dir / CACHE_FILE)
        host, port = settings.listen
        status_host, status_port = settings.status_listen
        self.sync = SyncClient(
            settings.cp_urls, settings.token, settings.proxy_id, self.dp, self.cache,
            address=f"{host}:{port}", source_address=settings.source_address,
            status_address=f"{status_host}:{status_port}", members_file=settings.state_dir / MEMBERS_FILE,
            ssl_context=settings.cp_ssl_context(),
            why_dropped=functools.partial(tls.why_stream_dropped, ca=settings.ca, cert=settings.tls_cert)
            if settings.tls_cert else None,
            **sync_options,  # type: ignore[arg-type]
        )  # fmt: skip
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        """Boot from the cache, open both ports, start following the control plane."""
        if self.sync.boot_from_cache():
            log.info("serving cached config revision %d until a control-plane node answers", self.dp.revision)
        else:
            log.info("no cached config: serving 503 until the first config arrives")
        try:
            for app, (host, port), name, ctx in (
                (create_proxy_app(self.dp), self.settings.listen, "--listen", self.settings.listen_ssl_context()),
                (create_status_app(self.dp), self.settings.status_listen, "--status-listen", None),
            ):
                runner = web.AppRunner(app, shutdown_timeout=self.settings.shutdown_timeout, access_log=None)
                await runner.setup()
                self._runners.append(runner)
                try:
                    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
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

    async def stop(self) -> None:
        """Stop syncing first (no swap during shutdown), then drain traffic, then status."""
        await self.sync.stop()
        while self._runners:
            await self._runners.pop(0).cleanup()


async def serve(settings: ProxySettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = ProxyNode(settings)
    try:
        await node.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
