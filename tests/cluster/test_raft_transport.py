"""Raft peer connections leave from the node's ``source_address`` (partition rules depend on it).

Without the bound transport, pysyncobj dials unbound and the kernel picks 127.0.0.1 on loopback
whatever the node's own address: the control test shows that, so the main test cannot pass by luck.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cluster.raft import RaftNode, RaftSettings
from tests.support.cluster import free_port

pytestmark = pytest.mark.timeout(40)


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


def _syn_retransmits(src: str, dst: str) -> int | None:
    """Retransmissions so far of the SYN from ``src`` to ``dst`` (None: no connect in SYN-SENT)."""
    out = subprocess.run(["ss", "-tnoH", "state", "syn-sent", "src", src, "dst", dst],
                         capture_output=True, text=True, timeout=5).stdout
    counts = [int(m) for m in re.findall(r"timer:\(on,[^,]+,(\d+)\)", out)]
    return max(counts) if counts else (0 if out.strip() else None)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss")
def test_a_connect_stuck_in_syn_sent_is_abandoned_and_retried_promptly(tmp_path: Path) -> None:
    """A listener whose accept queue is full drops SYNs, as a partition does: the member's connect
    sits in SYN-SENT. Without a connect deadline the kernel retransmits the SYN with a growing
    backoff (seconds apart after a few tries); with it the member redials every connect_timeout, so
    once the peer accepts again the link is up within about a second."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    partner = f"127.0.0.2:{listener.getsockname()[1]}"
    fillers = []
    for _ in range(2):  # fill the accept queue (backlog 0 holds one) so that further SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(listener.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    settings = RaftSettings(
        self_addr=f"127.0.0.3:{free_port('127.0.0.3')}", partners=[partner], password="test-secret",
        data_dir=str(tmp_path / "raft"), fsync=False, source_address="127.0.0.3", connect_timeout=0.4,
    )  # fmt: skip
    node = RaftNode(settings, lambda payload: None, lambda: b"", lambda data: None)
    try:
        transport = node._core._SyncObj__transport
        deadline = time.monotonic() + 20
        # Keep the peer deaf for ~7.5 s of SYNs: until either the kernel has retransmitted the SYN
        # six times (here: every second four times, then after 2 s; the next one 4 s later) or our
        # deadline has abandoned and redialled the connect for that long.
        while True:
            retransmits = _syn_retransmits("127.0.0.3", partner) or 0
            if retransmits >= 6 or transport.connect_deadlines_hit * settings.connect_timeout >= 7.5:
                break
            assert time.monotonic() < deadline, "the member never kept dialling its partner"
            time.sleep(0.02)
        drained = time.monotonic()
        listener.settimeout(5)
        while True:  # the fillers come out first (from 127.0.0.1), then the member
            conn, (host, _port) = listener.accept()
            conn.close()
            if host != "127.0.0.1":
                break
        waited = time.monotonic() - drained
        assert host == "127.0.0.3"
        assert waited < 1.5, f"the member connected {waited:.2f}s after the peer accepted again"
    finally:
        node.destroy()
        listener.close()
        for f in fillers:
            f.close()
