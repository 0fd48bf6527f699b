"""ReadIndex (Raft thesis §6.4): linearizable reads without a log entry, mixed into ``RaftNode``.

Leader: a read takes the commit index as its read index (once the leader has committed an entry
of its own term, its no-op), then confirms it is still the leader with one round of AppendEntries
to a majority — answered after the read arrived: heartbeats are numbered per peer and followers
echo the number they answer (cluster/raft_transport.py) — no log entry, no fsync. Concurrent reads
share a round. Follower: asks the leader for a read index (``gw_read_index`` over the Raft link),
waits until it has applied that index, then serves locally.

Leader leases (optional, ``[raft] lease_reads``, off by default; Raft thesis §6.4.1): while the
leader has heard from a majority within the lease — measured from when it *sent* the heartbeats
those members acknowledged, never from when the answers arrived — a read takes the commit index
at once, with no heartbeat round. Safe because, with leases on, a member that heard from a leader
grants neither a pre-vote (cluster/raft_prevote.py) nor a vote (cluster/raft_core.py) to anyone
else for ``min_timeout`` of its own clock, unless the candidate campaigns on a leadership
transfer, and a leader that starts a transfer gives up its lease for the rest of its term. Clock
assumption: over one lease, two members' clocks drift apart by less than ``lease_clock_drift``;
``lease_duration`` < ``min_timeout`` - ``lease_clock_drift`` (checked by RaftSettings.validate).

Everything that touches pysyncobj state runs on its tick thread (``_serve_reads`` is a tick
callback); the asyncio side only enqueues and awaits. A read whose confirmation fails (leadership
moved, no answer in time, an old leader that does not speak ``gw_read_index``) raises
``ReadIndexUnavailable``: the caller falls back to the replicated barrier.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from pysyncobj.monotonic import monotonic as monotonic_time  # the clock the transport stamps sends with

from cluster.loop_wait import within

READ_REQUEST, READ_RESPONSE = "gw_read_index", "gw_read_index_resp"
CONFIRM_TIMEOUT = 1.0  # seconds a leader tries to confirm one read before giving up on it


class ReadIndexUnavailable(RuntimeError):
    """No read index could be had (not leader, leadership moved, no leader known, no answer)."""


Reply = Callable[[int | None, str | None], None]  # (index, error)


def lease_expiry(acked_send_times: Iterable[float], voters: int, since: float, duration: float) -> float | None:
    """When the leader's lease ends (monotonic time), or None if it holds none.

    ``acked_send_times``: per other voter, when the newest heartbeat it acknowledged was *sent*;
    heartbeats sent before ``since`` (this term's leadership) do not count. The leader is one of
    the majority itself; the lease runs from the send time of the heartbeat that completed the
    majority (the oldest of the newest acknowledgements a majority needs)."""
    need = voters // 2  # other members besides this one that make a majority
    if need == 0:
        return math.inf  # the only voter: no one else can be elected
    times = sorted((t for t in acked_send_times if t >= since), reverse=True)
    if len(times) < need:
        return None
    return times[need - 1] + duration


class ReadIndexMixin:
    """Needs ``self._SyncObj__*`` state; ``_read_init`` after SyncObj's ``__init__``."""

    lease_duration: float | None = None  # seconds; None: no leases
    lease_reads = 0  # reads answered by the lease, without a heartbeat round
    _lease_blocked_term = -1  # a term in which this leader started a leadership transfer
    _lease_term = -1
    _lease_since = 0.0
    _lease_until: float | None = None

    def _read_init(self, lease_duration: float | None = None) -> None:
        self.lease_duration = lease_duration
        self._read_new: deque[Reply] = deque()  # asyncio thread / message handler -> tick thread
        self._read_pending: list[tuple[int, int, dict[Any, int], float, Reply]] = []
        self._read_waiting_noop: list[tuple[float, Reply]] = []
        self._read_remote: dict[int, Reply] = {}  # follower: request id -> reply
        self._read_remote_leader: Any = None  # the leader the outstanding requests went to
        self._read_ids = itertools.count(1)
        self.read_index_rounds = 0
        self.addOnTickCallback(self._serve_reads)  # type: ignore[attr-defined]

    # -- asyncio side ---------------------------------------------------------------------------------
    async def read_index(self, timeout: float) -> int:
        """A read index: once this node has applied it, its local state is linearizable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int | None, str | None]] = loop.create_future()

        def reply(index: int | None, error: str | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, index, error)

        self._read_new.append(reply)
        self._wake()
        try:
            index, error = await within(fut, timeout)
        except TimeoutError:
            raise ReadIndexUnavailable("no read index in time") from None
        if error is not None or index is None:
            raise ReadIndexUnavailable(error or "no read index")
        deadline = loop.time() + timeout
        pause = 0.0005
        while self._SyncObj__raftLastApplied < index:  # type: ignore[attr-defined]
            if loop.time() >= deadline:
                raise ReadIndexUnavailable(f"not applied up to the read index {index} in time")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.005)
        return index

    def _wake(self) -> None:
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    # -- tick thread ------------------------------------------------------------------------------------
    def _serve_reads(self) -> None:
        now = monotonic_time()
        leader = self._SyncObj__raftState == 2  # type: ignore[attr-defined]
        fresh: list[Reply] = []
        while self._read_new:
            fresh.append(self._read_new.popleft())
        if not leader:
            if self._read_remote and self._SyncObj__raftLeader is not self._read_remote_leader:  # type: ignore[attr-defined]
                self._fail_remote("the leader changed")  # a paused or cut-off old leader never answers
            for reply in fresh:
                self._ask_leader(reply)
            for _t, reply in self._read_waiting_noop:
                reply(None, "leadership moved")
            for *_rest, reply in self._read_pending:
                reply(None, "leadership moved")
            self._read_waiting_noop, self._read_pending = [], []
            return
        noop = self._SyncObj__noopIDx  # type: ignore[attr-defined]
        commit = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        term = self._SyncObj__raftCurrentTerm  # type: ignore[attr-defined]
        leased = self.lease_duration is not None and self._lease_valid(now, term)  # every tick: status is fresh
        if leased and (fresh or self._read_waiting_noop) and noop is not None and commit >= noop:
            for reply in fresh:
                reply(commit, None)
            for _t, reply in self._read_waiting_noop:
                reply(commit, None)
            self.lease_reads += len(fresh) + len(self._read_waiting_noop)
            fresh, self._read_waiting_noop = [], []
        self._read_waiting_noop.extend((now, r) for r in fresh)
        if self._read_waiting_noop and noop is not None and commit >= noop:
            transport = self._SyncObj__transport  # type: ignore[attr-defined]
            marks = transport.heartbeat_marks()
            for _t, reply in self._read_waiting_noop:
                self._read_pending.append((commit, term, marks, now, reply))
            self._read_waiting_noop = []
            self.read_index_rounds += 1
            if marks:
                self._SyncObj__sendAppendEntries()  # type: ignore[attr-defined]
        else:
            expired = [(t, r) for t, r in self._read_waiting_noop if now - t > CONFIRM_TIMEOUT]
            for _t, reply in expired:
                reply(None, "the leader has not committed an entry of its term yet")
            self._read_waiting_noop = [(t, r) for t, r in self._read_waiting_noop if now - t <= CONFIRM_TIMEOUT]
        if not self._read_pending:
            return
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        cluster = len(self._SyncObj__otherNodes) + 1  # type: ignore[attr-defined]
        still: list[tuple[int, int, dict[Any, int], float, Reply]] = []
        for index, t, marks, since, reply in self._read_pending:
            if t != term:
                reply(None, "leadership moved")
            elif (transport.acked_since(marks) + 1) * 2 > cluster:
                reply(index, None)
            elif now - since > CONFIRM_TIMEOUT:
                reply(None, "no majority confirmed the leadership in time")
            else:
                still.append((index, t, marks, since, reply))
        self._read_pending = still

    def _lease_valid(self, now: float, term: int) -> bool:
        """Tick thread, leader only: does this leader hold a lease right now?"""
        if self.lease_duration is None:
            return False
        if term != self._lease_term:  # a new term of leadership: only its own heartbeats count
            self._lease_term, self._lease_since = term, now
        if term == self._lease_blocked_term:
            self._lease_until = None
            return False
        others = self._SyncObj__otherNodes  # type: ignore[attr-defined]
        acked = self._SyncObj__transport.acked_send_times()  # type: ignore[attr-defined]
        self._lease_until = lease_expiry((acked[n] for n in others if n in acked), len(others) + 1,
                                         self._lease_since, self.lease_duration)
        return self._lease_until is not None and now < self._lease_until

    def lease_status(self) -> dict[str, Any]:
        """``{"enabled", "reads", "valid_for_s"}`` as last seen by the tick thread (any thread)."""
        until = self._lease_until
        leader = self._SyncObj__raftState == 2  # type: ignore[attr-defined]
        left = None if until is None or not leader else max(0.0, until - monotonic_time())
        return {"enabled": self.lease_duration is not None, "reads": self.lease_reads,
                "valid_for_s": None if left is None or left == math.inf else round(left, 3)}

    def _ask_leader(self, reply: Reply) -> None:
        leader = self._SyncObj__raftLeader  # type: ignore[attr-defined]
        if leader is None or not self.hasQuorum:  # type: ignore[attr-defined]
            reply(None, "no leader with quorum known")
            return
        if leader is not self._read_remote_leader:
            self._fail_remote("the leader changed")
            self._read_remote_leader = leader
        rid = next(self._read_ids)
        self._read_remote[rid] = reply
        if not self._SyncObj__transport.send(leader, {"type": READ_REQUEST, "rid": rid}):  # type: ignore[attr-defined]
            self._read_remote.pop(rid, None)
            reply(None, "the leader is not connected")
        if len(self._read_remote) > 10_000:  # answers that never came (leader died): forget the oldest
            for stale in list(self._read_remote)[:5_000]:
                self._read_remote.pop(stale)(None, "no answer from the leader")

    def _fail_remote(self, why: str) -> None:
        """Answer every read-index request still waiting for a leader's reply: the read falls back
        to the replicated barrier, which a new leader commits, instead of waiting out its timeout."""
        waiting, self._read_remote = self._read_remote, {}
        for reply in waiting.values():
            reply(None, why)

    def _handle_read_message(self, node: Any, message: Any) -> bool:
        """Our two message types; True when ``message`` was one (pysyncobj never sees them)."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == READ_REQUEST:
            rid = message.get("rid")
            transport = self._SyncObj__transport  # type: ignore[attr-defined]

            def answer(index: int | None, error: str | None, node: Any = node, rid: Any = rid) -> None:
                transport.send(node, {"type": READ_RESPONSE, "rid": rid, "index": index, "error": error})

            if self._SyncObj__raftState != 2:  # type: ignore[attr-defined]
                answer(None, "not the leader")  # never forwarded again: views that disagree cannot loop
            else:
                self._read_new.append(answer)  # served by _serve_reads on this same tick thread
            return True
        if kind == READ_RESPONSE:
            reply = self._read_remote.pop(message.get("rid"), None)
            if reply is not None:
                index = message.get("index")
                reply(int(index) if isinstance(index, int) else None, message.get("error"))
            return True
        return False


def _settle(fut: asyncio.Future[tuple[int | None, str | None]], index: int | None, error: str | None) -> None:
    if not fut.done():
        fut.set_result((index, error))
