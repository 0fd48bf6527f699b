"""Start-up check that the installed pysyncobj still has every private name the adapter relies on.

The adapter overrides name-mangled pysyncobj methods (``_SyncObj__onMessageReceived``, ...) in
the SyncObj subclass (cluster/raft_core.py) and its mixins (cluster/raft_safety.py,
cluster/membership.py, cluster/raft_read.py, cluster/raft_prevote.py), in the transport and the
connection (cluster/raft_transport.py) and in the journal (cluster/raft_journal.py), and reads or
sets a few private attributes of SyncObj, TcpConnection and FileJournal. ``RaftNode`` runs
``check_overrides`` on every one of those classes (``cluster.raft.compat_classes``) and
``check_connection_attributes`` before it builds the member; the member checks its own attributes
and the journal's once they exist. Python never complains when such an override no longer matches anything: a renamed
method in a new pysyncobj release would silently switch a safety fix off. So the node refuses to
start instead, naming the method (``PysyncobjIncompatible``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pysyncobj.tcp_connection import TcpConnection

# Private instance attributes read or written by the adapter; checked on the live SyncObj.
SYNCOBJ_ATTRIBUTES = (
    "_SyncObj__raftState", "_SyncObj__raftCurrentTerm", "_SyncObj__raftLeader", "_SyncObj__raftLog",
    "_SyncObj__lastResponseTime", "_SyncObj__selfNode", "_SyncObj__otherNodes", "_SyncObj__noopIDx",
    "_SyncObj__commandsQueue", "_SyncObj__raftCommitIndex", "_SyncObj__raftElectionDeadline",
    "_SyncObj__transport", "_SyncObj__raftMatchIndex", "_SyncObj__connectedNodes", "_SyncObj__raftLastApplied",
    "_SyncObj__pipeNotifier", "_SyncObj__sendAppendEntries", "_SyncObj__connectedToAnyone",
    "_SyncObj__getCurrentLogIndex", "_SyncObj__getCurrentLogTerm", "_SyncObj__callErrCallback",
    "_SyncObj__transferInProgress", "_SyncObj__sendNextNodeIdx", "_SyncObj__setCurrentTerm", "_SyncObj__setState",
    "_SyncObj__serializer", "_poller",
)  # fmt: skip


# Private TcpConnection names cluster/raft_transport.py reads or sets (``connect`` mirrors pysyncobj's).
TCP_CONNECTION_ATTRIBUTES = (
    "_TcpConnection__state", "_TcpConnection__fileno", "_TcpConnection__socket", "_TcpConnection__poller",
    "_TcpConnection__sendBufferSize", "_TcpConnection__recvBufferSize", "_TcpConnection__readBuffer",
    "_TcpConnection__writeBuffer", "_TcpConnection__lastReadTime", "_TcpConnection__processConnection",
    "_TcpConnection__trySendBuffer",
)  # fmt: skip
# Protected (single-underscore) library methods, and the public ``SyncObj.encryptor`` property, that
# the adapter overrides or calls: a rename would leave an override dead as silently as a mangled one
# (checked on the library classes, by name).
PROTECTED_METHODS: dict[str, tuple[str, ...]] = {
    "TCPTransport": ("_onTick", "_onMessageReceived", "_onNodeConnected", "_onNodeDisconnected",
                     "_connectIfNecessarySingle", "_onOutgoingConnected", "_onDisconnected", "addNode",
                     "dropNode", "send", "_onNewIncomingConnection"),
    "TcpConnection": ("send",),
    "SyncObj": ("_checkCommandsToApply", "_isLeader", "addOnTickCallback", "removeOnTickCallback",
                "encryptor"),
    "Serializer": ("serialize", "checkSerializing", "getTransmissionData", "setTransmissionData", "deserialize"),
}  # fmt: skip
# Protected attributes of the live transport and SyncObj that cluster/raft_transport.py reads.
TRANSPORT_ATTRIBUTES = ("_syncObj", "_connections", "_unknownConnections", "_nodes", "_lastConnectAttempt")
# The private FileJournal name cluster/raft_journal.py replaces (its durable meta storer).
JOURNAL_ATTRIBUTES = ("_FileJournal__metaStorer", "_FileJournal__journalFile")
JOURNAL_FILE_ATTRIBUTES = ("_ResizableFile__f",)  # the journal's open file (fsynced by DurableJournal)


class PysyncobjIncompatible(RuntimeError):
    """The installed pysyncobj lacks a private method or attribute the adapter overrides or uses."""


def check_overrides(cls: type, library_prefix: str = "pysyncobj") -> None:
    """Every ``_Class__name`` attribute defined by one of OUR classes in ``cls``'s MRO must exist on
    the library class ``Class`` in that MRO; otherwise the override would be dead code."""
    library = {k.__name__: k for k in cls.__mro__ if k.__module__.startswith(library_prefix)}
    for klass in cls.__mro__:
        if klass.__module__.startswith(library_prefix) or klass is object:
            continue
        for name in vars(klass):
            owner = _mangled_owner(name)
            if owner is None:
                continue
            lib = library.get(owner)
            if lib is None or not any(name in vars(k) for k in lib.__mro__):
                raise PysyncobjIncompatible(
                    f"pysyncobj has no {owner}.{name.split('__', 1)[1]} (overridden by {klass.__qualname__} "
                    f"as {name}): the installed pysyncobj is not the version this node was written for "
                    "(0.3.17); refusing to start"
                )


def check_protected(cls: type, methods: dict[str, tuple[str, ...]] | None = None) -> None:
    """Every name in ``methods[Library]`` must be defined by the library class ``Library`` (or its
    library bases) in ``cls``'s MRO."""
    table = PROTECTED_METHODS if methods is None else methods
    library = [k for k in cls.__mro__ if k.__module__.startswith("pysyncobj")]
    for lib in library:
        for name in table.get(lib.__name__, ()):
            if not any(name in vars(k) for k in lib.__mro__ if k.__module__.startswith("pysyncobj")):
                raise PysyncobjIncompatible(
                    f"pysyncobj has no {lib.__name__}.{name} (overridden or called by the adapter): the "
                    "installed pysyncobj is not the version this node was written for (0.3.17); refusing to start"
                )


def check_attributes(obj: Any, names: Iterable[str] = SYNCOBJ_ATTRIBUTES) -> None:
    for name in names:
        if not hasattr(obj, name):
            raise PysyncobjIncompatible(
                f"pysyncobj has no attribute {name.split('__', 1)[1]} on {type(obj).__mro__[-2].__name__} "
                f"(used by the adapter as {name}); refusing to start"
            )


def check_connection_attributes(connection_class: type = TcpConnection) -> None:
    """On a fresh, unconnected connection (it touches no socket and no poller)."""
    check_attributes(connection_class(poller=None), TCP_CONNECTION_ATTRIBUTES)


def _mangled_owner(name: str) -> str | None:
    if not name.startswith("_") or name.startswith("__") or "__" not in name[1:]:
        return None
    owner, _, rest = name[1:].partition("__")
    return owner if owner and rest and not rest.endswith("__") else None
