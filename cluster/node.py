"""Control-plane node process: settings, start/stop order, readiness and signals.

Start order: the Raft member first (its port must bind, or we stop with a clear error before
anything listens), then the admin API and the push hub on one aiohttp site. Stop order is the
reverse, so no request is accepted by a node whose Raft member is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import tomllib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cluster import tls
from cluster.admin_api import create_admin_app
from cluster.app_keys import SETTINGS_KEY
from cluster.auth import raft_password
from cluster.changes_api import ChangesAPI
from cluster.discovery import Discovery
from cluster.discovery_api import add_discovery_routes
from cluster.limits import Limits, make_runner
from cluster.membership_records import Member
from cluster.raft import RaftSettings
from cluster.store import ConfigStore
from cluster.timeouts import Timeouts

log = logging.getLogger("gwadm.node")
SOFTWARE_VERSION = "gwadm/0.1.0"
# The defaults (700, 10, 10) collect the young generation every few writes under concurrent load,
# and the older generations often enough that each pass walks every long-lived object again:
# 32 writers, 1,450 -> 1,550 writes/s (bench.cp_cpu, A/B x6).
GC_THRESHOLD = (50_000, 50, 100)
# The [raft] keys a node.toml may set; addresses, secret, data dir and fsync come from the node's own settings.
TLS_KEYS = ("tls_cert", "tls_key", "ca", "mtls", "insecure")
RAFT_TUNABLES = frozenset({
    "min_timeout", "max_timeout", "append_entries_period", "leader_fallback_timeout",
    "connection_retry_time", "max_bind_retries", "compaction_min_entries", "compaction_min_time",
    "max_clock_skew", "connect_timeout", "link_timeout", "link_ping_interval", "group_commit", "pre_vote",
    "lease_reads", "lease_duration", "lease_clock_drift",
})


class SettingsError(ValueError):
    """A node setting is missing or malformed; the message names it."""


@dataclass
class Peer:
    id: str
    raft_addr: str
    admin_url: str


@dataclass
class NodeSettings:
    node_id: str
    raft_addr: str
    admin_addr: str
    data_dir: str
    secret: str
    peers: list[Peer] = field(default_factory=list)
    fsync: bool = True
    body_limit: int = 1024 * 1024
    limits: Limits = field(default_factory=Limits)  # [limits] in node.toml (cluster/limits.py)
    delta_log_entries: int = 1000
    audit_entries: int = 10_000  # records the replicated audit log keeps (gateway/audit.py)
    raft: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)  # [push]: stream limits, see cluster/push.py
    timeouts: Timeouts = field(default_factory=Timeouts)  # [timeouts]: see cluster/timeouts.py
    # Source address for every outgoing connection (Raft peers, peer admin APIs): the address peers
    # and partition rules know this node by (docs/architecture.md §6). None = the kernel picks.
    source_address: str | None = None
    # TLS (cluster/tls.py): the admin API and the push stream serve https/wss with tls_cert/tls_key;
    # ca verifies peers (and, with mtls, the client certificates proxies must present on /v1/stream).
    # Plain HTTP only with insecure = true (a warning at start; /v1/status shows "insecure": true).
    tls_cert: str | None = None
    tls_key: str | None = None
    ca: str | None = None
    mtls: bool = False
    insecure: bool = False
    # Listen for admin and Raft traffic on this host (0.0.0.0 in a container) with the ports of
    # admin_addr/raft_addr, which stay the addresses peers and proxies use. None = those addresses.
    bind_host: str | None = None

    @property
    def admin_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.admin_addr}"

    def validate(self) -> None:
        if not self.node_id:
            raise SettingsError("node_id is required")
        for name in ("raft_addr", "admin_addr"):
            value = getattr(self, name)
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"{name} must look like host:port, got {value!r}")
        if not self.secret:
            raise SettingsError("a cluster secret is required (secret_file, --secret-file or GWADM_SECRET)")
        ids = [self.node_id, *(p.id for p in self.peers)]
        if len(set(ids)) != len(ids):
            raise SettingsError(f"node ids must be unique, got {ids}")
        if not self.data_dir:
            raise SettingsError("data_dir is required")
        if self.audit_entries < 1:
            raise SettingsError("audit_entries must be at least 1")
        if self.delta_log_entries < 1:
            raise SettingsError("delta_log_entries must be at least 1")
        from cluster.push_limits import check_push_settings

        try:
            check_push_settings(self.push)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        unknown = set(self.raft) - RAFT_TUNABLES
        if unknown:
            raise SettingsError(
                f"unknown [raft] setting(s): {', '.join(sorted(unknown))}; "
                f"expected some of {', '.join(sorted(RAFT_TUNABLES))}"
            )
        if self.insecure and (self.tls_cert or self.tls_key or self.mtls):
            raise SettingsError("insecure (plain HTTP) contradicts tls_cert/tls_key/mtls: choose one")
        if not self.insecure and not (self.tls_cert and self.tls_key):
            raise SettingsError(
                "TLS needs tls_cert and tls_key (--tls-cert/--tls-key); plain HTTP only with insecure = true (--insecure)"
            )
        if self.mtls and not self.ca:
            raise SettingsError("mtls needs the CA certificate (ca / --ca)")

    def raft_settings(self) -> RaftSettings:
        return RaftSettings(
            self_addr=self.raft_addr,
            partners=[p.raft_addr for p in self.peers],
            password=raft_password(self.secret),
            data_dir=os.path.join(self.data_dir, "raft"),
            fsync=self.fsync,
            source_address=self.source_address,
            bind_host=self.bind_host,
            node_id=self.node_id,
            admin_url=self.admin_url,
            peer_members=[Member(p.id, p.raft_addr, p.admin_url) for p in self.peers],
            **self.raft,
        )


def _timeouts(raw: Any) -> Timeouts:
    try:
        return Timeouts.from_toml(raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def parse_peer(text: str) -> Peer:
    """``ID,RAFT_ADDR,ADMIN_URL`` as given on the command line or in GWADM_PEERS."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise SettingsError(f"peer {text!r} must be ID,RAFT_HOST:PORT,ADMIN_URL")
    return Peer(*parts)


