"""DNS targets: an upstream target whose host is a name is resolved by the proxy, off the request path.

``DnsTargets`` keeps the A and AAAA addresses of every named target of the served runtime and feeds
them into the pools (``expand_pool``): each address becomes a target with the named target's port
and weight; a target object is kept while its address stays, so its health and counters survive a
re-resolution. Names are re-resolved every ``interval`` seconds, sooner when the records' TTL is
shorter (never more often than ``min_interval``). When a resolution fails, the last good addresses
stay in use and the failure shows in ``/status`` (``dns``) and in the metrics
(``gwadm_proxy_dns_failures_total``, ``gwadm_proxy_dns_addresses``). A name that never resolved has
no target: its pool answers 503 for it until it does (a connect never goes to the system resolver).

The resolver speaks DNS over UDP to the nameservers of ``$GWADM_DNS_SERVERS`` (``host[:port]``,
comma-separated) or else ``/etc/resolv.conf``; packets are built and parsed with dnslib.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord  # type: ignore[import-untyped]
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.balancer import Pool, Target

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
MIN_INTERVAL = 1.0
RETRY_INTERVAL = 2.0
# RFC 6761 6.3: "localhost" is loopback without asking DNS (and without reading /etc/hosts).
LOCALHOST: tuple[list[str], float | None] = (["127.0.0.1", "::1"], None)


class DnsError(Exception):
    """A name could not be resolved (timeout, NXDOMAIN, SERVFAIL, no address records)."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def nameservers_from_env(env: Mapping[str, str] | None = None, resolv_conf: str = "/etc/resolv.conf"
                         ) -> list[tuple[str, int]]:
    """``$GWADM_DNS_SERVERS`` (``host[:port],...``; ``[v6]:port``) or the nameservers of resolv.conf."""
    env = os.environ if env is None else env
    raw = env.get("GWADM_DNS_SERVERS", "").strip()
    if raw:
        return [parse_server(item) for item in raw.split(",") if item.strip()]
    servers: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        with open(resolv_conf) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append((parts[1], 53))
    return servers


def parse_server(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    if not is_ip(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DNS server {text!r} must be IP[:PORT] ([v6]:PORT)")
    return host, int(port)


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, want_id: int) -> None:
        self.want_id = want_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 2 and int.from_bytes(data[:2], "big") == self.want_id and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class Resolver:
    """A/AAAA over UDP, one server after the other until one answers."""

    def __init__(self, servers: list[tuple[str, int]], *, timeout: float = 1.0,
                 source_address: str | None = None) -> None:
        self.servers = servers
        self.timeout = timeout
        self.source_address = source_address

    async def _query(self, server: tuple[str, int], name: str, qtype: str) -> DNSRecord:
        question = DNSRecord.question(name, qtype)
        loop = asyncio.get_running_loop()
        local = (self.source_address, 0) if self.source_address and ":" not in server[0] else None
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Datagram(question.header.id), remote_addr=server, local_addr=local)
        try:
            transport.sendto(question.pack())
            data = await asyncio.wait_for(proto.answer, self.timeout)
        finally:
            transport.close()
        return DNSRecord.parse(data)

    async def _lookup(self, name: str, qtype: str) -> tuple[list[str], float | None]:
        problems = []
        for server in self.servers:
            try:
                reply = await self._query(server, name, qtype)
            except (TimeoutError, OSError) as exc:
                problems.append(f"{server[0]}:{server[1]}: {type(exc).__name__} {exc}".strip())
                continue
            except Exception as exc:  # an unparsable answer
                problems.append(f"{server[0]}:{server[1]}: bad answer ({exc})")
                continue
            rcode = reply.header.rcode
            if rcode == RCODE.NXDOMAIN:
                raise DnsError(f"{name}: no such name (NXDOMAIN from {server[0]}:{server[1]})")
            if rcode != RCODE.NOERROR:
                problems.append(f"{server[0]}:{server[1]}: {RCODE.get(rcode)}")
                continue
            want = getattr(QTYPE, qtype)
            rrs = [rr for rr in reply.rr if rr.rtype == want]
            return [str(rr.rdata) for rr in rrs], (min(rr.ttl for rr in rrs) if rrs else None)
        raise DnsError(f"{name} {qtype}: " + ("; ".join(problems) if problems else "no DNS server configured"))

    async def resolve(self, name: str) -> tuple[list[str], float | None]:
        """Sorted unique A and AAAA addresses and the smallest record TTL; DnsError if none."""
        results = await asyncio.gather(self._lookup(name, "A"), self._lookup(name, "AAAA"), return_exceptions=True)
        addresses: set[str] = set()
        ttls: list[float] = []
        errors: list[str] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, DnsError):
                    raise result
                errors.append(str(result))
                continue
            found, ttl = result
            addresses.update(found)
            if ttl is not None:
                ttls.append(float(ttl))
        if not addresses:
            raise DnsError("; ".join(errors) if errors else f"{name}: no A or AAAA records")
        return sorted(addresses, key=lambda a: (":" in a, a)), (min(ttls) if ttls else None)


