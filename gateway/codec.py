"""Bytes on the wire and on disk: msgpack encodings of transactions, deltas and snapshots.

Everything that crosses a process boundary -- the Raft log (transactions), the push protocol
(snapshot payloads; the frames themselves are in ``gateway.protocol``) and the proxy's cache
(snapshots) -- is encoded here, with msgpack only, never pickle.
Decoding treats its input as untrusted: whatever the bytes are, the decoders either return a value
of the documented shape or raise ``CodecError`` with a clear message; no other exception escapes.

Unknown extra keys in maps are ignored, so a later protocol revision can add optional fields
without breaking v1 peers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .delta import Delta, DeltaOp, resource_bytes
from .errors import CodecError, GatewayError
from .model import ACTIONS, STORED_KINDS, Op, Txn
from .packing import array_header, pack, unpack, unpack_frozen
from .state import ConfigState

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "PROTOCOL_VERSION",
    "decode",
    "decode_delta",
    "decode_packed_state",
    "decode_snapshot",
    "decode_txn",
    "encode",
    "encode_delta",
    "encode_packed_state",
    "encode_snapshot",
    "encode_txn",
]

PROTOCOL_VERSION = 1
MAX_SNAPSHOT_BYTES = 1 << 30
"""Upper bound for a decompressed snapshot, so a corrupt or hostile blob cannot exhaust memory."""

_T = TypeVar("_T")


def _guard(what: str, fn: Callable[[], _T]) -> _T:
    """Run a decoder; anything but a ``CodecError`` from it becomes one (untrusted input)."""
    try:
        return fn()
    except CodecError:
        raise
    except GatewayError as exc:
        raise CodecError(f"invalid {what}: {exc.message}", exc.path) from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes may trigger anything in a decoder
        raise CodecError(f"invalid {what}: {type(exc).__name__}: {exc}") from None


# --- raw msgpack -------------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    """msgpack-encode ``obj``; ``CodecError`` if it contains something msgpack cannot encode."""
    try:
        return pack(obj)
    except Exception as exc:  # noqa: BLE001 - TypeError, ValueError, OverflowError, ...
        raise CodecError(f"cannot encode: {type(exc).__name__}: {exc}") from None


def decode(data: bytes | bytearray | memoryview, *, frozen: bool = False) -> Any:
    """Decode exactly one msgpack object; ``CodecError`` on anything that is not one. ``frozen``:
    maps and arrays come out read-only (``gateway.packing.unpack_frozen``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    raw = data if type(data) is bytes else bytes(data)
    return _guard("msgpack data", lambda: (unpack_frozen if frozen else unpack)(raw))


# --- field checks ------------------------------------------------------------------------------


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict) and not isinstance(value, Mapping):  # dict first: the ABC check is slow
        raise CodecError(f"{what} must be a map")
    return value


def _int(value: Any, field: str, *, minimum: int | None = 0, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"field {field!r} must be an integer")
    if minimum is not None and value < minimum:
        raise CodecError(f"field {field!r} must be >= {minimum}")
    return value


