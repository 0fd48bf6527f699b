"""The pysyncobj 0.3.17 adapter's face: ``RaftNode`` owns one pysyncobj member and exposes only the
adapter's own API. No gateway logic lives here; ``cluster/store.py``'s ConfigStore is its one user
in a node (tests use it directly).

``RaftNode`` *wraps* the SyncObj subclass (``cluster.raft_core.RaftCore``) instead of being one, so
pysyncobj's API (``getStatus``, ``addNodeToCluster``, its ``_SyncObj__*`` internals, ...) cannot
leak into the rest of the node: what a caller can do is what this class defines. Where each fix
lives (details in docs/pysyncobj.md and docs/control-plane.md):

* ``cluster/raft_core.py`` — the SyncObj subclass: configuration, durable journal swap-in, msgpack
  dump serializer, role/term/quorum snapshots and their events.
* ``cluster/raft_safety.py`` — log-safety overrides (Raft §5.3 truncation, snapshot commit index,
  stale snapshots, compaction that would empty the log).
* ``cluster/raft_journal.py`` (durability, group commit), ``cluster/raft_dump.py`` (log
  compaction a slice per tick), ``cluster/raft_transport.py`` (link
  deadlines, pings, numbered heartbeats), ``cluster/raft_deadline.py`` (no zombie writes),
  ``cluster/raft_read.py`` (ReadIndex, leader leases), ``cluster/raft_prevote.py`` (pre-vote),
  ``cluster/membership.py`` (dynamic membership).
* ``cluster/raft_compat.py`` — before the member is built, every override of a private pysyncobj
  name (in the core, its mixins, the transport, the connection, the journal and the serializer)
  is checked.
* ``cluster/raft_proposals.py`` — commands proposed in the same loop iteration share one log
  entry; every member applies a batch entry's commands one by one through ``apply_fn``.
* ``submit`` here — every call has a deadline (callbacks were seen to never fire), results are
  handed to asyncio with ``call_soon_threadsafe`` from the tick thread, and transient failures (no
  leader, leader changed) are retried with the same payload: the store dedupes by request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from pysyncobj import FAIL_REASON

from cluster import raft_pickle
from cluster.events import EventLog
from cluster.loop_wait import within
from cluster.membership_records import Member
from cluster.raft_compat import check_connection_attributes, check_overrides, check_protected
from cluster.raft_core import RaftCore
from cluster.raft_dump import SlicedSerializer
from cluster.raft_journal import DurableJournal
from cluster.raft_proposals import BATCH_DENIED, ProposalBatcher, apply_batch
from cluster.raft_settings import RaftBindError, RaftConfigError, RaftSettings
from cluster.raft_transport import BoundTcpConnection, BoundTCPTransport, CompactTcpConnection

__all__ = [
    "CommandRejected", "NoQuorum", "OutcomeUnknown", "RaftBindError", "RaftConfigError", "RaftNode",
    "RaftSettings",
]  # fmt: skip


class CommandRejected(RuntimeError):
    """pysyncobj refused the command for good (request denied): it will not be applied."""


class NoQuorum(RuntimeError):
    """This node knows no leader with quorum: the command was NOT submitted (a definite failure)."""


class OutcomeUnknown(RuntimeError):
    """No result before the deadline: the command may or may not commit. Retry with the same id."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_RETRYABLE = {
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.UNKNOWN_OUTCOME,
}
_FAIL_NAMES = {v: k.lower() for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}


def compat_classes(core_class: type[RaftCore] = RaftCore) -> tuple[type, ...]:
    """Every class of ours that overrides private pysyncobj names (checked at start-up)."""
    return (core_class, BoundTCPTransport, BoundTcpConnection, CompactTcpConnection, DurableJournal, SlicedSerializer)


