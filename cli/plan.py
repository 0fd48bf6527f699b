"""Desired config vs current config -> a plan of puts and deletes with field-level diffs. Pure.

``gwadm apply``, ``gwadm diff`` and ``gwadm snapshot restore`` share this module so that what is
shown is exactly what is sent. Comparisons are between NORMALIZED specs: the server stores what
``gateway.validate.validate_spec`` returns (defaults filled, hosts lower-cased, ...), so the desired
side goes through the same function; an exported file therefore plans to nothing.

Shapes: ``Specs`` is ``{kind: {id: spec}}`` with every kind present. The file (and export) shape
is the same mapping, ids to bodies; read-only fields (``id``, revisions) are accepted and dropped.
Every input error is a ``gateway.errors`` exception with a validation path (``routes[r1].paths[0]``)
so that the caller can point at the line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import ReferenceViolation, ValidationError
from gateway.model import KINDS, check_id
from gateway.validate import READ_ONLY_FIELDS, validate_spec

Specs = dict[str, dict[str, dict[str, Any]]]

PUT_ORDER = ("upstreams", "consumers", "plugins", "routes")
"""Creates/updates: what is referred to before what refers to it (readable; the server checks
references only at the end of the transaction, so correctness does not depend on it)."""
DELETE_ORDER = ("routes", "plugins", "consumers", "upstreams")
"""Deletes after all puts, users before what they use: route deletes precede upstream deletes."""

SENSITIVE = re.compile(r"^credentials\.(?:key-auth\[\d+\]\.key|jwt-auth\[\d+\]\.secret)$")
"""Consumer fields that are credentials: shown as ``<sensitive>`` unless asked otherwise."""
REDACTED = "<sensitive>"


def empty_specs() -> Specs:
    return {kind: {} for kind in KINDS}


# -- input ----------------------------------------------------------------------------------------
def bodies_from_data(data: Any) -> Specs:
    """Check the document's structure: ``{kind: {id: body}}``. Bodies are not validated yet."""
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"the top level must be a mapping of kinds ({', '.join(KINDS)}) to resources, "
            f"not a {type(data).__name__}",
            None,
        )
    out = empty_specs()
    for raw_kind, resources in data.items():
        kind = str(raw_kind)
        if kind not in KINDS:
            hint = f"; did you mean {kind}s?" if f"{kind}s" in KINDS else ""
            raise ValidationError(f"unknown kind (expected one of: {', '.join(KINDS)}){hint}", kind)
        if resources is None:
            continue  # `consumers:` with nothing under it: none
        if not isinstance(resources, Mapping):
            raise ValidationError(f"must map ids to resources, not a {type(resources).__name__}", kind)
        for raw_id, body in resources.items():
            rid = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else raw_id
            check_id(rid, kind)
            if not isinstance(body, Mapping):
                raise ValidationError(
                    f"must be a mapping of fields, not a {type(body).__name__}", f"{kind}[{rid}]"
                )
            out[kind][rid] = dict(body)
    return out


def normalize(bodies: Specs) -> Specs:
    """Every body through ``validate_spec``: raises its ``ValidationError`` (path included)."""
    return {
        kind: {rid: validate_spec(kind, rid, body) for rid, body in bodies[kind].items()} for kind in KINDS
    }


def current_from_config(config: Mapping[str, Any]) -> tuple[int, Specs]:
    """``GET /v1/config`` -> ``(revision, specs)``; read-only fields stripped."""
    specs = empty_specs()
    for kind, items in (config.get("resources") or {}).items():
        if kind not in specs:
            continue  # a newer server's kind this client does not manage
        for item in items:
            specs[kind][str(item["id"])] = {k: v for k, v in item.items() if k not in READ_ONLY_FIELDS}
    return int(config["revision"]), specs


def check_references(desired: Specs, kept_upstreams: Iterable[str] = ()) -> None:
    """Every desired route's upstream is desired too (or, with ``--partial``, kept from the cluster)."""
    upstreams = set(desired["upstreams"]) | set(kept_upstreams)
    for rid in sorted(desired["routes"]):
        target = desired["routes"][rid].get("upstream")
        if target not in upstreams:
            raise ReferenceViolation(f"upstream {target!r} does not exist", f"routes[{rid}].upstream")


def check_unique_keys(desired: Specs, kept_consumers: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """A key-auth key or jwt-auth key names one consumer (the server checks too; this gives a line)."""
    consumers = {**(kept_consumers or {}), **desired["consumers"]}
    for credential in ("key-auth", "jwt-auth"):
        owner: dict[str, str] = {}
        for cid in sorted(consumers, key=lambda c: (c in desired["consumers"], c)):  # kept ones first
            for index, cred in enumerate((consumers[cid].get("credentials") or {}).get(credential) or ()):
                key = cred.get("key")
                if key in owner and owner[key] != cid:
                    path = f"consumers[{cid}].credentials.{credential}[{index}].key"
                    raise ValidationError(f"key is already used by consumer {owner[key]!r}", path)
                owner.setdefault(key, cid)


# -- diffs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldChange:
    """One field of a resource: ``added`` / ``removed`` / ``changed``, path relative to the spec."""

    action: Literal["added", "removed", "changed"]
    path: str
    old: Any = None
    new: Any = None


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)  # True == 1 is not "same"


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, dict | list) for v in value)


