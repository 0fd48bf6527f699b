"""Push protocol v1 (docs/contracts.md §4): typed frames, their one wire schema, snapshot chunking.

The control plane (``cluster/push.py``), the proxy (``proxy/sync.py``) and anything else that
speaks the stream (pull transports, relays, proxy workers) build and read frames only through this
module, so the two ends cannot drift apart. A frame is a frozen dataclass; ``encode_frame`` turns
it into one msgpack map ``{"t": TYPE, ...}`` and ``decode_frame`` turns untrusted bytes back into
a frame or raises ``FrameError`` naming the offending field (``delta.ops[3][1]``).

Decoding is strict about everything v1 defines: every required field present with its type and
range, strings and lists bounded, no field of the wrong direction (``allowed``). Unknown *extra*
keys are ignored, so a later revision can add optional fields without breaking v1 peers; an
unknown frame *type* is an error (``UnknownFrameType``), which the receiver may choose to skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .codec import PROTOCOL_VERSION, decode, decode_snapshot, encode, encode_snapshot
from .delta import Delta, DeltaOp
from .errors import CodecError
from .model import ACTIONS, STORED_KINDS, is_valid_id
from .state import ConfigState

__all__ = [
    "CP_FRAMES",
    "DEFAULT_CHUNK_SIZE",
    "DP_FRAMES",
    "FRAME_TYPES",
    "MAX_MEMBER_URLS",
    "PROTOCOL_VERSION",
    "PROXY_MODES",
    "Ack",
    "DeltaFrame",
    "ErrorFrame",
    "Frame",
    "FrameError",
    "Hello",
    "JoinedSnapshot",
    "Mode",
    "Nack",
    "OutOfSequence",
    "Resync",
    "SnapshotAssembler",
    "SnapshotChunk",
    "Status",
    "UnknownFrameType",
    "UnsupportedProtocol",
    "assemble_snapshot",
    "chunk_blob",
    "decode_frame",
    "encode_frame",
    "peek_type",
    "snapshot_chunks",
]

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Bytes of compressed snapshot per frame; far below the proxy's websocket message limit."""
MAX_CHUNKS = 1 << 16
MAX_SNAPSHOT_WIRE_BYTES = 1 << 30  # compressed bytes of one snapshot, all chunks together
MAX_MEMBER_URLS = 64
MAX_TEXT = 256  # ids, software strings, hashes
MAX_ADDRESS = 512
MAX_URL = 2048
MAX_ERROR = 4000
MAX_INT = (1 << 63) - 1
PROXY_MODES: tuple[str, ...] = ("synced", "cached", "empty")


class FrameError(CodecError):
    """Bytes that are not a valid frame; ``path`` names the field (``hello.revision``)."""


class UnknownFrameType(FrameError):
    """A well-formed map whose ``t`` this side does not know (or does not accept)."""


class UnsupportedProtocol(FrameError):
    """A ``hello`` of another protocol version."""


# --- field readers: each raises FrameError with the field's path -------------------------------


def _int(obj: Mapping[str, Any], name: str, where: str, *, minimum: int = 0) -> int:
    value = _get(obj, name, where)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError("must be an integer", f"{where}.{name}")
    if not minimum <= value <= MAX_INT:
        raise FrameError(f"must be between {minimum} and {MAX_INT}", f"{where}.{name}")
    return value


def _text(obj: Mapping[str, Any], name: str, where: str, *, limit: int = MAX_TEXT, nullable: bool = False,
          optional: bool = False, printable: bool = True) -> Any:  # fmt: skip
    if optional and name not in obj:
        return None
    value = _get(obj, name, where)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise FrameError("must be a string" + (" or null" if nullable else ""), f"{where}.{name}")
    if len(value) > limit:
        raise FrameError(f"must be at most {limit} characters", f"{where}.{name}")
    if printable and not value.isprintable():  # ids and addresses end up in logs and fleet views
        raise FrameError("must not contain control characters", f"{where}.{name}")
    return value


