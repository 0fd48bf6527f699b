"""Upstream pools: target selection and health.

A ``Pool`` is the only mutable part of an upstream in the data plane: per-target connection
counters, smooth weighted round-robin weights, passive ejections and active-check results. Pools
are created by ``build_runtime`` and handed over to the next runtime when the upstream spec did not
change (``DataPlane.swap``), so a config change elsewhere neither forgets an ejected target nor
resets least-connections counts of requests still in flight.

Algorithms:

- ``round_robin``: smooth weighted round-robin as in nginx: every pick adds each eligible target's
  weight to its current weight, takes the largest and subtracts the total. Over one cycle of
  ``sum(weights)`` picks each target is chosen exactly ``weight`` times, interleaved.
- ``least_conn``: fewest in-flight requests per unit of weight; ties rotate.
- ``consistent_hash``: a ring of virtual nodes (sha1 positions), ``VNODES`` per target on average
  in proportion to weight; a key maps to the first eligible target clockwise, so adding or removing one target moves only
  about 1/n of the keys.

Health: a target is eligible when its weight is > 0, it is not passively ejected and the active
checker (if any) considers it healthy. Passive: ``max_failures`` consecutive failures eject it for
``cooldown`` seconds; after that it is half-open: one more failure ejects it again, one success
closes it. Active: one asyncio task per pool probes every target's ``path`` each ``interval``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

VNODES = 160


@dataclass(eq=False)
class Target:
    """One upstream target plus its mutable counters (owned by one Pool; hashed by identity)."""

    host: str
    port: int
    weight: int
    inflight: int = 0
    current_weight: int = 0
    failures: int = 0
    ejected_until: float = 0.0
    half_open: bool = False
    active_healthy: bool = True
    active_ok: int = 0
    active_fail: int = 0
    address: str = field(default="", init=False)
    host_header: bytes = field(default=b"", init=False)  # the upstream request's Host line, pre-encoded
    connections: Any = field(default=None, init=False, compare=False)  # its proxy.upstream.TargetPool, once known

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.address = f"{host}:{self.port}"
        self.host_header = b"Host: %b\r\n" % self.address.encode("idna" if not self.host.isascii() else "ascii")


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def _num(value: Any, where: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}: must be a positive number")
    if integer and not isinstance(value, int):
        raise ValueError(f"{where}: must be an integer")
    return value


@dataclass(frozen=True)
class UpstreamSettings:
    """The parts of an upstream spec the data plane uses, checked once at build time."""

    lb: str
    hash_on: tuple[str, str | None] | None
    max_failures: int
    cooldown: float
    active: Mapping[str, Any] | None
    connect_timeout: float
    read_timeout: float
    retries: int

    @classmethod
    def from_spec(cls, upstream_id: str, spec: Mapping[str, Any]) -> UpstreamSettings:
        where = f"upstreams[{upstream_id}]"
        lb = spec.get("lb", "round_robin")
        if lb not in ("round_robin", "least_conn", "consistent_hash"):
            raise ValueError(f"{where}.lb: unknown algorithm {lb!r}")
        hash_on = None
        if lb == "consistent_hash":
            h = spec.get("hash_on")
            if not isinstance(h, Mapping) or h.get("type") not in ("header", "cookie", "ip"):
                raise ValueError(f"{where}.hash_on: required for consistent_hash (header|cookie|ip)")
            if h["type"] != "ip" and not isinstance(h.get("name"), str):
                raise ValueError(f"{where}.hash_on.name: required for {h['type']}")
            hash_on = (h["type"], h.get("name"))
        health = spec.get("health") or {}
        passive = health.get("passive") or {}
        active = health.get("active")
        if active is not None:
            active = {
                "path": str(active.get("path", "/health")),
                "interval": _num(active.get("interval", 5.0), f"{where}.health.active.interval"),
                "timeout": _num(active.get("timeout", 1.0), f"{where}.health.active.timeout"),
                "healthy_threshold": int(_num(active.get("healthy_threshold", 2), where, integer=True)),
                "unhealthy_threshold": int(_num(active.get("unhealthy_threshold", 2), where, integer=True)),
            }
        timeouts = spec.get("timeouts") or {}
        retries = spec.get("retries", 1)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"{where}.retries: must be an integer >= 0")
        return cls(
            lb=lb,
            hash_on=hash_on,
            max_failures=int(_num(passive.get("max_failures", 3), f"{where}.health.passive.max_failures", integer=True)),
            cooldown=_num(passive.get("cooldown", 10.0), f"{where}.health.passive.cooldown"),
            active=active,
            connect_timeout=_num(timeouts.get("connect", 2.0), f"{where}.timeouts.connect"),
            read_timeout=_num(timeouts.get("read", 30.0), f"{where}.timeouts.read"),
            retries=retries,
        )


class Pool:
    """Targets of one upstream with their selection and health state."""

    def __init__(
        self,
        upstream_id: str,
        spec: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = upstream_id
        self.spec = spec
        self.settings = UpstreamSettings.from_spec(upstream_id, spec)
        self.clock = clock
        targets = spec.get("targets")
        if not isinstance(targets, list):  # may be empty: registered targets only (503 until one registers)
            raise ValueError(f"upstreams[{upstream_id}].targets: must be a list")
        self.targets: list[Target] = []
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping) or not isinstance(t.get("host"), str):
                raise ValueError(f"upstreams[{upstream_id}].targets[{i}]: needs host and port")
            port, weight = t.get("port"), t.get("weight", 1)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"upstreams[{upstream_id}].targets[{i}].port: must be 1..65535")
            if not isinstance(weight, int) or weight < 0:
                raise ValueError(f"upstreams[{upstream_id}].targets[{i}].weight: must be >= 0")
            self.targets.append(Target(t["host"], port, weight))
        self._rotation = 0
        self._ring: list[int] = []
        self._ring_targets: list[Target] = []
        if self.settings.lb == "consistent_hash":
            self._build_ring()
        self._task: asyncio.Task[None] | None = None

    # -- selection ---------------------------------------------------------------------------------

    def eligible(self, target: Target) -> bool:
        """Weight > 0, not passively ejected, and healthy for the active checker."""
        if target.weight <= 0 or not target.active_healthy:
            return False
        return target.ejected_until <= self.clock()

    def pick(self, request_key: str | None = None, exclude: frozenset[Target] | set[Target] = frozenset()) -> Target | None:
        """Choose a target, skipping ``exclude`` (targets already tried by this request).

        Returns None when no target is eligible; the forwarder answers 503 then.
        """
        targets = self.targets
        if len(targets) == 1:  # the common case: no weights, rings or rotation to consult
            only = targets[0]
            return only if only not in exclude and self.eligible(only) else None
        candidates = [t for t in targets if t not in exclude and self.eligible(t)]
        if not candidates:
            return None
        lb = self.settings.lb
        if lb == "consistent_hash" and request_key is not None:
            return self._pick_hash(request_key, exclude)
        if lb == "least_conn":
            return self._pick_least_conn(candidates)
        return self._pick_wrr(candidates)

    def _pick_wrr(self, candidates: list[Target]) -> Target:
        total = 0
        best: Target | None = None
        for t in candidates:
            t.current_weight += t.weight
            total += t.weight
            if best is None or t.current_weight > best.current_weight:
                best = t
        assert best is not None
        best.current_weight -= total
        return best

    def _pick_least_conn(self, candidates: list[Target]) -> Target:
        n = len(candidates)
        start = self._rotation % n
        self._rotation += 1
        best = candidates[start]
        for i in range(1, n):
            t = candidates[(start + i) % n]
            if t.inflight * best.weight < best.inflight * t.weight:
                best = t
        return best

    def _build_ring(self) -> None:
        # About VNODES points per target on average, shared in proportion to weight, so that
        # 256 targets of weight 1000 still make a ring of ~40k points, not 40M.
        total = sum(t.weight for t in self.targets)
        points: list[tuple[int, int]] = []
        for idx, t in enumerate(self.targets):
            count = max(1, round(VNODES * len(self.targets) * t.weight / total)) if t.weight > 0 else 0
            for v in range(count):
                points.append((_hash(f"{t.address}#{v}"), idx))
        points.sort()
        self._ring = [p for p, _ in points]
        self._ring_targets = [self.targets[i] for _, i in points]

    def _pick_hash(self, key: str, exclude: frozenset[Target] | set[Target]) -> Target | None:
        if not self._ring:
            return None
        n = len(self._ring)
        start = bisect.bisect_left(self._ring, _hash(key)) % n
        seen: set[int] = set()
        for i in range(n):
            t = self._ring_targets[(start + i) % n]
            if id(t) in seen:
                continue
            seen.add(id(t))
            if t not in exclude and self.eligible(t):
                return t
            if len(seen) == len(self.targets):
                break
        return None

    def hash_key(self, headers: Mapping[str, str], cookies: Mapping[str, str], client_ip: str | None) -> str | None:
        """The consistent-hash key of a request per ``hash_on``; falls back to the client IP."""
        if self.settings.hash_on is None:
            return None
        kind, name = self.settings.hash_on
        value: str | None = None
        if kind == "header" and name:
            value = headers.get(name)
        elif kind == "cookie" and name:
            value = cookies.get(name)
        return value if value else client_ip

    # -- accounting ----------------------------------------------------------------------------------

    def acquire(self, target: Target) -> None:
        target.inflight += 1

    def release(self, target: Target) -> None:
        if target.inflight > 0:
            target.inflight -= 1

    def report_success(self, target: Target) -> None:
        target.failures = 0
        target.half_open = False

    def report_failure(self, target: Target) -> None:
        """Count a transport failure; eject after max_failures (or one failure when half-open)."""
        now = self.clock()
        if target.ejected_until > now:
            return  # late failures of requests started before the ejection
        target.failures += 1
        if target.half_open or target.failures >= self.settings.max_failures:
            target.ejected_until = now + self.settings.cooldown
            target.failures = 0
            target.half_open = True
            log.warning("upstream %s: target %s ejected for %.1fs", self.id, target.address, self.settings.cooldown)

    def health(self) -> dict[str, bool]:
        """address -> eligible-by-health (weight ignored), for metrics and status."""
        now = self.clock()
        return {t.address: t.active_healthy and t.ejected_until <= now for t in self.targets}

    # -- active health checks ----------------------------------------------------------------------

    async def probe_all(self, session: aiohttp.ClientSession) -> None:
        """One round of active checks over all targets (concurrently)."""
        cfg = self.settings.active
        if cfg is None:
            return
        await asyncio.gather(*(self._probe(session, t, cfg) for t in self.targets))

    async def _probe(self, session: aiohttp.ClientSession, target: Target, cfg: Mapping[str, Any]) -> None:
        url = f"http://{target.address}{cfg['path']}"
        ok = False
        try:
            timeout = aiohttp.ClientTimeout(total=cfg["timeout"])
            async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
                await resp.read()
                ok = 200 <= resp.status < 400
        except (TimeoutError, aiohttp.ClientError, OSError):
            ok = False
        if ok:
            target.active_fail = 0
            target.active_ok += 1
            if not target.active_healthy and target.active_ok >= cfg["healthy_threshold"]:
                target.active_healthy = True
                log.info("upstream %s: target %s healthy again", self.id, target.address)
        else:
            target.active_ok = 0
            target.active_fail += 1
            if target.active_healthy and target.active_fail >= cfg["unhealthy_threshold"]:
                target.active_healthy = False
                log.warning("upstream %s: target %s failed active checks", self.id, target.address)

    def start(self, session: aiohttp.ClientSession) -> None:
        """Start the active checker (no-op without ``health.active`` or when already running)."""
        if self.settings.active is None or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(session), name=f"health:{self.id}")

    async def _run(self, session: aiohttp.ClientSession) -> None:
        assert self.settings.active is not None
        interval = self.settings.active["interval"]
        while True:
            try:
                await self.probe_all(session)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one round must not end health checking
                log.exception("upstream %s: active health round failed", self.id)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def checking(self) -> bool:
        return self._task is not None and not self._task.done()
