"""Compile a config snapshot into an immutable ``Runtime`` that serves requests.

Building is pure CPU work done off the hot path (by the sync client or the cache loader); the
result is installed with one reference assignment (``DataPlane.swap``), so a request sees either
the old or the new config, never a mix. Everything the request path needs is precomputed here:
the route index, the upstream pools, the credentials index (key -> consumer) and one plugin chain
per route (global plugins, overridden by the route's plugins of the same name).

Specs arrive validated and normalized by the control plane; we still check the structure and raise
``ValueError`` with a path such as ``routes[r1].upstream`` when it is wrong, so the sync client
nacks the revision and keeps serving the previous one. Problems confined to one credential (a
public key that does not parse) only disable that credential and are listed in ``warnings``:
refusing the whole revision for them would block every later config change as well.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.registry import registered_targets, with_registered
from gateway.state import ConfigState
from proxy.balancer import Pool
from proxy.plugins import PLUGINS
from proxy.plugins.base import Consumer, ConsumerIndex, JwtCredential, Plugin, PluginChain
from proxy.router import Route, Router

log = logging.getLogger(__name__)

KINDS = ("upstreams", "routes", "consumers", "plugins")


@dataclass(frozen=True)
class Runtime:
    """One config revision, compiled. Immutable apart from the balancer/plugin state it holds."""

    revision: int
    hash: str
    router: Router
    pools: Mapping[str, Pool]
    consumers: ConsumerIndex
    chains: Mapping[str, PluginChain]
    global_chain: PluginChain
    plugin_instances: Mapping[tuple[str, str, str], Plugin] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def chain_for(self, route_id: str | None) -> PluginChain:
        if route_id is None:
            return self.global_chain
        return self.chains.get(route_id, self.global_chain)

    def handover(self, old: Runtime | None) -> Runtime:
        """Take over balancer and plugin state from ``old`` where the config did not change.

        Pools whose upstream spec is equal are reused as objects (in-flight requests keep
        updating the same counters); plugins with the same scope and config inherit state.
        """
        if old is None:
            return self
        pools = {
            uid: old.pools[uid] if uid in old.pools and old.pools[uid].spec == pool.spec else pool
            for uid, pool in self.pools.items()
        }
        for key, plugin in self.plugin_instances.items():
            previous = old.plugin_instances.get(key)
            if previous is not None and previous is not plugin:
                plugin.inherit(previous)
        return dataclasses.replace(self, pools=pools)


def _items(resources: Mapping[str, Any], kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    table = resources.get(kind)
    if table is None:
        return []
    if not isinstance(table, Mapping):
        raise ValueError(f"{kind}: must be a mapping of id to resource")
    out = []
    for rid in sorted(table):
        entry = table[rid]
        if not isinstance(rid, str) or not isinstance(entry, Mapping) or not isinstance(entry.get("spec"), Mapping):
            raise ValueError(f"{kind}[{rid}]: must be an object with a 'spec' object")
        out.append((rid, entry["spec"]))
    return out


class _Builder:
    def __init__(self) -> None:
        self.instances: dict[tuple[str, str, str], Plugin] = {}
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        log.warning("config: %s", message)
        self.warnings.append(message)

    def plugin(self, name: Any, config: Any, scope: str, where: str) -> Plugin:
        cls = PLUGINS.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"{where}: unknown plugin {name!r}")
        try:
            instance = cls(config if config is not None else {}, scope=scope)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        return self.instances.setdefault(instance.state_key(), instance)

    def plugin_map(self, plugins: Any, scope: str, where: str) -> dict[str, Plugin]:
        if not isinstance(plugins, Mapping):
            raise ValueError(f"{where}: must be a mapping of plugin name to config")
        return {name: self.plugin(name, cfg, scope, f"{where}.{name}") for name, cfg in plugins.items()}

    def jwt_key(self, cred: Mapping[str, Any], where: str) -> Any:
        alg = cred.get("algorithm")
        if alg == "HS256":
            secret = cred.get("secret")
            if not isinstance(secret, str) or not secret:
                self.warn(f"{where}.secret: HS256 needs a secret; credential disabled")
                return None
            if len(secret.encode()) < 32:
                self.warn(f"{where}.secret: shorter than 32 bytes, weak for HS256 (RFC 7518 3.2)")
            return secret
        if alg in ("RS256", "ES256"):
            pem = cred.get("public_key")
            try:
                key = load_pem_public_key(str(pem).encode())
            except (ValueError, TypeError) as exc:
                self.warn(f"{where}.public_key: cannot be parsed ({exc}); credential disabled")
                return None
            want = rsa.RSAPublicKey if alg == "RS256" else ec.EllipticCurvePublicKey
            if not isinstance(key, want):
                self.warn(f"{where}.public_key: not a key for {alg}; credential disabled")
                return None
            if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
                self.warn(f"{where}.public_key: RSA key shorter than 2048 bits is weak")
            return key
        self.warn(f"{where}.algorithm: unsupported {alg!r}; credential disabled")
        return None

    def consumers(self, items: list[tuple[str, Mapping[str, Any]]]) -> ConsumerIndex:
        by_id: dict[str, Consumer] = {}
        key_auth: dict[str, Consumer] = {}
        jwt: dict[str, list[JwtCredential]] = {}
        for cid, spec in items:
            where = f"consumers[{cid}]"
            own = self.plugin_map(spec.get("plugins") or {}, f"consumer:{cid}", f"{where}.plugins")
            username = spec.get("username")
            consumer = Consumer(cid, username if isinstance(username, str) else None, tuple(own.values()))
            by_id[cid] = consumer
            creds = spec.get("credentials") or {}
            if not isinstance(creds, Mapping):
                raise ValueError(f"{where}.credentials: must be an object")
            for i, cred in enumerate(creds.get("key-auth") or []):
                key = cred.get("key") if isinstance(cred, Mapping) else None
                if not isinstance(key, str) or not key:
                    raise ValueError(f"{where}.credentials.key-auth[{i}].key: must be a string")
                other = key_auth.get(key)
                if other is not None and other.id != cid:
                    raise ValueError(f"{where}.credentials.key-auth[{i}]: key also belongs to consumer {other.id}")
                key_auth[key] = consumer
            for i, cred in enumerate(creds.get("jwt-auth") or []):
                cwhere = f"{where}.credentials.jwt-auth[{i}]"
                if not isinstance(cred, Mapping) or not isinstance(cred.get("key"), str):
                    raise ValueError(f"{cwhere}.key: must be a string")
                verify_key = self.jwt_key(cred, cwhere)
                entry = JwtCredential(consumer, cred["key"], str(cred.get("algorithm")), verify_key)
                jwt.setdefault(cred["key"], []).append(entry)
        return ConsumerIndex(by_id=by_id, key_auth=key_auth, jwt={k: tuple(v) for k, v in jwt.items()})


def _state_items(state: ConfigState, kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    return [(r.id, r.spec) for r in state.list(kind)]


def build_runtime(
    snapshot: ConfigState | Mapping[str, Any],
    *,
    revision: int,
    hash: str,
    clock: Callable[[], float] = time.monotonic,
) -> Runtime:
    """Compile a ``ConfigState`` (or its ``to_snapshot()`` dict); ValueError on a malformed config.

    ``clock`` drives passive-health cooldowns (injectable for tests).
    """
    items: Callable[[str], list[tuple[str, Mapping[str, Any]]]]
    if isinstance(snapshot, ConfigState):
        if snapshot.revision != revision:
            raise ValueError(f"snapshot: revision {snapshot.revision} does not match the expected {revision}")
        items = functools.partial(_state_items, snapshot)
    else:
        if not isinstance(snapshot, Mapping) or not isinstance(snapshot.get("resources"), Mapping):
            raise ValueError("snapshot: must be an object with a 'resources' object")
        snap_rev = snapshot.get("revision")
        if snap_rev is not None and snap_rev != revision:
            raise ValueError(f"snapshot: revision {snap_rev} does not match the expected {revision}")
        items = functools.partial(_items, snapshot["resources"])
    b = _Builder()

    registered = registered_targets(spec for _, spec in items("registrations"))
    pools = {uid: Pool(uid, with_registered(spec, registered.get(uid)), clock=clock)
             for uid, spec in items("upstreams")}

    global_plugins: dict[str, Plugin] = {}
    for pid, spec in items("plugins"):
        if not spec.get("enabled", True):
            continue
        name = spec.get("name")
        plugin = b.plugin(name, spec.get("config"), "global", f"plugins[{pid}]")
        if plugin.name in global_plugins:
            b.warn(f"plugins[{pid}]: a global {plugin.name} plugin is already configured; ignored")
            continue
        global_plugins[plugin.name] = plugin
    global_chain = PluginChain(list(global_plugins.values()))

    consumers = b.consumers(items("consumers"))

    routes: list[Route] = []
    chains: dict[str, PluginChain] = {}
    for rid, spec in items("routes"):
        route = Route.from_spec(rid, spec)
        if route.upstream not in pools:
            raise ValueError(f"routes[{rid}].upstream: upstream {route.upstream!r} does not exist")
        own = b.plugin_map(spec.get("plugins") or {}, f"route:{rid}", f"routes[{rid}].plugins")
        if own:
            chains[rid] = PluginChain(list({**global_plugins, **own}.values()))
        routes.append(route)

    return Runtime(
        revision=revision,
        hash=hash,
        router=Router(routes),
        pools=pools,
        consumers=consumers,
        chains=chains,
        global_chain=global_chain,
        plugin_instances=dict(b.instances),
        warnings=tuple(b.warnings),
    )


def _targets_key(spec: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
    return [(t.get("host"), t.get("port"), t.get("weight", 1)) for t in spec.get("targets") or ()]


def update_runtime(
    old: Runtime,
    state: ConfigState,
    touched: Iterable[tuple[str, str]],
    *,
    revision: int,
    hash: str,
    clock: Callable[[], float] = time.monotonic,
) -> Runtime:
    """Derive the runtime of ``state`` (a ``ConfigState``) from ``old`` by recompiling only the
    resources in ``touched``; the result equals ``build_runtime`` of the same state.

    Routes and upstreams, the bulk of a large config, are updated in place of a rebuild (a
    copy-on-write router update and a pool per changed upstream). A change to a global plugin or
    a consumer feeds every chain or the whole credential index, so it takes the full build.
    """
    touched = list(dict.fromkeys(touched))
    if any(kind not in ("routes", "upstreams", "registrations") for kind, _ in touched):
        return build_runtime(state, revision=revision, hash=hash, clock=clock)
    b = _Builder()
    pools = dict(old.pools)
    if any(kind == "registrations" for kind, _ in touched):
        # Service registrations (gateway/registry.py): a new pool for each upstream whose merged
        # target list changed (a deleted registration does not tell its upstream, so compare all).
        registered = registered_targets(r.spec for r in state.list("registrations"))
        for uid, pool in old.pools.items():
            res = state.get("upstreams", uid)
            if res is None:
                continue
            merged = with_registered(res.spec, registered.get(uid))
            if _targets_key(merged) != _targets_key(pool.spec):
                pools[uid] = Pool(uid, merged, clock=clock)
    for kind, uid in touched:
        if kind != "upstreams":
            continue
        res = state.get("upstreams", uid)
        if res is None:
            pools.pop(uid, None)
        else:
            registered = registered_targets(r.spec for r in state.list("registrations") if r.spec["upstream"] == uid)
            pools[uid] = Pool(uid, with_registered(res.spec, registered.get(uid)), clock=clock)
    global_plugins = {p.name: p for p in old.global_chain.plugins}
    chains = dict(old.chains)
    instances = dict(old.plugin_instances)
    removed, added = [], []
    for kind, rid in touched:
        if kind != "routes":
            continue
        removed.append(rid)
        chains.pop(rid, None)
        for key in [k for k in instances if k[0] == f"route:{rid}"]:
            del instances[key]
        res = state.get("routes", rid)
        if res is None:
            continue
        route = Route.from_spec(rid, res.spec)
        own = b.plugin_map(res.spec.get("plugins") or {}, f"route:{rid}", f"routes[{rid}].plugins")
        if own:
            chains[rid] = PluginChain(list({**global_plugins, **own}.values()))
        added.append(route)
    router = old.router.with_changes(removed, added)
    for route in added:
        if route.upstream not in pools:
            raise ValueError(f"routes[{route.id}].upstream: upstream {route.upstream!r} does not exist")
    deleted_upstreams = {uid for kind, uid in touched if kind == "upstreams" and uid not in pools}
    if deleted_upstreams:
        for route in router.routes.values():
            if route.upstream in deleted_upstreams:
                raise ValueError(f"routes[{route.id}].upstream: upstream {route.upstream!r} does not exist")
    instances.update(b.instances)
    return dataclasses.replace(
        old,
        revision=revision,
        hash=hash,
        router=router,
        pools=pools,
        chains=chains,
        plugin_instances=instances,
        warnings=old.warnings + tuple(b.warnings),
    )
