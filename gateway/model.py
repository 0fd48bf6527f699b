"""The data model: resource kinds, ids, and the frozen dataclasses Resource, Op and Txn.

These are plain values shared by the control plane and the data plane. They hold no behaviour
beyond construction-time hygiene: a ``Resource`` stores its spec deeply frozen (see
``gateway.frozen``) so that states and deltas can share it without defensive copies later, and
``Op``/``Txn`` freeze what they are given so a transaction cannot change after it was proposed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .errors import CodecError, NotFound, ValidationError
from .frozen import freeze, thaw

__all__ = [
    "ACTIONS",
    "ID_PATTERN",
    "KINDS",
    "STORED_KINDS",
    "MAX_SPEC_DEPTH",
    "Op",
    "Resource",
    "Txn",
    "check_id",
    "check_kind",
    "is_valid_id",
    "resource_from_dict",
]

KINDS: tuple[str, ...] = ("upstreams", "routes", "consumers", "plugins")
STORED_KINDS: tuple[str, ...] = (*KINDS, "registrations")
"""What a ``ConfigState`` holds: the config kinds plus service registrations (gateway/registry.py),
which only registry commands write (a txn, the CRUD API and ``gwadm apply`` see ``KINDS`` only)."""
ACTIONS: tuple[str, ...] = ("put", "delete")

MAX_SPEC_DEPTH = 32
"""Validated specs nest at most ~5 levels; deeper trusted input is corrupt (and would recurse)."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# fullmatch, not match: with ``match`` the ``$`` would accept a trailing newline ("r1\n").
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    """True if ``value`` is a string that is a valid resource id."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_id(value: object, kind: str | None = None) -> str:
    """Return ``value`` if it is a valid id, else raise ``ValidationError`` (path ``kind[id]``)."""
    if isinstance(value, str) and _ID_RE.fullmatch(value) is not None:
        return value
    shown = repr(value) if not isinstance(value, str) else repr(value[:80])
    path = f"{kind}[{value[:80]}]" if kind is not None and isinstance(value, str) else kind
    raise ValidationError(
        f"invalid id {shown}: 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        path,
    )


def check_kind(kind: object) -> str:
    """Return ``kind`` if it is one of ``KINDS``, else raise ``NotFound`` (an unknown kind is a 404)."""
    if isinstance(kind, str) and kind in KINDS:
        return kind
    raise NotFound(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")


def check_stored_kind(kind: object) -> str:
    """Like ``check_kind``, also accepting the kinds only registry commands write."""
    if isinstance(kind, str) and kind in STORED_KINDS:
        return kind
    return check_kind(kind)


@dataclass(frozen=True)
class Resource:
    """One stored resource: its normalized spec plus the revisions that created and last changed it.

    ``spec`` is deeply frozen on construction (a copy is taken unless it is already frozen), so a
    ``Resource`` can be shared by any number of states and deltas.
    """

    kind: str
    id: str
    spec: Mapping[str, Any]
    created_revision: int
    mod_revision: int

    # Lazily computed msgpack encoding and its digest used by the config hash; not dataclass fields.
    _packed: ClassVar[bytes | None] = None
    _digest: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", freeze(self.spec))

    def to_json(self) -> dict[str, Any]:
        """The API form: a plain, mutable ``{**spec, "id", "created_revision", "mod_revision"}``."""
        out: dict[str, Any] = thaw(self.to_api())
        return out

    def to_api(self) -> dict[str, Any]:
        """``to_json``'s map without the deep copy: its nested values are the stored, frozen ones
        (for a value that is only encoded, never changed)."""
        return {**self.spec, "id": self.id, "created_revision": self.created_revision,
                "mod_revision": self.mod_revision}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The snapshot/delta form ``{"spec", "created_revision", "mod_revision"}`` (spec shared, frozen)."""
        return {
            "spec": self.spec,
            "created_revision": self.created_revision,
            "mod_revision": self.mod_revision,
        }


def resource_from_dict(kind: str, id: str, data: object) -> Resource:
    """Build a ``Resource`` from its snapshot/delta form, raising ``CodecError`` on a bad shape.

    Used for bytes that came from another process (snapshots, deltas), so the shape is checked but
    the spec is trusted: it was validated by the node that committed it.
    """
    where = f"{kind}[{id}]"
    if kind not in STORED_KINDS:
        raise CodecError(f"unknown kind {kind!r}", where)
    if not is_valid_id(id):
        raise CodecError(f"invalid id {id!r}", kind)
    if not isinstance(data, Mapping):
        raise CodecError("resource must be a map with spec, created_revision, mod_revision", where)
    spec = data.get("spec")
    if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
        raise CodecError("spec must be a map with string keys", f"{where}.spec")
    if _too_deep(spec, MAX_SPEC_DEPTH):
        raise CodecError(f"spec is nested more than {MAX_SPEC_DEPTH} levels deep", f"{where}.spec")
    created = _revision_field(data, "created_revision", where)
    mod = _revision_field(data, "mod_revision", where)
    if created > mod:
        raise CodecError("created_revision must not exceed mod_revision", where)
    return Resource(kind, id, spec, created, mod)


def _too_deep(value: object, limit: int) -> bool:
    """Iteratively (no recursion on untrusted data) check whether containers nest beyond ``limit``."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _revision_field(data: Mapping[str, Any], name: str, where: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CodecError(f"{name} must be an integer >= 1", f"{where}.{name}")
    return value


@dataclass(frozen=True)
class Op:
    """One operation of a transaction. ``body`` is the raw request body; it is validated in ``apply``.

    ``expect_mod_revision`` is a per-resource compare-and-swap: the resource's current
    ``mod_revision`` must equal it, and ``0`` means "must not exist yet".
    """

    action: Literal["put", "delete"]
    kind: str
    id: str
    body: Mapping[str, Any] | None = None
    expect_mod_revision: int | None = None

    def __post_init__(self) -> None:
        if self.body is not None:
            object.__setattr__(self, "body", freeze(self.body))


@dataclass(frozen=True)
class Txn:
    """An atomic list of ops. ``request_id`` is the dedupe key; ``expect_revision`` a global CAS."""

    request_id: str
    ops: tuple[Op, ...]
    expect_revision: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ops, tuple):
            object.__setattr__(self, "ops", tuple(self.ops))
