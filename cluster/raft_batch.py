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

**Commit announcements ride on the next AppendEntries.** The round pysyncobj sends after applying
carries nothing but the new commit index, and each follower answers it: with one writer after the
other that was half the Raft messages of every write. The leader now waits up to
``commit_announce_delay`` (2 ms) for the next round with entries (the next write usually arrives
within it) or a heartbeat, and only then sends the announcement on its own (the tick's poll ends
when it is due: ``DeadlinePoller``). Only followers learn commits later, by at most that delay; the
leader's answers do not wait. Not delayed: when a follower forwarded one of the entries (it waits
to apply it before answering its client: ``DeadlineQueue.forwarded``), and every ReadIndex
heartbeat round carries the commit index anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pysyncobj.monotonic import monotonic as raft_clock

_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER


class AppendBatchMixin:
    """Coalesces the leader's AppendEntries sends of one tick (see the module docstring)."""

    append_batch_max_delay = 0.002  # seconds a tick may hold its first new entry back
    commit_announce_delay = 0.002  # seconds a commit-index-only round may wait for the next one
    _batching = False
    _batch_pending = False
    _batch_started = 0.0
    _announce_at: float | None = None  # when a held commit announcement must go out
    _announced_commit = 0  # commit index carried by the last round sent
    _urgent_upto = 0  # last log index holding a command a follower forwarded
    append_sends = 0  # __sendAppendEntries rounds actually run (each: one message per follower)
    append_sends_coalesced = 0  # rounds saved by coalescing (or by a commit announcement riding along)

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - pysyncobj's (mangled) name
        """pysyncobj sends an AppendEntries right after applying (to spread the commit index); the
        leader sends it with the tick's new entries instead, or after ``commit_announce_delay``."""
        need_send: bool = super()._SyncObj__applyLogEntries()  # type: ignore[misc]
        if need_send and self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
            self.append_sends_coalesced += 1
            if self._urgent_upto > self._announced_commit:  # a follower waits to apply its command
                self._batch_pending = True
            elif self._announce_at is None:
                self._announce_at = raft_clock() + self.commit_announce_delay
            return False
        return need_send

    def _checkCommandsToApply(self) -> None:  # noqa: N802
        queue = self._SyncObj__commandsQueue  # type: ignore[attr-defined]
        forwarded = getattr(queue, "forwarded", 0)
        self._batching, self._batch_started = True, raft_clock()
        try:
            super()._checkCommandsToApply()  # type: ignore[misc]
        finally:
            self._batching = False
        if getattr(queue, "forwarded", 0) != forwarded:
            self._urgent_upto = self._SyncObj__getCurrentLogIndex()  # type: ignore[attr-defined]
        due = self._announce_at is not None and raft_clock() >= self._announce_at
        if self._batch_pending or due:
            self._batch_pending = False
            if self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
                self._send_append_entries()
            else:
                self._announce_at = None

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
        self._announce_at = None  # every round carries the commit index
        self._announced_commit = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        super()._SyncObj__sendAppendEntries()  # type: ignore[misc]

    def _batch_init(self) -> None:
        """The tick's poll for socket events ends at the member's next deadline (``_next_wake``):
        a held commit announcement, or a follower's pre-vote (``_election_wake``).

        The announcement is held while the tick applies entries, after pysyncobj chose how long
        the tick's closing poll waits (``autoTickPeriod``, 50 ms): it must bound that very poll,
        not only the next tick's, or it waits for the next heartbeat or message (both followers
        had often acknowledged already), and the next write's AppendEntries carried the commit
        instead, so the followers applied it while the leader waited for their answers."""
        self._poller = DeadlinePoller(self._poller, self._next_wake)  # type: ignore[has-type]

    def _next_wake(self) -> float | None:
        """When the tick must run again at the latest (pysyncobj's clock), or None: no deadline."""
        wakes = [at for at in (self._announce_at, self._election_wake()) if at is not None]
        return min(wakes) if wakes else None

    def _election_wake(self) -> float | None:
        """Overridden by the pre-vote mixin: when this follower starts (or ends) a pre-vote round."""
        return None


class DeadlinePoller:
    """pysyncobj's poller, whose ``poll`` never waits past the member's next deadline
    (``wake() -> float | None``, on pysyncobj's clock; a past deadline means "now")."""

    def __init__(self, inner: Any, wake: Callable[[], float | None]) -> None:
        self.inner = inner
        self._wake = wake

    def __getattr__(self, name: str) -> Any:  # subscribe, unsubscribe, anything else pysyncobj calls
        return getattr(self.inner, name)

    def poll(self, timeout: float) -> None:
        at = self._wake()
        if at is not None:
            timeout = max(0.0, min(timeout, at - raft_clock()))
        self.inner.poll(timeout)
