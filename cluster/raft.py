"""Thin adapter over pysyncobj 0.3.17: one replicated ``apply(bytes)``, durability and safety fixes,
and thread -> asyncio bridging. No gateway logic lives here.

Why each piece exists (details in docs/pysyncobj.md):

* ``DurableJournal`` — pysyncobj's FileJournal writes into an mmap and only msyncs on destroy, and
  its meta file (term, vote, commit index) is renamed without fsync. We flush the journal after every
  append/truncate and fsync the meta file, so an entry is on disk before the leader counts it and
  before a follower acknowledges it (a follower appends before it answers AppendEntries).
* ``RaftNode._SyncObj__onMessageReceived`` — pysyncobj truncates a follower's log on ANY
  AppendEntries whose prevLogIdx is behind the log end, not only from the first conflicting entry
  (Raft §5.3). A duplicated or reordered older message can delete applied entries and wedge the
  node. We trim entries the follower already has (same index and term) before pysyncobj sees the
  message, and answer fully-stale messages ourselves without touching the log.
* snapshot AppendEntries never advance the commit index — pysyncobj sets a follower's commit
  index to min(leader commit, own log end) after any AppendEntries, also after the snapshot
  messages that carry no log position, so a deposed leader applied its own uncommitted entries and
  acknowledged writes that were then lost (found by the chaos suite, isolate-leader).
* msgpack dump serializer — pysyncobj pickles dumps by default; we hand it our own serializer so
  the snapshot file holds msgpack and the application state is written by the store.
* dynamic membership (``cluster/membership.py``, mixed in): a thread-safe member table that
  carries each member's gwadm id and admin URL, one change at a time, and a boot membership that
  honours the journal and the dump so that config-file peers never resurrect a removed member.
* ``submit`` — every call has a deadline (callbacks were seen to never fire), results are handed to
  asyncio with ``call_soon_threadsafe`` from the tick thread, and transient failures (no leader,
  leader changed) are retried with the same payload: the store dedupes by request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import msgpack
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from cluster.events import EventLog
from cluster.membership import Member, MembershipMixin, encode_cluster, read_dump_cluster
from cluster.raft_compat import check_attributes, check_overrides
from cluster.raft_deadline import DeadlineQueue
from cluster.raft_journal import DurableJournal, fsync_dir
from cluster.raft_prevote import PreVoteMixin
from cluster.raft_read import ReadIndexMixin
from cluster.raft_transport import BoundTcpConnection, BoundTCPTransport, transport_class

log = logging.getLogger("gwadm.raft")


class RaftConfigError(ValueError):
    """A Raft setting is invalid; the message says which and what to do."""


class RaftBindError(RuntimeError):
    """The Raft port could not be bound (busy or not local)."""


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


@dataclass
class RaftSettings:
    self_addr: str
    partners: list[str]
    password: str
    data_dir: str
    fsync: bool = True
    min_timeout: float = 0.15
    max_timeout: float = 0.3
    append_entries_period: float = 0.04
    leader_fallback_timeout: float = 1.0
    connection_retry_time: float = 0.5
    max_bind_retries: int = 5
    compaction_min_entries: int = 5000
    compaction_min_time: float = 300.0
    # Bound on the wall-clock difference between any two members (cluster/raft_deadline.py): a
    # command's deadline is set this much before its handler's, so the leader never appends it
    # after the handler answered.
    max_clock_skew: float = 0.5
    # Peer links (cluster/raft_transport.py): a connect attempt is abandoned and retried after
    # connect_timeout; a link that heard nothing (not even a ping) for link_timeout is closed.
    connect_timeout: float = 0.5
    link_timeout: float = 1.5
    link_ping_interval: float = 0.25
    group_commit: bool = True  # concurrent writes share one journal flush (cluster/raft_journal.py)
    pre_vote: bool = True  # ask for pre-votes before starting an election (cluster/raft_prevote.py)
    source_address: str | None = None  # bind outgoing peer connections to it (cluster/raft_transport.py)
    # Listen on this host (e.g. 0.0.0.0 in a container) with self_addr's port; self_addr stays the
    # address peers know this node by. None = listen on self_addr itself.
    bind_host: str | None = None
    # Membership metadata: this node's gwadm id and admin URL, and the peers' (matched to
    # ``partners`` by raft address); a bare address stands in for an unknown id.
    node_id: str = ""
    admin_url: str = ""
    peer_members: list[Member] = field(default_factory=list)

    def validate(self) -> None:
        """Turn pysyncobj's bare asserts into errors a user can act on."""
        if not self.password:
            raise RaftConfigError("a cluster secret is required: Raft traffic is encrypted with it")
        if self.append_entries_period <= 0:
            raise RaftConfigError("append_entries_period must be > 0")
        if self.min_timeout <= 3 * self.append_entries_period:
            raise RaftConfigError(
                f"raft min_timeout ({self.min_timeout}s) must be more than 3 x append_entries_period "
                f"({self.append_entries_period}s): followers would start elections between heartbeats"
            )
        if self.max_timeout <= self.min_timeout:
            raise RaftConfigError(
                f"raft max_timeout ({self.max_timeout}s) must be greater than min_timeout ({self.min_timeout}s)"
            )
        if self.connect_timeout <= 0:
            raise RaftConfigError("connect_timeout must be > 0 seconds")
        if self.link_timeout < 2 * self.link_ping_interval or self.link_ping_interval <= 0:
            raise RaftConfigError(
                f"link_timeout ({self.link_timeout}s) must be at least twice link_ping_interval "
                f"({self.link_ping_interval}s): a healthy idle link would be closed between two pings"
            )
        if self.max_clock_skew < 0:
            raise RaftConfigError("max_clock_skew must be >= 0 seconds")
        if self.leader_fallback_timeout <= self.append_entries_period:
            raise RaftConfigError("leader_fallback_timeout must be greater than append_entries_period")
        for addr in [self.self_addr, *self.partners]:
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise RaftConfigError(f"raft address {addr!r} must look like host:port")
        if self.self_addr in self.partners:
            raise RaftConfigError(f"raft address {self.self_addr} is listed as its own peer")


