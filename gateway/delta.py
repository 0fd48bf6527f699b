"""Deltas between two revisions, how to apply and compose them, and the canonical config hash.

A ``Delta`` is what the control plane pushes to proxies: the net change of one or more committed
transactions, carrying whole resources (not patches), so applying it needs no validation and no
knowledge of the transactions that produced it. Because every op carries the full resource, the
last op per (kind, id) wins and contiguous deltas compose into one -- that is what lets a node
coalesce a burst for a slow proxy.

The config hash lets two processes agree that they hold the same resources without comparing
them: sha256 over the msgpack encoding of ``[[kind, id, spec, created_revision, mod_revision], ...]``
sorted by (kind, id), with every map's keys sorted. The revision is not part of it (it is compared
separately). Each resource's encoding is cached on the ``Resource``, so hashing a state after a
one-resource transaction costs a sort and a sha256 pass, not a re-encoding of everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .errors import CodecError, DeltaBaseMismatch
from .model import ACTIONS, STORED_KINDS, Resource, resource_from_dict
from .packing import canonical, pack

if TYPE_CHECKING:
    from .state import ConfigState

__all__ = ["Delta", "DeltaOp", "apply_delta", "compose", "config_hash", "resource_bytes", "resource_digest"]

_DIGEST_MODULUS = 1 << 256

DeltaOp: TypeAlias = tuple[Literal["put", "delete"], str, str, Mapping[str, Any] | None]
"""``(action, kind, id, {"spec", "created_revision", "mod_revision"} | None)``."""


@dataclass(frozen=True)
class Delta:
    """The change from revision ``base`` to revision ``revision`` (``revision > base``)."""

    base: int
    revision: int
    ops: tuple[DeltaOp, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.ops, tuple):
            object.__setattr__(self, "ops", tuple(tuple(op) for op in self.ops))

    @staticmethod
    def put(resource: Resource) -> DeltaOp:
        """The delta op that stores ``resource``."""
        return ("put", resource.kind, resource.id, resource.to_dict())

    @staticmethod
    def delete(kind: str, id: str) -> DeltaOp:
        """The delta op that removes ``kind``/``id`` (a no-op where it does not exist)."""
        return ("delete", kind, id, None)


def resource_bytes(resource: Resource) -> bytes:
    """The canonical msgpack encoding of one resource's hash entry, computed once and cached."""
    cached = resource._packed
    if cached is None:
        cached = pack(
            [
                resource.kind,
                resource.id,
                canonical(resource.spec),
                resource.created_revision,
                resource.mod_revision,
            ]
        )
        object.__setattr__(resource, "_packed", cached)
    return cached


def resource_digest(resource: Resource) -> int:
    """sha256 of ``resource_bytes`` as an integer, computed once and cached on the resource."""
    cached = resource._digest
    if cached is None:
        cached = int.from_bytes(hashlib.sha256(resource_bytes(resource)).digest(), "big")
        object.__setattr__(resource, "_digest", cached)
    return cached


def digest_sum(resources: Iterable[Resource]) -> int:
    """The order-independent sum of the resources' digests modulo 2**256."""
    return sum(resource_digest(r) for r in resources) % _DIGEST_MODULUS


def hash_from_sum(total: int) -> str:
    """The config hash for a digest sum: sha256 hex of a domain tag and the 32-byte sum."""
    return hashlib.sha256(b"gwadm-config-v2:" + total.to_bytes(32, "big")).hexdigest()


def updated_sum(total: int, removed: Iterable[Resource], added: Iterable[Resource]) -> int:
    """Shift a digest sum by the resources a change removed and added: O(changes), not O(config)."""
    for r in removed:
        total -= resource_digest(r)
    for r in added:
        total += resource_digest(r)
    return total % _DIGEST_MODULUS


def config_hash(resources: Iterable[Resource]) -> str:
    """The content hash of a set of resources (their revisions included, the state's revision not).

    A multiset hash: sha256 over the sum (mod 2**256) of every resource's sha256 of its canonical
    msgpack entry ``[kind, id, canonical(spec), created, mod]``. Being a sum, it is independent of
    order and can be updated per change in O(changed resources), which matters with 10k routes:
    CP and proxies compute it on every revision. It detects divergence between honest replicas;
    it is not meant to resist an adversary who chooses resources to collide.
    """
    return hash_from_sum(digest_sum(resources))


def _check_op(op: Any) -> tuple[str, str, str, Any]:
    if not isinstance(op, tuple | list) or len(op) != 4:
        raise CodecError("delta op must be [action, kind, id, resource|null]")
    action, kind, id, data = op
    if action not in ACTIONS:
        raise CodecError(f"delta op action must be put or delete, not {action!r}")
    if kind not in STORED_KINDS:
        raise CodecError(f"delta op has unknown kind {kind!r}")
    if not isinstance(id, str):
        raise CodecError("delta op id must be a string")
    if action == "delete" and data is not None:
        raise CodecError("a delete op carries no resource", f"{kind}[{id}]")
    return action, kind, id, data


def apply_delta(state: ConfigState, delta: Delta) -> ConfigState:
    """Return ``state`` with ``delta`` applied. The resources are trusted (validated when committed).

    Raises ``DeltaBaseMismatch`` if ``delta.base != state.revision`` (the proxy must resync) and
    ``CodecError`` for a malformed op. Deleting a missing resource is a no-op, because a composed
    delta can contain deletes of resources created and deleted after its base.
    """
    if delta.base != state.revision:
        raise DeltaBaseMismatch(f"delta base {delta.base} does not match state revision {state.revision}")
    if delta.revision <= delta.base:
        raise CodecError(f"delta revision {delta.revision} must be greater than its base {delta.base}")
    changes: dict[str, dict[str, Resource | None]] = {}
    for op in delta.ops:
        action, kind, id, data = _check_op(op)
        if action == "put":
            resource = resource_from_dict(kind, id, data)
            if resource.mod_revision > delta.revision:
                raise CodecError("resource mod_revision is newer than the delta", f"{kind}[{id}]")
            changes.setdefault(kind, {})[id] = resource
        else:
            changes.setdefault(kind, {})[id] = None
    return state._with_changes(delta.revision, changes)


def compose(deltas: Sequence[Delta]) -> Delta:
    """Merge contiguous deltas into one from the first base to the last revision.

    The last op per (kind, id) wins; an entry keeps the position of its first appearance, so the
    result is deterministic. Raises ``DeltaBaseMismatch`` if the deltas are not contiguous and
    ``ValueError`` for an empty sequence.
    """
    if not deltas:
        raise ValueError("compose() needs at least one delta")
    merged: dict[tuple[str, str], DeltaOp] = {}
    previous: Delta | None = None
    for delta in deltas:
        if previous is not None and delta.base != previous.revision:
            raise DeltaBaseMismatch(
                f"deltas are not contiguous: {previous.base}->{previous.revision} then {delta.base}->{delta.revision}"
            )
        for op in delta.ops:
            merged[(op[1], op[2])] = op
        previous = delta
    return Delta(deltas[0].base, deltas[-1].revision, tuple(merged.values()))
