"""End to end: `gwadm node add/remove` on a local cluster of real node processes, and their errors."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import procs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def gwadm(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with only what the arguments say (no GWADM_* endpoints or tokens)."""
    env = {**procs.child_env(), "GWADM_RETRY_FOR": "1"}
    for var in ("GWADM_DIR", "GWADM_ENDPOINTS", "GWADM_TOKEN", "GWADM_TOKEN_FILE", "GWADM_SECRET_FILE"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@contextlib.contextmanager
def local_cluster_dir(base: Path) -> Iterator[Path]:
    """A directory for `gwadm cluster up`; whatever runs there is stopped at the end."""
    d = base / "gw"
    try:
        yield d
    finally:
        if (d / "cluster.json").exists():
            gwadm("cluster", "down", "--dir", str(d), "--timeout", "5")


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    with local_cluster_dir(tmp_path) as d:
        yield d


def nodes_of(d: Path) -> dict[str, dict[str, object]]:
    return {n["id"]: n for n in json.loads((d / "cluster.json").read_text())["nodes"]}


def test_node_add_and_remove_on_a_local_cluster_survive_a_full_restart(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    up = gwadm("cluster", "up", "--dir", d, "--nodes", "3", "--proxies", "0", "--json", "--timeout", "40")
    assert up.returncode == 0, up.stderr

    add = gwadm("node", "add", "n4", "--dir", d, "--json")
    assert add.returncode == 0, add.stderr
    assert [m["id"] for m in json.loads(add.stdout)["members"]] == ["n1", "n2", "n3", "n4"]
    n4 = nodes_of(cluster_dir)["n4"]
    assert procs.is_alive(n4["pid"])  # type: ignore[arg-type]
    assert "n4" in (cluster_dir / "nodes" / "n1" / "node.toml").read_text()  # the others' peers include it
    status = json.loads(gwadm("status", "--dir", d, "--json").stdout)
    assert sorted(n["id"] for n in status["nodes"] if n["reachable"]) == ["n1", "n2", "n3", "n4"]
    put = gwadm("upstream", "put", "u1", "--dir", d, "--data", '{"targets": [{"host": "127.0.0.1", "port": 9}]}')
    assert put.returncode == 0, put.stderr

    n2_pid = nodes_of(cluster_dir)["n2"]["pid"]
    remove = gwadm("node", "remove", "n2", "--dir", d)
    assert remove.returncode == 0, remove.stderr
    assert "n2 removed; members: n1, n3, n4" in remove.stdout
    assert "n2" not in nodes_of(cluster_dir) and not procs.is_alive(n2_pid)  # type: ignore[arg-type]
    assert not (cluster_dir / "nodes" / "n2").exists()
    assert list((cluster_dir / "nodes").glob("n2.removed-*"))

    assert gwadm("cluster", "down", "--dir", d).returncode == 0
    again = gwadm("cluster", "up", "--dir", d, "--proxies", "0", "--json", "--timeout", "40")
    assert again.returncode == 0, again.stderr
    status = json.loads(gwadm("status", "--dir", d, "--json").stdout)
    assert sorted(n["id"] for n in status["nodes"]) == ["n1", "n3", "n4"]
    assert all(n["reachable"] for n in status["nodes"])
    listing = json.loads(gwadm("upstream", "list", "--dir", d, "--json").stdout)
    assert [u["id"] for u in listing["items"]] == ["u1"]

    # bad arguments and refused changes: one line each, nothing changed
    one_line_error(gwadm("node", "add", "bad id!", "--dir", d), "ID", "1-64 of")
    one_line_error(gwadm("node", "add", "n5", "--raft-addr", "nonsense", "--dir", d), "--raft-addr", "host:port")
    one_line_error(gwadm("node", "add", "n1", "--dir", d), "already has a node n1")
    one_line_error(gwadm("node", "remove", "n9", "--dir", d), "no member n9", "404")
    one_line_error(gwadm("node", "add", "n5", "-e", "http://127.0.0.1:1", "--token", "t"), "--raft-addr")
    assert sorted(nodes_of(cluster_dir)) == ["n1", "n3", "n4"]


def test_membership_and_token_commands_reject_bad_arguments_in_one_line(
    dead_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GWADM_RETRY_FOR", "0")
    for var in ("GWADM_DIR", "GWADM_ENDPOINTS", "GWADM_TOKEN", "GWADM_TOKEN_FILE", "GWADM_SECRET_FILE"):
        monkeypatch.delenv(var, raising=False)

    def error(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        return lines[0]

    remote = ("-e", dead_url, "--token", "t")
    assert "--admin-addr" in error("node", "add", "n4", "--raft-addr", "127.0.0.1:1", *remote)
    assert "must look like host:port" in error("node", "add", "n4", "--admin-addr", "h", "--raft-addr", "h:1", *remote)
    assert "not a valid float" in error("node", "add", "n4", "--timeout", "soon", *remote)
    assert "no control-plane node reachable" in error("node", "remove", "n2", *remote)
    assert "cluster directory" in error("node", "remove", "n2") and "does not exist" in error("node", "add", "n4")
    assert "--generation is for offline minting" in error("token", "create", "--generation", "1", *remote)
    assert "Missing argument" in error("token", "revoke", *remote)
    assert "no control-plane node reachable" in error("token", "rotate", *remote)
