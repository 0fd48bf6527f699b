"""ConfigState: the replicated configuration as an immutable value with a deterministic ``apply``.

Every control-plane node runs ``apply`` on the same transactions in the same (Raft) order and must
reach the same state, so ``apply`` depends on nothing but the state and the transaction: no
clocks, no randomness, no iteration-order accidents in its errors. It applies all ops or none:
the new state is built on the side and only returned when every check has passed, so a rejected
transaction leaves the state (and its revision) exactly as it was.

States share structure: ``apply`` copies only the per-kind dicts it touches (one dict copy for a
one-route change, however many routes exist) and shares every untouched ``Resource``, whose specs
are deeply frozen. The hash is computed lazily and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from immutables import Map

from .delta import Delta, DeltaOp, digest_sum, hash_from_sum, updated_sum
from .errors import CodecError, Conflict, InUse, NotFound, ReferenceViolation, ValidationError
from .model import (
    STORED_KINDS,
    Op,
    Resource,
    Txn,
    check_id,
    check_kind,
    check_stored_kind,
    resource_from_dict,
)
from .validate import validate_spec

__all__ = ["ConfigState"]

# Each kind's table is a persistent map (a HAMT, ``immutables.Map``): a successor state shares all
# but the path to what changed, so a one-route write on a 10,000-route config costs O(log n), not a
# copy of the table (a dict copy of 10,000 entries was ~85 us, 6x the rest of the apply), on every
# member of the cluster and on every proxy applying the delta.
_Table = Map[str, Resource]
_Kinds = dict[str, _Table]
_EMPTY: _Table = Map()


class ConfigState:
    """Resources by kind and id plus a global ``revision`` (+1 per applied transaction).

    Build one with ``empty()`` or ``from_snapshot()``; derive new ones with ``apply`` or
    ``gateway.delta.apply_delta``. Instances are never mutated.
    """

    __slots__ = ("_revision", "_kinds", "_hash", "_sum")

    def __init__(self, revision: int, kinds: _Kinds, digest: int | None = None) -> None:
        """Internal: takes ownership of ``kinds`` (which must have every kind) without copying.

        ``digest`` is the resources' digest sum when the caller derived it incrementally.
        """
        self._revision = revision
        self._kinds = kinds
        self._hash: str | None = None
        self._sum: int | None = digest

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> ConfigState:
        """The state before the first transaction: revision 0, no resources."""
        return cls(0, {kind: _EMPTY for kind in STORED_KINDS})

    @classmethod
    def from_snapshot(cls, data: Any) -> ConfigState:
        """Rebuild a state from ``to_snapshot()`` output; ``CodecError`` if the shape is wrong.

        Specs are trusted (they were validated when committed); structure and revisions are checked.
        """
        if not isinstance(data, Mapping):
            raise CodecError("snapshot must be a map with revision and resources")
        revision = data.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise CodecError("snapshot revision must be an integer >= 0", "revision")
        resources = data.get("resources", {})
        if not isinstance(resources, Mapping):
            raise CodecError("snapshot resources must be a map of kind -> {id: resource}", "resources")
        tables: dict[str, dict[str, Resource]] = {kind: {} for kind in STORED_KINDS}
        for kind, items in resources.items():
            if kind not in STORED_KINDS:
                raise CodecError(f"unknown kind {kind!r} in snapshot", "resources")
            if not isinstance(items, Mapping):
                raise CodecError("must be a map of id -> resource", f"resources.{kind}")
            for id, item in items.items():
                resource = resource_from_dict(kind, id, item)
                if resource.mod_revision > revision:
                    raise CodecError(f"mod_revision is newer than the snapshot revision {revision}", f"{kind}[{id}]")
                tables[kind][id] = resource
        return cls(revision, {kind: Map(items) for kind, items in tables.items()})

    # --- reading -------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the last applied transaction (0 for the empty state)."""
        return self._revision

    def get(self, kind: str, id: str) -> Resource | None:
        """The resource, or ``None``; ``NotFound`` if ``kind`` itself is unknown."""
        return self._kinds[check_stored_kind(kind)].get(id)

    def list(self, kind: str) -> list[Resource]:
        """All resources of ``kind``, sorted by id; ``NotFound`` if ``kind`` is unknown."""
        items = self._kinds[check_stored_kind(kind)]
        return [items[id] for id in sorted(items)]

    def count(self, kind: str) -> int:
        """How many resources of ``kind`` exist."""
        return len(self._kinds[check_stored_kind(kind)])

    def resources(self) -> Iterator[Resource]:
        """Every resource, in ``STORED_KINDS`` order and by id within a kind."""
        for kind in STORED_KINDS:
            yield from self.list(kind)

    def resources_unordered(self) -> Iterator[Resource]:
        """Every resource in storage order: for encodings that need no order (cheaper than sorting)."""
        for items in self._kinds.values():
            yield from items.values()

    def hash(self) -> str:
        """sha256 hex of the canonical encoding of all resources (not the revision); cached."""
        if self._hash is None:
            self._hash = hash_from_sum(self._digest_sum())
        return self._hash

    def _digest_sum(self) -> int:
        if self._sum is None:
            self._sum = digest_sum(r for items in self._kinds.values() for r in items.values())
        return self._sum

    def _derived_sum(self, kinds: _Kinds, touched: Iterable[tuple[str, str]]) -> int | None:
        """The digest sum of a successor holding ``kinds``, if ours is known (O(touched))."""
        if self._sum is None:
            return None
        removed = [r for k, i in touched if (r := self._kinds[k].get(i)) is not None]
        added = [r for k, i in touched if (r := kinds[k].get(i)) is not None]
        return updated_sum(self._sum, removed, added)

    def to_snapshot(self) -> dict[str, Any]:
        """``{"revision", "resources": {kind: {id: {"spec", "created_revision", "mod_revision"}}}}``.

        Ids are in sorted order so that the encoding is deterministic. Specs are the stored frozen
        mappings (shared, read-only); ``gateway.frozen.thaw`` gives a mutable copy.
        """
        return {
            "revision": self._revision,
            "resources": {
                kind: {id: items[id].to_dict() for id in sorted(items)}
                for kind, items in self._kinds.items()
                if items or kind != "registrations"  # absent while empty: the v1 snapshot shape
            },
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigState):
            return NotImplemented
        return self._revision == other._revision and self._kinds == other._kinds

    __hash__ = None  # type: ignore[assignment]  # use .hash() for the content hash

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(items)}" for kind, items in self._kinds.items())
        return f"ConfigState(revision={self._revision}, {counts})"

    # --- writing -------------------------------------------------------------------------------

    def apply(self, txn: Txn) -> tuple[ConfigState, Delta]:
        """Apply ``txn`` atomically and return the new state and the delta from this one.

        Raises (leaving this state untouched): ``ValidationError`` (no ops, bad body, duplicate
        key-auth key), ``NotFound`` (unknown kind, delete of a missing id), ``Conflict`` (CAS on
        ``expect_revision`` or ``expect_mod_revision``), ``ReferenceViolation`` (route -> missing
        upstream) and ``InUse`` (deleting an upstream that routes still use).
        """
        if not txn.ops:
            raise ValidationError("a transaction needs at least one op", "ops")
        if txn.expect_revision is not None and txn.expect_revision != self._revision:
            raise Conflict(f"expected revision {txn.expect_revision}, but the config is at revision {self._revision}")
        revision = self._revision + 1
        work = _Working(self._kinds)
        for index, op in enumerate(txn.ops):
            self._apply_op(work, op, index, revision)
        self._check_references(work)
        self._check_key_auth(work)
        self._drop_orphan_registrations(work)
        ops: list[DeltaOp] = []
        for kind, id in work.touched:
            after = work.kinds[kind].get(id)
            if after is not None:
                ops.append(Delta.put(after))
            elif id in self._kinds[kind]:
                ops.append(Delta.delete(kind, id))
            # created and deleted within this transaction: no net change
        digest = self._derived_sum(work.kinds, work.touched)
        return ConfigState(revision, work.kinds, digest), Delta(self._revision, revision, tuple(ops))

    def with_changes(self, changes: Mapping[str, Mapping[str, Resource | None]]) -> tuple[ConfigState, Delta]:
        """A successor at ``revision + 1`` with ``changes`` (``None`` = delete) and its delta.

        For gateway/registry.py, which validates its commands itself; ``changes`` must be non-empty
        and its resources must carry the new revision as mod_revision.
        """
        revision = self._revision + 1
        ops: list[DeltaOp] = []
        for kind, items in changes.items():
            for id, resource in items.items():
                if resource is not None:
                    ops.append(Delta.put(resource))
                elif id in self._kinds[kind]:
                    ops.append(Delta.delete(kind, id))
        return self._with_changes(revision, changes), Delta(self._revision, revision, tuple(ops))

    def _with_changes(self, revision: int, changes: Mapping[str, Mapping[str, Resource | None]]) -> ConfigState:
        """Internal (used by ``apply_delta``): a new state with ``changes`` (``None`` = delete)."""
        kinds = dict(self._kinds)
        for kind, items in changes.items():
            table = kinds[kind]
            for id, resource in items.items():
                if resource is not None:
                    table = table.set(id, resource)
                elif id in table:
                    table = table.delete(id)
            kinds[kind] = table
        touched = [(kind, id) for kind, items in changes.items() for id in items]
        return ConfigState(revision, kinds, self._derived_sum(kinds, touched))

    @staticmethod
    def _apply_op(work: _Working, op: Op, index: int, revision: int) -> None:
        kind = check_kind(op.kind)
        id = check_id(op.id, kind)
        where = f"{kind}[{id}]"
        current = work.kinds[kind].get(id)
        if op.action == "put":
            _check_cas(op, current, where)
            if op.body is None:
                raise ValidationError("a put needs a body", where)
            spec = validate_spec(kind, id, op.body)
            created = current.created_revision if current is not None else revision
            work.set(kind, id, Resource(kind, id, spec, created, revision))
        elif op.action == "delete":
            if current is None:
                raise NotFound(f"{kind} {id!r} does not exist", where)
            _check_cas(op, current, where)
            work.set(kind, id, None)
        else:
            raise ValidationError(f"action must be put or delete, not {op.action!r}", f"ops[{index}].action")

    @staticmethod
    def _check_references(work: _Working) -> None:
        upstreams = work.kinds["upstreams"]
        routes = work.kinds["routes"]
        deleted_upstreams: set[str] = set()
        for kind, id in work.touched:
            if kind == "routes" and id in routes:
                target = routes[id].spec.get("upstream")
                if target not in upstreams:
                    raise ReferenceViolation(f"upstream {target!r} does not exist", f"routes[{id}].upstream")
            elif kind == "upstreams" and id not in upstreams:
                deleted_upstreams.add(id)
        if not deleted_upstreams:
            return
        users: dict[str, list[str]] = {}
        for route_id, route in routes.items():
            target = route.spec.get("upstream")
            if target in deleted_upstreams:
                users.setdefault(str(target), []).append(route_id)
        for kind, id in work.touched:  # report in op order, deterministically
            if kind == "upstreams" and id in users:
                names = sorted(users[id])
                shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                raise InUse(f"upstream {id!r} is still used by routes: {shown}", f"upstreams[{id}]")

    @staticmethod
    def _drop_orphan_registrations(work: _Working) -> None:
        """Deleting an upstream deregisters its registered targets in the same revision."""
        upstreams = work.kinds["upstreams"]
        deleted = {id for kind, id in work.touched if kind == "upstreams" and id not in upstreams}
        if not deleted:
            return
        orphans = [rid for rid, reg in work.kinds["registrations"].items() if reg.spec.get("upstream") in deleted]
        for rid in sorted(orphans):
            work.set("registrations", rid, None)

    @staticmethod
    def _check_key_auth(work: _Working) -> None:
        """A key-auth key or a jwt-auth key (issuer/kid) identifies exactly one consumer."""
        for credential in ("key-auth", "jwt-auth"):
            ConfigState._check_unique_keys(work, credential)

    @staticmethod
    def _check_unique_keys(work: _Working, credential: str) -> None:
        consumers = work.kinds["consumers"]
        touched = [id for kind, id in work.touched if kind == "consumers" and id in consumers]
        if not touched:
            return
        claims: dict[str, tuple[str, int]] = {}  # key -> (consumer id, index) of touched consumers
        for consumer_id in touched:
            for index, key in enumerate(_credential_keys(consumers[consumer_id], credential)):
                owner = claims.get(key)
                if owner is not None and owner[0] != consumer_id:
                    raise ValidationError(
                        f"key is already used by consumer {owner[0]!r}", _key_path(consumer_id, credential, index)
                    )
                claims.setdefault(key, (consumer_id, index))
        clashes: dict[tuple[str, int], str] = {}
        touched_set = set(touched)
        for other_id, consumer in consumers.items():
            if other_id in touched_set:
                continue
            for key in _credential_keys(consumer, credential):
                if key in claims:
                    clashes[claims[key]] = other_id
        if clashes:
            first = min(clashes, key=lambda claim: (touched.index(claim[0]), claim[1]))
            raise ValidationError(
                f"key is already used by consumer {clashes[first]!r}", _key_path(first[0], credential, first[1])
            )


