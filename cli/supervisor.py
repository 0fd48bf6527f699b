"""Local cluster supervisor behind `gwadm cluster up|down|stop|start|kill|status` (DESIGN §7).

Members are detached processes (own session, output to a log file) recorded by pid in
DIR/cluster.json: CP nodes ``n1..nN``, proxies ``p1..pM`` and one demo upstream ``demo``. Ports are
picked once, when DIR is created, and kept, so ``up`` on an existing DIR restarts the same cluster
from its data. Process spawning goes through ``Supervisor.spawner`` (a seam for tests).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cli import certs, procs
from cli.client import AdminClient, ApiError, use_ca
from cli.layout import (
    MEMBER_GROUPS,
    ClusterDirError,
    Layout,
    addr_of,
    load_cluster,
    member_argv,
    member_markers,
    member_ports,
    plan_cluster,
    retire_node_dir,
    save_cluster,
    token_path,
    write_new_cluster,
    write_node_configs,
)
from cli.status import collect_status, members_by_id, node_readiness, parallel, probe_http, probe_node

HOST = "127.0.0.1"
DEMO_UPSTREAM = "demo"
Spawner = Callable[[list[str], Path], int]


class SupervisorError(Exception):
    """A problem with the local cluster that the user must fix; the message says what."""


class NotReady(SupervisorError):
    def __init__(
        self, member: str, reason: str, log_path: Path | None, log_tail: list[str], exited: bool = False
    ) -> None:
        super().__init__(f"{member} {reason}" if exited else f"{member} is not ready: {reason}")
        self.member, self.reason, self.log_path, self.log_tail = member, reason, log_path, log_tail
        self.exited = exited  # the process ended (as opposed to: still not ready at the deadline)


class Reporter(Protocol):
    def waiting(self, pending: Mapping[str, str]) -> None: ...
    def note(self, text: str) -> None: ...


class _Quiet:
    def waiting(self, pending: Mapping[str, str]) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class UpResult:
    cluster: dict[str, Any]
    token: str
    fresh: bool
    started: list[str] = field(default_factory=list)
    curl: str | None = None
    warnings: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, dir: str | Path, *, spawner: Spawner | None = None, reporter: Reporter | None = None):
        self.layout = Layout.of(dir)
        self.spawner: Spawner = spawner or procs.spawn
        self.reporter: Reporter = reporter or _Quiet()

    # ---- files -------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        try:
            cluster = load_cluster(self.layout)
        except ClusterDirError as exc:
            raise SupervisorError(str(exc)) from exc
        self._use_tls(cluster)
        return cluster

    def _use_tls(self, cluster: Mapping[str, Any]) -> None:
        """Every https:// probe and call of this process verifies against the cluster's CA."""
        if cluster.get("tls"):
            use_ca(str(cluster["tls"]["ca"]))

    def ca_file(self, cluster: Mapping[str, Any]) -> str | None:
        return str(cluster["tls"]["ca"]) if cluster.get("tls") else None

    def ensure_certs(self, cluster: Mapping[str, Any], renew: bool = False) -> list[str]:
        """Issue the missing (``renew``: every) node and proxy certificate from the cluster's CA;
        SANs are the addresses each member binds, plus ``localhost``. Returns the names issued."""
        if not cluster.get("tls"):
            return []
        certs.create_ca(self.layout.dir)
        issued = []
        for group in ("nodes", "proxies"):
            for m in cluster.get(group, []):
                paths = certs.member_paths(self.layout.dir, m["id"])
                if not renew and paths.cert.exists() and paths.key.exists():
                    continue
                certs.issue(self.layout.dir, m["id"], self.default_sans(group, m),
                            server=True, client=group == "proxies")
                issued.append(m["id"])
        return issued

    def token(self, cluster: dict[str, Any] | None = None) -> str:
        path = token_path(self.layout, cluster)
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SupervisorError(f"cannot read the admin token {path}: {exc.strerror}") from exc

    def default_sans(self, group: str, m: Mapping[str, Any]) -> list[str]:
        return [addr_of(m["admin_url"] if group == "nodes" else m["url"])[0], "localhost"]

    def create(
        self, nodes: int, proxies: int, base_port: int | None = None, *, tls: bool = True, mtls: bool = False
    ) -> dict[str, Any]:
        """Lay out a new cluster directory (files only, nothing started). ``tls``: a CA and one
        certificate per node and proxy in DIR/tls, https admin URLs, wss streams, https proxies;
        ``mtls``: nodes accept only proxies presenting a certificate of that CA."""
        if nodes < 1 or nodes % 2 == 0:
            raise SupervisorError(f"--nodes must be odd and >= 1 (got {nodes})")
        if proxies < 0:
            raise SupervisorError(f"--proxies must be >= 0 (got {proxies})")
        lay = self.layout
        if lay.dir.exists() and not lay.dir.is_dir():
            raise SupervisorError(f"{lay.dir} exists and is not a directory")
        ours = {"secret", "admin.token", "proxy.token", "nodes", "proxies", "upstreams", "cluster.json", "tls"}
        foreign = [p.name for p in lay.dir.iterdir()] if lay.dir.exists() else []
        foreign = [n for n in foreign if n not in ours]
        if foreign:
            raise SupervisorError(
                f"{lay.dir} is not empty and holds no cluster.json (found {', '.join(foreign[:5])})"
            )
        count = 2 * nodes + 2 * proxies + 1
        if base_port is None:
            ports = procs.free_ports(count)
        else:
            ports = list(range(base_port, base_port + count))
            if ports[-1] > 65535:
                raise SupervisorError(f"--base-port {base_port} leaves no room for {count} ports")
            busy = [p for p in ports if procs.port_in_use(HOST, p)]
            if busy:
                raise SupervisorError(f"ports already in use on {HOST}: {', '.join(map(str, busy))}")
        if mtls and not tls:
            raise SupervisorError("--mtls needs TLS (drop --insecure)")
        cluster = plan_cluster(lay, nodes, proxies, ports, HOST, DEMO_UPSTREAM)
        if tls:
            for m in cluster["nodes"]:
                m["admin_url"] = m["admin_url"].replace("http://", "https://", 1)
            for m in cluster["proxies"]:
                m["url"] = m["url"].replace("http://", "https://", 1)
            cluster["tls"] = {"ca": str(certs.ca_paths(lay.dir).cert), "mtls": mtls}
            self.ensure_certs(cluster)
            self._use_tls(cluster)
        write_new_cluster(lay, cluster)
        return cluster

    # ---- members -----------------------------------------------------------------------------
    def members(self, cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(g, m) for g in MEMBER_GROUPS for m in cluster.get(g, [])]

    def select(self, cluster: dict[str, Any], names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        every = self.members(cluster)
        if not names:
            return every
        by_id = {m["id"]: (g, m) for g, m in every}
        unknown = [n for n in names if n not in by_id]
        if unknown:
            raise SupervisorError(f"no member named {', '.join(unknown)} (members: {', '.join(by_id)})")
        return [by_id[n] for n in dict.fromkeys(names)]

    def running(self, group: str, m: Mapping[str, Any]) -> bool:
        return procs.looks_like_ours(m.get("pid"), self.markers(group, m))

    def markers(self, group: str, m: Mapping[str, Any]) -> list[str]:
        return member_markers(self.layout, group, m)

    def _start(self, cluster: dict[str, Any], group: str, m: dict[str, Any]) -> None:
        busy = [f"{h}:{p}" for h, p in member_ports(group, m) if procs.port_in_use(h, p)]
        if busy:
            raise SupervisorError(
                f"cannot start {m['id']}: {', '.join(busy)} already in use by another process "
                f"(a leftover member? try `gwadm cluster down --dir {self.layout.dir}`)"
            )
        m["pid"] = self.spawner(
            member_argv(self.layout, group, m, cluster), self.layout.log_file(group, m["id"])
        )
        save_cluster(self.layout, cluster)

    def _crashed(self, group: str, m: Mapping[str, Any]) -> NotReady | None:
        code = procs.exit_code(m.get("pid") or 0)
        if code is None:
            return None
        log = self.layout.log_file(group, m["id"])
        return NotReady(m["id"], f"exited with code {code}", log, procs.tail(log), exited=True)

    # ---- up ----------------------------------------------------------------------------------
    def up(
        self,
        nodes: int | None = None,
        proxies: int | None = None,
        base_port: int | None = None,
        *,
        timeout: float = 30.0,
        wait: bool = True,
        tls: bool = True,
        mtls: bool = False,
    ) -> UpResult:
        """Create the cluster (3 nodes and 1 proxy unless told) or restart the one in the directory.
        Sizes asked for explicitly that differ from an existing cluster's give a warning; without
        them a cluster grown by ``gwadm node add`` restarts quietly."""
        fresh = not self.layout.exists()
        result_warnings: list[str] = []
        if fresh:
            cluster = self.create(
                3 if nodes is None else nodes, 1 if proxies is None else proxies, base_port, tls=tls, mtls=mtls
            )
        else:
            cluster = self.load()
            self.ensure_certs(cluster)
            have = (len(cluster["nodes"]), len(cluster["proxies"]))
            if (nodes is not None and nodes != have[0]) or (proxies is not None and proxies != have[1]):
                result_warnings.append(
                    f"{self.layout.dir} already holds {have[0]} nodes and {have[1]} proxies; "
                    "restarting those (--nodes/--proxies apply to a new directory only)"
                )
        token = self.token(cluster)
        res = UpResult(cluster, token, fresh, warnings=result_warnings)
        for group, m in self.members(cluster):
            if self.running(group, m):
                continue
            self._start(cluster, group, m)
            res.started.append(m["id"])
            self.reporter.note(f"started {m['id']} (pid {m['pid']})")
        if not wait:
            return res
        deadline = time.monotonic() + timeout
        self.wait_nodes(cluster, token, deadline, res.started)
        revision, hello = 0, False
        if cluster["proxies"]:
            try:
                revision, hello = self.ensure_sample(cluster, token)
            except (ApiError, ConnectionError) as exc:
                res.warnings.append(f"could not load the sample route: {exc}")
        self.wait_proxies(cluster, token, deadline, res.started, revision)
        self.reporter.note("all members are ready")
        if hello:
            url = cluster["proxies"][0]["url"]
            ca = self.ca_file(cluster)
            res.curl = f"curl --cacert {ca} {url}/hello" if ca and url.startswith("https://") else f"curl {url}/hello"
        return res

    def _fail(self, cluster: dict[str, Any], pending: Mapping[str, str]) -> NotReady:
        member_id, reason = next(iter(pending.items()))
        group = next((g for g, m in self.members(cluster) if m["id"] == member_id), "nodes")
        log = self.layout.log_file(group, member_id)
        return NotReady(member_id, reason, log, procs.tail(log))

    def _poll(
        self,
        cluster: dict[str, Any],
        check: Callable[[], dict[str, str]],
        deadline: float,
        started: Sequence[str],
    ) -> None:
        while True:
            for group, m in self.members(cluster):
                crashed = self._crashed(group, m) if m["id"] in started else None
                if crashed is not None:
                    raise crashed
            pending = check()
            self.reporter.waiting(pending)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise self._fail(cluster, pending)
            time.sleep(0.2)

    def wait_nodes(
        self, cluster: dict[str, Any], token: str, deadline: float, started: Sequence[str]
    ) -> None:
        ids = [n["id"] for n in cluster["nodes"]]

        def check() -> dict[str, str]:
            probes = parallel(lambda n: probe_node(n["admin_url"], token), cluster["nodes"])
            pending = node_readiness(ids, dict(zip(ids, probes, strict=True)))
            for u in cluster["upstreams"]:
                got = probe_http(u["url"] + "/health")
                if isinstance(got, str) or got[0] != 200:
                    pending[u["id"]] = f"/health: {got if isinstance(got, str) else got[0]}"
            return pending

        self._poll(cluster, check, deadline, started)

    def wait_proxies(
        self, cluster: dict[str, Any], token: str, deadline: float, started: Sequence[str], revision: int
    ) -> None:
        def one(p: Mapping[str, Any]) -> str | None:
            got = probe_http(p["status_url"] + "/ready")
            if isinstance(got, str):
                return f"/ready: {got}"
            st = probe_http(p["status_url"] + "/status")
            body = st[1] if not isinstance(st, str) and isinstance(st[1], dict) else {}
            rev = body.get("revision")
            if got[0] != 200 and not (revision == 0 and rev == 0 and body.get("connected_cp")):
                return f"/ready answers {got[0]}" + (f" (mode {body['mode']})" if body.get("mode") else "")
            if revision and (not isinstance(rev, int) or rev < revision):
                return f"at revision {rev}, waiting for {revision}"
            return None

        def check() -> dict[str, str]:
            answers = parallel(one, cluster["proxies"])
            return {p["id"]: a for p, a in zip(cluster["proxies"], answers, strict=True) if a}

        self._poll(cluster, check, deadline, started)

    def ensure_sample(self, cluster: dict[str, Any], token: str) -> tuple[int, bool]:
        """Load the sample if nothing was ever written; return (config revision, route hello exists)."""
        client = AdminClient([n["admin_url"] for n in cluster["nodes"]], token, timeout=5.0, retry_for=5.0,
                             ca=self.ca_file(cluster))
        listing = client.list("routes")
        revision = int(listing.get("revision") or 0)
        if revision == 0:
            return self.load_sample(cluster, token), True
        return revision, any(r.get("id") == "hello" for r in listing.get("items") or [])

    def load_sample(self, cluster: dict[str, Any], token: str) -> int:
        """Upstream ``demo`` -> the demo upstream process, route ``hello`` (/hello) -> ``demo``."""
        up = cluster["upstreams"][0]
        host, port = addr_of(up["url"])
        client = AdminClient([n["admin_url"] for n in cluster["nodes"]], token, timeout=5.0, retry_for=5.0,
                             ca=self.ca_file(cluster))
        ops = [
            {
                "op": "put",
                "kind": "upstreams",
                "id": DEMO_UPSTREAM,
                "body": {"targets": [{"host": host, "port": port}]},
            },
            {
                "op": "put",
                "kind": "routes",
                "id": "hello",
                "body": {"paths": ["/hello"], "upstream": DEMO_UPSTREAM},
            },
        ]
        out = client.txn(ops)
        self.reporter.note(
            f"loaded sample upstream {DEMO_UPSTREAM!r} and route 'hello' (revision {out.get('revision')})"
        )
        return int(out.get("revision") or 0)

    # ---- down / stop / start / kill ----------------------------------------------------------
    def stop(
        self, names: Sequence[str] = (), timeout: float = 10.0, kill: bool = False
    ) -> list[dict[str, Any]]:
        """SIGTERM (or SIGKILL with ``kill``) the named members (all when none), wait, then SIGKILL."""
        cluster = self.load()
        chosen = self.select(cluster, names)
        ours = {m["pid"]: m for g, m in chosen if self.running(g, m)}
        if kill:
            for pid in ours:
                procs.signal_pid(pid, signal.SIGKILL)
            procs.wait_gone(list(ours), time.monotonic() + 5.0)
            outcome = dict.fromkeys(ours, "killed")
        else:
            outcome = procs.terminate(list(ours), timeout)
        rows = []
        for _, m in chosen:
            pid = m.get("pid")
            rows.append(
                {
                    "id": m["id"],
                    "pid": pid,
                    "result": outcome.get(pid, "not running") if pid else "not running",
                }
            )
            m["pid"] = None
        save_cluster(self.layout, cluster)
        return rows

    def down(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self.stop((), timeout)

    def start(self, names: Sequence[str] = (), timeout: float = 10.0) -> list[dict[str, Any]]:
        """Start the named members (all when none) that are not running; wait until each answers."""
        cluster = self.load()
        chosen = self.select(cluster, names)
        rows: list[dict[str, Any]] = []
        started: list[str] = []
        for group, m in chosen:
            if self.running(group, m):
                rows.append({"id": m["id"], "pid": m["pid"], "result": "already running"})
                continue
            self._start(cluster, group, m)
            started.append(m["id"])
            rows.append({"id": m["id"], "pid": m["pid"], "result": "started"})
        token = self.token(cluster)
        urls = {m["id"]: self._liveness_url(g, m) for g, m in chosen if m["id"] in started}

        def check() -> dict[str, str]:
            got = parallel(
                lambda u: probe_http(u[1]) if u[0] != "node" else probe_node(u[1], token), list(urls.values())
            )
            return {mid: str(r) for mid, r in zip(urls, got, strict=True) if isinstance(r, str)}

        if urls:
            self._poll(cluster, check, time.monotonic() + timeout, started)
        return rows

    def _liveness_url(self, group: str, m: Mapping[str, Any]) -> tuple[str, str]:
        if group == "nodes":
            return ("node", m["admin_url"])
        if group == "proxies":
            return ("http", m["status_url"] + "/status")
        return ("http", m["url"] + "/health")

    # ---- status ------------------------------------------------------------------------------
    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        cluster = self.load()
        st = collect_status(cluster["nodes"], [], self.token(cluster), cluster["proxies"], timeout)
        pids = {m["id"]: (g, m) for g, m in self.members(cluster)}
        for row in st["nodes"] + st["proxies"]:
            if row["id"] in pids:
                g, m = pids[row["id"]]
                row["pid"] = m.get("pid")
                row["process"] = "running" if self.running(g, m) else "stopped"
        st["upstreams"] = [
            {**u, "process": "running" if self.running("upstreams", u) else "stopped"}
            for u in cluster["upstreams"]
        ]
        return st

    # ---- membership changes (`gwadm node add/remove` on a local cluster) ---------------------------
    def check_new_node(self, node: Mapping[str, Any]) -> None:
        """Before asking the cluster: the id and ports of a node to add must be new and free here."""
        cluster = self.load()
        for n in cluster["nodes"]:
            if n["id"] == node["id"]:
                raise SupervisorError(f"{self.layout.cluster_json} already has a node {node['id']}")
        busy = [f"{h}:{p}" for h, p in member_ports("nodes", node) if procs.port_in_use(h, p)]
        if busy:
            raise SupervisorError(f"cannot add {node['id']}: {', '.join(busy)} already in use")

    def join_node(self, node: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Record a node the cluster has just accepted, start it and wait until it has caught up."""
        cluster = self.load()
        cluster["nodes"] = [n for n in cluster["nodes"] if n["id"] != node["id"]] + [node]
        self.ensure_certs(cluster)
        write_node_configs(self.layout, cluster)
        save_cluster(self.layout, cluster)
        self._start(cluster, "nodes", node)
        token = self.token(cluster)

        def check() -> dict[str, str]:
            why = caught_up(probe_node(node["admin_url"], token), node["id"])
            return {node["id"]: why} if why else {}

        self._poll(cluster, check, time.monotonic() + timeout, [node["id"]])
        return cluster

    def retire_node(self, node_id: str, timeout: float) -> dict[str, Any]:
        """Stop a node the cluster has just removed and forget it: cluster.json, the others' peers;
        its directory is set aside (a node added later under the same id starts clean)."""
        if any(n["id"] == node_id for n in self.load()["nodes"]):
            self.stop([node_id], timeout)
            cluster = self.load()
            cluster["nodes"] = [n for n in cluster["nodes"] if n["id"] != node_id]
            write_node_configs(self.layout, cluster)
            save_cluster(self.layout, cluster)
            retire_node_dir(self.layout, node_id)
        return self.load()


def caught_up(view: dict[str, Any] | str, node_id: str) -> str | None:
    """Why ``node_id`` (whose ``/v1/cluster`` answer is ``view``) has not caught up, None once it has."""
    if isinstance(view, str):
        return f"not answering ({view})"
    leader = view.get("leader")
    members = members_by_id(view)
    me, lead = members.get(node_id) or {}, members.get(str(leader)) or {}
    if not leader or not lead.get("reachable"):
        return "does not know a reachable leader yet"
    if int(me.get("applied_index") or 0) < int(lead.get("commit_index") or 0):
        return f"applied {me.get('applied_index')} < leader commit {lead.get('commit_index')}"
    return None
