"""CPU per write of a 3-node gwadm cluster, for A/B work on the control plane (not part of ``make bench``).

The servers are pinned on core 1 (the bench's SERVER core), this client on core 0; fsync on.
``WRITERS`` asyncio writers (default 32; 1 = the bench's sequential phase) PUT ``/v1/upstreams/kN``
to the leader for ``SECONDS`` after a 1 s warm-up (``--prefill N`` writes first: a steady state
with full audit and dedupe tables). Optionally py-spy samples the leader or a follower meanwhile::

    python -m bench.cp_cpu 5 [--writers 32] [--prefill 0] [--threads] [--profile leader|follower --out raw.txt]

Prints writes, writes/s, the cluster's CPU per write and its split (leader, mean follower), and
the load average: on a shared machine run two checkouts alternately and compare medians.
``--threads`` adds each member's split by thread (``loop``: the asyncio thread, HTTP and the
handlers; ``tick``: pysyncobj's thread, Raft and the state machine's apply), from the kernel's
per-thread run time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client import Conn
from bench.common import parse_proc_stat
from bench.cp_cases import UNLIMITED
from bench.procs import LOAD_CORE, PROXY_CORE, TICK, pin, tree_cpu
from tests.support.cluster import Cluster, NodeProc, upstream_body

PY_SPY = Path(sys.executable).parent / "py-spy"  # installed beside the venv's python


async def write_for(leader: NodeProc, token: str, writers: int, seconds: float) -> tuple[int, int]:
    host, port = leader.admin_addr.split(":")
    end = time.perf_counter() + seconds
    done = failed = 0

    async def one(w: int) -> None:
        nonlocal done, failed
        conn = Conn(host, int(port), {"Authorization": f"Bearer {token}"})
        i = w * 1_000_000
        try:
            while time.perf_counter() < end:
                status, _ = await conn.request("PUT", f"/v1/upstreams/k{i % 50}", upstream_body(20000 + i % 1000))
                if status in (200, 201):
                    done += 1
                else:
                    failed += 1
                i += 1
        finally:
            conn.close()

    await asyncio.gather(*(one(w) for w in range(writers)))
    return done, failed


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (utime + stime), by thread id."""
    times: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                times[int(tid)] = parse_proc_stat(f.read(), TICK)
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return times


def thread_split(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds between two ``thread_cpu`` readings: ``loop`` (the main thread: asyncio), ``tick``
    (the busiest other thread: pysyncobj's), ``other`` (the rest)."""
    used = {tid: t - before.get(tid, 0.0) for tid, t in after.items()}
    loop = used.pop(pid, 0.0)
    rest = sorted(used.values(), reverse=True)
    return {"loop": loop, "tick": rest[0] if rest else 0.0, "other": sum(rest[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", type=float)
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--prefill", type=int, default=0)
    ap.add_argument("--profile", choices=("leader", "follower"))
    ap.add_argument("--out", default="py-spy.txt")
    ap.add_argument("--threads", action="store_true")
    args = ap.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    c = Cluster(Path(tempfile.mkdtemp(prefix="cp-cpu-")), extra_toml=UNLIMITED)
    c.start_all()
    try:
        for n in c.nodes:
            assert n.proc is not None
            pin(n.proc.pid, str(PROXY_CORE))
        leader = c.wait_ready()
        asyncio.run(write_for(leader, c.token, args.writers, 1.0))  # warm-up
        filled = 0
        while filled < args.prefill:
            filled += asyncio.run(write_for(leader, c.token, args.writers, 2.0))[0]
        meters = {n.id: tree_cpu(n.proc.pid) for n in c.nodes if n.proc is not None}
        before = {k: m() for k, m in meters.items()}
        threads_before = {n.id: thread_cpu(n.proc.pid) for n in c.nodes if n.proc is not None}
        spy = None
        if args.profile:
            target = leader if args.profile == "leader" else next(n for n in c.nodes if n is not leader)
            assert target.proc is not None
            spy = subprocess.Popen([str(PY_SPY), "record", "--gil", "-r", "300", "-d", str(int(args.seconds)),
                                    "-f", "raw", "-o", args.out, "-p", str(target.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        t0 = time.perf_counter()
        done, failed = asyncio.run(write_for(leader, c.token, args.writers, args.seconds))
        wall = time.perf_counter() - t0
        used = {k: m() - before[k] for k, m in meters.items()}
        threads_used = {n.id: thread_cpu(n.proc.pid) for n in c.nodes if n.proc is not None}
        if spy is not None:
            spy.wait(30)
        total = sum(used.values())
        lead = used[leader.id]
        per = 1000 / max(done, 1)
        print(f"writes={done} failed={failed} rate={done / wall:.0f}/s cpu/write={total * per:.2f}ms "
              f"leader={lead * per:.2f}ms follower={(total - lead) / 2 * per:.2f}ms "
              f"load={os.getloadavg()[0]:.2f}")  # fmt: skip
        if args.threads:
            for n in c.nodes:
                assert n.proc is not None
                role = "leader" if n is leader else "follower"
                split = thread_split(n.proc.pid, threads_before[n.id], threads_used[n.id])
                shown = " ".join(f"{k}={v * per * 1000:.0f}us" for k, v in split.items())
                print(f"  {n.id} {role}: {shown} per write")
    finally:
        c.stop_all()


if __name__ == "__main__":
    main()
