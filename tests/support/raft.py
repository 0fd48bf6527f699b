"""In-process Raft members on loopback for adapter tests, destroyed at the end."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.raft import RaftNode, RaftSettings
from tests.support.cluster import free_port
from tests.support.http import wait_for


@contextmanager
def recording_members(
    tmp_path: Path, *, fsync: bool, count: int = 3, node_class: type[RaftNode] = RaftNode
) -> Iterator[list[tuple[RaftNode, list[bytes]]]]:
    """``count`` members of one cluster, each with the list of payloads it applied (in order);
    ``node_class``: a RaftNode subclass with its own ``core_class``, for white-box tests."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    out: list[tuple[RaftNode, list[bytes]]] = []
    try:
        for i, addr in enumerate(addrs):
            applied: list[bytes] = []
            settings = RaftSettings(self_addr=addr, partners=[a for a in addrs if a != addr], password="t",
                                    data_dir=str(tmp_path / f"n{i}"), fsync=fsync)
            node = node_class(settings, apply_fn=lambda p, a=applied: a.append(p) or len(a), snapshot_fn=lambda: b"",
                              restore_fn=lambda b: None)
            out.append((node, applied))
        yield out
    finally:
        for node, _ in out:
            node.destroy_synchronous()


def wait_for_leader(nodes: Iterable[RaftNode], timeout: float = 10, *, with_quorum: bool = False) -> RaftNode:
    """The member that is leader (and, ``with_quorum``, knows it has a majority) once there is one."""
    members = list(nodes)

    def leader() -> RaftNode | None:
        return next((n for n in members if n.is_leader() and (not with_quorum or n.status()["has_quorum"])), None)

    found: RaftNode = wait_for(leader, timeout, "a leader" + (" with quorum" if with_quorum else ""))
    return found


class RecordingTransport:
    """Stands in for pysyncobj's transport in unit tests of the mixins: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append((node, message))
        return True
