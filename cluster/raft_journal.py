"""A pysyncobj journal that is durable before anything is acknowledged (see cluster/raft.py).

pysyncobj's FileJournal writes into an mmap and only msyncs on destroy, and its meta file (term,
vote, commit index) is renamed without fsync: entries survive SIGKILL (page cache) but not power
loss. We flush the journal after every append/truncate and fsync the meta file and its directory,
so an entry is on disk before the leader counts it and before a follower acknowledges it (a
follower appends before it answers AppendEntries).
"""

from __future__ import annotations

import os
from typing import Any

from pysyncobj.journal import FileJournal, MetaStorer


class DurableMetaStorer(MetaStorer):
    """Meta (term, vote, commit index) written to a temp file, fsynced, renamed, dir fsynced."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - pysyncobj's name
        from pysyncobj.pickle import dumps

        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(dumps(meta))
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._fsync:
            fsync_dir(os.path.dirname(path) or ".")


class DurableJournal(FileJournal):
    """FileJournal that msyncs after every change, so an entry is durable before it is acknowledged."""

    def __init__(self, journal_file: str, fsync: bool) -> None:
        super().__init__(journal_file)
        self._fsync = fsync
        self._bulk = False
        self._FileJournal__metaStorer = DurableMetaStorer(journal_file + ".meta", fsync)

    def _sync(self) -> None:
        if self._fsync and not self._bulk:
            self.flush()

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._sync()

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


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
