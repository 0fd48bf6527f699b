"""Start-up check that the installed pysyncobj still has every private name the adapter relies on.

The adapter (cluster/raft.py, cluster/membership.py, cluster/raft_transport.py) overrides
name-mangled pysyncobj methods (``_SyncObj__onMessageReceived``, ...) and reads a few private
attributes. Python never complains when such an override no longer matches anything: a renamed
method in a new pysyncobj release would silently switch a safety fix off. So the node refuses to
start instead, naming the method (``PysyncobjIncompatible``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Private instance attributes read or written by the adapter; checked on the live SyncObj.
SYNCOBJ_ATTRIBUTES = (
    "_SyncObj__raftState", "_SyncObj__raftCurrentTerm", "_SyncObj__raftLeader", "_SyncObj__raftLog",
    "_SyncObj__lastResponseTime", "_SyncObj__selfNode", "_SyncObj__otherNodes", "_SyncObj__noopIDx",
    "_SyncObj__commandsQueue", "_SyncObj__raftCommitIndex", "_SyncObj__raftElectionDeadline",
    "_SyncObj__transport", "_SyncObj__raftMatchIndex", "_SyncObj__connectedNodes", "_SyncObj__raftLastApplied",
    "_SyncObj__pipeNotifier", "_SyncObj__sendAppendEntries", "_SyncObj__connectedToAnyone",
    "_SyncObj__getCurrentLogIndex", "_SyncObj__getCurrentLogTerm", "_SyncObj__callErrCallback",
    "_SyncObj__transferInProgress", "_SyncObj__sendNextNodeIdx",
)  # fmt: skip


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


def check_attributes(obj: Any, names: Iterable[str] = SYNCOBJ_ATTRIBUTES) -> None:
    for name in names:
        if not hasattr(obj, name):
            raise PysyncobjIncompatible(
                f"pysyncobj has no attribute {name.split('__', 1)[1]} on {type(obj).__mro__[-2].__name__} "
                f"(used by the adapter as {name}); refusing to start"
            )


def _mangled_owner(name: str) -> str | None:
    if not name.startswith("_") or name.startswith("__") or "__" not in name[1:]:
        return None
    owner, _, rest = name[1:].partition("__")
    return owner if owner and rest and not rest.endswith("__") else None
