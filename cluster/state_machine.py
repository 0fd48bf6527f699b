"""The replicated state machine of a control-plane node, as a pure value.

``ReplicatedState`` is everything the Raft log determines: the configuration (``ConfigState``),
the bounded delta log proxies resume from, the bounded request-id table that makes retried
commands idempotent, and the token policy. ``state.apply(command) -> (new_state, result)`` is
deterministic and pure: no clocks (time travels inside commands), no IO, no logging, no mutation
— the old value stays valid, so readers on other threads never see a half-applied command.
``cluster/store.py`` holds the current value and swaps it after each committed command; the Raft
dump is ``to_dump()`` / ``from_dump()``.

Commands are msgpack maps with a ``type``; ``COMMANDS`` maps each type to its handler
``(state, command) -> (state, result)``. **Adding a command** (an audit record, a service
registration, ...): write a handler here or in its own module, register it with
``register_command("my_type", handler)``; if it needs a new part of the replicated state, add a
field to ``ReplicatedState`` (with a default) and its encoding to ``to_dump``/``from_dump`` (keep
old dumps loadable: a missing key means the default). Handlers must be deterministic, must never
raise for bad input (return ``{"ok": False, "error": {...}}``) and should dedupe by ``request_id``
when a retry could apply them twice (``dedupe_lookup`` / ``remember``).

Payload framing: ``encode_command(cmd, deadline)`` prefixes the msgpack map with ``0xc1`` (a byte
msgpack never uses) and the proposer's deadline as a big-endian double (Unix seconds), so the Raft
adapter can read a command's deadline without decoding the body (``command_deadline``). Payloads
without the prefix (older journals) have no deadline.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from gateway import registry
from gateway.audit import DEFAULT_CAPACITY as AUDIT_ENTRIES
from gateway.audit import AuditLog, records_for
from gateway.codec import decode_delta, decode_txn, encode_delta
from gateway.delta import Delta
from gateway.errors import GatewayError
from gateway.evolve import evolve
from gateway.model import Txn
from gateway.packing import LazyList, iter_pack
from gateway.state import ConfigState

__all__ = [
    "COMMANDS", "Dedupe", "Limits", "ReplicatedState", "command_deadline", "decode_command",
    "encode_command", "register_command",
]  # fmt: skip

DEDUPE_ENTRIES = 10_000
DELTA_LOG_ENTRIES = 1_000
DELTA_LOG_BYTES = 8 * 1024 * 1024
MAX_RESULT_OPS = 100
_DEADLINE_MARK = b"\xc1"
_DEADLINE = struct.Struct(">d")
Result = dict[str, Any]
Handler = Callable[["ReplicatedState", dict[str, Any]], tuple["ReplicatedState", Result]]


# -- payload framing ----------------------------------------------------------------------------------
def encode_command(cmd: Mapping[str, Any], deadline: float | None = None) -> bytes:
    body: bytes = msgpack.packb(dict(cmd), use_bin_type=True)
    if deadline is None:
        return body
    return _DEADLINE_MARK + _DEADLINE.pack(deadline) + body


def command_deadline(payload: bytes) -> float | None:
    """The proposer's deadline (Unix seconds) of an encoded command, None if it has none."""
    if payload[:1] != _DEADLINE_MARK or len(payload) < 1 + _DEADLINE.size:
        return None
    value: float = _DEADLINE.unpack_from(payload, 1)[0]
    return value


def decode_command(payload: bytes) -> dict[str, Any]:
    """The command map; raises ValueError if the payload is not one."""
    if payload[:1] == _DEADLINE_MARK:
        payload = payload[1 + _DEADLINE.size :]
    cmd = msgpack.unpackb(payload, raw=False)
    if not isinstance(cmd, dict) or not isinstance(cmd.get("type"), str):
        raise ValueError("not a command map")
    return cmd


