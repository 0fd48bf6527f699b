"""A pysyncobj journal that is durable before anything is acknowledged (see cluster/raft.py).

pysyncobj's FileJournal writes into an mmap and only msyncs on destroy (and CPython's msync holds
the GIL; we fsync the file instead, which releases it), and its meta file (term,
vote, commit index) is renamed without fsync: entries survive SIGKILL (page cache) but not power
loss. We flush the journal after every append/truncate and fsync the meta file and its directory,
so an entry is on disk before the leader counts it and before a follower acknowledges it (a
follower appends before it answers AppendEntries).
"""

from __future__ import annotations

import os
from typing import Any

from pysyncobj.journal import FileJournal, MetaStorer

from cluster import raft_pickle
from cluster.raft_compat import JOURNAL_ATTRIBUTES, JOURNAL_FILE_ATTRIBUTES, check_attributes


class DurableMetaStorer(MetaStorer):  # type: ignore[misc]
    """Meta (term, vote, commit index) written to a temp file, fsynced, renamed, dir fsynced."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - pysyncobj's name
        write_atomically(self.getPath(), raft_pickle.dumps(meta), self._fsync)


class DurableJournal(FileJournal):  # type: ignore[misc]
    """FileJournal whose entries are durable before anything depends on them.

    Group commit: ``add`` only marks the journal dirty; ``flush_pending`` msyncs once for every
    entry added since the last flush. The adapter calls it (cluster/raft.py) before a follower
    acknowledges AppendEntries (transport hook on ``next_node_idx``), before the commit index moves
    (``setRaftCommitIndex``: the leader counts itself, then applies and answers clients), and at
    the end of every tick. So concurrent writes appended in one tick, or carried by one
    AppendEntries message, share one flush. ``group=False`` flushes in every ``add``.
    """

    def __init__(self, journal_file: str, fsync: bool, group: bool = True) -> None:
        super().__init__(journal_file)
        self._fsync = fsync
        self.group = group
        self._bulk = False
        self._dirty = False
        self.flushes = 0
        check_attributes(self, JOURNAL_ATTRIBUTES)  # else the assignment below would be dead code
        check_attributes(self._FileJournal__journalFile, JOURNAL_FILE_ATTRIBUTES)  # _fsync_file
        self._FileJournal__metaStorer = DurableMetaStorer(journal_file + ".meta", fsync)

    def _sync(self) -> None:
        if self._fsync and not self._bulk:
            self._fsync_file()
            self.flushes += 1
            self._dirty = False

    def _fsync_file(self) -> None:
        """fsync the journal file instead of pysyncobj's ``mmap.flush()``: CPython's msync holds
        the GIL for the whole disk wait, so every flush stalled the node's HTTP thread too (a third
        of the leader's GIL time under 32 concurrent writers). On Linux msync(MS_SYNC) is the
        file's fsync, so the pages written through the mapping are on disk just the same."""
        handle = self._FileJournal__journalFile._ResizableFile__f  # reopened when the file grows
        os.fsync(handle.fileno())

    def flush_pending(self) -> None:
        if self._dirty:
            self._sync()

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True
        if not self.group:
            self._sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        self.flush_pending()
        super().setRaftCommitIndex(raftCommitIndex)

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802
        super().deleteEntriesFrom(entryFrom)
        self._sync()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        # Compaction rewrites the whole journal through add(): sync once at the end, not per entry.
        self._bulk = True
        try:
            super().deleteEntriesTo(entryTo)
        finally:
            self._bulk = False
        self._sync()

    def clear(self) -> None:
        super().clear()
        self._sync()


def write_atomically(path: str, data: bytes, fsync: bool) -> None:
    """``data`` as ``path``: written to ``path.tmp``, then renamed over ``path``; with ``fsync``
    the file and the rename are on disk before this returns."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
