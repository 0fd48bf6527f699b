"""Helpers for the push protocol v1 that both ends must agree on byte for byte.

The control plane (``cluster/push.py``) and the proxy (``proxy/sync.py``) are written separately;
building and reading ``delta`` and chunked ``snapshot`` frames in one shared place means chunking,
reassembly and hash verification cannot drift apart. Frames are plain dicts; ``gateway.codec``
turns them into bytes (``encode_frame``/``decode_frame``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codec import decode_snapshot, encode_snapshot
from .delta import Delta
from .errors import CodecError
from .state import ConfigState

__all__ = ["DEFAULT_CHUNK_SIZE", "assemble_snapshot", "delta_frame", "delta_from_frame", "snapshot_frames"]

DEFAULT_CHUNK_SIZE = 1 << 20
"""Bytes of compressed snapshot per frame; below aiohttp's default 4 MiB websocket message limit."""


def delta_frame(delta: Delta, hash: str) -> dict[str, Any]:
    """The ``delta`` frame for ``delta``; ``hash`` is the state hash at ``delta.revision``."""
    return {
        "t": "delta",
        "base": delta.base,
        "revision": delta.revision,
        "ops": [list(op) for op in delta.ops],
        "hash": hash,
    }


def delta_from_frame(frame: Mapping[str, Any]) -> Delta:
    """The ``Delta`` carried by a ``delta`` frame already checked by ``decode_frame``."""
    if frame.get("t") != "delta":
        raise CodecError(f"expected a delta frame, got {frame.get('t')!r}")
    return Delta(frame["base"], frame["revision"], tuple(tuple(op) for op in frame["ops"]))


def snapshot_frames(state: ConfigState, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[dict[str, Any]]:
    """``state`` as one or more ``snapshot`` frames whose ``data`` concatenate to ``encode_snapshot``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    blob = encode_snapshot(state)
    pieces = [blob[start : start + chunk_size] for start in range(0, len(blob), chunk_size)] or [b""]
    revision, digest = state.revision, state.hash()
    return [
        {"t": "snapshot", "revision": revision, "hash": digest, "chunk": index, "chunks": len(pieces), "data": piece}
        for index, piece in enumerate(pieces)
    ]


def assemble_snapshot(frames: Sequence[Mapping[str, Any]]) -> ConfigState:
    """Rebuild the state from all chunks of one snapshot, in order; verifies revision and hash.

    ``CodecError`` if chunks are missing, out of order, from different snapshots, or if the
    decoded state does not have the announced revision and hash.
    """
    if not frames:
        raise CodecError("no snapshot frames")
    first = frames[0]
    revision, digest, chunks = first.get("revision"), first.get("hash"), first.get("chunks")
    if len(frames) != chunks:
        raise CodecError(f"expected {chunks} snapshot chunks, got {len(frames)}")
    for index, frame in enumerate(frames):
        if frame.get("t") != "snapshot" or frame.get("chunk") != index:
            raise CodecError(f"snapshot chunk {index} is missing or out of order")
        if (frame.get("revision"), frame.get("hash"), frame.get("chunks")) != (revision, digest, chunks):
            raise CodecError("snapshot chunks belong to different snapshots")
        if not isinstance(frame.get("data"), bytes):
            raise CodecError(f"snapshot chunk {index} has no binary data")
    state = decode_snapshot(b"".join(frame["data"] for frame in frames))
    if state.revision != revision:
        raise CodecError(f"snapshot announced revision {revision} but contains revision {state.revision}")
    if state.hash() != digest:
        raise CodecError("snapshot hash does not match its contents")
    return state
