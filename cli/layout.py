"""Files of a local cluster directory (contracts §6, DESIGN §7) — paths, cluster.json, node.toml.

```
DIR/cluster.json          {"nodes": [{id, admin_url, raft_addr, pid}], "proxies": [{id, url, status_url, pid}],
                           "upstreams": [{id, url, pid}], "token_file": "<abs path of admin.token>"}
DIR/secret                cluster secret (0600)
DIR/admin.token           admin JWT (0600);  DIR/proxy.token  proxy JWT (0600)
DIR/nodes/<id>/node.toml  settings for `gwadm node run --config`; data in nodes/<id>/data; log node.log
DIR/proxies/<id>/         proxy state dir; log proxy.log
DIR/upstreams/<id>.log    log of a demo upstream
```
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.procs import python_argv
from cluster.auth import mint_token, new_secret

MEMBER_GROUPS = ("nodes", "proxies", "upstreams")


class ClusterDirError(Exception):
    """DIR is missing, unreadable or does not hold a cluster."""


@dataclass(frozen=True)
class Layout:
    dir: Path

    @classmethod
    def of(cls, dir: str | os.PathLike[str]) -> Layout:
        return cls(Path(dir).expanduser().resolve())

    @property
    def cluster_json(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def secret(self) -> Path:
        return self.dir / "secret"

    @property
    def admin_token(self) -> Path:
        return self.dir / "admin.token"

    @property
    def proxy_token(self) -> Path:
        return self.dir / "proxy.token"

    def node_dir(self, node_id: str) -> Path:
        return self.dir / "nodes" / node_id

    def node_toml(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "node.toml"

    def proxy_dir(self, proxy_id: str) -> Path:
        return self.dir / "proxies" / proxy_id

    def log_file(self, group: str, member_id: str) -> Path:
        if group == "nodes":
            return self.node_dir(member_id) / "node.log"
        if group == "proxies":
            return self.proxy_dir(member_id) / "proxy.log"
        return self.dir / "upstreams" / f"{member_id}.log"

    def exists(self) -> bool:
        return self.cluster_json.is_file()


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600 from creation on, no window with wider perms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cluster(layout: Layout) -> dict[str, Any]:
    """Read and sanity-check DIR/cluster.json."""
    if not layout.dir.exists():
        raise ClusterDirError(f"cluster directory {layout.dir} does not exist (run `gwadm cluster up`)")
    if not layout.exists():
        raise ClusterDirError(f"{layout.cluster_json} not found: {layout.dir} holds no cluster")
    try:
        data = json.loads(layout.cluster_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterDirError(f"cannot read {layout.cluster_json}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(g, []), list) for g in MEMBER_GROUPS):
        raise ClusterDirError(f"{layout.cluster_json} is not a gwadm cluster file")
    for group in MEMBER_GROUPS:
        data.setdefault(group, [])
    return data


def save_cluster(layout: Layout, data: dict[str, Any]) -> None:
    ordered = {g: data.get(g, []) for g in MEMBER_GROUPS}
    ordered["token_file"] = data.get("token_file", str(layout.admin_token))
    if data.get("tls"):
        ordered["tls"] = data["tls"]  # {"ca": DIR/tls/ca.pem, "mtls": bool} (cli/certs.py); absent = --insecure
    write_atomic(layout.cluster_json, json.dumps(ordered, indent=2) + "\n")


def token_path(layout: Layout, data: dict[str, Any] | None) -> Path:
    raw = (data or {}).get("token_file")
    if not raw:
        return layout.admin_token
    p = Path(raw)
    return p if p.is_absolute() else layout.dir / p


# ---- node.toml ----------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def node_toml_text(layout: Layout, cluster: dict[str, Any], node_id: str, fsync: bool = True) -> str:
    """node.toml for one node: its own addresses plus every *other* node as ``[[peers]]``."""
    me = next(n for n in cluster["nodes"] if n["id"] == node_id)
    admin_addr = me["admin_url"].split("://", 1)[-1].rstrip("/")
    top = {
        "node_id": node_id,
        "raft_addr": me["raft_addr"],
        "admin_addr": admin_addr,
        "data_dir": str(layout.node_dir(node_id) / "data"),
        "secret_file": str(layout.secret),
        "fsync": fsync,
    }
    tls = cluster.get("tls")
    if tls:  # certificates of cli/certs.py: DIR/tls/<id>.pem + .key, the CA DIR/tls/ca.pem
        tls_dir = layout.dir / "tls"
        top.update({"tls_cert": str(tls_dir / f"{node_id}.pem"), "tls_key": str(tls_dir / f"{node_id}.key"),
                    "ca": str(tls["ca"]), "mtls": bool(tls.get("mtls"))})
    else:
        top["insecure"] = True
    lines = ["# written by `gwadm cluster up`; read by `gwadm node run --config`"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for peer in cluster["nodes"]:
        if peer["id"] == node_id:
            continue
        lines += ["", "[[peers]]"]
        lines += [f"{k} = {_toml_value(peer[k])}" for k in ("id", "raft_addr", "admin_url")]
    return "\n".join(lines) + "\n"


# ---- a new cluster ------------------------------------------------------------------------------
def plan_cluster(
    layout: Layout, nodes: int, proxies: int, ports: list[int], host: str, upstream_id: str
) -> dict[str, Any]:
    """The cluster.json of a new cluster (pids unset) from ``2*nodes + 2*proxies + 1`` ports. Pure."""
    if len(ports) != 2 * nodes + 2 * proxies + 1:
        raise ValueError("wrong number of ports")
    it = iter(ports)
    cluster: dict[str, Any] = {
        "nodes": [],
        "proxies": [],
        "upstreams": [],
        "token_file": str(layout.admin_token),
    }
    for i in range(1, nodes + 1):
        admin, raft = next(it), next(it)
        node = {
            "id": f"n{i}",
            "admin_url": f"http://{host}:{admin}",
            "raft_addr": f"{host}:{raft}",
            "pid": None,
        }
        cluster["nodes"].append(node)
    for i in range(1, proxies + 1):
        listen, status = next(it), next(it)
        proxy = {
            "id": f"p{i}",
            "url": f"http://{host}:{listen}",
            "status_url": f"http://{host}:{status}",
            "pid": None,
        }
        cluster["proxies"].append(proxy)
    cluster["upstreams"].append({"id": upstream_id, "url": f"http://{host}:{next(it)}", "pid": None})
    return cluster


def write_new_cluster(layout: Layout, cluster: dict[str, Any]) -> None:
    """Secret, tokens, per-member directories, node.toml files; cluster.json last (= complete)."""
    layout.dir.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    write_private(layout.secret, secret + "\n")
    write_private(layout.admin_token, mint_token(secret, "admin", "gwadm-cli") + "\n")
    write_private(layout.proxy_token, mint_token(secret, "proxy", "gwadm-proxies") + "\n")
    write_node_configs(layout, cluster)
    for p in cluster["proxies"]:
        layout.proxy_dir(p["id"]).mkdir(parents=True, exist_ok=True)
    (layout.dir / "upstreams").mkdir(exist_ok=True)
    save_cluster(layout, cluster)


def write_node_configs(layout: Layout, cluster: dict[str, Any]) -> None:
    """Data dir and node.toml of every node, peers = the other nodes of ``cluster``.

    After `gwadm node add/remove` the peers are rewritten too. The Raft log, not this file, is what
    decides membership once a node has data (cluster/membership.py); the peers matter for a node
    that starts with an empty data dir, which must find the current members.
    """
    for n in cluster["nodes"]:
        (layout.node_dir(n["id"]) / "data").mkdir(parents=True, exist_ok=True)
        layout.node_toml(n["id"]).write_text(node_toml_text(layout, cluster, n["id"]))


def retire_node_dir(layout: Layout, node_id: str) -> Path | None:
    """Move a removed node's directory aside (``nodes/<id>.removed-<unix time>``): its data must not
    be reused if a node of the same id is added later, but its log stays for reading."""
    src = layout.node_dir(node_id)
    if not src.exists():
        return None
    dst = src.with_name(f"{node_id}.removed-{int(time.time())}")
    src.rename(dst)
    return dst


# ---- members: command lines, ports, how to recognise them ----------------------------------------
def addr_of(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:7000`` (or ``127.0.0.1:7000``) -> ``("127.0.0.1", 7000)``."""
    host, _, port = url.split("://", 1)[-1].rstrip("/").rpartition(":")
    return host, int(port)


