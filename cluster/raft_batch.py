"""One AppendEntries per follower per tick, not one per command (leader side).

With ``appendEntriesUseBatch=False`` (needed for millisecond writes: pysyncobj's batching waits for
the next ``appendEntriesPeriod``), pysyncobj 0.3.17 calls ``__sendAppendEntries`` once for *every*
command its tick appends (``_checkCommandsToApply``), and once more right before that whenever it
applied entries (``__applyLogEntries`` returns "send"). Under 32 concurrent writers a tick appends
several commands, so the leader sent each follower several AppendEntries per tick — the first
carrying the new commit index and no entries, then one per new entry — and each follower decrypted,
unpickled, journalled, answered (pickle, zlib, Fernet) and the leader then decrypted every answer:
per-message work paid per entry.

Here the sends a tick would make are coalesced into one ``__sendAppendEntries`` after its commands
were appended: it carries the new commit index and every new entry (pysyncobj splits by
``appendEntriesBatchSizeBytes``). Nothing about durability or ordering changes: entries are
appended to the leader's journal exactly as before, the commit index only moves where pysyncobj
moves it (after the leader's own flush, cluster/raft_journal.py), and followers acknowledge after
their flush. The only delay added is the time the tick spends appending the rest of its commands,
capped at ``max_delay``: past it, the entries appended so far go out at once.
"""

from __future__ import annotations

from pysyncobj.monotonic import monotonic as raft_clock

_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER


class AppendBatchMixin:
    """Coalesces the leader's AppendEntries sends of one tick (see the module docstring)."""

    append_batch_max_delay = 0.002  # seconds a tick may hold its first new entry back
    _batching = False
    _batch_pending = False
    _batch_started = 0.0
    append_sends = 0  # __sendAppendEntries rounds actually run (each: one message per follower)
    append_sends_coalesced = 0  # rounds saved by coalescing

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - pysyncobj's (mangled) name
        """pysyncobj sends an AppendEntries right after applying (to spread the commit index); the
        tick's command step comes next in the same tick, so the leader sends once, there."""
        need_send: bool = super()._SyncObj__applyLogEntries()  # type: ignore[misc]
        if need_send and self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
            self._batch_pending = True
            self.append_sends_coalesced += 1
            return False
        return need_send

    def _checkCommandsToApply(self) -> None:  # noqa: N802
        self._batching, self._batch_started = True, raft_clock()
        try:
            super()._checkCommandsToApply()  # type: ignore[misc]
        finally:
            self._batching = False
        if self._batch_pending:
            self._batch_pending = False
            if self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
                self._send_append_entries()

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802
        if self._batching:
            if raft_clock() - self._batch_started < self.append_batch_max_delay:
                self._batch_pending = True
                self.append_sends_coalesced += 1
                return
            self._batch_started = raft_clock()  # a long tick: send what is appended so far
        self._batch_pending = False
        self._send_append_entries()

    def _send_append_entries(self) -> None:
        self.append_sends += 1
        super()._SyncObj__sendAppendEntries()  # type: ignore[misc]
