"""The replicated config store: the one way the rest of a node reaches Raft.

The deterministic part is a pure value, ``cluster.state_machine.ReplicatedState`` (config, delta
log, request-id table, token policy; ``apply(command) -> (new_state, result)``): pysyncobj calls
``_apply_command`` in log order on every member (tick thread), which swaps in the new value. The
asyncio side only reads that immutable value and submits commands. Everything else HTTP handlers
need from Raft — members, reachability, role, membership changes, leadership transfer — is a
method here, so no handler touches ``cluster.raft`` objects directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from cluster.audit_api import stamp
from cluster.events import EventLog
from cluster.membership_records import Member
from cluster.raft import OutcomeUnknown, RaftNode, RaftSettings
from cluster.raft_read import ReadIndexUnavailable
from cluster.state_machine import (
    DEDUPE_ENTRIES,
    DELTA_LOG_BYTES,
    DELTA_LOG_ENTRIES,
    ReplicatedState,
    encode_command,
)
from gateway.audit import DEFAULT_CAPACITY as AUDIT_ENTRIES
from gateway.codec import encode_txn
from gateway.delta import Delta
from gateway.model import Txn
from gateway.state import ConfigState

log = logging.getLogger("gwadm.store")

__all__ = ["DEDUPE_ENTRIES", "DELTA_LOG_BYTES", "DELTA_LOG_ENTRIES", "ConfigStore"]


class ConfigStore:
    """One control-plane node's view of the replicated configuration."""

    def __init__(
        self,
        node_id: str,
        settings: RaftSettings,
        addr_to_id: dict[str, str],
        *,
        delta_log_entries: int = DELTA_LOG_ENTRIES,
        delta_log_bytes: int = DELTA_LOG_BYTES,
        dedupe_entries: int = DEDUPE_ENTRIES,
        audit_entries: int = AUDIT_ENTRIES,
    ) -> None:
        self.node_id = node_id
        self._addr_to_id = addr_to_id
        self._sm = ReplicatedState.empty(
            delta_log_entries=delta_log_entries, delta_log_bytes=delta_log_bytes, dedupe_entries=dedupe_entries,
            audit_entries=audit_entries,
        )
        self._subscribers: dict[Callable[[int], None], Callable[[], bool] | None] = {}  # -> wants_changes
        self._loop = asyncio.get_running_loop()
        self._raft = RaftNode(
            settings,
            apply_fn=self._apply_command,
            snapshot_fn=self._dump,
            restore_fn=self._restore,
            on_state_change=self._raft_state_changed,
        )
        self._raft_key: tuple[Any, ...] | None = None
        self._watch_task = self._loop.create_task(self._watch_raft())

    # -- read side (asyncio thread) ---------------------------------------------------------------
    @property
    def state(self) -> ConfigState:
        return self._sm.config

    @property
    def replicated(self) -> ReplicatedState:
        """The whole replicated value as applied here (immutable)."""
        return self._sm

    def deltas_since(self, revision: int) -> list[Delta] | None:
        return self._sm.deltas_since(revision)

    def subscribe(
        self, callback: Callable[[int], None], wants_changes: Callable[[], bool] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(revision)`` in the loop after config and Raft status changes.

        ``wants_changes`` (called from the tick thread, so a cheap read such as ``bool(sessions)``)
        lets a subscriber decline config changes while nobody it serves is waiting: when no
        subscriber wants one, an applied write wakes nothing. On a follower that wake-up was about
        50 us of CPU per write and a GIL hand-off with the tick thread. Raft status changes are
        always delivered. A subscriber that declines must read the store after it starts caring
        (e.g. after registering a waiter), since a write applied just before was not reported."""
        self._subscribers[callback] = wants_changes

        def unsubscribe() -> None:
            self._subscribers.pop(callback, None)

        return unsubscribe

    # -- Raft, as the handlers need it -------------------------------------------------------------
    def members(self) -> list[Member]:
        """The current Raft configuration (cluster/membership.py)."""
        return self._raft.members()

    def member_urls(self) -> list[str]:
        """Admin URLs of the current Raft members: status frames carry them so proxies follow
        membership changes without a restart (docs/contracts.md §4)."""
        return sorted(m.admin_url for m in self.members() if m.admin_url)

    def reachable_ids(self) -> set[str]:
        """Members the leader heard from recently (only meaningful on the leader)."""
        return self._raft.reachable_ids()

    @property
    def events(self) -> EventLog:
        """This node's event log (cluster/events.py): elections, links, quorum, snapshots, 503s."""
        return self._raft.events

    def is_leader(self) -> bool:
        return bool(self._raft.status()["role"] == "leader")

    def leader_member(self) -> Member | None:
        """The leader, if this node knows one with quorum."""
        st = self._raft.status()
        if not st["has_quorum"] or not st["leader"]:
            return None
        return next((m for m in self.members() if m.raft_addr == st["leader"]), None)

    def applied_index(self) -> int:
        return int(self._raft.status()["applied_index"])

    async def change_membership(self, action: str, member: Member, timeout: float) -> None:
        await self._raft.change_membership(action, member, timeout)

    async def transfer_leadership(self, timeout: float) -> None:
        await self._raft.transfer_leadership(timeout)

    def feed_status(self) -> dict[str, Any]:
        """What a config feed tells proxies (node, leader, term, quorum, revision): read once per
        applied batch of writes, so without the links, counters and hash of ``raft_status``."""
        _role, leader_addr, term, has_quorum = self._raft.role()
        return {"node_id": self.node_id, "leader_id": self._leader_id(leader_addr, has_quorum), "term": term,
                "has_quorum": has_quorum, "revision": self._sm.config.revision}

    def _leader_id(self, leader_addr: str | None, has_quorum: bool) -> str | None:
        # Without quorum the last known leader is only a memory (pysyncobj keeps it until the next
        # election, which a cut-off follower never starts): report none.
        if not leader_addr or not has_quorum:
            return None
        # the member table knows nodes added since start
        return self._raft.member_id(leader_addr) or self._addr_to_id.get(leader_addr, leader_addr)

    def raft_status(self) -> dict[str, Any]:
        status = self._raft.status()
        leader_id = self._leader_id(status.pop("leader"), status["has_quorum"])
        sm = self._sm  # one read: the tick thread may swap it between two
        status.update(
            node_id=self.node_id,
            leader_id=leader_id,
            revision=sm.config.revision,
            hash=sm.config.hash(),
            delta_log_first=sm.deltas[0][0].base if sm.deltas else sm.config.revision,
        )
        return status

    # -- commands ------------------------------------------------------------------------------------
    no_leader_wait = 0.5  # seconds (cluster/timeouts.py): set by the node from node.toml

    async def _submit(self, cmd: dict[str, Any], timeout: float, read_only: bool = False) -> Any:
        """Replicate ``cmd`` with its deadline inside: the leader drops it once that has passed, which
        is ``max_clock_skew`` before we give up here (cluster/raft_deadline.py)."""
        cmd = stamp(cmd)  # an admin write: who, from where, when (cluster/audit_api.py)
        skew = self._raft.settings.max_clock_skew
        margin = skew if timeout > 2 * skew else timeout / 2
        return await self._raft.submit(encode_command(cmd, time.time() + timeout - margin), timeout,
                                      quorum_wait=min(self.no_leader_wait, timeout), abort_without_quorum=read_only)

    read_index = True  # ReadIndex reads (cluster/raft_read.py); False: every read replicates a barrier

    async def barrier(self, timeout: float) -> ConfigState:
        """Linearizable read. ReadIndex first: the leader confirms its leadership with one heartbeat
        round, no log entry; once this node applied the read index, local state is up to date. If
        no read index can be had (no leader known, leadership moving, an old leader), a replicated
        no-op barrier within what is left of ``timeout``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.read_index:
            try:
                await self._raft.read_index(min(timeout, 1.5))
                return self._sm.config
            except ReadIndexUnavailable:
                pass
        remaining = timeout - (loop.time() - started)
        if remaining <= 0:
            raise OutcomeUnknown("no read index in time")
        await self._submit({"type": "barrier"}, remaining, read_only=True)
        return self._sm.config

    async def write(self, txn: Txn, timeout: float) -> dict[str, Any]:
        """Replicate a transaction; returns ``{"ok": True, "revision", "results"}`` or
        ``{"ok": False, "error": {...}}``. Raises raft.OutcomeUnknown when the outcome is unknown."""
        result: dict[str, Any] = await self._submit({"type": "txn", "txn": encode_txn(txn)}, timeout)
        return result

    async def command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replicate any registered command (cluster/state_machine.py ``COMMANDS``)."""
        result: dict[str, Any] = await self._submit(cmd, timeout)
        return result

    # -- token policy (read by the auth middleware on every request) --------------------------------
    @property
    def token_generation(self) -> int:
        """Tokens minted for an older generation are rejected (``gwadm token rotate`` bumps it)."""
        return int(self._sm.tokens["generation"])

    def token_revoked(self, jti: str) -> bool:
        return jti in self._sm.tokens["revoked"]

    def token_state(self) -> dict[str, Any]:
        """``{"generation": int, "revoked": {jti: exp or None}}`` as applied here (do not mutate)."""
        return dict(self._sm.tokens)

    async def token_command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replicate ``{"type": "token_revoke", "jti", "exp", "now"}`` or ``{"type": "token_rotate",
        "request_id", "now"}``; returns ``{"ok": True, "generation", "revoked"}``."""
        return await self.command(cmd, timeout)

    @property
    def registry_epoch(self) -> int:
        """The epoch (Raft term) of the last applied ``reg_grant``: expiries of other epochs are void."""
        return self._sm.reg_epoch

    async def registry_command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replicate a registry command (gateway/registry.py); ``{"ok": ...}`` like ``write``."""
        return await self.command(cmd, timeout)

    def has_leader_with_quorum(self) -> bool:
        return self._raft.has_leader_with_quorum()

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def close(self) -> None:
        self._watch_task.cancel()
        self._raft.destroy()

    async def _watch_raft(self, interval: float = 0.2) -> None:
        """Notify subscribers when role, leader, term or quorum change.

        pysyncobj reports role changes (onStateChanged) but not quorum loss or leader changes on a
        follower, and proxies must learn promptly that their node lost quorum.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                st = self._raft.status()
            except Exception:  # the tick thread may be mid-update; try again next round
                continue
            key = (st["role"], st["leader"], st["term"], st["has_quorum"])
            if key != self._raft_key:
                self._raft_key = key
                self._dispatch(self._sm.config.revision)

    # -- write side (pysyncobj tick thread) -----------------------------------------------------
    def _apply_command(self, payload: bytes) -> dict[str, Any]:
        before = self._sm
        after, result = before.apply(payload)
        if not result.get("ok") and result.get("error", {}).get("code") in ("internal", "bad_encoding"):
            log.error("command rejected by the state machine: %s", result["error"]["message"])
        self._sm = after  # before asking who wants it: a subscriber that starts caring reads it
        if after.config is not before.config and self._changes_wanted():
            self._notify(after.config.revision)
        return result

    def _changes_wanted(self) -> bool:
        return any(wants is None or wants() for wants in list(self._subscribers.values()))

    _notify_pending = False  # a _dispatch_latest is queued on the loop and has not started yet

    def _notify(self, revision: int) -> None:
        """From the tick thread: wake the subscribers in the loop. Commands applied while a wake-up
        is still queued share it (it reports the newest revision; subscribers read the store then),
        so a batch of applied writes costs the subscribers one call, not one per write."""
        if self._notify_pending:
            return
        self._notify_pending = True
        try:
            self._loop.call_soon_threadsafe(self._dispatch_latest)
        except RuntimeError:  # loop closed during shutdown
            self._notify_pending = False

    def _dispatch_latest(self) -> None:
        self._notify_pending = False  # first: a command applied from now on queues a new wake-up
        self._dispatch(self._sm.config.revision)

    def _dispatch(self, revision: int) -> None:
        for callback in list(self._subscribers):
            try:
                callback(revision)
            except Exception:
                log.exception("store subscriber failed")

    def _raft_state_changed(self) -> None:
        self._notify(self._sm.config.revision)

    # -- dump / restore (tick thread) ------------------------------------------------------------
    def _dump(self) -> Iterator[bytes]:
        """The applied value's dump, in slices encoded over the next ticks (it is immutable)."""
        return self._sm.dump_slices()

    def _restore(self, blob: bytes) -> None:
        self._sm = self._sm.from_dump(blob)
        self._notify(self._sm.config.revision)
