"""gwadm's pure core, shared by the control plane and the data plane.

No sockets, threads, files or clocks live here (a test enforces it): the same code validates and
applies transactions on every Raft node and replays deltas on every proxy, deterministically.

    model           KINDS, ids, Resource / Op / Txn
    validate        validate_spec: body -> normalized spec, precise error paths
    plugin_schemas  one config schema per plugin
    state           ConfigState.apply(txn) -> (state, delta), all or nothing
    delta           Delta, apply_delta, compose, config_hash
    codec           msgpack encodings of txns, deltas and snapshots
    protocol        push-protocol frames (typed), their wire schema, snapshot chunking
    errors          the exception tree
"""

from __future__ import annotations

from .codec import (
    PROTOCOL_VERSION,
    decode,
    decode_delta,
    decode_snapshot,
    decode_txn,
    encode,
    encode_delta,
    encode_snapshot,
    encode_txn,
)
from .delta import Delta, DeltaOp, apply_delta, compose, config_hash
from .errors import (
    CodecError,
    Conflict,
    DeltaBaseMismatch,
    GatewayError,
    InUse,
    NotFound,
    ReferenceViolation,
    ValidationError,
)
from .frozen import freeze, thaw
from .model import ID_PATTERN, KINDS, Op, Resource, Txn, check_id, is_valid_id
from .plugin_schemas import PLUGIN_NAMES, validate_plugin_config
from .protocol import FRAME_TYPES, FrameError, assemble_snapshot, decode_frame, encode_frame, snapshot_chunks
from .state import ConfigState
from .validate import validate_spec

__all__ = [
    # model
    "ID_PATTERN",
    "KINDS",
    "Op",
    "Resource",
    "Txn",
    "check_id",
    "is_valid_id",
    # validation
    "PLUGIN_NAMES",
    "validate_plugin_config",
    "validate_spec",
    # state and deltas
    "ConfigState",
    "Delta",
    "DeltaOp",
    "apply_delta",
    "compose",
    "config_hash",
    # codec and protocol
    "FRAME_TYPES",
    "PROTOCOL_VERSION",
    "assemble_snapshot",
    "decode",
    "decode_delta",
    "decode_frame",
    "decode_snapshot",
    "decode_txn",
    "encode",
    "encode_delta",
    "encode_frame",
    "encode_snapshot",
    "encode_txn",
    "snapshot_chunks",
    # frozen values
    "freeze",
    "thaw",
    # errors
    "CodecError",
    "Conflict",
    "FrameError",
    "DeltaBaseMismatch",
    "GatewayError",
    "InUse",
    "NotFound",
    "ReferenceViolation",
    "ValidationError",
]
