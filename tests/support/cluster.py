"""Real control-plane clusters for integration tests: node processes on loopback, stopped by PID.

Each node runs as ``python -m cluster run --config node.toml`` with its own data dir under a
pytest tmp dir, in plain HTTP (``insecure = true``): these clusters test Raft and the API, not TLS
(tests/integration/test_tls.py does). ``kill`` is SIGKILL (no cleanup, as in a crash); ``stop`` is SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.procs import free_ports
from cluster.auth import mint_token, new_secret
from tests.support.http import Response, request, wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the ephemeral range (see cli.procs.free_ports: no outgoing connection of
    another test process can take it before the server binds it)."""
    return free_ports(1, host)[0]


# A just-started cluster may hold a few elections in its first half second.
LEADER_SETTLED = 0.8


@dataclass
class NodeProc:
    id: str
    raft_addr: str
    admin_addr: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.admin_addr}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        path = self.dir / "node.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    def __init__(
        self, base: Path, size: int = 3, fsync: bool = True, raft: dict[str, Any] | None = None,
        extra_toml: str = "",
    ) -> None:
        self.base = base
        self.secret = new_secret()
        (base / "secret").write_text(self.secret)
        self.token = mint_token(self.secret, "admin", "test-admin", 3600)
        self.viewer_token = mint_token(self.secret, "viewer", "test-viewer", 3600)
        self.proxy_token = mint_token(self.secret, "proxy", "test-proxy", 3600)
        self.nodes: list[NodeProc] = []
        for i in range(1, size + 1):
            node_dir = base / f"n{i}"
            node_dir.mkdir()
            self.nodes.append(
                NodeProc(f"n{i}", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", node_dir)
            )
        for node in self.nodes:
            peers = "".join(
                f'[[peers]]\nid = "{p.id}"\nraft_addr = "{p.raft_addr}"\nadmin_url = "{p.url}"\n\n'
                for p in self.nodes
                if p is not node
            )
            raft_lines = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n"
                                 for k, v in (raft or {}).items())  # TOML booleans are lower-case
            (node.dir / "node.toml").write_text(
                f'node_id = "{node.id}"\nraft_addr = "{node.raft_addr}"\nadmin_addr = "{node.admin_addr}"\n'
                f'data_dir = "data"\nsecret_file = "{base / "secret"}"\nfsync = {str(fsync).lower()}\n'
                f"insecure = true\n{extra_toml}\n"
                f"{peers}" + (f"[raft]\n{raft_lines}" if raft_lines else "")
            )

    # -- process control -----------------------------------------------------------------------------
    def start(self, node: NodeProc) -> None:
        assert not node.alive, f"{node.id} already running"
        log = open(node.dir / "node.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "run", "--config", str(node.dir / "node.toml")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True,
        )
        log.close()

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.alive:
                self.start(node)

    def kill(self, node: NodeProc) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)
        node.proc = None  # deliberately down: not an unexpected exit

    def kill_all(self) -> None:
        procs = [n.proc for n in self.nodes if n.alive]
        for p in procs:
            assert p is not None
            p.send_signal(signal.SIGKILL)
        for p in procs:
            assert p is not None
            p.wait(10)
        for n in self.nodes:
            n.proc = None

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)

    # -- observation ---------------------------------------------------------------------------------
    def status(self, node: NodeProc) -> dict[str, Any] | None:
        try:
            r = request("GET", node.url + "/v1/status", token=self.token, timeout=1.0)
        except OSError:
            return None
        return r.json() if r.status == 200 else None

    def leader(self) -> NodeProc | None:
        for node in self.nodes:
            if not node.alive:
                continue
            st = self.status(node)
            if st and st["role"] == "leader" and st["has_quorum"]:
                return node
        return None

    def wait_leader(self, timeout: float = 20.0) -> NodeProc:
        def check() -> NodeProc | None:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    raise AssertionError(f"{n.id} exited:\n{n.log_tail()}")
            return self.leader()

        leader: NodeProc = wait_for(check, timeout, "a leader with quorum")
        return leader

    def wait_ready(self, timeout: float = 30.0) -> NodeProc:
        """A leader exists, every running node has applied its commit index, and it still leads
        afterwards (a just-started cluster may hold a few elections in a row: a test that acts on
        "the leader" must not get one that was already deposed)."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.wait_leader(max(deadline - time.monotonic(), 1.0))

            def all_applied(leader: NodeProc = leader) -> bool:
                lst = self.status(leader)
                if not lst:
                    return False
                for n in self.nodes:
                    if not n.alive:
                        continue
                    st = lst if n is leader else self.status(n)  # one request to the leader per poll
                    if not st or st["applied_index"] < lst["commit_index"]:
                        return False
                return True

            wait_for(all_applied, max(deadline - time.monotonic(), 1.0), "all nodes applied")
            if self._holds(leader, LEADER_SETTLED) or time.monotonic() >= deadline:
                return leader

    def _holds(self, leader: NodeProc, seconds: float) -> bool:
        """``leader`` still leads, in the same term, over ``seconds`` (polled)."""
        first = self.status(leader)
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            st = self.status(leader)
            if not st or st["role"] != "leader" or not first or st["term"] != first["term"]:
                return False
            time.sleep(0.25)  # slow enough for a node with a small per-token rate limit (5/s in test_limits)
        return True

    def follower(self) -> NodeProc:
        leader = self.wait_leader()
        return next(n for n in self.nodes if n is not leader and n.alive)

    # -- API helpers ---------------------------------------------------------------------------------
    def api(self, node: NodeProc, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        kw.setdefault("token", self.token)
        return request(method, node.url + path, json_body=body, **kw)


@contextlib.contextmanager
def running_cluster(base: Path, **kw: Any) -> Iterator[Cluster]:
    """A started cluster with a leader, every node stopped by PID on the way out, also on failure."""
    c = Cluster(base, **kw)
    c.start_all()
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop_all()


def upstream_body(port: int = 9001) -> dict[str, Any]:
    return {"targets": [{"host": "127.0.0.1", "port": port, "weight": 1}]}


def route_body(upstream: str, path: str = "/api") -> dict[str, Any]:
    return {"paths": [path], "upstream": upstream}