def _flag(obj: Mapping[str, Any], name: str, where: str) -> bool:
    """An optional boolean field, false when absent."""
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise FrameError("must be true or false", f"{where}.{name}")
    return value


def _get(obj: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise FrameError("missing required field", f"{where}.{name}")
    return obj[name]


# --- the frames ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """DP -> CP, first frame of every stream. revision 0 = nothing installed."""

    T: ClassVar[str] = "hello"
    proxy_id: str
    software: str
    revision: int
    hash: str
    address: str | None = None
    status_address: str | None = None  # optional (added after v1 shipped): the proxy's /status
    proto: int = PROTOCOL_VERSION

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.T, "proto": self.proto, "proxy_id": self.proxy_id, "software": self.software,
               "revision": self.revision, "hash": self.hash, "address": self.address}  # fmt: skip
        if self.status_address is not None:
            out["status_address"] = self.status_address
        return out

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Hello:
        proto = _get(obj, "proto", "hello")
        if proto != PROTOCOL_VERSION or isinstance(proto, bool):
            raise UnsupportedProtocol(
                f"unsupported protocol version {proto!r} (this side speaks {PROTOCOL_VERSION})", "hello.proto"
            )
        return cls(
            proxy_id=_text(obj, "proxy_id", "hello"), software=_text(obj, "software", "hello"),
            revision=_int(obj, "revision", "hello"), hash=_text(obj, "hash", "hello"),
            address=_text(obj, "address", "hello", limit=MAX_ADDRESS, nullable=True),
            status_address=_text(obj, "status_address", "hello", limit=MAX_ADDRESS, nullable=True, optional=True),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Status:
    """CP -> DP on change and every status interval. ``members``: admin URLs of the Raft members
    (optional, added after v1 shipped), from which proxies learn added nodes."""

    T: ClassVar[str] = "status"
    node_id: str
    leader_id: str | None
    term: int
    has_quorum: bool
    revision: int
    members: tuple[str, ...] | None = None
    hash: str | None = None  # optional: config hash at ``revision``, hybrid proxies compare theirs
    cached: bool = False  # optional: a relay cut off from the CP serving its last-known-good revision

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.T, "node_id": self.node_id, "leader_id": self.leader_id, "term": self.term,
               "has_quorum": self.has_quorum, "revision": self.revision}  # fmt: skip
        if self.members is not None:
            out["members"] = list(self.members)
        if self.hash is not None:
            out["hash"] = self.hash
        if self.cached:
            out["cached"] = True
        return out

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Status:
        has_quorum = _get(obj, "has_quorum", "status")
        if not isinstance(has_quorum, bool):
            raise FrameError("must be true or false", "status.has_quorum")
        members: tuple[str, ...] | None = None
        if "members" in obj:
            raw = obj["members"]
            if not isinstance(raw, list) or len(raw) > MAX_MEMBER_URLS:
                raise FrameError(f"must be a list of at most {MAX_MEMBER_URLS} URLs", "status.members")
            for i, url in enumerate(raw):
                if not isinstance(url, str) or len(url) > MAX_URL or not url.startswith(("http://", "https://")):
                    raise FrameError(f"must be an http(s):// URL, not {str(url)[:80]!r}", f"status.members[{i}]")
            members = tuple(raw)
        return cls(
            node_id=_text(obj, "node_id", "status"), leader_id=_text(obj, "leader_id", "status", nullable=True),
            term=_int(obj, "term", "status", minimum=-MAX_INT), has_quorum=has_quorum,
            revision=_int(obj, "revision", "status"), members=members,
            hash=_text(obj, "hash", "status", nullable=True, optional=True), cached=_flag(obj, "cached", "status"),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeltaFrame:
    """CP -> DP: the changes from ``base`` to ``revision``; ``hash`` = state hash at ``revision``."""

    T: ClassVar[str] = "delta"
    base: int
    revision: int
    ops: tuple[DeltaOp, ...]
    hash: str

    @classmethod
    def of(cls, delta: Delta, hash: str) -> DeltaFrame:
        return cls(delta.base, delta.revision, tuple(delta.ops), hash)

    @property
    def delta(self) -> Delta:
        return Delta(self.base, self.revision, self.ops)

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "base": self.base, "revision": self.revision, "ops": [list(op) for op in self.ops],
                "hash": self.hash}  # fmt: skip

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> DeltaFrame:
        base, revision = _int(obj, "base", "delta"), _int(obj, "revision", "delta")
        if revision <= base:
            raise FrameError(f"must be greater than base {base}", "delta.revision")
        raw = _get(obj, "ops", "delta")
        if not isinstance(raw, list):
            raise FrameError("must be a list", "delta.ops")
        return cls(base, revision, tuple(_delta_op(op, i, revision) for i, op in enumerate(raw)),
                   _text(obj, "hash", "delta"))  # fmt: skip


