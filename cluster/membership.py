"""Dynamic Raft membership: who the members are, when a change is safe, how it survives restarts.

What pysyncobj 0.3.17 does with ``dynamicMembershipChange`` (read in ``syncobj.py``), and what we
do about it here (``MembershipMixin`` is mixed into ``cluster.raft_core.RaftCore``; the member records,
their encodings and the boot membership are in ``cluster/membership_records.py``):

* A change is a log entry ``MEMBERSHIP + pickle(['add'|'rem', id, node])`` that takes effect when it
  is *appended* (leader: when proposed; follower: when received; rolled back if truncated), as in
  Raft §4.1. The leader drops a removed member before sending it the entry, so a removed node never
  learns it was removed: it must be stopped (``gwadm node remove`` does, or tells you to).
* The node object in the entry is pickled whole, so it carries our metadata: ``TCPNode(raft_addr,
  gw_id=..., admin_url=...)``. Every member learns an added node's id and admin URL from the log
  itself (and from dumps, which store them too): no second replicated table to keep in step.
* "One change at a time" is meant to be enforced by ``__changeClusterIDx``, which nothing ever
  sets: concurrent changes are accepted. ``_SyncObj__changeCluster`` below refuses a change while
  an uncommitted membership entry is in the leader's log (the Raft rule) and records why.
* At boot a node starts from the partners it is given (the config file) and only re-applies
  *committed* membership entries later; loading a dump replaces the membership by the dump's.
  Config-file peers could thus bring back a removed member. ``boot_members`` computes the
  membership from the dump plus every membership entry in the journal (the latest configuration
  in the log, committed or not, is the one a Raft member must use) before pysyncobj starts.
* pysyncobj drops self from the dump's cluster with ``node != selfNode``; a plain string never
  equals a ``Node``, so the dump must hand back ``TCPNode`` objects, self excluded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pysyncobj import FAIL_REASON
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import TCPNode

from cluster.membership_policy import Refusal
from cluster.membership_records import Entry, Member, boot_members, decode_cluster, member_of, parse_change

log = logging.getLogger("gwadm.membership")

# -- the pysyncobj side, mixed into RaftNode (tick thread unless said otherwise) -----------------
class MembershipUnavailable(RuntimeError):
    """No definite answer (no leader, leader changed, deadline): the change may or may not commit."""


TRANSFER_HOLD = 2.0  # seconds a leader handing over leaves new commands queued, at most


class MembershipMixin:
    """Keeps a thread-safe member table in step with pysyncobj and enforces one change at a time.

    Must precede ``SyncObj`` in the bases: its ``_SyncObj__*`` methods override pysyncobj's private
    ones (name mangling resolves them through the MRO like any attribute).
    """

    _known: dict[str, Member]
    _members: tuple[Member, ...]
    _boot_members: list[Member] | None
    _denials: dict[tuple[str, str], tuple[str, str]]

    def _membership_init(
        self, me: Member, peers: Sequence[Member], journal: Sequence[Entry],
        dump: tuple[Sequence[Entry], list[Any]] | None,
    ) -> list[TCPNode]:
        """Compute the boot membership (see module doc); returns the partners to give pysyncobj."""
        self._members_lock = threading.Lock()
        self._self_member = me
        self._known = {m.raft_addr: m for m in (me, *peers)}
        self._denials = {}
        dump_members = (dump[0], decode_cluster(dump[1], self._known)) if dump is not None else None
        members = boot_members([me, *peers], dump_members, journal, self._known)
        for m in members:
            self._known.setdefault(m.raft_addr, m)
        self._boot_members = members if dump is not None else None
        self._members = tuple(m for m in members if m.raft_addr != me.raft_addr) + (me,)
        return [m.node() for m in members if m.raft_addr != me.raft_addr]

    # read side (any thread)
    def members(self) -> list[Member]:
        with self._members_lock:
            return sorted(self._members, key=lambda m: m.id)

    _ids: tuple[tuple[Member, ...], dict[str, str]] = ((), {})  # (members, raft address -> id), for status reads

    def member_id(self, raft_addr: str) -> str | None:
        members = self._members  # replaced whole (under the lock), never mutated
        cached, ids = self._ids
        if cached is not members:  # the first member by id wins, as in a scan of members()
            ids = {m.raft_addr: m.id for m in sorted(members, key=lambda m: m.id, reverse=True)}
            self._ids = (members, ids)
        return ids.get(raft_addr)

    @property
    def self_member(self) -> Member:
        return self._self_member

    def reachable_ids(self) -> set[str]:
        """Ids of the members that answer this node, itself included. On the leader "answer" means
        a reply within leaderFallbackTimeout: a paused process keeps its TCP connection open."""
        partners = self.status()["partners_connected"]  # type: ignore[attr-defined]
        connected = {addr for addr, ok in partners.items() if ok}
        if self._isLeader():  # type: ignore[attr-defined]
            try:
                last = dict(self._SyncObj__lastResponseTime)  # type: ignore[attr-defined]
            except RuntimeError:  # changed by the tick thread while copied: treat as no news
                last = {}
            # __lastResponseTime is on pysyncobj's clock (CLOCK_MONOTONIC_RAW), not time.monotonic()'s
            horizon = raft_clock() - self.conf.leaderFallbackTimeout  # type: ignore[attr-defined]
            connected &= {node.id for node, at in last.items() if at >= horizon}
        me = self._self_member.raft_addr
        return {m.id for m in self.members() if m.raft_addr == me or m.raft_addr in connected}

    def _refresh_members(self) -> None:
        nodes = [self._SyncObj__selfNode, *self._SyncObj__otherNodes]  # type: ignore[attr-defined]
        members = tuple(member_of(n, self._known) for n in nodes)
        with self._members_lock:
            before, self._members = getattr(self, "_members", ()), members
        events = getattr(self, "events", None)
        if before and events is not None and {m.id for m in before} != {m.id for m in members}:
            events.emit("membership_changed", members=sorted(m.id for m in members),
                        added=sorted({m.id for m in members} - {m.id for m in before}),
                        removed=sorted({m.id for m in before} - {m.id for m in members}))

    def _take_boot_members(self) -> list[Member] | None:
        """The boot membership, once: the first dump load (at boot) installs it, later ones (snapshots
        sent by the leader) install the dump's own."""
        boot, self._boot_members = self._boot_members, None
        return boot

    def _dump_partners(self, raw_cluster: Iterable[Any], boot: list[Member] | None) -> list[TCPNode]:
        """What pysyncobj's dump loader wants as the cluster: nodes, self excluded (see module doc)."""
        members = boot if boot is not None else decode_cluster(raw_cluster, self._known)
        return [m.node() for m in members if m.raft_addr != self._self_member.raft_addr]

    # pysyncobj overrides
    def _SyncObj__doChangeCluster(self, request: list[Any], reverse: bool = False) -> bool:  # noqa: N802
        if len(request) >= 3 and getattr(request[2], "gw_id", None):
            m = member_of(request[2], self._known)
            self._known[m.raft_addr] = m
        changed: bool = super()._SyncObj__doChangeCluster(request, reverse)  # type: ignore[misc]
        if changed:
            self._refresh_members()
        return changed

    def _SyncObj__updateClusterConfiguration(self, newNodes: list[Any]) -> None:  # noqa: N802, N803
        super()._SyncObj__updateClusterConfiguration(newNodes)  # type: ignore[misc]
        self._refresh_members()

    _last_denial: tuple[str, str] | None = None  # leader: the refusal pysyncobj is about to answer
    _inbound_denial: tuple[str, str] | None = None  # follower: the leader's reason, while delivered

    def _SyncObj__changeCluster(self, request: list[Any]) -> bool:  # noqa: N802
        ok = self._judge_change(request)
        if not ok:
            self._last_denial = self._denials.get((str(request[0]), str(request[1])))
        return ok

    def _take_last_denial(self) -> tuple[str, str] | None:
        """For the transport: why the change pysyncobj answers REQUEST_DENIED right now was refused
        (it travels to the follower that forwarded the change, cluster/raft_transport.py)."""
        why, self._last_denial = self._last_denial, None
        return why

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        """A forwarded change's answer: keep the leader's reason while pysyncobj runs the callback."""
        denial = message.get("gw_denial") if isinstance(message, dict) else None
        if (isinstance(denial, tuple | list) and len(denial) == 2 and all(isinstance(d, str) for d in denial)
                and message.get("type") == "apply_command_response"):
            self._inbound_denial = (denial[0], denial[1])
        try:
            super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]
        finally:
            self._inbound_denial = None

    def _judge_change(self, request: list[Any]) -> bool:
        key = (str(request[0]), str(request[1]))
        pending = self._uncommitted_change()
        noop = self._SyncObj__noopIDx  # type: ignore[attr-defined]
        if pending is not None:
            self._denials[key] = ("busy", f"a membership change is in progress ({pending}, not committed yet)")
            return False
        if noop is not None and self.raftLastApplied < noop:  # type: ignore[attr-defined]
            self._denials[key] = ("not_ready", "the new leader has not committed an entry of its term yet")
            return False
        ok: bool = super()._SyncObj__changeCluster(request)  # type: ignore[misc]
        if not ok:
            listed = ", ".join(f"{m.id} ({m.raft_addr})" for m in self.members())
            why = f"{'already' if key[0] == 'add' else 'not'} a member (members: {listed})"
            if key == ("rem", self._self_member.raft_addr):
                why = "the leader cannot remove itself: hand leadership over first"
            self._denials[key] = ("conflict", why)
        return ok

    def _uncommitted_change(self) -> str | None:
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        first = raft_log[0][1]
        for i in range(max(self.raftCommitIndex + 1 - first, 0), len(raft_log)):  # type: ignore[attr-defined]
            change = parse_change(raft_log[i][0], self._known)
            if change is not None:
                return f"{'adding' if change[0] == 'add' else 'removing'} {change[1].id}"
        return None

    # asyncio side
    async def change_membership(self, action: str, member: Member, timeout: float) -> None:
        """Add or remove ``member`` through the leader's log; returns once applied on this node.

        Raises Refusal (denied for good) or MembershipUnavailable (no definite answer in time). A
        new leader refuses changes until its first entry commits: that one is waited out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = ("add" if action == "add" else "rem", member.raft_addr)
        while True:
            fut: asyncio.Future[tuple[int, tuple[str, str] | None]] = loop.create_future()

            def callback(_res: Any, err: int, fut: asyncio.Future[tuple[int, tuple[str, str] | None]] = fut) -> None:
                # a forwarded change refused by the leader: its reason arrived with the answer
                remote = self._inbound_denial if err == FAIL_REASON.REQUEST_DENIED else None
                loop.call_soon_threadsafe(_settle_change, fut, err, remote)

            self._denials.pop(key, None)
            if key[0] == "add":
                self.addNodeToCluster(member.node(), callback=callback)  # type: ignore[attr-defined]
            else:
                self.removeNodeFromCluster(member.node(), callback=callback)  # type: ignore[attr-defined]
            try:
                err, remote = await asyncio.wait_for(asyncio.shield(fut), max(deadline - loop.time(), 0.01))
            except TimeoutError:
                raise MembershipUnavailable(
                    "no answer before the deadline: the change may still commit (see GET /v1/cluster/members)"
                ) from None
            if err == FAIL_REASON.SUCCESS:
                return
            if err != FAIL_REASON.REQUEST_DENIED:
                raise MembershipUnavailable(f"leadership changed during the change ({_FAIL.get(err, err)}); retry")
            local = self._denials.pop(key, None)
            kind, why = remote or local or ("conflict", "the leader refused the change (it gave no reason)")
            if kind == "not_ready" and loop.time() + 0.05 < deadline:
                await asyncio.sleep(0.05)
                continue
            raise Refusal(409, "conflict", why)

    _hold_commands_until = 0.0  # monotonic time until which new commands stay queued

    def _checkCommandsToApply(self) -> None:
        """pysyncobj's tick step that appends queued commands to the log (or forwards them to the
        leader). Skipped while a leadership transfer holds them: see ``transfer_leadership``."""
        self._last_denial = None  # a reason is only for the refusal answered in the same step
        if time.monotonic() < self._hold_commands_until:
            return
        super()._checkCommandsToApply()  # type: ignore[misc]

    async def transfer_leadership(self, timeout: float) -> None:
        """Hand leadership to the most caught-up follower (Raft TimeoutNow); returns once this node
        is no longer leader. pysyncobj's call touches the transport, so it runs on the tick thread.

        pysyncobj only transfers to a follower whose log matches the leader's exactly, which under a
        steady write load is almost never true at the instant it checks (chaos member-churn waited
        10 s for it). So, as the Raft thesis (§3.10) prescribes, the leader stops appending new
        commands during the transfer, for at most TRANSFER_HOLD seconds: the follower catches up
        within one round trip and the transfer goes through. Held commands stay queued and are then
        appended, or forwarded to the new leader (a forwarded one is answered NOT_LEADER, which
        the submitting node retries)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # The transfer's candidate is elected without the lease-holding followers' quiet period
        # (cluster/raft_read.py): no lease reads for the rest of this term.
        self._lease_blocked_term = self._SyncObj__raftCurrentTerm  # type: ignore[attr-defined]
        self._hold_commands_until = time.monotonic() + min(timeout, TRANSFER_HOLD)
        try:
            await self._transfer_until(deadline)
        finally:
            self._hold_commands_until = 0.0

    async def _transfer_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self._isLeader():  # type: ignore[attr-defined]
            if loop.time() >= deadline:
                raise MembershipUnavailable("leadership could not be transferred before the deadline")
            fut: asyncio.Future[int] = loop.create_future()

            def callback(_res: Any, err: int, fut: asyncio.Future[int] = fut) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            def start(callback: Callable[[Any, int], None] = callback) -> None:
                self.transferLeadership(None, callback)  # type: ignore[attr-defined]

            once = self._on_next_tick(start)
            try:
                await asyncio.wait_for(asyncio.shield(fut), max(deadline - loop.time(), 0.01))
            except TimeoutError:
                continue
            finally:
                self.removeOnTickCallback(once)  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)  # denied (no follower caught up yet) or sent: look again

    def _on_next_tick(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` once on the tick thread. pysyncobj holds its callback lock while calling, so the
        returned callback is unregistered by the caller afterwards, not from inside."""
        done = threading.Event()

        def once() -> None:
            if not done.is_set():
                done.set()
                fn()

        self.addOnTickCallback(once)  # type: ignore[attr-defined]
        return once


_FAIL = {v: k.lower() for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}


def _settle(fut: asyncio.Future[int], err: int) -> None:
    if not fut.done():
        fut.set_result(err)


def _settle_change(fut: asyncio.Future[tuple[int, tuple[str, str] | None]], err: int,
                   remote: tuple[str, str] | None) -> None:
    if not fut.done():
        fut.set_result((err, remote))