def load_settings(config_file: str | None, overrides: dict[str, Any]) -> NodeSettings:
    """Merge a TOML file with command-line/env overrides (overrides win)."""
    data: dict[str, Any] = {}
    base_dir = "."
    if config_file:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {config_file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file} is not valid TOML: {exc}") from exc
        base_dir = os.path.dirname(os.path.abspath(config_file))
    data.update({k: v for k, v in overrides.items() if v not in (None, (), [])})
    secret = data.pop("secret", None)
    secret_file = data.pop("secret_file", None)
    if not secret and secret_file:
        path = os.path.join(base_dir, secret_file)
        try:
            with open(path) as f:
                secret = f.read().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read secret_file {path}: {exc.strerror}") from exc
    peers_raw = data.pop("peers", [])
    peers = [p if isinstance(p, Peer) else parse_peer(p) if isinstance(p, str) else Peer(**p) for p in peers_raw]
    known = {"node_id", "raft_addr", "admin_addr", "data_dir", "fsync", "body_limit", "delta_log_entries", "raft", "push", "audit_entries",
             "limits", "source_address", "timeouts", "bind_host", *TLS_KEYS}
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    missing = {"node_id", "raft_addr", "admin_addr", "data_dir"} - set(data)
    if missing:
        raise SettingsError(f"missing setting(s): {', '.join(sorted(missing))}")
    data_dir = data["data_dir"]
    if not os.path.isabs(data_dir):
        data_dir = os.path.join(base_dir, data_dir)
    tls_files = {k: os.path.join(base_dir, str(data[k])) if data.get(k) else None for k in ("tls_cert", "tls_key", "ca")}
    settings = NodeSettings(
        node_id=str(data["node_id"]),
        raft_addr=str(data["raft_addr"]),
        admin_addr=str(data["admin_addr"]),
        data_dir=data_dir,
        secret=secret or "",
        peers=peers,
        fsync=bool(data.get("fsync", True)),
        body_limit=int(data.get("body_limit", 1024 * 1024)),
        limits=_limits(data.get("limits", {})),
        delta_log_entries=int(data.get("delta_log_entries", 1000)),
        audit_entries=int(data.get("audit_entries", 10_000)),
        raft=dict(data.get("raft", {})),
        push=dict(data.get("push", {})),
        timeouts=_timeouts(data.get("timeouts")),
        source_address=str(data["source_address"]) if data.get("source_address") else None,
        bind_host=str(data["bind_host"]) if data.get("bind_host") else None,
        mtls=bool(data.get("mtls", False)),
        insecure=bool(data.get("insecure", False)),
        **tls_files,
    )
    settings.validate()
    return settings


