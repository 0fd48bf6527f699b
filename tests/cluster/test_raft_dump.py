"""Log compaction a slice per tick (cluster/raft_dump.py): no stall, no election, same dump."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
from pysyncobj.config import SERIALIZER_STATE

from cluster.raft import RaftNode, RaftSettings
from cluster.raft_dump import DumpJob, SlicedSerializer
from tests.support.cluster import free_port


def _serializer(tmp_path: Path, slices: list[bytes], written: list[tuple[str, list[bytes]]]) -> SlicedSerializer:
    def capture(data: Any) -> DumpJob:
        return DumpJob(iter(slices), lambda path, pieces: written.append((path, list(pieces))))

    return SlicedSerializer(str(tmp_path / "raft.dump"), 1024, True, None, None, None, capture=capture)


def test_a_dump_is_made_over_several_checks_and_reported_once_written(tmp_path: Path) -> None:
    written: list[tuple[str, list[bytes]]] = []
    ser = _serializer(tmp_path, [b"a", b"b", b"c"], written)
    ser.budget = 0.0  # one slice per check
    assert ser.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    ser.serialize((None, "last", "prev", set()), 42)
    states = [ser.checkSerializing() for _ in range(3)]
    assert states == [(SERIALIZER_STATE.SERIALIZING, 42)] * 3 and written == []
    assert ser.getTransmissionData("follower") is None  # no snapshot from a half-made dump
    assert ser.checkSerializing() == (SERIALIZER_STATE.SUCCESS, 42)
    assert written == [(str(tmp_path / "raft.dump"), [b"a", b"b", b"c"])] and ser.dumps_written == 1
    assert ser.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def test_an_abandoned_dump_is_never_written(tmp_path: Path) -> None:
    written: list[tuple[str, list[bytes]]] = []
    ser = _serializer(tmp_path, [b"a", b"b"], written)
    ser.budget = 0.0
    ser.serialize((None, "last", "prev", set()), 7)
    assert ser.checkSerializing()[0] == SERIALIZER_STATE.SERIALIZING
    ser.abandon()  # a snapshot from the leader is being installed
    assert ser.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    assert written == [] and not ser.busy


def test_a_failed_write_is_reported_and_frees_the_serializer(tmp_path: Path) -> None:
    def capture(data: Any) -> DumpJob:
        def write(path: str, pieces: list[bytes]) -> None:
            raise OSError("disk full")

        return DumpJob(b"whole", write)

    ser = SlicedSerializer(str(tmp_path / "raft.dump"), 1024, True, None, None, None, capture=capture)
    ser.serialize((None, "last", "prev", set()), 3)
    assert ser.checkSerializing() == (SERIALIZER_STATE.FAILED, 3)
    assert not ser.busy and ser.getTransmissionData("follower") is None  # no dump file: nothing to send


def _slow_dump(slices: int, each: float) -> Iterator[bytes]:
    for i in range(slices):
        time.sleep(each)  # stands for encoding work (releases the GIL, as the other members need)
        yield msgpack.packb(i)


async def test_compacting_a_big_state_on_the_leader_does_not_cost_its_leadership(tmp_path: Path) -> None:
    """The leader's dump takes 0.8 s, more than twice the longest election timeout. Made in one go
    on the tick thread (pysyncobj's way) the leader sends no heartbeat meanwhile and is deposed; a
    slice per tick, it keeps leading, and the dump is complete."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes: list[RaftNode] = []
    slices, each = 80, 0.01
    expected = b"".join(msgpack.packb(i) for i in range(slices))
    try:
        for i, addr in enumerate(addrs):
            settings = RaftSettings(self_addr=addr, partners=[a for a in addrs if a != addr], password="t",
                                    data_dir=str(tmp_path / f"n{i}"), fsync=False, compaction_min_entries=20)
            # only the leader's dump is slow: followers busy with their own would not campaign either
            nodes.append(RaftNode(settings, apply_fn=lambda p: None, restore_fn=lambda b: None,
                                  snapshot_fn=lambda i=i: _slow_dump(slices, each) if nodes[i].is_leader() else b""))
        deadline = time.monotonic() + 15
        while not any(n.is_leader() and n.has_leader_with_quorum() for n in nodes):
            assert time.monotonic() < deadline, "no leader"
            await asyncio.sleep(0.05)
        leader = next(n for n in nodes if n.is_leader())
        term = leader.status()["term"]
        for i in range(30):  # past compaction_min_entries: every member starts a dump
            await leader.submit(msgpack.packb(i), timeout=5)
        dump = Path(leader.settings.data_dir) / "raft.dump"
        deadline = time.monotonic() + 15
        while not (dump.exists() and leader.status()["log_len"] < 20):
            assert time.monotonic() < deadline, "the leader's dump was never completed"
            assert leader.status()["term"] == term, "an election happened while the leader compacted its log"
            await asyncio.sleep(0.02)
        assert leader.is_leader() and all(n.status()["term"] == term for n in nodes)
        assert msgpack.unpackb(dump.read_bytes(), raw=False)["app"] == expected
        assert not os.path.exists(str(dump) + ".tmp")
    finally:
        for n in nodes:
            n.destroy_synchronous()
