"""Local cluster files and restarts, with process spawning replaced by a recorder (no sleeps)."""

from __future__ import annotations

import json
import os
import socket
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cli.layout import Layout, load_cluster
from cli.supervisor import Supervisor, SupervisorError
from cluster.auth import verify_token


class FakeSpawner:
    """Records what would be started; pids that cannot exist, so nothing ever looks running."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Path]] = []

    def __call__(self, argv: list[str], log: Path) -> int:
        self.calls.append((argv, log))
        return 2**22 + 1000 + len(self.calls)  # above the default pid_max: never a live process


def up(tmp: Path, spawner: FakeSpawner, **kw: Any) -> Any:
    return Supervisor(tmp / "c", spawner=spawner).up(wait=False, **kw)


def test_fresh_up_writes_cluster_json_as_design_section_7(tmp_path: Path) -> None:
    spawner = FakeSpawner()
    res = up(tmp_path, spawner, nodes=3, proxies=2)
    assert res.fresh and res.started == ["n1", "n2", "n3", "p1", "p2", "demo"]
    data = json.loads((tmp_path / "c" / "cluster.json").read_text())
    assert list(data) == ["nodes", "proxies", "upstreams", "token_file", "tls"]
    assert data["tls"] == {"ca": str((tmp_path / "c" / "tls" / "ca.pem").resolve()), "mtls": False}
    assert [list(n) for n in data["nodes"]] == [["id", "admin_url", "raft_addr", "pid"]] * 3
    assert [list(p) for p in data["proxies"]] == [["id", "url", "status_url", "pid"]] * 2
    assert [list(u) for u in data["upstreams"]] == [["id", "url", "pid"]]
    assert [n["id"] for n in data["nodes"]] == ["n1", "n2", "n3"]
    assert all(n["pid"] for n in data["nodes"] + data["proxies"] + data["upstreams"])
    assert data["token_file"] == str((tmp_path / "c" / "admin.token").resolve())
    urls = [n["admin_url"] for n in data["nodes"]] + [p["url"] for p in data["proxies"]]
    ports = [int(u.rsplit(":", 1)[1]) for u in urls] + [
        int(n["raft_addr"].rsplit(":", 1)[1]) for n in data["nodes"]
    ]
    assert all(u.startswith("https://127.0.0.1:") for u in urls)  # TLS by default
    assert len(set(ports)) == len(ports)


def test_insecure_up_is_plain_http_without_certificates(tmp_path: Path) -> None:
    res = up(tmp_path, FakeSpawner(), nodes=1, proxies=1, tls=False)
    d = (tmp_path / "c").resolve()
    data = json.loads((d / "cluster.json").read_text())
    assert "tls" not in data and not (d / "tls").exists()
    assert res.cluster["nodes"][0]["admin_url"].startswith("http://")
    assert res.cluster["proxies"][0]["url"].startswith("http://")
    conf = tomllib.loads((d / "nodes" / "n1" / "node.toml").read_text())
    assert conf["insecure"] is True and "tls_cert" not in conf


def test_secret_and_tokens_are_private_and_valid(tmp_path: Path) -> None:
    up(tmp_path, FakeSpawner())
    d = tmp_path / "c"
    for name in ("secret", "admin.token", "proxy.token"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    secret = (d / "secret").read_text().strip()
    assert len(secret) >= 40
    assert verify_token(secret, (d / "admin.token").read_text().strip())["role"] == "admin"
    assert verify_token(secret, (d / "proxy.token").read_text().strip())["role"] == "proxy"


def test_node_toml_contents(tmp_path: Path) -> None:
    res = up(tmp_path, FakeSpawner(), nodes=3, proxies=0)
    d = (tmp_path / "c").resolve()
    nodes = res.cluster["nodes"]
    conf = tomllib.loads((d / "nodes" / "n2" / "node.toml").read_text())
    assert conf["node_id"] == "n2"
    assert conf["raft_addr"] == nodes[1]["raft_addr"]
    assert "https://" + conf["admin_addr"] == nodes[1]["admin_url"]
    assert conf["tls_cert"] == str(d / "tls" / "n2.pem") and conf["tls_key"] == str(d / "tls" / "n2.key")
    assert conf["ca"] == str(d / "tls" / "ca.pem") and conf["mtls"] is False and "insecure" not in conf
    assert stat.S_IMODE(os.stat(d / "tls" / "n2.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / "tls" / "ca.key").st_mode) == 0o600
    assert conf["data_dir"] == str(d / "nodes" / "n2" / "data") and Path(conf["data_dir"]).is_dir()
    assert conf["secret_file"] == str(d / "secret")
    assert conf["fsync"] is True
    assert conf["peers"] == [
        {"id": n["id"], "raft_addr": n["raft_addr"], "admin_url": n["admin_url"]}
        for n in nodes
        if n["id"] != "n2"
    ]


def test_member_command_lines(tmp_path: Path) -> None:
    spawner = FakeSpawner()
    res = up(tmp_path, spawner, nodes=1, proxies=1)
    d = (tmp_path / "c").resolve()
    by_id = {
        argv[argv.index("--id") + 1] if "--id" in argv else argv[3]: (argv, log)
        for argv, log in spawner.calls
    }
    node_argv, node_log = spawner.calls[0]
    assert node_argv[1:] == ["-m", "cli", "node", "run", "--config", str(d / "nodes" / "n1" / "node.toml")]
    assert node_log == d / "nodes" / "n1" / "node.log"
    proxy_argv, proxy_log = by_id["p1"]
    p = res.cluster["proxies"][0]
    assert proxy_argv[1:] == [
        "-m", "cli", "proxy", "run", "--cp", res.cluster["nodes"][0]["admin_url"],
        "--listen", p["url"][len("https://"):], "--status-listen", p["status_url"][len("http://"):],
        "--state-dir", str(d / "proxies" / "p1"), "--token-file", str(d / "proxy.token"), "--id", "p1",
        "--ca", str(d / "tls" / "ca.pem"), "--tls-cert", str(d / "tls" / "p1.pem"), "--tls-key", str(d / "tls" / "p1.key"),
        "--listen-tls-cert", str(d / "tls" / "p1.pem"), "--listen-tls-key", str(d / "tls" / "p1.key"),
    ]  # fmt: skip
    assert proxy_log == d / "proxies" / "p1" / "proxy.log"
    up_argv, _ = spawner.calls[-1]
    assert up_argv[1:] == [
        "-m",
        "cli",
        "demo-upstream",
        "--listen",
        res.cluster["upstreams"][0]["url"][7:],
        "--name",
        "demo",
    ]


def test_second_up_reuses_ports_secret_and_restarts_members(tmp_path: Path) -> None:
    first = FakeSpawner()
    res1 = up(tmp_path, first, nodes=3, proxies=1)
    secret = (tmp_path / "c" / "secret").read_text()
    second = FakeSpawner()
    res2 = up(tmp_path, second, nodes=3, proxies=1)
    assert not res2.fresh and res2.warnings == []

    def strip(c: dict[str, Any]) -> dict[str, Any]:
        return {
            g: [{k: v for k, v in m.items() if k != "pid"} for m in c[g]]
            for g in ("nodes", "proxies", "upstreams")
        }

    assert strip(res2.cluster) == strip(res1.cluster)
    assert [a for a, _ in second.calls] == [a for a, _ in first.calls]
    assert (tmp_path / "c" / "secret").read_text() == secret
    on_disk = load_cluster(Layout.of(tmp_path / "c"))
    assert [n["pid"] for n in on_disk["nodes"]] == [n["pid"] for n in res2.cluster["nodes"]]


def test_second_up_with_other_sizes_warns_and_keeps_the_cluster(tmp_path: Path) -> None:
    up(tmp_path, FakeSpawner(), nodes=3, proxies=1)
    res = up(tmp_path, FakeSpawner(), nodes=5, proxies=0)
    assert len(res.cluster["nodes"]) == 3 and len(res.cluster["proxies"]) == 1
    assert "already holds 3 nodes and 1 proxies" in res.warnings[0]
    assert up(tmp_path, FakeSpawner()).warnings == []  # sizes not asked for: the cluster as it is, quietly
    assert up(tmp_path, FakeSpawner(), nodes=3).warnings == []


def test_base_port_layout_and_busy_port(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        with pytest.raises(SupervisorError, match=f"ports already in use on 127.0.0.1: {busy}"):
            Supervisor(tmp_path / "busy", spawner=FakeSpawner()).create(1, 0, base_port=busy)
    finally:
        holder.close()


def test_start_refuses_when_a_member_port_is_taken(tmp_path: Path) -> None:
    res = up(tmp_path, FakeSpawner(), nodes=1, proxies=0)
    port = int(res.cluster["nodes"][0]["admin_url"].rsplit(":", 1)[1])
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        with pytest.raises(SupervisorError, match=f"cannot start n1: 127.0.0.1:{port} already in use"):
            up(tmp_path, FakeSpawner(), nodes=1, proxies=0)
    finally:
        holder.close()


@pytest.mark.parametrize("nodes", [0, 2, 4])
def test_node_count_must_be_odd(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(SupervisorError, match="odd"):
        up(tmp_path, FakeSpawner(), nodes=nodes)
    assert not (tmp_path / "c").exists()


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(SupervisorError, match="not empty"):
        up(tmp_path, FakeSpawner())


def test_stop_and_select(tmp_path: Path) -> None:
    up(tmp_path, FakeSpawner(), nodes=3, proxies=1)
    sup = Supervisor(tmp_path / "c", spawner=FakeSpawner())
    rows = sup.stop(["n2", "demo"], timeout=0.1)
    assert rows == [
        {"id": "n2", "pid": rows[0]["pid"], "result": "not running"},
        {"id": "demo", "pid": rows[1]["pid"], "result": "not running"},
    ]
    data = load_cluster(sup.layout)
    assert data["nodes"][1]["pid"] is None and data["nodes"][0]["pid"] is not None
    with pytest.raises(SupervisorError, match="no member named n9"):
        sup.stop(["n9"])


def test_commands_on_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SupervisorError, match="does not exist"):
        Supervisor(tmp_path / "none").down()


def test_each_member_is_recognised_by_its_own_command_line_only(tmp_path: Path) -> None:
    spawner = FakeSpawner()
    res = up(tmp_path, spawner, nodes=3, proxies=2)
    sup = Supervisor(tmp_path / "c")
    members = sup.members(res.cluster)
    joined = [" ".join(argv) for argv, _ in spawner.calls]
    for i, (group, m) in enumerate(members):
        matches = [j for j, line in enumerate(joined) if all(mark in line for mark in sup.markers(group, m))]
        assert matches == [i], m["id"]
