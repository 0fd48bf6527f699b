"""One chaos scenario from start to verdict: cluster up, workload + nemesis for D seconds, heal,
wait for convergence, record the final state, run the checkers, write the report.

Must run inside the private network namespace (``gwadm chaos run`` re-executes itself through
``unshare``; see chaos/net.py). Everything started here is killed in ``finally``.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.checkers import CheckResult, run_all
from chaos.controller import ADMIN_PORT, Controller, Member
from chaos.discovery import start_workloads
from chaos.history import HistoryWriter, read_history
from chaos.nemesis import NEMESES, FaultContext, pick_fault
from chaos.net import Net, ProbeListeners, verify_partition
from chaos.workload import ROUTE, AdminClient, Monitor, ProxyTraffic, http_call

Log = Callable[[str], None]


@dataclass
class RunOptions:
    scenario: str
    seed: int
    duration: float
    nodes: int = 3
    proxies: int = 2
    clients: int = 4
    out: Path = Path("chaos-out")
    proxy_converge_within: float = 5.0
    min_success_rate: float = 0.999
    # Compact the Raft log every few hundred entries (production: 5000 / 300 s), so that snapshots,
    # their installation on lagging followers and truncation after compaction happen in every run
    # (pysyncobj hazard: a follower truncating applied entries after compaction under load).
    raft: dict[str, Any] = field(default_factory=lambda: {"compaction_min_entries": 300,
                                                          "compaction_min_time": 5.0})


class ScenarioError(RuntimeError):
    """The harness itself could not do its job (cluster never came up, partition not as intended)."""


def _admin(ctrl: Controller, node: Member, method: str, path: str, body: Any = None,
           timeout: float = 3.0) -> tuple[int, Any]:
    return http_call(node.addr, ADMIN_PORT, method, path, token=ctrl.admin_token, body=body, timeout=timeout)


def _until(deadline: float, what: str, fn: Callable[[], Any], interval: float = 0.1) -> Any:
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise ScenarioError(f"timed out waiting for {what} (last: {last!r})")


def seed_config(ctrl: Controller, timeout: float = 30.0) -> int:
    """The upstream and route the proxy traffic uses; returns the revision that holds them."""
    up = {"targets": [{"host": ctrl.upstream.addr, "port": 9000}], "retries": 2}
    route = {"paths": [f"/{ROUTE}"], "upstream": "u0"}
    txn = {"ops": [{"op": "put", "kind": "upstreams", "id": "u0", "body": up},
                   {"op": "put", "kind": "routes", "id": ROUTE, "body": route}]}

    def attempt() -> int | None:
        leader = ctrl.leader()
        if leader is None:
            return None
        status, body = _admin(ctrl, leader, "POST", "/v1/txn", txn)
        return int(body["revision"]) if status == 200 and isinstance(body, dict) else None

    revision: int = _until(time.monotonic() + timeout, "the seed config to commit", attempt)
    return revision


def wait_proxies(ctrl: Controller, revision: int, timeout: float) -> None:
    def all_synced() -> bool:
        for p in ctrl.proxies:
            st = ctrl.proxy_status(p)
            if not st or st.get("mode") != "synced" or int(st.get("revision") or 0) < revision:
                return False
        return True

    _until(time.monotonic() + timeout, f"every proxy synced at revision >= {revision}", all_synced)


def committed_state(ctrl: Controller, timeout: float = 30.0) -> tuple[int, str]:
    """(revision, hash) from a linearizable export on the leader, once the cluster is quiet: the
    export is repeated until two in a row agree and every node has applied it (a write whose reply
    was lost may still commit late, while a node retries it)."""

    def attempt() -> tuple[int, str] | None:
        leader = ctrl.leader()
        if leader is None:
            return None
        status, body = _admin(ctrl, leader, "GET", "/v1/config")
        if status != 200 or not isinstance(body, dict):
            return None
        first = (int(body["revision"]), str(body["hash"]))
        for node in ctrl.nodes:
            st = ctrl.node_status(node, timeout=1.0)
            if not st or (st.get("revision"), st.get("hash")) != first:
                return None
        status, body = _admin(ctrl, leader, "GET", "/v1/config")
        if status != 200 or (int(body["revision"]), str(body["hash"])) != first:
            return None
        return first

    result: tuple[int, str] = _until(time.monotonic() + timeout, "all CP nodes to converge", attempt, 0.2)
    return result


def node_final(ctrl: Controller, node: Member) -> dict[str, Any]:
    st = ctrl.node_status(node, timeout=2.0) or {}
    present: list[str] | None = None
    try:
        status, body = _admin(ctrl, node, "GET", "/v1/consumers?consistency=stale", timeout=5.0)
        if status == 200 and isinstance(body, dict):
            present = sorted(str(item["id"]) for item in body.get("items", []) if str(item["id"]).startswith("a-"))
    except OSError:
        present = None
    return {"revision": st.get("revision"), "hash": st.get("hash"), "present": present}


def scan_logs(ctrl: Controller) -> CheckResult:
    """Crashes and alarms the checkers cannot see: members that died on their own, pysyncobj
    CRITICAL lines (e.g. truncating applied entries) and tracebacks in any member's log."""
    problems: list[str] = [f"{name} exited on its own" for name in ctrl.dead_members()]
    lines = 0
    for m in ctrl.members:
        path = m.dir / "process.log"
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            lines += 1
            if "CRITICAL" in line or line.startswith("Traceback"):
                problems.append(f"{m.name} log line {n}: {line.strip()[:200]}")
    return CheckResult(name="processes", ok=not problems, figures={"log_lines": lines}, problems=problems[:20])