def _check_cas(op: Op, current: Resource | None, where: str) -> None:
    expected = op.expect_mod_revision
    if expected is None:
        return
    if expected == 0:
        if current is not None:
            raise Conflict(f"already exists (mod_revision {current.mod_revision}); expected it not to exist", where)
        return
    if current is None:
        raise Conflict(f"does not exist; expected mod_revision {expected}", where)
    if current.mod_revision != expected:
        raise Conflict(f"mod_revision is {current.mod_revision}, expected {expected}", where)


def _credential_keys(consumer: Resource, credential: str) -> list[str]:
    credentials = consumer.spec.get("credentials") or {}
    return [cred.get("key") for cred in credentials.get(credential) or ()]


def _key_path(consumer_id: str, credential: str, index: int) -> str:
    return f"consumers[{consumer_id}].credentials.{credential}[{index}].key"


class _Working:
    """The kinds being built by one ``apply`` (each write derives a new persistent table)."""

    __slots__ = ("kinds", "touched")

    def __init__(self, base: _Kinds) -> None:
        self.kinds: _Kinds = dict(base)
        self.touched: dict[tuple[str, str], None] = {}  # ordered set, in order of first touch

    def set(self, kind: str, id: str, resource: Resource | None) -> None:
        table = self.kinds[kind]
        self.kinds[kind] = table.delete(id) if resource is None else table.set(id, resource)
        self.touched.setdefault((kind, id), None)
