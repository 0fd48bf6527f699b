"""Log-safety overrides of pysyncobj 0.3.17, mixed into the SyncObj subclass (cluster/raft_core.py).

Each one fixes a hazard found by reading pysyncobj or by the chaos suite (docs/pysyncobj.md):

* **Raft §5.3: never truncate on a stale AppendEntries.** pysyncobj truncates a follower's log on
  ANY AppendEntries whose prevLogIdx is behind the log end, not only from the first conflicting
  entry. A duplicated or reordered older message can delete applied entries and wedge the node. We
  trim entries the follower already has (same index and term) before pysyncobj sees the message,
  and answer fully-stale messages ourselves without touching the log.
* **Snapshot AppendEntries never advance the commit index.** pysyncobj sets a follower's commit
  index to min(leader commit, own log end) after any AppendEntries, also after the snapshot
  messages that carry no log position, so a deposed leader applied its own uncommitted entries
  and acknowledged writes that were then lost (chaos suite, isolate-leader).
* **Stale snapshots are not installed** (``_SyncObj__loadDumpFile``), and **compaction never
  empties the log** (``_SyncObj__deleteEntriesTo``): see their docstrings.

Every ``_SyncObj__*`` name here is checked against the installed pysyncobj at start-up
(cluster/raft_compat.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from time import monotonic
from typing import Any

import msgpack

from cluster.events import EventLog
from cluster.raft_journal import fsync_dir

log = logging.getLogger("gwadm.raft")


class LogSafetyMixin:
    """Needs the SyncObj it is mixed into, plus ``_dump_file``, ``_fsync`` and ``events``."""

    _dump_file: str
    _fsync: bool
    events: EventLog
    stale_append_entries_trimmed = 0
    stale_snapshots_ignored = 0
    _stale_burst: tuple[int, float, int, int] = (0, 0.0, 0, 0)  # count, last at, index, applied

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if (
            message.get("type") == "append_entries"
            and "prevLogIdx" not in message
            and message.get("term", -1) >= self.raftCurrentTerm  # type: ignore[attr-defined]
        ):
            serialized = message.get("serialized")
            if isinstance(serialized, (tuple, list)) and len(serialized) == 3 and serialized[1]:
                self._backup_own_dump()  # first chunk: the transmission will replace our dump file
            # Snapshot transmissions carry no log position, yet pysyncobj raises the commit index
            # to min(leader commit, OUR log end) after any AppendEntries: a deposed leader's
            # uncommitted entries would be applied as committed (found by the chaos suite: a 200
            # for a write that was then lost). Only a message that verified the log may do that.
            message = {**message, "commit_index": min(message.get("commit_index", 0), self.raftCommitIndex)}  # type: ignore[attr-defined]
        elif (
            message.get("type") == "append_entries"
            and "prevLogIdx" in message
            and message.get("transmission") is None
            and message.get("term", -1) >= self.raftCurrentTerm  # type: ignore[attr-defined]
        ):
            trimmed = self._trim_append_entries(message)
            if trimmed is None:
                # Fully stale: let pysyncobj do its term/leader/timer bookkeeping on a message that
                # carries no log operation, then acknowledge what the message covered ourselves.
                covered = message["entries"][-1][1] if message.get("entries") else message["prevLogIdx"]
                bookkeeping = {
                    k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")
                }
                bookkeeping["commit_index"] = min(message["commit_index"], covered)
                super()._SyncObj__onMessageReceived(node, bookkeeping)  # type: ignore[misc]
                self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=covered + 1, success=True)  # type: ignore[attr-defined]
                return
            message = trimmed
        super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]

    def _backup_own_dump(self) -> None:
        backup = self._dump_file + ".own"
        if os.path.exists(self._dump_file):
            shutil.copyfile(self._dump_file, backup)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(backup)

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:  # noqa: N802, N803 - pysyncobj's names
        """pysyncobj installs every complete snapshot transmission, also a stale one: after a pause
        (SIGSTOP) a follower drains snapshots the leader queued while it was stopped, and each one
        set the applied state back to an older index (found by the chaos suite, pause-leader). Then
        its own log compaction, started at the newer index, deleted the whole log and every later
        message raised IndexError (pysyncobj hazard: "truncating after compaction under load").
        A snapshot not newer than the applied index holds nothing we lack: keep our state, and put
        our own dump file back, so that it still matches our journal after a restart."""
        backup = self._dump_file + ".own"
        if clearJournal:  # an install from the leader, not the boot load
            try:
                with open(self._dump_file, "rb") as f:
                    index = int(msgpack.unpackb(f.read(), raw=False)["entries"][0][1])
            except Exception:  # unreadable: let pysyncobj report it as it does
                index = None
            if index is not None and index <= self.raftLastApplied:  # type: ignore[attr-defined]
                self.stale_snapshots_ignored += 1
                # A catching-up follower drains up to ~a dozen of these in a burst: one event per
                # burst with the count (flushed by _record_role once the burst is over).
                self._stale_burst = (self._stale_burst[0] + 1, monotonic(), index, self.raftLastApplied)  # type: ignore[attr-defined]
                if os.path.exists(backup):
                    os.replace(backup, self._dump_file)
                else:  # we had no dump: our journal holds everything, a foreign older dump must go
                    os.unlink(self._dump_file)
                if self._fsync:
                    fsync_dir(os.path.dirname(self._dump_file) or ".")
                self.forceLogCompaction()  # type: ignore[attr-defined]  # and write a dump of what we do have, soon
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup)
        if clearJournal:  # a dump of our older state still being made must not replace this one
            self._SyncObj__serializer.abandon()  # type: ignore[attr-defined]  # raft_dump.SlicedSerializer
        super()._SyncObj__loadDumpFile(clearJournal)  # type: ignore[misc]
        if clearJournal:
            self.events.emit("snapshot_installed", applied=self.raftLastApplied)  # type: ignore[attr-defined]

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:  # noqa: N802, N803
        """Compaction deletes the log up to the index its dump was taken at; if the log no longer
        reaches that index, deleting would empty it and wedge the node: keep it instead."""
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        if len(raft_log) == 0 or toIDx > raft_log[-1][1]:
            log.warning("not compacting the log to %d: it ends before that", toIDx)
            return
        super()._SyncObj__deleteEntriesTo(toIDx)  # type: ignore[misc]

    def _trim_append_entries(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Drop the prefix of ``entries`` this log already holds (same index and term).

        Returns the message to hand to pysyncobj, or None when every entry is already present and
        the log extends beyond them (a stale or duplicated message that must not truncate anything).
        """
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        if len(raft_log) == 0:
            return message
        first_idx, last_idx = raft_log[0][1], raft_log[-1][1]
        prev_idx = message["prevLogIdx"]
        if prev_idx >= last_idx or prev_idx < first_idx:
            return message  # nothing beyond prev to lose, or compacted: pysyncobj's answer is safe
        entries = list(message.get("entries") or [])
        matched = 0
        for entry in entries:
            idx, term = entry[1], entry[2]
            if idx > last_idx or idx < first_idx or raft_log[idx - first_idx][2] != term:
                break
            matched += 1
        if matched == len(entries):
            if raft_log[prev_idx - first_idx][2] != message["prevLogTerm"]:
                return message  # the previous entry conflicts: pysyncobj rejects it as usual
            self.stale_append_entries_trimmed += 1
            return None
        if matched == 0:
            return message
        self.stale_append_entries_trimmed += 1
        new = dict(message)
        new["prevLogIdx"] = entries[matched - 1][1]
        new["prevLogTerm"] = entries[matched - 1][2]
        new["entries"] = entries[matched:]
        return new