class RaftNode:
    """One Raft member whose only replicated operation is an opaque ``payload: bytes``.

    ``apply_fn(payload) -> result`` runs in pysyncobj's tick thread for every committed command, in
    log order, on every member; it must be deterministic and must not block. ``snapshot_fn()`` and
    ``restore_fn(bytes)`` are called from the same thread for log compaction and boot;
    ``snapshot_fn`` returns the dump's bytes, or an iterable of slices whose concatenation they are
    (taken over the next ticks, cluster/raft_dump.py: they must read only state captured when it
    was called).
    """

    __slots__ = ("_batcher", "_core", "settings")
    core_class: type[RaftCore] = RaftCore  # tests substitute a recording subclass

    def __init__(
        self,
        settings: RaftSettings,
        apply_fn: Callable[[bytes], Any],
        snapshot_fn: Callable[[], bytes | Iterable[bytes]],
        restore_fn: Callable[[bytes], None],
        on_state_change: Callable[[], None] | None = None,
        events: EventLog | None = None,
    ) -> None:
        settings.validate()
        for cls in compat_classes(self.core_class):
            check_overrides(cls)  # refuse to start on a pysyncobj whose private names moved
            check_protected(cls)
        check_connection_attributes()
        raft_pickle.install()  # what a peer sends is data, never code (cluster/raft_pickle.py)
        self.settings = settings
        # commands proposed together share a log entry (cluster/raft_proposals.py): every member
        # applies a batch entry's commands one by one, through the same apply_fn
        self._core = self.core_class(settings, apply_batch(apply_fn), snapshot_fn, restore_fn, on_state_change, events)
        self._batcher = ProposalBatcher(lambda payload, answer: self._core._apply(payload, callback=answer))

    # -- what a node sees --------------------------------------------------------------------------
    @property
    def events(self) -> EventLog:
        return self._core.events

    def status(self) -> dict[str, Any]:
        """Role, leader, term, indexes, quorum, links and counters (``/v1/status``'s Raft part)."""
        status = self._core.status()
        # log entries this node proposed, and how many commands went in batch entries (raft_proposals)
        status["proposals"] = {"entries": self._batcher.entries, "batched": self._batcher.batched}
        return status

    def role(self) -> tuple[str, str | None, int, bool]:
        """(role, leader address, term, has quorum): the cheap part of ``status``."""
        return self._core.role()

    def links(self) -> dict[str, dict[str, Any]]:
        return self._core.links()

    def is_leader(self) -> bool:
        return bool(self._core._isLeader())

    def has_leader_with_quorum(self) -> bool:
        return self._core.has_leader_with_quorum()

    @property
    def read_index_rounds(self) -> int:
        """Heartbeat rounds started to confirm a read index (cluster/raft_read.py)."""
        return int(self._core.read_index_rounds)

    # -- members (cluster/membership.py) -----------------------------------------------------------
    def members(self) -> list[Member]:
        return self._core.members()

    def member_id(self, raft_addr: str) -> str | None:
        return self._core.member_id(raft_addr)

    @property
    def self_member(self) -> Member:
        return self._core.self_member

    def reachable_ids(self) -> set[str]:
        return self._core.reachable_ids()

    async def change_membership(self, action: str, member: Member, timeout: float) -> None:
        await self._core.change_membership(action, member, timeout)

    async def transfer_leadership(self, timeout: float) -> None:
        await self._core.transfer_leadership(timeout)

    # -- reads and commands ------------------------------------------------------------------------
    async def read_index(self, timeout: float) -> int:
        """A read index; once applied here, local state is linearizable (cluster/raft_read.py)."""
        return await self._core.read_index(timeout)

    async def submit(self, payload: bytes, timeout: float, quorum_wait: float = 0.5,
                     abort_without_quorum: bool = False) -> Any:
        """Replicate ``payload`` and return ``apply_fn``'s result once applied on THIS node.

        A node that knows no leader with quorum waits up to ``quorum_wait`` for one (an election
        takes ~0.3 s), then raises NoQuorum without submitting: a node cut off from the majority
        answers at once and for sure "not applied", instead of queueing the command towards a leader
        it cannot reach and leaving the client with an unknown outcome after the whole timeout.
        Retries transient failures with the same payload until ``timeout``; raises OutcomeUnknown
        if no definite answer came in time and CommandRejected if pysyncobj refused it for good.
        With ``abort_without_quorum`` (commands without effect: read barriers) it also gives up
        with NoQuorum once this node has had no leader with quorum for ``quorum_wait`` while waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._wait_for_quorum(min(quorum_wait, timeout))
        last_reason = "timeout"
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OutcomeUnknown(last_reason)
            fut: asyncio.Future[tuple[Any, int]] = loop.create_future()
            self._batcher.propose(payload, fut)  # alone or in a batch entry with this iteration's others
            try:
                if abort_without_quorum:
                    result, err = await self._await_with_quorum(fut, deadline, quorum_wait)
                else:
                    result, err = await within(fut, remaining)
            except TimeoutError:
                raise OutcomeUnknown(last_reason if attempt else "timeout") from None
            if err == FAIL_REASON.SUCCESS:
                return result
            if err == FAIL_REASON.REQUEST_DENIED:  # only our deadline check denies an _apply command
                raise CommandRejected("its deadline passed before the leader appended it: not applied")
            if err == BATCH_DENIED:  # denied for another command's deadline; this one was not appended either
                continue
            last_reason = _FAIL_NAMES.get(err, str(err))
            if err not in _RETRYABLE:
                raise OutcomeUnknown(last_reason)
            attempt += 1
            # retry as soon as a leader with quorum is known again (a fixed backoff of up to 100 ms
            # added that much to every write's unavailability after an election), at most 100 ms apart
            until = min(loop.time() + min(0.02 * attempt, 0.1), deadline)
            while loop.time() < until and not self._core.has_leader_with_quorum():
                await asyncio.sleep(0.005)

    async def _await_with_quorum(self, fut: asyncio.Future[tuple[Any, int]], deadline: float,
                                 quorum_wait: float) -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        lost_since: float | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait([fut], timeout=min(0.05, remaining))
            if done:
                return fut.result()
            if self._core.has_leader_with_quorum():
                lost_since = None
            elif lost_since is None:
                lost_since = loop.time()
            elif loop.time() - lost_since >= quorum_wait:
                raise NoQuorum("this node lost its quorum while the request waited; nothing was changed")

    async def _wait_for_quorum(self, wait: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while not self._core.has_leader_with_quorum():
            if loop.time() >= until:
                raise NoQuorum("this node has no quorum (no reachable leader); nothing was applied")
            await asyncio.sleep(0.02)

    # -- lifecycle --------------------------------------------------------------------------------
    def destroy(self) -> None:
        self._core.destroy()

    def destroy_synchronous(self) -> None:
        self._core.destroy_synchronous()