# -- the request-id table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Dedupe:
    """Bounded, immutable request-id -> result table with structural sharing.

    Entries live in generations of at most ``generation_size``: an insert copies only the newest
    generation, and when the table exceeds ``capacity`` the oldest whole generation is dropped —
    deterministic, and O(generation_size) per insert instead of O(capacity).
    """

    capacity: int = DEDUPE_ENTRIES
    generations: tuple[Mapping[str, Result], ...] = ()  # oldest first; the last one is filling
    size: int = 0  # entries held (the generations' total)

    @property
    def generation_size(self) -> int:
        return max(1, min(512, self.capacity // 8 or 1))

    def get(self, request_id: str) -> Result | None:
        for gen in reversed(self.generations):
            hit = gen.get(request_id)
            if hit is not None:
                return hit
        return None

    def __len__(self) -> int:
        return self.size

    def put(self, request_id: str, result: Result) -> Dedupe:
        gens = list(self.generations)
        total = self.size
        if not gens or len(gens[-1]) >= self.generation_size:
            gens.append({})
        last = gens[-1]
        total += request_id not in last
        gens[-1] = {**last, request_id: result}
        while len(gens) > 1 and total > self.capacity:
            total -= len(gens[0])
            gens.pop(0)
        return evolve(self, generations=tuple(gens), size=total)

    def items(self) -> list[tuple[str, Result]]:
        return list(self.iter_items())

    def iter_items(self) -> Iterator[tuple[str, Result]]:
        for gen in self.generations:
            yield from gen.items()

    def with_items(self, items: Iterable[tuple[str, Result]]) -> Dedupe:
        """An empty table of this capacity after ``put`` of every item in order, built in one pass:
        the same generations, hence the same evictions later, as on a member that applied those
        writes one by one (restoring 10,000 entries by ``put`` took ~95 ms of a snapshot install,
        during which the tick thread answers nothing)."""
        gens: list[dict[str, Result]] = []
        total, size, capacity = 0, self.generation_size, self.capacity
        for k, v in items:
            if not gens or len(gens[-1]) >= size:
                gens.append({})
            last = gens[-1]
            total += k not in last
            last[k] = v
            while len(gens) > 1 and total > capacity:
                total -= len(gens[0])
                gens.pop(0)
        return evolve(self, generations=tuple(gens), size=total)


@dataclass(frozen=True)
class Limits:
    delta_log_entries: int = DELTA_LOG_ENTRIES
    delta_log_bytes: int = DELTA_LOG_BYTES


# -- the state ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicatedState:
    config: ConfigState = field(default_factory=ConfigState.empty)
    deltas: tuple[tuple[Delta, int], ...] = ()  # (delta, encoded size), oldest first
    delta_bytes: int = 0
    dedupe: Dedupe = field(default_factory=Dedupe)
    tokens: Mapping[str, Any] = field(default_factory=lambda: {"generation": 0, "revoked": {}})
    limits: Limits = field(default_factory=Limits)
    reg_epoch: int = 0  # expiry epoch of service registrations (gateway/registry.py)
    audit: AuditLog = field(default_factory=AuditLog)  # who changed what (gateway/audit.py)

    @classmethod
    def empty(cls, *, delta_log_entries: int = DELTA_LOG_ENTRIES, delta_log_bytes: int = DELTA_LOG_BYTES,
              dedupe_entries: int = DEDUPE_ENTRIES, audit_entries: int = AUDIT_ENTRIES) -> ReplicatedState:
        return cls(limits=Limits(delta_log_entries, delta_log_bytes), dedupe=Dedupe(dedupe_entries),
                   audit=AuditLog(capacity=audit_entries))

    # -- the one entry point -------------------------------------------------------------------------
    def apply(self, payload: bytes | Mapping[str, Any]) -> tuple[ReplicatedState, Result]:
        """Apply one committed command (encoded, or already a map); never raises."""
        try:
            # bytes first: a committed command is bytes, and the ABC check of Mapping is slow
            cmd = dict(payload) if not isinstance(payload, bytes) and isinstance(payload, Mapping) else decode_command(payload)
        except Exception:  # a command we cannot read must not stop the log
            return self, _error("bad_encoding", "undecodable command")
        handler = COMMANDS.get(str(cmd.get("type")))
        if handler is None:
            return self, _error("bad_encoding", f"unknown command {cmd.get('type')}")
        try:
            new, result = handler(self, cmd)
            if "audit" in cmd:  # an admin write stamped with its caller (cluster/audit_api.py)
                records = records_for(cmd, result, new.config.revision, txn=cmd.get(_DECODED_TXN))
                if records:
                    new = evolve(new, audit=new.audit.append(records))
            return new, result
        except Exception as exc:  # a bug must not wedge the log: reject it on every node alike
            return self, _error("internal", f"internal error: {type(exc).__name__}: {exc}")

    # -- helpers for handlers --------------------------------------------------------------------
    def dedupe_lookup(self, request_id: str | None) -> Result | None:
        seen = self.dedupe.get(request_id) if request_id else None
        return {**seen, "duplicate": True} if seen is not None else None

    def remember(self, request_id: str | None, result: Result) -> ReplicatedState:
        return evolve(self, dedupe=self.dedupe.put(request_id, result)) if request_id else self

    def with_config(self, config: ConfigState, delta: Delta) -> ReplicatedState:
        size = len(encode_delta(delta))
        old = self.deltas
        count = len(old) + 1  # with the new delta, which is always kept
        total = self.delta_bytes + size
        drop = 0
        while count - drop > 1 and (
            count - drop > self.limits.delta_log_entries or total > self.limits.delta_log_bytes
        ):
            total -= old[drop][1]
            drop += 1
        # one copy of the (up to 1,000-entry) log per write, not three
        return evolve(self, config=config, deltas=old[drop:] + ((delta, size),), delta_bytes=total)

    def deltas_since(self, revision: int) -> list[Delta] | None:
        """Deltas from ``revision`` to the head; None if the log no longer reaches back that far."""
        head = self.config.revision
        if revision == head:
            return []
        if revision > head or not self.deltas or self.deltas[0][0].base > revision:
            return None
        return [d for d, _ in self.deltas if d.base >= revision]

    # -- dump / restore ------------------------------------------------------------------------------
    def to_dump(self) -> bytes:
        return b"".join(self.dump_slices())

    def dump_slices(self, batch: int = 256) -> Iterator[bytes]:
        """``to_dump()`` in slices of about ``batch`` records each: log compaction encodes one slice
        per Raft tick (cluster/raft_dump.py), so a 4 MB dump never stalls heartbeats. The tables
        are read lazily; this value is immutable, so the slices may be taken while newer states
        are applied."""
        data = {
            "state": self.config.to_snapshot(),
            "deltas": LazyList(len(self.deltas), (encode_delta(d) for d, _ in self.deltas)),
            "dedupe": LazyList(len(self.dedupe), ([k, v] for k, v in self.dedupe.iter_items())),
            "tokens": dict(self.tokens),
            "reg_epoch": self.reg_epoch,
            "audit": {"records": LazyList(len(self.audit), self.audit.iter_records()), "dropped": self.audit.dropped,
                      "next_seq": self.audit.next_seq},
        }
        return iter_pack(data, batch)

    def from_dump(self, blob: bytes) -> ReplicatedState:
        """A state restored from ``to_dump`` output, keeping this value's limits."""
        data = msgpack.unpackb(blob, raw=False)
        config = ConfigState.from_snapshot(data["state"])
        deltas = tuple((d, len(encode_delta(d))) for d in (decode_delta(raw) for raw in data["deltas"]))
        tokens = data.get("tokens") or {}  # absent in dumps written before token revocation existed
        return replace(
            self,
            config=config,
            deltas=deltas,
            delta_bytes=sum(size for _, size in deltas),
            dedupe=self.dedupe.with_items((str(k), v) for k, v in data["dedupe"]),
            tokens={"generation": int(tokens.get("generation", 0)), "revoked": dict(tokens.get("revoked", {}))},
            reg_epoch=int(data.get("reg_epoch", 0)),
            audit=self.audit.from_wire(data.get("audit")),
        )


def _error(code: str, message: str) -> Result:
    return {"ok": False, "error": {"code": code, "message": message}}


# -- command handlers -------------------------------------------------------------------------------------
def _barrier(state: ReplicatedState, cmd: dict[str, Any]) -> tuple[ReplicatedState, Result]:
    return state, {"ok": True, "revision": state.config.revision}


_DECODED_TXN = "\0decoded_txn"  # _txn leaves its decoded Txn in the (local) command for the audit step


def _txn(state: ReplicatedState, cmd: dict[str, Any]) -> tuple[ReplicatedState, Result]:
    try:
        txn = decode_txn(cmd["txn"])
    except GatewayError as exc:
        return state, {"ok": False, "error": exc.to_dict()}
    cmd[_DECODED_TXN] = txn  # decoding is most of records_for's cost: do it once per command
    fingerprint = txn_fingerprint(txn)
    seen = state.dedupe_lookup(txn.request_id)
    if seen is not None:
        if seen.get("fingerprint", fingerprint) != fingerprint:  # found by schemathesis: another request's result
            return state, {"ok": False, "error": {
                "code": "conflict", "path": "X-Request-Id",
                "message": f"request id {txn.request_id!r} was already used for a different request"}}
        return state, seen
    try:
        config, delta = state.config.apply(txn)
    except GatewayError as exc:
        failed = {"ok": False, "error": exc.to_dict(), "fingerprint": fingerprint}
        return state.remember(txn.request_id, failed), failed
    result = {"ok": True, "revision": config.revision, "results": op_results(txn, state.config, config),
              "fingerprint": fingerprint}
    return state.with_config(config, delta).remember(txn.request_id, result), result


def txn_fingerprint(txn: Txn) -> str:
    """What a retry must repeat: the ops' action, kind, id and body (not the CAS expectations: a
    retried PATCH expects the mod_revision its first attempt produced)."""
    # frozen bodies pack exactly as their thawed copies would (FrozenDict/FrozenList are dict/list)
    ops = [[op.action, op.kind, op.id, op.body] for op in txn.ops]
    return hashlib.sha256(msgpack.packb(ops, use_bin_type=True)).hexdigest()[:32]


def _token(state: ReplicatedState, cmd: dict[str, Any]) -> tuple[ReplicatedState, Result]:
    """Time comes from the command (the proposer's clock), never from this node's.

    Deny-list entries are dropped once their token has expired (``exp`` None = never). A rotation
    is deduplicated by request id: a retried rotation must not bump the generation twice.
    """
    request_id = str(cmd["request_id"]) if cmd.get("request_id") else None
    seen = state.dedupe_lookup(request_id)
    if seen is not None:
        return state, seen
    now = int(cmd.get("now") or 0)
    revoked = {j: e for j, e in state.tokens["revoked"].items() if e is None or e >= now}
    generation = int(state.tokens["generation"])
    if cmd["type"] == "token_revoke":
        exp = cmd.get("exp")
        revoked[str(cmd["jti"])] = int(exp) if isinstance(exp, int) and not isinstance(exp, bool) else None
    else:
        generation += 1
    result = {"ok": True, "generation": generation, "revoked": len(revoked)}
    new = replace(state, tokens={"generation": generation, "revoked": revoked})
    return new.remember(request_id, result), result


def _registry(state: ReplicatedState, cmd: dict[str, Any]) -> tuple[ReplicatedState, Result]:
    """Service registrations (gateway/registry.py): resources of a stored kind plus the expiry epoch."""
    request_id = str(cmd["request_id"]) if cmd.get("request_id") else None
    seen = state.dedupe_lookup(request_id)
    if seen is not None:
        return state, seen
    try:
        applied = registry.apply_command(state.config, state.reg_epoch, cmd)
    except GatewayError as exc:
        result: Result = {"ok": False, "error": exc.to_dict()}
        return state.remember(request_id, result), result
    new = replace(state, reg_epoch=applied.epoch)
    if applied.delta is not None:
        new = new.with_config(applied.state, applied.delta)
    return new.remember(request_id, applied.result), applied.result


COMMANDS: dict[str, Handler] = {
    "barrier": _barrier,
    "txn": _txn,
    "token_revoke": _token,
    "token_rotate": _token,
    "reg_put": _registry,
    "reg_delete": _registry,
    "reg_grant": _registry,
    "reg_expire": _registry,
}


def register_command(kind: str, handler: Handler) -> None:
    """Add a command type to the state machine (at import time, identically on every node)."""
    if kind in COMMANDS and COMMANDS[kind] is not handler:
        raise ValueError(f"command type {kind!r} is already registered")
    COMMANDS[kind] = handler


def op_results(txn: Txn, before: ConfigState, after: ConfigState) -> list[dict[str, Any] | None]:
    """Per-op results for the API reply (the resource as written, or as it was before delete):
    ``Resource.to_api``, sharing the stored frozen values. The result lives in the dedupe table and
    is only ever encoded (JSON to the client, msgpack in the Raft dump), never changed: a thawed
    copy per nested map and list, on every member for every write, bought nothing."""
    if len(txn.ops) > MAX_RESULT_OPS:
        return []
    results: list[dict[str, Any] | None] = []
    for op in txn.ops:
        source = after if op.action == "put" else before
        res = source.get(op.kind, op.id)
        results.append(res.to_api() if res is not None else None)
    return results