def expand_pool(pool: Pool, resolved: Mapping[str, list[str]]) -> bool:
    """Set ``pool.targets`` from its spec with every named target replaced by its addresses
    (keeping the Target objects of unchanged addresses); True if the target list changed."""
    existing = {(t.host, t.port): t for t in pool.targets}
    new: list[Target] = []
    seen: set[tuple[str, int]] = set()
    for spec in pool.spec.get("targets") or ():
        host, port, weight = spec["host"], spec["port"], spec.get("weight", 1)
        for address in ([host] if is_ip(host) else resolved.get(host, [])):
            key = (address, port)
            if key in seen:
                continue
            seen.add(key)
            target = existing.get(key)
            if target is None or target.weight != weight:
                target = Target(address, port, weight)
                if address != host and hasattr(target, "host_header"):  # the upstream sees the name
                    target.host_header = b"Host: %b:%d\r\n" % (host.encode("idna"), port)
            new.append(target)
    if [id(t) for t in new] == [id(t) for t in pool.targets]:
        return False
    pool.targets = new
    if pool.settings.lb == "consistent_hash":
        pool._build_ring()
    return True


def named_hosts(pools: Iterable[Pool]) -> set[str]:
    return {t["host"] for p in pools for t in (p.spec.get("targets") or ()) if not is_ip(t["host"])}


@dataclass
class NameState:
    addresses: list[str] = field(default_factory=list)
    ttl: float | None = None
    next_at: float = 0.0
    resolved_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    resolutions: int = 0


class DnsTargets:
    """Keeps the named targets of the current runtime resolved (one per DataPlane)."""

    def __init__(self, resolver: Resolver, *, interval: float = DEFAULT_INTERVAL,
                 min_interval: float = MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.interval = interval
        self.min_interval = min_interval
        self.clock = clock
        self.names: dict[str, NameState] = {}
        self._pools: list[Pool] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, source_address: str | None = None) -> DnsTargets:
        interval = float(os.environ.get("GWADM_DNS_INTERVAL", DEFAULT_INTERVAL))
        return cls(Resolver(nameservers_from_env(), source_address=source_address), interval=interval,
                   min_interval=min(MIN_INTERVAL, interval))

    def attach(self, pools: Iterable[Pool]) -> None:
        """A new runtime is being installed: expand its pools now, resolve new names soon."""
        self._pools = list(pools)
        wanted = named_hosts(self._pools)
        for name in list(self.names):
            if name not in wanted:
                del self.names[name]
        fresh = [n for n in wanted if n not in self.names]
        for name in fresh:
            self.names[name] = NameState()
        self._apply()
        if fresh:
            self._wake.set()

    def _apply(self) -> None:
        resolved = {n: s.addresses for n, s in self.names.items()}
        for pool in self._pools:
            if any(not is_ip(t.get("host", "")) for t in pool.spec.get("targets") or ()):
                expand_pool(pool, resolved)

    async def refresh(self, name: str) -> None:
        state = self.names.get(name)
        if state is None:
            return
        now = self.clock()
        try:
            addresses, ttl = LOCALHOST if name == "localhost" else await self.resolver.resolve(name)
        except Exception as exc:  # DnsError, or a bug: either way keep the last good addresses
            state.failures += 1
            state.last_error = str(exc)
            state.next_at = now + min(self.interval, RETRY_INTERVAL)
            log.warning("dns: %s (keeping %d last good address(es))", exc, len(state.addresses))
            return
        if name not in self.names:  # dropped by a newer runtime meanwhile
            return
        changed = addresses != state.addresses
        state.addresses, state.ttl, state.resolved_at = addresses, ttl, self.clock()
        state.last_error = None
        state.resolutions += 1
        wait = self.interval if ttl is None else min(self.interval, max(ttl, self.min_interval))
        state.next_at = now + wait
        if changed:
            log.info("dns: %s -> %s", name, ", ".join(addresses))
            self._apply()

    async def run(self) -> None:
        while True:
            now = self.clock()
            due = [n for n, s in self.names.items() if s.next_at <= now]
            if due:
                await asyncio.gather(*(self.refresh(n) for n in due), return_exceptions=True)
                continue
            wait = min((s.next_at for s in self.names.values()), default=now + self.interval) - now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="dns-targets")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            name: {
                "addresses": list(s.addresses),
                "ttl": s.ttl,
                "seconds_since_resolved": None if s.resolved_at is None else round(now - s.resolved_at, 3),
                "next_in": round(max(0.0, s.next_at - now), 3),
                "last_error": s.last_error,
                "failures": s.failures,
            }
            for name, s in sorted(self.names.items())
        }

    def collector(self) -> Collector:
        return _DnsCollector(self)


class _DnsCollector(Collector):
    def __init__(self, dns: DnsTargets) -> None:
        self.dns = dns

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily("gwadm_proxy_dns_failures", "Failed resolutions of a named target",
                                       labels=["name"])
        addresses = GaugeMetricFamily("gwadm_proxy_dns_addresses", "Addresses in use for a named target",
                                      labels=["name"])
        failing = GaugeMetricFamily("gwadm_proxy_dns_failing", "1 while the last resolution of a name failed",
                                    labels=["name"])
        for name, s in sorted(self.dns.names.items()):
            failures.add_metric([name], float(s.failures))
            addresses.add_metric([name], float(len(s.addresses)))
            failing.add_metric([name], 1.0 if s.last_error else 0.0)
        yield failures
        yield addresses
        yield failing
