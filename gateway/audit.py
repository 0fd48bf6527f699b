"""The audit log of admin writes: a bounded, replicated record of who changed what (pure).

Every admin write that commits leaves one record per changed thing in the replicated state
(``cluster/state_machine.py`` keeps an ``AuditLog`` next to the config, so it is in every node's
state and in snapshots): the token's subject, ``jti`` and role, the client address, the request id,
``kind``/``id``/``op``, the revision the write produced and the time. The time and the caller come
*inside the command* (stamped by the proposing node, ``cluster/audit_api.py``), never from the
applying node's clock, so every replica holds the same records.

Bounded by count (default 10,000): the oldest records are dropped first and ``dropped`` counts
them. Records never hold bodies: no credential can end up here (key-auth keys, HS256 secrets).
Writes that are rejected or deduplicated retries leave no record (the API counts rejections in
``/metrics`` instead).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .codec import decode_txn
from .errors import GatewayError
from .evolve import evolve
from .model import Txn

__all__ = ["AUDITED_COMMANDS", "DEFAULT_CAPACITY", "META_FIELDS", "AuditLog", "records_for"]

DEFAULT_CAPACITY = 10_000
AUDITED_COMMANDS = frozenset({"txn", "token_revoke", "token_rotate", "reg_put", "reg_delete"})
META_FIELDS = ("time", "subject", "jti", "role", "client", "request_id")
Record = Mapping[str, Any]


CHUNK = 256  # records per chunk: an append copies at most one chunk, not the whole log


@dataclass(frozen=True, eq=False)
class AuditLog:
    """Oldest first, in chunks of at most ``CHUNK`` records (structural sharing: appending to a log
    of 10,000 records used to copy all of them, on every member, for every write). ``records`` is
    the flat view; two logs are equal when their records, counters and capacity are."""

    chunks: tuple[tuple[Record, ...], ...] = ()
    dropped: int = 0
    next_seq: int = 1
    capacity: int = DEFAULT_CAPACITY
    size: int = 0  # records held (the chunks' total)

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(rec for chunk in self.chunks for rec in chunk)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuditLog):
            return NotImplemented
        return (self.size, self.dropped, self.next_seq, self.capacity) == (
            other.size, other.dropped, other.next_seq, other.capacity) and self.records == other.records

    __hash__ = None  # type: ignore[assignment]  # records are dicts: unhashable, like the old tuple of them

    def append(self, new: Sequence[Mapping[str, Any]]) -> AuditLog:
        """The log with ``new`` added (each gets the next ``seq``), trimmed to ``capacity``."""
        if not new:
            return self
        numbered = [{**rec, "seq": self.next_seq + i} for i, rec in enumerate(new)]
        chunks = list(self.chunks)
        last = list(chunks.pop()) if chunks and len(chunks[-1]) < CHUNK else []
        for rec in numbered:
            if len(last) >= CHUNK:
                chunks.append(tuple(last))
                last = []
            last.append(rec)
        chunks.append(tuple(last))
        kept, size, drop = _trim(chunks, self.size + len(numbered), self.capacity)
        return evolve(self, chunks=kept, size=size, dropped=self.dropped + drop,
                      next_seq=self.next_seq + len(numbered))

    def query(self, *, subject: str | None = None, kind: str | None = None, since: int | None = None,
              limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` records matching every given filter, oldest first.

        ``since``: only records whose resulting revision is greater (records without one, such as
        token revocations, are kept only when ``since`` is not given)."""
        out: list[dict[str, Any]] = []
        for rec in reversed(self.records):
            if subject is not None and rec.get("subject") != subject:
                continue
            if kind is not None and rec.get("kind") != kind:
                continue
            if since is not None and not (isinstance(rec.get("revision"), int) and rec["revision"] > since):
                continue
            out.append(dict(rec))
            if len(out) >= limit:
                break
        out.reverse()
        return out

    def iter_records(self) -> Iterator[Record]:
        """The records, oldest first, without building the flat tuple (``records``)."""
        for chunk in self.chunks:
            yield from chunk

    def to_wire(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records], "dropped": self.dropped, "next_seq": self.next_seq}

    def from_wire(self, data: Any) -> AuditLog:
        """Restored from ``to_wire`` output, keeping this log's capacity (absent in older dumps: empty)."""
        if not isinstance(data, Mapping):
            return replace(self, chunks=(), size=0, dropped=0, next_seq=1)
        # A decoded dump's records are fresh dicts of our own: kept, not copied (10,000 copies and
        # ABC checks were ~40 ms of every snapshot install).
        records = [r if type(r) is dict else dict(r) for r in data.get("records", ())
                   if type(r) is dict or isinstance(r, Mapping)]
        chunks, size, drop = _trim([tuple(records[i:i + CHUNK]) for i in range(0, len(records), CHUNK)],
                                   len(records), self.capacity)
        return replace(self, chunks=chunks, size=size, dropped=int(data.get("dropped", 0)) + drop,
                       next_seq=int(data.get("next_seq", len(records) + 1)))


