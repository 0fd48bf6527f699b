"""Real proxy and upstream processes for data-plane integration tests, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import ROOT, Cluster, free_port
from tests.support.http import Response, request, wait_for


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True,
        )
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class UpstreamProc:
    name: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn(["demo-upstream", "--listen", f"127.0.0.1:{self.port}", "--name", self.name],
                           self.dir / f"upstream-{self.name}.log")
        wait_for(lambda: request("GET", f"http://127.0.0.1:{self.port}/health", timeout=1).status == 200,
                 15, f"upstream {self.name} up")

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


@dataclass
class ProxyProc:
    id: str
    cp_urls: list[str]
    token_file: Path
    dir: Path
    port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)  # more `proxy run` flags, e.g. --workers 2
    env: dict[str, str] = field(default_factory=dict)  # more environment, e.g. GWADM_PROXY_DEBUG_HOOKS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "proxy.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn(
            ["proxy", "run", "--cp", ",".join(self.cp_urls), "--listen", f"127.0.0.1:{self.port}",
             "--status-listen", f"127.0.0.1:{self.status_port}", "--state-dir", str(self.dir / "state"),
             "--token-file", str(self.token_file), "--id", self.id, *self.extra_args],
            self.log_path, self.env,
        )
        wait_for(self._status_up, 20, f"proxy {self.id} status server")

    def _status_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"proxy {self.id} exited:\n{self.log_tail()}")
        try:
            return request("GET", self.status_url + "/live", timeout=1).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL)
        self.proc = None

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = request("GET", self.status_url + "/status", timeout=2).json()
        return data

    def get(self, path: str, **kw: Any) -> Response:
        kw.setdefault("timeout", 5)
        return request(kw.pop("method", "GET"), self.url + path, **kw)

    def wait_revision(self, revision: int, timeout: float = 15, mode: str | None = "synced") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status()
            if st["revision"] >= revision and (mode is None or st["mode"] == mode):
                return st
            return None

        result: dict[str, Any] = wait_for(check, timeout, f"proxy {self.id} at revision {revision} ({mode})")
        return result

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class DataPlaneEnv:
    """A CP cluster, upstream processes and proxies, all under one tmp dir."""

    def __init__(
        self, base: Path, proxies: int = 2, upstreams: tuple[str, ...] = ("a", "b"), cp_toml: str = ""
    ) -> None:
        self.base = base
        (base / "cp").mkdir()
        self.cluster = Cluster(base / "cp", extra_toml=cp_toml)
        self.token_file = base / "proxy.token"
        self.token_file.write_text(self.cluster.proxy_token)
        self.upstreams = {name: UpstreamProc(name, free_port(), base) for name in upstreams}
        cp_urls = [n.url for n in self.cluster.nodes]
        self.proxies = [
            ProxyProc(f"p{i + 1}", cp_urls, self.token_file, base / f"p{i + 1}") for i in range(proxies)
        ]

    def start(self) -> None:
        for u in self.upstreams.values():
            u.start()
        self.cluster.start_all()
        self.cluster.wait_ready()
        for p in self.proxies:
            p.start()

    def __enter__(self) -> DataPlaneEnv:
        """Started; every process is stopped again if starting fails half-way."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in self.proxies:
            p.stop()
        self.cluster.stop_all()
        for u in self.upstreams.values():
            u.stop()

    def put(self, kind: str, rid: str, body: dict[str, Any], node: int = 0) -> int:
        r = self.cluster.api(self.cluster.nodes[node], "PUT", f"/v1/{kind}/{rid}", body)
        assert r.status in (200, 201), r
        return int(r.json()["revision"])

    def delete(self, kind: str, rid: str, node: int = 0) -> int:
        r = self.cluster.api(self.cluster.nodes[node], "DELETE", f"/v1/{kind}/{rid}")
        assert r.status == 200, r
        return int(r.json()["revision"])

    def upstream_spec(self, *names: str, **extra: Any) -> dict[str, Any]:
        return {"targets": [{"host": "127.0.0.1", "port": self.upstreams[n].port} for n in names], **extra}
