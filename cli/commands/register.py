"""`gwadm register`: a foreground agent that keeps one target registered; `gwadm upstream targets`.

The agent registers ``--target`` in ``--upstream`` with a TTL, then heartbeats every ``--interval``
(default a third of the TTL) through the admin client, which fails over between the given control
plane endpoints. While ``--health-url`` fails it stops heartbeating, so the registration expires
and proxies stop sending traffic; once the check passes again it renews (re-registering if the
registration expired meanwhile). SIGTERM or SIGINT deregisters it and exits 0.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import click
from rich.table import Table

from cli import console
from cli.client import AdminClient, ApiError, ClusterUnreachable
from cli.commands.cluster import json_option
from cli.connection import conn_options, current_options, make_client, resolve


def _check_health(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 2xx/3xx, else why not."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        conn.close()
    return None if 200 <= status < 400 else f"HTTP {status}"


def _parse_meta(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} must be KEY=VALUE", param_hint="--meta")
        out[key] = value
    return out


class Agent:
    """The register/heartbeat/deregister loop (one thread; ``stop`` ends it)."""

    def __init__(self, client: AdminClient, upstream: str, target: str, body: dict[str, Any],
                 interval: float, health_url: str | None) -> None:
        self.client = client
        self.path = f"/v1/upstreams/{quote(upstream, safe='')}/targets/{quote(target, safe=':[]')}"
        self.upstream, self.target, self.body = upstream, target, body
        self.interval = interval
        self.health_url = health_url
        self.stop = threading.Event()
        self.registered = False
        self.healthy: bool | None = None

    def say(self, message: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {message}", err=True)

    def register(self) -> None:
        result = self.client.request("PUT", self.path, self.body)
        self.registered = True
        self.say(f"registered {self.target} in upstream {self.upstream} (ttl {self.body['ttl']:g}s, "
                 f"heartbeat every {self.interval:g}s) at revision {result.get('revision')} "
                 f"via {self.client.last_endpoint}")

    def beat(self) -> None:
        try:
            self.client.request("POST", self.path + "/heartbeat")
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.say("registration expired or removed: registering again")
            self.register()

    def once(self) -> None:
        """One round: health check, then register or heartbeat."""
        if self.health_url is not None:
            problem = _check_health(self.health_url, min(2.0, self.interval))
            if problem is not None:
                if self.healthy is not False:
                    self.say(f"health check {self.health_url} failed ({problem}): not heartbeating")
                self.healthy = False
                return
            if self.healthy is False:
                self.say("health check passes again: heartbeating")
            self.healthy = True
        if self.registered:
            self.beat()
        else:
            self.register()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except ApiError as exc:
                if exc.status in (401, 403, 422) or (exc.status == 404 and not self.registered):
                    # will not get better by retrying (404 here: the upstream does not exist)
                    raise click.ClickException(exc.describe()) from exc
                self.say(f"control plane answered: {exc.describe()}")
            except ClusterUnreachable as exc:
                self.say(str(exc))
            self.stop.wait(self.interval)
        self.deregister()

    def deregister(self) -> None:
        if not self.registered:
            return
        try:
            self.client.request("DELETE", self.path)
            self.say(f"deregistered {self.target} from upstream {self.upstream}")
        except ApiError as exc:
            if exc.status != 404:
                self.say(f"deregistering failed: {exc.describe()}")
        except ClusterUnreachable as exc:
            self.say(f"deregistering failed: {exc}; the registration expires after its TTL")


@click.command("register")
@conn_options
@click.option("--upstream", required=True, metavar="ID", help="Upstream to register the target in.")
@click.option("--target", required=True, metavar="HOST:PORT", help="This instance's address ([v6]:port for IPv6).")
@click.option("--ttl", type=click.FloatRange(1, 86400), default=10.0, show_default=True,
              help="Seconds without a heartbeat before the target expires.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=None,
              help="Seconds between heartbeats (default ttl/3).")
@click.option("--weight", type=click.IntRange(0, 1000), default=1, show_default=True)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable).")
@click.option("--health-url", default=None, metavar="URL",
              help="Heartbeat only while GET URL answers 2xx/3xx.")
def register_cmd(upstream: str, target: str, ttl: float, interval: float | None, weight: int,
                 meta: tuple[str, ...], health_url: str | None) -> None:
    """Keep TARGET registered in UPSTREAM until SIGTERM/SIGINT (then deregister it).

    The token may be a narrow one: `gwadm token create --role registrar`.
    """
    if health_url is not None and urlsplit(health_url).scheme not in ("http", "https"):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--health-url")
    every = interval if interval is not None else ttl / 3
    if every >= ttl:
        raise click.BadParameter(f"must be shorter than --ttl ({ttl:g}s)", param_hint="--interval")
    endpoints, token = resolve(current_options())
    client = AdminClient(endpoints, token, timeout=min(2.0, every), retry_for=min(every, 3.0), retry_pause=0.1)
    agent = Agent(client, upstream, target, {"ttl": ttl, "weight": weight, "metadata": _parse_meta(meta)},
                  every, health_url)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop.set())
    agent.run()


def _age(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}s"


def targets_table(listing: dict[str, Any]) -> Table:
    table = Table(title=f"upstream {listing.get('upstream')} targets (revision {listing.get('revision')})",
                  title_justify="left")
    for name in ("target", "weight", "kind", "age", "expires in", "health"):
        table.add_column(name)
    for t in listing.get("static") or []:
        table.add_row(f"{t['host']}:{t['port']}", str(t.get("weight", 1)), "static", "-", "-", "-")
    for t in listing.get("registered") or []:
        host = f"[{t['host']}]" if ":" in t["host"] else t["host"]
        expires = t.get("expires_in")
        if expires is None:
            health = "unknown (no leader)"
        elif t.get("last_heartbeat_age") is not None and t["last_heartbeat_age"] > t["ttl"] / 2:
            health = "late"
        else:
            health = "alive"
        table.add_row(f"{host}:{t['port']}", str(t.get("weight")), "registered", _age(t.get("age")),
                      _age(expires), health)
    return table


@click.command("targets")
@conn_options
@click.argument("id")
@json_option
def targets_cmd(id: str, as_json: bool) -> None:
    """Static and registered targets of upstream ID, with age, expiry and health."""
    listing = make_client().request("GET", f"/v1/upstreams/{quote(id, safe='')}/targets")
    if as_json:
        console.print_json(listing)
    else:
        console.show(targets_table(listing))


COMMANDS: list[click.Command] = [register_cmd]