def _trim(chunks: list[tuple[Record, ...]], size: int, capacity: int) -> tuple[tuple[tuple[Record, ...], ...], int, int]:
    """(chunks, size, dropped) keeping the newest ``capacity`` records (whole old chunks are
    dropped; the oldest kept chunk may be cut)."""
    excess = size - max(capacity, 0)
    dropped = 0
    while excess > 0 and chunks:
        first = chunks[0]
        if len(first) <= excess:
            chunks.pop(0)
            excess -= len(first)
            dropped += len(first)
        else:
            chunks[0] = first[excess:]
            dropped += excess
            excess = 0
    return tuple(chunks), size - dropped, dropped


def _meta(cmd: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = cmd.get("audit")
    if not isinstance(raw, dict) and not isinstance(raw, Mapping):  # dict first: the ABC check is slow
        return None
    meta = {name: raw.get(name) for name in META_FIELDS}
    for name in ("subject", "jti", "role", "client", "request_id"):
        value = meta[name]
        meta[name] = value[:200] if isinstance(value, str) else None
    meta["time"] = float(raw["time"]) if isinstance(raw.get("time"), (int, float)) else None
    return meta


def records_for(cmd: Mapping[str, Any], result: Mapping[str, Any], revision: int,
                txn: Txn | None = None) -> list[dict[str, Any]]:
    """The records one applied command leaves: none unless it carries audit metadata, is of an
    audited type, succeeded and was not a deduplicated retry. ``revision``: the config revision
    after it (for commands whose result names none). ``txn``: ``cmd["txn"]`` already decoded."""
    meta = _meta(cmd)
    kind = cmd.get("type")
    if meta is None or kind not in AUDITED_COMMANDS or not result.get("ok") or result.get("duplicate"):
        return []
    resulting = result.get("revision")
    base = {**meta, "revision": resulting if isinstance(resulting, int) else revision}
    if kind == "txn":
        if txn is None:
            try:
                txn = decode_txn(cmd["txn"])
            except (GatewayError, KeyError, TypeError):
                return []
        base["request_id"] = base["request_id"] or txn.request_id
        return [{**base, "op": op.action, "kind": op.kind, "id": op.id} for op in txn.ops]
    if kind in ("token_revoke", "token_rotate"):
        base["request_id"] = base["request_id"] or (str(cmd["request_id"]) if cmd.get("request_id") else None)
        op = "revoke" if kind == "token_revoke" else "rotate"
        target = str(cmd.get("jti"))[:200] if kind == "token_revoke" else None
        return [{**base, "op": op, "kind": "tokens", "id": target}]
    base["request_id"] = base["request_id"] or (str(cmd["request_id"]) if cmd.get("request_id") else None)
    target = f"{cmd.get('upstream')}/{cmd.get('host')}:{cmd.get('port')}"
    op = "put" if kind == "reg_put" else "delete"
    return [{**base, "op": op, "kind": "registrations", "id": target[:300]}]