def diff_values(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences. Mappings recurse by key; lists of objects by index; lists of
    scalars (paths, methods) are shown whole, since an insertion would read as N index changes."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in [*new, *(k for k in old if k not in new)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(FieldChange("added", sub, None, new[key]))
            elif key not in new:
                out.append(FieldChange("removed", sub, old[key], None))
            else:
                out.extend(diff_values(old[key], new[key], sub))
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and not (_is_scalar_list(old) and _is_scalar_list(new))
    ):
        out = []
        for index in range(max(len(old), len(new))):
            sub = f"{path}[{index}]"
            if index >= len(old):
                out.append(FieldChange("added", sub, None, new[index]))
            elif index >= len(new):
                out.append(FieldChange("removed", sub, old[index], None))
            else:
                out.extend(diff_values(old[index], new[index], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        return (
            []
            if len(old) == len(new) and all(map(_same, old, new))
            else [FieldChange("changed", path, old, new)]
        )
    return [] if _same(old, new) else [FieldChange("changed", path, old, new)]


def redact(kind: str, path: str, value: Any) -> Any:
    """``value`` (found at ``path`` inside a ``kind`` spec) with credential leaves replaced."""
    if kind != "consumers":
        return value
    if isinstance(value, dict):
        return {k: redact(kind, f"{path}.{k}" if path else str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(kind, f"{path}[{i}]", v) for i, v in enumerate(value)]
    return REDACTED if value is not None and SENSITIVE.match(path) else value


# -- plans ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One resource to create, update or delete; ``spec`` is the normalized desired spec."""

    action: Literal["create", "update", "delete"]
    kind: str
    id: str
    spec: dict[str, Any] | None = None
    fields: tuple[FieldChange, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.id}"

    def op(self) -> dict[str, Any]:
        """The ``POST /v1/txn`` op."""
        if self.action == "delete":
            return {"op": "delete", "kind": self.kind, "id": self.id}
        return {"op": "put", "kind": self.kind, "id": self.id, "body": self.spec}

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        def shown(path: str, value: Any) -> Any:
            return value if show_secrets else redact(self.kind, path, value)

        out: dict[str, Any] = {"action": self.action, "kind": self.kind, "id": self.id}
        if self.action == "create":
            out["spec"] = shown("", self.spec)
        if self.action == "update":
            out["fields"] = [
                {"action": f.action, "path": f.path, "old": shown(f.path, f.old), "new": shown(f.path, f.new)}
                for f in self.fields
            ]
        return out


@dataclass(frozen=True)
class Plan:
    """The changes from the config at ``revision`` to the desired one, in transaction order."""

    revision: int
    changes: tuple[Change, ...] = ()
    partial: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {a: sum(1 for c in self.changes if c.action == a) for a in ("create", "update", "delete")}

    @property
    def empty(self) -> bool:
        return not self.changes

    def ops(self) -> list[dict[str, Any]]:
        return [change.op() for change in self.changes]

    def summary(self) -> str:
        if self.empty:
            return f"no changes (revision {self.revision})"
        c = self.counts
        return f"{c['create']} to create, {c['update']} to update, {c['delete']} to delete"

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "partial": self.partial,
            "summary": dict(self.counts),
            "changes": [c.to_json(show_secrets) for c in self.changes],
        }


def make_plan(desired: Specs, current: Specs, revision: int, *, partial: bool = False) -> Plan:
    """What turns ``current`` into ``desired`` (with ``partial``: into current + desired, no deletes)."""
    changes: list[Change] = []
    for kind in PUT_ORDER:
        for rid in sorted(desired[kind]):
            spec, old = desired[kind][rid], current[kind].get(rid)
            if old is None:
                changes.append(Change("create", kind, rid, spec))
            else:
                fields = diff_values(old, spec)
                if fields:
                    changes.append(Change("update", kind, rid, spec, tuple(fields)))
    if not partial:
        for kind in DELETE_ORDER:
            changes.extend(
                Change("delete", kind, rid) for rid in sorted(current[kind]) if rid not in desired[kind]
            )
    return Plan(revision, tuple(changes), partial)


def export_shape(specs: Specs) -> dict[str, dict[str, dict[str, Any]]]:
    """The apply-file shape in a stable order: kinds as in ``KINDS``, ids sorted, fields as stored."""
    return {kind: {rid: specs[kind][rid] for rid in sorted(specs[kind])} for kind in KINDS}