def _delta_op(op: Any, index: int, revision: int) -> DeltaOp:
    where = f"delta.ops[{index}]"
    if not isinstance(op, list) or len(op) != 4:
        raise FrameError("must be [action, kind, id, resource|null]", where)
    action, kind, rid, resource = op
    if action not in ACTIONS:
        raise FrameError(f"action must be one of {', '.join(ACTIONS)}", f"{where}[0]")
    if kind not in STORED_KINDS:
        raise FrameError(f"kind must be one of {', '.join(STORED_KINDS)}", f"{where}[1]")
    if not isinstance(rid, str) or not is_valid_id(rid):
        raise FrameError("must be a valid resource id", f"{where}[2]")
    if action == "delete":
        if resource is not None:
            raise FrameError("a delete carries no resource (null)", f"{where}[3]")
        return (action, kind, rid, None)
    if not isinstance(resource, dict):
        raise FrameError("must be a map with spec, created_revision, mod_revision", f"{where}[3]")
    if not isinstance(resource.get("spec"), dict):
        raise FrameError("must be a map", f"{where}[3].spec")
    created = _int(resource, "created_revision", f"{where}[3]", minimum=1)
    mod = _int(resource, "mod_revision", f"{where}[3]", minimum=1)
    if not created <= mod <= revision:
        raise FrameError(f"need created_revision <= mod_revision <= {revision}", f"{where}[3]")
    return (action, kind, rid, resource)


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """CP -> DP: chunk ``chunk`` of ``chunks``; all ``data`` joined = ``encode_snapshot(state)``."""

    T: ClassVar[str] = "snapshot"
    revision: int
    hash: str
    chunk: int
    chunks: int
    data: bytes

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "revision": self.revision, "hash": self.hash, "chunk": self.chunk,
                "chunks": self.chunks, "data": self.data}  # fmt: skip

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> SnapshotChunk:
        chunks = _int(obj, "chunks", "snapshot", minimum=1)
        if chunks > MAX_CHUNKS:
            raise FrameError(f"must be at most {MAX_CHUNKS}", "snapshot.chunks")
        chunk = _int(obj, "chunk", "snapshot")
        if chunk >= chunks:
            raise FrameError(f"must be < chunks ({chunks})", "snapshot.chunk")
        data = _get(obj, "data", "snapshot")
        if not isinstance(data, bytes):
            raise FrameError("must be binary", "snapshot.data")
        return cls(_int(obj, "revision", "snapshot"), _text(obj, "hash", "snapshot"), chunk, chunks, data)


@dataclass(frozen=True, slots=True)
class Ack:
    """DP -> CP: ``revision`` is installed (built, swapped, persisted)."""

    T: ClassVar[str] = "ack"
    revision: int

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "revision": self.revision}

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Ack:
        return cls(_int(obj, "revision", cls.T))


