"""The node refuses to start on a pysyncobj whose private names moved (cluster/raft_compat.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from cluster.raft import RaftNode, RaftSettings
from cluster.raft_compat import PysyncobjIncompatible, check_attributes, check_overrides
from cluster.raft_transport import BoundTcpConnection, BoundTCPTransport
from tests.support.cluster import free_port


def test_the_adapter_matches_the_installed_pysyncobj() -> None:
    for cls in (RaftNode, BoundTCPTransport, BoundTcpConnection):
        check_overrides(cls)


def test_an_override_of_a_missing_private_method_is_refused() -> None:
    class Drifted(RaftNode):
        def _SyncObj__onMessageRecieved(self, node: Any, message: Any) -> None:  # noqa: N802 - the typo is the point
            pass

    with pytest.raises(PysyncobjIncompatible, match="onMessageRecieved"):
        check_overrides(Drifted)


def test_a_node_with_a_dead_override_does_not_start(tmp_path: Path) -> None:
    class Drifted(RaftNode):
        def _SyncObj__checkCommandsToAply(self) -> None:  # noqa: N802
            pass

    settings = RaftSettings(self_addr=f"127.0.0.1:{free_port()}", partners=[], password="x",
                            data_dir=str(tmp_path), fsync=False)
    with pytest.raises(PysyncobjIncompatible, match="checkCommandsToAply"):
        Drifted(settings, apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


def test_missing_private_attributes_are_named() -> None:
    class Bare(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:  # never runs SyncObj.__init__: none of its attributes exist
            pass

    with pytest.raises(PysyncobjIncompatible, match="raftState"):
        check_attributes(Bare())
