"""The replicated state machine as a pure value (cluster/state_machine.py): no Raft, no threads."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgpack
import pytest

from cluster import state_machine as sm
from cluster.state_machine import Dedupe, ReplicatedState, command_deadline, decode_command, encode_command
from gateway.codec import encode_delta, encode_txn
from gateway.model import Op, Txn

UPSTREAM = {"targets": [{"host": "127.0.0.1", "port": 9001}]}


def txn_cmd(request_id: str, *ops: Op, expect_revision: int | None = None) -> dict[str, Any]:
    return {"type": "txn", "txn": encode_txn(Txn(request_id=request_id, ops=tuple(ops),
                                                   expect_revision=expect_revision))}


def put(uid: str, port: int = 9001) -> Op:
    return Op("put", "upstreams", uid, {"targets": [{"host": "127.0.0.1", "port": port}]})


def test_apply_is_pure_and_deterministic() -> None:
    s0 = ReplicatedState.empty()
    s1, r1 = s0.apply(encode_command(txn_cmd("a", put("u1"))))
    assert r1["ok"] and r1["revision"] == 1 and r1["results"][0]["id"] == "u1"
    assert s0.config.revision == 0 and s0.config.get("upstreams", "u1") is None  # old value untouched
    again, r_again = s0.apply(encode_command(txn_cmd("a", put("u1"))))
    assert again.config == s1.config and r_again == r1


def test_results_are_the_api_form_sharing_the_stored_spec() -> None:
    s1, r1 = ReplicatedState.empty().apply(txn_cmd("a", put("u1")))
    s2, r2 = s1.apply(txn_cmd("b", Op("delete", "upstreams", "u1")))
    stored = s1.config.get("upstreams", "u1")
    assert stored is not None
    assert r1["results"] == [stored.to_json()] and r2["results"] == [stored.to_json()]
    written = r1["results"][0]
    assert list(written)[-3:] == ["id", "created_revision", "mod_revision"]
    assert written["targets"] is stored.spec["targets"]  # not a thawed copy per member and write
    assert msgpack.unpackb(msgpack.packb(r1), raw=False) == r1  # the dedupe table is dumped as msgpack
    with pytest.raises(TypeError):
        written["targets"].append({})  # shared with the state: read-only


def test_dedupe_returns_first_result_and_does_not_reapply() -> None:
    s1, r1 = ReplicatedState.empty().apply(txn_cmd("req-1", put("u1")))
    s2, r2 = s1.apply(txn_cmd("req-1", put("u1")))  # a retry carrying the same request id
    assert r2 == {**r1, "duplicate": True}
    s2, reused = s2.apply(txn_cmd("req-1", put("u1", 9002)))  # the same id for another request: refused
    assert reused["error"]["code"] == "conflict" and reused["error"]["path"] == "X-Request-Id"
    assert s2.config.revision == 1 and s2.config.get("upstreams", "u1").spec["targets"][0]["port"] == 9001  # type: ignore[union-attr]
    s3, r3 = s2.apply(txn_cmd("req-2", put("u1", 9002)))
    assert r3["ok"] and s3.config.revision == 2


def test_rejected_txn_changes_nothing_and_is_remembered() -> None:
    s1, _ = ReplicatedState.empty().apply(txn_cmd("a", put("u1")))
    s2, r = s1.apply(txn_cmd("b", put("u2"), expect_revision=7))
    assert not r["ok"] and r["error"]["code"] == "conflict"
    assert s2.config is s1.config and s2.deltas == s1.deltas
    _, again = s2.apply(txn_cmd("b", put("u2")))
    assert again["duplicate"] and not again["ok"]


def test_dedupe_table_is_bounded_oldest_dropped() -> None:
    table = Dedupe(capacity=64)
    for i in range(200):
        table = table.put(f"r{i}", {"ok": True, "i": i})
    assert len(table) <= 64 and len(table) >= 64 - table.generation_size
    assert table.get("r199") == {"ok": True, "i": 199} and table.get("r0") is None
    partial = Dedupe(capacity=64)
    for i in range(20):
        partial = partial.put(f"p{i}", {"ok": True})
    grown = partial.put("x", {"ok": True})
    assert all(a is b for a, b in zip(grown.generations[:-1], partial.generations[:-1], strict=False))  # shared
    assert partial.get("x") is None and grown.get("x") == {"ok": True}


def test_dedupe_size_is_the_generations_total_also_with_repeated_ids() -> None:
    table = Dedupe(capacity=40)
    for i in range(300):
        table = table.put(f"r{i % 70}", {"ok": True, "i": i})  # ids repeat, within and across generations
        assert len(table) == sum(len(g) for g in table.generations)
    assert table.with_items(table.items()).size == sum(len(g) for g in table.with_items(table.items()).generations)


@pytest.mark.parametrize("capacity", [1, 7, 40, 512, 10_000])
def test_dedupe_restored_in_one_pass_has_the_generations_of_one_put_per_item(capacity: int) -> None:
    # Members must evict the same request ids at the same write: a member restored from a snapshot
    # must hold exactly the generations of the members that applied the writes one by one.
    seed = 20261208
    rng = random.Random(seed)
    items = [(f"r{rng.randrange(capacity * 2 + 5)}", {"ok": True, "i": i}) for i in range(capacity * 3 + 11)]
    one_by_one = Dedupe(capacity=capacity)
    for k, v in items:
        one_by_one = one_by_one.put(k, v)
    restored = Dedupe(capacity=capacity).with_items(iter(items))
    assert [list(g.items()) for g in restored.generations] == [list(g.items()) for g in one_by_one.generations], seed
    assert restored.size == one_by_one.size
    again = Dedupe(capacity=capacity).with_items(one_by_one.iter_items())  # a dump of it, restored
    assert [list(g.items()) for g in again.generations] == [list(g.items()) for g in one_by_one.generations]
    assert again.put("new", {"ok": True}).generations == one_by_one.put("new", {"ok": True}).generations


def test_txn_fingerprint_of_a_frozen_body_is_that_of_its_plain_copy() -> None:
    import hashlib

    import msgpack

    from cluster.state_machine import txn_fingerprint
    from gateway.frozen import freeze, thaw
    from gateway.model import Op, Txn

    body = {"targets": [{"host": "10.0.0.1", "port": 80, "weight": 3}], "hash_on": "ip", "tags": ["a", "b"]}
    txn = Txn(request_id="fp", ops=(Op("put", "upstreams", "u1", freeze(body)), Op("delete", "routes", "r1")))
    plain = [[op.action, op.kind, op.id, thaw(op.body) if op.body is not None else None] for op in txn.ops]
    assert txn_fingerprint(txn) == hashlib.sha256(msgpack.packb(plain, use_bin_type=True)).hexdigest()[:32]


def test_token_commands_revoke_expire_and_rotate_once() -> None:
    s = ReplicatedState.empty()
    s, r = s.apply({"type": "token_revoke", "jti": "j1", "exp": 100, "now": 50})
    assert r == {"ok": True, "generation": 0, "revoked": 1}
    s, r = s.apply({"type": "token_revoke", "jti": "j2", "exp": None, "now": 60})
    assert r["revoked"] == 2
    s, r = s.apply({"type": "token_revoke", "jti": "j3", "exp": 500, "now": 200})  # j1 expired at 100
    assert set(s.tokens["revoked"]) == {"j2", "j3"}
    s, r = s.apply({"type": "token_rotate", "request_id": "rot-1", "now": 300})
    assert r["generation"] == 1
    s, r = s.apply({"type": "token_rotate", "request_id": "rot-1", "now": 301})  # retried rotation
    assert r["duplicate"] and s.tokens["generation"] == 1


def test_delta_log_trimmed_by_count_and_bytes() -> None:
    s = ReplicatedState.empty(delta_log_entries=3)
    for i in range(6):
        s, r = s.apply(txn_cmd(f"r{i}", put(f"u{i}")))
        assert r["ok"]
    assert [d.base for d, _ in s.deltas] == [3, 4, 5]
    assert s.deltas_since(3) is not None and s.deltas_since(2) is None and s.deltas_since(6) == []
    assert s.delta_bytes == sum(size for _, size in s.deltas)
    one = s.deltas[-1][1]
    small = ReplicatedState.empty(delta_log_bytes=one * 2 + 1)
    for i in range(6):
        small, _ = small.apply(txn_cmd(f"r{i}", put(f"u{i}")))
    assert 1 <= len(small.deltas) <= 2 and small.delta_bytes <= one * 2 + 1 + one
    big = ReplicatedState.empty(delta_log_bytes=1)  # never fewer than the newest delta
    big, _ = big.apply(txn_cmd("r", put("u")))
    assert len(big.deltas) == 1


def test_dump_and_restore_round_trip() -> None:
    s = ReplicatedState.empty(delta_log_entries=10)
    for i in range(4):
        s, _ = s.apply(txn_cmd(f"r{i}", put(f"u{i}")))
    s, _ = s.apply({"type": "token_rotate", "request_id": "rot", "now": 1})
    blob = s.to_dump()
    restored = ReplicatedState.empty(delta_log_entries=10).from_dump(blob)
    assert restored.config == s.config and restored.config.hash() == s.config.hash()
    assert [d for d, _ in restored.deltas] == [d for d, _ in s.deltas] and restored.delta_bytes == s.delta_bytes
    assert restored.dedupe.items() == s.dedupe.items() and dict(restored.tokens) == dict(s.tokens)
    _, dup = restored.apply(txn_cmd("r2", put("u2")))
    assert dup["duplicate"]


def test_the_sliced_dump_is_the_dump_and_reads_only_the_value_it_was_taken_from() -> None:
    s = ReplicatedState.empty(delta_log_entries=300, dedupe_entries=600, audit_entries=600)
    stamp = {"subject": "t", "jti": "j", "role": "admin", "client": "127.0.0.1", "request_id": None, "time": 1.0}
    for i in range(700):  # past every table's capacity, so each is long and trimmed
        s, _ = s.apply({**txn_cmd(f"r{i}", put(f"u{i % 40}", 9000 + i)), "audit": stamp})
    whole = msgpack.packb({  # the encoding dumps had before they were sliced: members must agree
        "state": s.config.to_snapshot(), "deltas": [encode_delta(d) for d, _ in s.deltas],
        "dedupe": [[k, v] for k, v in s.dedupe.items()], "tokens": dict(s.tokens), "reg_epoch": s.reg_epoch,
        "audit": s.audit.to_wire()}, use_bin_type=True)
    slices = s.dump_slices(batch=64)
    later, _ = s.apply(txn_cmd("after", put("u1", 1)))  # applied while the slices are being taken
    parts = list(slices)
    assert len(parts) > 10 and b"".join(parts) == whole == s.to_dump()
    assert later.to_dump() != whole and ReplicatedState.empty().from_dump(whole).config == s.config


def test_bad_and_unknown_commands_never_raise() -> None:
    s = ReplicatedState.empty()
    for payload in (b"\xff\x00garbage", encode_command({"type": "nope"}), b"\xc1short"):
        s2, r = s.apply(payload)
        assert s2 is s and not r["ok"] and r["error"]["code"] == "bad_encoding"
    s2, r = s.apply({"type": "txn", "txn": b"not a txn"})
    assert s2 is s and not r["ok"]


def test_deadline_framing() -> None:
    cmd = {"type": "barrier"}
    assert command_deadline(encode_command(cmd)) is None
    framed = encode_command(cmd, 1234.5)
    assert command_deadline(framed) == 1234.5 and decode_command(framed) == cmd
    with pytest.raises(ValueError):
        decode_command(encode_command({"no": "type"}))  # type: ignore[dict-item]


def test_register_command_extends_the_dispatch_table() -> None:
    def audit(state: ReplicatedState, cmd: dict[str, Any]) -> tuple[ReplicatedState, dict[str, Any]]:
        return state, {"ok": True, "echo": cmd["x"]}

    sm.register_command("test_audit", audit)
    try:
        _, r = ReplicatedState.empty().apply({"type": "test_audit", "x": 3})
        assert r == {"ok": True, "echo": 3}
        with pytest.raises(ValueError):
            sm.register_command("txn", audit)
    finally:
        del sm.COMMANDS["test_audit"]


def test_token_commands_are_pure_and_a_repeated_revocation_adds_nothing() -> None:
    s0 = ReplicatedState.empty()
    s1, _ = s0.apply({"type": "token_revoke", "jti": "j1", "exp": 100, "now": 50})
    assert dict(s0.tokens) == {"generation": 0, "revoked": {}}  # the old value is untouched
    s2, r = s1.apply({"type": "token_revoke", "jti": "j1", "exp": 100, "now": 51})
    assert r["ok"] and r["revoked"] == 1 and s2.tokens["revoked"] == {"j1": 100}
    s3, r = s2.apply({"type": "token_rotate", "request_id": "rot", "now": 52})
    assert r["generation"] == 1 and s2.tokens["generation"] == 0 and s3.tokens["revoked"] == {"j1": 100}
    same, again = ReplicatedState.empty().apply({"type": "token_revoke", "jti": "j1", "exp": 100, "now": 50})
    assert dict(same.tokens) == dict(s1.tokens) and again["revoked"] == 1  # deterministic on every member


def test_a_dump_restores_revocations_epoch_and_limits_of_the_restoring_value() -> None:
    s = ReplicatedState.empty(delta_log_entries=10)
    s, _ = s.apply(txn_cmd("r", put("u")))
    s, _ = s.apply({"type": "token_revoke", "jti": "j9", "exp": None, "now": 1})
    s = dataclasses.replace(s, reg_epoch=7)  # as a reg_grant in term 7 would leave it
    blob = s.to_dump()
    restored = ReplicatedState.empty(delta_log_entries=2).from_dump(blob)
    assert restored.tokens["revoked"] == {"j9": None} and restored.reg_epoch == s.reg_epoch
    assert restored.to_dump() == blob  # dump(restore(dump)) is the same bytes: every member agrees
    for i in range(3):  # the restoring value's own limit trims the restored log from then on
        restored, _ = restored.apply(txn_cmd(f"x{i}", put(f"x{i}")))
    assert len(restored.deltas) == 2
