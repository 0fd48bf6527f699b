"""Raft §5.3 fix: a stale AppendEntries replayed against a real follower must not truncate its log.

Three real RaftNode members run in this process on loopback. We record genuine AppendEntries
messages as the follower receives them, commit more entries, then replay an old one on the
follower's own tick thread: the log and the applied state stay intact. As a control, the same
replay through pysyncobj's unpatched handler does truncate applied entries — so this test fails
without the fix in cluster/raft.py.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from cluster import raft_core
from cluster.raft import RaftNode, RaftSettings
from cluster.raft_core import RaftCore
from tests.support.cluster import free_port
from tests.support.http import wait_for
from tests.support.raft import recording_members


class RecordingNode(RaftCore):
    """The pysyncobj member inside a RaftNode (white-box: these tests drive its message handler)."""

    facade: RaftNode
    applied: list[bytes]  # every payload this member applied, in order (set by the fixture)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: list[tuple[Any, dict[str, Any]]] = []
        super().__init__(*args, **kwargs)

    async def submit(self, payload: bytes, timeout: float) -> Any:
        return await self.facade.submit(payload, timeout)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if message.get("type") == "append_entries" and message.get("entries"):
            self.recorded.append((node, copy.deepcopy(message)))
        super()._SyncObj__onMessageReceived(node, message)

    def run_on_tick_thread(self, fn: Any) -> None:
        done = threading.Event()

        def once() -> None:
            # pysyncobj holds its callback lock while calling us: we cannot unregister from here.
            if done.is_set():
                return
            try:
                fn()
            finally:
                done.set()

        self.addOnTickCallback(once)
        try:
            assert done.wait(5), "tick thread did not run the callback"
        finally:
            self.removeOnTickCallback(once)

    def log_entries(self) -> list[tuple[int, int]]:
        raft_log = self._SyncObj__raftLog
        return [(raft_log[i][1], raft_log[i][2]) for i in range(len(raft_log))]


class RecordingFacade(RaftNode):
    __slots__ = ()
    core_class = RecordingNode


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[RecordingNode]]:
    with recording_members(tmp_path, fsync=False, node_class=RecordingFacade) as out:
        nodes: list[RecordingNode] = []
        for facade, applied in out:
            node = facade._core
            assert isinstance(node, RecordingNode)
            node.facade, node.applied = facade, applied
            nodes.append(node)
        yield nodes


async def test_stale_append_entries_does_not_truncate_applied_entries(members: list[RecordingNode]) -> None:
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "leader")
    follower = next(m for m in members if m is not leader)
    for i in range(5):
        await leader.submit(f"a{i}".encode(), timeout=5)
    wait_for(lambda: len(follower.recorded) >= 3, 5, "recorded append entries")
    node, stale = follower.recorded[1]
    for i in range(5):
        await follower.submit(f"b{i}".encode(), timeout=5)
    wait_for(lambda: len(follower.applied) == 10, 5, "follower applied all")
    log_before = follower.log_entries()
    applied_before = list(follower.applied)
    assert stale["prevLogIdx"] < log_before[-1][0], "the replayed message must be behind the log"

    follower.run_on_tick_thread(lambda: follower._SyncObj__onMessageReceived(node, copy.deepcopy(stale)))
    assert follower.log_entries() == log_before
    assert follower.applied == applied_before
    assert follower.stale_append_entries_trimmed >= 1
    # the cluster keeps working and the follower keeps applying in order
    await follower.submit(b"c0", timeout=5)
    wait_for(lambda: follower.applied[-1:] == [b"c0"], 5, "follower applied c0")
    assert follower.applied[:10] == applied_before

    # Control: pysyncobj's own handler truncates on the very same message.
    log_len = len(follower.log_entries())
    follower.run_on_tick_thread(
        lambda: SyncObj._SyncObj__onMessageReceived(follower, node, copy.deepcopy(stale))
    )
    assert len(follower.log_entries()) < log_len, "unpatched pysyncobj was expected to truncate"


async def test_partially_overlapping_append_entries_appends_only_new_entries(
    members: list[RecordingNode],
) -> None:
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "leader")
    follower = next(m for m in members if m is not leader)
    for i in range(3):
        await leader.submit(f"w{i}".encode(), timeout=5)
    await leader.submit(b"x0", timeout=5)
    wait_for(lambda: follower.applied[-1:] == [b"x0"], 5, "follower applied x0")
    node, msg = follower.recorded[-1]
    before = follower.log_entries()
    # Same message with the prev pointer moved one entry back and the entry it skips prepended:
    # the follower holds that entry already, so nothing may be truncated or duplicated.
    raft_log = follower._SyncObj__raftLog
    first = raft_log[0][1]
    prev_idx = msg["prevLogIdx"]
    assert prev_idx - 1 >= first, "the log must be long enough to shift the prev pointer"
    shifted = copy.deepcopy(msg)
    shifted["prevLogIdx"] = prev_idx - 1
    shifted["prevLogTerm"] = raft_log[prev_idx - 1 - first][2]
    shifted["entries"] = [tuple(raft_log[prev_idx - first])] + list(msg["entries"])
    follower.run_on_tick_thread(lambda: follower._SyncObj__onMessageReceived(node, shifted))
    assert follower.log_entries() == before
    await asyncio.wait_for(leader.submit(b"x1", timeout=5), 6)
    wait_for(lambda: follower.applied[-1:] == [b"x1"], 5, "follower applied x1")


async def test_snapshot_append_entries_does_not_commit_unverified_entries(members: list[RecordingNode]) -> None:
    """Found by the chaos suite (isolate-leader): pysyncobj raises a follower's commit index to
    min(leader commit, OWN log end) on every AppendEntries, also on the snapshot messages that carry
    no log position. A deposed leader's uncommitted entry from its old term was then applied as
    committed, its client got 200, and the entry vanished when the snapshot arrived: a lost write.
    The adapter keeps such messages from advancing the commit index."""
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "leader")
    follower = next(m for m in members if m is not leader)
    for i in range(3):
        await leader.submit(f"s{i}".encode(), timeout=5)
    wait_for(lambda: len(follower.recorded) >= 1 and len(follower.applied) == 3, 5, "follower caught up")
    node = follower.recorded[-1][0]
    seen: dict[str, int] = {}

    def inject(handler: Any) -> None:
        raft_log = follower._SyncObj__raftLog
        last_idx = raft_log[-1][1]
        commit_before = follower.raftCommitIndex
        # An entry this node wrote as leader of an earlier term and never got committed.
        raft_log.add(b"ghost", last_idx + 1, max(1, follower.raftCurrentTerm - 1))
        snapshot_msg = {"type": "append_entries", "term": follower.raftCurrentTerm,
                        "commit_index": last_idx + 10, "serialized": None}
        handler(node, snapshot_msg)
        seen["commit_after"] = follower.raftCommitIndex
        seen["ghost_idx"] = last_idx + 1
        # Undo, so the cluster stays healthy for the control run.
        follower._SyncObj__raftCommitIndex = commit_before
        follower._SyncObj__deleteEntriesFrom(last_idx + 1)

    follower.run_on_tick_thread(lambda: inject(follower._SyncObj__onMessageReceived))
    assert seen["commit_after"] < seen["ghost_idx"], "the unverified entry was marked committed"
    assert b"ghost" not in follower.applied

    # Control: pysyncobj's own handler commits the ghost entry on the same message.
    follower.run_on_tick_thread(lambda: inject(lambda n, m: SyncObj._SyncObj__onMessageReceived(follower, n, m)))
    assert seen["commit_after"] >= seen["ghost_idx"], "unpatched pysyncobj was expected to commit it"
    await leader.submit(b"after", timeout=5)
    wait_for(lambda: follower.applied[-1:] == [b"after"], 5, "follower still applies")
    assert b"ghost" not in follower.applied


async def test_status_never_pairs_a_new_term_with_an_old_role(members: list[RecordingNode]) -> None:
    """Found by the chaos suite (mixed, 5 nodes): a leader that just saw a higher term has the new
    term but not yet the follower role; read from another thread that looked like a second leader
    in the new term. status() reports role and term as recorded together between messages."""
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "leader")
    seen: dict[str, object] = {}

    def mid_update() -> None:  # runs on the tick thread, as pysyncobj's message handler would
        term = leader._SyncObj__raftCurrentTerm
        leader._SyncObj__raftCurrentTerm = term + 5  # the term is set first, the role right after
        try:
            seen["status"] = leader.status()
            seen["raw"] = leader.getStatus()
        finally:
            leader._SyncObj__raftCurrentTerm = term
        seen["term"] = term

    leader.run_on_tick_thread(mid_update)
    raw, status = seen["raw"], seen["status"]
    assert isinstance(raw, dict) and isinstance(status, dict)
    assert raw["state"] == 2 and raw["raft_term"] == seen["term"] + 5  # the torn view pysyncobj gives
    assert status["role"] == "leader" and status["term"] == seen["term"]  # ours: consistent


async def test_a_stale_snapshot_never_sets_the_applied_state_back(members: list[RecordingNode]) -> None:
    """Found by the chaos suite (pause-leader, CI smoke): a follower resumed after SIGSTOP drained
    snapshot transmissions the leader had queued meanwhile and installed each one, setting its
    applied state back to an older index; its own compaction then emptied its log and every later
    message raised IndexError. A snapshot not newer than the applied index is ignored, and our own
    dump file (which the transmission overwrote) is put back."""
    import os

    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "leader")
    follower = next(m for m in members if m is not leader)
    for i in range(3):
        await leader.submit(f"d{i}".encode(), timeout=5)
    leader.forceLogCompaction()
    wait_for(lambda: os.path.exists(leader._dump_file), 10, "leader dump")
    with open(leader._dump_file, "rb") as f:
        old_dump = f.read()
    for i in range(5):
        await leader.submit(f"e{i}".encode(), timeout=5)
    wait_for(lambda: follower.applied[-1:] == [b"e4"], 5, "follower applied e4")
    node = follower.recorded[-1][0]
    own_dump = b"own dump bytes"
    with open(follower._dump_file, "wb") as f:
        f.write(own_dump)
    seen: dict[str, int] = {}

    def deliver(handler: Any) -> None:
        seen["applied_before"] = follower.raftLastApplied
        msg = {"type": "append_entries", "term": follower.raftCurrentTerm, "commit_index": follower.raftCommitIndex,
               "serialized": (old_dump, True, True)}
        handler(node, msg)
        seen["applied_after"] = follower.raftLastApplied

    follower.run_on_tick_thread(lambda: deliver(follower._SyncObj__onMessageReceived))
    assert seen["applied_after"] == seen["applied_before"], "the stale snapshot set the state back"
    assert follower.stale_snapshots_ignored == 1
    with open(follower._dump_file, "rb") as f:
        on_disk = f.read()
    # Our own dump was put back (or already replaced by the fresh one we asked for): never the stale one.
    if on_disk != own_dump:
        import msgpack

        assert int(msgpack.unpackb(on_disk, raw=False)["entries"][0][1]) >= seen["applied_before"]
    await leader.submit(b"f0", timeout=5)
    wait_for(lambda: follower.applied[-1:] == [b"f0"], 5, "follower keeps applying")

    # Control: pysyncobj's own handler and loader install it and go back.
    def unpatched(n: Any, m: dict[str, Any]) -> None:
        follower._SyncObj__loadDumpFile = lambda clearJournal: SyncObj._SyncObj__loadDumpFile(follower, clearJournal)
        try:
            SyncObj._SyncObj__onMessageReceived(follower, n, m)
        finally:
            del follower._SyncObj__loadDumpFile

    follower.run_on_tick_thread(lambda: deliver(unpatched))
    assert seen["applied_after"] < seen["applied_before"], "unpatched pysyncobj was expected to go back"


def _single_member(data_dir: Path, addr: str, applied: list[bytes]) -> RaftNode:
    settings = RaftSettings(self_addr=addr, partners=[], password="test-secret", data_dir=str(data_dir), fsync=False)
    return RaftNode(settings, apply_fn=lambda p: applied.append(p) or len(applied), snapshot_fn=lambda: b"",
                    restore_fn=lambda blob: None)


@pytest.mark.parametrize("aligned", [True, False], ids=["fixed", "control-unpatched"])
async def test_boot_keeps_the_entries_after_a_dump_whose_journal_was_not_cut_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aligned: bool
) -> None:
    """Compaction writes the dump in one tick and cuts the journal in a later one. A member killed
    in between boots with a dump at index X and a journal that starts before X and holds entries
    after it. pysyncobj replaced such a journal with the dump's two entries, losing the entries
    after X (a SIGKILL of the whole cluster lost an acknowledged write: integration restart-all).
    The control runs the same boot without our alignment and loses them."""
    addr = f"127.0.0.1:{free_port()}"
    applied: list[bytes] = []
    node = _single_member(tmp_path, addr, applied)
    try:
        wait_for(node.is_leader, 10, "single member leads")
        for i in range(8):
            await node.submit(f"p{i}".encode(), timeout=5)
        core = node._core
        raft_log = core._SyncObj__raftLog
        entries = [raft_log[i] for i in range(len(raft_log))]
        at = len(entries) - 4  # the dump's last entry: three entries follow it in the journal
        cluster = core._SyncObj__otherNodes | {core._SyncObj__selfNode}
        core._serialize_dump(core._dump_file, (entries[at], entries[at - 1], cluster))
    finally:
        node.destroy_synchronous()
    if not aligned:
        monkeypatch.setattr(raft_core, "align_journal_to_dump", lambda journal, entries: None)

    applied_again: list[bytes] = []
    node = _single_member(tmp_path, addr, applied_again)
    try:
        wait_for(node.is_leader, 10, "restarted member leads")
        await node.submit(b"after", timeout=5)
        if aligned:
            assert applied_again == [b"p5", b"p6", b"p7", b"after"], applied_again
        else:
            assert applied_again == [b"after"], "unpatched pysyncobj was expected to drop p5-p7"
    finally:
        node.destroy_synchronous()
