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
from .model import ACTIONS, KINDS, Resource, resource_from_dict
from .packing import array_header, canonical, pack

if TYPE_CHECKING:
    from .state import ConfigState

__all__ = ["Delta", "DeltaOp", "apply_delta", "compose", "config_hash", "resource_bytes"]

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


def config_hash(resources: Iterable[Resource]) -> str:
    """sha256 hex of the msgpack array of the resources' hash entries, sorted by (kind, id).

    Equal to ``sha256(pack([[kind, id, canonical(spec), created, mod], ...]))`` for the sorted list;
    it is fed incrementally from ``resource_bytes`` so cached encodings are reused.
    """
    ordered = sorted(resources, key=lambda r: (r.kind, r.id))
    digest = hashlib.sha256(array_header(len(ordered)))
    for resource in ordered:
        digest.update(resource_bytes(resource))
    return digest.hexdigest()


def _check_op(op: Any) -> tuple[str, str, str, Any]:
    if not isinstance(op, tuple | list) or len(op) != 4:
        raise CodecError("delta op must be [action, kind, id, resource|null]")
    action, kind, id, data = op
    if action not in ACTIONS:
        raise CodecError(f"delta op action must be put or delete, not {action!r}")
    if kind not in KINDS:
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
