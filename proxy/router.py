"""Request routing: host, path, method and header matching in O(path length).

The router is compiled once per config revision and then only read, so it can be shared by every
request without locks. Lookup never scans the route list: candidates are found through dicts,

1. by host, most specific first: the exact host, then wildcard suffixes (``*.example.com`` matches
   ``a.example.com`` and ``a.b.example.com`` but not ``example.com``) longest suffix first, then the
   routes without hosts. The first host bucket that yields a match wins, as nginx picks a
   ``server_name`` before a ``location``: a route bound to a host is never shadowed by a hostless
   route with a longer path.
2. inside a host bucket, by path: ``=``-exact paths in one dict, prefixes in another. A prefix
   matches on a segment boundary (``/api`` matches ``/api`` and ``/api/x``, not ``/apix``; ``/api/``
   matches ``/api/x`` and ``/api/``). The candidate prefixes of a request path are its own text and
   every cut at a ``/``, so the walk costs a handful of dict lookups per segment.
3. the few routes found for the most specific path are filtered by method and headers and ordered
   by ``(-priority, route id)``; if none passes, the walk continues with the next shorter prefix.

A route without paths matches every path with the lowest specificity (below ``/``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_EXACT = 0
_PREFIX = 1


@dataclass(frozen=True)
class Route:
    """One compiled route; ``spec`` keeps the normalized resource for the rest of the runtime."""

    id: str
    paths: tuple[str, ...]
    hosts: tuple[str, ...]
    methods: frozenset[str]
    headers: tuple[tuple[str, str], ...]
    priority: int
    upstream: str
    strip_prefix: bool
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_spec(cls, route_id: str, spec: Mapping[str, Any]) -> Route:
        """Build from a normalized route spec; raises ValueError when the shape is wrong."""
        where = f"routes[{route_id}]"
        paths = _str_list(spec.get("paths", []), f"{where}.paths")
        hosts = tuple(h.lower().rstrip(".") for h in _str_list(spec.get("hosts", []), f"{where}.hosts"))
        methods = frozenset(m.upper() for m in _str_list(spec.get("methods", []), f"{where}.methods"))
        headers = spec.get("headers", {}) or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError(f"{where}.headers: must be a mapping of strings")
        for p in paths:
            body = p[1:] if p.startswith("=") else p
            if not body.startswith("/"):
                raise ValueError(f"{where}.paths: {p!r} must start with / (or =/)")
        if not paths and not hosts:
            raise ValueError(f"{where}: needs at least one path or host")
        upstream = spec.get("upstream")
        if not isinstance(upstream, str) or not upstream:
            raise ValueError(f"{where}.upstream: must be an upstream id")
        priority = spec.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"{where}.priority: must be an integer")
        return cls(
            id=route_id,
            paths=paths,
            hosts=hosts,
            methods=methods,
            headers=tuple(sorted((k.lower(), v) for k, v in headers.items())),
            priority=priority,
            upstream=upstream,
            strip_prefix=bool(spec.get("strip_prefix", False)),
            spec=spec,
        )


@dataclass(frozen=True)
class Match:
    """The result of a lookup: the route and the path text that matched (for strip_prefix)."""

    route: Route
    matched_path: str
    exact: bool


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: must be a list of strings")
    return tuple(value)


class _PathIndex:
    """Routes of one host bucket, indexed by exact path and by prefix."""

    __slots__ = ("exact", "prefix")

    def __init__(self) -> None:
        # buckets hold the Match each lookup returns, built once here instead of per request
        self.exact: dict[str, list[Match]] = {}
        self.prefix: dict[str, list[Match]] = {}

    def _slots(self, route: Route) -> Iterable[tuple[dict[str, list[Match]], str]]:
        """The (table, key) buckets a route lives in; the key is also the matched path text."""
        if not route.paths:
            yield self.prefix, ""
        for p in route.paths:
            if p.startswith("="):
                yield self.exact, p[1:]
            else:
                yield self.prefix, p

    def add(self, route: Route) -> None:
        """Bulk build: append, then ``freeze`` once."""
        for table, key in self._slots(route):
            table.setdefault(key, []).append(Match(route, key, table is self.exact))

    def freeze(self) -> None:
        """Sort each bucket once so that lookups take the first passing candidate."""
        for table in (self.exact, self.prefix):
            for key, entries in table.items():
                table[key] = sorted(entries, key=_bucket_order)

    # -- copy-on-write updates (incremental config changes) ------------------------------------
    def clone(self) -> _PathIndex:
        """A copy sharing the bucket lists, which ``insert``/``discard`` replace, never mutate."""
        other = _PathIndex()
        other.exact, other.prefix = dict(self.exact), dict(self.prefix)
        return other

    def insert(self, route: Route) -> None:
        for table, key in self._slots(route):
            table[key] = sorted([*table.get(key, ()), Match(route, key, table is self.exact)], key=_bucket_order)

    def discard(self, route: Route) -> None:
        for table, key in self._slots(route):
            kept = [e for e in table.get(key, ()) if e.route.id != route.id]
            if kept:
                table[key] = kept
            else:
                table.pop(key, None)

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefix)

    def lookup(self, method: str, path: str, headers: Mapping[str, str]) -> Match | None:
        entries = self.exact.get(path)
        if entries:
            hit = _first(entries, method, headers)
            if hit is not None:
                return hit
        if not self.prefix:
            return None
        for candidate in _prefixes(path):
            entries = self.prefix.get(candidate)
            if entries:
                hit = _first(entries, method, headers)
                if hit is not None:
                    return hit
        return None


def _bucket_order(entry: Match) -> tuple[int, str]:
    return (-entry.route.priority, entry.route.id)


def _first(entries: list[Match], method: str, headers: Mapping[str, str]) -> Match | None:
    for match in entries:
        route = match.route
        if route.methods and method not in route.methods:
            continue
        if route.headers and not all(headers.get(k) == v for k, v in route.headers):
            continue
        return match
    return None


def _prefixes(path: str) -> Iterable[str]:
    """Every prefix of ``path`` that ends on a segment boundary, longest first, then ``""``.

    For ``/a/b`` that is ``/a/b``, ``/a/``, ``/a``, ``/``, ``""``: a configured prefix ``/a/``
    must see ``/a/b`` while ``/a`` must not see ``/ab``.
    """
    yield path
    i = path.rfind("/", 0, len(path) - 1) if path.endswith("/") else path.rfind("/")
    if path.endswith("/") and len(path) > 1:
        yield path[:-1]
    while i >= 0:
        yield path[: i + 1]
        if i > 0:
            yield path[:i]
        i = path.rfind("/", 0, i)
    yield ""


def normalize_path(path: str) -> str:
    """Remove ``.`` and ``..`` segments (RFC 3986 5.2.4) from a decoded path.

    Routing must see the path the upstream will act on: otherwise ``/public/..%2Fadmin`` would
    match an open ``/public`` route and reach ``/admin`` behind it. The caller forwards the
    normalized path whenever normalization changed something.
    """
    if "." not in path or not path.startswith("/"):
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for seg in segments:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    result = "/" + "/".join(out)
    if segments[-1] in (".", "..") and not result.endswith("/"):
        result += "/"
    return result


HOST_CACHE = 4096  # distinct Host header values remembered normalized, per router


def normalize_host(host: str | None) -> str:
    """Lower-case, drop the port (also for ``[v6]:port``) and a trailing dot."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class Router:
    """Immutable index over the routes of one config revision."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact_hosts: dict[str, _PathIndex] = {}
        self._wild_hosts: dict[str, _PathIndex] = {}
        self._any_host = _PathIndex()
        self._routes: dict[str, Route] = {}
        self._host_names: dict[str, str] = {}  # Host header -> normalize_host(it), bounded
        for route in routes:
            if route.id in self._routes:
                raise ValueError(f"routes[{route.id}]: duplicate route id")
            self._routes[route.id] = route
            if not route.hosts:
                self._any_host.add(route)
            for host in route.hosts:
                if host.startswith("*."):
                    self._wild_hosts.setdefault(host[1:], _PathIndex()).add(route)
                else:
                    self._exact_hosts.setdefault(host, _PathIndex()).add(route)
        for index in (*self._exact_hosts.values(), *self._wild_hosts.values(), self._any_host):
            index.freeze()

    def with_changes(self, removed: Iterable[str], added: Iterable[Route]) -> Router:
        """A new router with routes ``removed`` (ids) and ``added`` (replacing equal ids).

        Copy-on-write: only the host buckets and path keys the changed routes live in are copied,
        so a one-route change on 10k routes costs a few dict copies, not a rebuild. ``self`` is
        left untouched (requests in flight keep using it).
        """
        new = object.__new__(Router)
        new._exact_hosts, new._wild_hosts = dict(self._exact_hosts), dict(self._wild_hosts)
        new._any_host, new._routes = self._any_host, dict(self._routes)
        new._host_names = self._host_names  # host normalization does not depend on the routes
        cloned: set[int] = set()

        def indexes(route: Route) -> list[_PathIndex]:
            found = []
            if not route.hosts:
                if id(new._any_host) not in cloned:
                    new._any_host = new._any_host.clone()
                    cloned.add(id(new._any_host))
                found.append(new._any_host)
            for host in route.hosts:
                table, key = (new._wild_hosts, host[1:]) if host.startswith("*.") else (new._exact_hosts, host)
                index = table.get(key)
                if index is None or id(index) not in cloned:
                    index = index.clone() if index is not None else _PathIndex()
                    table[key] = index
                    cloned.add(id(index))
                found.append(index)
            return found

        added = list(added)
        for rid in [*removed, *(r.id for r in added)]:
            old = new._routes.pop(rid, None)
            if old is not None:
                for index in indexes(old):
                    index.discard(old)
        for route in added:
            if route.id in new._routes:
                raise ValueError(f"routes[{route.id}]: duplicate route id")
            new._routes[route.id] = route
            for index in indexes(route):
                index.insert(route)
        for table in (new._exact_hosts, new._wild_hosts):
            for key in [k for k, index in table.items() if not index]:
                del table[key]
        return new

    def __len__(self) -> int:
        return len(self._routes)

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._routes

    def match(
        self, method: str, host: str | None, path: str, headers: Mapping[str, str] | None = None
    ) -> Match | None:
        """Find the route for a request; ``headers`` must be case-insensitive or lower-cased."""
        hdrs: Mapping[str, str] = headers if headers is not None else {}
        hosts = self._host_names
        name = hosts.get(host) if host is not None else ""
        if name is None:
            name = normalize_host(host)
            if len(hosts) < HOST_CACHE:
                hosts[host] = name  # type: ignore[index]
        if name:
            index = self._exact_hosts.get(name)
            if index is not None:
                hit = index.lookup(method, path, hdrs)
                if hit is not None:
                    return hit
            if self._wild_hosts:
                dot = name.find(".")
                while dot >= 0:
                    index = self._wild_hosts.get(name[dot:])
                    if index is not None:
                        hit = index.lookup(method, path, hdrs)
                        if hit is not None:
                            return hit
                    dot = name.find(".", dot + 1)
        return self._any_host.lookup(method, path, hdrs)
