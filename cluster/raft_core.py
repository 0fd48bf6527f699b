"""The pysyncobj member itself: the SyncObj subclass that holds every override and mixin.

Internal to the adapter: only ``cluster.raft.RaftNode`` creates and holds one, and nothing else in
the node sees it (the façade exposes the adapter's own API, not pysyncobj's). Mixed in, in MRO
order: pre-vote (cluster/raft_prevote.py), ReadIndex (cluster/raft_read.py), the log-safety fixes
(cluster/raft_safety.py), AppendEntries coalescing (cluster/raft_batch.py), dynamic membership
(cluster/membership.py). The durable journal, the msgpack dump serializer, role/term/quorum snapshots and the events they produce live here.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

import msgpack
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from cluster.events import EventLog
from cluster.membership import MembershipMixin
from cluster.membership_records import Member, encode_cluster, read_dump_cluster
from cluster.raft_batch import AppendBatchMixin
from cluster.raft_compat import TRANSPORT_ATTRIBUTES, PysyncobjIncompatible, check_attributes
from cluster.raft_deadline import DeadlineQueue
from cluster.raft_dump import DumpJob, SlicedSerializer
from cluster.raft_journal import DurableJournal, write_atomically
from cluster.raft_prevote import PreVoteMixin
from cluster.raft_read import ReadIndexMixin
from cluster.raft_safety import LogSafetyMixin, align_journal_to_dump
from cluster.raft_seal import FrameSeal
from cluster.raft_settings import RaftBindError, RaftSettings
from cluster.raft_transport import transport_class

_journal_lock = threading.Lock()
_ROLES = {0: "follower", 1: "candidate", 2: "leader"}  # pysyncobj's _RAFT_STATE values


class RaftCore(PreVoteMixin, ReadIndexMixin, LogSafetyMixin, AppendBatchMixin, MembershipMixin, SyncObj):  # type: ignore[misc]
    """One pysyncobj member whose only replicated operation is ``_apply(payload: bytes)``.

    ``apply_fn(payload) -> result`` runs in pysyncobj's tick thread for every committed command, in
    log order, on every member; it must be deterministic and must not block. ``snapshot_fn()`` and
    ``restore_fn(bytes)`` are called from the same thread for log compaction and boot;
    ``snapshot_fn`` returns the dump's bytes, or an iterable of slices whose concatenation they are
    (taken over the next ticks, cluster/raft_dump.py: they must read only state captured when it
    was called).
    The caller (``RaftNode``) validates the settings and runs the start-up compatibility checks.
    """

    def __init__(
        self,
        settings: RaftSettings,
        apply_fn: Callable[[bytes], Any],
        snapshot_fn: Callable[[], bytes | Iterable[bytes]],
        restore_fn: Callable[[bytes], None],
        on_state_change: Callable[[], None] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.events = events or EventLog(settings.node_id or settings.self_addr)
        os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
        self._apply_fn = apply_fn
        self._snapshot_fn = snapshot_fn
        self._restore_fn = restore_fn
        self._on_state_change = on_state_change
        self.settings = settings
        self._fsync = settings.fsync
        self.stale_append_entries_trimmed = 0
        journal_file = os.path.join(settings.data_dir, "raft.journal")
        dump_file = os.path.join(settings.data_dir, "raft.dump")
        self._dump_file = dump_file
        self.stale_snapshots_ignored = 0
        self._stale_burst: tuple[int, float, int, int] = (0, 0.0, 0, 0)  # count, last at, index, applied
        # pysyncobj's own Fernet is never built (password=None): every connection seals its frames
        # with ``encryptor`` below, which the transport reads from here (cluster/raft_seal.py).
        self._frame_seal = FrameSeal(settings.password)
        conf = SyncObjConf(
            password=None,
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
        dump = read_dump_cluster(dump_file)
        if dump is not None:  # before anything reads the journal: the boot membership, pysyncobj's load
            align_journal_to_dump(journal, dump[0])
        known = {m.raft_addr: m for m in settings.peer_members}
        partners = self._membership_init(
            Member(settings.node_id or settings.self_addr, settings.self_addr, settings.admin_url),
            [known.get(addr) or Member(addr, addr, "") for addr in settings.partners],
            [journal[i] for i in range(len(journal))],
            dump,
        )
        if not hasattr(_syncobj_module, "Serializer"):
            raise PysyncobjIncompatible("pysyncobj.syncobj has no Serializer to replace (cluster/raft_dump.py); "
                                        "refusing to start")
        with _journal_lock:
            original = _syncobj_module.createJournal
            original_serializer = _syncobj_module.Serializer
            _syncobj_module.createJournal = lambda path=None: journal
            _syncobj_module.Serializer = functools.partial(SlicedSerializer, capture=self._capture_dump)
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
                _syncobj_module.Serializer = original_serializer
        check_attributes(self)
        if not isinstance(self._SyncObj__serializer, SlicedSerializer):
            raise PysyncobjIncompatible("pysyncobj did not build its serializer through pysyncobj.syncobj.Serializer "
                                        "(cluster/raft_dump.py); refusing to start")
        check_attributes(self._SyncObj__transport, TRANSPORT_ATTRIBUTES)
        self._read_init(settings.effective_lease_duration if settings.lease_reads else None)
        self._vote_quiet = settings.min_timeout if settings.lease_reads else None
        self._prevote_init(settings.min_timeout, settings.max_timeout, settings.pre_vote)
        self._batch_init()  # after the pre-vote state its poll deadline reads
        self._journal = journal
        transport = self._SyncObj__transport
        transport.before_ack = journal.flush_pending  # group commit (raft_journal.py)...
        transport.denial_reason = self._take_last_denial  # a forwarded change's refusal (membership.py)
        transport.on_snapshot_sent = self._on_snapshot_sent
        transport.is_transfer = lambda: bool(getattr(self, "_SyncObj__transferInProgress", False))
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

    @property
    def encryptor(self) -> FrameSeal:
        """What pysyncobj's transport seals and opens every frame with (in place of its Fernet)."""
        return self._frame_seal

    # -- the one replicated command ---------------------------------------------------------------
    @replicated  # type: ignore[untyped-decorator]  # pysyncobj's, untyped
    def _apply(self, payload: bytes) -> Any:
        return self._apply_fn(payload)

    def _notify_state_change(self) -> None:
        if self._on_state_change is not None:
            self._on_state_change()

    def has_leader_with_quorum(self) -> bool:
        snap = self._role_snapshot
        if snap is None:
            return True  # not ticked yet: let pysyncobj decide
        _state, _term, leader, has_quorum = snap
        return bool(has_quorum) and leader is not None

    # -- messages: ours first, then the log-safety fixes (cluster/raft_safety.py), then pysyncobj ------
    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if self._handle_read_message(node, message):  # ReadIndex traffic (cluster/raft_read.py)
            return
        if self._handle_pre_vote(node, message):  # pre-vote (cluster/raft_prevote.py)
            return
        if self._refuse_vote(message):
            return
        self._note_leader_contact(message)
        super()._SyncObj__onMessageReceived(node, message)
        self._hold_after_message()  # before pysyncobj's next tick can act on a deadline it just armed
        if self._read_pending and message.get("type") == "next_node_idx":
            self._serve_reads()  # a heartbeat answer may confirm waiting reads: answer them now

    def _refuse_vote(self, message: dict[str, Any]) -> bool:
        """With leases on (Raft thesis §4.2.3): a member that heard from a leader within
        ``min_timeout`` ignores vote requests — no term update, no vote — unless the candidate
        campaigns on a leadership transfer. pysyncobj grants votes regardless, which would let a
        new leader be elected while the old one still serves reads from its lease."""
        if self._vote_quiet is None or message.get("type") != "request_vote" or message.get("gw_transfer"):
            return False
        if self._SyncObj__raftState == 2:  # the leader itself: stepping down ends its lease reads
            return False
        # the clock pre-vote stamps leader contact with (time.monotonic, see raft_prevote "Clock")
        quiet = time.monotonic() - self._pv_last_leader_contact < self._vote_quiet
        if quiet:
            self.votes_refused += 1
        return quiet

    votes_refused = 0

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

    def _on_snapshot_sent(self, address: str, size: int) -> None:
        """pysyncobj's leader sent a lagging follower its whole snapshot (cluster/raft_transport.py)."""
        self.events.emit("snapshot_sent", peer=self.member_id(address) or address, size=size)

    def _on_link_change(self, address: str, up: bool, reason: str) -> None:
        self.events.emit("link_up" if up else "link_down", level=logging.INFO if up else logging.WARNING,
                         peer=self.member_id(address) or address)

    def links(self) -> dict[str, dict[str, Any]]:
        """Each peer's link (cluster/raft_transport.py), by member id."""
        transport = self._SyncObj__transport
        raw = transport.links() if hasattr(transport, "links") else {}
        return {self.member_id(addr) or addr: info for addr, info in raw.items()}

    def role(self) -> tuple[str, str | None, int, bool]:
        """(role, leader address, term, has quorum) as of the last tick: what the config feeds read
        once per applied batch of writes, without the links and counters ``status`` gathers."""
        snap = self._role_snapshot
        if snap is None:  # not ticked yet
            snap = (self._SyncObj__raftState, self._SyncObj__raftCurrentTerm, self._SyncObj__raftLeader,
                    self.hasQuorum)
        state, term, leader, has_quorum = snap
        return _ROLES.get(state, "unknown"), leader.id if leader is not None else None, term, bool(has_quorum)

    def status(self) -> dict[str, Any]:
        # Read straight from the member, not through pysyncobj's getStatus(): that builds a dict of
        # ~20 debug keys (per-peer next/match indexes, uptime, versions) and the push hub and the
        # changes API read this status once per applied batch of writes.
        role, leader, term, has_quorum = self.role()
        connected = self._SyncObj__connectedNodes
        partners = {node.id: node in connected for node in list(self._SyncObj__otherNodes)}
        transport = self._SyncObj__transport
        return {
            "role": role,
            "leader": leader,
            "term": term,
            "commit_index": self._SyncObj__raftCommitIndex,
            "applied_index": self._SyncObj__raftLastApplied,
            "log_len": len(self._SyncObj__raftLog),
            "has_quorum": has_quorum,
            "partners_connected": partners,
            "stale_append_entries_trimmed": self.stale_append_entries_trimmed,
            "stale_snapshots_ignored": self.stale_snapshots_ignored,
            "expired_commands": self.expired_commands.expired,
            "links": self.links(),
            "read_index_rounds": self.read_index_rounds,
            "append_entries": {"rounds": self.append_sends, "coalesced": self.append_sends_coalesced},
            "lease": {**self.lease_status(), "votes_refused": self.votes_refused},
            "link_counters": {
                "connect_deadlines_hit": getattr(transport, "connect_deadlines_hit", 0),
                "idle_links_closed": getattr(transport, "idle_links_closed", 0),
                "snapshots_sent": getattr(transport, "snapshots_sent", 0),
            },
        }

    # -- msgpack dump (log compaction snapshot) ----------------------------------------------------
    def _capture_dump(self, data: Any) -> DumpJob:
        """What a log-compaction dump holds, taken now on the tick thread; encoded over the next
        ticks (cluster/raft_dump.py). ``snapshot_fn`` may return its dump as slices of an
        immutable state value."""
        last_entry, prev_entry, cluster = data
        header = {
            "format": 2,
            "entries": [list(last_entry), list(prev_entry)],
            "cluster": encode_cluster(cluster, self._known),  # format 1: bare addresses
        }
        return DumpJob(self._snapshot_fn(), lambda path, app: self._write_dump(path, header, app))

    def _write_dump(self, file_name: str, header: dict[str, Any], app: list[bytes]) -> None:
        # with the rename on disk before pysyncobj drops the log entries the dump covers
        write_atomically(file_name, msgpack.packb({**header, "app": b"".join(app)}, use_bin_type=True),
                         self.settings.fsync)
        backup = self._dump_file + ".own"  # a snapshot transmission is coming in (raft_safety.py):
        if os.path.exists(backup):  # if it proves stale, the dump put back must be this newer one
            shutil.copyfile(file_name, backup)

    def _serialize_dump(self, file_name: str, data: Any) -> None:
        """pysyncobj's synchronous serializer hook (the SlicedSerializer makes its dumps itself)."""
        job = self._capture_dump(data)
        job.advance(float("inf"))
        job.write(file_name)

    def _deserialize_dump(self, file_name: str) -> tuple[Any, Any, Any]:
        boot = self._take_boot_members()  # taken even if this load fails: it is for the boot load only
        with open(file_name, "rb") as f:
            payload = msgpack.unpackb(f.read(), raw=False)
        self._restore_fn(payload["app"])
        last_entry, prev_entry = (tuple(e) for e in payload["entries"])
        return last_entry, prev_entry, self._dump_partners(payload["cluster"], boot)
