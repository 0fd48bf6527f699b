"""The pure half of applying config frames: joining snapshot chunks and preparing a new config.

``SyncClient`` (proxy/sync.py) owns the stream and the swap; what is here touches no socket and no
shared state, so the preparation can run on an executor thread while the old config keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.delta import Delta, apply_delta
from gateway.errors import GatewayError
from gateway.state import ConfigState
from proxy.cache import decode_body

Prepared = tuple[ConfigState, Any, bytes | None]  # state, runtime, cache body (None: encode later)


class OutOfSequence(Exception):
    """A snapshot chunk that does not continue the transmission under way."""


@dataclass(frozen=True)
class JoinedSnapshot:
    revision: int
    hash: str
    data: bytes


class SnapshotAssembler:
    """Joins the chunks of one snapshot transmission. Chunk 0 starts a new one; a chunk of another
    transmission or out of order drops what was collected (the caller nacks, the node resends)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._key: tuple[int, str, int] | None = None

    def reset(self) -> None:
        self._chunks, self._key = [], None

    def add(self, frame: dict[str, Any]) -> JoinedSnapshot | None:
        """The whole snapshot once its last chunk arrives, else None; raises ``OutOfSequence``."""
        key = (frame["revision"], frame["hash"], frame["chunks"])
        if frame["chunk"] == 0:
            self._chunks, self._key = [], key
        if key != self._key or frame["chunk"] != len(self._chunks):
            self.reset()
            raise OutOfSequence(f"snapshot chunk {frame['chunk']} out of sequence")
        self._chunks.append(frame["data"])
        if len(self._chunks) < key[2]:
            return None
        joined = JoinedSnapshot(key[0], key[1], b"".join(self._chunks))
        self.reset()
        return joined


def prepare_delta(
    state: ConfigState,
    delta: Delta,
    expected: str,
    current_runtime: Any,
    update: Callable[..., Any] | None,
    build: Callable[..., Any],
) -> Prepared:
    """Apply, verify the hash, build.

    With the runtime of ``state`` at hand (``current_runtime``) only the touched resources are
    recompiled; the cache body is encoded after the swap (``None`` here), off the path to serving
    the new config.
    """
    new = apply_delta(state, delta)
    if new.hash() != expected:
        raise GatewayError(f"config hash mismatch after delta {delta.base}->{delta.revision}")
    if update is not None and current_runtime is not None and current_runtime.revision == state.revision:
        touched = [(op[1], op[2]) for op in delta.ops]
        runtime = update(current_runtime, new, touched, revision=new.revision, hash=expected)
    else:
        runtime = build(new.to_snapshot(), revision=new.revision, hash=expected)
    return new, runtime, None


def prepare_snapshot(data: bytes, revision: int, expected: str, build: Callable[..., Any]) -> Prepared:
    """Decode, check revision and hash against the frame, build; the body is cached as received."""
    snapshot = decode_body(data)
    state = ConfigState.from_snapshot(snapshot)
    if state.revision != revision:
        raise GatewayError(f"snapshot body is revision {state.revision}, the frame says {revision}")
    if state.hash() != expected:
        raise GatewayError(f"config hash mismatch in snapshot {revision}")
    return state, build(snapshot, revision=revision, hash=expected), data
