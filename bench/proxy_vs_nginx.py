"""Data-plane benchmark: the gwadm proxy vs nginx as reverse proxy to the same upstream, same run.

Layout on a 2-core machine (every server listens on 127.0.0.1, ephemeral ports):
  core 0   the process under test, alone: the gwadm proxy (all its threads), then the nginx proxy
           (a dedicated master started under `taskset -c 0`, worker_processes 1);
  core 1   wrk (`taskset -c 1 wrk -t1 -c32 -d10s`), the upstream, and the idle control plane.
The upstream is a second dedicated nginx master (worker_processes 1) returning a fixed 24-byte
body: the cheapest upstream there is, identical for both proxies. Both proxies keep connections
to it alive. The control plane (3 nodes, from the test harness) only serves the proxy its config
(1 upstream, 1 route "/") and is idle during the runs.

Per run: req/s and latency from wrk, and CPU per request of the process under test
(utime+stime from /proc/<pid>/stat before/after, nginx master+worker, divided by the requests),
plus how busy each core was (/proc/stat). Each target gets a warm-up run, then --rounds
alternating measured runs; the table shows each run and the totals; ratios are proxy/nginx.

Usage: python bench/proxy_vs_nginx.py [--duration 10] [--connections 32] [--rounds 2] [--json]
Needs nginx, wrk and taskset (`apt-get install -y nginx wrk`) and 2 CPUs. Every process it starts
is stopped by PID at the end, on error too. A benchmark, not a test: it never asserts on figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import Cluster, free_port  # noqa: E402
from tests.support.dataplane import ProxyProc  # noqa: E402
from tests.support.http import request, wait_for  # noqa: E402

UPSTREAM_BODY = "hello from the upstream\n"
TICK = os.sysconf("SC_CLK_TCK")
PROXY_CORE, LOAD_CORE = 0, 1


# ---- processes --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def core_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + v[4]  # idle + iowait
                out[int(m.group(1))] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def background_busy_pct(seconds: float = 1.0) -> float:
    """How busy the machine is before we start anything, in % of all cores."""
    c0, t0 = core_times(), time.monotonic()
    time.sleep(seconds)
    c1 = core_times()
    busy = sum(c1[c][0] - c0[c][0] for c in c1) / TICK
    return round(busy / (time.monotonic() - t0) / len(c1) * 100, 1)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pin(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` (threads started later inherit it)."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Nginx:
    """One dedicated nginx master (daemon off, worker_processes 1) with its own prefix dir."""

    def __init__(self, name: str, base: Path, port: int, server_block: str, http_extra: str = "") -> None:
        self.name, self.port = name, port
        self.dir = base / name
        self.dir.mkdir()
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        {server_block}
    }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers: list[int] = []

    def start(self, core: int, nginx_bin: str) -> None:
        log = open(self.dir / "stderr.log", "ab")
        try:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(core), nginx_bin, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                 "-c", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # taskset execs nginx: self.proc.pid is the master's pid
        finally:
            log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx {self.name} exited:\n{self.log_tail()}")
            self.workers = children(self.proc.pid)
            return bool(self.workers) and port_open(self.port)

        wait_for(up, 10, f"nginx {self.name} on port {self.port}", interval=0.02)

    def pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + self.workers

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown, the master stops its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.workers:  # never leave an orphaned worker behind
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if self.proc is not None and ppid in (self.proc.pid, 1):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.proc, self.workers = None, []

    def log_tail(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


# ---- wrk ----------------------------------------------------------------------------------------------


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not m:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    latency = {f"p{p}": _duration_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests, "seconds": seconds, "rps": requests / seconds, "latency_ms": latency,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def run_wrk(url: str, args: argparse.Namespace, duration: int, meters: dict[str, Callable[[], float]]) -> dict[str, Any]:
    """One wrk run; ``meters`` give CPU seconds of: the process under test ("pinned"), the upstream,
    and everything this benchmark started ("ours", wrk included) to tell foreign load apart."""
    cmd = ["taskset", "-c", str(LOAD_CORE), "wrk", f"-t{args.threads}", f"-c{args.connections}",
           f"-d{duration}s", "--latency", url]
    before, cores0, t0 = {k: m() for k, m in meters.items()}, core_times(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    after, cores1, wall = {k: m() for k, m in meters.items()}, core_times(), time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    used = {k: after[k] - before[k] for k in meters}
    result = parse_wrk(out.stdout)
    result["cpu_seconds"] = used["pinned"]
    result["cpu_us_per_request"] = used["pinned"] / max(1, result["requests"]) * 1e6
    result["pinned_busy_pct"] = used["pinned"] / wall * 100
    result["upstream_busy_pct"] = used["upstream"] / wall * 100
    result["core_busy_pct"] = {
        f"cpu{c}": round((cores1[c][0] - cores0[c][0]) / max(1, cores1[c][1] - cores0[c][1]) * 100, 1) for c in cores1
    }
    machine = sum(cores1[c][0] - cores0[c][0] for c in cores1) / TICK
    # CPU time no process of ours was charged with: other jobs on the machine, plus kernel work
    # (softirq) not accounted to a task. In % of one core.
    result["foreign_pct"] = round(max(0.0, machine - used["ours"]) / wall * 100, 1)
    return result


def self_and_children_cpu() -> float:
    """CPU of this process and of its waited-for children (wrk runs end up here)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def pids_cpu(pids: Callable[[], list[int]]) -> Callable[[], float]:
    def total() -> float:
        out = 0.0
        for pid in pids():
            try:
                out += cpu_seconds(pid)
            except OSError:
                pass
        return out

    return total


