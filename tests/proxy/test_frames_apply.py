"""Joining snapshot chunks: only an unbroken transmission yields a snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.frames_apply import OutOfSequence, SnapshotAssembler


def chunk(i: int, n: int = 3, revision: int = 5, data: bytes | None = None) -> dict[str, Any]:
    return {"revision": revision, "hash": f"h{revision}", "chunk": i, "chunks": n,
            "data": data if data is not None else bytes([65 + i])}


def test_chunks_in_order_join_into_one_snapshot() -> None:
    a = SnapshotAssembler()
    assert a.add(chunk(0)) is None and a.add(chunk(1)) is None
    joined = a.add(chunk(2))
    assert joined is not None and (joined.revision, joined.hash, joined.data) == (5, "h5", b"ABC")
    one = a.add(chunk(0, n=1, revision=6, data=b"x"))  # the assembler is ready for the next one
    assert one is not None and one.data == b"x"


def test_a_gap_a_repeat_or_a_foreign_chunk_drops_the_transmission() -> None:
    a = SnapshotAssembler()
    a.add(chunk(0))
    with pytest.raises(OutOfSequence, match="chunk 2 out of sequence"):
        a.add(chunk(2))
    with pytest.raises(OutOfSequence):  # what was collected is gone: chunk 1 no longer fits
        a.add(chunk(1))
    a.add(chunk(0))
    with pytest.raises(OutOfSequence):
        a.add(chunk(1, revision=6))  # another transmission's chunk
    a.add(chunk(0))
    a.add(chunk(1))
    with pytest.raises(OutOfSequence):
        a.add(chunk(1))  # a repeat
    assert a.add(chunk(0, n=2)) is None and a.add(chunk(1, n=2)) is not None  # a new start works
