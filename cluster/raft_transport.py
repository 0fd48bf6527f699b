"""pysyncobj transport with peer-link deadlines, link state, and optional source-address binding.

Why each piece exists:

* **Connect deadline.** pysyncobj checks a connection's timeout only on socket events or sends, so
  a connect started while a peer was unreachable sits in SYN-SENT and follows the kernel's SYN
  backoff (1, 3, 7, 15, 31 s): after a 40 s partition a follower<->follower link stayed down, and
  the next leader loss left the survivors without quorum for ~25 s. Every outgoing connect here
  has ``connect_timeout``; an attempt past it is closed and retried at once.
* **Link liveness.** pysyncobj sends nothing between followers, so a dead follower<->follower link
  looked "connected" indefinitely. Each side pings every up link every ``ping_interval``; a link
  that has heard nothing for ``link_timeout`` is closed (and redialled by its dialling side). So
  after any heal every link is up again within about ``link_timeout`` + ``connect_timeout``.
* **Link state.** ``links()`` reports each peer's link (up / connecting / down, since when, last
  heard) for ``/v1/status``; ``on_link_change`` feeds the node's event log.
* **Source address.** ``TcpConnection.connect`` connects without binding, so on loopback every Raft
  connection leaves from 127.0.0.1 whatever address the node listens on; partition rules written
  per node address (docs/architecture.md §6) would silently miss it. With ``source_address`` set, each
  outgoing connection binds that address (port 0) before connecting.
* **Denial reasons.** A follower's membership change travels to the leader as pysyncobj's
  ``apply_command``; a refusal comes back as a bare REQUEST_DENIED. ``denial_reason`` (set by the
  node) lets the leader attach why (``gw_denial``: ``(kind, message)``), so the follower can say it.
* **Lease support.** Each numbered AppendEntries remembers when it was sent; an acknowledgement
  records the *send* time of the heartbeat it answers (``acked_send_times``), from which the
  leader's lease is measured (cluster/raft_read.py). A vote request of a leadership transfer's
  candidate is tagged ``gw_transfer`` (``is_transfer``): lease-holding followers grant only those
  within min_timeout of hearing from their leader.
* **Snapshots sent.** ``on_snapshot_sent(peer address, size)`` when the last chunk of a snapshot
  (pysyncobj's ``serialized`` AppendEntries) goes to a lagging follower.
"""

from __future__ import annotations

import errno
import functools
import socket
import struct
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON
from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection, _getAddrType
from pysyncobj.transport import TCPTransport

from cluster import raft_pickle

PING = "gwadm_link_ping"


SMALL_MESSAGE = 16 * 1024  # bytes of pickle below which a message is framed without compressing


def _zlib_frame(data: bytes) -> bytes:
    """A zlib stream any ``zlib.decompress`` reads, as pysyncobj's receiver expects. pysyncobj
    compresses every message at level 3: deflateInit allocates ~260 KB of window and hash tables
    per call (~40 us for a 500-byte AppendEntries in a microbenchmark with allocation churn; in a
    cluster the A/B was 1-3 % of CPU per write, within noise). Small messages are stored (level 0,
    512-byte window: ~2 us); large ones (snapshot chunks, batches) still compress, at level 1."""
    if len(data) < SMALL_MESSAGE:
        c = zlib.compressobj(0, zlib.DEFLATED, 9, 1)
    else:
        c = zlib.compressobj(1)
    return c.compress(data) + c.flush()


class CompactTcpConnection(TcpConnection):  # type: ignore[misc]
    """``TcpConnection`` whose ``send`` frames small messages without compressing them (same wire
    format: a peer running plain pysyncobj framing reads them unchanged)."""

    def send(self, message: Any) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = _zlib_frame(raft_pickle.dumps(message))
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(monotonic_time()))
        self._TcpConnection__writeBuffer += struct.pack("i", len(data)) + data
        self._TcpConnection__trySendBuffer()


