"""A 3-member etcd cluster on loopback (Debian's etcd-server), each member stopped by PID."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

from bench.procs import stop_pid, which
from tests.support.cluster import free_port
from tests.support.http import request, wait_for


class EtcdMember:
    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.client_port, self.peer_port = free_port(), free_port()
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Etcd:
    """etcd defaults otherwise (heartbeat 100 ms, election timeout 1000 ms, fsync on every commit)."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.members = [EtcdMember(f"e{i + 1}", base) for i in range(size)]
        self.initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def start(self, m: EtcdMember, cores: str | None = None) -> None:
        cmd = [
            which("etcd") or "etcd", "--name", m.name, "--data-dir", str(m.dir / "data"),
            "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", self.initial, "--initial-cluster-token", "gwadm-bench",
            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        if cores is not None:
            cmd = ["taskset", "-c", cores, *cmd]
        with open(m.dir / "etcd.log", "ab") as log:
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_all(self, cores: str | None = None) -> None:
        for m in self.members:
            if not m.alive:
                self.start(m, cores)

    def kill(self, m: EtcdMember) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(10)
        m.proc = None

    def stop_all(self) -> None:
        for m in self.members:
            stop_pid(m.proc)
            m.proc = None

    def status(self, m: EtcdMember) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            r = request("POST", m.url + "/v3/maintenance/status", json_body={}, timeout=1)
            if r.status == 200:
                data: dict[str, Any] = json.loads(r.body)
                return data
        return None

    def leader(self) -> EtcdMember | None:
        """The member that says it leads, agreed by every live member."""
        statuses = {m.name: self.status(m) for m in self.members if m.alive}
        if not statuses or any(s is None for s in statuses.values()):
            return None
        leaders = {str(s["leader"]) for s in statuses.values() if s}
        if len(leaders) != 1:
            return None
        lid = leaders.pop()
        return next(
            (
                m
                for m in self.members
                if m.alive and str((statuses[m.name] or {})["header"]["member_id"]) == lid
            ),
            None,
        )

    def wait_ready(self, timeout: float = 30) -> EtcdMember:
        def check() -> EtcdMember | None:
            leader = self.leader()
            if leader is None:
                return None
            r = request(
                "POST", leader.url + "/v3/kv/put", json_body={"key": "cmVhZHk=", "value": "MQ=="}, timeout=2
            )
            return leader if r.status == 200 else None

        result: EtcdMember = wait_for(check, timeout, "etcd cluster ready", interval=0.1)
        return result