def _str(value: Any, field: str, *, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise CodecError(f"field {field!r} must be a string")
    return value


def _require(data: Mapping[str, Any], field: str, what: str) -> Any:
    if field not in data:
        raise CodecError(f"{what} is missing required field {field!r}")
    return data[field]


# --- transactions ------------------------------------------------------------------------------


def encode_txn(txn: Txn) -> bytes:
    """``{"request_id", "expect_revision", "ops": [{"action","kind","id","body","expect_mod_revision"}]}``."""
    return encode(
        {
            "request_id": txn.request_id,
            "expect_revision": txn.expect_revision,
            "ops": [
                {
                    "action": op.action,
                    "kind": op.kind,
                    "id": op.id,
                    "body": op.body,
                    "expect_mod_revision": op.expect_mod_revision,
                }
                for op in txn.ops
            ],
        }
    )


def _op_from(value: Any, index: int) -> Op:
    what = f"txn op {index}"
    op = _map(value, what)
    action = _require(op, "action", what)
    if action not in ACTIONS:
        raise CodecError(f"{what}: action must be put or delete")
    body = op.get("body")
    if body is not None and not isinstance(body, dict) and not isinstance(body, Mapping):
        raise CodecError(f"{what}: body must be a map or null")
    return Op(
        action=action,
        kind=_str(_require(op, "kind", what), "kind"),
        id=_str(_require(op, "id", what), "id"),
        body=body,
        expect_mod_revision=_int(op.get("expect_mod_revision"), "expect_mod_revision", nullable=True),
    )


def decode_txn(data: bytes) -> Txn:
    """Inverse of ``encode_txn``. Checks structure only; ``ConfigState.apply`` validates meaning.

    Decoded straight into frozen containers: every member decodes every written txn, and its op
    bodies are stored read-only (``Op`` freezes them; already frozen, that is a type check)."""
    decoded = decode(data, frozen=True)

    def build() -> Txn:
        obj = _map(decoded, "txn")
        ops = _require(obj, "ops", "txn")
        if not isinstance(ops, list):
            raise CodecError("txn field 'ops' must be a list")
        return Txn(
            request_id=_str(_require(obj, "request_id", "txn"), "request_id"),
            ops=tuple(_op_from(op, index) for index, op in enumerate(ops)),
            expect_revision=_int(obj.get("expect_revision"), "expect_revision", nullable=True),
        )

    return _guard("txn", build)


# --- deltas ------------------------------------------------------------------------------------


def _delta_dict(delta: Delta) -> dict[str, Any]:
    return {"base": delta.base, "revision": delta.revision, "ops": [list(op) for op in delta.ops]}


def encode_delta(delta: Delta) -> bytes:
    """``{"base", "revision", "ops": [[action, kind, id, resource|null], ...]}``."""
    return encode(_delta_dict(delta))


def _delta_ops(value: Any) -> tuple[DeltaOp, ...]:
    if not isinstance(value, (list, tuple)):
        raise CodecError("delta field 'ops' must be a list")
    ops: list[DeltaOp] = []
    for index, op in enumerate(value):
        if not isinstance(op, (list, tuple)) or len(op) != 4:
            raise CodecError(f"delta op {index} must be [action, kind, id, resource|null]")
        action, kind, id, resource = op
        if action not in ACTIONS or kind not in STORED_KINDS or not isinstance(id, str):
            raise CodecError(f"delta op {index} has a bad action, kind or id")
        if action == "put":
            res = _map(resource, f"delta op {index} resource")
            if not isinstance(res.get("spec"), Mapping):
                raise CodecError(f"delta op {index} resource needs a spec map")
            _int(res.get("created_revision"), "created_revision", minimum=1)
            _int(res.get("mod_revision"), "mod_revision", minimum=1)
        elif resource is not None:
            raise CodecError(f"delta op {index}: a delete carries no resource")
        ops.append((action, kind, id, resource))
    return tuple(ops)


def _delta_from(obj: Mapping[str, Any], what: str) -> Delta:
    base = _int(_require(obj, "base", what), "base")
    revision = _int(_require(obj, "revision", what), "revision")
    if revision <= base:
        raise CodecError(f"{what}: revision {revision} must be greater than base {base}")
    return Delta(base, revision, _delta_ops(_require(obj, "ops", what)))


def decode_delta(data: bytes) -> Delta:
    """Inverse of ``encode_delta``, with every op's shape checked."""
    return _guard("delta", lambda: _delta_from(_map(decode(data), "delta"), "delta"))


# --- snapshots ---------------------------------------------------------------------------------


def encode_snapshot(state: ConfigState) -> bytes:
    """``zlib(msgpack(state.to_snapshot()))``: the proxy cache and the snapshot frames' payload."""
    return zlib.compress(encode(state.to_snapshot()), 6)


def decode_snapshot(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> ConfigState:
    """Inverse of ``encode_snapshot``; ``CodecError`` on corrupt, oversized or ill-shaped data."""

    def build() -> ConfigState:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(bytes(data), max_bytes)
        if inflater.unconsumed_tail:
            raise CodecError(f"snapshot is larger than {max_bytes} bytes uncompressed")
        if not inflater.eof:
            raise CodecError("snapshot data is truncated")
        if inflater.unused_data:
            raise CodecError("trailing bytes after the compressed snapshot")
        return ConfigState.from_snapshot(decode(raw))

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    return _guard("snapshot", build)


def encode_packed_state(state: ConfigState) -> bytes:
    """``msgpack([revision, [[kind, id, spec, created, mod], ...]])`` built from each resource's
    cached canonical encoding (the one the config hash is computed from).

    A local-file format, not a wire format: after a one-route change on 10k routes the proxy
    writes its cache by joining 10k cached byte strings instead of re-encoding every spec
    (to_snapshot + msgpack + zlib costs ~25 ms of CPU per change per proxy).
    """
    entries = [resource_bytes(r) for r in state.resources_unordered()]
    return b"".join([array_header(2), pack(state.revision), array_header(len(entries)), *entries])


def decode_packed_state(data: bytes | bytearray | memoryview) -> ConfigState:
    """Inverse of ``encode_packed_state``; ``CodecError`` on corrupt or ill-shaped data."""

    def build() -> ConfigState:
        obj = decode(data)
        if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
            raise CodecError("packed state must be [revision, [entries]]")
        revision, entries = obj
        resources: dict[str, dict[str, Any]] = {kind: {} for kind in STORED_KINDS}
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 5 or entry[0] not in resources:
                raise CodecError("packed state entry must be [kind, id, spec, created, mod]")
            kind, rid, spec, created, mod = entry
            resources[kind][rid] = {"spec": spec, "created_revision": created, "mod_revision": mod}
        return ConfigState.from_snapshot({"revision": revision, "resources": resources})

    return _guard("packed state", build)
