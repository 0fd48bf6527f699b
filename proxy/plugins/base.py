"""Plugin framework: request context, plugin base class, per-route chains.

A plugin is a small object built once per config revision from its normalized config. It has up
to three phases, each optional:

- ``access(ctx)`` before forwarding; returning a response short-circuits the request (401, 429...),
- ``response(ctx, resp)`` on every response before its headers are sent (also on short-circuit and
  error responses, so request ids and CORS headers are on 401s and 502s too),
- ``log(ctx)`` after the response is finished.

Chains run in a fixed order by ``priority`` (higher first): request-id, ip-restriction, cors, the
auth plugins, rate-limit, request-transformer, access-log. Authentication is one group: the first
auth plugin that accepts the request wins and the others are skipped; if all refuse, the first
refusal is returned. Once a consumer is known its own plugins join the rest of the chain, replacing
route/global plugins of the same name that have not run yet (pre-auth plugins of a consumer, such
as ip-restriction, run right after authentication).

Plugins keep mutable state (rate-limit buckets) in themselves; ``inherit(old)`` lets a plugin
built for a new revision take over the state of its predecessor with the same scope and config.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from multidict import CIMultiDict, MultiDict

if TYPE_CHECKING:
    from proxy.jwks import JwksCache
    from proxy.router import Match

log = logging.getLogger(__name__)

AUTH_PRIORITY = 1000


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The proxy's own error body: ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


@dataclass
class Services:
    """Process-wide helpers that outlive runtimes; injectable for deterministic tests."""

    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    random: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    jwks: JwksCache | None = None
    log_sinks: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Consumer:
    """A consumer as the data plane sees it: identity plus its compiled plugins."""

    id: str
    username: str | None
    plugins: tuple[Plugin, ...] = ()


@dataclass(frozen=True)
class JwtCredential:
    """One jwt-auth credential with its verification key already parsed."""

    consumer: Consumer
    key: str
    algorithm: str
    verify_key: Any


@dataclass(frozen=True)
class ConsumerIndex:
    """Credentials indexed at build time so that authentication is one dict lookup."""

    by_id: Mapping[str, Consumer] = field(default_factory=dict)
    key_auth: Mapping[str, Consumer] = field(default_factory=dict)
    jwt: Mapping[str, tuple[JwtCredential, ...]] = field(default_factory=dict)


@dataclass
class RequestContext:
    """Everything the plugins and the forwarder know about one request; mutable by design."""

    request: web.Request
    services: Services
    consumers: ConsumerIndex
    method: str
    host: str
    path: str
    client_ip: str
    upstream_path: str
    upstream_query: MultiDict[str]
    upstream_headers: CIMultiDict[str]
    match: Match | None = None
    start: float = 0.0
    started_at: float = 0.0
    consumer: Consumer | None = None
    request_id: str | None = None
    status: int = 0
    bytes_sent: int = 0
    upstream: str | None = None
    target: str | None = None
    plugins: Sequence[Plugin] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def route_id(self) -> str | None:
        return self.match.route.id if self.match is not None else None


class Plugin:
    """Base class; subclasses set ``name``/``priority`` and override the phases they need."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    is_auth: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        self.config = self.parse(config)
        self.scope = scope

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check and complete a config; raise ValueError with a readable message."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{cls.name}: config must be an object")
        return dict(config)

    async def access(self, ctx: RequestContext) -> web.StreamResponse | None:
        return None

    def response(self, ctx: RequestContext, resp: web.StreamResponse) -> None:
        return None

    def log(self, ctx: RequestContext) -> None:
        return None

    def inherit(self, old: Plugin) -> None:
        """Take over state from the same plugin of the previous runtime (same scope and config)."""
        return None

    def state_key(self) -> tuple[str, str, str]:
        return (self.scope, self.name, json.dumps(self.config, sort_keys=True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} scope={self.scope}>"


class PluginChain:
    """The ordered plugins of one route (or the global chain used when no route matches)."""

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        ordered = sorted(plugins, key=lambda p: (-p.priority, p.name))
        self.plugins: tuple[Plugin, ...] = tuple(ordered)
        self.pre = tuple(p for p in ordered if not p.is_auth and p.priority > AUTH_PRIORITY)
        self.auth = tuple(p for p in ordered if p.is_auth)
        self.post = tuple(p for p in ordered if not p.is_auth and p.priority <= AUTH_PRIORITY)
        self._merged: dict[str, tuple[Plugin, ...]] = {}

    def __len__(self) -> int:
        return len(self.plugins)

    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    def _post_for(self, consumer: Consumer) -> tuple[Plugin, ...]:
        cached = self._merged.get(consumer.id)
        if cached is None:
            own = {p.name: p for p in consumer.plugins if not p.is_auth}
            merged = [p for p in self.post if p.name not in own] + list(own.values())
            cached = tuple(sorted(merged, key=lambda p: (-p.priority, p.name)))
            self._merged[consumer.id] = cached
        return cached

    async def access(self, ctx: RequestContext) -> web.StreamResponse | None:
        ctx.plugins = self.plugins
        for p in self.pre:
            resp = await p.access(ctx)
            if resp is not None:
                return resp
        if self.auth:
            refusal: web.StreamResponse | None = None
            for p in self.auth:
                resp = await p.access(ctx)
                if resp is None:
                    break
                refusal = refusal or resp
            else:
                return refusal
        post = self.post
        if ctx.consumer is not None and ctx.consumer.plugins:
            post = self._post_for(ctx.consumer)
            ctx.plugins = self.pre + self.auth + post
        for p in post:
            resp = await p.access(ctx)
            if resp is not None:
                return resp
        return None

    def response(self, ctx: RequestContext, resp: web.StreamResponse) -> None:
        for p in ctx.plugins or self.plugins:
            try:
                p.response(ctx, resp)
            except Exception:  # a header plugin must not turn a good answer into a crash
                log.exception("plugin %s failed in response phase", p.name)

    def log(self, ctx: RequestContext) -> None:
        for p in ctx.plugins or self.plugins:
            try:
                p.log(ctx)
            except Exception:
                log.exception("plugin %s failed in log phase", p.name)


# -- small config helpers shared by the plugin modules ------------------------------------------------


def opt_str(config: Mapping[str, Any], key: str, default: str | None, plugin: str) -> str | None:
    value = config.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{plugin}.{key}: must be a string")
    return value


def req_str(config: Mapping[str, Any], key: str, default: str, plugin: str) -> str:
    value = opt_str(config, key, default, plugin)
    if not value:
        raise ValueError(f"{plugin}.{key}: must be a non-empty string")
    return value


def str_list(config: Mapping[str, Any], key: str, default: Sequence[str], plugin: str) -> list[str]:
    value = config.get(key, list(default))
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{plugin}.{key}: must be a list of strings")
    return list(value)


def number(config: Mapping[str, Any], key: str, default: float | None, plugin: str, *, minimum: float = 0) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{plugin}.{key}: must be a number >= {minimum}")
    return value
