"""Dynamic membership through the RaftNode adapter: real pysyncobj members in this process.

Checks what cluster/membership.py fixes in pysyncobj 0.3.17: one change at a time (its own guard
is never armed), member metadata (gwadm id, admin URL) known everywhere, and a boot membership
taken from the journal and the dump, so that stale config peers cannot bring a removed member back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.membership import MembershipUnavailable
from cluster.membership_policy import Refusal
from cluster.membership_records import Member
from cluster.raft import RaftNode, RaftSettings
from tests.support.cluster import free_port
from tests.support.http import wait_for
from tests.support.raft import wait_for_leader


class Nodes:
    """In-process members n1..n4 on loopback; each restart uses the node's data dir again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.members = {f"n{i}": Member(f"n{i}", f"127.0.0.1:{free_port()}", f"http://n{i}.test:8000")
                        for i in range(1, 5)}
        self.running: dict[str, RaftNode] = {}
        self.applied: dict[str, list[bytes]] = {}

    def start(self, nid: str, peers: list[str], compaction: int = 5000) -> RaftNode:
        applied: list[bytes] = []
        me = self.members[nid]
        settings = RaftSettings(
            self_addr=me.raft_addr, partners=[self.members[p].raft_addr for p in peers], password="pw",
            data_dir=str(self.base / nid), fsync=False, node_id=nid, admin_url=me.admin_url,
            peer_members=[self.members[p] for p in peers], compaction_min_entries=compaction,
        )
        node = RaftNode(settings, apply_fn=lambda p: applied.append(p) or len(applied),
                        snapshot_fn=lambda: b"", restore_fn=lambda blob: None)
        self.running[nid], self.applied[nid] = node, applied
        return node

    def leader(self) -> RaftNode:
        return wait_for_leader(self.running.values(), with_quorum=True)

    def stop_all(self) -> None:
        for node in self.running.values():
            node.destroy_synchronous()
        self.running.clear()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


def ids(node: RaftNode) -> list[str]:
    return [m.id for m in node.members()]


async def change(nodes: Nodes, action: str, member: Member) -> RaftNode:
    """Through whichever node leads, retried as a client would when leadership moves (two shared
    cores under load do make followers time out now and then). Returns the leader that did it."""
    deadline = time.monotonic() + 20
    while True:
        leader = nodes.leader()
        try:
            await leader.change_membership(action, member, 5)
            return leader
        except (MembershipUnavailable, Refusal):
            if (member in leader.members()) == (action == "add"):  # an earlier attempt did it
                return leader
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_an_added_member_catches_up_and_every_member_knows_its_admin_url(nodes: Nodes) -> None:
    for nid in ("n1", "n2", "n3"):
        nodes.start(nid, [p for p in ("n1", "n2", "n3") if p != nid])
    leader = nodes.leader()
    for i in range(5):
        await leader.submit(f"w{i}".encode(), timeout=5)
    # pysyncobj would take both changes; the second must wait for the first to commit. Both are
    # held in the queue so that one tick judges them in turn: otherwise, on a busy machine, the
    # first can commit before the second is queued, and then the second is rightly accepted.
    leader._core._hold_commands_until = math.inf
    changes = [
        asyncio.ensure_future(leader.change_membership("add", nodes.members["n4"], 5)),
        asyncio.ensure_future(leader.change_membership("add", Member("n5", "127.0.0.1:1", "http://n5.test:8000"), 5)),
    ]
    await asyncio.sleep(0)  # each task queues its change before its first await
    leader._core._hold_commands_until = 0.0
    first, second = await asyncio.gather(*changes, return_exceptions=True)
    assert first is None
    assert isinstance(second, Refusal) and "a membership change is in progress (adding n4" in second.message
    n4 = nodes.start("n4", ["n1", "n2", "n3"])
    wait_for(lambda: nodes.applied["n4"] == nodes.applied[leader.settings.node_id], 10, "n4 caught up")
    for node in nodes.running.values():
        wait_for(lambda node=node: ids(node) == ["n1", "n2", "n3", "n4"], 5, f"n4 known to {node.settings.node_id}")
        assert node.members() == sorted(nodes.members.values(), key=lambda m: m.id)  # admin URLs included
    wait_for(lambda: n4.status()["has_quorum"], 5, "n4 connected to a majority")
    leader = nodes.leader()
    with pytest.raises(Refusal, match="already a member"):
        await leader.change_membership("add", nodes.members["n4"], 5)
    with pytest.raises(Refusal, match="the leader cannot remove itself"):
        await leader.change_membership("remove", leader.self_member, 5)


