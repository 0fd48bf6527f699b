"""Proposal batching (cluster/raft_proposals.py): one loop iteration's commands share a log entry,
each still gets its own result, and a batch denied for one command's deadline costs the others
nothing."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from cluster.raft import CommandRejected, RaftNode
from cluster.raft_proposals import (
    BATCH_DENIED,
    ProposalBatcher,
    apply_batch,
    decode_batch,
    encode_batch,
    is_batch,
)
from cluster.state_machine import command_deadline, encode_command
from tests.support.http import wait_for
from tests.support.loop import LoopTicker
from tests.support.raft import recording_members, wait_for_leader


def test_a_batch_carries_its_commands_and_their_earliest_deadline() -> None:
    payloads = [encode_command({"type": "barrier", "n": i}, 100.0 + i) for i in range(3)] + [b"no-deadline"]
    batch = encode_batch(payloads)
    assert is_batch(batch) and decode_batch(batch) == payloads
    assert command_deadline(batch) == 100.0  # what the leader's deadline queue reads
    assert command_deadline(encode_batch([b"a", b"b"])) == math.inf
    for p in payloads:  # no command encode_command makes looks like a batch
        assert not is_batch(p)
    assert not is_batch(encode_command({"type": "txn", "txn": b"\xc1" * 20}, 5.0))


def test_apply_batch_applies_each_command_in_order_and_passes_single_ones_through() -> None:
    seen: list[bytes] = []
    apply = apply_batch(lambda p: seen.append(p) or len(seen))
    assert apply(encode_batch([b"x", b"y", b"z"])) == [1, 2, 3] and seen == [b"x", b"y", b"z"]
    assert apply(b"alone") == 4 and seen[-1] == b"alone"


class Proposals:
    """What the batcher hands to pysyncobj, answered by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def __call__(self, payload: bytes, answer: Any) -> None:
        self.sent.append((payload, answer))


async def test_one_iterations_proposals_are_one_entry_and_the_answer_is_split() -> None:
    proposals = Proposals()
    batcher = ProposalBatcher(proposals)
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(5)]
    for i, fut in enumerate(futs):
        batcher.propose(b"p%d" % i, fut)
    assert proposals.sent == []  # flushed in the next iteration, not one by one
    await asyncio.sleep(0)
    assert len(proposals.sent) == 1 and decode_batch(proposals.sent[0][0]) == [b"p%d" % i for i in range(5)]
    proposals.sent[0][1](["r0", "r1", "r2", "r3", "r4"], FAIL_REASON.SUCCESS)
    assert await asyncio.gather(*futs) == [(f"r{i}", FAIL_REASON.SUCCESS) for i in range(5)]
    assert (batcher.entries, batcher.batched) == (1, 5)
    alone = loop.create_future()
    batcher.propose(b"single", alone)
    await asyncio.sleep(0)
    assert proposals.sent[1][0] == b"single"  # a proposal without company goes as it is
    proposals.sent[1][1]("r", FAIL_REASON.SUCCESS)
    assert await alone == ("r", FAIL_REASON.SUCCESS)


async def test_batches_are_bounded_by_count_and_bytes() -> None:
    proposals = Proposals()
    batcher = ProposalBatcher(proposals, max_commands=4, max_bytes=1000)
    loop = asyncio.get_running_loop()
    for i in range(10):
        batcher.propose(b"c%d" % i, loop.create_future())
    batcher.propose(b"x" * 1500, loop.create_future())  # larger than max_bytes: alone
    await asyncio.sleep(0)
    sizes = [len(decode_batch(p)) if is_batch(p) else 1 for p, _ in proposals.sent]
    assert sizes == [4, 4, 2, 1], sizes


