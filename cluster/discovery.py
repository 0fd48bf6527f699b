"""Service-registration liveness: heartbeats in memory, expiry by the leader only.

Cost model (docs/discovery.md): a heartbeat is NOT a Raft entry. The leader keeps, in memory
only, when it last heard from each registration (``_last_seen``, monotonic clock). A follower that
receives a heartbeat answers at once from its local state (404 for an unknown registration, 503
without quorum) and batches the id; every ``flush_interval`` it sends one
``POST /v1/discovery/heartbeats {"ids": [...]}`` to the leader. So one heartbeat costs the leader a
dict assignment (plus its share of one HTTP request per batch when it came through a follower,
or one HTTP request when the instance talks to the leader directly), and nothing on any proxy.

Why memory-only liveness is safe: a node that becomes leader first commits ``reg_grant`` with its
term as the new expiry epoch, then counts every registration as seen *now* (a fresh full TTL), so a
failover or clock differences never mass-expire; what the old leader knew is not needed. Expiry
goes through a replicated ``reg_expire`` that carries the epoch and the mod_revision the leader saw:
every replica re-checks both (gateway/registry.py), so a deposed leader's late expiry removes
nothing. A node without quorum never proposes an expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from cluster.auth import mint_token
from cluster.raft import CommandRejected, NoQuorum, OutcomeUnknown
from cluster.store import ConfigStore
from gateway import registry

log = logging.getLogger("gwadm.discovery")


STALL = 0.5  # a round later than this is a stall of this node, not silence of the instances
FORWARD_GRACE = 1.5  # a follower whose batches have failed this long answers heartbeats with 503


class NotLeader(RuntimeError):
    """Batched heartbeats went to a node that does not lead (any more)."""


class Discovery:
    """One node's part in registration liveness (every node runs one; only the leader expires)."""

    def __init__(
        self,
        store: ConfigStore,
        secret: str,
        *,
        tick: float = 0.2,
        flush_interval: float = 0.3,
        command_timeout: float = 3.0,
        source_address: str | None = None,
    ) -> None:
        self.store = store
        self._secret = secret
        self._tick = tick
        self._flush_interval = flush_interval
        self._command_timeout = command_timeout
        self._source_address = source_address
        self._last_seen: dict[str, float] = {}
        self._granted_term: int | None = None  # the term whose grant applied; None = not leading
        self._leading = False
        self._has_quorum = False
        self._pending: dict[str, float] = {}  # registration id -> when this follower last heard it
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_step: float | None = None
        self._forward_failing_since: float | None = None  # first failed batch since the last success
        self.clock = time.monotonic
        self.stats = {"heartbeats": 0, "forwarded": 0, "forward_batches": 0, "forward_errors": 0,
                      "batched_received": 0, "grants": 0, "expired": 0, "expire_commands": 0, "stalls": 0}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="discovery-expiry"),
                       loop.create_task(self._flush_loop(), name="discovery-forward")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    # -- heartbeats ---------------------------------------------------------------------------------
    @property
    def leading(self) -> bool:
        """Leader with quorum whose expiry epoch is open (its grant applied)."""
        return self._leading

    def heartbeat(self, rid: str) -> str:
        """``"ok"``, ``"unknown"`` (no such registration here), ``"no_quorum"`` or
        ``"leader_unreachable"`` (a follower whose batches to the leader keep failing)."""
        if self.store.state.get(registry.KIND, rid) is None:
            return "unknown"
        self.stats["heartbeats"] += 1
        if self._leading:
            self._last_seen[rid] = self.clock()
            return "ok"
        if not self.store.has_leader_with_quorum():
            return "no_quorum"
        if self._forward_failing_since is not None and self.clock() - self._forward_failing_since > FORWARD_GRACE:
            return "leader_unreachable"  # our batches do not get through: the agent should try another node
        self._pending[rid] = self.clock()
        return "ok"

    def leader_heartbeats(self, ids: list[str], ages: list[float] | None = None) -> int:
        """A follower's batch: mark the known ones seen when the follower heard them (``ages``:
        seconds before it sent the batch, on its own clock; none: just now). A batch that failed and
        went out again later must not renew its instances as of its late arrival: they may have
        stopped meanwhile (found by the chaos discovery scenario: 7 stopped instances kept 2 s
        past ttl + 2 s by a batch retried across a failover). Raises NotLeader on a non-leader."""
        if not self._leading:
            raise NotLeader("this node does not lead the cluster (or its expiry epoch is not open yet)")
        state, now, count = self.store.state, self.clock(), 0
        for i, rid in enumerate(ids):
            if state.get(registry.KIND, rid) is not None:
                seen = now - (ages[i] if ages is not None else 0.0)
                self._last_seen[rid] = max(seen, self._last_seen.get(rid, seen))
                count += 1
        self.stats["batched_received"] += count
        return count

    def last_seen_age(self, rid: str) -> float | None:
        """Seconds since the leader last heard from ``rid`` (None when this node does not lead)."""
        if not self._leading:
            return None
        seen = self._last_seen.get(rid)
        return 0.0 if seen is None else max(0.0, self.clock() - seen)

    def liveness(self, rids: list[str]) -> dict[str, float | None]:
        return {rid: self.last_seen_age(rid) for rid in rids}

    # -- leader: grant and expire -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (NoQuorum, OutcomeUnknown, CommandRejected) as exc:
                log.info("discovery: %s (retrying)", exc)
            except Exception:
                log.exception("discovery round failed")

    def _role(self) -> tuple[bool, int]:
        st = self.store.raft_status()
        self._has_quorum = bool(st["has_quorum"])
        return st["role"] == "leader" and self._has_quorum, int(st["term"])

    async def step(self) -> None:
        """One round: open the epoch after an election, then expire what has been silent too long."""
        leader, term = self._role()
        now = self.clock()
        gap = 0.0 if self._last_step is None else now - self._last_step
        self._last_step = now
        if gap > self._tick + STALL:
            # This node could not listen for a while (starved, paused, a slow command): that silence
            # is not the instances'. Heartbeats queued meanwhile may not have been read yet.
            shift = gap - self._tick
            self._last_seen = {rid: seen + shift for rid, seen in self._last_seen.items()}
            self.stats["stalls"] += 1
        if not leader:
            if self._leading or self._last_seen:
                log.info("discovery: not leading any more; liveness tracking stops")
            self._leading, self._granted_term = False, None
            self._last_seen.clear()
            return
        if self._granted_term != term:
            self._leading = False
            await self.store.registry_command({"type": "reg_grant", "epoch": term}, self._command_timeout)
            if self.store.registry_epoch != term or self._role() != (True, term):
                return
            now = self.clock()
            self._last_seen = {r.id: now for r in self.store.state.list(registry.KIND)}
            self._granted_term, self._leading = term, True
            self.stats["grants"] += 1
            log.info("discovery: leading in term %d; %d registrations granted a fresh TTL", term, len(self._last_seen))
            return
        now = self.clock()
        expired: list[list[Any]] = []
        seen_now: dict[str, float] = {}
        for reg in self.store.state.list(registry.KIND):
            seen = self._last_seen.get(reg.id, now)  # first seen now: registered since the last round
            seen_now[reg.id] = seen
            if now - seen > float(reg.spec["ttl"]):
                expired.append([reg.id, reg.mod_revision])
        self._last_seen = seen_now
        if not expired:
            return
        if self._role() != (True, term):  # re-check right before proposing: never expire without quorum
            return
        for start in range(0, len(expired), registry.MAX_EXPIRE_BATCH):
            items = expired[start:start + registry.MAX_EXPIRE_BATCH]
            result = await self.store.registry_command(
                {"type": "reg_expire", "epoch": term, "items": items}, self._command_timeout
            )
            self.stats["expire_commands"] += 1
            gone = result.get("expired") or []
            self.stats["expired"] += len(gone)
            if gone:
                log.info("discovery: expired %d registration(s): %s", len(gone), ", ".join(gone[:5]))

    # -- follower: forward batches to the leader ------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            if not self._pending:
                continue
            if self._leading:  # became leader meanwhile: the grant covered everything
                self._pending.clear()
                continue
            batch, self._pending = self._pending, {}
            ids = sorted(batch)
            now = self.clock()
            try:
                await self._forward(ids, [round(max(0.0, now - batch[rid]), 3) for rid in ids])
                self.stats["forwarded"] += len(ids)
                self.stats["forward_batches"] += 1
                self._forward_failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["forward_errors"] += 1
                if self._forward_failing_since is None:
                    self._forward_failing_since = self.clock()
                for rid, heard in batch.items():  # retried with the next batch, as heard then
                    self._pending[rid] = max(heard, self._pending.get(rid, heard))
                log.info("discovery: forwarding %d heartbeat(s) to the leader failed: %s", len(ids), exc)

    def _leader_url(self) -> str | None:
        status = self.store.raft_status()
        leader_id = status.get("leader_id")
        for member in self.store.members():
            if member.id == leader_id and member.id != self.store.node_id:
                return member.admin_url or None
        return None

    def _bearer(self) -> str:
        now = self.clock()
        if self._token is None or self._token[1] < now:
            token = mint_token(self._secret, "admin", f"node:{self.store.node_id}", ttl_seconds=120,
                               generation=self.store.token_generation)
            self._token = (token, now + 60)
        return self._token[0]

    def _http(self) -> aiohttp.ClientSession:
        """One session to peers, leaving from this node's source address (partition rules know it)."""
        if self._session is None:
            source = self._source_address
            connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0), connector=connector)
        return self._session

    async def _forward(self, ids: list[str], ages: list[float]) -> None:
        url = self._leader_url()
        if url is None:
            raise NotLeader("no leader known")
        async with self._http().post(url.rstrip("/") + "/v1/discovery/heartbeats", json={"ids": ids, "ages": ages},
                                      headers={"Authorization": f"Bearer {self._bearer()}"}) as resp:
            if resp.status != 200:
                raise NotLeader(f"leader answered HTTP {resp.status}")
            await resp.read()

    async def fetch_liveness(self, rids: list[str], timeout: float | None = None) -> dict[str, float | None]:
        """Liveness as the leader knows it (asked over HTTP when this node does not lead; unknown,
        i.e. None each, when the leader does not answer within ``timeout``, default 2 s)."""
        if self._leading or not rids:
            return self.liveness(rids)
        url = self._leader_url()
        if url is None:
            return dict.fromkeys(rids)
        limit = aiohttp.ClientTimeout(total=min(timeout, 2.0) if timeout is not None else 2.0)
        try:
            async with self._http().post(url.rstrip("/") + "/v1/discovery/liveness", json={"ids": rids},
                                          headers={"Authorization": f"Bearer {self._bearer()}"},
                                          timeout=limit) as resp:
                if resp.status == 200:
                    body = await resp.json()
                    ages = body.get("ages") or {}
                    return {rid: ages.get(rid) for rid in rids}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("discovery: liveness from the leader unavailable: %s", exc)
        return dict.fromkeys(rids)

    def status(self) -> dict[str, Any]:
        return {"leading": self._leading, "epoch": self.store.registry_epoch, "tracked": len(self._last_seen),
                "pending_forward": len(self._pending), **self.stats}
