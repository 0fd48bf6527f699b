"""ReadIndex reads (cluster/raft_read.py) on three real in-process members on loopback: a read
index without a log entry, on the leader and through a follower; a cut-off leader cannot get one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.raft import RaftNode
from cluster.raft_read import ReadIndexMixin, ReadIndexUnavailable
from tests.support.http import wait_for
from tests.support.loop import LoopTicker
from tests.support.raft import RecordingTransport, recording_members, wait_for_leader


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[tuple[RaftNode, list[bytes]]]]:
    with recording_members(tmp_path, fsync=False) as out:
        yield out


async def test_read_index_without_a_log_entry_on_leader_and_follower(
    members: list[tuple[RaftNode, list[bytes]]],
) -> None:
    nodes = [n for n, _ in members]
    leader = wait_for_leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    for i in range(3):
        await leader.submit(f"w{i}".encode(), timeout=5)
    wait_for(lambda: all(n.status()["applied_index"] == leader.status()["commit_index"] for n in nodes), 10,
             "every member applied")
    log_len = leader.status()["log_len"]
    rounds = leader.read_index_rounds
    index = await leader.read_index(2.0)
    assert index == leader.status()["commit_index"]
    results = await asyncio.gather(*(leader.read_index(2.0) for _ in range(20)))
    assert all(r == index for r in results)
    assert leader.status()["log_len"] == log_len, "a read must not append to the log"
    assert leader.read_index_rounds - rounds <= 21
    # A write through the leader, then a read through the follower sees it applied there.
    await leader.submit(b"after", timeout=5)
    committed = leader.status()["commit_index"]
    got = await follower.read_index(2.0)
    assert got >= committed and follower.status()["applied_index"] >= committed
    assert leader.status()["log_len"] == log_len + 1


async def test_a_leader_without_a_majority_gets_no_read_index(members: list[tuple[RaftNode, list[bytes]]]) -> None:
    nodes = [n for n, _ in members]
    leader = wait_for_leader(nodes)
    await leader.submit(b"x", timeout=5)
    for n in nodes:
        if n is not leader:
            n.destroy_synchronous()  # the leader keeps believing it leads for leader_fallback_timeout
    with pytest.raises(ReadIndexUnavailable):
        await leader.read_index(2.0)


class _Follower(ReadIndexMixin):
    """The mixin on a stand-in follower: just the pysyncobj state it reads."""

    hasQuorum = True

    def __init__(self) -> None:
        self._SyncObj__raftState = 0  # follower
        self._SyncObj__raftLeader: object = "old-leader"
        self._SyncObj__transport = RecordingTransport()
        self._read_init()

    def addOnTickCallback(self, fn: object) -> None:  # noqa: N802 - pysyncobj's name
        pass


def test_a_follower_read_waiting_for_a_leader_that_lost_office_fails_over_at_once() -> None:
    node = _Follower()
    answers: list[tuple[int | None, str | None]] = []
    node._read_new.append(lambda index, error: answers.append((index, error)))
    node._serve_reads()  # asks the old leader
    assert node._SyncObj__transport.sent[0][0] == "old-leader" and answers == []
    node._serve_reads()  # same leader: still waiting for its answer
    assert answers == []
    node._SyncObj__raftLeader = "new-leader"  # a paused or cut-off leader would never answer
    node._serve_reads()
    assert answers == [(None, "the leader changed")]  # the read falls back to the barrier now
    node._read_new.append(lambda index, error: answers.append((index, error)))
    node._serve_reads()
    assert node._SyncObj__transport.sent[-1][0] == "new-leader"


async def test_a_read_resumes_in_the_loop_iteration_after_its_read_index_arrives(
    members: list[tuple[RaftNode, list[bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick thread's answer wakes the reading task at once (it waited three loop iterations,
    each an epoll round, on every linearizable read's path)."""
    import cluster.raft_read as raft_read

    nodes = [n for n, _ in members]
    leader = wait_for_leader(nodes)
    await leader.submit(b"w", timeout=5)
    wait_for(lambda: all(n.status()["applied_index"] == leader.status()["commit_index"] for n in nodes), 10,
             "every member applied")
    ticker = LoopTicker()
    settled = ticker.stamp_calls(monkeypatch, raft_read, "_settle")
    follower = next(n for n in nodes if n is not leader)
    ticker.start()
    try:
        for node in (leader, follower):
            for _ in range(3):
                settled.clear()
                await node.read_index(2.0)
                assert len(settled) == 1
                assert ticker.count - settled[0] <= 1, ("resumed", ticker.count - settled[0], "iterations later")
    finally:
        ticker.stop()