@dataclass(frozen=True, slots=True)
class Resync:
    """DP -> CP: start again from ``revision`` (deltas from there, or a snapshot)."""

    T: ClassVar[str] = "resync"
    revision: int
    hash: str | None = None  # optional: the proxy's hash at ``revision``; a node with another sends a snapshot

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.T, "revision": self.revision}
        if self.hash is not None:
            out["hash"] = self.hash
        return out

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Resync:
        return cls(_int(obj, "revision", cls.T), _text(obj, "hash", cls.T, nullable=True, optional=True))


@dataclass(frozen=True, slots=True)
class Nack:
    """DP -> CP: ``revision`` was rejected; the old config keeps serving. v1 peers may send the
    error as a map ``{code, message, path}``: it is read as its message."""

    T: ClassVar[str] = "nack"
    revision: int
    error: str

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "revision": self.revision, "error": self.error}

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Nack:
        error = _get(obj, "error", "nack")
        if isinstance(error, dict):
            error = _text(error, "message", "nack.error", limit=MAX_ERROR, printable=False)
        elif not isinstance(error, str):
            raise FrameError("must be a string or an error map", "nack.error")
        if len(error) > MAX_ERROR:
            raise FrameError(f"must be at most {MAX_ERROR} characters", "nack.error")
        return cls(_int(obj, "revision", "nack"), error)


@dataclass(frozen=True, slots=True)
class Mode:
    """DP -> CP: the proxy's mode changed (informational, for the fleet registry)."""

    T: ClassVar[str] = "mode"
    mode: str

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "mode": self.mode}

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Mode:
        mode = _get(obj, "mode", "mode")
        if mode not in PROXY_MODES:
            raise FrameError(f"must be one of {', '.join(PROXY_MODES)}", "mode.mode")
        return cls(mode)


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """CP -> DP: the node ends the session (bad hello, bad frame, credentials); a close follows."""

    T: ClassVar[str] = "error"
    code: str
    message: str

    def wire(self) -> dict[str, Any]:
        return {"t": self.T, "code": self.code, "message": self.message}

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ErrorFrame:
        return cls(_text(obj, "code", "error"), _text(obj, "message", "error", limit=MAX_ERROR, printable=False))


Frame = Hello | Status | DeltaFrame | SnapshotChunk | Ack | Nack | Resync | Mode | ErrorFrame
_PARSERS: dict[str, Callable[[Mapping[str, Any]], Frame]] = {
    cls.T: cls.parse for cls in (Hello, Status, DeltaFrame, SnapshotChunk, Ack, Nack, Resync, Mode, ErrorFrame)
}
FRAME_TYPES: tuple[str, ...] = tuple(_PARSERS)
DP_FRAMES: frozenset[str] = frozenset({"hello", "ack", "nack", "resync", "mode"})
"""What a proxy sends, i.e. what a control-plane node accepts."""
CP_FRAMES: frozenset[str] = frozenset({"status", "delta", "snapshot", "error"})
"""What a control-plane node sends, i.e. what a proxy accepts."""


def encode_frame(frame: Frame) -> bytes:
    """The msgpack bytes of ``frame``."""
    return encode(frame.wire())


