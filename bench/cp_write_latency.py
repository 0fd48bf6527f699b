"""Control-plane benchmark: write latency through the leader and a follower, and leader failover.

Starts a real 3-node cluster (fsync on) on loopback, then:
  * N sequential PUTs through the leader and N through a follower -> p50/p99/max (ms)
  * T trials of: SIGKILL the leader, time until the first successful write through a survivor
    (client retries every 20 ms with the same request id), restart the killed node.

Usage: python bench/cp_write_latency.py [--writes 1000] [--trials 10] [--no-fsync] [--json]
This is a benchmark, not a test: it prints figures and never asserts on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import Cluster, NodeProc, upstream_body  # noqa: E402
from tests.support.http import request  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed_writes(c: Cluster, node: NodeProc, n: int, prefix: str) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = request("PUT", f"{node.url}/v1/upstreams/{prefix}{i % 50}", token=c.token,
                    json_body=upstream_body(20000 + i % 1000))
        out.append((time.perf_counter() - t0) * 1000)
        if r.status not in (200, 201):
            raise SystemExit(f"write failed: {r}")
    return out


def agreed_leader(c: Cluster) -> NodeProc:
    """Wait until every node is up, reports the same leader, and that leader says it leads."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = {n.id: c.status(n) for n in c.nodes}
        leaders = {s.get("leader") for s in statuses.values() if s}
        if all(statuses.values()) and len(leaders) == 1:
            lid = leaders.pop()
            node = next((n for n in c.nodes if n.id == lid), None)
            st = statuses.get(lid or "")
            if node is not None and st and st["role"] == "leader" and st["has_quorum"]:
                return node
        time.sleep(0.05)
    raise SystemExit("cluster did not agree on a leader within 30 s")


def failover_trial(c: Cluster, trial: int) -> float:
    c.wait_ready()
    leader = agreed_leader(c)
    time.sleep(0.5)  # let heartbeats settle so every trial starts from a steady cluster
    c.kill(leader)
    t0 = time.monotonic()
    rid = f"failover-{trial}"
    while True:
        for node in c.nodes:
            if not node.alive:
                continue
            try:
                r = request("PUT", f"{node.url}/v1/upstreams/fo", token=c.token, json_body=upstream_body(1000 + trial),
                            headers={"X-Request-Id": rid}, timeout=2)
            except OSError:
                continue
            if r.status in (200, 201):
                elapsed = time.monotonic() - t0
                c.start(leader)
                return elapsed
        time.sleep(0.02)
        if time.monotonic() - t0 > 30:
            raise SystemExit("no write succeeded within 30 s of the leader kill")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 50), 2), "p99": round(pct(values, 99), 2), "max": round(max(values), 2),
            "mean": round(statistics.fmean(values), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), fsync=not args.no_fsync)
        c.start_all()
        try:
            leader = c.wait_ready()
            follower = next(n for n in c.nodes if n is not leader)
            timed_writes(c, leader, 50, "warm")
            via_leader = timed_writes(c, leader, args.writes, "l")
            via_follower = timed_writes(c, follower, args.writes, "f")
            failovers = [failover_trial(c, t) * 1000 for t in range(args.trials)]
        finally:
            c.stop_all()
    result = {
        "fsync": not args.no_fsync,
        "writes": args.writes,
        "write_ms_via_leader": summary(via_leader),
        "write_ms_via_follower": summary(via_follower),
        "failover_ms": {**summary(failovers), "trials": [round(v) for v in failovers]},
        "targets": {"write_p99_ms": 15, "failover_p99_ms": 1000},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"fsync={'on' if result['fsync'] else 'off'}  writes={args.writes}")
    for key in ("write_ms_via_leader", "write_ms_via_follower", "failover_ms"):
        s = result[key]
        print(f"{key:24s} p50={s['p50']:8.2f}  p99={s['p99']:8.2f}  max={s['max']:8.2f}")
    print(f"failover trials (ms): {result['failover_ms']['trials']}")


if __name__ == "__main__":
    main()
