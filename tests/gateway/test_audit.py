"""gateway/audit.py and its place in the replicated state: bounded, deterministic, in dumps."""

from __future__ import annotations

from typing import Any

from cluster.audit_api import CALLER, stamp
from cluster.state_machine import ReplicatedState
from gateway.audit import AuditLog, records_for
from gateway.codec import encode_txn
from gateway.model import Op, Txn

META = {"time": 1700000000.5, "subject": "alice", "jti": "j1", "role": "admin", "client": "10.0.0.1",
        "request_id": None}


def txn_cmd(request_id: str, *ops: Op, audit: dict[str, Any] | None = META) -> dict[str, Any]:
    cmd: dict[str, Any] = {"type": "txn", "txn": encode_txn(Txn(request_id=request_id, ops=ops))}
    if audit is not None:
        cmd["audit"] = audit
    return cmd


def put(uid: str, port: int = 9001) -> Op:
    return Op("put", "upstreams", uid, {"targets": [{"host": "127.0.0.1", "port": port}]})


def test_records_of_an_audited_write_and_none_for_the_rest() -> None:
    s, _ = ReplicatedState.empty().apply(txn_cmd("r1", put("u1"), put("u2")))
    recs = s.audit.records
    assert [(r["seq"], r["op"], r["kind"], r["id"], r["revision"]) for r in recs] == [
        (1, "put", "upstreams", "u1", 1), (2, "put", "upstreams", "u2", 1)]
    assert recs[0]["subject"] == "alice" and recs[0]["request_id"] == "r1" and recs[0]["time"] == 1700000000.5
    s2, _ = s.apply(txn_cmd("r1", put("u1"), put("u2")))  # a deduplicated retry
    s3, r = s2.apply(txn_cmd("r2", Op("delete", "upstreams", "nope", None)))  # rejected
    s4, _ = s3.apply(txn_cmd("r3", put("u3"), audit=None))  # not an admin request (no caller)
    assert not r["ok"] and s4.audit.records == recs


def test_bounded_oldest_dropped_and_counted() -> None:
    s = ReplicatedState.empty(audit_entries=3)
    for i in range(5):
        s, _ = s.apply(txn_cmd(f"r{i}", put(f"u{i}")))
    assert [r["id"] for r in s.audit.records] == ["u2", "u3", "u4"]
    assert s.audit.dropped == 2 and s.audit.next_seq == 6


def test_in_dumps_and_restored_identically() -> None:
    s = ReplicatedState.empty()
    for i in range(3):
        s, _ = s.apply(txn_cmd(f"r{i}", put(f"u{i}")))
    s, _ = s.apply({"type": "token_rotate", "request_id": "rot", "now": 1, "audit": META})
    restored = ReplicatedState.empty().from_dump(s.to_dump())
    assert restored.audit == s.audit
    assert restored.audit.records[-1]["op"] == "rotate" and restored.audit.records[-1]["revision"] == 3
    older = ReplicatedState.empty().from_dump(ReplicatedState.empty().to_dump())
    assert older.audit.records == ()


def test_query_filters() -> None:
    log = AuditLog().append([
        {"subject": "a", "kind": "routes", "revision": 1}, {"subject": "b", "kind": "routes", "revision": 2},
        {"subject": "a", "kind": "tokens", "revision": 2}, {"subject": "a", "kind": "routes", "revision": 3}])
    assert [r["seq"] for r in log.query(subject="a")] == [1, 3, 4]
    assert [r["seq"] for r in log.query(kind="routes", since=1)] == [2, 4]
    assert [r["seq"] for r in log.query(limit=2)] == [3, 4]


def test_records_never_hold_bodies() -> None:
    op = Op("put", "consumers", "c1", {"credentials": {"key-auth": [{"key": "SECRET-KEY-123"}]}})
    recs = records_for(txn_cmd("r1", op), {"ok": True, "revision": 4}, 4)
    assert recs and "SECRET-KEY-123" not in repr(recs)


def test_stamp_adds_the_caller_only_to_audited_commands() -> None:
    assert stamp({"type": "txn"}) == {"type": "txn"}  # no request context
    token = CALLER.set({"subject": "s", "jti": "j", "role": "admin", "client": None, "request_id": None})
    try:
        stamped = stamp({"type": "txn"})
        assert stamped["audit"]["subject"] == "s" and isinstance(stamped["audit"]["time"], float)
        assert stamp({"type": "barrier"}) == {"type": "barrier"}
    finally:
        CALLER.reset(token)


def test_append_shares_the_old_records_and_trims_exactly() -> None:
    """A full log of 1,000 records: an append copies at most the chunks it changes (the newest and
    the trimmed oldest), never the whole log, and keeps exactly ``capacity`` records."""
    from gateway.audit import CHUNK

    log = AuditLog(capacity=1000)
    for i in range(1100):
        log = log.append([{"id": f"u{i}"}])
    assert len(log) == 1000 and log.dropped == 100 and log.next_seq == 1101
    assert [r["seq"] for r in log.records] == list(range(101, 1101))
    after = log.append([{"id": "x"}, {"id": "y"}])
    shared = sum(1 for chunk in after.chunks if any(chunk is old for old in log.chunks))
    assert shared >= len(after.chunks) - 2 and max(len(c) for c in after.chunks) <= CHUNK
    assert [r["seq"] for r in after.records] == list(range(103, 1103)) and after.dropped == 102
    restored = AuditLog(capacity=1000).from_wire(after.to_wire())
    assert restored == after and restored.records == after.records
    assert AuditLog(capacity=10).from_wire(after.to_wire()).records == after.records[-10:]


def test_records_from_an_already_decoded_txn_are_the_same() -> None:
    from gateway.codec import decode_txn

    cmd = txn_cmd("r9", put("u1"), Op("delete", "upstreams", "u2", None))
    result = {"ok": True, "revision": 7}
    assert records_for(cmd, result, 7, txn=decode_txn(cmd["txn"])) == records_for(cmd, result, 7)
    assert len(records_for(cmd, result, 7)) == 2
