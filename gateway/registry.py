"""Service registrations: targets that instances register themselves, with a TTL (pure).

A registration is a resource of kind ``registrations`` in the ``ConfigState``, so it is part of
the config hash, the snapshots and the delta stream, and proxies merge it into its upstream's
targets (``registered_targets``). Its id is derived from ``(upstream, host, port)``; its spec:

    {"upstream": str, "host": str, "port": int, "weight": int, "ttl": float,
     "metadata": {str: str}, "registered_at": float (unix time of the proposer's clock)}

Liveness (when an instance last heartbeated) is NOT replicated: the leader keeps it in memory
(cluster/discovery.py). Only four commands change registrations, applied in log order on every
node by ``apply_command``, deterministic (time only comes from the command itself):

- ``reg_put``    register, or renew when nothing changed (then no revision at all);
- ``reg_delete`` deregister;
- ``reg_grant``  a new leader opens its expiry epoch (its Raft term) before expiring anything;
- ``reg_expire`` remove registrations the leader saw expire; applied only when its epoch is the
  current one and only for registrations whose ``mod_revision`` is still the one the leader saw,
  so an expiry decided by a deposed leader, or one that raced a re-registration, removes nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .delta import Delta
from .errors import NotFound, ValidationError
from .fields import host_or_ip
from .model import Resource
from .state import ConfigState

__all__ = [
    "KIND",
    "MAX_METADATA_BYTES",
    "MAX_TTL",
    "MIN_TTL",
    "Applied",
    "apply_command",
    "normalize_registration",
    "parse_target",
    "registered_targets",
    "with_registered",
    "registration_id",
    "registration_view",
]

KIND = "registrations"
MIN_TTL = 1.0
MAX_TTL = 86_400.0
MAX_METADATA_ENTRIES = 32
MAX_METADATA_BYTES = 4096
MAX_EXPIRE_BATCH = 1000
_REG_FIELDS = ("weight", "ttl", "metadata")
_HOST = host_or_ip()


@dataclass(frozen=True)
class Applied:
    """What one command did: the new state and delta (``None`` when nothing changed), the new
    expiry epoch and the result the proposer receives."""

    state: ConfigState
    delta: Delta | None
    epoch: int
    result: dict[str, Any]


def registration_id(upstream: str, host: str, port: int) -> str:
    """A stable resource id for ``(upstream, host, port)`` (hosts may hold ':' and be long)."""
    digest = hashlib.sha256(f"{upstream}\0{host}\0{port}".encode()).hexdigest()
    return f"reg-{digest[:32]}"


def parse_target(text: str, path: str = "target") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> normalized ``(host, port)``; ``ValidationError`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValidationError("must look like host:port (IPv6 as [addr]:port)", path)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValidationError("port must be 1..65535", path)
    if ":" in host and not host.startswith("["):
        raise ValidationError("an IPv6 address must be written as [addr]:port", path)
    return _HOST.check(host, path), port


def normalize_registration(upstream: str, host: str, port: int, body: Any) -> dict[str, Any]:
    """Validate a registration body ``{"weight": 1, "ttl": 10, "metadata": {}}`` (all optional
    except ttl) and return ``{"weight", "ttl", "metadata"}`` normalized."""
    where = f"upstreams[{upstream}].targets[{_show(host, port)}]"
    if not isinstance(body, Mapping):
        raise ValidationError("body must be a JSON object", where)
    unknown = sorted(set(body) - set(_REG_FIELDS))
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", f"{where}.{unknown[0]}")
    weight = body.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1000:
        raise ValidationError("must be an integer 0..1000", f"{where}.weight")
    if "ttl" not in body:
        raise ValidationError(f"required: seconds without a heartbeat before the target expires ({MIN_TTL:g}.."
                              f"{MAX_TTL:g})", f"{where}.ttl")
    ttl = body["ttl"]
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not MIN_TTL <= ttl <= MAX_TTL:
        raise ValidationError(f"must be a number of seconds {MIN_TTL:g}..{MAX_TTL:g}", f"{where}.ttl")
    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("must be an object of string values", f"{where}.metadata")
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ValidationError(f"at most {MAX_METADATA_ENTRIES} entries", f"{where}.metadata")
    size = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ValidationError("keys and values must be strings (keys non-empty)", f"{where}.metadata.{key}")
        size += len(key.encode()) + len(value.encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationError(f"at most {MAX_METADATA_BYTES} bytes of keys and values", f"{where}.metadata")
    return {"weight": weight, "ttl": float(ttl), "metadata": {k: metadata[k] for k in sorted(metadata)}}


def registered_targets(registrations: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Registration specs grouped as upstream targets: ``{upstream: [{host, port, weight}]}``
    (sorted by host and port, so a proxy builds the same pool from the same registrations)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for spec in registrations:
        out.setdefault(str(spec["upstream"]), []).append(
            {"host": spec["host"], "port": spec["port"], "weight": spec["weight"]}
        )
    for targets in out.values():
        targets.sort(key=lambda t: (t["host"], t["port"]))
    return out


def with_registered(spec: Mapping[str, Any], registered: list[dict[str, Any]] | None) -> Mapping[str, Any]:
    """An upstream spec whose ``targets`` also hold its registered targets (what a proxy balances
    over); a registration of a target that is also static adds nothing."""
    if not registered:
        return spec
    static = list(spec.get("targets") or ())
    known = {(t.get("host"), t.get("port")) for t in static}
    extra = [t for t in registered if (t["host"], t["port"]) not in known]
    return {**spec, "targets": static + extra}


def registration_view(reg: Resource, now: float, last_seen_age: float | None) -> dict[str, Any]:
    """The API form of a registration: marked registered, with age and (when the liveness is
    known, i.e. ``last_seen_age`` is how long ago the leader heard from it) seconds to expiry."""
    spec = reg.spec
    ttl = float(spec["ttl"])
    return {
        "host": spec["host"],
        "port": spec["port"],
        "weight": spec["weight"],
        "registered": True,
        "ttl": ttl,
        "metadata": dict(spec["metadata"]),
        "registered_at": spec["registered_at"],
        "age": round(max(0.0, now - float(spec["registered_at"])), 3),
        "last_heartbeat_age": None if last_seen_age is None else round(last_seen_age, 3),
        "expires_in": None if last_seen_age is None else round(max(0.0, ttl - last_seen_age), 3),
        "created_revision": reg.created_revision,
        "mod_revision": reg.mod_revision,
    }


def apply_command(state: ConfigState, epoch: int, cmd: Mapping[str, Any]) -> Applied:
    """Apply one registry command (see the module docstring); raises ``GatewayError`` subclasses
    for commands that are rejected (nothing changes then)."""
    kind = cmd.get("type")
    if kind == "reg_put":
        return _put(state, epoch, cmd)
    if kind == "reg_delete":
        return _delete(state, epoch, cmd)
    if kind == "reg_grant":
        new_epoch = _int(cmd.get("epoch"), "epoch")
        if new_epoch < epoch:  # a grant from an older term, applied late: keep the newer epoch
            return Applied(state, None, epoch, {"ok": True, "epoch": epoch, "granted": False})
        return Applied(state, None, new_epoch, {"ok": True, "epoch": new_epoch, "granted": True})
    if kind == "reg_expire":
        return _expire(state, epoch, cmd)
    raise ValidationError(f"unknown registry command {kind!r}", "type")


def _put(state: ConfigState, epoch: int, cmd: Mapping[str, Any]) -> Applied:
    upstream, host, port = _address(state, cmd)
    body = normalize_registration(upstream, host, port, {k: cmd[k] for k in _REG_FIELDS if k in cmd})
    rid = registration_id(upstream, host, port)
    current = state.get(KIND, rid)
    if current is not None and all(current.spec[k] == body[k] for k in _REG_FIELDS):
        # A renewal: nothing to replicate to proxies, no revision.
        return Applied(state, None, epoch, {"ok": True, "id": rid, "changed": False, "revision": state.revision})
    revision = state.revision + 1
    now = cmd.get("now")
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise ValidationError("a registration needs the proposer's time", "now")
    spec = {"upstream": upstream, "host": host, "port": port, **body,
            "registered_at": current.spec["registered_at"] if current is not None else float(now)}
    created = current.created_revision if current is not None else revision
    resource = Resource(KIND, rid, spec, created, revision)
    new_state, delta = state.with_changes({KIND: {rid: resource}})
    return Applied(new_state, delta, epoch,
                   {"ok": True, "id": rid, "changed": True, "created": current is None, "revision": revision})


def _delete(state: ConfigState, epoch: int, cmd: Mapping[str, Any]) -> Applied:
    upstream, host, port = _address(state, cmd, need_upstream=False)
    rid = registration_id(upstream, host, port)
    if state.get(KIND, rid) is None:
        raise NotFound(f"{_show(host, port)} is not registered in upstream {upstream!r}",
                       f"upstreams[{upstream}].targets[{_show(host, port)}]")
    new_state, delta = state.with_changes({KIND: {rid: None}})
    return Applied(new_state, delta, epoch, {"ok": True, "id": rid, "revision": new_state.revision})


def _expire(state: ConfigState, epoch: int, cmd: Mapping[str, Any]) -> Applied:
    cmd_epoch = _int(cmd.get("epoch"), "epoch")
    items = cmd.get("items")
    if not isinstance(items, list | tuple) or len(items) > MAX_EXPIRE_BATCH:
        raise ValidationError(f"must be a list of at most {MAX_EXPIRE_BATCH} [id, mod_revision]", "items")
    if cmd_epoch != epoch:
        # Decided by a leader whose epoch is over: the current leader granted a fresh TTL since.
        return Applied(state, None, epoch, {"ok": True, "expired": [], "stale_epoch": True, "revision": state.revision})
    changes: dict[str, Resource | None] = {}
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValidationError("must be [id, mod_revision]", "items")
        rid, mod = item
        current = state.get(KIND, rid) if isinstance(rid, str) else None
        if current is not None and current.mod_revision == mod:
            changes[rid] = None
    if not changes:
        return Applied(state, None, epoch, {"ok": True, "expired": [], "revision": state.revision})
    new_state, delta = state.with_changes({KIND: changes})
    return Applied(new_state, delta, epoch, {"ok": True, "expired": sorted(changes), "revision": new_state.revision})


def _address(state: ConfigState, cmd: Mapping[str, Any], *, need_upstream: bool = True) -> tuple[str, str, int]:
    upstream, host, port = cmd.get("upstream"), cmd.get("host"), cmd.get("port")
    if not isinstance(upstream, str):
        raise ValidationError("must be a string", "upstream")
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise ValidationError("needs host (string) and port (integer)", "target")
    if need_upstream and state.get("upstreams", upstream) is None:
        raise NotFound(f"upstreams {upstream!r} does not exist", f"upstreams[{upstream}]")
    return upstream, host, port


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("must be a non-negative integer", path)
    return value


def _show(host: str, port: int) -> str:
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False
    return f"[{host}]:{port}" if v6 else f"{host}:{port}"
