"""Per-proxy session state of the push hub, and the snapshot encodings its sessions share.

Split from cluster/push.py (which keeps the protocol logic) so that each stays a readable size.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gateway.codec import encode_snapshot
from gateway.delta import Delta
from gateway.protocol import chunk_blob, encode_frame
from gateway.state import ConfigState

# How long a proxy that went away stays listed in the fleet view.
GONE_TTL = 600.0


class FeedStore(Protocol):
    """What a config feed (the push hub, the changes API, a relay) reads from its store."""

    node_id: str

    @property
    def state(self) -> ConfigState: ...

    def deltas_since(self, revision: int) -> list[Delta] | None: ...

    def subscribe(self, callback: Any, wants_changes: Any = None) -> Any: ...

    def feed_status(self) -> dict[str, Any]:
        """node_id, leader_id, term, has_quorum, revision and optionally cached (a relay)."""
        ...

    def member_urls(self) -> list[str]: ...


@dataclass
class Session:
    """Server-side view of one connected proxy."""

    key: int
    ws: web.WebSocketResponse
    proxy_id: str
    address: str
    software: str
    acked: int  # the revision the proxy is known to serve
    sent: int  # the revision it will serve once every in-flight frame is applied
    claimed_hash: str | None  # hash it reported for ``sent``; checked once our head reaches it
    connected_since: float = field(default_factory=time.time)
    inflight: list[tuple[int, str]] = field(default_factory=list)  # (revision, "delta"|"snapshot")
    need_snapshot: bool = False
    blocked_at: int | None = None  # a snapshot of this revision was nacked: wait for a newer one
    mode: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)  # of the token that opened the stream
    status_address: str | None = None  # the proxy's /status and /metrics listener, if it said
    last_ack_at: float | None = None
    last_error: str | None = None
    deltas_sent: int = 0
    snapshots_sent: int = 0
    status_due: bool = True
    last_status: tuple[Any, ...] | None = None
    skipped: int = 0  # frames of types this node does not take
    snapshot_repeats: dict[int, int] = field(default_factory=dict)  # {revision: snapshots of it sent}
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The connection's transport: a change is written to it straight from the store callback
    # (PushHub._push_now) while the sender task is parked, i.e. not between two writes of its own.
    transport: Any = None
    parked: bool = False


def ws_binary_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed websocket binary message (RFC 6455 §5.2), as a
    server writes it: the same bytes for every subscriber, so a change is framed once, not per send."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x82, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x82, 126, n)
    else:
        header = struct.pack("!BBQ", 0x82, 127, n)
    return header + payload


def request_claims(request: web.Request) -> dict[str, Any] | None:
    """The claims the admin middleware stored: ``request["auth"]`` (contracts §7).

    aiohttp >= 3.12 warns on plain string keys and recommends ``web.RequestKey``; a middleware
    that switched to ``RequestKey("auth", ...)`` is accepted as well.
    """
    claims = request.get("auth")
    if claims is None:
        for key in request:
            if isinstance(key, web.RequestKey) and getattr(key, "_name", "").rsplit(".", 1)[-1] == "auth":
                claims = request[key]
                break
    return claims if isinstance(claims, dict) else None


class SnapshotCache:
    """Encoded snapshot frames and the config hash, computed once per revision and shared by every
    session (a fleet reconnecting after a restart costs one encoding, done in an executor)."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._snapshot: tuple[int, asyncio.Future[list[bytes]]] | None = None
        self._hash: tuple[ConfigState, str] | None = None

    def state_hash(self, state: ConfigState) -> str:
        if self._hash is None or self._hash[0] is not state:
            self._hash = (state, state.hash())
        return self._hash[1]

    async def encoded(self, state: ConfigState) -> list[bytes]:
        """The encoded ``snapshot`` frames (chunks) of ``state``, ready to send."""
        if self._snapshot is None or self._snapshot[0] != state.revision:
            fut = asyncio.get_running_loop().run_in_executor(None, _encode_snapshot, state, self.chunk_size)
            self._snapshot = (state.revision, fut)
        fut = self._snapshot[1]
        try:
            return await asyncio.shield(fut)
        except Exception:
            if self._snapshot is not None and self._snapshot[1] is fut:
                self._snapshot = None  # do not cache a failure
            raise


def _encode_snapshot(state: ConfigState, chunk_size: int) -> list[bytes]:
    chunks = chunk_blob(encode_snapshot(state), state.revision, state.hash(), chunk_size)
    return [encode_frame(chunk) for chunk in chunks]
