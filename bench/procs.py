"""The IO half of the harness: tools, pinning, CPU meters, nginx and wrk processes, cleanup by PID."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.common import parse_cpu_lines, parse_proc_stat, parse_wrk
from tests.support.http import wait_for

TICK = os.sysconf("SC_CLK_TCK")
LOAD_CORE, PROXY_CORE = 0, 1  # the load generator (and upstream) on core 0, the process under test on 1

# tool -> Debian package(s) that provide it (first that exists wins)
TOOLS: dict[str, tuple[str, ...]] = {
    "nginx": ("nginx-light", "nginx"),
    "wrk": ("wrk",),
    "etcd": ("etcd-server",),
    "etcdctl": ("etcd-client",),
    "taskset": ("util-linux",),
}


def which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.path.exists(p := f"{d}/{tool}")), None
    )


def missing_tools(tools: Iterable[str]) -> list[str]:
    return [t for t in tools if which(t) is None]


def install_tools(tools: Iterable[str], log: Callable[[str], None]) -> list[str]:
    """apt-get install what is missing when we are root; returns what is still missing."""
    missing = missing_tools(tools)
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return missing
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for tool in missing:
        for package in TOOLS.get(tool, (tool,)):
            log(f"installing {package} (for {tool}) with apt-get")
            r = subprocess.run(
                ["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, text=True
            )
            if r.returncode != 0 and "Unable to locate" in (r.stderr + r.stdout):
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
                r = subprocess.run(
                    ["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, text=True
                )
            if r.returncode == 0 and which(tool):
                break
    return missing_tools(tools)


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    mem = "?"
    with contextlib.suppress(OSError, StopIteration), open("/proc/meminfo") as f:
        kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "cores": os.cpu_count(), "usable_cores": sorted(os.sched_getaffinity(0)), "cpu_model": model, "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "nginx": tool_version([which("nginx") or "nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": tool_version(["wrk", "--version"]).split(" [")[0], "etcd": tool_version(["etcd", "--version"]),
        "uvloop": _has("uvloop"), "httptools": _has("httptools"),
    }  # fmt: skip


def _has(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "installed"))


# ---- CPU ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_proc_stat(f.read(), TICK)
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
    return out


def tree_cpu(pid: int) -> Callable[[], float]:
    """A meter: CPU seconds of ``pid`` and its descendants (workers restarted meanwhile are missed)."""
    return lambda: sum(cpu_seconds(p) for p in descendants(pid))


def core_times() -> dict[int, tuple[int, int]]:
    with open("/proc/stat") as f:
        return parse_cpu_lines(f.read())


def busy_pct(seconds: float = 1.0) -> float:
    """How busy the whole machine is right now, in % of all cores."""
    c0, t0 = core_times(), time.monotonic()
    time.sleep(seconds)
    c1 = core_times()
    busy = sum(c1[c][0] - c0[c][0] for c in c1) / TICK
    return round(busy / (time.monotonic() - t0) / max(1, len(c1)) * 100, 1)


def pin(pid: int, cores: str) -> None:
    """Pin every thread of ``pid`` and of its descendants (threads started later inherit it)."""
    for p in descendants(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cores, str(p)], capture_output=True)


# ---- cleanup ----------------------------------------------------------------------------------------------


class Started:
    """Everything a case started, stopped in reverse order (by PID), also on errors and SIGTERM."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def add(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def stop_all(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()


def stop_pid(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# ---- nginx ------------------------------------------------------------------------------------------------


class Nginx:
    """A dedicated nginx master (daemon off) with its own prefix dir; ``workers`` worker processes."""

    def __init__(
        self, name: str, base: Path, port: int, server_block: str, http_extra: str = "", workers: int = 1
    ):
        self.name, self.port = name, port
        self.dir = base / name
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""
daemon off;
master_process on;
worker_processes {workers};
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
        listen 127.0.0.1:{port}{" reuseport" if workers > 1 else ""};
        {server_block}
    }}
}}
""")
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cores: str) -> None:
        binary = which("nginx") or "nginx"
        with open(self.dir / "stderr.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", cores, binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                 "-c", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip  # taskset execs nginx: proc.pid is the master's

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx {self.name} exited: {self.log_tail()}")
            return len(descendants(self.proc.pid)) > self.workers and port_open(self.port)

        wait_for(up, 15, f"nginx {self.name} on port {self.port}", interval=0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return tree_cpu(self.pid)() if self.proc else 0.0

    def stop(self) -> None:
        pids = descendants(self.proc.pid) if self.proc is not None else []
        stop_pid(self.proc)
        for pid in pids[1:]:  # never leave an orphaned worker behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def nginx_upstream(base: Path, port: int, body: str) -> Nginx:
    """The cheapest upstream there is: nginx answering ``return 200`` with a fixed body."""
    return Nginx("upstream", base, port, f'location / {{ default_type text/plain; return 200 "{body}"; }}')


def nginx_proxy(base: Path, name: str, port: int, upstream_port: int, workers: int = 1) -> Nginx:
    """nginx as a reverse proxy with keep-alive upstream connections (the reference proxy)."""
    return Nginx(
        name, base, port,
        "location / { proxy_pass http://backend; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; proxy_set_header Host $host; '
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }",
        http_extra=f"upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 1000000; }}",
        workers=workers,
    )  # fmt: skip


# ---- wrk --------------------------------------------------------------------------------------------------


def wrk_script(base: Path, name: str, headers: dict[str, str]) -> Path:
    """A wrk Lua script setting request headers (keeps tokens out of argv)."""
    path = base / f"{name}.lua"
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(
    url: str, *, cores: str, connections: int, duration: float, threads: int = 1, script: Path | None = None,
    meters: dict[str, Callable[[], float]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One wrk run; each meter's CPU seconds over the run are reported as ``cpu_<name>``."""
    cmd = ["taskset", "-c", cores, "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--latency", *(["-s", str(script)] if script else []), url]  # fmt: skip
    meters = meters or {}
    before, cores0, t0 = {k: m() for k, m in meters.items()}, core_times(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    after, cores1, wall = {k: m() for k, m in meters.items()}, core_times(), time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    result = parse_wrk(out.stdout)
    for k in meters:
        result[f"cpu_{k}"] = after[k] - before[k]
    result["wall"] = wall
    result["core_busy_pct"] = {
        c: round((cores1[c][0] - cores0[c][0]) / max(1, cores1[c][1] - cores0[c][1]) * 100, 1) for c in cores1
    }
    return result


def python() -> str:
    return sys.executable
