"""Preparing the next config from a frame: verified against the frame's hash, built off the loop."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import CodecError, ConfigState, GatewayError, Op, Txn
from gateway.codec import encode_snapshot
from gateway.protocol import DeltaFrame, JoinedSnapshot
from proxy.frames_apply import prepare_delta, prepare_snapshot


def states() -> tuple[ConfigState, ConfigState, DeltaFrame]:
    one, _ = ConfigState.empty().apply(Txn("a", (Op("put", "upstreams", "u", {"targets": [{"host": "h", "port": 1}]}),)))
    two, delta = one.apply(Txn("b", (Op("put", "routes", "r", {"paths": ["/r"], "upstream": "u"}),)))
    return one, two, DeltaFrame.of(delta, two.hash())


def recording_build(calls: list[Any]) -> Any:
    def build(snapshot: Any, *, revision: int, hash: str) -> Any:
        calls.append((snapshot, revision, hash))
        return ("runtime", revision)

    return build


def test_prepare_delta_verifies_the_hash_and_builds_the_new_state() -> None:
    one, two, frame = states()
    calls: list[Any] = []
    new, runtime, body = prepare_delta(one, frame, None, None, recording_build(calls))
    assert new == two and runtime == ("runtime", two.revision) and body is None
    assert calls == [(two, two.revision, two.hash())]  # the state itself, not a snapshot dict
    with pytest.raises(GatewayError, match="hash mismatch"):
        prepare_delta(one, DeltaFrame(frame.base, frame.revision, frame.ops, "0" * 64), None, None,
                      recording_build([]))  # fmt: skip


def test_prepare_snapshot_keeps_the_received_bytes_and_refuses_a_wrong_hash() -> None:
    _, two, _ = states()
    data = encode_snapshot(two)
    calls: list[Any] = []
    state, runtime, body = prepare_snapshot(JoinedSnapshot(two.revision, two.hash(), data), recording_build(calls))
    assert state == two and body == data and calls[0] == (two, two.revision, two.hash())
    with pytest.raises(CodecError, match="hash mismatch"):
        prepare_snapshot(JoinedSnapshot(two.revision, "0" * 64, data), recording_build([]))
    assert len(calls) == 1  # nothing is built from a snapshot that fails verification
