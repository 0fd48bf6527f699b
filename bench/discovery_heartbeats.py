"""Discovery benchmark: what heartbeats cost. N instances heartbeat every P seconds (default 1,000
every 5 s = 200/s) against a real 3-node cluster (fsync on):

  * idle:      registrations present, no heartbeats (the baseline)
  * leader:    every heartbeat goes to the leader
  * spread:    heartbeats spread over all nodes (followers batch them to the leader)

For each phase: leader and follower CPU (% of one core, from /proc/PID/stat), Raft log entries
per second on the leader (commit_index delta), config revisions (should stay 0: a heartbeat is not
a config change), heartbeats answered per second and their client-side latency.

Usage: python bench/discovery_heartbeats.py [--instances 1000] [--period 5] [--seconds 30] [--json]
This is a benchmark, not a test: it prints figures and never asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import Cluster, NodeProc, upstream_body  # noqa: E402
from tests.support.http import request  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def status(node: NodeProc, token: str) -> dict[str, Any]:
    data: dict[str, Any] = request("GET", f"{node.url}/v1/status", token=token, timeout=5).json()
    return data


class Load:
    """Heartbeats for ``ports`` in ``threads`` threads, each instance every ``period`` seconds."""

    def __init__(self, c: Cluster, nodes: list[NodeProc], ports: list[int], period: float, threads: int = 8) -> None:
        self.c, self.nodes, self.ports, self.period = c, nodes, ports, period
        self.stop = threading.Event()
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(ports[i::threads], i), daemon=True)
                        for i in range(threads)]

    def run(self, ports: list[int], offset: int) -> None:
        t0 = time.monotonic()
        n = len(ports)
        k = 0
        while not self.stop.is_set():
            i = k % n
            due = t0 + (k // n) * self.period + self.period * i / n
            pause = due - time.monotonic()
            if pause > 0 and self.stop.wait(pause):
                return
            node = self.nodes[(k + offset) % len(self.nodes)]
            started = time.perf_counter()
            try:
                r = request("POST", f"{node.url}/v1/upstreams/svc/targets/127.0.0.1:{ports[i]}/heartbeat",
                            token=self.c.token, timeout=5)
                good = r.status == 200
            except OSError:
                good = False
            elapsed = (time.perf_counter() - started) * 1000
            with self.lock:
                if good:
                    self.ok += 1
                    self.latencies.append(elapsed)
                else:
                    self.errors += 1
            k += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def measure(c: Cluster, leader: NodeProc, seconds: float, load: Load | None) -> dict[str, Any]:
    procs = {n.id: n.proc.pid for n in c.nodes if n.proc is not None}
    before_cpu = {nid: cpu_seconds(pid) for nid, pid in procs.items()}
    before = status(leader, c.token)
    t0 = time.monotonic()
    ok0 = load.ok if load else 0
    time.sleep(seconds)
    wall = time.monotonic() - t0
    after = status(leader, c.token)
    cpu = {nid: round(100 * (cpu_seconds(pid) - before_cpu[nid]) / wall, 1) for nid, pid in procs.items()}
    out: dict[str, Any] = {
        "leader": leader.id,
        "leader_cpu_pct": cpu[leader.id],
        "follower_cpu_pct": {nid: v for nid, v in cpu.items() if nid != leader.id},
        "raft_entries_per_s": round((after["commit_index"] - before["commit_index"]) / wall, 2),
        "revisions": after["revision"] - before["revision"],
    }
    if load is not None:
        with load.lock:
            lat = list(load.latencies)
            out["heartbeats_per_s"] = round((load.ok - ok0) / wall, 1)
            out["errors"] = load.errors
        if lat:
            lat.sort()
            out["latency_ms"] = {"p50": round(statistics.median(lat), 2), "p99": round(lat[int(0.99 * (len(lat) - 1))], 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--period", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gwadm-bench-disco-") as tmp:
        c = Cluster(Path(tmp))
        c.start_all()
        try:
            c.wait_ready()
            leader = c.wait_leader()
            assert c.api(leader, "PUT", "/v1/upstreams/svc", upstream_body(9001)).status == 201
            ports = list(range(20000, 20000 + args.instances))
            ttl = 600.0  # long: registering 1,000 takes a while, and the TTL does not change the cost
            for port in ports:
                r = c.api(leader, "PUT", f"/v1/upstreams/svc/targets/127.0.0.1:{port}", {"ttl": ttl})
                if r.status not in (200, 201):
                    raise SystemExit(f"registration failed: {r}")
            results: dict[str, Any] = {"instances": args.instances, "period_s": args.period,
                                       "offered_per_s": round(args.instances / args.period, 1), "ttl_s": ttl}
            results["idle"] = measure(c, leader, args.seconds, None)
            with Load(c, [leader], ports, args.period) as load:
                time.sleep(1.0)
                results["leader"] = measure(c, leader, args.seconds, load)
            with Load(c, [n for n in c.nodes], ports, args.period) as load:
                time.sleep(1.0)
                results["spread"] = measure(c, leader, args.seconds, load)
            regs = c.api(leader, "GET", "/v1/upstreams/svc/targets").json()["registered"]
            results["still_registered"] = len(regs)
        finally:
            c.stop_all()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.instances} instances, one heartbeat each every {args.period:g} s "
          f"(offered {results['offered_per_s']}/s), 3 nodes, fsync on")
    for phase in ("idle", "leader", "spread"):
        r = results[phase]
        line = (f"  {phase:7s} leader {r['leader_cpu_pct']:5.1f}% CPU  followers {r['follower_cpu_pct']}  "
                f"raft entries/s {r['raft_entries_per_s']}  revisions {r['revisions']}")
        if "heartbeats_per_s" in r:
            line += f"  answered {r['heartbeats_per_s']}/s errors {r['errors']} latency {r.get('latency_ms')}"
        print(line)
    print(f"  still registered at the end: {results['still_registered']}")


if __name__ == "__main__":
    main()
