"""No zombie writes (cluster/raft_deadline.py): a command past its deadline never enters the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import pickle as ps_pickle

from cluster.raft import CommandRejected, RaftNode, RaftSettings
from cluster.raft_deadline import DeadlineQueue, payload_deadline
from cluster.state_machine import encode_command
from tests.support.cluster import free_port


def pysyncobj_command(payload: bytes) -> bytes:
    return b"\x00" + ps_pickle.dumps((7, (payload,)))  # what @replicated _apply(payload) enqueues


def test_queue_drops_expired_commands_and_answers_them() -> None:
    now = [100.0]
    rejected: list[Any] = []
    q = DeadlineQueue(10, rejected.append, clock=lambda: now[0])
    q.put_nowait((pysyncobj_command(encode_command({"type": "barrier"}, 99.0)), "late"))
    q.put_nowait((pysyncobj_command(encode_command({"type": "barrier"})), "no-deadline"))
    q.put_nowait((b"\x01noop", "membership"))
    q.put_nowait((pysyncobj_command(encode_command({"type": "barrier"}, 101.0)), "in-time"))
    assert [q.get_nowait()[1] for _ in range(3)] == ["no-deadline", "membership", "in-time"]
    assert rejected == ["late"] and q.expired == 1
    assert payload_deadline(pysyncobj_command(encode_command({"type": "x"}, 5.5))) == 5.5


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[RaftNode, list[bytes]]]:
    applied: list[bytes] = []
    settings = RaftSettings(self_addr=f"127.0.0.1:{free_port()}", partners=[], password="x",
                            data_dir=str(tmp_path), fsync=False)
    node = RaftNode(settings, apply_fn=lambda p: applied.append(p) or len(applied), snapshot_fn=lambda: b"",
                    restore_fn=lambda b: None)
    try:
        deadline = time.monotonic() + 10
        while node.status()["role"] != "leader":
            assert time.monotonic() < deadline, "single node never became leader"
            await asyncio.sleep(0.05)
        yield node, applied
    finally:
        node.destroy()


async def test_an_expired_command_is_refused_and_never_applied(single: tuple[RaftNode, list[bytes]]) -> None:
    node, applied = single
    log_len = node.status()["log_len"]
    late = encode_command({"type": "barrier"}, time.time() - 0.01)
    with pytest.raises(CommandRejected, match="deadline"):
        await node.submit(late, timeout=3)
    assert applied == [] and node.status()["log_len"] == log_len and node.status()["expired_commands"] == 1
    fresh = encode_command({"type": "barrier"}, time.time() + 3)
    assert await node.submit(fresh, timeout=3) == 1 and applied == [fresh]


async def test_concurrent_writes_share_journal_flushes(tmp_path: Path) -> None:
    """Group commit on a real member with fsync on: 64 concurrent commands, far fewer flushes."""
    applied: list[bytes] = []
    settings = RaftSettings(self_addr=f"127.0.0.1:{free_port()}", partners=[], password="x",
                            data_dir=str(tmp_path), fsync=True)
    node = RaftNode(settings, apply_fn=lambda p: applied.append(p) or len(applied), snapshot_fn=lambda: b"",
                    restore_fn=lambda b: None)
    try:
        deadline = time.monotonic() + 10
        while node.status()["role"] != "leader":
            assert time.monotonic() < deadline, "single node never became leader"
            await asyncio.sleep(0.05)
        node._batcher.max_commands = 1  # one entry per command: the journal's own group commit
        before = node._core._journal.flushes
        payloads = [encode_command({"type": "barrier", "n": i}, time.time() + 10) for i in range(64)]
        await asyncio.gather(*(node.submit(p, timeout=10) for p in payloads))
        flushes = node._core._journal.flushes - before
        assert sorted(applied) == sorted(payloads)
        assert 1 <= flushes < 32, f"{flushes} journal flushes for 64 concurrent writes"
    finally:
        node.destroy()