def align_journal_to_dump(journal: Any, dump_entries: Sequence[Any]) -> None:
    """Boot, before anything reads the journal: pysyncobj keeps it only if it *starts* with the
    dump's last two entries (``dump_entries``: last, previous), and otherwise replaces it with
    those two. Compaction writes the dump in one tick and truncates the journal in a later one, so
    a node killed in between (up to a heartbeat period: a SIGKILL of the whole cluster right after
    a write) boots with a journal that starts earlier and also holds the entries after the dump.
    Replacing it dropped them: two followers lost the last acknowledged write, elected one of
    themselves and overwrote it on the old leader (tests/integration/test_membership.py,
    restart-all). A journal that holds both dump entries is cut just before them instead: nothing
    after them is lost, and the boot membership (cluster/membership.py) sees the same journal."""
    try:
        (last_idx, last_term), (prev_idx, prev_term) = ((int(e[1]), int(e[2])) for e in dump_entries)
    except (TypeError, ValueError, IndexError):  # not a dump pysyncobj can load: it reports that itself
        return
    if len(journal) < 2:
        return
    at = prev_idx - journal[0][1]
    if at <= 0 or at + 1 >= len(journal):
        return  # already aligned, or the journal does not reach the dump's entries
    if (journal[at][1], journal[at][2]) != (prev_idx, prev_term) or (
        journal[at + 1][1], journal[at + 1][2]
    ) != (last_idx, last_term):
        return  # another history: pysyncobj replaces the journal, as it should
    journal.deleteEntriesTo(at)
    log.info("journal cut to the dump's entries %d-%d at boot; %d later entries kept",
             prev_idx, last_idx, len(journal) - 2)
