"""Log compaction without a stall: the dump is encoded one slice per Raft tick.

pysyncobj compacts the log by calling its ``Serializer.serialize`` from the tick thread. Without a
fork (a custom serializer turns it off, and forking a threaded process is unsafe anyway) the whole
dump was encoded and written right there. With full tables (10,000 request ids and audit records,
1,000 deltas) that is a 4.4 MB msgpack: ~40 ms of CPU in one C call that holds the GIL, and on a
core shared with the other members and the HTTP thread far longer in wall time. The leader sent
no heartbeat meanwhile: under 32 concurrent writers every compaction on the leader (one per
5,000 entries) deposed it, and the cluster spent a quarter more CPU per write from then on (the
bench client kept writing to the old leader, which now forwarded).

``SlicedSerializer`` replaces pysyncobj's ``Serializer`` (the class is swapped in while the member
is built, like the journal): ``serialize`` only captures what the dump holds — two log entries,
the members and the application's slices, which read an immutable state value — and
``checkSerializing``, which pysyncobj calls on every tick from ``__tryLogCompaction``, encodes
slices for at most ``budget`` seconds and answers SERIALIZING until the last one. Then it writes
the file (``<dump>.tmp``, fsync, rename) and answers SUCCESS, upon which pysyncobj deletes the
log entries the dump covers, exactly as after its own synchronous dump. As with pysyncobj's
forked dump, no snapshot goes to a lagging follower while one is being made (its
``getTransmissionData`` refuses while its ``__pid`` is set). A snapshot installed from the leader
meanwhile abandons the dump in progress (``abandon``): it must not replace the newer dump file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from cluster.raft_compat import check_attributes

log = logging.getLogger("gwadm.raft")

# Private Serializer names used here: its "busy" marker, its file, its open snapshot transmissions.
SERIALIZER_ATTRIBUTES = ("_Serializer__pid", "_Serializer__fileName", "_Serializer__transmissions")
_BUSY = -3  # any non-zero __pid makes pysyncobj's getTransmissionData refuse (-1, -2 are its own)


class DumpJob:
    """One dump being made: ``advance`` encodes slices, ``write`` puts the file in place."""

    def __init__(self, app: bytes | Iterable[bytes], write: Callable[[str, list[bytes]], None]) -> None:
        self._slices: Iterator[bytes] = iter((app,) if isinstance(app, bytes) else app)
        self._pieces: list[bytes] = []
        self._write = write
        self.done = False

    def advance(self, budget: float) -> bool:
        """Encode slices for up to ``budget`` seconds (at least one); True once all are encoded."""
        until = time.perf_counter() + budget
        while not self.done:
            piece = next(self._slices, None)
            if piece is None:
                self.done = True
                break
            self._pieces.append(piece)
            if time.perf_counter() >= until:
                break
        return self.done

    def write(self, path: str) -> None:
        self._write(path, self._pieces)


class SlicedSerializer(Serializer):  # type: ignore[misc]
    """pysyncobj's Serializer whose dumps are made a slice per tick (see the module docstring).

    Built by pysyncobj with its own arguments; ``capture(data) -> DumpJob`` is bound by the member
    (``functools.partial``). Loading dumps and snapshot transmissions are pysyncobj's, unchanged.
    """

    budget = 0.002  # seconds of encoding per tick

    def __init__(self, fileName: str, transmissionBatchSize: int, tryUseFork: bool,  # noqa: N803
                 serializer: Any, deserializer: Any, serializeChecker: Any, *,  # noqa: N803
                 capture: Callable[[Any], DumpJob]) -> None:
        super().__init__(fileName, transmissionBatchSize, False, serializer, deserializer, None)
        check_attributes(self, SERIALIZER_ATTRIBUTES)
        self._capture = capture
        self._job: DumpJob | None = None
        self._job_id: Any = None
        self.dumps_written = 0

    @property
    def busy(self) -> bool:
        return self._job is not None

    def serialize(self, data: Any, id: Any) -> None:  # noqa: A002 - pysyncobj's name
        if self._job is not None:
            return
        self._job = self._capture(data[1:])  # (last applied entry, the one before, cluster)
        self._job_id = id
        self._Serializer__pid = _BUSY

    def checkSerializing(self) -> tuple[int, Any]:  # noqa: N802
        job = self._job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        try:
            if not job.advance(self.budget):
                return SERIALIZER_STATE.SERIALIZING, self._job_id
            job.write(self._Serializer__fileName)
        except Exception:
            log.exception("log compaction: the dump could not be written (the log is kept)")
            state = SERIALIZER_STATE.FAILED
        else:
            state = SERIALIZER_STATE.SUCCESS
            self._Serializer__transmissions: dict[Any, Any] = {}  # as pysyncobj does after its own dump
            self.dumps_written += 1
        self._job = None
        self._Serializer__pid = 0
        return state, self._job_id

    def abandon(self) -> None:
        """Drop the dump in progress (a snapshot from the leader is being installed)."""
        if self._job is not None:
            self._job = None
            self._Serializer__pid = 0


__all__ = ["SERIALIZER_ATTRIBUTES", "DumpJob", "SlicedSerializer"]
