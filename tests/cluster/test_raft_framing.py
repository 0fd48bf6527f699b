"""Raft message framing: small messages are stored, not compressed, in a zlib stream any pysyncobj
peer reads; every peer connection, dialled or accepted, frames that way."""

from __future__ import annotations

import pickle
import random
import zlib
from pathlib import Path

import pytest

from cluster.raft_transport import SMALL_MESSAGE, CompactTcpConnection, _zlib_frame
from tests.support.http import wait_for
from tests.support.raft import recording_members, wait_for_leader

pytestmark = pytest.mark.timeout(40)


def test_small_messages_are_stored_and_large_ones_compressed() -> None:
    seed = 11
    print(f"seed {seed}")
    rng = random.Random(seed)
    small = pickle.dumps({"type": "append_entries", "entries": [(b"a" * 400, 7, 2)]})
    framed = zlib.decompressobj()
    assert framed.decompress(_zlib_frame(small)) == small
    # stored: no smaller than the input (level 3 would squeeze 400 repeated bytes to a few)
    assert len(_zlib_frame(small)) >= len(small)
    assert len(zlib.compress(small, 3)) < len(small) / 2
    large = b"x" * SMALL_MESSAGE * 2 + rng.randbytes(100)
    assert zlib.decompress(_zlib_frame(large)) == large
    assert len(_zlib_frame(large)) < len(large) / 10


async def test_every_peer_connection_frames_compactly(tmp_path: Path) -> None:
    with recording_members(tmp_path, fsync=False) as members:
        leader = wait_for_leader(n for n, _ in members)
        rng = random.Random(12)
        print("seed 12")
        for _ in range(5):
            await leader.submit(rng.randbytes(64) + b"p" * 300, timeout=5)
        for node, applied in members:
            wait_for(lambda applied=applied: len(applied) == 5, 5, "applied on every member")
            conns = node._core._SyncObj__transport._connections
            assert len(conns) == 2
            # each pair has one connection: dialled by one member, accepted by the other
            assert all(isinstance(c, CompactTcpConnection) for c in conns.values()), conns