# ---- main ---------------------------------------------------------------------------------------------


def preflight() -> str:
    missing = [t for t in ("nginx", "wrk", "taskset") if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())]
    if missing:
        print(f"proxy_vs_nginx: missing tool(s): {', '.join(missing)}.\n"
              f"Install them with: apt-get install -y nginx wrk   (taskset is in util-linux)", file=sys.stderr)
        raise SystemExit(2)
    cpus = os.sched_getaffinity(0)
    if not {PROXY_CORE, LOAD_CORE} <= cpus:
        print(f"proxy_vs_nginx: needs CPUs {PROXY_CORE} and {LOAD_CORE}; this process may use {sorted(cpus)}",
              file=sys.stderr)
        raise SystemExit(2)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def check_response(url: str) -> None:
    r = request("GET", url, timeout=5)
    if r.status != 200 or r.body.decode() != UPSTREAM_BODY:
        raise SystemExit(f"{url} does not answer with the upstream's body: {r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of the unmeasured first run per target")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="measured runs per target, alternating")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    nginx_bin = preflight()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process this benchmark started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    result: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "background_busy_pct_before": background_busy_pct(), "loadavg_at_start": os.getloadavg()[0],
        "nginx": nginx_version(nginx_bin),
        "wrk": f"taskset -c {LOAD_CORE} wrk -t{args.threads} -c{args.connections} -d{args.duration}s",
        "runs": [],
    }
    started: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="gwadm-bench-nginx-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)  # nginx workers run as an unprivileged user when started by root
        try:
            upstream = Nginx("upstream", base, free_port(), f'location / {{ default_type text/plain; '
                                                            f'return 200 "{UPSTREAM_BODY.strip()}\\n"; }}')
            started.append(upstream)
            upstream.start(LOAD_CORE, nginx_bin)
            ngx = Nginx(
                "nginx-proxy", base, free_port(),
                "location / { proxy_pass http://backend; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; proxy_set_header Host $host; '
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }",
                http_extra=f"upstream backend {{ server 127.0.0.1:{upstream.port}; keepalive 64; "
                           f"keepalive_requests 1000000; }}",
            )
            started.append(ngx)
            ngx.start(PROXY_CORE, nginx_bin)

            (base / "cp").mkdir()
            cluster = Cluster(base / "cp")
            started.append(cluster)
            cluster.start_all()
            for node in cluster.nodes:
                assert node.proc is not None
                pin(node.proc.pid, LOAD_CORE)
            leader = cluster.wait_ready()
            r = cluster.api(leader, "POST", "/v1/txn", {"ops": [
                {"op": "put", "kind": "upstreams", "id": "bench-up",
                 "body": {"targets": [{"host": "127.0.0.1", "port": upstream.port}]}},
                {"op": "put", "kind": "routes", "id": "bench", "body": {"paths": ["/"], "upstream": "bench-up"}},
            ]})  # fmt: skip
            if r.status != 200:
                raise SystemExit(f"config txn failed: {r}")
            token_file = base / "proxy.token"
            token_file.write_text(cluster.proxy_token)
            proxy = ProxyProc("bench-proxy", [n.url for n in cluster.nodes], token_file, base / "proxy")
            started.append(proxy)
            proxy.start()
            assert proxy.proc is not None
            pin(proxy.proc.pid, PROXY_CORE)
            proxy.wait_revision(int(r.json()["revision"]))

            proxy_pid = proxy.proc.pid
            targets: dict[str, tuple[str, Callable[[], float]]] = {
                "gwadm-proxy": (f"{proxy.url}/bench", lambda: cpu_seconds(proxy_pid)),
                "nginx": (f"http://127.0.0.1:{ngx.port}/bench", ngx.cpu),
            }
            for url, _ in targets.values():
                check_response(url)
            ours = pids_cpu(lambda: [proxy_pid, *ngx.pids(), *upstream.pids(),
                                     *(n.proc.pid for n in cluster.nodes if n.proc is not None)])

            def meters(cpu_of: Callable[[], float]) -> dict[str, Callable[[], float]]:
                return {"pinned": cpu_of, "upstream": upstream.cpu, "ours": lambda: ours() + self_and_children_cpu()}

            for url, cpu_of in targets.values():
                run_wrk(url, args, args.warmup, meters(cpu_of))
            for rnd in range(args.rounds):
                for name, (url, cpu_of) in targets.items():
                    run = run_wrk(url, args, args.duration, meters(cpu_of))
                    run.update(target=name, round=rnd + 1)
                    result["runs"].append(run)
            for url, _ in targets.values():  # still serving correctly after the load
                check_response(url)
        finally:
            for proc in reversed(started):
                if isinstance(proc, Cluster):
                    proc.stop_all()
                else:
                    proc.stop()
    result["loadavg_at_end"] = os.getloadavg()[0]
    result["totals"] = totals(result["runs"])
    t = result["totals"]
    result["ratio_proxy_over_nginx"] = {
        "rps": round(t["gwadm-proxy"]["rps"] / t["nginx"]["rps"], 4),
        "cpu_per_request": round(t["gwadm-proxy"]["cpu_us_per_request"] / t["nginx"]["cpu_us_per_request"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


def nginx_version(nginx_bin: str) -> str:
    out = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def totals(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in dict.fromkeys(r["target"] for r in runs):
        mine = [r for r in runs if r["target"] == name]
        requests = sum(r["requests"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        cpu = sum(r["cpu_seconds"] for r in mine)
        out[name] = {"requests": requests, "rps": requests / seconds, "cpu_us_per_request": cpu / requests * 1e6,
                     "rps_median_run": statistics.median(r["rps"] for r in mine),
                     "cpu_us_per_request_median_run": statistics.median(r["cpu_us_per_request"] for r in mine),
                     "non_2xx": sum(r["non_2xx"] for r in mine), "socket_errors": sum(r["socket_errors"] for r in mine)}
    return out


def report(r: dict[str, Any]) -> None:
    print(f"{r['date']}  cpus={r['cpus']}  nginx {r['nginx']}  load: {r['wrk']}  "
          f"loadavg(1m) start={r['loadavg_at_start']:.2f} end={r['loadavg_at_end']:.2f}  "
          f"machine busy before start: {r['background_busy_pct_before']}%")
    print(f"{'target':12s} {'round':>5s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU us/req':>11s} "
          f"{'core0 %':>8s} {'pinned %':>8s} {'core1 %':>8s} {'upstr %':>8s} {'foreign%':>8s} {'non2xx':>7s} {'errors':>7s}")
    for run in r["runs"]:
        lat = run["latency_ms"]
        print(f"{run['target']:12s} {run['round']:5d} {run['rps']:10.0f} {lat.get('p50', float('nan')):8.2f} "
              f"{lat.get('p99', float('nan')):8.2f} {run['cpu_us_per_request']:11.1f} "
              f"{run['core_busy_pct'].get(f'cpu{PROXY_CORE}', 0):8.1f} {run['pinned_busy_pct']:8.1f} "
              f"{run['core_busy_pct'].get(f'cpu{LOAD_CORE}', 0):8.1f} {run['upstream_busy_pct']:8.1f} {run['foreign_pct']:8.1f} "
              f"{run['non_2xx']:7d} {run['socket_errors']:7d}")
    print("  core0/core1 %: busy share of each core (all processes); pinned %: the process under test (of one core);"
          "\n  upstr %: the upstream nginx; foreign %: busy time on the machine not charged to any process of this"
          "\n  benchmark (other jobs, untracked kernel work), in % of one core")
    print("totals:")
    for name, t in r["totals"].items():
        print(f"  {name:12s} {t['rps']:10.0f} req/s  {t['cpu_us_per_request']:8.1f} CPU us/request  "
              f"(median run: {t['rps_median_run']:.0f} req/s, {t['cpu_us_per_request_median_run']:.1f} us/req; "
              f"{t['requests']} requests, non-2xx {t['non_2xx']}, socket errors {t['socket_errors']})")
    ratio = r["ratio_proxy_over_nginx"]
    print(f"ratio gwadm-proxy/nginx: req/s x{ratio['rps']:.3f}   CPU per request x{ratio['cpu_per_request']:.1f}")


if __name__ == "__main__":
    main()