def _hostport(url: str) -> str:
    host, port = addr_of(url)
    return f"{host}:{port}"


def member_argv(layout: Layout, group: str, m: Mapping[str, Any], cluster: Mapping[str, Any]) -> list[str]:
    """The command line of a member: ``python -m cli node run ...`` / ``proxy run ...`` / ``demo-upstream``."""
    if group == "nodes":
        return python_argv("node", "run", "--config", str(layout.node_toml(m["id"])))
    if group == "proxies":
        cps = ",".join(n["admin_url"] for n in cluster["nodes"])
        listen, status = _hostport(m["url"]), _hostport(m["status_url"])
        tls: list[str] = []
        if cluster.get("tls"):
            cert, key = (str(layout.dir / "tls" / f"{m['id']}{ext}") for ext in (".pem", ".key"))
            tls = ["--ca", str(cluster["tls"]["ca"]), "--tls-cert", cert, "--tls-key", key]
            if str(m["url"]).startswith("https://"):
                tls += ["--listen-tls-cert", cert, "--listen-tls-key", key]
        return python_argv(
            "proxy", "run", "--cp", cps, "--listen", listen, "--status-listen", status,
            "--state-dir", str(layout.proxy_dir(m["id"])), "--token-file", str(layout.proxy_token), "--id", m["id"],
            *tls,
        )  # fmt: skip
    return python_argv("demo-upstream", "--listen", _hostport(m["url"]), "--name", m["id"])


def member_ports(group: str, m: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Every (host, port) a member listens on."""
    if group == "nodes":
        return [addr_of(m["admin_url"]), addr_of(m["raft_addr"])]
    if group == "proxies":
        return [addr_of(m["url"]), addr_of(m["status_url"])]
    return [addr_of(m["url"])]


def member_markers(layout: Layout, group: str, m: Mapping[str, Any]) -> list[str]:
    """Strings that the command line of this very member (and no other) contains."""
    if group == "nodes":
        return [str(layout.node_toml(m["id"]))]
    if group == "proxies":
        return [f"--listen {_hostport(m['url'])}", f"--state-dir {layout.proxy_dir(m['id'])}"]
    return [f"--listen {_hostport(m['url'])}"]
