"""Pull transport of the config protocol, the anti-entropy check, and relay fleet reports.

``GET /v1/changes?since=REV&wait=S[&hash=H][&full=1]`` (role ``proxy``) answers with the same frames
the push stream would send a proxy at ``REV``, in one msgpack body
``{"status": <status frame>, "frames": [<encoded delta/snapshot frame>, ...]}``:

* ``REV`` inside the node's delta log: one (composed) ``delta`` frame; ``REV`` older than the log,
  ``0``, ``full=1`` (the proxy could not apply a delta) or ``hash`` differing from the node's hash at
  ``REV`` (a diverged proxy): the chunked ``snapshot``; ``REV`` = head: nothing (see below); ``REV``
  ahead of this node: nothing, and the status tells the proxy to look elsewhere.
* Nothing new: the request is held up to ``wait`` seconds (at most ``MAX_WAIT``) until the head
  moves (long-poll). ``ETag`` is ``"<revision>-<hash prefix>"``; a request whose ``If-None-Match``
  still matches when the wait ends gets ``304 Not Modified`` without a body.
* A node that knows no leader with quorum answers ``503 {"error": {"code": "no_quorum"}, "status"}``:
  it cannot hand out anything new, so the proxy moves on (the same rule as ``status.has_quorum`` on
  the stream). Like the stream, only locally *applied* state is served, which is committed state.

``GET /v1/changes/head`` -> ``{"node_id", "revision", "hash", "has_quorum"}``: the cheap check a
hybrid proxy makes at least every 30 s (``proxy/antientropy.py``).

``POST /v1/changes/fleet`` ``{"relay": id, "items": [fleet entries]}``: a relay reports the proxies
it serves; they appear in this node's fleet registry with ``via: <relay id>``.

Callers say who they are in headers (``X-Gwadm-Proxy``, ``-Software``, ``-Address``,
``-Status-Address``, ``-Mode``, ``-Sync``, ``-Repairs``, ``-Last-Error``), so pull proxies and
hybrid checks show up in ``GET /v1/proxies`` next to the stream sessions (``sync``: push, pull or
hybrid; ``antientropy_repairs``: resyncs a proxy made because its hash differed).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cluster.push_session import GONE_TTL, FeedStore, SnapshotCache, request_claims
from gateway.codec import encode
from gateway.delta import Delta, compose
from gateway.protocol import DeltaFrame, Status, encode_frame
from gateway.state import ConfigState

MAX_WAIT = 30.0
SNAPSHOT_CHUNK = 256 * 1024
MAX_DELTA_FRAME = 1024 * 1024
STATUS_TTL = 1.0  # raft status is re-read at most this often (a fleet polling costs one read)
SEEN_TTL = 10.0  # a poller not heard from for wait + this is shown disconnected
MAX_ITEMS = 10_000  # entries of one relay report
CONTENT_TYPE = "application/x-msgpack"
ANSWERS = 64  # encoded answers kept for the current head
_SEEN_HEADERS = ("X-Gwadm-Proxy", "X-Gwadm-Address", "X-Gwadm-Software", "X-Gwadm-Mode", "X-Gwadm-Last-Error",
                 "X-Gwadm-Status-Address")  # fmt: skip
TIMER_SLOT = 0.02  # long-polls ending in the same 20 ms share one timer (a wait ends at most this late)


Store = FeedStore


def _err(http_status: int, code: str, message: str, path: str | None = None, **extra: Any) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "path": path}, **extra}, status=http_status
    )


def etag_of(status: dict[str, Any]) -> str:
    """``"<revision>-<hash prefix>[-cached]"``: a relay turning cached changes it too."""
    return f'"{status["revision"]}-{str(status["hash"])[:16]}{"-cached" if status.get("cached") else ""}"'


def _header(request: web.Request, name: str, limit: int = 200) -> str | None:
    value = request.headers.get(name)
    return value.strip()[:limit] if value and value.strip() else None


class ChangesAPI:
    """The pull endpoints of one CP node (or relay) and the fleet entries they learn."""

    def __init__(
        self,
        store: Store,
        *,
        chunk_size: int = SNAPSHOT_CHUNK,
        max_delta_frame: int = MAX_DELTA_FRAME,
        max_wait: float = MAX_WAIT,
        sessions: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.store, self.sessions = store, sessions
        self.max_delta_frame, self.max_wait = max_delta_frame, max_wait
        self._snapshots = SnapshotCache(chunk_size)
        # Held long-polls: each has a future of its own (so a cancelled one cancels nothing else),
        # all in one list resolved by the next change, and in the slot of one shared timer.
        self._waiters: list[asyncio.Future[None]] = []
        self._slots: dict[int, list[asyncio.Future[None]]] = {}
        self._status_wire: tuple[Any, ConfigState, dict[str, Any], str] | None = None  # (raft, state, wire, ETag)
        self._unsubscribe: Callable[[], None] | None = None
        self._status: tuple[float, dict[str, Any]] | None = None
        self._pullers: dict[str, dict[str, Any]] = {}  # proxy id -> fleet entry (sync: pull)
        self._puller_headers: dict[str, tuple[Any, ...]] = {}  # proxy id -> what its entry was last built from
        self._checks: dict[str, dict[str, Any]] = {}  # proxy id -> last anti-entropy check
        self._relayed: dict[str, dict[str, Any]] = {}  # relay id -> {"at", "items"}
        self._answers: dict[tuple[Any, ...], tuple[str | None, bytes, str]] = {}  # (kind, body, ETag)
        self.requests = {"changes": 0, "not_modified": 0, "head": 0, "fleet": 0}
        self.frames_sent = {"delta": 0, "snapshot": 0}
        self.bytes_sent = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._unsubscribe is None:
            # Woken by writes only while a poll is held (ConfigStore.subscribe); see _wait_change.
            self._unsubscribe = self.store.subscribe(self._on_store_change, lambda: bool(self._waiters))

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._wake()

    def _on_store_change(self, revision: int) -> None:
        self._status = None
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _expire(self, slot: int) -> None:
        for fut in self._slots.pop(slot, ()):
            if not fut.done():
                fut.set_result(None)

    async def _wait_change(self, timeout: float, seen: int) -> None:
        """Until the next change after revision ``seen``, or ``timeout`` seconds (rounded up to the
        timer slot)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        # A write applied after the caller read ``seen`` but before this waiter was registered
        # woke nobody (no poll was held): it counts as the change.
        if self.store.state.revision != seen:
            fut.set_result(None)
        slot = math.ceil((loop.time() + timeout) / TIMER_SLOT)
        held = self._slots.get(slot)
        if held is None:
            held = self._slots[slot] = []
            loop.call_at(slot * TIMER_SLOT, self._expire, slot)
        held.append(fut)
        try:
            await fut
        finally:
            fut.cancel()  # a no-op once resolved; a cancelled request leaves nothing pending

    def status(self) -> dict[str, Any]:
        """The status frame (wire form) the stream would send now: revision and hash of the applied state."""
        now = time.monotonic()
        if self._status is None or now - self._status[0] > STATUS_TTL:
            st = self.store.feed_status()
            leader = st.get("leader_id")
            self._status = (now, {
                "node_id": str(st.get("node_id", self.store.node_id)), "leader_id": None if leader is None else str(leader),
                "term": int(st.get("term") or 0), "has_quorum": bool(st.get("has_quorum")),
                "cached": bool(st.get("cached")), "members": tuple(self.store.member_urls()),
            })  # fmt: skip
        state = self.store.state
        cached = self._status_wire
        if cached is None or cached[0] is not self._status or cached[1] is not state:
            wire = Status(**self._status[1], revision=state.revision, hash=self._snapshots.state_hash(state)).wire()
            cached = self._status_wire = (self._status, state, wire, etag_of(wire))
        return cached[2]

    def _etag(self, status: dict[str, Any]) -> str:
        cached = self._status_wire
        return cached[3] if cached is not None and cached[2] is status else etag_of(status)

    # ---- handlers ----------------------------------------------------------------------------

    async def handle_changes(self, request: web.Request) -> web.StreamResponse:
        problem = _proxy_only(request)
        if problem is not None:
            return problem
        try:
            since = int(request.query.get("since", "0"))
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            return _err(400, "bad_request", "since must be an integer and wait a number", "since")
        if since < 0 or not 0 <= wait < 1e6:
            return _err(
                400, "bad_request", "since must be >= 0 and wait >= 0", "since" if since < 0 else "wait"
            )
        claimed = request.query.get("hash") or None
        full = request.query.get("full") in ("1", "true")
        self.requests["changes"] += 1
        self.start()
        deadline = time.monotonic() + min(wait, self.max_wait)
        conditional = request.headers.get("If-None-Match")
        health: tuple[bool, bool] | None = None
        while True:
            status = self.status()  # shared by every request until it changes: read, never written
            if not status["has_quorum"] and not status.get("cached", False):
                self._seen(request, since, status)
                return _err(503, "no_quorum", f"node {status['node_id']} knows no leader with quorum",
                            retryable=True, status=status)  # fmt: skip
            head, etag = status["revision"], self._etag(status)
            # Idle: nothing to send, and nothing the caller's ETag or the start of the wait says
            # differently (a relay losing its upstream must tell, not answer 304).
            health = health or (status["has_quorum"], status.get("cached", False))
            idle = (since == head and not full and (claimed is None or claimed == status["hash"])
                    and conditional in (None, etag) and health == (status["has_quorum"], status.get("cached", False)))  # fmt: skip
            remaining = deadline - time.monotonic()
            if not idle or remaining <= 0:
                break
            await self._wait_change(remaining, head)
        self._seen(request, since, status)
        if idle and conditional == etag:
            self.requests["not_modified"] += 1
            return web.Response(status=304, headers={"ETag": etag})
        # A change answers every poller at one revision with the same bytes: built once per key.
        key = (since, head, full, claimed is not None and claimed != status["hash"], status["has_quorum"],
               status.get("cached", False), status["leader_id"], status["term"], tuple(status.get("members") or ()))  # fmt: skip
        answer = self._answers.get(key)
        if answer is None:
            status = dict(status)  # _frames brings it to the revision the frames end at
            kind, frames = await self._frames(since, status, full=full, claimed=claimed)
            answer = (kind, encode({"status": status, "frames": frames}), etag_of(status))
            if status["revision"] == head:
                if len(self._answers) >= ANSWERS or any(k[1] != head for k in self._answers):
                    self._answers.clear()
                self._answers[key] = answer
        elif answer[0] is not None:
            self.frames_sent[answer[0]] += 1
        kind, body, answer_etag = answer
        self.bytes_sent += len(body)
        entry = self._pullers.get(_header(request, "X-Gwadm-Proxy") or "")
        if entry is not None and kind is not None:
            entry[f"{kind}s_sent"] += 1
        # The ETag names the head the caller reaches by applying this answer.
        return web.Response(body=body, content_type=CONTENT_TYPE, headers={"ETag": answer_etag})

    async def _frames(
        self, since: int, status: dict[str, Any], *, full: bool, claimed: str | None
    ) -> tuple[str | None, list[bytes]]:
        """("delta"|"snapshot"|None, encoded frames) for a proxy at ``since``; ``status`` is
        brought to the revision the frames end at."""
        state, deltas = self._consistent_read(since)
        head = state.revision
        status["revision"], status["hash"] = head, self._snapshots.state_hash(state)
        if since > head or head == 0:
            return None, []  # ahead of this node (the proxy looks elsewhere), or nothing to install
        if since == head and not full and (claimed is None or claimed == status["hash"]):
            return None, []
        if since and not full and deltas and since < head:
            delta = compose(deltas) if len(deltas) > 1 else deltas[0]
            frame = encode_frame(DeltaFrame.of(delta, status["hash"]))
            if len(frame) <= self.max_delta_frame:
                self.frames_sent["delta"] += 1
                return "delta", [frame]
        chunks = await self._snapshots.encoded(state)
        self.frames_sent["snapshot"] += 1
        return "snapshot", chunks

    def _consistent_read(self, since: int) -> tuple[ConfigState, list[Delta] | None]:
        """State and deltas ending at the same revision (see PushHub._consistent_read)."""
        for _ in range(5):
            deltas = self.store.deltas_since(since)
            state = self.store.state
            if not deltas or deltas[-1].revision == state.revision:
                return state, deltas
        return self.store.state, None

    async def handle_head(self, request: web.Request) -> web.Response:
        problem = _proxy_only(request)
        if problem is not None:
            return problem
        self.requests["head"] += 1
        status = self.status()
        pid = _header(request, "X-Gwadm-Proxy")
        if pid is not None:
            try:
                repairs = int(request.headers.get("X-Gwadm-Repairs", "0"))
            except ValueError:
                return _err(400, "bad_request", "X-Gwadm-Repairs must be an integer", "X-Gwadm-Repairs")
            self._checks[pid] = {"at": time.time(), "repairs": max(0, repairs)}
        return web.json_response(
            {k: status[k] for k in ("node_id", "revision", "hash", "has_quorum")}
            | {"cached": bool(status.get("cached"))}
        )

    async def handle_fleet_report(self, request: web.Request) -> web.Response:
        problem = _proxy_only(request)
        if problem is not None:
            return problem
        try:
            body = await request.json()
        except ValueError:
            return _err(400, "bad_request", "body must be JSON", None)
        relay = body.get("relay") if isinstance(body, dict) else None
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(relay, str) or not relay or len(relay) > 200:
            return _err(422, "validation_failed", "relay must be a non-empty string", "relay")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            return _err(422, "validation_failed", f"items must be a list of at most {MAX_ITEMS}", "items")
        clean = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return _err(422, "validation_failed", "each item needs a string id", f"items[{i}].id")
            clean.append({**item, "via": relay, "node": self.store.node_id})
        self.requests["fleet"] += 1
        self._relayed[relay] = {"at": time.time(), "items": clean}
        return web.json_response({"accepted": len(clean)})

    async def handle_local_fleet(self, request: web.Request) -> web.Response:
        claims = request_claims(request)
        if not claims or claims.get("role") not in ("admin", "viewer"):
            return _err(
                403 if claims else 401,
                "forbidden" if claims else "unauthorized",
                "role admin or viewer required",
            )
        return web.json_response({"items": self.fleet(), "revision": self.store.state.revision})

    # ---- fleet -------------------------------------------------------------------------------

    def _seen(self, request: web.Request, since: int, status: dict[str, Any]) -> None:
        headers = request.headers
        raw = tuple(headers.get(name) for name in _SEEN_HEADERS)
        if raw[0] is None or not raw[0].strip():
            return
        pid = raw[0].strip()[:200]
        now = time.time()
        entry = self._pullers.get(pid)
        if entry is None or not entry["connected"]:
            entry = self._pullers[pid] = {
                "id": pid, "connected_since": now, "deltas_sent": 0, "snapshots_sent": 0, "revision": 0,
                "last_ack_at": None, "connected": True, "sync": "pull", "node": self.store.node_id, "via": None,
            }  # fmt: skip
            self._puller_headers.pop(pid, None)
        if since > entry["revision"] or since == 0:
            entry["last_ack_at"] = now if since else entry["last_ack_at"]
        entry["revision"], entry["seen_at"] = since, now
        # A poller sends the same headers poll after poll: they are parsed when they change.
        wait = request.query.get("wait", "0")
        said = (raw, wait, None if raw[1] else request.remote)
        if self._puller_headers.get(pid) == said:
            return
        self._puller_headers[pid] = said
        entry.update(
            address=_header(request, "X-Gwadm-Address") or request.remote or "",
            software=_header(request, "X-Gwadm-Software") or "unknown", mode=_header(request, "X-Gwadm-Mode"),
            last_error=_header(request, "X-Gwadm-Last-Error", 500),
            status_address=_header(request, "X-Gwadm-Status-Address"),
            poll_wait=min(float(wait) if wait.replace(".", "", 1).isdigit() else 0.0, self.max_wait),
        )  # fmt: skip

    def fleet(self) -> list[dict[str, Any]]:
        """The push hub's sessions with pull proxies, hybrid checks and relayed proxies."""
        sessions = self.sessions() if self.sessions is not None else []
        now = time.time()
        head = self.store.state.revision
        out: dict[str, dict[str, Any]] = {}
        relays = {r for r, rep in self._relayed.items() if now - rep["at"] <= SEEN_TTL}
        for entry in sessions:
            e = {**entry, "via": entry.get("via")}
            check = self._checks.get(e["id"])
            hybrid = check is not None and now - check["at"] <= 90.0
            e.setdefault("sync", "hybrid" if hybrid else "push")
            if check is not None:
                e["antientropy_repairs"], e["last_check_at"] = check["repairs"], check["at"]
            if e["id"] in relays:
                e["role"] = "relay"
            out[e["id"]] = e
        for pid, entry in list(self._pullers.items()):
            if entry["connected"] and now - entry["seen_at"] > entry["poll_wait"] + SEEN_TTL:
                entry.update(connected=False, disconnected_at=entry["seen_at"])
            if not entry["connected"] and now - entry["seen_at"] > GONE_TTL:
                del self._pullers[pid]
                self._puller_headers.pop(pid, None)
                continue
            _better(out, {**entry, "lag": max(0, head - entry["revision"])})
        for relay, report in list(self._relayed.items()):
            stale = now - report["at"] > SEEN_TTL
            if stale and now - report["at"] > GONE_TTL:
                del self._relayed[relay]
                continue
            for item in report["items"]:
                item = {**item, "lag": max(0, head - int(item.get("revision") or 0))}
                if stale and item.get("connected"):
                    item.update(connected=False, disconnected_at=report["at"])
                _better(out, item)
        return sorted(out.values(), key=lambda e: (not e.get("connected"), e["id"]))

    def add_routes(self, app: web.Application) -> None:
        """Mount the endpoints (before /v1/{kind}); subscribe at startup, release pollers at shutdown."""
        app.router.add_get("/v1/changes", self.handle_changes)
        app.router.add_get("/v1/changes/head", self.handle_head)
        app.router.add_post("/v1/changes/fleet", self.handle_fleet_report)
        app.router.add_get("/v1/proxies/local", self.handle_local_fleet)

        async def _startup(_: web.Application) -> None:
            self.start()

        async def _shutdown(_: web.Application) -> None:
            await self.close()

        app.on_startup.append(_startup)
        app.on_shutdown.append(_shutdown)


def _better(out: dict[str, dict[str, Any]], entry: dict[str, Any]) -> None:
    best = out.get(entry["id"])
    rank = (bool(entry.get("connected")), int(entry.get("revision") or 0))
    if best is None or rank > (bool(best.get("connected")), int(best.get("revision") or 0)):
        out[entry["id"]] = entry


def _proxy_only(request: web.Request) -> web.Response | None:
    claims = request_claims(request)
    if not claims:
        return _err(401, "unauthorized", "authentication required")
    if claims.get("role") != "proxy":
        return _err(403, "forbidden", "role proxy required for /v1/changes")
    return None