def decode_frame(data: bytes | bytearray | memoryview, allowed: Iterable[str] | None = None) -> Frame:
    """Parse one frame from untrusted bytes; ``FrameError`` (with the field path) on anything else.

    ``allowed``: the frame types this receiver accepts (``DP_FRAMES`` on a node, ``CP_FRAMES`` on a
    proxy); another known type is an ``UnknownFrameType`` too.
    """
    try:
        obj = decode(data)
    except CodecError as exc:
        raise FrameError(f"not msgpack: {exc.message}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"a frame must be a map, not {type(obj).__name__}")
    kind = obj.get("t")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    accepted = FRAME_TYPES if allowed is None else tuple(t for t in FRAME_TYPES if t in set(allowed))
    if parser is None or kind not in accepted:
        shown = repr(kind)[:40]
        raise UnknownFrameType(f"unknown frame type {shown}; expected one of {', '.join(accepted)}", "t")
    return parser(obj)


def peek_type(data: bytes | bytearray | memoryview) -> tuple[str | None, int | None]:
    """Best effort ``(t, revision)`` of bytes that failed ``decode_frame`` (to nack a broken config
    frame by revision); ``(None, None)`` if not even that can be read."""
    try:
        obj = decode(data)
    except CodecError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    kind, revision = obj.get("t"), obj.get("revision")
    ok = isinstance(revision, int) and not isinstance(revision, bool) and 0 <= revision <= MAX_INT
    return (kind if isinstance(kind, str) else None), (revision if ok else None)


# --- snapshots: chunking and reassembly ---------------------------------------------------------


def chunk_blob(blob: bytes, revision: int, hash: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[SnapshotChunk]:
    """An already encoded snapshot as ``snapshot`` frames (at least one, possibly empty data)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    pieces = [blob[i : i + chunk_size] for i in range(0, len(blob), chunk_size)] or [b""]
    return [SnapshotChunk(revision, hash, i, len(pieces), piece) for i, piece in enumerate(pieces)]


def snapshot_chunks(state: ConfigState, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[SnapshotChunk]:
    """``state`` as ``snapshot`` frames whose data concatenate to ``encode_snapshot(state)``."""
    return chunk_blob(encode_snapshot(state), state.revision, state.hash(), chunk_size)


class OutOfSequence(FrameError):
    """A snapshot chunk that does not continue the transmission under way."""


@dataclass(frozen=True)
class JoinedSnapshot:
    """All chunks of one snapshot; ``state()`` decodes and verifies it."""

    revision: int
    hash: str
    data: bytes

    def state(self) -> ConfigState:
        """The decoded state; ``CodecError`` if it is corrupt or not the announced revision/hash."""
        state = decode_snapshot(self.data)
        if state.revision != self.revision:
            raise CodecError(f"snapshot body is revision {state.revision}, the frame says {self.revision}")
        if state.hash() != self.hash:
            raise CodecError(f"config hash mismatch in snapshot {self.revision}")
        return state


@dataclass
class SnapshotAssembler:
    """Joins the chunks of one transmission. Chunk 0 starts a new one; a chunk of another
    transmission or out of order drops what was collected (the receiver nacks, the node resends)."""

    max_bytes: int = MAX_SNAPSHOT_WIRE_BYTES
    _chunks: list[bytes] = field(default_factory=list)
    _key: tuple[int, str, int] | None = None
    _size: int = 0

    def reset(self) -> None:
        self._chunks, self._key, self._size = [], None, 0

    def add(self, chunk: SnapshotChunk) -> JoinedSnapshot | None:
        """The whole snapshot once its last chunk arrives, else None; raises ``OutOfSequence``."""
        key = (chunk.revision, chunk.hash, chunk.chunks)
        if chunk.chunk == 0:
            self.reset()
            self._key = key
        if key != self._key or chunk.chunk != len(self._chunks):
            self.reset()
            raise OutOfSequence(f"snapshot chunk {chunk.chunk} out of sequence")
        self._size += len(chunk.data)
        if self._size > self.max_bytes:
            self.reset()
            raise OutOfSequence(f"snapshot larger than {self.max_bytes} bytes")
        self._chunks.append(chunk.data)
        if len(self._chunks) < chunk.chunks:
            return None
        joined = JoinedSnapshot(chunk.revision, chunk.hash, b"".join(self._chunks))
        self.reset()
        return joined


def assemble_snapshot(chunks: Sequence[SnapshotChunk]) -> ConfigState:
    """The state of one complete transmission, in order; ``CodecError`` if chunks are missing,
    out of order, from different snapshots, or if the state is not the announced revision/hash."""
    assembler = SnapshotAssembler()
    joined: JoinedSnapshot | None = None
    for chunk in chunks:
        if joined is not None:
            raise CodecError("more chunks than the snapshot announced")
        joined = assembler.add(chunk)
    if joined is None:
        raise CodecError("snapshot chunks are missing")
    return joined.state()
