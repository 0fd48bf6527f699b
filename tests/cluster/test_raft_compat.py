"""The node refuses to start on a pysyncobj whose private names moved (cluster/raft_compat.py), and
``RaftNode`` is a façade: pysyncobj's own API is not reachable through it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from cluster import membership, raft_prevote, raft_read, raft_safety
from cluster.raft import RaftNode, RaftSettings, compat_classes
from cluster.raft_compat import PysyncobjIncompatible, _mangled_owner, check_attributes, check_overrides
from cluster.raft_core import RaftCore
from cluster.raft_journal import DurableJournal
from cluster.raft_transport import BoundTcpConnection, BoundTCPTransport
from tests.support.cluster import free_port


def _settings(tmp_path: Path) -> RaftSettings:
    return RaftSettings(self_addr=f"127.0.0.1:{free_port()}", partners=[], password="x",
                        data_dir=str(tmp_path), fsync=False)


def test_the_adapter_matches_the_installed_pysyncobj() -> None:
    for cls in compat_classes():
        check_overrides(cls)


def test_every_class_that_overrides_a_private_name_is_checked_at_start_up() -> None:
    """Every class of ours defining a ``_Library__name`` method is one RaftNode checks (the core
    with all its mixins through its MRO, the transport, the connection, the journal)."""
    checked = {k for cls in compat_classes() for k in cls.__mro__}
    modules = [membership, raft_prevote, raft_read, raft_safety, __import__("cluster.raft_core").raft_core,
               __import__("cluster.raft_transport").raft_transport, __import__("cluster.raft_journal").raft_journal]
    overriding = {
        cls for mod in modules for _, cls in inspect.getmembers(mod, inspect.isclass)
        if cls.__module__ == mod.__name__ and any(_mangled_owner(n) for n in vars(cls))
    }
    assert {RaftCore, raft_safety.LogSafetyMixin, membership.MembershipMixin} <= overriding
    assert overriding <= checked, f"not checked at start-up: {overriding - checked}"


def test_an_override_of_a_missing_private_method_is_refused() -> None:
    class Drifted(RaftCore):
        def _SyncObj__onMessageRecieved(self, node: Any, message: Any) -> None:  # noqa: N802 - the typo is the point
            pass

    with pytest.raises(PysyncobjIncompatible, match="onMessageRecieved"):
        check_overrides(Drifted)


@pytest.mark.parametrize("mixin", [raft_safety.LogSafetyMixin, membership.MembershipMixin])
def test_a_node_whose_mixin_overrides_a_missing_method_does_not_start(
    tmp_path: Path, mixin: type, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mixin, "_SyncObj__applyCommandz", lambda self: None, raising=False)
    with pytest.raises(PysyncobjIncompatible, match=r"SyncObj\.applyCommandz .*" + mixin.__qualname__):
        RaftNode(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


@pytest.mark.parametrize("cls", [BoundTcpConnection, DurableJournal])
def test_a_node_whose_transport_or_journal_overrides_a_missing_method_does_not_start(
    tmp_path: Path, cls: type, monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = {BoundTcpConnection: "TcpConnection", DurableJournal: "FileJournal"}[cls]
    monkeypatch.setattr(cls, f"_{owner}__gone", lambda self: None, raising=False)
    with pytest.raises(PysyncobjIncompatible, match=f"{owner}.gone"):
        RaftNode(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


@pytest.mark.parametrize(("library", "name"), [("TCPTransport", "_onTick"), ("SyncObj", "_checkCommandsToApply")])
def test_a_renamed_protected_method_the_adapter_overrides_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library: str, name: str,
) -> None:
    from cluster import raft_compat

    renamed = {k: tuple(n + "2" if (k, n) == (library, name) else n for n in v)
               for k, v in raft_compat.PROTECTED_METHODS.items()}  # as if pysyncobj had renamed it
    monkeypatch.setattr(raft_compat, "PROTECTED_METHODS", renamed)
    with pytest.raises(PysyncobjIncompatible, match=f"{library}.{name}2"):
        RaftNode(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


def test_the_overridden_protected_methods_are_listed() -> None:
    from cluster import raft_compat

    listed = {n for names in raft_compat.PROTECTED_METHODS.values() for n in names}
    ours = {n for cls in (BoundTCPTransport, membership.MembershipMixin) for n in vars(cls)
            if n.startswith("_") and not n.startswith("__") and not _mangled_owner(n)
            and any(n in vars(k) for k in (*BoundTCPTransport.__mro__, SyncObj) if k.__module__.startswith("pysyncobj"))}
    assert ours <= listed, f"overridden but not checked: {ours - listed}"


def test_a_node_with_a_dead_override_does_not_start(tmp_path: Path) -> None:
    class DriftedCore(RaftCore):
        def _SyncObj__checkCommandsToAply(self) -> None:  # noqa: N802
            pass

    class Drifted(RaftNode):
        __slots__ = ()
        core_class = DriftedCore

    with pytest.raises(PysyncobjIncompatible, match="checkCommandsToAply"):
        Drifted(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


def test_a_connection_without_a_private_attribute_the_transport_sets_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cluster import raft_compat

    monkeypatch.setattr(raft_compat, "TCP_CONNECTION_ATTRIBUTES",
                        (*raft_compat.TCP_CONNECTION_ATTRIBUTES, "_TcpConnection__renamedState"))
    with pytest.raises(PysyncobjIncompatible, match="renamedState on TcpConnection"):
        RaftNode(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)


def test_a_journal_whose_meta_storer_moved_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster import raft_journal

    monkeypatch.setattr(raft_journal, "JOURNAL_ATTRIBUTES", ("_FileJournal__metaStorrer",))
    with pytest.raises(PysyncobjIncompatible, match="metaStorrer"):
        DurableJournal(str(tmp_path / "j"), False)


def test_missing_private_attributes_are_named() -> None:
    class Bare(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:  # never runs SyncObj.__init__: none of its attributes exist
            pass

    with pytest.raises(PysyncobjIncompatible, match="raftState"):
        check_attributes(Bare())


def test_raft_node_is_a_facade_pysyncobj_is_not_reachable_through_it(tmp_path: Path) -> None:
    assert not issubclass(RaftNode, SyncObj)
    node = RaftNode(_settings(tmp_path), apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None)
    try:
        assert not isinstance(node, SyncObj)
        for name in ("getStatus", "addNodeToCluster", "removeNodeFromCluster", "addOnTickCallback",
                     "forceLogCompaction", "raftCommitIndex", "_isLeader", "conf", "_apply"):
            assert not hasattr(node, name), name
        assert not [n for n in dir(node) if n.startswith(("_SyncObj__", "_TcpConnection__", "_FileJournal__"))]
        with pytest.raises(AttributeError):
            node.anything = 1  # type: ignore[attr-defined]  # no attribute bag to leak through
        public = {n for n in dir(node) if not n.startswith("_")}
        assert public == {
            "settings", "core_class", "events", "status", "role", "links", "is_leader", "has_leader_with_quorum",
            "read_index_rounds", "members", "member_id", "self_member", "reachable_ids", "change_membership",
            "transfer_leadership", "read_index", "submit", "destroy", "destroy_synchronous",
        }, public
        assert isinstance(node._core, SyncObj)  # the member is inside, private to the adapter
    finally:
        node.destroy_synchronous()
