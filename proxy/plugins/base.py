"""Plugin framework: request context, plugin base class, per-route chains.

A plugin is a small object built once per config revision from its normalized config. It has up
to three phases, each optional:

- ``access(ctx)`` before forwarding; returning a response short-circuits the request (401, 429...).
  A plugin whose access phase never waits implements the synchronous ``check(ctx)`` instead (the
  base ``access`` calls it): a chain of such plugins runs inline on the request path, with no
  task or coroutine per request (``PluginChain.access_now``). Only a plugin that really awaits
  (jwt-auth with a JWKS URL) overrides ``access`` and sets ``sync = False``,
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

from multidict import CIMultiDict, MultiDict

from gateway.errors import ValidationError
from gateway.plugin_schemas import PLUGIN_SCHEMAS, validate_plugin_config
from proxy.http_common import Response, encode_header, json_error
from proxy.http_server import Exchange

if TYPE_CHECKING:
    from proxy.jwks import JwksCache
    from proxy.router import Match

__all__ = [
    "AUTH_PRIORITY", "Consumer", "ConsumerIndex", "JwtCredential", "Plugin", "PluginChain", "RequestContext",
    "Response", "Services", "json_error",
]  # fmt: skip

log = logging.getLogger(__name__)

AUTH_PRIORITY = 1000


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


class RequestContext:
    """Everything the plugins and the forwarder know about one request; mutable by design.

    ``upstream_headers`` and ``upstream_query`` (what the upstream will receive) are built on first
    use: a request no plugin edits is forwarded from the parsed bytes directly. Plugins that only
    set or remove a header use ``set_upstream_header``/``remove_upstream_header``, which record the
    edit without building the multidict.
    """

    __slots__ = (
        "request", "services", "consumers", "method", "host", "path", "client_ip", "upstream_path",
        "_upstream_query", "_upstream_headers", "match", "start", "_started_at", "consumer", "request_id",
        "status", "bytes_sent", "upstream", "target", "plugins", "_data", "_drop", "_add",
    )  # fmt: skip

    def __init__(
        self,
        request: Any,
        services: Services,
        consumers: ConsumerIndex,
        method: str,
        host: str,
        path: str,
        client_ip: str,
        upstream_path: str,
        upstream_query: MultiDict[str] | None = None,
        upstream_headers: CIMultiDict[str] | None = None,
        match: Match | None = None,
        start: float = 0.0,
        started_at: float = 0.0,
    ) -> None:
        self.request = request
        self.services = services
        self.consumers = consumers
        self.method = method
        self.host = host
        self.path = path
        self.client_ip = client_ip
        self.upstream_path = upstream_path
        self._upstream_query = upstream_query
        self._upstream_headers = upstream_headers
        self.match = match
        self.start = start
        self._started_at = started_at
        self.consumer: Consumer | None = None
        self.request_id: str | None = None
        self.status = 0
        self.bytes_sent = 0
        self.upstream: str | None = None
        self.target: str | None = None
        self.plugins: Sequence[Plugin] = ()
        self._data: dict[str, Any] | None = None
        self._drop: set[bytes] | None = None
        self._add: list[tuple[str, str, bytes]] | None = None  # name, value, encoded header line

    @property
    def started_at(self) -> float:
        """Wall-clock start of the request (derived from ``start`` when not given: one clock read
        less per request, and only the access log asks)."""
        if not self._started_at:
            services = self.services
            self._started_at = services.wall() - (services.clock() - self.start)
        return self._started_at

    @property
    def route_id(self) -> str | None:
        return self.match.route.id if self.match is not None else None

    @property
    def data(self) -> dict[str, Any]:
        d = self._data
        if d is None:
            d = self._data = {}
        return d

    # -- what the upstream receives ----------------------------------------------------------------

    @property
    def upstream_headers(self) -> CIMultiDict[str]:
        h = self._upstream_headers
        if h is None:
            from proxy.forward import upstream_headers

            h = self._upstream_headers = upstream_headers(self.request, self.client_ip)
            for dropped in self._drop or ():
                h.popall(dropped.decode("latin-1"), None)
            for name, value, _ in self._add or ():
                h.add(name, value)
            self._drop = self._add = None
        return h

    @upstream_headers.setter
    def upstream_headers(self, value: CIMultiDict[str]) -> None:
        self._upstream_headers = value

    @property
    def upstream_query(self) -> MultiDict[str]:
        q = self._upstream_query
        if q is None:
            q = self._upstream_query = MultiDict(self.request.query)
        return q

    @upstream_query.setter
    def upstream_query(self, value: MultiDict[str]) -> None:
        self._upstream_query = value

    def request_header(self, name: str) -> str | None:
        """The first request header ``name`` (case-insensitive), without building the multidict."""
        request = self.request
        if type(request) is Exchange:
            return request.header(name)
        value: str | None = request.headers.get(name)
        return value

    def upstream_headers_if_built(self) -> CIMultiDict[str] | None:
        return self._upstream_headers

    def upstream_query_if_built(self) -> MultiDict[str] | None:
        return self._upstream_query

    def set_upstream_header(self, name: str, value: str, line: bytes | None = None) -> None:
        """Replace every upstream header ``name`` with one ``value``.

        ``line`` is ``name: value\\r\\n`` already encoded (plugins pre-encode what their config
        fixes, see request-transformer); without it the line is encoded here.
        """
        if self._upstream_headers is not None:
            self._upstream_headers[name] = value
            return
        self.remove_upstream_header(name)
        if self._add is None:
            self._add = []
        self._add.append((name, value, line if line is not None else encode_header(name, value)))

    def remove_upstream_header(self, name: str) -> None:
        if self._upstream_headers is not None:
            self._upstream_headers.popall(name, None)
            return
        low = name.lower()
        if self._drop is None:
            self._drop = set()
        self._drop.add(low.encode("latin-1"))
        if self._add:
            self._add = [entry for entry in self._add if entry[0].lower() != low]

    def dropped_headers(self) -> set[bytes] | frozenset[bytes]:
        return self._drop or frozenset()

    def added_headers(self) -> list[tuple[str, str, bytes]]:
        return self._add or []

    def responders(self, chain: PluginChain) -> tuple[Plugin, ...]:
        """The plugins with a response phase for this request (none: headers pass untouched)."""
        plugins = self.plugins
        if not plugins or plugins is chain.plugins:
            return chain.responders
        return tuple(p for p in plugins if _responds(p))


class Plugin:
    """Base class; subclasses set ``name``/``priority`` and override the phases they need."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    is_auth: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        self.config = self.parse(config)
        self.scope = scope
        # True when the access phase is ``check`` (never awaits); a subclass that overrides
        # ``access`` is asynchronous unless it says otherwise
        self.sync = type(self).access is Plugin.access

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config normalized by its schema in ``gateway.plugin_schemas`` (the one the control
        plane validated it with); ValueError with the field's path when it does not fit.

        Subclasses may derive more from the normalized dict; they do not re-check it by hand.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"{cls.name}: config must be an object")
        if cls.name not in PLUGIN_SCHEMAS:  # a plugin without a schema (tests register some)
            return dict(config)
        try:
            return validate_plugin_config(cls.name, config, cls.name)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None

    async def access(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        """The access phase of a plugin that never awaits (see the module docstring)."""
        return None

    def response(self, ctx: RequestContext, resp: Response) -> None:
        """Edit a response before its head is sent. A plugin whose response phase only sets
        headers says so with ``sets_headers`` and ``header_lines``; then relayed responses skip
        this (no header dict is built): the base implementation applies ``header_lines``."""
        if self.sets_headers:
            for _, line in self.header_lines(ctx):
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
                resp.headers[name] = value

    # True: the response phase is exactly "set the headers of header_lines" (see ``response``)
    sets_headers: ClassVar[bool] = False

    def header_lines(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        """(lower-cased name, ``Name: value\r\n``) for each header to set on the response."""
        return []

    def log(self, ctx: RequestContext) -> None:
        return None

    def inherit(self, old: Plugin) -> None:
        """Take over state from the same plugin of the previous runtime (same scope and config)."""
        return None

    def state_key(self) -> tuple[str, str, str]:
        return (self.scope, self.name, json.dumps(self.config, sort_keys=True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} scope={self.scope}>"


def _responds(p: Plugin) -> bool:
    return type(p).response is not Plugin.response or p.sets_headers


@dataclass(frozen=True)
class Later:
    """The plugins still to run, asynchronously, after ``PluginChain.access_now``."""

    plugins: tuple[Plugin, ...]


class PluginChain:
    """The ordered plugins of one route (or the global chain used when no route matches)."""

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        ordered = sorted(plugins, key=lambda p: (-p.priority, p.name))
        self.plugins: tuple[Plugin, ...] = tuple(ordered)
        self.pre = tuple(p for p in ordered if not p.is_auth and p.priority > AUTH_PRIORITY)
        self.auth = tuple(p for p in ordered if p.is_auth)
        self.post = tuple(p for p in ordered if not p.is_auth and p.priority <= AUTH_PRIORITY)
        self.responders = tuple(p for p in ordered if _responds(p))
        self.loggers = tuple(p for p in ordered if type(p).log is not Plugin.log)
        self.setters_only = all(p.sets_headers for p in self.responders)  # see Relay.on_head
        self.sync = all(getattr(p, "sync", False) for p in ordered)  # access_now can run the route's plugins inline
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

    async def access(self, ctx: RequestContext) -> Response | None:
        ctx.plugins = self.plugins
        for p in self.pre:
            resp = await p.access(ctx)
            if resp is not None:
                return resp
        if self.auth:
            refusal: Response | None = None
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

    def access_now(self, ctx: RequestContext) -> Response | None | Later:
        """``access`` run inline, for a chain whose plugins are all ``sync``.

        A consumer's own plugins are only known after authentication; if one of them awaits,
        the rest of the chain is returned as ``Later`` for ``access_later`` to run in a task.
        """
        ctx.plugins = self.plugins
        for p in self.pre:
            resp = p.check(ctx)
            if resp is not None:
                return resp
        if self.auth:
            refusal: Response | None = None
            for p in self.auth:
                resp = p.check(ctx)
                if resp is None:
                    break
                refusal = refusal or resp
            else:
                return refusal
        post = self.post
        if ctx.consumer is not None and ctx.consumer.plugins:
            post = self._post_for(ctx.consumer)
            ctx.plugins = self.pre + self.auth + post
            if not all(getattr(p, "sync", False) for p in post):
                return Later(post)
        for p in post:
            resp = p.check(ctx)
            if resp is not None:
                return resp
        return None

    @staticmethod
    async def access_later(ctx: RequestContext, later: Later) -> Response | None:
        for p in later.plugins:
            resp = await p.access(ctx)
            if resp is not None:
                return resp
        return None

    def response(self, ctx: RequestContext, resp: Response) -> None:
        for p in ctx.plugins or self.plugins:
            try:
                p.response(ctx, resp)
            except Exception:  # a header plugin must not turn a good answer into a crash
                log.exception("plugin %s failed in response phase", p.name)

    def log(self, ctx: RequestContext) -> None:
        plugins = ctx.plugins
        for p in self.loggers if not plugins or plugins is self.plugins else plugins:
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
