"""Credentials in exported files: hidden by default, restored from the cluster on apply.

`gwadm export` writes ``<sensitive>`` (``cli.plan.REDACTED``) in place of every key-auth key and
HS256 secret unless ``--show-secrets``. `gwadm apply`/`diff` of such a file take each hidden value
from the cluster's current config at the same place (same consumer, same credential index), so
``export`` then ``apply -f`` still changes nothing; a hidden value with no counterpart in the cluster
(a new consumer, a credential added at a new index) is an error naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

from cli.plan import REDACTED, SENSITIVE, Specs, redact
from gateway.errors import ValidationError


def redact_specs(specs: Specs) -> Specs:
    """A copy of ``specs`` with every credential leaf replaced by ``REDACTED``."""
    return {kind: {rid: redact(kind, "", spec) for rid, spec in items.items()} for kind, items in specs.items()}


def has_redacted(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(has_redacted(v) for v in value)
    return bool(value == REDACTED)


def _restore(value: Any, current: Any, path: str, where: str) -> Any:
    if isinstance(value, dict):
        cur = current if isinstance(current, dict) else {}
        return {k: _restore(v, cur.get(k), f"{path}.{k}" if path else str(k), where) for k, v in value.items()}
    if isinstance(value, list):
        cur_list = current if isinstance(current, list) else []
        return [_restore(v, cur_list[i] if i < len(cur_list) else None, f"{path}[{i}]", where)
                for i, v in enumerate(value)]
    if value == REDACTED and SENSITIVE.match(path):
        if not isinstance(current, str):
            raise ValidationError(
                f"is {REDACTED} (exported without --show-secrets) and the cluster has no value here to keep: "
                "write the credential into the file", f"{where}.{path}")
        return current
    return value


def restore_redacted(bodies: Specs, current: Specs | None) -> Specs:
    """``bodies`` with each hidden credential taken from ``current`` (the cluster's specs)."""
    out = copy.deepcopy(bodies)
    for rid, body in bodies.get("consumers", {}).items():
        if has_redacted(body):
            cur = (current or {}).get("consumers", {}).get(rid)
            out["consumers"][rid] = _restore(body, cur, "", f"consumers[{rid}]")
    return out