@pytest.mark.parametrize("compacted", [False, True], ids=["journal", "dump"])
async def test_the_changed_membership_survives_a_restart_with_stale_config_peers(nodes: Nodes, compacted: bool) -> None:
    original = {"n1": ["n2", "n3"], "n2": ["n1", "n3"], "n3": ["n1", "n2"], "n4": ["n1", "n2", "n3"]}
    compaction = 10 if compacted else 5000
    for nid in ("n1", "n2", "n3"):
        nodes.start(nid, original[nid], compaction)
    await change(nodes, "add", nodes.members["n4"])
    nodes.start("n4", original["n4"], compaction)
    leader = nodes.leader()
    removed = next(nid for nid, n in nodes.running.items() if n is not leader and nid != "n4")
    leader = await change(nodes, "remove", nodes.members[removed])
    for i in range(30 if compacted else 3):
        await leader.submit(f"w{i}".encode(), timeout=5)
    expected = sorted(nid for nid in ("n1", "n2", "n3", "n4") if nid != removed)
    for nid in expected:  # (applied index: a member that joined after compaction got a snapshot instead)
        wait_for(lambda nid=nid: nodes.running[nid]._core.raftLastApplied >= leader._core.raftCommitIndex, 10, f"{nid} applied")
        if compacted:
            wait_for(lambda nid=nid: (nodes.base / nid / "raft.dump").exists(), 10, f"{nid} dumped")
    nodes.stop_all()

    for nid in expected:  # every config still lists the removed member (n4's lists all three)
        node = nodes.start(nid, original[nid], compaction)
        assert ids(node) == expected, f"{nid} booted with {ids(node)}"
        assert removed not in {nodes.members[removed].raft_addr} & {n.id for n in node._core.otherNodes}
    leader = nodes.leader()
    await leader.submit(b"after", timeout=5)
    for nid in expected:  # past the dump load and the replay of the log: still without the removed member
        wait_for(lambda nid=nid: nodes.running[nid]._core.raftLastApplied >= leader._core.raftCommitIndex, 10, f"{nid} applied")
    for nid in expected:
        assert ids(nodes.running[nid]) == expected
        assert nodes.members[removed].raft_addr not in {n.id for n in nodes.running[nid]._core.otherNodes}


async def test_leadership_can_be_handed_over(nodes: Nodes) -> None:
    for nid in ("n1", "n2", "n3"):
        nodes.start(nid, [p for p in ("n1", "n2", "n3") if p != nid])
    leader = nodes.leader()
    await leader.submit(b"x", timeout=5)
    await leader.transfer_leadership(5)
    assert not leader.is_leader()
    assert nodes.leader() is not leader


async def test_a_leader_handing_over_holds_new_commands_and_loses_none(nodes: Nodes) -> None:
    """Under a steady write load a follower is almost never exactly caught up, which pysyncobj
    requires for a transfer: the leader holds new commands meanwhile (Raft thesis §3.10). Held
    commands are not lost: every acknowledged write is applied on every member (a write retried
    after LEADER_CHANGED may be applied twice here; the store's request ids dedupe that)."""
    for nid in ("n1", "n2", "n3"):
        nodes.start(nid, [p for p in ("n1", "n2", "n3") if p != nid])
    leader = nodes.leader()

    # the hold itself: a command submitted while it is on waits, and goes through once it is off
    leader._core._hold_commands_until = time.monotonic() + 60
    held = asyncio.ensure_future(leader.submit(b"held", timeout=10))
    await asyncio.sleep(0.5)
    assert not held.done() and b"held" not in nodes.applied[leader_id(nodes, leader)]
    leader._core._hold_commands_until = 0.0
    await held

    acked: list[bytes] = []
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            payload = f"w{w}-{i}".encode()
            node = list(nodes.running.values())[w % 3]
            try:
                await node.submit(payload, timeout=5)
                acked.append(payload)
            except Exception:  # noqa: BLE001 - an unknown outcome is allowed, a lost ack is not
                pass
            i += 1

    writers = [asyncio.ensure_future(writer(w)) for w in range(6)]
    try:
        await asyncio.sleep(0.5)
        await leader.transfer_leadership(10)  # without the hold: MembershipUnavailable after 10 s
        assert not leader.is_leader() and leader._core._hold_commands_until == 0.0
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    new_leader = nodes.leader()
    await new_leader.submit(b"last", timeout=5)
    for nid, node in nodes.running.items():
        wait_for(lambda node=node: node._core.raftLastApplied >= new_leader._core.raftCommitIndex, 10, f"{nid} applied")
        applied = nodes.applied[nid]
        assert not [p for p in acked if p not in applied], nid
    assert len(acked) > 20, "the writers barely wrote"


def leader_id(nodes: Nodes, node: RaftNode) -> str:
    return next(nid for nid, n in nodes.running.items() if n is node)


async def test_a_change_forwarded_by_a_follower_is_refused_with_the_leaders_reason(nodes: Nodes) -> None:
    """A follower's change travels to the leader inside pysyncobj (``apply_command``); the leader's
    refusal used to come back as a bare REQUEST_DENIED: "the leader refused the change"."""
    for nid in ("n1", "n2", "n3"):
        nodes.start(nid, [p for p in ("n1", "n2", "n3") if p != nid])
    leader = nodes.leader()
    await leader.submit(b"w", timeout=5)
    follower = next(n for n in nodes.running.values() if n is not leader)
    wait_for(lambda: not follower.is_leader() and follower.status()["has_quorum"], 5, "follower with a leader")
    existing = nodes.members[follower.settings.node_id]
    with pytest.raises(Refusal) as refused:
        await follower.change_membership("add", existing, 5)
    assert refused.value.status == 409
    assert "already a member (members: n1 (" in refused.value.message, refused.value.message
    with pytest.raises(Refusal, match="the leader cannot remove itself"):
        await follower.change_membership("remove", leader.self_member, 5)