def tls_contexts(settings: NodeSettings) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """(server context of the admin site, client context for peers); None = plain HTTP (insecure).
    Called before anything starts: a bad or expired certificate stops the node with a clear error."""
    if settings.insecure:
        log.warning("node %s serves PLAIN HTTP (insecure): tokens cross the network in clear", settings.node_id)
        return None
    assert settings.tls_cert and settings.tls_key
    try:
        return (
            tls.server_context(settings.tls_cert, settings.tls_key, settings.ca, verify_clients=settings.mtls),
            tls.client_context(settings.ca),
        )
    except tls.TLSConfigError as exc:
        raise SettingsError(str(exc)) from None


def _limits(table: Any) -> Limits:
    if not isinstance(table, dict):
        raise SettingsError("[limits] must be a table")
    try:
        return Limits.from_dict(table)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


async def serve(settings: NodeSettings, stop: asyncio.Event | None = None) -> None:
    """Run one node until ``stop`` is set or SIGTERM/SIGINT arrives."""
    from cluster import push  # imported late: the hub is optional while it is being built

    contexts = tls_contexts(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # The journal and dumps hold the whole config, consumer credentials included: owner only.
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    addr_to_id = {settings.raft_addr: settings.node_id, **{p.raft_addr: p.id for p in settings.peers}}
    store = ConfigStore(
        settings.node_id, settings.raft_settings(), addr_to_id, delta_log_entries=settings.delta_log_entries,
        audit_entries=settings.audit_entries
    )
    store.no_leader_wait = settings.timeouts.no_leader_wait
    hub = push.PushHub(store, SOFTWARE_VERSION, **settings.push)
    changes = ChangesAPI(store, sessions=hub.proxies)  # pull, anti-entropy checks, relay fleet reports
    discovery = Discovery(store, settings.secret, source_address=settings.source_address)

    def extra_routes(a: web.Application) -> None:
        push.add_routes(a, hub, proxies_path="/v1/proxies/streams")
        changes.add_routes(a)
        add_discovery_routes(a, discovery)

    app = create_admin_app(
        store,
        secret=settings.secret,
        admin_url=settings.admin_url,
        raft_addr=settings.raft_addr,
        peers=[{"id": p.id, "raft_addr": p.raft_addr, "admin_url": p.admin_url} for p in settings.peers],
        body_limit=settings.body_limit,
        write_timeout=settings.timeouts.request,
        read_timeout=settings.timeouts.request,
        forward_timeout=settings.timeouts.forward,
        limits=settings.limits,
        # /v1/proxies/local: the stream sessions merged with pull proxies and relayed ones
        extra_routes=extra_routes,
        local_fleet=changes.fleet,
        source_address=settings.source_address,
    )
    app[SETTINGS_KEY]["insecure"] = settings.insecure
    server_ssl = None
    if contexts is not None:
        server_ssl, app[SETTINGS_KEY]["peer_ssl"] = contexts
        if settings.mtls:
            app.middlewares.append(tls.client_cert_required())
    runner = make_runner(app, settings.limits, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = settings.admin_addr.rpartition(":")
    host = settings.bind_host or host
    try:
        site = (
            web.TCPSite(runner, host, int(port), reuse_address=True) if server_ssl is None
            else tls.LoggedTLSSite(runner, host, int(port), ssl_context=server_ssl)
        )  # fmt: skip
        try:
            await site.start()
        except OSError as exc:
            raise SettingsError(f"cannot listen on admin address {settings.admin_addr}: {exc.strerror}") from exc
        discovery.start()
        # What boot built (modules, the restored config) lives as long as the node: keep it out of
        # every later full collection.
        gc.set_threshold(*GC_THRESHOLD)
        gc.freeze()
        app[SETTINGS_KEY]["gc_frozen"] = gc.get_freeze_count()
        log.info("node %s ready: admin %s raft %s", settings.node_id, settings.admin_url, settings.raft_addr)
        await stop.wait()
        log.info("node %s stopping", settings.node_id)
    finally:
        with contextlib.suppress(Exception):
            await discovery.close()
        with contextlib.suppress(Exception):
            await hub.close()
        await runner.cleanup()
        store.close()
