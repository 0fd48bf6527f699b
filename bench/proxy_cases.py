"""Proxy cases: the gwadm proxy beside nginx (and beside itself) on the same upstream, same run.

Layout (2 cores): the load generator (wrk) and the upstream (nginx, fixed 24-byte body) on core 0,
the proxy under test alone on core 1; the 2-worker case lets everything use both cores. The
throughput proxies boot from a cache file written here (mode ``cached``, no control plane to keep
the load core free); the swap case uses a real 3-node control plane (fsync on).
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

from bench.common import (
    Figure,
    Section,
    figure_from_runs,
    latency_summary,
    median,
    parse_wrk,
    percentile,
    spread,
)
from bench.procs import (
    LOAD_CORE,
    PROXY_CORE,
    Nginx,
    nginx_proxy,
    nginx_upstream,
    pin,
    port_open,
    python,
    run_wrk,
    stop_pid,
    tree_cpu,
    wrk_script,
)
from gateway.model import Op, Txn
from gateway.state import ConfigState
from proxy.cache import ConfigCache
from tests.support.cluster import Cluster, free_port
from tests.support.dataplane import ProxyProc
from tests.support.http import request, wait_for

NAME = "proxy"
TOOLS = ("nginx", "wrk", "taskset")
BODY = "hello from the upstream"
SECRET = "bench-secret-0123456789abcdef0123"  # a throwaway HS256 key for the bench consumer
ISSUER = "bench-issuer"
P0, P1, BOTH = str(LOAD_CORE), str(PROXY_CORE), f"{LOAD_CORE},{PROXY_CORE}"


def bench_state(upstream_port: int, routes: int) -> ConfigState:
    """``routes`` routes in all: /plain (no plugins), /auth (jwt-auth + rate-limit), fillers."""
    ops = [
        Op("put", "upstreams", "up", {"targets": [{"host": "127.0.0.1", "port": upstream_port}]}),
        Op("put", "consumers", "bench", {"credentials": {"jwt-auth": [
            {"key": ISSUER, "algorithm": "HS256", "secret": SECRET}]}}),
        Op("put", "routes", "plain", {"paths": ["/plain"], "upstream": "up"}),
        Op("put", "routes", "auth", {"paths": ["/auth"], "upstream": "up", "plugins": {
            "jwt-auth": {}, "rate-limit": {"limit": 1_000_000_000, "window": 1.0, "key": "consumer"}}}),
    ]  # fmt: skip
    ops += [filler(i) for i in range(routes - 2)]
    state, _ = ConfigState.empty().apply(Txn("bench", tuple(ops)))
    return state


def filler(i: int, version: int = 0) -> Op:
    path = f"/svc/{i:05d}" + (f"/v{version}" if version else "")
    return Op("put", "routes", f"r{i:05d}", {"paths": [path], "upstream": "up"})


def cached_proxy(ctx: Any, name: str, state: ConfigState, *workers: str) -> ProxyProc:
    """A proxy that boots from a cache file holding ``state`` (its --cp points at a closed port)."""
    d = ctx.base / name
    (d / "state").mkdir(parents=True)
    ConfigCache(d / "state" / "config.lkg").save_state(state, state.hash())
    token = d / "token"
    token.write_text("unused: no control plane is reachable\n")
    p = ProxyProc(name, [f"http://127.0.0.1:{free_port()}"], token, d, extra_args=list(workers))
    ctx.started.add(p.stop)
    p.start()
    wait_for(lambda: request("GET", p.status_url + "/ready", timeout=2).status == 200, 60, f"{name} ready")
    return p


def lean_proxy(ctx: Any, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """bench/lean_proxy.py on the proxy core: the floor of a Python proxy (see its docstring)."""
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", P1, python(), "-m", "bench.lean_proxy", str(port), str(upstream_port)],
                            cwd=str(Path(__file__).resolve().parents[1]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ctx.started.add(lambda: stop_pid(proc))
    wait_for(lambda: port_open(port), 30, "lean reference proxy up")
    return proc, port


def check_body(url: str, headers: dict[str, str] | None = None) -> None:
    r = request("GET", url, timeout=5, headers=headers or {})
    if r.status != 200 or r.body.decode().strip() != BODY:
        raise RuntimeError(f"{url} does not answer with the upstream's body: {r}")


def rounds(
    ctx: Any, targets: dict[str, dict[str, Any]], upstream: Nginx, cores: str, threads: int = 1
) -> list[dict[str, Any]]:
    """Warm-up per target, then ``rounds`` interleaved measured runs (order rotated each round)."""
    s = ctx.settings
    names = list(targets)
    for name in names:
        t = targets[name]
        run_wrk(t["url"], cores=cores, connections=s["connections"], duration=s["warmup"], threads=threads,
                script=t.get("script"))  # fmt: skip
    runs = []
    for rnd in range(s["rounds"]):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            t = targets[name]
            r = run_wrk(t["url"], cores=cores, connections=s["connections"], duration=s["duration"], threads=threads,
                        script=t.get("script"), meters={"target": t["cpu"], "upstream": upstream.cpu})  # fmt: skip
            runs.append({
                "target": name, "round": rnd + 1, "rps": r["rps"], "requests": r["requests"],
                "p50_ms": r["latency_ms"].get("p50", math.nan), "p99_ms": r["latency_ms"].get("p99", math.nan),
                "cpu_us_per_request": r["cpu_target"] / max(1, r["requests"]) * 1e6,
                "target_busy_pct": r["cpu_target"] / r["wall"] * 100, "upstream_busy_pct": r["cpu_upstream"] / r["wall"] * 100,
                "core_busy_pct": r["core_busy_pct"], "core0_busy_pct": r["core_busy_pct"].get(0, math.nan),
                "core1_busy_pct": r["core_busy_pct"].get(1, math.nan),
                "non_2xx": r["non_2xx"], "socket_errors": r["socket_errors"],
            })  # fmt: skip
            ctx.log(f"  {name:22s} round {rnd + 1}: {r['rps']:9.0f} req/s  p99 {runs[-1]['p99_ms']:.2f} ms  "
                    f"{runs[-1]['cpu_us_per_request']:.1f} us/req")  # fmt: skip
    for t in targets.values():
        check_body(t["url"], t.get("headers"))
    return runs


def single_core(ctx: Any) -> Section:
    s = ctx.settings
    method = (
        f"wrk -t1 -c{s['connections']} -d{s['duration']}s on core {LOAD_CORE} with the upstream (nginx, fixed "
        f"{len(BODY) + 1}-byte body); the target alone on core {PROXY_CORE} (gwadm proxy: 1 process, all threads "
        f"pinned; nginx: worker_processes 1, keep-alive upstream pool). {s['warmup']}s warm-up per target, then "
        f"{s['rounds']} interleaved rounds (order rotated); figures are medians over rounds, ranges min..max. CPU "
        "us/request = utime+stime of the target's processes (/proc/<pid>/stat) / requests. The gwadm proxies boot "
        "from a cache file (mode cached, no control plane). '10 routes' = /plain, /auth and 8 fillers; '10k' = the "
        "same plus 9,990 fillers. jwt-auth (HS256) + rate-limit (per consumer, never reached) on /auth."
    )
    sec = Section("Proxy: one core, gwadm vs nginx", method)
    upstream = nginx_upstream(ctx.base, free_port(), BODY)
    ctx.started.add(upstream.stop)
    upstream.start(P0)
    ngx = nginx_proxy(ctx.base, "nginx-1w", free_port(), upstream.port)
    ctx.started.add(ngx.stop)
    ngx.start(P1)
    lean, lean_port = lean_proxy(ctx, upstream.port)
    small = cached_proxy(ctx, "gw-10", bench_state(upstream.port, 10))
    large = cached_proxy(ctx, "gw-10k", bench_state(upstream.port, 10_000))
    for p in (small, large):
        assert p.proc is not None
        pin(p.proc.pid, P1)
    token = jwt.encode({"iss": ISSUER, "exp": int(time.time()) + 7200}, SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    assert small.proc is not None and large.proc is not None
    targets = {
        "nginx": {"url": f"http://127.0.0.1:{ngx.port}/plain", "cpu": ngx.cpu},
        "gwadm": {"url": f"{small.url}/plain", "cpu": tree_cpu(small.proc.pid)},
        "gwadm jwt+rate-limit": {"url": f"{small.url}/auth", "cpu": tree_cpu(small.proc.pid),
                                 "script": wrk_script(ctx.base, "auth", auth), "headers": auth},
        "gwadm 10k routes": {"url": f"{large.url}/plain", "cpu": tree_cpu(large.proc.pid)},
        "lean Python proxy": {"url": f"http://127.0.0.1:{lean_port}/plain", "cpu": tree_cpu(lean.pid)},
    }  # fmt: skip
    if request("GET", f"{small.url}/auth", timeout=5).status != 401:
        raise RuntimeError("/auth answers without a token: jwt-auth is not in force")
    check_body(f"{small.url}/auth", auth)
    runs = rounds(ctx, targets, upstream, P0)
    sec.runs = runs
    sec.figures = [
        figure_from_runs("no plugins: req/s", "req/s", runs, "rps", "gwadm", "nginx", target=">= 0.45"),
        figure_from_runs(
            "no plugins: CPU per request", "us", runs, "cpu_us_per_request", "gwadm", "nginx", target="<= 2.2"
        ),  # fmt: skip
        figure_from_runs(
            "jwt-auth + rate-limit: req/s",
            "req/s",
            runs,
            "rps",
            "gwadm jwt+rate-limit",
            "nginx",
            target=">= 0.30",
        ),  # fmt: skip
        figure_from_runs(
            "jwt-auth + rate-limit: CPU per request",
            "us",
            runs,
            "cpu_us_per_request",
            "gwadm jwt+rate-limit",
            "nginx",
        ),  # fmt: skip
        figure_from_runs(
            "10,000 routes vs 10: req/s", "req/s", runs, "rps", "gwadm 10k routes", "gwadm", target=">= 0.95"
        ),  # fmt: skip
        figure_from_runs("lean Python proxy (the floor): CPU per request", "us", runs, "cpu_us_per_request",
                         "lean Python proxy", "nginx"),  # fmt: skip
        figure_from_runs("no plugins vs the lean Python proxy: CPU per request", "us", runs, "cpu_us_per_request",
                         "gwadm", "lean Python proxy"),  # fmt: skip
        figure_from_runs(
            f"p99 latency at {s['connections']} connections",
            "ms",
            runs,
            "p99_ms",
            "gwadm",
            "nginx",
            target="<= 2.0",
        ),  # fmt: skip
    ]
    busy = {n: median([r["target_busy_pct"] for r in runs if r["target"] == n]) for n in targets}
    core0 = median([r["core_busy_pct"].get(LOAD_CORE, math.nan) for r in runs if r["target"] == "nginx"])
    foreign = median([r["core_busy_pct"].get(PROXY_CORE, math.nan) - r["target_busy_pct"] for r in runs])
    sec.notes.append(
        "target busy (median, % of one core): " + ", ".join(f"{n} {b:.0f} %" for n, b in busy.items())
        + f"; core {LOAD_CORE} (wrk + upstream) during nginx runs: {core0:.0f} %; busy time on core {PROXY_CORE} not "
        f"charged to the target (other jobs): {max(0.0, foreign):.0f} %. A target below ~95 % with no foreign load "
        "was not the bottleneck (the load core saturated first): its req/s is then a lower bound, CPU per request "
        "is the fair comparison."
    )  # fmt: skip
    failed = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
    sec.notes.append(f"non-2xx answers and socket errors over all runs: {failed}")
    for p in (small, large):
        p.stop()
    stop_pid(lean)
    ngx.stop()
    ctx.shared["upstream"] = upstream
    return sec


def two_workers(ctx: Any) -> Section:
    s = ctx.settings
    upstream: Nginx = ctx.shared.get("upstream") or nginx_upstream(ctx.base, free_port(), BODY)
    if upstream.proc is None:
        ctx.started.add(upstream.stop)
        upstream.start(P0)
    pin(upstream.pid, BOTH)
    method = (
        f"Everything may use both cores (taskset -c {BOTH}): wrk -t2 -c{s['connections']} -d{s['duration']}s, the "
        "upstream nginx (1 worker), and the target: gwadm with 1 worker / --workers 2 (SO_REUSEPORT), nginx with "
        "worker_processes 1 / 2 (reuseport). Same warm-up, interleaving and medians as above; CPU includes every "
        "process of the target (hub and workers)."
    )
    sec = Section("Proxy: 2 workers on 2 cores, gwadm vs nginx", method)
    state = bench_state(upstream.port, 10)
    one = cached_proxy(ctx, "gw-1w", state)
    two = cached_proxy(ctx, "gw-2w", state, "--workers", "2")
    n1 = nginx_proxy(ctx.base, "nginx-1w-b", free_port(), upstream.port)
    n2 = nginx_proxy(ctx.base, "nginx-2w", free_port(), upstream.port, workers=2)
    for n in (n1, n2):
        ctx.started.add(n.stop)
        n.start(BOTH)
    assert one.proc is not None and two.proc is not None
    wait_for(lambda: two.status().get("workers_serving") == 2, 60, "both workers serving")
    for p in (one, two):
        assert p.proc is not None
        pin(p.proc.pid, BOTH)
    targets = {
        "gwadm 1 worker": {"url": f"{one.url}/plain", "cpu": tree_cpu(one.proc.pid)},
        "gwadm 2 workers": {"url": f"{two.url}/plain", "cpu": tree_cpu(two.proc.pid)},
        "nginx 1 worker": {"url": f"http://127.0.0.1:{n1.port}/plain", "cpu": n1.cpu},
        "nginx 2 workers": {"url": f"http://127.0.0.1:{n2.port}/plain", "cpu": n2.cpu},
    }
    runs = rounds(ctx, targets, upstream, BOTH, threads=2)
    sec.runs = runs
    sec.figures = [
        figure_from_runs(
            "gwadm 2 workers vs 1: req/s",
            "req/s",
            runs,
            "rps",
            "gwadm 2 workers",
            "gwadm 1 worker",
            target=">= 1.8",
        ),  # fmt: skip
        figure_from_runs(
            "nginx 2 workers vs 1: req/s", "req/s", runs, "rps", "nginx 2 workers", "nginx 1 worker"
        ),
        figure_from_runs("2 workers: req/s", "req/s", runs, "rps", "gwadm 2 workers", "nginx 2 workers"),
        figure_from_runs(
            "2 workers: CPU per request",
            "us",
            runs,
            "cpu_us_per_request",
            "gwadm 2 workers",
            "nginx 2 workers",
        ),  # fmt: skip
    ]
    busy = {n: median([r["target_busy_pct"] for r in runs if r["target"] == n]) for n in targets}
    machine = {
        n: median([sum(r["core_busy_pct"].values()) for r in runs if r["target"] == n]) for n in targets
    }
    sec.notes.append(
        "target busy / whole machine busy (median, % of one core; 200 % = both cores): "
        + ", ".join(f"{n} {busy[n]:.0f} / {machine[n]:.0f} %" for n in targets)
        + ". Where the machine is ~200 % busy and the target uses less than that, the rest went to wrk and the "
        "upstream: the load generator shares the cores and is then the bottleneck."
    )  # fmt: skip
    for p in (one, two):
        p.stop()
    for n in (n1, n2):
        n.stop()
    return sec


INSTALLED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ (\S+): (?:worker \d+: )?installed config revision (\d+)"
)


def installed_times(log: Path) -> dict[int, list[float]]:
    """revision -> wall times of 'installed config revision N': the workers' lines if there are any
    (one per worker), else the sync client's (a single-process proxy)."""
    sync: dict[int, list[float]] = {}
    workers: dict[int, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = INSTALLED.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
            into = workers if m.group(3).startswith("gwadm.proxy.worker") else sync
            into.setdefault(int(m.group(4)), []).append(t)
    return workers or sync


def apply_histogram(p: ProxyProc) -> tuple[float, float]:
    """(sum, count) of gwadm_proxy_config_apply_duration_seconds from the proxy's /metrics."""
    text = request("GET", p.status_url + "/metrics", timeout=10).body.decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("gwadm_proxy_config_apply_duration_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("gwadm_proxy_config_apply_duration_seconds_count"):
            count += float(line.split()[-1])
    return total, count


def wait_revision(p: ProxyProc, revision: int, timeout: float) -> None:
    def check() -> bool:
        st = p.status()
        return bool(st["revision"] >= revision and st["mode"] == "synced")

    wait_for(check, timeout, f"{p.id} serving revision {revision}")


def in_process_apply(state: ConfigState, changes: int) -> list[float]:
    """prepare_delta + swap of one-route deltas on ``state``, in this process, uncontended (ms)."""
    from gateway.protocol import DeltaFrame
    from proxy.frames_apply import prepare_delta
    from proxy.runtime import build_runtime, update_runtime
    from proxy.server import DataPlane

    dp = DataPlane()
    dp.swap(build_runtime(state, revision=state.revision, hash=state.hash()))
    out = []
    for i in range(changes):
        new, delta = state.apply(Txn(f"c{i}", (filler(i % 9000, i + 1),)))
        frame = DeltaFrame.of(delta, new.hash())  # what the proxy receives per change
        t0 = time.perf_counter()
        st, runtime, _ = prepare_delta(state, frame, dp.runtime, update_runtime, build_runtime)
        dp.swap(runtime)
        out.append((time.perf_counter() - t0) * 1000)
        state = st
    return out


def swap_under_load(ctx: Any) -> Section:
    s = ctx.settings
    changes = s["changes"]
    method = (
        f"A 3-node control plane (fsync on) on core {LOAD_CORE} holds 10,000 routes (+ /plain, /auth). While wrk "
        f"(-t1 -c{s['connections']}, core {LOAD_CORE}) loads the proxy under test (1 worker: core {PROXY_CORE}; 2 workers: "
        f"both cores), {changes} "
        "one-route changes (PUT /v1/routes/rNNNNN, 0.1 s apart). 'Applied' = the proxy's own apply histogram "
        "(frame received -> runtime swapped; mean = delta sum / delta count) and, end to end, the time from the PUT's "
        "answer to the proxy's (each worker's) 'installed config revision N' log line. Reference: the same one-route "
        "apply (prepare_delta + swap) in the benchmark's own process, no traffic. 'failed' = wrk's non-2xx + socket "
        "errors during the changes."
    )
    sec = Section("Proxy: one-route change on a 10k-route config, under load", method)
    upstream: Nginx = ctx.shared["upstream"]
    (ctx.base / "cp").mkdir()
    cluster = Cluster(ctx.base / "cp")
    ctx.started.add(cluster.stop_all)
    cluster.start_all()
    for node in cluster.nodes:
        assert node.proc is not None
        pin(node.proc.pid, P0)
    leader = cluster.wait_ready()
    state = bench_state(upstream.port, 10_000)
    ops = [{"op": "put", "kind": r.kind, "id": r.id, "body": dict(r.spec)} for r in state.resources()]
    revision = 0
    for i in range(0, len(ops), 1000):
        r = cluster.api(leader, "POST", "/v1/txn", {"ops": ops[i : i + 1000]}, timeout=60)
        if r.status != 200:
            raise RuntimeError(f"loading routes failed: {r}")
        revision = int(r.json()["revision"])
    token_file = ctx.base / "proxy.token"
    token_file.write_text(cluster.proxy_token)
    urls = [n.url for n in cluster.nodes]
    proxies = {
        "gwadm": ProxyProc("swap-1w", urls, token_file, ctx.base / "swap-1w"),
        "gwadm 2 workers": ProxyProc(
            "swap-2w", urls, token_file, ctx.base / "swap-2w", extra_args=["--workers", "2"]
        ),
    }
    for name, p in proxies.items():
        ctx.started.add(p.stop)
        p.start()
        assert p.proc is not None
        pin(p.proc.pid, P1 if name == "gwadm" else BOTH)  # a 2-worker proxy gets both cores
    for p in proxies.values():
        wait_revision(p, revision, 120)
    reference = in_process_apply(bench_state(upstream.port, 10_000), max(20, changes))
    version = 1000
    for name, p in proxies.items():
        h0 = apply_histogram(p)
        cmd = [
            "taskset",
            "-c",
            P0,
            "wrk",
            "-t1",
            f"-c{s['connections']}",
            f"-d{math.ceil(changes * 0.1 + 3)}s",
            f"{p.url}/plain",
        ]
        wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ctx.started.add(wrk.kill)
        time.sleep(1.0)
        answered: dict[int, float] = {}
        for i in range(changes):
            version += 1
            r = cluster.api(leader, "PUT", f"/v1/routes/r{(i * 37) % 9000:05d}",
                            {"paths": [f"/svc/x{version}"], "upstream": "up"})  # fmt: skip
            answered[int(r.json()["revision"])] = time.time()
            time.sleep(0.1)
        out, _ = wrk.communicate(timeout=60)
        load = parse_wrk(out)
        last = max(answered)
        wait_revision(p, last, 30)
        h1 = apply_histogram(p)
        seen = installed_times(p.log_path)
        e2e = [(t - answered[rev]) * 1000 for rev in answered for t in seen.get(rev, [])]
        mean_apply = (h1[0] - h0[0]) / max(1.0, h1[1] - h0[1]) * 1000
        sec.runs.append({
            "target": name, "changes": changes, "apply_mean_ms": mean_apply, "applied_observations": h1[1] - h0[1],
            "put_to_installed_ms": latency_summary(e2e), "requests": load["requests"], "rps": load["rps"],
            "non_2xx": load["non_2xx"], "socket_errors": load["socket_errors"],
        })  # fmt: skip
        sec.figures.append(Figure(
            f"{name}: one-route change applied (10k routes, under load)", "ms", mean_apply, median(reference),
            "in-process reference", target="<= 5 ms", target_on="value",
            note=f"median of the in-process reference; its p99 {percentile(reference, 99):.2f} ms",
        ))  # fmt: skip
        sec.figures.append(Figure(
            f"{name}: PUT answered -> installed, p50", "ms", percentile(e2e, 50), math.nan, "",
            spread(e2e), note=f"p99 {percentile(e2e, 99):.1f} ms over {len(e2e)} installs",
        ))  # fmt: skip
        sec.figures.append(Figure(
            f"{name}: failed requests during the swaps", "requests", float(load["non_2xx"] + load["socket_errors"]),
            target="<= 0", target_on="value", note=f"of {load['requests']} requests at {load['rps']:.0f} req/s",
        ))  # fmt: skip
        ctx.log(f"  {name}: apply mean {mean_apply:.2f} ms, PUT->installed p50 {percentile(e2e, 50):.1f} ms, "
                f"failed {load['non_2xx'] + load['socket_errors']} of {load['requests']}")  # fmt: skip
    for p in proxies.values():
        p.stop()
    cluster.stop_all()
    return sec


CASES = [single_core, two_workers, swap_under_load]


def run(ctx: Any) -> list[Section]:
    out = []
    for case in CASES:
        ctx.log(f"proxy: {case.__name__}")
        try:
            out.append(case(ctx))
        except Exception as exc:  # one failed case does not lose the others' figures
            ctx.log(f"proxy: {case.__name__} failed: {exc!r}")
            out.append(Section(f"Proxy: {case.__name__}", "", error=repr(exc)))
    return out
