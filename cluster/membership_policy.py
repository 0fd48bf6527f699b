"""When a membership change is safe: pure judgements the leader makes before proposing one.

A change must leave a cluster whose reachable members still form a majority, both while the new
configuration is in effect (a node being added counts as down: it has to catch up first) and
for the members that remain after a removal. Refusals carry the HTTP status, error code and a
message that names the members involved and what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.membership_records import Member


class Refusal(Exception):
    """A membership change we will not make; ``status``/``code``/``message`` go into the API error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _names(members: Iterable[Member]) -> str:
    return ", ".join(sorted(m.id for m in members)) or "none"


def _check_quorum(members: Sequence[Member], reachable: set[str]) -> None:
    up = [m for m in members if m.id in reachable]
    if len(up) <= len(members) / 2:
        raise Refusal(409, "unsafe_change",
                      f"the cluster has no quorum: only {_names(up)} of {_names(members)} reachable from the "
                      "leader; a membership change needs a working majority, bring members back first")


def check_add(members: Sequence[Member], new: Member, reachable: set[str]) -> None:
    """Refuse duplicates, and an add that leaves the cluster without a working majority.

    ``reachable``: ids of the members the leader is connected to, the leader included. The new node
    counts as down: it usually starts after the change commits, and must catch up first.
    """
    for m in members:
        for field, label in (("id", "id"), ("raft_addr", "raft address"), ("admin_url", "admin URL")):
            if getattr(m, field) == getattr(new, field) and getattr(new, field):
                what = "is already a member" if field == "id" else f"is already used by member {m.id}"
                raise Refusal(409, "conflict", f"{label} {getattr(new, field)} {what}")
    _check_quorum(members, reachable)
    up = [m for m in members if m.id in reachable]
    if len(up) <= (len(members) + 1) / 2:
        down = [m for m in members if m.id not in reachable]
        raise Refusal(409, "unsafe_change",
                      f"adding {new.id} makes {len(members) + 1} members of which only {len(up)} are up "
                      f"({_names(up)}; {_names(down)} unreachable, {new.id} not caught up yet): the cluster "
                      f"would lose its quorum. Bring {_names(down)} back, or remove it first")


def check_remove(members: Sequence[Member], target_id: str, reachable: set[str]) -> Member:
    """The member to remove, or a Refusal: unknown id, last member, or a remainder without quorum."""
    target = next((m for m in members if m.id == target_id), None)
    if target is None:
        raise Refusal(404, "not_found", f"no member {target_id} (members: {_names(members)})")
    if len(members) == 1:
        raise Refusal(409, "unsafe_change", f"{target_id} is the last member: removing it would leave no cluster")
    _check_quorum(members, reachable)
    rest = [m for m in members if m.id != target_id]
    up = [m for m in rest if m.id in reachable]
    if len(up) <= len(rest) / 2:
        down = [m for m in rest if m.id not in reachable]
        raise Refusal(409, "unsafe_change",
                      f"removing {target_id} leaves {_names(rest)}, of which only {_names(up)} "
                      f"{'is' if len(up) == 1 else 'are'} reachable from the leader ({_names(down)} down or "
                      "cut off): the remaining members could not form a quorum. Bring "
                      f"{_names(down)} back first, or remove {_names(down)} instead")
    return target
