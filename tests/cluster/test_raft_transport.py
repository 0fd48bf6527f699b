"""Raft peer connections leave from the node's ``source_address`` (partition rules depend on it).

Without the bound transport, pysyncobj dials unbound and the kernel picks 127.0.0.1 on loopback
whatever the node's own address: the control test shows that, so the main test cannot pass by luck.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from cluster.raft import RaftNode, RaftSettings
from tests.support.cluster import free_port

pytestmark = pytest.mark.timeout(30)


def _peer_source(tmp_path: Path, source_address: str | None) -> str:
    """Start a member on 127.0.0.3 whose only partner is a plain listener on 127.0.0.2; return the
    source address of the first connection the member opens to it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.2", 0))
    listener.listen(4)
    listener.settimeout(10)
    partner = f"127.0.0.2:{listener.getsockname()[1]}"
    # pysyncobj dials only partners whose address sorts below its own, so the member's is higher.
    settings = RaftSettings(
        self_addr=f"127.0.0.3:{free_port('127.0.0.3')}",
        partners=[partner],
        password="test-secret",
        data_dir=str(tmp_path / f"raft-{source_address}"),
        fsync=False,
        source_address=source_address,
    )
    node = RaftNode(settings, lambda payload: None, lambda: b"", lambda data: None)
    try:
        conn, (host, _port) = listener.accept()
        conn.close()
        return str(host)
    finally:
        node.destroy()
        listener.close()
        time.sleep(0.05)


def test_outgoing_peer_connections_bind_the_source_address(tmp_path: Path) -> None:
    assert _peer_source(tmp_path, "127.0.0.3") == "127.0.0.3"


def test_control_unbound_connections_leave_from_127_0_0_1(tmp_path: Path) -> None:
    assert _peer_source(tmp_path, None) == "127.0.0.1"


def test_raft_listens_only_on_its_own_address(tmp_path: Path) -> None:
    """pysyncobj binds 0.0.0.0:<port> unless given a bind address: the Raft port was then open on
    every interface, and two members on 127.0.0.2:P and 127.0.0.3:P could not coexist (found by the
    chaos harness, which gives every member its own address and the same ports)."""
    port = free_port("127.0.0.3")
    settings = RaftSettings(
        self_addr=f"127.0.0.3:{port}", partners=["127.0.0.2:1"], password="test-secret",
        data_dir=str(tmp_path / "raft"), fsync=False,
    )  # fmt: skip
    node = RaftNode(settings, lambda payload: None, lambda: b"", lambda data: None)
    try:
        other = socket.socket()
        other.bind(("127.0.0.4", port))  # EADDRINUSE if the member had bound 0.0.0.0
        other.close()
    finally:
        node.destroy()
