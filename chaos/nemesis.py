"""Faults, each a ``start`` that breaks something and a ``heal`` that repairs all of it.

Every choice (which node, which halves, which ring) comes from the run's seeded RNG, so a seed
replays the same schedule against the same cluster shape. Partitions are proved by probes before
the run continues (chaos/net.py ``verify_partition``): a rule that silently misses traffic would
make every later check meaningless.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.controller import ADMIN_PORT, RAFT_PORT, Controller, Member
from chaos.net import Net, verify_partition
from chaos.workload import http_call


@dataclass
class FaultContext:
    ctrl: Controller
    net: Net
    rng: random.Random
    probe_addresses: list[str]
    log: Callable[[str], None] = lambda _msg: None


@dataclass
class Fault:
    """One injected fault: what it did (``detail``) and how to undo it."""

    name: str
    detail: dict[str, Any]
    undo: Callable[[], None]
    touches_network: bool = False
    # time.monotonic() of the harmful action itself (after choosing the victim, before any check
    # that it took): the write-unavailability checker measures from it.
    injected_at: float | None = None


def _leader_or_random(ctx: FaultContext) -> Member:
    leader = ctx.ctrl.leader()
    return leader if leader is not None else ctx.rng.choice(ctx.ctrl.nodes)


def _restart(ctx: FaultContext, members: list[Member]) -> Callable[[], None]:
    """Restart the members and wait until their admin API answers: on 2 cores, 5 Python processes
    take seconds to boot, and a quiet period that starts before they are up is not quiet."""

    def undo() -> None:
        for m in members:
            ctx.ctrl.start(m)
        deadline = time.monotonic() + 30.0
        pending = list(members)
        while pending and time.monotonic() < deadline:
            pending = [m for m in pending if ctx.ctrl.node_status(m, timeout=0.5) is None]
            if pending:
                time.sleep(0.1)

    return undo


def _cut(ctx: FaultContext, name: str, pairs: list[tuple[Member, Member]], detail: dict[str, Any]) -> Fault:
    at = time.monotonic()
    ctx.net.cut([(a.addr, b.addr) for a, b in pairs])
    verify_partition(ctx.net, ctx.probe_addresses)
    detail = {**detail, "cut": sorted(sorted((a.name, b.name)) for a, b in pairs), "verified": True}
    return Fault(name, detail, ctx.net.heal, touches_network=True, injected_at=at)


def kill_leader(ctx: FaultContext) -> Fault:
    node = _leader_or_random(ctx)
    at = time.monotonic()
    ctx.ctrl.kill(node)
    return Fault("kill-leader", {"node": node.name}, _restart(ctx, [node]), injected_at=at)


def kill_random(ctx: FaultContext) -> Fault:
    node = ctx.rng.choice(ctx.ctrl.nodes)
    at = time.monotonic()
    ctx.ctrl.kill(node)
    return Fault("kill-random", {"node": node.name}, _restart(ctx, [node]), injected_at=at)


def kill_all(ctx: FaultContext) -> Fault:
    at = time.monotonic()
    for node in ctx.ctrl.nodes:
        ctx.ctrl.kill(node)
    return Fault("kill-all", {"nodes": [n.name for n in ctx.ctrl.nodes]}, _restart(ctx, list(ctx.ctrl.nodes)),
                 injected_at=at)


def pause_leader(ctx: FaultContext) -> Fault:
    node = _leader_or_random(ctx)
    at = time.monotonic()
    ctx.ctrl.pause(node)
    return Fault("pause-leader", {"node": node.name}, lambda: ctx.ctrl.resume(node), injected_at=at)


def isolate_leader(ctx: FaultContext) -> Fault:
    node = _leader_or_random(ctx)
    pairs = [(node, other) for other in ctx.ctrl.nodes if other is not node]
    return _cut(ctx, "isolate-leader", pairs, {"node": node.name})


def random_halves(ctx: FaultContext) -> Fault:
    nodes = list(ctx.ctrl.nodes)
    ctx.rng.shuffle(nodes)
    minority, majority = nodes[: len(nodes) // 2], nodes[len(nodes) // 2 :]
    pairs = [(a, b) for a in minority for b in majority]
    return _cut(ctx, "random-halves", pairs, {"minority": [n.name for n in minority],
                                                "majority": [n.name for n in majority]})


def majority_ring(ctx: FaultContext) -> Fault:
    """Each node sees itself and its two ring neighbours: a majority of 5, but no two the same."""
    nodes = list(ctx.ctrl.nodes)
    ctx.rng.shuffle(nodes)
    n = len(nodes)
    adjacent = {frozenset((nodes[i].name, nodes[(i + 1) % n].name)) for i in range(n)}
    pairs = [(a, b) for a, b in itertools.combinations(nodes, 2) if frozenset((a.name, b.name)) not in adjacent]
    return _cut(ctx, "majority-ring", pairs, {"ring": [x.name for x in nodes]})


def bridge(ctx: FaultContext) -> Fault:
    """Two halves that cannot see each other, and one node that sees both."""
    nodes = list(ctx.ctrl.nodes)
    ctx.rng.shuffle(nodes)
    half = (len(nodes) - 1) // 2
    left, middle, right = nodes[:half], nodes[half], nodes[half + 1 :]
    pairs = [(a, b) for a in left for b in right]
    return _cut(ctx, "bridge", pairs, {"left": [x.name for x in left], "bridge": middle.name,
                                         "right": [x.name for x in right]})


def cut_cp_proxies(ctx: FaultContext) -> Fault:
    pairs = [(p, n) for p in ctx.ctrl.proxies for n in ctx.ctrl.nodes]
    return _cut(ctx, "cut-cp-proxies", pairs, {})


def packet_loss(ctx: FaultContext) -> Fault:
    percent = ctx.rng.choice([20, 30, 40])
    pairs = [(a.addr, b.addr) for a, b in itertools.combinations(ctx.ctrl.nodes, 2)]
    at = time.monotonic()
    ctx.net.loss(pairs, percent)
    return Fault("packet-loss", {"percent": percent, "between": "all CP nodes"}, ctx.net.heal, touches_network=True,
                 injected_at=at)


def change_membership(ctx: FaultContext, action: str, node: Member, timeout: float = 20.0) -> list[str]:
    """Add or remove ``node`` through the admin API of any other live node (followers forward to
    the leader), retrying any refusal (a 409 while the leader's reachability view settles after
    the previous fault, a 503 while leadership moves); returns the member ids it answered with.
    A change that cannot be made within ``timeout`` in a healthy cluster is a finding: it raises."""
    body = {"id": node.name, "raft_addr": f"{node.addr}:{RAFT_PORT}", "admin_url": node.admin_url}
    method, path = ("POST", "/v1/cluster/members") if action == "add" else ("DELETE", f"/v1/cluster/members/{node.name}")
    deadline = time.monotonic() + timeout
    last = "no live node to ask"
    while time.monotonic() < deadline:
        for via in [n for n in ctx.ctrl.nodes if n is not node and n.alive and not n.paused]:
            try:
                status, answer = http_call(via.addr, ADMIN_PORT, method, path, token=ctx.ctrl.admin_token,
                                           body=body if action == "add" else None, timeout=15.0)
            except OSError as exc:
                last = f"{via.name}: {exc}"
                continue
            if status in (200, 201) and isinstance(answer, dict):
                return [m["id"] for m in answer.get("members", [])]
            if action == "remove" and status == 404:  # a retry whose first attempt went through
                return [m for m in ctx.ctrl.member_ids(via) if m != node.name]
            last = f"{via.name}: HTTP {status} {json.dumps(answer)[:300]}"
        time.sleep(0.2)
    raise RuntimeError(f"could not {action} {node.name} within {timeout}s: {last}")


def member_churn(ctx: FaultContext) -> Fault:
    """Remove a node (maybe the leader, which then hands over) from the Raft configuration, stop
    it and wipe its data; at heal add it back and start it empty: it must catch up from a snapshot
    and the log while the workload runs."""
    node = ctx.rng.choice(ctx.ctrl.nodes)
    was_leader = ctx.ctrl.leader() is node
    started = time.monotonic()
    after_remove = change_membership(ctx, "remove", node)
    detail: dict[str, Any] = {"node": node.name, "was_leader": was_leader, "members_after_remove": after_remove,
                              "remove_s": round(time.monotonic() - started, 3)}
    ctx.ctrl.kill(node)
    shutil.rmtree(node.dir / "data", ignore_errors=True)
    restart = _restart(ctx, [node])

    def undo() -> None:
        started = time.monotonic()
        detail["members_after_add"] = change_membership(ctx, "add", node)
        detail["add_s"] = round(time.monotonic() - started, 3)
        restart()

    return Fault("member-churn", detail, undo, injected_at=started)


@dataclass(frozen=True)
class Nemesis:
    name: str
    inject: Callable[[FaultContext], Fault]
    min_nodes: int = 3
    description: str = ""
    fault_seconds: tuple[float, float] = (2.5, 4.0)
    quiet_seconds: tuple[float, float] = (1.5, 3.0)
    choices: tuple[str, ...] = field(default_factory=tuple)  # for "mixed": the faults it draws from


NEMESES: dict[str, Nemesis] = {
    n.name: n
    for n in [
        Nemesis("kill-leader", kill_leader, description="SIGKILL the leader, restart it at heal"),
        Nemesis("kill-random", kill_random, description="SIGKILL a random node, restart it at heal"),
        Nemesis("kill-all", kill_all, description="SIGKILL every CP node at once, restart all at heal"),
        Nemesis("pause-leader", pause_leader, description="SIGSTOP the leader, SIGCONT at heal"),
        Nemesis("isolate-leader", isolate_leader, description="cut the leader from the other CP nodes"),
        Nemesis("random-halves", random_halves, description="cut the CP nodes into a minority and a majority"),
        Nemesis("majority-ring", majority_ring, min_nodes=5,
                description="each node sees only its 2 ring neighbours (5 nodes)"),
        Nemesis("bridge", bridge, min_nodes=5, description="two halves joined by one node (5 nodes)"),
        # Long enough for the proxies' websocket heartbeat (<= 3 s) to notice and go to cached mode.
        Nemesis("cut-cp-proxies", cut_cp_proxies, description="cut every proxy from every CP node",
                fault_seconds=(4.5, 6.0)),
        Nemesis("packet-loss", packet_loss, description="drop 20-40% of packets between CP nodes"),
        Nemesis("member-churn", member_churn,
                description="remove a node from the cluster and wipe it, add it back empty at heal"),
    ]
}
NEMESES["mixed"] = Nemesis(
    "mixed", kill_random, description="a random fault from all of the above, each cycle",
    choices=tuple(NEMESES),
)  # fmt: skip


def _isolate_or_kill_leader(ctx: FaultContext) -> Fault:
    """Isolate the leader, then kill it, alternately (a short run still gets a minority leader)."""
    turn = getattr(ctx, "discovery_turn", 0)
    ctx.discovery_turn = turn + 1  # type: ignore[attr-defined]
    return (isolate_leader if turn % 2 == 0 else kill_leader)(ctx)


# The discovery workload runs with it (chaos/discovery.py, checker chaos/checkers/discovery.py).
NEMESES["discovery"] = Nemesis(
    "discovery", _isolate_or_kill_leader,
    description="isolate, then kill, the leader (alternately) while 50 registered instances heartbeat",
)  # fmt: skip


def applicable(nodes: int) -> list[str]:
    return [name for name, n in NEMESES.items() if nodes >= n.min_nodes]


def pick_fault(nemesis: Nemesis, ctx: FaultContext) -> Callable[[FaultContext], Fault]:
    if not nemesis.choices:
        return nemesis.inject
    options = [NEMESES[c] for c in nemesis.choices if len(ctx.ctrl.nodes) >= NEMESES[c].min_nodes]
    return ctx.rng.choice(options).inject
