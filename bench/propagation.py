"""Config propagation benchmark: one-route changes on a 10k-route config, CP commit -> whole fleet.

Starts real processes on loopback (the test harness classes): a 3-node control plane (fsync on),
one demo upstream and P proxies (default 10). Loads 1 upstream + R routes (default 10,000) in
transactions of ~1000 ops, waits until every proxy serves that revision, then makes N (default 200)
sequential one-route changes (PUT /v1/routes/{id}). For each change it measures the time from the
moment the PUT returned (the change is committed) until ALL proxies serve the new revision.

How "serves the new revision" is observed (--observe):
  log   (default) no request is sent to the proxies: the benchmark tails each proxy's log for the
        line the sync client writes right after swapping the runtime ("installed config revision
        N"), and uses that line's timestamp (the proxy's own wall clock, same machine, 1 ms
        resolution). This is the proxy's own applied time, with no observer load on it.
  poll  every proxy's /status is polled concurrently (asyncio + aiohttp, one keep-alive connection
        per proxy, --poll-interval between polls of one proxy, a proxy is no longer polled once it
        has the revision); the figure is when the poll saw it. The log timestamps are reported too.
Both timestamps can precede the PUT's return: the leader pushes as soon as it applies, while the
HTTP answer is still on its way. Such values are reported as they are (<= 0 ms).

"One-route change applied": the proxies' own histogram gwadm_proxy_config_apply_duration_seconds
(status port /metrics; it times build + swap of one frame in the sync client) is scraped before and
after the changes; the report gives the mean (_sum/_count deltas) and a p99 interpolated in the
bucket deltas, over all proxies. Then, in this process and uncontended, the same work is timed on a
R-route state: build_runtime() of the full snapshot, and SyncClient._prepare_delta() for a one-route
delta (what the proxy runs per delta frame), with its steps broken down.

Usage: python bench/propagation.py [--changes 200] [--routes 10000] [--proxies 10]
                                   [--observe log|poll] [--poll-interval 0.001] [--json]
This is a benchmark, not a test: it prints figures and never asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.cluster import Cluster, NodeProc  # noqa: E402
from tests.support.dataplane import DataPlaneEnv, ProxyProc  # noqa: E402

APPLY_METRIC = "gwadm_proxy_config_apply_duration_seconds"
INSTALLED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ gwadm\.proxy\.sync: installed config revision (\d+)\s*$"
)
TARGETS = {"propagation_p99_ms": 50, "one_route_apply_ms": 10}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": round(pct(values, 50), 2), "p99": round(pct(values, 99), 2), "max": round(max(values), 2),
            "mean": round(statistics.fmean(values), 2), "n": len(values)}


def route_body(i: int, version: int = 0) -> dict[str, Any]:
    path = f"/svc/{i:05d}" if version == 0 else f"/svc/{i:05d}/v{version}"
    return {"paths": [path], "upstream": "u1"}


# ---- CPU accounting (to tell other load on the machine apart) --------------------------------------


def machine_busy_seconds() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat, idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def our_cpu(env: DataPlaneEnv) -> float:
    procs = [n.proc for n in env.cluster.nodes] + [p.proc for p in env.proxies]
    procs += [u.proc for u in env.upstreams.values()]
    t = os.times()
    return sum(process_cpu(p.pid) for p in procs if p is not None) + t.user + t.system


def background_busy_pct(seconds: float = 1.0) -> float:
    """How busy the machine is before we start anything, in % of all cores."""
    b0, t0 = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return round((machine_busy_seconds() - b0) / (time.monotonic() - t0) / (os.cpu_count() or 1) * 100, 1)


# ---- observing the proxies ------------------------------------------------------------------------


class LogTail:
    """Incremental reader of one proxy's log: revision -> wall time of "installed config revision"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.installed: dict[int, float] = {}
        self.max_revision = 0

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            m = INSTALLED.match(raw.decode(errors="replace"))
            if m:
                stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
                rev = int(m.group(3))
                self.installed.setdefault(rev, stamp)
                self.max_revision = max(self.max_revision, rev)

    def applied_at(self, revision: int) -> float | None:
        """Wall time of the first install of ``revision`` or later (a coalesced delta covers it)."""
        times = [t for r, t in self.installed.items() if r >= revision]
        return min(times) if times else None


