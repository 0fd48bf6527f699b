"""The replicated config store: transactions with CAS and request-id dedupe, barrier reads, a
bounded delta log for proxies, and change notifications delivered into the asyncio loop.

Everything that changes the store happens in ``_apply_command``, which pysyncobj calls in log order
on every member (tick thread). It is deterministic: the same log gives the same state, delta log and
dedupe table on every node, which is why those three are also what a Raft dump contains.
The asyncio side only reads immutable snapshots (``state``) and submits commands.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgpack

from cluster.raft import RaftNode, RaftSettings
from gateway import registry
from gateway.codec import decode_delta, decode_txn, encode_delta, encode_txn
from gateway.delta import Delta
from gateway.errors import GatewayError
from gateway.model import Txn
from gateway.state import ConfigState

log = logging.getLogger("gwadm.store")

DEDUPE_ENTRIES = 10_000
DELTA_LOG_ENTRIES = 1_000
DELTA_LOG_BYTES = 8 * 1024 * 1024
MAX_RESULT_OPS = 100


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
    ) -> None:
        self.node_id = node_id
        self._addr_to_id = addr_to_id
        self._delta_log_entries = delta_log_entries
        self._delta_log_bytes = delta_log_bytes
        self._dedupe_entries = dedupe_entries
        self._lock = threading.Lock()
        self._state = ConfigState.empty()
        self._deltas: deque[tuple[Delta, int]] = deque()
        self._delta_bytes = 0
        self._dedupe: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Token policy (cluster/auth.py): replaced whole on change, so readers see one consistent value.
        self._tokens: dict[str, Any] = {"generation": 0, "revoked": {}}
        self._reg_epoch = 0  # expiry epoch of service registrations (gateway/registry.py)
        self._subscribers: list[Callable[[int], None]] = []
        self._loop = asyncio.get_running_loop()
        self.raft = RaftNode(
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
        return self._state

    def deltas_since(self, revision: int) -> list[Delta] | None:
        with self._lock:
            head = self._state.revision
            if revision == head:
                return []
            if revision > head or not self._deltas or self._deltas[0][0].base > revision:
                return None
            return [d for d, _ in self._deltas if d.base >= revision]

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def member_urls(self) -> list[str]:
        """Admin URLs of the current Raft members: status frames carry them so proxies follow
        membership changes without a restart (docs/contracts.md §4)."""
        return sorted(m.admin_url for m in self.raft.members() if m.admin_url)

    def raft_status(self) -> dict[str, Any]:
        status = self.raft.status()
        leader_addr = status.pop("leader")
        # Without quorum the last known leader is only a memory (pysyncobj keeps it until the next
        # election, which a cut-off follower never starts): report none.
        known_leader = leader_addr if leader_addr and status["has_quorum"] else None
        leader_id = (self.raft.member_id(known_leader) or self._addr_to_id.get(known_leader, known_leader)
                     if known_leader else None)  # the member table knows nodes added since start
        state = self._state  # one read: the tick thread may swap it between two
        status.update(
            node_id=self.node_id,
            leader_id=leader_id,
            revision=state.revision,
            hash=state.hash(),
            delta_log_first=self._deltas[0][0].base if self._deltas else self._state.revision,
        )
        return status

    async def barrier(self, timeout: float) -> ConfigState:
        """Linearizable read: a replicated no-op; once it applied here, local state is up to date."""
        await self.raft.submit(msgpack.packb({"type": "barrier"}), timeout)
        return self._state

    async def write(self, txn: Txn, timeout: float) -> dict[str, Any]:
        """Replicate a transaction; returns ``{"ok": True, "revision", "results"}`` or
        ``{"ok": False, "error": {...}}``. Raises raft.OutcomeUnknown when the outcome is unknown."""
        payload = msgpack.packb({"type": "txn", "txn": encode_txn(txn)}, use_bin_type=True)
        result: dict[str, Any] = await self.raft.submit(payload, timeout)
        return result

    # -- token policy (read by the auth middleware on every request) --------------------------------
    @property
    def token_generation(self) -> int:
        """Tokens minted for an older generation are rejected (``gwadm token rotate`` bumps it)."""
        return int(self._tokens["generation"])

    def token_revoked(self, jti: str) -> bool:
        return jti in self._tokens["revoked"]

    def token_state(self) -> dict[str, Any]:
        """``{"generation": int, "revoked": {jti: exp or None}}`` as applied here (do not mutate)."""
        return self._tokens

    async def token_command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replicate ``{"type": "token_revoke", "jti", "exp", "now"}`` or ``{"type": "token_rotate",
        "request_id", "now"}``; returns ``{"ok": True, "generation", "revoked"}``."""
        result: dict[str, Any] = await self.raft.submit(msgpack.packb(cmd, use_bin_type=True), timeout)
        return result

    @property
    def registry_epoch(self) -> int:
        """The epoch (Raft term) of the last applied ``reg_grant``: expiries of other epochs are void."""
        return self._reg_epoch

    async def registry_command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replicate a registry command (gateway/registry.py); ``{"ok": ...}`` like ``write``."""
        result: dict[str, Any] = await self.raft.submit(msgpack.packb(cmd, use_bin_type=True), timeout)
        return result

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def close(self) -> None:
        self._watch_task.cancel()
        self.raft.destroy()

    async def _watch_raft(self, interval: float = 0.2) -> None:
        """Notify subscribers when role, leader, term or quorum change.

        pysyncobj reports role changes (onStateChanged) but not quorum loss or leader changes on a
        follower, and proxies must learn promptly that their node lost quorum.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                st = self.raft.status()
            except Exception:  # the tick thread may be mid-update; try again next round
                continue
            key = (st["role"], st["leader"], st["term"], st["has_quorum"])
            if key != self._raft_key:
                self._raft_key = key
                self._dispatch(self._state.revision)

    # -- write side (pysyncobj tick thread) -----------------------------------------------------
    def _apply_command(self, payload: bytes) -> dict[str, Any]:
        try:
            cmd = msgpack.unpackb(payload, raw=False)
            kind = cmd["type"]
        except Exception:  # a command we cannot read must not stop the log
            log.error("undecodable command in the log; skipped")
            return {"ok": False, "error": {"code": "bad_encoding", "message": "undecodable command"}}
        if kind == "barrier":
            return {"ok": True, "revision": self._state.revision}
        if kind in ("token_revoke", "token_rotate"):
            return self._apply_token_command(cmd)
        if isinstance(kind, str) and kind.startswith("reg_"):
            return self._apply_registry_command(cmd)
        if kind != "txn":
            return {"ok": False, "error": {"code": "bad_encoding", "message": f"unknown command {kind}"}}
        try:
            txn = decode_txn(cmd["txn"])
        except GatewayError as exc:
            return {"ok": False, "error": exc.to_dict()}
        seen = self._dedupe.get(txn.request_id)
        if seen is not None:
            return {**seen, "duplicate": True}
        try:
            new_state, delta = self._state.apply(txn)
        except GatewayError as exc:
            result: dict[str, Any] = {"ok": False, "error": exc.to_dict()}
        except Exception as exc:  # a bug must not wedge the log: reject the txn on every node alike
            log.exception("txn %s failed unexpectedly", txn.request_id)
            result = {"ok": False, "error": {"code": "internal", "message": f"internal error: {exc}"}}
        else:
            result = {"ok": True, "revision": new_state.revision, "results": _op_results(txn, self._state, new_state)}
            self._install(new_state, delta)
        self._remember(txn.request_id, result)
        return result

    def _apply_token_command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Deterministic: time comes from the command (the proposer's clock), never from this node's.

        Deny-list entries are dropped once their token has expired (``exp`` None = never). A rotation
        is deduplicated by request id: a retried rotation must not bump the generation twice.
        """
        seen = self._dedupe.get(str(cmd.get("request_id"))) if cmd.get("request_id") else None
        if seen is not None:
            return {**seen, "duplicate": True}
        now = int(cmd.get("now") or 0)
        revoked = {j: e for j, e in self._tokens["revoked"].items() if e is None or e >= now}
        generation = int(self._tokens["generation"])
        if cmd["type"] == "token_revoke":
            exp = cmd.get("exp")
            revoked[str(cmd["jti"])] = int(exp) if isinstance(exp, int) else None
        else:
            generation += 1
        self._tokens = {"generation": generation, "revoked": revoked}
        result = {"ok": True, "generation": generation, "revoked": len(revoked)}
        if cmd.get("request_id"):
            self._remember(str(cmd["request_id"]), result)
        return result

    def _apply_registry_command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        request_id = cmd.get("request_id")
        seen = self._dedupe.get(str(request_id)) if request_id else None
        if seen is not None:
            return {**seen, "duplicate": True}
        try:
            applied = registry.apply_command(self._state, self._reg_epoch, cmd)
        except GatewayError as exc:
            result: dict[str, Any] = {"ok": False, "error": exc.to_dict()}
        except Exception as exc:  # a bug must not wedge the log: reject on every node alike
            log.exception("registry command %s failed unexpectedly", cmd.get("type"))
            result = {"ok": False, "error": {"code": "internal", "message": f"internal error: {exc}"}}
        else:
            result = applied.result
            self._reg_epoch = applied.epoch
            if applied.delta is not None:
                self._install(applied.state, applied.delta)
        if request_id:
            self._remember(str(request_id), result)
        return result

    def _install(self, new_state: ConfigState, delta: Delta) -> None:
        size = len(encode_delta(delta))
        with self._lock:
            self._state = new_state
            self._deltas.append((delta, size))
            self._delta_bytes += size
            while len(self._deltas) > 1 and (
                len(self._deltas) > self._delta_log_entries or self._delta_bytes > self._delta_log_bytes
            ):
                _, dropped = self._deltas.popleft()
                self._delta_bytes -= dropped
        self._notify(new_state.revision)

    def _remember(self, request_id: str, result: dict[str, Any]) -> None:
        self._dedupe[request_id] = result
        while len(self._dedupe) > self._dedupe_entries:
            self._dedupe.popitem(last=False)

    def _notify(self, revision: int) -> None:
        try:
            self._loop.call_soon_threadsafe(self._dispatch, revision)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _dispatch(self, revision: int) -> None:
        for callback in list(self._subscribers):
            try:
                callback(revision)
            except Exception:
                log.exception("store subscriber failed")

    def _raft_state_changed(self) -> None:
        self._notify(self._state.revision)

    # -- dump / restore (tick thread) ------------------------------------------------------------
    def _dump(self) -> bytes:
        with self._lock:
            deltas = [encode_delta(d) for d, _ in self._deltas]
        data = {
            "state": self._state.to_snapshot(),
            "deltas": deltas,
            "dedupe": [[k, v] for k, v in self._dedupe.items()],
            "tokens": self._tokens,
            "reg_epoch": self._reg_epoch,
        }
        return msgpack.packb(data, use_bin_type=True)

    def _restore(self, blob: bytes) -> None:
        data = msgpack.unpackb(blob, raw=False)
        state = ConfigState.from_snapshot(data["state"])
        deltas = [decode_delta(d) for d in data["deltas"]]
        with self._lock:
            self._state = state
            self._deltas = deque((d, len(encode_delta(d))) for d in deltas)
            self._delta_bytes = sum(size for _, size in self._deltas)
        self._dedupe = OrderedDict((k, v) for k, v in data["dedupe"])
        tokens = data.get("tokens") or {}  # absent in dumps written before token revocation existed
        self._tokens = {"generation": int(tokens.get("generation", 0)), "revoked": dict(tokens.get("revoked", {}))}
        self._reg_epoch = int(data.get("reg_epoch", 0))
        self._notify(state.revision)


def _op_results(txn: Txn, before: ConfigState, after: ConfigState) -> list[dict[str, Any] | None]:
    """Per-op results for the API reply (the resource as written, or as it was before delete)."""
    if len(txn.ops) > MAX_RESULT_OPS:
        return []
    results: list[dict[str, Any] | None] = []
    for op in txn.ops:
        source = after if op.action == "put" else before
        res = source.get(op.kind, op.id)
        results.append(res.to_json() if res is not None else None)
    return results