_journal_lock = threading.Lock()


class RaftNode(PreVoteMixin, ReadIndexMixin, MembershipMixin, SyncObj):  # type: ignore[misc]
    """One Raft member whose only replicated operation is ``_apply(payload: bytes)``.

    ``apply_fn(payload) -> result`` runs in pysyncobj's tick thread for every committed command, in
    log order, on every member; it must be deterministic and must not block. ``snapshot_fn() ->
    bytes`` and ``restore_fn(bytes)`` are called from the same thread for log compaction and boot.
    """

    def __init__(
        self,
        settings: RaftSettings,
        apply_fn: Callable[[bytes], Any],
        snapshot_fn: Callable[[], bytes],
        restore_fn: Callable[[bytes], None],
        on_state_change: Callable[[], None] | None = None,
        events: EventLog | None = None,
    ) -> None:
        settings.validate()
        self.events = events or EventLog(settings.node_id or settings.self_addr)
        for cls in (type(self), BoundTCPTransport, BoundTcpConnection, DurableJournal):
            check_overrides(cls)  # refuse to start on a pysyncobj whose private names moved
        os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
        self._apply_fn = apply_fn
        self._snapshot_fn = snapshot_fn
        self._restore_fn = restore_fn
        self._on_state_change = on_state_change
        self.settings = settings
        self.stale_append_entries_trimmed = 0
        journal_file = os.path.join(settings.data_dir, "raft.journal")
        dump_file = os.path.join(settings.data_dir, "raft.dump")
        self._dump_file = dump_file
        self.stale_snapshots_ignored = 0
        self._stale_burst: tuple[int, float, int, int] = (0, 0.0, 0, 0)  # count, last at, index, applied
        conf = SyncObjConf(
            password=settings.password,
            appendEntriesUseBatch=False,
            raftMinTimeout=settings.min_timeout,
            raftMaxTimeout=settings.max_timeout,
            appendEntriesPeriod=settings.append_entries_period,
            leaderFallbackTimeout=settings.leader_fallback_timeout,
            connectionRetryTime=settings.connection_retry_time,
            maxBindRetries=settings.max_bind_retries,
            # pysyncobj binds 0.0.0.0:<port> unless told otherwise: listen only where peers dial us.
            bindAddress=f"{settings.bind_host}:{settings.self_addr.rpartition(':')[2]}" if settings.bind_host
            else settings.self_addr,
            # peers addressed by DNS name (compose services, hosts) may change address: re-resolve
            # often, and do not remember a failed lookup of a peer that is still starting for 30 s
            dnsCacheTime=5.0,
            dnsFailCacheTime=1.0,
            bindRetryTime=0.2,
            journalFile=journal_file,
            fullDumpFile=dump_file,
            serializer=self._serialize_dump,
            deserializer=self._deserialize_dump,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_time,
            onStateChanged=lambda _old, _new: self._notify_state_change(),
            dynamicMembershipChange=True,
            # Never keep a command for a leader that may appear later (cluster/raft_deadline.py).
            commandsWaitLeader=False,
        )
        # The journal is opened before pysyncobj starts so that the boot membership can be read from it.
        journal = DurableJournal(journal_file, settings.fsync, group=False)
        known = {m.raft_addr: m for m in settings.peer_members}
        partners = self._membership_init(
            Member(settings.node_id or settings.self_addr, settings.self_addr, settings.admin_url),
            [known.get(addr) or Member(addr, addr, "") for addr in settings.partners],
            [journal[i] for i in range(len(journal))],
            read_dump_cluster(dump_file),
        )
        with _journal_lock:
            original = _syncobj_module.createJournal
            _syncobj_module.createJournal = lambda path=None: journal
            try:
                super().__init__(
                    settings.self_addr,
                    partners,
                    conf,
                    transportClass=transport_class(
                        settings.source_address,
                        connect_timeout=settings.connect_timeout,
                        link_timeout=settings.link_timeout,
                        ping_interval=settings.link_ping_interval,
                        on_link_change=self._on_link_change,
                    ),
                )
            finally:
                _syncobj_module.createJournal = original
        check_attributes(self)
        self._read_init()
        self._prevote_init(settings.min_timeout, settings.max_timeout, settings.pre_vote)
        self._journal = journal
        self._SyncObj__transport.before_ack = journal.flush_pending  # group commit (raft_journal.py)...
        self.expired_commands = DeadlineQueue(
            conf.commandsQueueSize, lambda cb: self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, cb)
        )
        self._SyncObj__commandsQueue = self.expired_commands  # before any command: nothing is lost
        # Role, term, leader and quorum as one consistent tuple, taken on the tick thread between
        # messages: read from another thread they can tear (a leader that just saw a higher term
        # has the new term but not yet the follower role), which looked like two leaders in one
        # term to the chaos suite's single-leader checker.
        self._role_snapshot: tuple[int, int, Any, bool] | None = None
        self.addOnTickCallback(self._record_role)
        self.addOnTickCallback(journal.flush_pending)
        journal.group = settings.group_commit  # ...armed only now that every flush point is hooked
        try:
            self.waitBinded()
        except Exception as exc:
            self.destroy()
            raise RaftBindError(
                f"cannot bind Raft address {settings.self_addr}: port busy or address not local"
            ) from exc

    # -- the one replicated command ---------------------------------------------------------------
    @replicated
    def _apply(self, payload: bytes) -> Any:
        return self._apply_fn(payload)

    def _notify_state_change(self) -> None:
        if self._on_state_change is not None:
            self._on_state_change()

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

            def callback(result: Any, err: int, fut: asyncio.Future[tuple[Any, int]] = fut) -> None:
                loop.call_soon_threadsafe(_resolve, fut, result, err)

            self._apply(payload, callback=callback)
            try:
                if abort_without_quorum:
                    result, err = await self._await_with_quorum(fut, deadline, quorum_wait)
                else:
                    result, err = await asyncio.wait_for(asyncio.shield(fut), remaining)
            except TimeoutError:
                raise OutcomeUnknown(last_reason if attempt else "timeout") from None
            if err == FAIL_REASON.SUCCESS:
                return result
            if err == FAIL_REASON.REQUEST_DENIED:  # only our deadline check denies an _apply command
                raise CommandRejected("its deadline passed before the leader appended it: not applied")
            last_reason = _FAIL_NAMES.get(err, str(err))
            if err not in _RETRYABLE:
                raise OutcomeUnknown(last_reason)
            attempt += 1
            await asyncio.sleep(min(0.02 * attempt, 0.1, max(deadline - loop.time(), 0)))

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
            if self.has_leader_with_quorum():
                lost_since = None
            elif lost_since is None:
                lost_since = loop.time()
            elif loop.time() - lost_since >= quorum_wait:
                raise NoQuorum("this node lost its quorum while the request waited; nothing was changed")

    def has_leader_with_quorum(self) -> bool:
        snap = self._role_snapshot
        if snap is None:
            return True  # not ticked yet: let pysyncobj decide
        _state, _term, leader, has_quorum = snap
        return bool(has_quorum) and leader is not None

    async def _wait_for_quorum(self, wait: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while not self.has_leader_with_quorum():
            if loop.time() >= until:
                raise NoQuorum("this node has no quorum (no reachable leader); nothing was applied")
            await asyncio.sleep(0.02)

    # -- status -------------------------------------------------------------------------------------
    def _record_role(self) -> None:
        snap = (
            self._SyncObj__raftState, self._SyncObj__raftCurrentTerm, self._SyncObj__raftLeader, self.hasQuorum,
        )  # fmt: skip
        before, self._role_snapshot = self._role_snapshot, snap
        if before is not None and before != snap:
            self._role_events(before, snap)
        count, last, index, applied = self._stale_burst
        if count and monotonic() - last > 1.0:
            self._stale_burst = (0, 0.0, 0, 0)
            self.events.emit("stale_snapshots_ignored", level=logging.WARNING, count=count,
                             last_index=index, applied=applied)

    def _role_events(self, before: tuple[int, int, Any, bool], after: tuple[int, int, Any, bool]) -> None:
        """Elections, leader changes and quorum changes as events (cluster/events.py)."""
        (state0, term0, leader0, quorum0), (state1, term1, leader1, quorum1) = before, after
        emit = self.events.emit
        if state1 == 1 and (state0 != 1 or term1 != term0):
            emit("election_started", term=term1)
        if state0 == 1 and state1 == 2:
            emit("election_won", term=term1)
        elif state0 == 1 and state1 == 0:
            emit("election_lost", term=term1, leader=self._addr_id(leader1))
        if leader1 != leader0 and leader1 is not None:
            emit("leader_changed", term=term1, leader=self._addr_id(leader1), previous=self._addr_id(leader0))
        if quorum0 and not quorum1:
            emit("quorum_lost", level=logging.WARNING, term=term1)
        elif quorum1 and not quorum0:
            emit("quorum_regained", term=term1)

    def _addr_id(self, node: Any) -> str | None:
        if node is None:
            return None
        address = getattr(node, "address", None) or str(node)
        return self.member_id(address) or address

    def _on_link_change(self, address: str, up: bool, reason: str) -> None:
        self.events.emit("link_up" if up else "link_down", level=logging.INFO if up else logging.WARNING,
                         peer=self.member_id(address) or address)

    def links(self) -> dict[str, dict[str, Any]]:
        """Each peer's link (cluster/raft_transport.py), by member id."""
        transport = self._SyncObj__transport
        raw = transport.links() if hasattr(transport, "links") else {}
        return {self.member_id(addr) or addr: info for addr, info in raw.items()}

    def status(self) -> dict[str, Any]:
        for attempt in range(5):  # the tick thread may change the member set while getStatus iterates it
            try:
                s = self.getStatus()
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        if self._role_snapshot is not None:
            s["state"], s["raft_term"], s["leader"], s["has_quorum"] = self._role_snapshot
        leader = s.get("leader")
        partners = {
            key[len("partner_node_status_server_") :]: value == 2
            for key, value in s.items()
            if key.startswith("partner_node_status_server_")
        }
        return {
            "role": {0: "follower", 1: "candidate", 2: "leader"}.get(s["state"], "unknown"),
            "leader": leader.id if leader is not None else None,
            "term": s["raft_term"],
            "commit_index": s["commit_idx"],
            "applied_index": s["last_applied"],
            "log_len": s["log_len"],
            "has_quorum": bool(s["has_quorum"]),
            "partners_connected": partners,
            "stale_append_entries_trimmed": self.stale_append_entries_trimmed,
            "stale_snapshots_ignored": self.stale_snapshots_ignored,
            "expired_commands": self.expired_commands.expired,
            "links": self.links(),
            "link_counters": {
                "connect_deadlines_hit": getattr(self._SyncObj__transport, "connect_deadlines_hit", 0),
                "idle_links_closed": getattr(self._SyncObj__transport, "idle_links_closed", 0),
            },
        }

    # -- msgpack dump (log compaction snapshot) ----------------------------------------------------
    def _serialize_dump(self, file_name: str, data: Any) -> None:
        last_entry, prev_entry, cluster = data
        payload = {
            "format": 2,
            "entries": [list(last_entry), list(prev_entry)],
            "cluster": encode_cluster(cluster, self._known),  # format 1: bare addresses
            "app": self._snapshot_fn(),
        }
        with open(file_name, "wb") as f:
            f.write(msgpack.packb(payload, use_bin_type=True))
            f.flush()
            if self.settings.fsync:
                os.fsync(f.fileno())

    def _deserialize_dump(self, file_name: str) -> tuple[Any, Any, Any]:
        boot = self._take_boot_members()  # taken even if this load fails: it is for the boot load only
        with open(file_name, "rb") as f:
            payload = msgpack.unpackb(f.read(), raw=False)
        self._restore_fn(payload["app"])
        last_entry, prev_entry = (tuple(e) for e in payload["entries"])
        return last_entry, prev_entry, self._dump_partners(payload["cluster"], boot)

    # -- Raft §5.3 fix: never truncate on a stale AppendEntries ----------------------------------
    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if self._handle_read_message(node, message):  # ReadIndex traffic (cluster/raft_read.py)
            return
        if self._handle_pre_vote(node, message):  # pre-vote (cluster/raft_prevote.py)
            return
        self._note_leader_contact(message)
        if (
            message.get("type") == "append_entries"
            and "prevLogIdx" not in message
            and message.get("term", -1) >= self.raftCurrentTerm
        ):
            serialized = message.get("serialized")
            if isinstance(serialized, tuple | list) and len(serialized) == 3 and serialized[1]:
                self._backup_own_dump()  # first chunk: the transmission will replace our dump file
            # Snapshot transmissions carry no log position, yet pysyncobj raises the commit index
            # to min(leader commit, OUR log end) after any AppendEntries: a deposed leader's
            # uncommitted entries would be applied as committed (found by the chaos suite: a 200
            # for a write that was then lost). Only a message that verified the log may do that.
            message = {**message, "commit_index": min(message.get("commit_index", 0), self.raftCommitIndex)}
        elif (
            message.get("type") == "append_entries"
            and "prevLogIdx" in message
            and message.get("transmission") is None
            and message.get("term", -1) >= self.raftCurrentTerm
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
                super()._SyncObj__onMessageReceived(node, bookkeeping)
                self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=covered + 1, success=True)
                return
            message = trimmed
        super()._SyncObj__onMessageReceived(node, message)
        if self._read_pending and message.get("type") == "next_node_idx":
            self._serve_reads()  # a heartbeat answer may confirm waiting reads: answer them now

    # -- stale snapshots: never install one that is not newer than what is applied -------------------
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
            if index is not None and index <= self.raftLastApplied:
                self.stale_snapshots_ignored += 1
                # A catching-up follower drains up to ~a dozen of these in a burst: one event per
                # burst with the count (flushed by _record_role once the burst is over).
                self._stale_burst = (self._stale_burst[0] + 1, monotonic(), index, self.raftLastApplied)
                if os.path.exists(backup):
                    os.replace(backup, self._dump_file)
                else:  # we had no dump: our journal holds everything, a foreign older dump must go
                    os.unlink(self._dump_file)
                if self.settings.fsync:
                    fsync_dir(os.path.dirname(self._dump_file) or ".")
                self.forceLogCompaction()  # and write a dump of what we do have, soon
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup)
        super()._SyncObj__loadDumpFile(clearJournal)
        if clearJournal:
            self.events.emit("snapshot_installed", applied=self.raftLastApplied)

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:  # noqa: N802, N803
        """Compaction deletes the log up to the index its dump was taken at; if the log no longer
        reaches that index, deleting would empty it and wedge the node: keep it instead."""
        raft_log = self._SyncObj__raftLog
        if len(raft_log) == 0 or toIDx > raft_log[-1][1]:
            log.warning("not compacting the log to %d: it ends before that", toIDx)
            return
        super()._SyncObj__deleteEntriesTo(toIDx)

    def _trim_append_entries(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Drop the prefix of ``entries`` this log already holds (same index and term).

        Returns the message to hand to pysyncobj, or None when every entry is already present and
        the log extends beyond them (a stale or duplicated message that must not truncate anything).
        """
        raft_log = self._SyncObj__raftLog
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


def _resolve(fut: asyncio.Future[tuple[Any, int]], result: Any, err: int) -> None:
    if not fut.done():
        fut.set_result((result, err))
