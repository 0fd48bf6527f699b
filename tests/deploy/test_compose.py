"""docker-compose.yml on a real Docker engine: the faults of a multi-host deployment, for real.

The project gets a unique name per run; its containers, network and volumes are removed in
teardown (``down -v``) also when the test fails. Traffic goes only to the project's own
containers, on the network compose creates for it, and to ports published on 127.0.0.1.

Needs an engine and an image: ``$GWADM_IMAGE`` (``.ci/run`` builds it), or one built here from
the host's wheels on ``$GWADM_BASE_IMAGE`` / python:3.11-slim / gwadm-base:bookworm. Without them
the test skips with the reason, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.procs import free_ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
NODES = ("n1", "n2", "n3")
PROXIES = ("proxy1", "proxy2")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def run(argv: list[str], timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"compose test cannot run under CI=true: {reason}")
    pytest.skip(reason)


def compose_command() -> list[str] | None:
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


def ensure_image() -> str:
    wanted = os.environ.get("GWADM_IMAGE")
    if wanted:
        if not image_exists(wanted):
            unavailable(f"$GWADM_IMAGE={wanted} does not exist")
        return wanted
    bases = [b for b in (os.environ.get("GWADM_BASE_IMAGE"), "python:3.11-slim", "gwadm-base:bookworm") if b]
    base = next((b for b in bases if image_exists(b)), None)
    if base is None:
        unavailable(f"no base image ({', '.join(bases)}); .ci/run builds gwadm-base:bookworm with debootstrap")
    wheels = ROOT / "wheels"
    if not any(wheels.glob("gwadm-*.whl")):
        run([sys.executable, "-m", "pip", "wheel", "-q", "-c", str(ROOT / "constraints.txt"), "-w", str(wheels),
             str(ROOT)], timeout=600)  # fmt: skip
    run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", "gwadm:test", str(ROOT)], timeout=600)
    return "gwadm:test"


class Project:
    def __init__(self, compose: list[str], image: str, seed: int) -> None:
        self.name = f"gwadmtest{seed}"
        self.admin_port, self.p1_port, self.p2_port = free_ports(3)
        self.env = {
            **os.environ, "GWADM_IMAGE": image, "GWADM_ADMIN_PORT": str(self.admin_port),
            "GWADM_PROXY1_PORT": str(self.p1_port), "GWADM_PROXY2_PORT": str(self.p2_port),
        }  # fmt: skip
        self.base = [*compose, "-p", self.name, "-f", str(COMPOSE_FILE)]
        self.network = f"{self.name}_default"
        self.ca_file: Path | None = None
        self.token = ""

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.base, *args], timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def container(self, service: str) -> str:
        out = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}",
                   "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()  # fmt: skip
        assert len(out) == 1, f"{service}: containers {out}"
        return out[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(run(["docker", "inspect", self.container(service)]).stdout)
        return data[0]

    def ip(self, service: str) -> str:
        nets = self.inspect(service)["NetworkSettings"]["Networks"]
        ip = nets[self.network]["IPAddress"]
        assert ip, f"{service} has no address on {self.network}"
        return str(ip)

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        return str((state.get("Health") or {}).get("Status") or state["Status"])

    def exec(self, service: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "exec", self.container(service), *argv], check=check, timeout=60)

    # -- admin API over TLS, verified against the deployment's CA ------------------------------
    def ssl(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = False  # reached by container IP; the chain is still verified
        return ctx

    def api(self, service: str, method: str, path: str, body: Any = None, timeout: float = 8.0) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.ip(service), 7000, timeout=timeout, context=self.ssl())
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def status(self, service: str) -> dict[str, Any] | None:
        try:
            code, body = self.api(service, "GET", "/v1/status", timeout=3.0)
        except (OSError, http.client.HTTPException, AssertionError):
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def leader(self, among: tuple[str, ...] = NODES) -> str | None:
        for svc in among:
            st = self.status(svc)
            if st and st.get("role") == "leader" and st.get("has_quorum"):
                return svc
        return None

    def proxy_get(self, port: int, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
        finally:
            conn.close()

    def proxy_status(self, service: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.ip(service), 8001, timeout=3)
        try:
            conn.request("GET", "/status")
            body: dict[str, Any] = json.loads(conn.getresponse().read())
            return body
        finally:
            conn.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, http.client.HTTPException, AssertionError, KeyError, ValueError) as exc:
            last = repr(exc)
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    if shutil.which("docker") is None:
        unavailable("no docker binary (apt-get install docker.io docker-compose)")
    info = run(["docker", "info"], check=False)
    if info.returncode != 0:
        unavailable(f"no Docker engine answers: {info.stderr.strip()[:200]}")
    compose = compose_command()
    if compose is None:
        unavailable("neither `docker compose` nor docker-compose is installed")
    assert compose is not None
    image = ensure_image()
    seed = int(os.environ.get("GWADM_TEST_SEED", random.SystemRandom().randrange(10**6)))
    print(f"compose project seed {seed}")
    p = Project(compose, image, seed)
    try:
        yield p
    finally:
        if os.environ.get("GWADM_KEEP_COMPOSE") != "1":
            p.compose("--profile", "scale", "down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)


def test_compose_deployment_survives_the_faults_of_a_multi_host_cluster(project: Project, tmp_path: Path) -> None:
    p = project
    p.compose("up", "-d", "--no-build", timeout=300)
    for svc in (*NODES, *PROXIES, "upstream"):
        wait_for(f"{svc} healthy", lambda s=svc: p.health(s) == "healthy", timeout=120)  # type: ignore[misc]
    assert p.inspect("init")["State"]["ExitCode"] == 0

    # -- security defaults: files 0600, the secret nowhere but its file ---------------------------------
    assert p.exec("n1", "stat", "-c", "%a %U", "/gwadm/cp/secret", "/gwadm/cp/admin.token").stdout.split() == [
        "600", "gwadm", "600", "gwadm"]
    assert p.exec("proxy1", "stat", "-c", "%a", "/gwadm/dp/proxy.token", "/gwadm/dp/proxy.key").stdout.split() == [
        "600", "600"]
    assert p.exec("proxy1", "test", "-e", "/gwadm/dp/secret", check=False).returncode != 0  # proxies never get it
    assert p.exec("n1", "test", "-e", "/gwadm/cp/ca.key", check=False).returncode != 0  # the CA key stays in init's
    secret = p.exec("n1", "cat", "/gwadm/cp/secret").stdout.strip()
    p.token = p.exec("n1", "cat", "/gwadm/cp/admin.token").stdout.strip()
    p.ca_file = tmp_path / "ca.pem"
    p.ca_file.write_text(p.exec("n1", "cat", "/gwadm/cp/ca.pem").stdout)
    assert len(secret) >= 40
    again = p.compose("run", "--rm", "init")  # idempotent: what exists is kept
    assert "issued nothing new" in again.stdout, again.stdout
    assert p.exec("n1", "cat", "/gwadm/cp/secret").stdout.strip() == secret
    assert p.exec("n1", "cat", "/gwadm/cp/admin.token").stdout.strip() == p.token
    for svc in (*NODES, *PROXIES, "upstream", "init"):
        c = p.inspect(svc)
        assert secret not in json.dumps(c["Args"]) + json.dumps(c["Config"]["Env"]) + json.dumps(c["Config"]["Cmd"])
    image = p.inspect("n1")["Config"]["Image"]
    assert secret not in run(["docker", "history", "--no-trunc", image]).stdout
    assert run(["docker", "run", "--rm", "--entrypoint", "ls", image, "-A", "/gwadm/cp"]).stdout.strip() == ""
    config = json.loads(run(["docker", "image", "inspect", image]).stdout)[0]["Config"]
    assert config["User"] == "gwadm" and config["Entrypoint"] == ["gwadm"] and config["Healthcheck"]["Test"]
    compilers = run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v gcc cc c++ clang"],
                    check=False)
    assert compilers.stdout.strip() == "", f"the runtime image has a compiler: {compilers.stdout}"

    # -- up -> a leader; the published admin endpoint is TLS (and talks to the CLI) ---------------------
    leader = wait_for("a leader", p.leader)
    print(f"leader: {leader}")
    cli = run([sys.executable, "-m", "cli", "status", "--json", "-e", f"https://127.0.0.1:{p.admin_port}",
               "--ca", str(p.ca_file), "--token", p.token], env={**os.environ, "GWADM_DIR": str(tmp_path / "none")})
    assert json.loads(cli.stdout)["leader"] in NODES, cli.stdout  # (it may have moved on since)
    no_ca = run([sys.executable, "-m", "cli", "route", "list", "-e", f"https://127.0.0.1:{p.admin_port}",
                 "--token", p.token], check=False, env={**os.environ, "GWADM_DIR": str(tmp_path / "none")})
    assert no_ca.returncode != 0 and "certificate verify failed" in no_ca.stderr

    # -- a route written through one node is served by both proxies -------------------------------------
    writer = next(n for n in NODES if n != leader)  # through a follower: forwarded to the leader
    code, out = p.api(writer, "PUT", "/v1/upstreams/demo", {"targets": [{"host": "upstream", "port": 9000}]})
    assert code in (200, 201), out
    code, out = p.api(writer, "PUT", "/v1/routes/hello", {"paths": ["/hello"], "upstream": "demo"})
    assert code in (200, 201), out
    for port in (p.p1_port, p.p2_port):
        wait_for(f"/hello on 127.0.0.1:{port}", lambda port=port: p.proxy_get(port, "/hello")[0] == 200)  # type: ignore[misc]
        assert p.proxy_get(port, "/hello")[1]["upstream"] == "demo"

    # -- kill the leader's container: a new leader, writes continue ------------------------------------
    p.compose("kill", leader)
    rest = tuple(n for n in NODES if n != leader)
    new_leader = wait_for("a new leader", lambda: p.leader(rest), timeout=60)
    print(f"killed {leader}; new leader {new_leader}")
    code, out = p.api(new_leader, "PUT", "/v1/routes/after-kill", {"paths": ["/after-kill"], "upstream": "demo"})
    assert code in (200, 201), out
    for port in (p.p1_port, p.p2_port):
        wait_for("/after-kill on both proxies", lambda port=port: p.proxy_get(port, "/after-kill")[0] == 200)  # type: ignore[misc]
    p.compose("start", leader)
    wait_for(f"{leader} caught up", lambda: (st := p.status(leader)) is not None
             and st["revision"] >= out["revision"] and st["has_quorum"], timeout=90)  # fmt: skip

    # -- a partition between hosts: one node cut off the network ----------------------------------------
    current = wait_for("a leader", p.leader)
    cut = next(n for n in NODES if n != current)
    cut_container = p.container(cut)
    run(["docker", "network", "disconnect", p.network, cut_container])
    print(f"disconnected {cut} (leader {current})")
    wait_for(f"{cut} to lose quorum", lambda: _inside_status(p, cut).get("has_quorum") is False, timeout=60)
    minority = _inside_write(p, cut, "/v1/routes/minority", {"paths": ["/minority"], "upstream": "demo"})
    assert minority != 200, "the cut-off node accepted a write"
    code, majority = p.api(current, "PUT", "/v1/routes/majority", {"paths": ["/majority"], "upstream": "demo"})
    assert code in (200, 201), majority
    run(["docker", "network", "connect", "--alias", cut, p.network, cut_container])
    wait_for(f"{cut} rejoined and converged", lambda: (st := p.status(cut)) is not None and st["has_quorum"]
             and st["revision"] >= majority["revision"], timeout=90)  # fmt: skip
    code, got = p.api(cut, "GET", "/v1/routes/majority")
    assert code == 200 and got["paths"] == ["/majority"]
    code, _ = p.api(current, "GET", "/v1/routes/minority")
    assert code == 404, "a write refused by the minority took effect later"

    # -- more proxies from the scalable service (profile "scale"), beside the two named ones -------------
    p.compose("--profile", "scale", "up", "-d", "--no-build", "--scale", "proxy=2", "proxy", timeout=180)
    for index in (1, 2):
        port = int(p.compose("--profile", "scale", "port", "--index", str(index), "proxy", "8000").stdout
                   .strip().rsplit(":", 1)[1])
        wait_for(f"scaled proxy #{index} serving", lambda port=port: p.proxy_get(port, "/majority")[0] == 200)  # type: ignore[misc]

    # -- all three CP containers stopped: both proxies keep serving, mode cached ------------------------
    p.compose("stop", "-t", "5", *NODES)
    for svc, port in zip(PROXIES, (p.p1_port, p.p2_port), strict=True):
        wait_for(f"{svc} cached", lambda svc=svc: p.proxy_status(svc)["mode"] == "cached", timeout=60)  # type: ignore[misc]
        assert p.proxy_get(port, "/hello")[0] == 200
    before = p.proxy_status("proxy1")["revision"]
    # -- a proxy restarted while the CP is down serves from its cache volume ----------------------------
    p.compose("restart", "-t", "5", "proxy1")
    wait_for("proxy1 serving again", lambda: p.proxy_get(p.p1_port, "/hello")[0] == 200, timeout=60)
    st = p.proxy_status("proxy1")
    assert st["mode"] == "cached" and st["revision"] == before, st
    assert p.proxy_get(p.p1_port, "/majority")[0] == 200

    # -- the secret is in no log line of any container ---------------------------------------------------
    logs = p.compose("logs", "--no-color").stdout
    assert logs and secret not in logs and p.token not in logs

    # -- down -v leaves nothing behind ------------------------------------------------------------------
    p.compose("--profile", "scale", "down", "-v", "--remove-orphans", "-t", "5", timeout=180)
    label = f"label=com.docker.compose.project={p.name}"
    assert run(["docker", "ps", "-aq", "--filter", label]).stdout.strip() == ""
    assert run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.strip() == ""
    assert run(["docker", "network", "ls", "-q", "--filter", f"name=^{p.network}$"]).stdout.strip() == ""


def _inside_status(p: Project, service: str) -> dict[str, Any]:
    """/v1/status asked from inside the container (the host cannot reach a disconnected one)."""
    out = _inside(p, service, "GET", "/v1/status", None)
    body = out.get("body")
    return body if isinstance(body, dict) else {}


def _inside_write(p: Project, service: str, path: str, body: Any) -> int:
    return int(_inside(p, service, "PUT", path, body).get("status") or 0)


def _inside(p: Project, service: str, method: str, path: str, body: Any) -> dict[str, Any]:
    script = (
        "import http.client, json, ssl, sys\n"
        "ctx = ssl.create_default_context(cafile='/gwadm/cp/ca.pem')\n"
        "c = http.client.HTTPSConnection('localhost', 7000, timeout=12, context=ctx)\n"
        "tok = open('/gwadm/cp/admin.token').read().strip()\n"
        "try:\n"
        "    c.request(sys.argv[1], sys.argv[2], body=sys.argv[3] or None,\n"
        "              headers={'Authorization': 'Bearer ' + tok, 'Content-Type': 'application/json'})\n"
        "    r = c.getresponse(); raw = r.read()\n"
        "    print(json.dumps({'status': r.status, 'body': json.loads(raw) if raw else None}))\n"
        "except OSError as e:\n"
        "    print(json.dumps({'status': 0, 'error': str(e)}))\n"
    )
    res = p.exec(service, "python3", "-c", script, method, path, "" if body is None else json.dumps(body))
    out: dict[str, Any] = json.loads(res.stdout)
    return out
