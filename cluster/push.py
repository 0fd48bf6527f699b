"""Config push hub: one websocket session per connected proxy, fed from the local store.

Why it looks like this:

* Every CP node serves proxies from its *locally applied* state, which only ever holds committed
  transactions, so a proxy can never receive an uncommitted configuration from any node.
* One sender task per session owns every ``send`` (aiohttp websockets must not be written from two
  tasks); the receive loop and store callbacks only update the session and set its ``wake`` event.
  That makes coalescing natural: while the proxy has ``max_inflight`` unacked frames nothing is
  sent, and the next wake-up composes *all* deltas since the last sent revision into one frame.
* A change is fanned out from the store callback itself: each session whose sender is parked and
  that needs exactly the change's delta gets the frame written to its transport there and then,
  framed once (``ws_binary_frame``) and the same bytes for every such session; no task wake-up,
  encode or compression per subscriber (streams are not compressed: deltas are small, snapshots
  are compressed already). Anything else (status first, snapshot, back-pressure, credentials to
  re-check) wakes the session's sender as before.
* Snapshots are encoded once per revision (in an executor: compressing a big config must not stall
  the node's loop) and shared by every session that needs one.

Frames are the push protocol v1 of docs/contracts.md §4. A session that cannot proceed (bad hello,
wrong protocol version) gets an ``error`` frame ``{t: "error", code, message}`` and a close frame
with the same message, so the proxy's log says exactly why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from cluster.auth import TokenPolicy, stream_credential_problem
from cluster.push_limits import MAX_STREAMS, MAX_STREAMS_PER_ADDRESS, Admission
from cluster.push_session import GONE_TTL, FeedStore, Session, SnapshotCache, request_claims, ws_binary_frame
from gateway.delta import Delta, compose
from gateway.protocol import (
    DP_FRAMES,
    PROTOCOL_VERSION,
    Ack,
    DeltaFrame,
    ErrorFrame,
    Frame,
    FrameError,
    Hello,
    Mode,
    Nack,
    Resync,
    Status,
    UnknownFrameType,
    UnsupportedProtocol,
    decode_frame,
    encode_frame,
)
from gateway.state import ConfigState

log = logging.getLogger("gwadm.push")

SNAPSHOT_CHUNK = 256 * 1024
STATUS_INTERVAL = 3.0
HELLO_TIMEOUT = 10.0
HEARTBEAT = 10.0
MAX_DELTA_FRAME = 1024 * 1024  # a composed delta bigger than this goes as a chunked snapshot
MAX_FRAME = 64 * 1024  # inbound: a proxy sends hello/ack/nack/resync/mode, each far smaller
MAX_SAME_SNAPSHOT = 3  # snapshots of one revision per session; then wait until the head moves
GONE_KEEP = 256  # disconnected proxies remembered in the fleet registry
CLOSE_PROTOCOL = 4002  # application close code: the proxy spoke something we cannot serve
FAST_WRITE_BUFFER = 64 * 1024  # a session with more unsent bytes than this is left to its sender (drain)
MEMBERS_TTL = 1.0  # status frames re-read the member list at least this often (and on every store change)


class Store(FeedStore, Protocol):
    """What the hub needs from cluster/store.py (docs/contracts.md §7)."""

    @property
    def token_generation(self) -> int: ...  # the store is also the TokenPolicy (cluster/auth.py)

    def token_revoked(self, jti: str) -> bool: ...


def _err(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "path": None}}, status=status)


class PushHub:
    """Serves ``GET /v1/stream`` sessions and the fleet registry of one CP node."""

    def __init__(
        self,
        store: Store,
        software_version: str,
        *,
        heartbeat: float = HEARTBEAT,
        status_interval: float = STATUS_INTERVAL,
        max_inflight: int = 1,
        chunk_size: int = SNAPSHOT_CHUNK,
        max_delta_frame: int = MAX_DELTA_FRAME,
        hello_timeout: float = HELLO_TIMEOUT,
        max_frame: int = MAX_FRAME,
        max_streams: int = MAX_STREAMS,
        max_streams_per_address: int = MAX_STREAMS_PER_ADDRESS,
    ) -> None:
        for name in ("token_generation", "token_revoked"):  # the stream re-check must never be off
            if not hasattr(store, name):
                raise TypeError(f"the push hub's store has no {name}: proxy streams could not be cut off "
                                "when their token is revoked or rotated away")
        self.store, self.software_version = store, software_version
        self.max_frame, self.max_streams, self.max_streams_per_address = max_frame, max_streams, max_streams_per_address
        self.admission = Admission(max_streams, max_streams_per_address)
        self.refused = self.admission.refused  # reason -> streams refused or closed for it
        self.heartbeat, self.status_interval, self.hello_timeout = heartbeat, status_interval, hello_timeout
        self.max_inflight = max(1, max_inflight)
        self.chunk_size, self.max_delta_frame = chunk_size, max_delta_frame
        self._sessions: dict[int, Session] = {}
        self._by_proxy: dict[str, Session] = {}
        self._gone: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._keys = itertools.count(1)
        self._unsubscribe: Any = None
        self._status: Status | None = None
        self._snapshots = SnapshotCache(chunk_size)
        # Encoded delta frames by (base, head): a change wakes every session, and sessions at the same
        # base need the same bytes; composing and encoding once per base, not per session.
        self._delta_frames: dict[tuple[int, int], bytes] = {}
        self._delta_wires: dict[tuple[int, int], bytes] = {}  # the same, framed for the websocket
        self._status_frame: tuple[Status, ConfigState, float, bytes] | None = None
        self._members_ttl = min(MEMBERS_TTL, status_interval / 2)  # a session's next status re-reads them
        self._closing = False
        self.frames_sent: dict[str, int] = {"delta": 0, "snapshot": 0, "status": 0}
        self.fanned_out = 0  # of the deltas, those written straight from the store callback

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to store changes (idempotent; also done lazily by the first session)."""
        self._closing = False
        if self._unsubscribe is None:
            # No sessions, nothing to push: a write then wakes nothing (ConfigStore.subscribe). A
            # new session's sender reads the store after it is registered.
            self._unsubscribe = self.store.subscribe(self._on_store_change, lambda: bool(self._sessions))
            self._status = self._read_status()

    async def close(self) -> None:
        """Close every session (1001 going away) and unsubscribe; proxies fail over elsewhere."""
        self._closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        sessions = list(self._sessions.values())
        for s in sessions:
            with contextlib.suppress(Exception):
                await s.ws.close(code=1001, message=b"control-plane node shutting down")

    def _on_store_change(self, revision: int) -> None:
        """Store callback, in the loop: new revision or raft status change."""
        self._status_frame = None  # members may have changed with the Raft configuration
        if not self._sessions:  # read when a session asks (``self._status or self._read_status()``)
            self._status = None
            return
        status = self._status = self._read_status()
        key = (status.leader_id, status.term, status.has_quorum)
        now = time.time()
        for s in self._sessions.values():
            if not self._push_now(s, key, now):
                s.wake.set()

    def _push_now(self, s: Session, status_key: tuple[Any, ...], now: float) -> bool:
        """Write the delta ``s`` lacks to its transport now, if that is all its sender would do."""
        if not s.parked or s.status_due or s.last_status != status_key or s.need_snapshot:
            return False
        if s.blocked_at is not None or len(s.inflight) >= self.max_inflight:
            return False
        transport = s.transport
        if transport is None or s.ws.closed or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > FAST_WRITE_BUFFER:
            return False  # a slow reader: its sender waits for the drain
        if stream_credential_problem(s.claims, self._token_policy, now) is not None:
            return False  # the sender says why and closes
        delta = self._delta_frame(s.sent)
        if delta is None:
            return False
        revision, _ = delta
        wire = self._delta_wires.get((s.sent, revision))
        if wire is None:
            return False
        s.sent, s.claimed_hash = revision, None
        s.inflight.append((revision, "delta"))
        transport.write(wire)
        self.frames_sent["delta"] += 1
        self.fanned_out += 1
        s.deltas_sent += 1
        return True

    def _delta_frame(self, since: int) -> tuple[int, bytes] | None:
        """(head, encoded delta frame since..head) for a proxy at ``since``, composed and encoded
        once per (since, head); None if a delta cannot do (outside the window, too big, no change)."""
        head = self.store.state.revision
        frame = self._delta_frames.get((since, head))
        if frame is not None:
            return head, frame
        state, deltas = self._consistent_read(since)
        if not deltas or since >= state.revision:
            return None
        return self._encode_delta(state, deltas)

    def _encode_delta(self, state: ConfigState, deltas: list[Delta]) -> tuple[int, bytes] | None:
        delta = compose(deltas) if len(deltas) > 1 else deltas[0]
        key = (delta.base, delta.revision)
        frame = self._delta_frames.get(key)
        if frame is None:
            frame = encode_frame(DeltaFrame.of(delta, self._snapshots.state_hash(state)))
            if len(frame) > self.max_delta_frame:
                return None
            if any(h != delta.revision for _, h in self._delta_frames):
                self._delta_frames.clear()  # only the current head's frames are kept
                self._delta_wires.clear()
            self._delta_frames[key] = frame
            self._delta_wires[key] = ws_binary_frame(frame)
        return delta.revision, frame

    def _read_status(self) -> Status:
        st = self.store.feed_status()
        leader = st.get("leader_id")
        return Status(
            node_id=str(st.get("node_id", self.store.node_id)), leader_id=None if leader is None else str(leader),
            term=int(st.get("term") or 0), has_quorum=bool(st.get("has_quorum")),
            revision=int(st.get("revision", self.store.state.revision)),
            cached=bool(st.get("cached")),  # a relay serving its last-known-good (proxy/relay.py)
        )  # fmt: skip

    # ---- registry -----------------------------------------------------------------------------

    @property
    def _token_policy(self) -> TokenPolicy | None:
        """The store enforces revocation and rotation."""
        return self.store  # always: a store without a policy does not type-check as a Store

    def proxies(self) -> list[dict[str, Any]]:
        """The fleet as this node sees it: connected sessions first, then recently gone ones."""
        head = self.store.state.revision
        now = time.time()
        items = [self._entry(s, head) for s in self._by_proxy.values()]
        for pid, entry in list(self._gone.items()):
            if now - entry["disconnected_at"] > GONE_TTL:
                del self._gone[pid]
            elif pid not in self._by_proxy:
                items.append({**entry, "lag": max(0, head - entry["revision"])})
        return sorted(items, key=lambda e: (not e["connected"], e["id"]))

    def _entry(self, s: Session, head: int) -> dict[str, Any]:
        return {
            "id": s.proxy_id, "address": s.address, "software": s.software, "revision": s.acked,
            "lag": max(0, head - s.acked), "mode": s.mode, "last_error": s.last_error, "connected": True,
            "connected_since": s.connected_since, "deltas_sent": s.deltas_sent,
            "snapshots_sent": s.snapshots_sent, "node": self.store.node_id,
            "status_address": s.status_address, "last_ack_at": s.last_ack_at,
        }  # fmt: skip

    # ---- HTTP handlers ------------------------------------------------------------------------

    async def handle_proxies(self, request: web.Request) -> web.Response:
        auth = request_claims(request)
        if not auth:
            return _err(401, "unauthorized", "authentication required")
        if auth.get("role") not in ("admin", "viewer"):
            return _err(403, "forbidden", "role admin or viewer required")
        return web.json_response({"items": self.proxies(), "revision": self.store.state.revision})

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        auth = request_claims(request)
        if not auth:
            return _err(401, "unauthorized", "authentication required")
        if auth.get("role") != "proxy":
            return _err(403, "forbidden", "role proxy required for /v1/stream")
        if self._closing:
            return _err(503, "unavailable", "node shutting down")
        remote = request.remote or ""
        refusal = self.admission.refusal(remote)
        if refusal is not None:
            status, reason = refusal
            response = _err(status, "too_many_streams", reason)
            response.headers["Retry-After"] = "5"
            response.force_close()
            return response
        with self.admission.holding(remote):
            return await self._serve(request, remote, auth)

    async def _serve(self, request: web.Request, remote: str, auth: dict[str, Any]) -> web.StreamResponse:
        # Frames over max_frame: aiohttp closes with 1009 (message too big) before buffering them.
        # Not compressed: the same delta bytes go to every proxy (see the module docstring).
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=self.max_frame, compress=False)
        await ws.prepare(request)
        self.start()
        session = await self._handshake(ws, remote)
        if session is None:
            return ws
        session.claims = dict(auth)
        session.transport = request.transport
        sender = asyncio.create_task(self._sender(session), name=f"push-send-{session.proxy_id}")
        problem: str | None = None
        try:
            async for msg in ws:
                problem = self._receive(session, msg)
                if problem is not None:
                    break
        except ConnectionResetError as exc:
            # aiohttp answers a proxy's ping while it reads; if our own heartbeat has just given up
            # on the proxy (as after this node was paused) the transport is closing and that pong
            # raises (aio-libs/aiohttp#4587). The proxy is gone either way: end as on a close.
            log.info("proxy %s: stream reset while answering a ping (%s)", session.proxy_id, exc)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self._drop(session)
            if problem is not None and not ws.closed:  # the sender is gone: this task may write
                await self._reject(ws, "bad_frame", f"proxy {session.proxy_id}: {problem}")
            if not ws.closed:
                await ws.close()
        return ws

    def _receive(self, s: Session, msg: Any) -> str | None:
        """Handle one message after hello; a reason to end the session if it is not a valid frame.

        Frame types this node does not take (unknown, or CP->DP ones) are skipped: a newer proxy
        may send frames this node does not know yet. Anything else that fails validation ends the
        session with ``error {code: bad_frame}`` naming the field: a proxy that sends garbage has
        lost track of the protocol, and what it says next cannot be trusted either.
        """
        if msg.type == WSMsgType.ERROR:
            return None  # aiohttp has already closed the websocket (1009 for a frame over max_frame)
        if msg.type != WSMsgType.BINARY:
            return f"expected binary frames, got a {msg.type.name} message"
        try:
            frame = decode_frame(msg.data, DP_FRAMES)
        except UnknownFrameType as exc:
            s.skipped += 1
            level = logging.WARNING if s.skipped == 1 else logging.DEBUG
            log.log(level, "proxy %s sent a frame this node does not take (skipped): %s", s.proxy_id, exc)
            return None
        except FrameError as exc:
            log.warning("proxy %s sent an invalid frame: %s", s.proxy_id, exc)
            return f"invalid frame: {exc}"
        self._on_frame(s, frame)
        return None

    async def _reject(self, ws: web.WebSocketResponse, code: str, message: str) -> None:
        log.warning("closing proxy stream: %s", message)
        self.admission.count(code)
        with contextlib.suppress(Exception):
            await ws.send_bytes(encode_frame(ErrorFrame(code, message)))
        reason = message.encode()[:120].decode(errors="ignore").encode()  # a close reason is <= 123 bytes of UTF-8
        await ws.close(code=CLOSE_PROTOCOL, message=reason)

    async def _handshake(self, ws: web.WebSocketResponse, remote: str) -> Session | None:
        """Wait for ``hello``; anything else (or a foreign protocol version) is refused clearly."""
        try:
            msg = await ws.receive(timeout=self.hello_timeout)
        except TimeoutError:
            await self._reject(ws, "no_hello", f"no hello within {self.hello_timeout:g}s")
            return None
        except ConnectionResetError:  # a pong to a closing transport (see _serve): the proxy is gone
            return None
        if msg.type == WSMsgType.ERROR:  # e.g. a first frame over max_frame: closed with 1009
            self.admission.count("bad_frame")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if msg.type != WSMsgType.BINARY:
            await self._reject(ws, "bad_frame", f"expected a binary hello frame, got a {msg.type.name} message")
            return None
        try:
            hello = decode_frame(msg.data, DP_FRAMES)
        except UnsupportedProtocol as exc:
            text = f"unsupported push protocol version: {exc.message}; this node speaks {PROTOCOL_VERSION}"
            await self._reject(ws, "unsupported_protocol", text)
            return None
        except FrameError as exc:
            await self._reject(ws, "bad_frame", f"invalid hello: {exc}")
            return None
        if not isinstance(hello, Hello):
            await self._reject(ws, "bad_frame", f"expected a hello frame, got {hello.T!r}")
            return None
        if self._closing:
            await ws.close(code=1001, message=b"control-plane node shutting down")
            return None
        revision = hello.revision
        s = Session(
            key=next(self._keys), ws=ws, proxy_id=hello.proxy_id, address=hello.address or remote,
            software=hello.software, acked=revision, sent=revision, claimed_hash=hello.hash or None,
            status_address=hello.status_address or None,
        )  # fmt: skip
        # Revision 0 means "nothing installed": a snapshot is one frame, deltas from 0 could be many.
        s.need_snapshot = revision == 0
        self._sessions[s.key] = s
        self._by_proxy[s.proxy_id] = s
        self._gone.pop(s.proxy_id, None)
        log.info("proxy %s connected from %s at revision %d", s.proxy_id, s.address, revision)
        s.wake.set()
        return s

    def _drop(self, s: Session) -> None:
        self._sessions.pop(s.key, None)
        if not self._sessions:  # unsubscribed from writes now: read afresh when a session asks
            self._status = None
        if self._by_proxy.get(s.proxy_id) is s:
            del self._by_proxy[s.proxy_id]
            # Another live stream under the same id (a restarted proxy, or a client reusing a
            # proxy's id) keeps the fleet entry: the proxy that is still streaming stays listed.
            other = next((o for o in self._sessions.values() if o.proxy_id == s.proxy_id), None)
            if other is not None:
                self._by_proxy[s.proxy_id] = other
                log.info("proxy %s: one of two streams under this id ended", s.proxy_id)
                return
            entry = self._entry(s, self.store.state.revision)
            entry.update(connected=False, disconnected_at=time.time())
            self._gone[s.proxy_id] = entry
            while len(self._gone) > GONE_KEEP:
                self._gone.popitem(last=False)
        log.info("proxy %s disconnected (acked revision %d)", s.proxy_id, s.acked)

    # ---- frames from the proxy ----------------------------------------------------------------

    def _on_frame(self, s: Session, f: Frame) -> None:
        """Book-keeping only (the sender task does all writing), then wake the sender."""
        if isinstance(f, Ack):
            if f.revision > s.sent:
                # Also what a confused or hostile client sends: it moves nothing (the registry's
                # revision is only ever one this session sent).
                log.warning("proxy %s acked %d beyond what was sent (%d)", s.proxy_id, f.revision, s.sent)
                return
            s.inflight = [(r, k) for r, k in s.inflight if r > f.revision]
            s.acked, s.last_error, s.last_ack_at = max(s.acked, f.revision), None, time.time()
            if s.sent >= self.store.state.revision and not s.need_snapshot and s.claimed_hash is None:
                return  # nothing left to send: the sender would wake up to do nothing
        elif isinstance(f, Nack):
            s.last_error = f.error[:500]
            log.warning("proxy %s rejected revision %d: %s", s.proxy_id, f.revision, s.last_error)
            if dict(s.inflight).get(f.revision) == "snapshot":
                s.blocked_at = f.revision  # resending the same snapshot would fail the same way
            # The proxy stays at its acked revision; whatever is still in flight will not apply.
            s.inflight, s.sent, s.claimed_hash, s.need_snapshot = [], s.acked, None, True
        elif isinstance(f, Resync | Hello):  # "start again from here"
            rev = f.revision
            s.inflight, s.acked, s.sent = [], rev, rev
            s.claimed_hash = f.hash or None  # a resync with a hash: anti-entropy repair
            s.need_snapshot = s.need_snapshot or rev == 0
        elif isinstance(f, Mode):
            s.mode = f.mode
        else:  # unreachable: decode_frame(..., DP_FRAMES) admits nothing else
            return
        s.wake.set()

    # ---- sending ------------------------------------------------------------------------------

    async def _sender(self, s: Session) -> None:
        """The only task writing to ``s.ws``: status on change and periodically, then config."""
        next_status = time.monotonic()
        try:
            while not s.ws.closed:
                if not s.wake.is_set():
                    s.parked = True  # _push_now may write to the transport until we resume
                    try:
                        async with asyncio.timeout(max(0.0, next_status - time.monotonic())):
                            await s.wake.wait()
                    except TimeoutError:
                        pass
                    finally:
                        s.parked = False
                s.wake.clear()
                problem = stream_credential_problem(s.claims, self._token_policy, time.time())
                if problem is not None:  # checked at least every status_interval
                    await self._reject(s.ws, "unauthorized", f"proxy credentials no longer valid: {problem}")
                    return
                status = self._status or self._read_status()
                key = (status.leader_id, status.term, status.has_quorum)
                if s.status_due or key != s.last_status or time.monotonic() >= next_status:
                    s.status_due = False
                    s.last_status = key
                    next_status = time.monotonic() + self.status_interval
                    # Fresh revision: never below a delta already sent (the cached status may lag
                    # the state, which the Raft thread moves before our callback runs).
                    # Members go out with every status frame (at least each status_interval), so
                    # proxies follow membership changes; not read on every wake, which each write causes.
                    # The hash at that revision lets hybrid proxies check theirs (proxy/antientropy.py).
                    await s.ws.send_bytes(self._encoded_status(status))
                    self.frames_sent["status"] += 1
                await self._pump(s)
        except (ConnectionError, RuntimeError) as exc:  # peer gone mid-send
            log.info("proxy %s stream ended while sending: %s", s.proxy_id, exc)
        except Exception:
            log.exception("push session for proxy %s failed", s.proxy_id)
        else:
            return
        # Ends the receive loop in handle_stream, which then unregisters the session. Not when
        # cancelled: then handle_stream is ending the session itself (and may still send an error).
        if not s.ws.closed:
            with contextlib.suppress(Exception):
                await s.ws.close(code=1011, message=b"push session failed")

    def _encoded_status(self, status: Status) -> bytes:
        """The status frame for the current state, encoded once for every session that sends it."""
        state, now = self.store.state, time.monotonic()
        cached = self._status_frame
        if cached is None or cached[0] is not status or cached[1] is not state or now >= cached[2]:
            full = replace(status, revision=max(status.revision, state.revision),
                           members=tuple(self.store.member_urls()), hash=self._snapshots.state_hash(state))  # fmt: skip
            cached = self._status_frame = (status, state, now + self._members_ttl, encode_frame(full))
        return cached[3]

    async def _pump(self, s: Session) -> None:
        """Send what the proxy lacks, unless it already has ``max_inflight`` unacked frames."""
        if len(s.inflight) >= self.max_inflight:
            return
        now_head = self.store.state.revision
        frame = self._delta_frames.get((s.sent, now_head))
        if frame is not None and not s.need_snapshot and s.blocked_at is None:
            await self._send_delta(s, now_head, frame)
            return
        state, deltas = self._consistent_read(s.sent)
        head = state.revision
        if s.blocked_at is not None:
            if head <= s.blocked_at:
                return
            s.blocked_at = None
        if s.sent > head:
            return  # the proxy is ahead of this node: status only, it will look elsewhere
        if s.sent == head == 0:
            s.need_snapshot = False  # both empty: there is nothing to install
            return
        if not s.need_snapshot and s.sent == head:
            if s.claimed_hash is not None and s.claimed_hash != self._snapshots.state_hash(state):
                log.warning("proxy %s has a different config at revision %d", s.proxy_id, head)
                s.need_snapshot = True
            s.claimed_hash = None
            if not s.need_snapshot:
                return
        if not s.need_snapshot and deltas:
            encoded = self._encode_delta(state, deltas)
            if encoded is not None:
                await self._send_delta(s, *encoded)
                return
        # Outside the delta window, unknown, diverged, nacked or too big for a delta frame.
        repeats = s.snapshot_repeats.get(state.revision, 0)
        if repeats >= MAX_SAME_SNAPSHOT:  # a resync loop (or flood): no snapshot storm from us
            if s.blocked_at != state.revision:
                log.warning("proxy %s asked for snapshot %d %d times in one session; waiting for a newer revision",
                            s.proxy_id, state.revision, repeats + 1)  # fmt: skip
            s.blocked_at, s.need_snapshot = state.revision, True
            return
        s.snapshot_repeats = {state.revision: repeats + 1}
        chunks = await self._snapshots.encoded(state)
        if s.ws.closed:
            return
        s.sent, s.need_snapshot, s.claimed_hash = state.revision, False, None
        s.inflight.append((state.revision, "snapshot"))
        for chunk in chunks:
            await s.ws.send_bytes(chunk)
        self.frames_sent["snapshot"] += 1
        s.snapshots_sent += 1

    async def _send_delta(self, s: Session, revision: int, frame: bytes) -> None:
        # Book-keeping before the await: an ack/nack handled meanwhile must see this frame.
        s.sent, s.claimed_hash = revision, None
        s.inflight.append((revision, "delta"))
        await s.ws.send_bytes(frame)
        self.frames_sent["delta"] += 1
        s.deltas_sent += 1

    def _consistent_read(self, since: int) -> tuple[ConfigState, list[Delta] | None]:
        """State and deltas_since(since) ending at the same revision: the store applies in its Raft
        thread, and a delta frame's hash must be the hash *at its revision*. If the state keeps
        moving, ``None`` makes the caller send a snapshot, which is consistent by itself."""
        for _ in range(5):
            deltas = self.store.deltas_since(since)
            state = self.store.state
            if not deltas or deltas[-1].revision == state.revision:
                return state, deltas
        return self.store.state, None

def add_routes(app: web.Application, hub: PushHub, proxies_path: str = "/v1/proxies") -> None:
    """Mount /v1/stream and this node's registry; subscribe at startup, close sessions at shutdown.

    A CP node mounts its own registry at /v1/proxies/local: its admin API serves /v1/proxies as
    the whole fleet, merged from every node's local registry.
    """
    app.router.add_get("/v1/stream", hub.handle_stream)
    app.router.add_get(proxies_path, hub.handle_proxies)

    async def _startup(_: web.Application) -> None:
        hub.start()

    async def _shutdown(_: web.Application) -> None:
        await hub.close()

    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
