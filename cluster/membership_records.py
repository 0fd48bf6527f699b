"""Who the Raft members are, as records: ``Member``, their encoding in membership log entries and
dumps, and the membership a node boots with (``boot_members``). No pysyncobj state lives here; the
mixin that changes membership at run time is ``cluster/membership.py`` (its docstring explains
pysyncobj's membership entries and why the boot membership is computed before pysyncobj starts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _COMMAND_TYPE

from cluster import raft_pickle

__all__ = [
    "MEMBERSHIP_COMMAND", "Entry", "Member", "boot_members", "decode_cluster", "encode_cluster", "member_of",
    "parse_change", "read_dump_cluster",
]  # fmt: skip

log = logging.getLogger("gwadm.membership")

MEMBERSHIP_COMMAND: int = _COMMAND_TYPE.MEMBERSHIP  # first byte of a membership log entry
Entry = tuple[bytes, int, int]  # (command, index, term) as in pysyncobj's journal


@dataclass(frozen=True)
class Member:
    """A Raft member as gwadm knows it. ``raft_addr`` is pysyncobj's node id."""

    id: str
    raft_addr: str
    admin_url: str

    def node(self) -> TCPNode:
        return TCPNode(self.raft_addr, gw_id=self.id, admin_url=self.admin_url)

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "raft_addr": self.raft_addr, "admin_url": self.admin_url}


def member_of(node: Any, known: Mapping[str, Member]) -> Member:
    """The member behind a pysyncobj node (or address string): its own metadata, else what we know."""
    addr = node.address if isinstance(node, TCPNode) else str(node)
    gw_id = getattr(node, "gw_id", None)
    if gw_id:
        return Member(str(gw_id), addr, str(getattr(node, "admin_url", "") or ""))
    return known.get(addr) or Member(addr, addr, "")


def parse_change(command: bytes, known: Mapping[str, Member]) -> tuple[str, Member] | None:
    """``("add"|"rem", member)`` for a membership log entry, None for any other entry."""
    if command[:1] != bytes([MEMBERSHIP_COMMAND]):
        return None
    try:
        action, _node_id, node = raft_pickle.loads(command[1:])
    except Exception:  # an entry we cannot read is not ours to interpret
        return None
    return str(action), member_of(node, known)


# -- dumps and boot ------------------------------------------------------------------------------
def encode_cluster(nodes: Iterable[Any], known: Mapping[str, Member]) -> list[dict[str, str]]:
    return sorted((member_of(n, known).to_json() for n in nodes), key=lambda m: m["raft_addr"])


def decode_cluster(raw: Iterable[Any], known: Mapping[str, Member]) -> list[Member]:
    """Dump format 2 holds ``{id, raft_addr, admin_url}``; format 1 held bare addresses."""
    members = []
    for item in raw:
        if isinstance(item, dict):
            members.append(Member(str(item["id"]), str(item["raft_addr"]), str(item.get("admin_url") or "")))
        else:
            members.append(known.get(str(item)) or Member(str(item), str(item), ""))
    return members


def read_dump_cluster(dump_file: str) -> tuple[list[Any], list[Any]] | None:
    """``(entries, cluster)`` of the dump a boot will load; None without one, or for an unreadable
    one (pysyncobj fails to load it too)."""
    try:
        with open(dump_file, "rb") as f:
            payload = msgpack.unpackb(f.read(), raw=False)
        return list(payload["entries"]), list(payload["cluster"])
    except FileNotFoundError:
        return None
    except Exception:
        log.exception("cannot read the membership of %s", dump_file)
        return None


def boot_members(
    config: Sequence[Member],
    dump: tuple[Sequence[Entry], Sequence[Member]] | None,
    journal: Sequence[Entry],
    known: Mapping[str, Member],
) -> list[Member]:
    """The membership a node must start with: the dump's (else the config's), then every membership
    entry of the journal after the dump, in log order.

    ``dump`` is ``([last_entry, prev_entry], members)``. When the journal does not start with the
    dump's two entries pysyncobj clears it at load, so its entries do not count then.
    """
    members = {m.raft_addr: m for m in (dump[1] if dump is not None else config)}
    after = 0
    entries: Sequence[Entry] = journal
    if dump is not None:
        last, prev = (tuple(e) for e in dump[0])
        after = int(last[1])  # type: ignore[call-overload]  # an entry is (command, index, term)
        if len(journal) < 2 or tuple(journal[0]) != prev or tuple(journal[1]) != last:
            entries = ()
    for command, idx, _term in entries:
        change = parse_change(command, known) if idx > after else None
        if change is None:
            continue
        action, member = change
        if action == "add":
            members.setdefault(member.raft_addr, member)
        elif action == "rem":
            members.pop(member.raft_addr, None)
    return sorted(members.values(), key=lambda m: m.id)