class BoundTcpConnection(CompactTcpConnection):
    """``TcpConnection`` whose ``connect`` binds ``source_address`` first (mirrors pysyncobj 0.3.17)."""

    def __init__(self, *args: Any, source_address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source_address = source_address
        self.connect_started: float | None = None

    def connect(self, host: str | None, port: int) -> bool:
        if host is None:
            return False
        self.connect_started = monotonic_time()
        if not self.source_address:
            return bool(super().connect(host, port))
        self._TcpConnection__state = CONNECTION_STATE.DISCONNECTED
        self._TcpConnection__fileno = None
        sock = socket.socket(_getAddrType(host), socket.SOCK_STREAM)
        self._TcpConnection__socket = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpConnection__sendBufferSize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpConnection__recvBufferSize)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.setSockoptKeepalive()
        sock.setblocking(False)
        self._TcpConnection__readBuffer = b""
        self._TcpConnection__writeBuffer = b""
        self._TcpConnection__lastReadTime = monotonic_time()
        try:
            sock.bind((self.source_address, 0))
        except OSError:
            sock.close()
            return False  # pysyncobj retries after connectionRetryTime, as for a refused connect
        try:
            sock.connect((host, port))
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                sock.close()
                return False
        self._TcpConnection__fileno = sock.fileno()
        self._TcpConnection__state = CONNECTION_STATE.CONNECTING
        self._TcpConnection__poller.subscribe(
            self._TcpConnection__fileno,
            self._TcpConnection__processConnection,
            POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
        )
        return True


