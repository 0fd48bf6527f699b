"""Start, kill (SIGKILL), pause (SIGSTOP/SIGCONT) and restart the members of a chaos run by PID.

Every member gets its own loopback address inside the run's namespace (chaos/net.py), so all of
them can use the same ports: CP nodes Raft :7000 and admin :8000, proxies :8080 and status :8081,
the upstream :9000. CP nodes and proxies bind their outgoing connections to their own address.
``close`` kills everything (paused members are continued first so that SIGKILL is delivered at once),
and it runs from the runner's ``finally`` — also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.auth import mint_token, new_secret

ROOT = Path(__file__).resolve().parents[1]
RAFT_PORT, ADMIN_PORT = 7000, 8000
PROXY_PORT, PROXY_STATUS_PORT = 8080, 8081
UPSTREAM_PORT = 9000


@dataclass
class Member:
    name: str
    kind: str  # "node" | "proxy" | "upstream"
    addr: str
    argv: list[str]
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def admin_url(self) -> str:
        return f"http://{self.addr}:{ADMIN_PORT}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.addr}:{PROXY_PORT}"

    @property
    def status_url(self) -> str:
        return f"http://{self.addr}:{PROXY_STATUS_PORT}/status"


class Controller:
    """The members of one run: ``nodes`` (n1..nN on 127.0.0.11+), ``proxies`` (p1.. on 127.0.0.21+)
    and one upstream (127.0.0.31)."""

    def __init__(self, base: Path, nodes: int, proxies: int, raft: dict[str, Any] | None = None) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.secret = new_secret()
        secret_file = base / "secret"
        secret_file.write_text(self.secret)
        secret_file.chmod(0o600)
        self.admin_token = mint_token(self.secret, "admin", "chaos", 24 * 3600)
        proxy_token_file = base / "proxy.token"
        proxy_token_file.write_text(mint_token(self.secret, "proxy", "chaos-proxy", 24 * 3600))
        self.nodes = [self._node(i, nodes, secret_file, raft or {}) for i in range(1, nodes + 1)]
        cp_urls = ",".join(n.admin_url for n in self.nodes)
        self.proxies = [self._proxy(i, cp_urls, proxy_token_file) for i in range(1, proxies + 1)]
        up_dir = base / "upstream"
        up_dir.mkdir(exist_ok=True)
        self.upstream = Member(
            "upstream", "upstream", "127.0.0.31",
            [sys.executable, "-m", "cli", "demo-upstream", "--listen", f"127.0.0.31:{UPSTREAM_PORT}", "--name", "u"],
            up_dir,
        )  # fmt: skip

    def _node(self, i: int, count: int, secret_file: Path, raft: dict[str, Any]) -> Member:
        addr = f"127.0.0.{10 + i}"
        node_dir = self.base / f"n{i}"
        node_dir.mkdir(exist_ok=True)
        peers = "".join(
            f'[[peers]]\nid = "n{j}"\nraft_addr = "127.0.0.{10 + j}:{RAFT_PORT}"\n'
            f'admin_url = "http://127.0.0.{10 + j}:{ADMIN_PORT}"\n\n'
            for j in range(1, count + 1)
            if j != i
        )
        raft_lines = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n" for k, v in raft.items())
        (node_dir / "node.toml").write_text(
            f'node_id = "n{i}"\nraft_addr = "{addr}:{RAFT_PORT}"\nadmin_addr = "{addr}:{ADMIN_PORT}"\n'
            f'source_address = "{addr}"\ndata_dir = "data"\nsecret_file = "{secret_file}"\n'
            "insecure = true\n\n"  # plain HTTP inside the run's private namespace: faults, not TLS, are tested
            + peers
            + (f"[raft]\n{raft_lines}" if raft_lines else "")
        )
        argv = [sys.executable, "-m", "cluster", "run", "--config", str(node_dir / "node.toml")]
        return Member(f"n{i}", "node", addr, argv, node_dir)

    def _proxy(self, i: int, cp_urls: str, token_file: Path) -> Member:
        addr = f"127.0.0.{20 + i}"
        pdir = self.base / f"p{i}"
        pdir.mkdir(exist_ok=True)
        argv = [
            sys.executable, "-m", "cli", "proxy", "run", "--cp", cp_urls,
            "--listen", f"{addr}:{PROXY_PORT}", "--status-listen", f"{addr}:{PROXY_STATUS_PORT}",
            "--state-dir", str(pdir / "state"), "--token-file", str(token_file), "--id", f"p{i}",
            "--source-address", addr, "--log-level", "WARNING",
        ]  # fmt: skip
        return Member(f"p{i}", "proxy", addr, argv, pdir)

    @property
    def members(self) -> list[Member]:
        return [*self.nodes, *self.proxies, self.upstream]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    # -- process control -------------------------------------------------------------------------
    def start(self, m: Member) -> None:
        if m.alive:
            return
        log = open(m.dir / "process.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        m.proc = subprocess.Popen(m.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()
        m.paused = False

    def kill(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)
        m.paused = False

    def pause(self, m: Member) -> None:
        if m.alive and not m.paused:
            assert m.proc is not None
            m.proc.send_signal(signal.SIGSTOP)
            m.paused = True

    def resume(self, m: Member) -> None:
        if m.alive and m.paused:
            assert m.proc is not None
            m.proc.send_signal(signal.SIGCONT)
        m.paused = False

    def start_all(self, timeout: float = 30.0) -> None:
        self.start(self.upstream)
        for n in self.nodes:
            self.start(n)
        self.wait_leader(timeout)
        for p in self.proxies:
            self.start(p)

    def close(self) -> None:
        """Kill every member and reap it; safe to call twice and from ``finally``."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                if m.paused:
                    m.proc.send_signal(signal.SIGCONT)
                m.proc.send_signal(signal.SIGKILL)
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            m.paused = False

    def dead_members(self) -> list[str]:
        """Members that exited although nobody killed them (a crash is a finding)."""
        return [m.name for m in self.members if m.proc is not None and m.proc.poll() is not None]

    # -- observation -------------------------------------------------------------------------------
    def node_status(self, m: Member, timeout: float = 0.5) -> dict[str, Any] | None:
        return get_json(m.admin_url + "/v1/status", self.admin_token, timeout)

    def member_ids(self, m: Member, timeout: float = 2.0) -> list[str]:
        """The Raft configuration as node ``m`` sees it ([] if it does not answer)."""
        data = get_json(m.admin_url + "/v1/cluster/members", self.admin_token, timeout)
        return [str(x["id"]) for x in data.get("members", [])] if data else []

    def proxy_status(self, m: Member, timeout: float = 0.5) -> dict[str, Any] | None:
        return get_json(m.status_url, None, timeout)

    def leader(self) -> Member | None:
        """The live, unpaused node that claims leadership with quorum in the highest term."""
        best: tuple[int, Member] | None = None
        for n in self.nodes:
            if not n.alive or n.paused:
                continue
            st = self.node_status(n)
            if st and st.get("role") == "leader" and st.get("has_quorum"):
                term = int(st.get("term") or 0)
                if best is None or term > best[0]:
                    best = (term, n)
        return best[1] if best else None

    def wait_leader(self, timeout: float = 30.0) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        tails = {n.name: tail(n.dir / "process.log") for n in self.nodes}
        raise RuntimeError(f"no leader within {timeout}s; logs: {json.dumps(tails)[:3000]}")


def get_json(url: str, token: str | None, timeout: float) -> dict[str, Any] | None:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.HTTPError):
        return None
    return body if isinstance(body, dict) else None


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
