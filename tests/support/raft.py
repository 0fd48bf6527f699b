"""In-process Raft members on loopback for adapter tests, destroyed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.raft import RaftNode, RaftSettings
from tests.support.cluster import free_port


@contextmanager
def recording_members(tmp_path: Path, *, fsync: bool, count: int = 3) -> Iterator[list[tuple[RaftNode, list[bytes]]]]:
    """``count`` members of one cluster, each with the list of payloads it applied (in order)."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    out: list[tuple[RaftNode, list[bytes]]] = []
    try:
        for i, addr in enumerate(addrs):
            applied: list[bytes] = []
            settings = RaftSettings(self_addr=addr, partners=[a for a in addrs if a != addr], password="t",
                                    data_dir=str(tmp_path / f"n{i}"), fsync=fsync)
            node = RaftNode(settings, apply_fn=lambda p, a=applied: a.append(p) or len(a), snapshot_fn=lambda: b"",
                            restore_fn=lambda b: None)
            out.append((node, applied))
        yield out
    finally:
        for node, _ in out:
            node.destroy_synchronous()


@contextmanager
def members_of(tmp_path: Path, node_class: type[RaftNode], count: int = 3) -> Iterator[list[RaftNode]]:
    """``count`` members of one cluster built by ``node_class`` (a RaftNode with its own
    ``core_class``), applying nothing, without fsync."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    nodes: list[RaftNode] = []
    try:
        for i, addr in enumerate(addrs):
            settings = RaftSettings(self_addr=addr, partners=[a for a in addrs if a != addr], password="t",
                                    data_dir=str(tmp_path / f"n{i}"), fsync=False)
            nodes.append(node_class(settings, apply_fn=lambda p: None, snapshot_fn=lambda: b"",
                                    restore_fn=lambda b: None))
        yield nodes
    finally:
        for node in nodes:
            node.destroy_synchronous()


class RecordingTransport:
    """Stands in for pysyncobj's transport in unit tests of the mixins: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append((node, message))
        return True