class BoundTCPTransport(TCPTransport):  # type: ignore[misc]
    """``TCPTransport`` with connect deadlines, link pings and link state (see the module docstring);
    its outgoing connections are ``BoundTcpConnection``s."""

    source_address: str = ""
    connect_timeout: float = 0.5
    link_timeout: float = 1.5
    ping_interval: float = 0.25
    on_link_change: Callable[[str, bool, str], None] | None = None  # (peer address, up, reason)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._link_up: dict[str, bool] = {}
        self._link_since: dict[str, float] = {}
        self._last_heard: dict[str, float] = {}
        self._last_ping: dict[Any, float] = {}
        self._up_nodes: set[Any] = set()
        self._hb_sent: dict[Any, int] = {}  # peer -> last AppendEntries number sent (leader)
        self._hb_acked: dict[Any, int] = {}  # peer -> highest number it acknowledged (leader)
        self._hb_from: dict[Any, int] = {}  # peer -> last number received from it (follower)
        self._hb_sent_at: dict[Any, deque[tuple[int, float]]] = {}  # peer -> recent (number, sent at)
        self._hb_acked_sent_at: dict[Any, float] = {}  # peer -> send time of the newest heartbeat it acked
        self._snapshot_bytes: dict[Any, int] = {}  # peer -> bytes of the snapshot being sent
        self.connect_deadlines_hit = 0
        self.idle_links_closed = 0
        self.snapshots_sent = 0
        super().__init__(*args, **kwargs)

    def addNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj's name
        super().addNode(node)
        self._link_since.setdefault(node.address, monotonic_time())
        if node not in self._connections:
            return
        # super() built a plain, not yet connected TcpConnection: replace it by ours, wired to the
        # same callbacks (same code as TCPTransport.addNode).
        conf = self._syncObj.conf
        conn = BoundTcpConnection(
            poller=self._syncObj._poller,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            keepalive=conf.tcp_keepalive,
            source_address=self.source_address,
        )
        conn.encryptor = self._syncObj.encryptor
        conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
        self._connections[node] = conn

    def dropNode(self, node: Any) -> None:  # noqa: N802
        super().dropNode(node)
        self._up_nodes.discard(node)
        for hb in (self._hb_sent_at, self._hb_acked_sent_at):
            hb.pop(node, None)
        address = getattr(node, "address", None)
        if address is not None:
            for table in (self._link_up, self._link_since, self._last_heard):
                table.pop(address, None)

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802
        if type(conn) is TcpConnection:  # accepted by pysyncobj's server: give it our send
            conn.__class__ = CompactTcpConnection
        super()._onNewIncomingConnection(conn)

    # -- liveness, on pysyncobj's tick thread ---------------------------------------------------------
    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        now = monotonic_time()
        for node, conn in list(self._connections.items()):
            state = conn.state
            if state == CONNECTION_STATE.CONNECTING:
                started = getattr(conn, "connect_started", None) or self._lastConnectAttempt.get(node, now)
                if now - started > self.connect_timeout:
                    self.connect_deadlines_hit += 1
                    conn.disconnect()  # pysyncobj's callback redials if connectionRetryTime allows...
                    if conn.state == CONNECTION_STATE.DISCONNECTED:  # ...else we do: the attempt is over
                        self._lastConnectAttempt.pop(node, None)
                        self._connectIfNecessarySingle(node)
            elif state == CONNECTION_STATE.CONNECTED:
                if now - conn._TcpConnection__lastReadTime > self.link_timeout:
                    self.idle_links_closed += 1
                    conn.disconnect()
                elif node in self._up_nodes and now - self._last_ping.get(node, 0.0) >= self.ping_interval:
                    self._last_ping[node] = now
                    self.send(node, {"type": PING})
        for conn in list(self._unknownConnections):  # accepted, handshake not finished
            if now - conn._TcpConnection__lastReadTime > self.link_timeout:
                conn.disconnect()

    before_ack: Callable[[], None] | None = None  # group commit: flush the journal first
    denial_reason: Callable[[], tuple[str, str] | None] | None = None  # why the leader refused a change
    is_transfer: Callable[[], bool] | None = None  # this member campaigns on a leader's TimeoutNow
    on_snapshot_sent: Callable[[str, int], None] | None = None  # (peer address, bytes)

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "apply_command_response" and message.get("error") == FAIL_REASON.REQUEST_DENIED:
            why = self.denial_reason() if self.denial_reason is not None else None
            if why is not None:
                message["gw_denial"] = why
        elif kind == "append_entries" and message.get("serialized"):
            self._snapshot_chunk(node, message["serialized"])
        elif kind == "request_vote" and self.is_transfer is not None and self.is_transfer():
            message["gw_transfer"] = True
        if kind == "next_node_idx":
            if self.before_ack is not None:
                self.before_ack()  # an acknowledgement promises the entries are on disk
            heard = self._hb_from.get(node)
            if heard is not None:
                message["gw_hb_ack"] = heard  # ReadIndex: which of the leader's heartbeats this answers
        elif kind == "append_entries":
            seq = self._hb_sent.get(node, 0) + 1
            self._hb_sent[node] = seq
            message["gw_hb"] = seq
            sent = self._hb_sent_at.get(node)
            if sent is None:
                sent = self._hb_sent_at[node] = deque(maxlen=512)
            sent.append((seq, monotonic_time()))  # taken before the bytes leave: never later than the send
        return bool(super().send(node, message))

    def _snapshot_chunk(self, node: Any, chunk: Any) -> None:
        """pysyncobj sends a snapshot as ``(data, is_first, is_last)`` chunks, one per AppendEntries."""
        if not (isinstance(chunk, (tuple, list)) and len(chunk) == 3):
            return
        data, first, last = chunk
        size = (0 if first else self._snapshot_bytes.get(node, 0)) + len(data or b"")
        self._snapshot_bytes[node] = size
        if last:
            self._snapshot_bytes.pop(node, None)
            self.snapshots_sent += 1
            if self.on_snapshot_sent is not None:
                try:
                    self.on_snapshot_sent(getattr(node, "address", str(node)), size)
                except Exception:  # an observer must never break the transport
                    pass

    # -- ReadIndex support: heartbeats numbered per peer, acknowledgements matched to them ----------
    def heartbeat_marks(self) -> dict[Any, int]:
        """Per peer, the number the NEXT AppendEntries to it will carry."""
        return {node: self._hb_sent.get(node, 0) + 1 for node in list(self._nodes)}

    def acked_since(self, marks: dict[Any, int]) -> int:
        """How many peers answered an AppendEntries numbered at least ``marks[peer]``."""
        return sum(1 for node, mark in marks.items() if self._hb_acked.get(node, 0) >= mark)

    def acked_send_times(self) -> dict[Any, float]:
        """Per peer, when the newest AppendEntries it acknowledged was sent (monotonic clock)."""
        return dict(self._hb_acked_sent_at)

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        address = getattr(node, "address", None)
        if address is not None:
            self._last_heard[address] = monotonic_time()
        if isinstance(message, dict):
            kind = message.get("type")
            if kind == PING:
                return
            if kind == "append_entries" and "gw_hb" in message:
                self._hb_from[node] = message["gw_hb"]
            elif kind == "next_node_idx" and "gw_hb_ack" in message:
                acked = int(message["gw_hb_ack"])
                self._hb_acked[node] = max(self._hb_acked.get(node, 0), acked)
                sent_at = next((t for seq, t in reversed(self._hb_sent_at.get(node, ())) if seq == acked), None)
                if sent_at is not None and sent_at > self._hb_acked_sent_at.get(node, float("-inf")):
                    self._hb_acked_sent_at[node] = sent_at
        super()._onMessageReceived(node, message)

    def _onNodeConnected(self, node: Any) -> None:  # noqa: N802
        self._up_nodes.add(node)
        self._set_link(node, True, "connected")
        super()._onNodeConnected(node)

    def _onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
        self._up_nodes.discard(node)
        self._set_link(node, False, "disconnected")
        super()._onNodeDisconnected(node)

    def _set_link(self, node: Any, up: bool, reason: str) -> None:
        address = getattr(node, "address", None)
        if address is None or self._link_up.get(address) == up:
            return
        now = monotonic_time()
        self._link_up[address] = up
        self._link_since[address] = now
        if up:
            self._last_heard[address] = now
        if self.on_link_change is not None:
            try:
                self.on_link_change(address, up, reason)
            except Exception:  # an observer must never break the transport
                pass

    def links(self) -> dict[str, dict[str, Any]]:
        """Per peer address: ``{"state": "up"|"connecting"|"down", "for_s", "last_heard_s"}``."""
        now = monotonic_time()
        out: dict[str, dict[str, Any]] = {}
        for node in list(self._nodes):
            address = node.address
            conn = self._connections.get(node)
            if self._link_up.get(address):
                state = "up"
            elif conn is not None and conn.state == CONNECTION_STATE.CONNECTING:
                state = "connecting"
            else:
                state = "down"
            heard = self._last_heard.get(address)
            out[address] = {
                "state": state,
                "for_s": round(now - self._link_since.get(address, now), 3),
                "last_heard_s": None if heard is None else round(now - heard, 3),
            }
        return out


def transport_class(
    source_address: str | None,
    *,
    connect_timeout: float = 0.5,
    link_timeout: float = 1.5,
    ping_interval: float = 0.25,
    on_link_change: Callable[[str, bool, str], None] | None = None,
) -> type[TCPTransport]:
    """The transport class for ``SyncObj(transportClass=...)`` (pysyncobj instantiates it)."""
    attrs: dict[str, Any] = {
        "source_address": source_address or "", "connect_timeout": connect_timeout,
        "link_timeout": link_timeout, "ping_interval": ping_interval,
        "on_link_change": staticmethod(on_link_change) if on_link_change else None,
    }  # fmt: skip
    return type("GwadmTCPTransport", (BoundTCPTransport,), attrs)