async def wait_logs(tails: list[LogTail], revision: int, timeout: float, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for t in tails:
            if t.max_revision < revision:
                t.read()
        if all(t.max_revision >= revision for t in tails):
            return
        if time.monotonic() > deadline:
            behind = [t.path.parent.name for t in tails if t.max_revision < revision]
            raise SystemExit(f"proxies {behind} did not install revision {revision} within {timeout} s")
        await asyncio.sleep(interval)


async def poll_until(
    http: aiohttp.ClientSession, proxies: list[ProxyProc], revision: int, timeout: float, interval: float
) -> list[float]:
    """Poll every proxy's /status concurrently; wall time at which each one reported ``revision``."""
    deadline = time.monotonic() + timeout

    async def one(p: ProxyProc) -> float:
        url = p.status_url + "/status"
        while True:
            async with http.get(url) as r:
                st = await r.json()
            if st["revision"] >= revision:
                return time.time()
            if time.monotonic() > deadline:
                raise SystemExit(f"proxy {p.id} still at revision {st['revision']} < {revision} after {timeout} s")
            await asyncio.sleep(interval)

    return list(await asyncio.gather(*(one(p) for p in proxies)))


async def scrape_apply(http: aiohttp.ClientSession, proxies: list[ProxyProc]) -> list[dict[str, Any]]:
    """Per proxy: {"sum", "count", "buckets": {le: cumulative count}} of the apply-duration histogram."""

    async def one(p: ProxyProc) -> dict[str, Any]:
        async with http.get(p.status_url + "/metrics") as r:
            text = await r.text()
        out: dict[str, Any] = {"sum": 0.0, "count": 0.0, "buckets": {}}
        for fam in text_string_to_metric_families(text):
            if fam.name != APPLY_METRIC:
                continue
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    out["buckets"][float(s.labels["le"])] = s.value
                elif s.name.endswith("_sum"):
                    out["sum"] = s.value
                elif s.name.endswith("_count"):
                    out["count"] = s.value
        return out

    return list(await asyncio.gather(*(one(p) for p in proxies)))


def histogram_delta(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply-duration figures over the run: mean from _sum/_count, p50/p99 interpolated in buckets."""
    total_sum = sum(a["sum"] - b["sum"] for a, b in zip(after, before, strict=True))
    total_count = sum(a["count"] - b["count"] for a, b in zip(after, before, strict=True))
    buckets: dict[float, float] = {}
    for a, b in zip(after, before, strict=True):
        for le, v in a["buckets"].items():
            buckets[le] = buckets.get(le, 0.0) + v - b["buckets"].get(le, 0.0)
    per_proxy = [
        round((a["sum"] - b["sum"]) / (a["count"] - b["count"]) * 1000, 2) if a["count"] > b["count"] else None
        for a, b in zip(after, before, strict=True)
    ]

    def quantile(q: float) -> float | None:
        """As Prometheus histogram_quantile: linear inside the bucket holding the q-th observation."""
        if total_count <= 0:
            return None
        rank, lower, below = q * total_count, 0.0, 0.0
        for le in sorted(buckets):
            if buckets[le] >= rank:
                if le == float("inf"):
                    return lower * 1000
                width = buckets[le] - below
                return (lower + (le - lower) * ((rank - below) / width if width else 1.0)) * 1000
            lower, below = le, buckets[le]
        return None

    def bucket_bound(q: float) -> float | None:
        rank = q * total_count
        return next((le * 1000 for le in sorted(buckets) if buckets[le] >= rank), None) if total_count else None

    return {
        "observations": int(total_count),
        "mean_ms": round(total_sum / total_count * 1000, 2) if total_count else None,
        "p50_ms": round(v, 2) if (v := quantile(0.5)) is not None else None,
        "p99_ms": round(v, 2) if (v := quantile(0.99)) is not None else None,
        "p99_bucket_upper_bound_ms": bucket_bound(0.99),
        "mean_ms_per_proxy": per_proxy,
    }


# ---- the run --------------------------------------------------------------------------------------


def load_config(c: Cluster, node: NodeProc, upstream_port: int, routes: int, txn_size: int) -> int:
    r = c.api(node, "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": upstream_port}]})
    if r.status not in (200, 201):
        raise SystemExit(f"upstream PUT failed: {r}")
    revision = int(r.json()["revision"])
    for start in range(0, routes, txn_size):
        ops = [{"op": "put", "kind": "routes", "id": f"r{i:05d}", "body": route_body(i)}
               for i in range(start, min(routes, start + txn_size))]
        r = c.api(node, "POST", "/v1/txn", {"ops": ops}, timeout=60)
        if r.status != 200:
            raise SystemExit(f"txn of {len(ops)} routes failed: {r}")
        revision = int(r.json()["revision"])
    return revision


async def measure(env: DataPlaneEnv, leader: NodeProc, args: argparse.Namespace) -> dict[str, Any]:
    c = env.cluster
    tails = [LogTail(p.log_path) for p in env.proxies]
    for t in tails:
        t.read()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        put_ms: list[float] = []
        from_return: list[float] = []  # all proxies applied (log or poll), since PUT returned
        from_sent: list[float] = []
        log_from_return: list[float] = []  # log timestamps, whatever the observe mode
        per_proxy_log: list[float] = []  # every proxy's own delay (log), since PUT returned
        before = None
        for i in range(args.warmup + args.changes):
            if i == args.warmup:
                before = await scrape_apply(http, env.proxies)
                busy0, ours0, wall0 = machine_busy_seconds(), our_cpu(env), time.monotonic()
            rid = (i * 7919) % args.routes  # spread over the table, never the same route twice in a row
            body = route_body(rid, version=i + 1)
            t_sent = time.time()
            r = c.api(leader, "PUT", f"/v1/routes/r{rid:05d}", body)
            t_ret = time.time()
            if r.status not in (200, 201):
                raise SystemExit(f"PUT failed: {r}")
            revision = int(r.json()["revision"])
            if args.observe == "poll":
                seen = await poll_until(http, env.proxies, revision, args.timeout, args.poll_interval)
                await wait_logs(tails, revision, args.timeout)
                done = max(seen)
            else:
                await wait_logs(tails, revision, args.timeout)
            applied = [t.applied_at(revision) for t in tails]
            assert all(a is not None for a in applied)
            log_done = max(a for a in applied if a is not None)
            if args.observe == "log":
                done = log_done
            if i < args.warmup:
                continue
            put_ms.append((t_ret - t_sent) * 1000)
            from_return.append((done - t_ret) * 1000)
            from_sent.append((done - t_sent) * 1000)
            log_from_return.append((log_done - t_ret) * 1000)
            per_proxy_log.extend((a - t_ret) * 1000 for a in applied if a is not None)
        assert before is not None
        busy, ours, wall = machine_busy_seconds() - busy0, our_cpu(env) - ours0, time.monotonic() - wall0
        after = await scrape_apply(http, env.proxies)
    return {
        "put_ms": summary(put_ms),
        "all_proxies_ms_since_put_returned": summary(from_return),
        "all_proxies_ms_since_put_sent": summary(from_sent),
        "all_proxies_ms_since_put_returned_log": summary(log_from_return),
        "each_proxy_ms_since_put_returned_log": summary(per_proxy_log),
        "apply_histogram": histogram_delta(before, after),
        "measured_seconds": round(wall, 1),
        "machine_busy_pct": round(busy / wall / (os.cpu_count() or 1) * 100, 1),
        # Busy time not charged to any process of this benchmark: other jobs on the machine, and
        # kernel work not accounted to a task. In % of all cores.
        "foreign_busy_pct": round(max(0.0, busy - ours) / wall / (os.cpu_count() or 1) * 100, 1),
    }


def fleet_check(c: Cluster, expected: int) -> dict[str, Any]:
    """The fleet registry (GET /v1/proxies) after the run; waits up to 5 s for the last acks, which
    follow the install and the cache write. Every node is asked and entries are merged by proxy id,
    which is right whether a node lists the whole fleet or only the proxies streaming from it."""
    deadline = time.monotonic() + 5
    while True:
        fleet: dict[str, dict[str, Any]] = {}
        for node in c.nodes:
            r = c.api(node, "GET", "/v1/proxies")
            if r.status == 200:
                fleet.update((str(e.get("id")), e) for e in r.json()["items"] if e.get("connected"))
        items = list(fleet.values())
        if sum(1 for e in items if e.get("lag") == 0) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {"connected_proxies": len(items), "lag0": sum(1 for e in items if e.get("lag") == 0),
            "revisions": sorted({int(e.get("revision") or 0) for e in items}),
            "streaming_from": {n: sum(1 for e in items if str(e.get("node")) == n)
                               for n in sorted({str(e.get("node")) for e in items})}}


# ---- in-process ------------------------------------------------------------------------------------


def in_process(routes: int, repeats: int) -> dict[str, Any]:
    """build_runtime of the full snapshot vs. the proxy's per-delta path for a one-route change."""
    from gateway.codec import encode_packed_state
    from gateway.delta import apply_delta
    from gateway.model import Op, Txn
    from gateway.state import ConfigState
    from proxy.runtime import build_runtime, update_runtime
    from proxy.server import DataPlane
    from proxy.sync import SyncClient

    state = ConfigState.empty()
    state, _ = state.apply(Txn("u", (Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 9}]}),)))
    for start in range(0, routes, 1000):
        ops = tuple(Op("put", "routes", f"r{i:05d}", route_body(i)) for i in range(start, min(routes, start + 1000)))
        state, _ = state.apply(Txn(f"t{start}", ops))
    state.hash()
    snapshot = state.to_snapshot()

    full: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        build_runtime(snapshot, revision=state.revision, hash=state.hash())
        full.append((time.perf_counter() - t0) * 1000)

    dp = DataPlane(proxy_id="bench")
    client = SyncClient(["http://127.0.0.1:9"], "token", "bench", dp, None)
    dp.swap(build_runtime(snapshot, revision=state.revision, hash=state.hash()), mode="synced")
    prepare = getattr(client, "_prepare_delta", None)
    steps: dict[str, list[float]] = {k: [] for k in
                                     ("apply_delta", "hash", "update_runtime", "swap", "cache_body_after_swap")}
    whole: list[float] = []
    changes = []
    for i in range(repeats * 4):
        rid = (i * 7919) % routes
        new_state, delta = state.apply(Txn(f"c{i}", (Op("put", "routes", f"r{rid:05d}", route_body(rid, i + 1)),)))
        changes.append((state, new_state, delta))
        state = new_state
    if prepare is not None:  # the product's own per-delta function, as the sync client runs it
        for before, after, delta in changes:
            t0 = time.perf_counter()
            _, runtime, _ = prepare(before, delta, after.hash())
            dp.swap(runtime, mode="synced")
            whole.append((time.perf_counter() - t0) * 1000)
    # The same steps one by one, for the breakdown, on the same changes from the same start.
    first = changes[0][0]
    dp.swap(build_runtime(first.to_snapshot(), revision=first.revision, hash=first.hash()), mode="synced")
    for before, _after, delta in changes:
        marks = [time.perf_counter()]
        s2 = apply_delta(before, delta)
        marks.append(time.perf_counter())
        expected = s2.hash()
        marks.append(time.perf_counter())
        assert dp.runtime is not None
        rt = update_runtime(dp.runtime, s2, [(op[1], op[2]) for op in delta.ops], revision=s2.revision,
                            hash=expected)
        marks.append(time.perf_counter())
        dp.swap(rt, mode="synced")
        marks.append(time.perf_counter())
        encode_packed_state(s2)  # the cache body, encoded off the serving path after the swap
        marks.append(time.perf_counter())
        for key, a, b in zip(steps, marks, marks[1:], strict=False):
            steps[key].append((b - a) * 1000)
    return {
        "routes": routes,
        "build_runtime_full_ms": summary(full),
        "one_route_delta_prepare_and_swap_ms": summary(whole) if whole else "SyncClient._prepare_delta not found",
        "one_route_delta_steps_median_ms": {k: round(statistics.median(v), 2) for k, v in steps.items()},
    }