def run_scenario(opts: RunOptions, log: Log = print, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run one scenario; returns the report (also written to ``opts.out/report.json``)."""
    from chaos.report import build_report, write_report, write_timeline

    nemesis = NEMESES[opts.scenario]
    if opts.nodes < nemesis.min_nodes:
        raise ScenarioError(f"{opts.scenario} needs at least {nemesis.min_nodes} CP nodes")
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    # A run again into the same directory starts from nothing: the members of the last run would
    # boot from its Raft data and append to its logs, whose old tracebacks the processes checker
    # would then blame on this run.
    shutil.rmtree(out / "members", ignore_errors=True)
    rng = random.Random(opts.seed)
    ctrl = Controller(out / "members", opts.nodes, opts.proxies, raft=opts.raft)
    net = Net()
    net.heal()
    addresses = [m.addr for m in [*ctrl.nodes, *ctrl.proxies]]
    listeners = ProbeListeners(addresses)
    history_path = out / "history.jsonl"
    history_path.unlink(missing_ok=True)
    stop_clients, stop_background = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    started_at = time.time()
    try:
        verify_partition(net, addresses)  # the healthy network: nothing blocked
        ctrl.start_all()
        revision = seed_config(ctrl)
        wait_proxies(ctrl, revision, 30.0)
        log(f"[{opts.scenario}] cluster up: {opts.nodes} nodes, {opts.proxies} proxies, seed {opts.seed}")
        run_start = time.monotonic()

        def clock() -> float:
            return time.monotonic() - run_start

        with HistoryWriter(history_path, clock=clock) as history:
            record = history.record
            background: list[threading.Thread] = [Monitor(ctrl, record, stop_background)]
            background += [ProxyTraffic(p, record, stop_background) for p in ctrl.proxies]
            clients = [AdminClient(i, ctrl, record, opts.seed, stop_clients) for i in range(opts.clients)]
            threads = [*background, *clients]
            for t in threads:
                t.start()
            extra = start_workloads(opts.scenario, ctrl, record, stop_background, opts.seed, opts.duration, clock)
            ctx = FaultContext(ctrl, net, rng, addresses, log)
            t0 = time.monotonic()
            end = t0 + opts.duration
            heal_time = 0.0
            first = True
            while time.monotonic() < end:
                quiet = 1.0 if first else rng.uniform(*nemesis.quiet_seconds)
                first = False
                time.sleep(max(0.0, min(quiet, end - time.monotonic())))
                if progress:
                    progress(min(1.0, (time.monotonic() - t0) / opts.duration))
                if time.monotonic() >= end:
                    break
                injected_at = clock()
                fault = pick_fault(nemesis, ctx)(ctx)
                if fault.injected_at is not None:
                    injected_at = fault.injected_at - run_start
                record("nemesis", phase="start", fault=fault.name, detail=fault.detail, injected_at=injected_at)
                log(f"[{opts.scenario}] +{time.monotonic() - t0:5.1f}s start {fault.name} {json.dumps(fault.detail)}")
                time.sleep(rng.uniform(*nemesis.fault_seconds))
                fault.undo()
                if fault.touches_network:
                    verify_partition(net, addresses)
                record("nemesis", phase="heal", fault=fault.name, detail=fault.detail)
                heal_time = clock()
                log(f"[{opts.scenario}] +{time.monotonic() - t0:5.1f}s heal  {fault.name}")
                if progress:
                    progress(min(1.0, (time.monotonic() - t0) / opts.duration))
            stop_clients.set()
            for c in clients:
                c.join(15)
            for w in extra:  # the discovery workload: its last expiries commit first, and count as writes
                heal_time = max(heal_time, w.drain())
            committed_revision, committed_hash = committed_state(ctrl)
            nodes = {n.name: node_final(ctrl, n) for n in ctrl.nodes}
            # Keep sampling until every proxy shows the committed revision (the checker measures
            # how long it took from the heal), or the bound plus a margin has passed.
            deadline = time.monotonic() + opts.proxy_converge_within + 10.0
            while time.monotonic() < deadline:
                sts = [ctrl.proxy_status(p) for p in ctrl.proxies]
                if all(st and st.get("revision") == committed_revision for st in sts):
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            record("final", heal_time=heal_time, nodes=nodes, committed_revision=committed_revision,
                   committed_hash=committed_hash)
            stop_background.set()
            for t in background:
                t.join(10)
            for w in extra:
                w.join(10)
        events = read_history(history_path)
        results = run_all(events, proxy_converge_within=opts.proxy_converge_within,
                          min_success_rate=opts.min_success_rate, scenario=opts.scenario)
        results.append(scan_logs(ctrl))
    finally:
        stop_clients.set()
        stop_background.set()
        ctrl.close()
        listeners.close()
        net.heal()
    meta = {"scenario": opts.scenario, "seed": opts.seed, "nodes": opts.nodes, "proxies": opts.proxies,
            "clients": opts.clients, "duration": opts.duration, "started_at": started_at,
            "elapsed": round(time.time() - started_at, 1)}
    report = build_report(meta, events, results)
    write_report(out / "report.json", report)
    write_timeline(out / "timeline.png", events)
    return report