async def test_a_denied_batch_retries_every_command_except_the_one_whose_deadline_passed() -> None:
    proposals = Proposals()
    batcher = ProposalBatcher(proposals)
    loop = asyncio.get_running_loop()
    early, late, other = (encode_command({"type": "barrier", "n": i}, d) for i, d in enumerate((10.0, 20.0, 30.0)))
    futs = [loop.create_future() for _ in range(3)]
    for payload, fut in zip((late, early, other), futs, strict=True):
        batcher.propose(payload, fut)
    await asyncio.sleep(0)
    proposals.sent[0][1](None, FAIL_REASON.REQUEST_DENIED)
    assert [err for _, err in await asyncio.gather(*futs)] == [BATCH_DENIED, FAIL_REASON.REQUEST_DENIED, BATCH_DENIED]
    # any other failure is every command's
    more = [loop.create_future() for _ in range(2)]
    for fut in more:
        batcher.propose(early, fut)
    await asyncio.sleep(0)
    proposals.sent[1][1](None, FAIL_REASON.NOT_LEADER)
    assert [err for _, err in await asyncio.gather(*more)] == [FAIL_REASON.NOT_LEADER] * 2


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[tuple[RaftNode, list[bytes]]]]:
    with recording_members(tmp_path, fsync=True) as out:
        yield out


async def test_concurrent_commands_share_log_entries_on_a_real_cluster(
    members: list[tuple[RaftNode, list[bytes]]],
) -> None:
    nodes = [n for n, _ in members]
    leader = wait_for_leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    await leader.submit(b"warm-up", timeout=5)
    commit = leader.status()["commit_index"]
    via_leader = [encode_command({"type": "barrier", "n": i}, time.time() + 10) for i in range(100)]
    via_follower = [encode_command({"type": "barrier", "f": i}, time.time() + 10) for i in range(20)]
    results = await asyncio.gather(*(leader.submit(p, timeout=10) for p in via_leader),
                                   *(follower.submit(p, timeout=10) for p in via_follower))
    entries = leader.status()["commit_index"] - commit
    print(len(results), "commands in", entries, "log entries")
    assert entries <= 10, entries  # without batching: one entry per command (120)
    assert leader.status()["proposals"]["batched"] >= 100
    # every command its own result (the recording apply_fn returns how many it has applied)
    leader_results = results[: len(via_leader)]
    assert len(set(leader_results)) == len(via_leader)
    wait_for(lambda: all(n.status()["applied_index"] >= leader.status()["commit_index"] for n in nodes), 10,
             "every member applied")
    logs = [applied for _, applied in members]
    assert logs[0] == logs[1] == logs[2]  # the same commands in the same order on every member
    assert sorted(p for p in logs[0] if p in set(via_leader + via_follower)) == sorted(via_leader + via_follower)


async def test_a_late_command_in_a_batch_is_refused_and_the_others_are_applied(
    members: list[tuple[RaftNode, list[bytes]]],
) -> None:
    nodes = [n for n, _ in members]
    leader = wait_for_leader(nodes)
    await leader.submit(b"warm-up", timeout=5)
    late = encode_command({"type": "barrier", "late": True}, time.time() - 0.01)
    fresh = [encode_command({"type": "barrier", "n": i}, time.time() + 10) for i in range(8)]
    outcomes = await asyncio.gather(leader.submit(late, timeout=5), *(leader.submit(p, timeout=5) for p in fresh),
                                    return_exceptions=True)
    assert isinstance(outcomes[0], CommandRejected), outcomes[0]
    assert not any(isinstance(o, BaseException) for o in outcomes[1:]), outcomes
    wait_for(lambda: all(n.status()["applied_index"] >= leader.status()["commit_index"] for n in nodes), 10,
             "every member applied")
    for _, applied in members:
        assert late not in applied and all(p in applied for p in fresh)


async def test_a_write_resumes_in_the_loop_iteration_after_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``submit`` wakes in the iteration after the tick thread's answer (``wait_for(shield(fut))``
    took three, each an epoll round on every write's path)."""
    import cluster.raft_proposals as proposals

    ticker = LoopTicker()
    with recording_members(tmp_path, fsync=False) as members:
        nodes = [n for n, _ in members]
        leader = wait_for_leader(nodes, with_quorum=True)
        await leader.submit(b"warm-up", timeout=5)
        resolved = ticker.stamp_calls(monkeypatch, proposals, "_resolve")
        ticker.start()
        try:
            for i in range(3):
                resolved.clear()
                await leader.submit(f"w{i}".encode(), timeout=5)
                assert len(resolved) == 1
                assert ticker.count - resolved[0] <= 1, ("resumed", ticker.count - resolved[0], "iterations later")
        finally:
            ticker.stop()