# ---- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--routes", type=int, default=10_000)
    ap.add_argument("--proxies", type=int, default=10)
    ap.add_argument("--txn-size", type=int, default=1000)
    ap.add_argument("--observe", choices=("log", "poll"), default="log")
    ap.add_argument("--poll-interval", type=float, default=0.001, help="seconds between polls of one proxy")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one change to reach all")
    ap.add_argument("--inproc-repeats", type=int, default=10)
    ap.add_argument("--skip-fleet", action="store_true", help="only the in-process figures")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process this benchmark started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    result: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "background_busy_pct_before": background_busy_pct(), "loadavg_at_start": os.getloadavg()[0], "routes": args.routes, "proxies": args.proxies,
        "changes": args.changes, "observe": args.observe, "targets": TARGETS,
    }
    if not args.skip_fleet:
        with tempfile.TemporaryDirectory(prefix="gwadm-bench-") as tmp:
            env = DataPlaneEnv(Path(tmp), proxies=args.proxies, upstreams=("a",))
            try:
                env.upstreams["a"].start()
                env.cluster.start_all()
                leader = env.cluster.wait_ready()
                t0 = time.monotonic()
                revision = load_config(env.cluster, leader, env.upstreams["a"].port, args.routes, args.txn_size)
                result["load_seconds"] = round(time.monotonic() - t0, 2)
                t0 = time.monotonic()
                for p in env.proxies:  # started after the load: each one gets one snapshot
                    p.start()
                for p in env.proxies:
                    p.wait_revision(revision, timeout=180)
                result["proxies_initial_sync_seconds"] = round(time.monotonic() - t0, 2)
                result["fleet"] = asyncio.run(measure(env, leader, args))
                result["fleet_registry_after"] = fleet_check(env.cluster, args.proxies)
            finally:
                env.close()
    result["in_process"] = in_process(args.routes, args.inproc_repeats)
    result["loadavg_at_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def report(r: dict[str, Any]) -> None:
    def line(label: str, s: dict[str, float] | Any, target: str = "") -> None:
        if not isinstance(s, dict) or not s:
            print(f"  {label:44s} {s}")
            return
        print(f"  {label:44s} p50={s['p50']:8.2f}  p99={s['p99']:8.2f}  max={s['max']:8.2f}  mean={s['mean']:8.2f}"
              + (f"   [{target}]" if target else ""))

    print(f"{r['date']}  cpus={r['cpus']}  routes={r['routes']}  proxies={r['proxies']}  loadavg(1m) "
          f"start={r['loadavg_at_start']:.2f} end={r['loadavg_at_end']:.2f}  machine busy before start: "
          f"{r['background_busy_pct_before']}%")
    f = r.get("fleet")
    if f:
        print(f"setup: load {r['load_seconds']} s, proxies synced in {r['proxies_initial_sync_seconds']} s; "
              f"{r['changes']} one-route changes, observed by {r['observe']}")
        print("propagation (ms), all proxies serving the change:")
        line("since PUT returned (" + r["observe"] + ")", f["all_proxies_ms_since_put_returned"],
             f"target p99 <= {TARGETS['propagation_p99_ms']} ms")
        line("since PUT sent (" + r["observe"] + ")", f["all_proxies_ms_since_put_sent"])
        if r["observe"] == "poll":
            line("since PUT returned (log timestamps)", f["all_proxies_ms_since_put_returned_log"])
        line("each proxy, since PUT returned (log)", f["each_proxy_ms_since_put_returned_log"])
        line("PUT latency (commit, fsync)", f["put_ms"])
        h = f["apply_histogram"]
        print(f"one-route change applied, proxies' {APPLY_METRIC} over the run "
              f"[target <= {TARGETS['one_route_apply_ms']} ms]:")
        print(f"  observations={h['observations']}  mean={h['mean_ms']} ms  p50~{h['p50_ms']} ms  "
              f"p99~{h['p99_ms']} ms (bucket bound {h['p99_bucket_upper_bound_ms']} ms)")
        print(f"  mean per proxy (ms): {h['mean_ms_per_proxy']}")
        print(f"fleet registry after the run: {r['fleet_registry_after']}")
        print(f"machine during the {f['measured_seconds']} s of changes: {f['machine_busy_pct']}% busy (all cores), "
              f"of which {f['foreign_busy_pct']}% not from this benchmark's processes")
    ip = r["in_process"]
    print(f"in-process, uncontended, {ip['routes']} routes (ms):")
    line("build_runtime(full snapshot)", ip["build_runtime_full_ms"])
    line("one-route delta: _prepare_delta + swap", ip["one_route_delta_prepare_and_swap_ms"],
         f"target <= {TARGETS['one_route_apply_ms']} ms")
    print(f"  one-route delta steps (median ms): {ip['one_route_delta_steps_median_ms']}")


if __name__ == "__main__":
    main()
