"""pysyncobj transport whose outgoing peer connections leave from a chosen source address.

Why: pysyncobj's ``TcpConnection.connect`` connects without binding, so on loopback every Raft
connection leaves from 127.0.0.1 whatever address the node listens on. Partition rules written
per node address (``ip saddr A ip daddr B drop``, DESIGN.md §6) would silently miss that traffic,
and in production a multi-homed host would pick its source by routing rather than by the address
peers know it by. With ``source_address`` set, each outgoing connection binds that address (port 0)
before connecting; everything else is pysyncobj's own code path.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import Any

from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection, _getAddrType
from pysyncobj.transport import TCPTransport


class BoundTcpConnection(TcpConnection):  # type: ignore[misc]
    """``TcpConnection`` whose ``connect`` binds ``source_address`` first (mirrors pysyncobj 0.3.17)."""

    def __init__(self, *args: Any, source_address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source_address = source_address

    def connect(self, host: str | None, port: int) -> bool:
        if host is None:
            return False
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
    """``TCPTransport`` creating ``BoundTcpConnection``s for the peers it dials."""

    source_address: str = ""

    def addNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj's name
        super().addNode(node)
        if not self.source_address or node not in self._connections:
            return
        # super() built an unbound, not yet connected TcpConnection: replace it by a bound one
        # wired to the same callbacks (same code as TCPTransport.addNode).
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


def transport_class(source_address: str | None) -> type[TCPTransport]:
    """The transport class for ``SyncObj(transportClass=...)``: bound when an address is given."""
    if not source_address:
        return TCPTransport
    return type("BoundTCPTransportFor", (BoundTCPTransport,), {"source_address": source_address})
