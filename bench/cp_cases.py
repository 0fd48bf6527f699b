"""Control-plane cases: a 3-node gwadm cluster beside a 3-member etcd, same machine, same run.

Both clusters run at the same time, every member pinned on core 1, with fsync on (gwadm
``fsync = true``; etcd always fsyncs its WAL). The client is this process, pinned on core 0, the
same small asyncio HTTP/1.1 keep-alive client for both (``bench/client.py``), talking to the
leader: gwadm ``PUT /v1/upstreams/kN`` and ``GET /v1/upstreams/k0`` (the default, linearizable
read), etcd's v3 JSON gateway ``/v3/kv/put`` and ``/v3/kv/range`` with ``serializable: false``.
Rounds alternate the two systems (order rotated each round).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench.client import Conn
from bench.common import Figure, Section, latency_summary, median, percentile, ratio, spread
from bench.etcd import Etcd, EtcdMember
from bench.procs import LOAD_CORE, PROXY_CORE, pin, tree_cpu
from tests.support.cluster import Cluster, NodeProc, upstream_body
from tests.support.http import request, wait_for

NAME = "cp"
TOOLS = ("etcd", "taskset")
SERVER = str(PROXY_CORE)  # the servers' core; the client (this process) runs on LOAD_CORE
# The per-token request rate limit (1000/s by default, cluster/limits.py) is lifted: the writers
# share one admin token and etcd has no such limit, so the figure is the cluster's capacity.
UNLIMITED = "[limits]\ntoken_rate = 1e9\ntoken_burst = 1000000000\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Gwadm:
    name = "gwadm"

    def __init__(self, ctx: Any) -> None:
        (ctx.base / "cp-bench").mkdir()
        self.c = Cluster(ctx.base / "cp-bench", extra_toml=UNLIMITED)
        ctx.started.add(self.c.stop_all)
        self.c.start_all()
        for n in self.c.nodes:
            assert n.proc is not None
            pin(n.proc.pid, SERVER)
        self.leader = self.c.wait_ready()

    def conn(self) -> Conn:
        host, port = self.leader.admin_addr.split(":")
        return Conn(host, int(port), {"Authorization": f"Bearer {self.c.token}"})

    async def write(self, conn: Conn, i: int) -> bool:
        status, _ = await conn.request("PUT", f"/v1/upstreams/k{i % 50}", upstream_body(20000 + i % 1000))
        return status in (200, 201)

    async def read(self, conn: Conn) -> bool:
        status, _ = await conn.request("GET", "/v1/upstreams/k0")
        return status == 200

    def cpu(self) -> float:
        return sum(tree_cpu(n.proc.pid)() for n in self.c.nodes if n.proc is not None)

    # -- failover --
    def agreed_leader(self) -> NodeProc:
        def check() -> NodeProc | None:
            sts = {n.id: self.c.status(n) for n in self.c.nodes}
            leaders = {s.get("leader") for s in sts.values() if s}
            if all(sts.values()) and len(leaders) == 1:
                lid = leaders.pop()
                st = sts.get(lid or "")
                if st and st.get("role") == "leader" and st.get("has_quorum"):
                    return next(n for n in self.c.nodes if n.id == lid)
            return None

        node: NodeProc = wait_for(check, 30, "gwadm leader agreed by all")
        return node

    def failover(self, trial: int) -> float:
        leader = self.agreed_leader()
        time.sleep(0.5)
        self.c.kill(leader)
        t0 = time.monotonic()
        survivors = [n for n in self.c.nodes if n.alive]
        while time.monotonic() - t0 < 30:
            for n in survivors:
                try:
                    r = request("PUT", f"{n.url}/v1/upstreams/fo", token=self.c.token, timeout=1,
                                json_body=upstream_body(1000 + trial), headers={"X-Request-Id": f"fo-{trial}"})  # fmt: skip
                except OSError:
                    continue
                if r.status in (200, 201):
                    elapsed = time.monotonic() - t0
                    self.c.start(leader)
                    assert leader.proc is not None
                    pin(leader.proc.pid, SERVER)
                    self.leader = self.c.wait_ready()
                    return elapsed
            time.sleep(0.02)
        raise RuntimeError("gwadm: no write succeeded within 30 s of the leader kill")


class EtcdSystem:
    name = "etcd"

    def __init__(self, ctx: Any) -> None:
        self.e = Etcd(ctx.base / "etcd")
        ctx.started.add(self.e.stop_all)
        self.e.start_all(SERVER)
        self.leader: EtcdMember = self.e.wait_ready()

    def conn(self) -> Conn:
        return Conn("127.0.0.1", self.leader.client_port)

    async def write(self, conn: Conn, i: int) -> bool:
        value = json.dumps(upstream_body(20000 + i % 1000))
        status, _ = await conn.request("POST", "/v3/kv/put", {"key": b64(f"k{i % 50}"), "value": b64(value)})
        return status == 200

    async def read(self, conn: Conn) -> bool:
        status, _ = await conn.request("POST", "/v3/kv/range", {"key": b64("k0"), "serializable": False})
        return status == 200

    def cpu(self) -> float:
        return sum(tree_cpu(m.proc.pid)() for m in self.e.members if m.proc is not None)

    def failover(self, trial: int) -> float:
        leader = self.e.wait_ready()
        wait_for(lambda: all(self.e.status(m) for m in self.e.members), 30, "every etcd member up")
        time.sleep(0.5)
        self.e.kill(leader)
        t0 = time.monotonic()
        survivors = [m for m in self.e.members if m.alive]
        body = {"key": b64("fo"), "value": b64(json.dumps(upstream_body(1000 + trial)))}
        while time.monotonic() - t0 < 30:
            for m in survivors:
                try:
                    r = request("POST", m.url + "/v3/kv/put", json_body=body, timeout=1)
                except OSError:
                    continue
                if r.status == 200:
                    elapsed = time.monotonic() - t0
                    self.e.start(leader, SERVER)
                    self.leader = self.e.wait_ready()
                    return elapsed
            time.sleep(0.02)
        raise RuntimeError("etcd: no write succeeded within 30 s of the leader kill")


System = Gwadm | EtcdSystem


async def sequential(system: System, n: int, op: str) -> list[float]:
    conn = system.conn()
    out = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            ok = await (system.write(conn, i) if op == "write" else system.read(conn))
            out.append((time.perf_counter() - t0) * 1000)
            if not ok:
                raise RuntimeError(f"{system.name}: {op} failed")
    finally:
        conn.close()
    return out


async def concurrent_writes(system: System, writers: int, seconds: float) -> int:
    end = time.perf_counter() + seconds
    done = 0

    async def one(w: int) -> None:
        nonlocal done
        conn = system.conn()
        i = w * 1_000_000
        try:
            while time.perf_counter() < end:
                if await system.write(conn, i):
                    done += 1
                i += 1
        finally:
            conn.close()

    await asyncio.gather(*(one(w) for w in range(writers)))
    return done


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def interleaved(
    systems: list[System], rounds: int, fn: Callable[[System], dict[str, Any]]
) -> list[dict[str, Any]]:
    runs = []
    for rnd in range(rounds):
        order = systems[rnd % 2 :] + systems[: rnd % 2]
        for system in order:
            cpu0 = system.cpu()
            run = fn(system)
            run.update(target=system.name, round=rnd + 1, server_cpu=system.cpu() - cpu0)
            runs.append(run)
    return runs


def run(ctx: Any) -> list[Section]:
    s = ctx.settings
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LOAD_CORE})
    try:
        return [_run(ctx, s)]
    finally:
        os.sched_setaffinity(0, before)


def _run(ctx: Any, s: dict[str, Any]) -> Section:
    method = (
        f"3-member clusters on loopback, both running, every member pinned on core {PROXY_CORE}, fsync on; the "
        f"client (one asyncio process, the same minimal HTTP/1.1 keep-alive client for both) on core {LOAD_CORE}, "
        "talking to the leader. gwadm: PUT /v1/upstreams/kN, GET /v1/upstreams/k0 (default read: linearizable), "
        "the per-token rate limit lifted (etcd has none); "
        "etcd: POST /v3/kv/put, /v3/kv/range with serializable=false. "
        f"{s['cp_rounds']} interleaved rounds of {s['cp_ops']} sequential writes, then of {s['cp_ops']} reads; "
        f"{s['tput_rounds']} rounds of {s['writers']} concurrent writers for {s['tput_seconds']} s; "
        f"{s['failovers']} failover trials each (SIGKILL the leader, retry a write every 20 ms on the survivors, "
        "time to the first success; the member is restarted between trials). Latency percentiles pool all rounds; "
        "ranges are the per-round values. CPU per write = utime+stime of the 3 members / writes."
    )
    sec = Section("Control plane: gwadm vs etcd (3 members, loopback)", method)
    ctx.log("cp: starting gwadm and etcd clusters")
    systems: list[System] = [Gwadm(ctx), EtcdSystem(ctx)]
    for system in systems:  # warm-up
        asyncio.run(sequential(system, 50, "write"))
        asyncio.run(sequential(system, 20, "read"))

    def latency(op: str) -> Callable[[System], dict[str, Any]]:
        def fn(system: System) -> dict[str, Any]:
            ms = asyncio.run(sequential(system, s["cp_ops"], op))
            return {"op": op, "ms": ms, **latency_summary(ms)}

        return fn

    ctx.log("cp: write latency")
    writes = interleaved(systems, s["cp_rounds"], latency("write"))
    ctx.log("cp: read latency")
    reads = interleaved(systems, s["cp_rounds"], latency("read"))

    def tput(system: System) -> dict[str, Any]:
        c0, t0 = self_cpu(), time.perf_counter()
        n = asyncio.run(concurrent_writes(system, s["writers"], s["tput_seconds"]))
        wall = time.perf_counter() - t0
        return {"op": f"{s['writers']} writers", "writes": n, "ops_per_s": n / wall,
                "client_busy_pct": (self_cpu() - c0) / wall * 100}  # fmt: skip

    ctx.log("cp: concurrent writers")
    throughput = interleaved(systems, s["tput_rounds"], tput)
    ctx.log("cp: failover")
    failovers: list[dict[str, Any]] = []
    for trial in range(s["failovers"]):
        for system in systems if trial % 2 == 0 else systems[::-1]:
            failovers.append({"target": system.name, "op": "failover", "trial": trial + 1,
                              "ms": system.failover(trial) * 1000})  # fmt: skip
            ctx.log(f"  {system.name} failover trial {trial + 1}: {failovers[-1]['ms']:.0f} ms")

    def pooled(runs: list[dict[str, Any]], name: str, p: float) -> tuple[float, tuple[float, float]]:
        mine = [r for r in runs if r["target"] == name]
        all_ms = [x for r in mine for x in r["ms"]]
        return percentile(all_ms, p), spread([percentile(r["ms"], p) for r in mine])

    def fig(title: str, runs: list[dict[str, Any]], p: float, **kw: Any) -> Figure:
        (v, vr), (ref, rr) = pooled(runs, "gwadm", p), pooled(runs, "etcd", p)
        return Figure(title, "ms", v, ref, "etcd", vr, rr, **kw)

    w99, w99r = pooled(writes, "gwadm", 99)
    r99, r99r = pooled(reads, "gwadm", 99)
    tp = {n: [r["ops_per_s"] for r in throughput if r["target"] == n] for n in ("gwadm", "etcd")}
    fo = {n: [r["ms"] for r in failovers if r["target"] == n] for n in ("gwadm", "etcd")}
    cpu = {
        n: sum(r["server_cpu"] for r in writes if r["target"] == n) / max(1, sum(len(r["ms"]) for r in writes if r["target"] == n)) * 1e6
        for n in ("gwadm", "etcd")
    }  # fmt: skip
    sec.figures = [
        fig("write p50 (fsync on)", writes, 50),
        fig("write p99 (fsync on)", writes, 99, target="<= 1.0"),
        fig("linearizable read p50", reads, 50),
        fig("linearizable read p99", reads, 99),
        Figure(
            "read p99 vs our own write p99", "ms", r99, w99, "gwadm write p99", r99r, w99r, target="<= 0.5"
        ),
        Figure(
            f"{s['writers']} concurrent writers: throughput",
            "writes/s",
            median(tp["gwadm"]),
            median(tp["etcd"]),
            "etcd",
            spread(tp["gwadm"]),
            spread(tp["etcd"]),
            target=">= 1.0",
        ),  # fmt: skip
        Figure(
            "failover: leader SIGKILL -> first successful write",
            "ms",
            median(fo["gwadm"]),
            median(fo["etcd"]),
            "etcd",
            spread(fo["gwadm"]),
            spread(fo["etcd"]),
        ),  # fmt: skip
        Figure("CPU per write, 3 members", "us", cpu["gwadm"], cpu["etcd"], "etcd"),
    ]
    for r in writes + reads:
        r.pop("ms")
    sec.runs = writes + reads + throughput + failovers
    busy = {
        n: median([r["client_busy_pct"] for r in throughput if r["target"] == n]) for n in ("gwadm", "etcd")
    }
    sec.notes.append(
        f"client busy during the {s['writers']}-writer runs (% of its core): gwadm {busy['gwadm']:.0f} %, etcd "
        f"{busy['etcd']:.0f} %; near 100 % the client, not the cluster, limited that run. Throughput ratio "
        f"{ratio(median(tp['gwadm']), median(tp['etcd'])):.2f}."
    )
    return sec
