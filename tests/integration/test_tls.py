"""TLS on the admin API and the push stream, with real processes (cluster/tls.py, cli/certs.py).

Clusters come from `gwadm cluster up` (TLS by default); every process started here is stopped by
its PID at the end (`cluster down`, or the Popen handle), also when a test fails.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import certs, procs
from cli.client import get_json
from cli.procs import free_ports
from tests.support.cluster import ROOT, running_cluster
from tests.support.http import request, wait_for
from tests.support.relay import RelayProc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def gwadm(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**procs.child_env(), **(env or {})}, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A TLS cluster of 1 node and 1 proxy in tmp_path/gw; `--mtls` when the test is marked so."""
    d = tmp_path / "gw"
    try:
        yield d, {}
    finally:
        if (d / "cluster.json").exists():
            gwadm("cluster", "down", "--dir", str(d), "--timeout", "5")


def up(d: Path, *extra: str) -> dict[str, Any]:
    res = gwadm("cluster", "up", "--dir", str(d), "--nodes", "1", "--json", "--timeout", "60", *extra, timeout=90)
    assert res.returncode == 0, res.stderr
    info: dict[str, Any] = json.loads(res.stdout)
    return info


def test_client_without_the_ca_is_refused(tls_cluster: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    d, _ = tls_cluster
    info = up(d, "--proxies", "0")
    url = info["nodes"][0]["admin_url"]
    assert url.startswith("https://")
    token_file = str(d / "admin.token")
    elsewhere = {"GWADM_DIR": str(tmp_path / "nothing-here")}  # no DIR/tls/ca.pem to pick up
    refused = gwadm("route", "list", "-e", url, "--token-file", token_file, env=elsewhere)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    # the same call verifies against the cluster's CA: given explicitly, or found in DIR
    ok = gwadm("route", "list", "-e", url, "--token-file", token_file, "--ca", str(d / "tls" / "ca.pem"), env=elsewhere)
    assert ok.returncode == 0, ok.stderr
    assert gwadm("route", "list", "--dir", str(d)).returncode == 0
    # plain HTTP to the TLS port gets nowhere either
    plain = gwadm("route", "list", "-e", url.replace("https://", "http://"), "--token-file", token_file, env=elsewhere)
    assert plain.returncode != 0
    log = (d / "nodes" / "n1" / "node.log").read_text()
    assert "TLS handshake with 127.0.0.1:" in log and "refused" in log
    status = get_json(url + "/v1/status", (d / "admin.token").read_text().strip(), 5.0, ca=str(d / "tls" / "ca.pem"))
    assert status[0] == 200 and status[1]["insecure"] is False


def test_secret_is_in_no_argv_and_no_log(tls_cluster: tuple[Path, dict[str, Any]]) -> None:
    d, _ = tls_cluster
    info = up(d, "--proxies", "1")
    secret = (d / "secret").read_text().strip()
    pids = [m["pid"] for g in ("nodes", "proxies", "upstreams") for m in info[g]]
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert secret not in argv, f"the secret is in the command line of pid {pid}"
    logs = list(d.rglob("*.log"))
    assert logs
    for log in logs:
        assert secret not in log.read_text(errors="replace"), f"the secret is in {log}"
    assert "admin_token" in info  # --json prints the token on purpose, never the secret
    assert secret not in json.dumps(info)


def _start_proxy(d: Path, tmp: Path, name: str, cp: str, *tls_args: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    listen, status = free_ports(2)
    state = tmp / name
    state.mkdir()
    log = state / "proxy.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "proxy", "run", "--cp", cp, "--listen", f"127.0.0.1:{listen}",
             "--status-listen", f"127.0.0.1:{status}", "--state-dir", str(state), "--id", name,
             "--token-file", str(d / "proxy.token"), *tls_args],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**procs.child_env(), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    return proc, log, f"http://127.0.0.1:{status}"


def test_mtls_refuses_a_proxy_with_a_certificate_of_another_ca(
    tls_cluster: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    d, _ = tls_cluster
    info = up(d, "--proxies", "1", "--mtls")
    cp = info["nodes"][0]["admin_url"]
    ca = str(d / "tls" / "ca.pem")
    other = tmp_path / "other-ca"
    certs.create_ca(other, "some other CA")
    bad = certs.issue(other, "intruder", ["127.0.0.1"], client=True)
    procs_: list[subprocess.Popen[bytes]] = []
    try:
        foreign, foreign_log, foreign_status = _start_proxy(
            d, tmp_path, "intruder", cp, "--ca", ca, "--tls-cert", str(bad.cert), "--tls-key", str(bad.key))
        procs_.append(foreign)
        bare, bare_log, bare_status = _start_proxy(d, tmp_path, "bare", cp, "--ca", ca)
        procs_.append(bare)
        node_log = d / "nodes" / "n1" / "node.log"

        def reasons() -> bool:
            text = node_log.read_text(errors="replace")
            return ("certificate verify failed" in text or "unknown ca" in text) and "presented no client certificate" in text

        wait_for(reasons, 30, "the node to log both refusals")
        node_text = node_log.read_text(errors="replace")
        assert "TLS handshake with 127.0.0.1:" in node_text
        try:
            wait_for(lambda: "refused our client certificate" in foreign_log.read_text(errors="replace"), 60,
                     "the intruder to log the reason")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nits log:\n{foreign_log.read_text(errors='replace')[-3000:]}") from None
        wait_for(lambda: "HTTP 403" in bare_log.read_text(errors="replace"), 30, "the bare proxy to log the 403")
        for status_url in (foreign_status, bare_status):
            st = get_json(status_url + "/status", None, 2.0)
            assert st[1]["mode"] == "empty" and st[1]["revision"] == 0, st
        # the proxy with the cluster's certificate is synced, on the same node
        good = get_json(info["proxies"][0]["status_url"] + "/status", None, 2.0)
        assert good[1]["mode"] == "synced" and good[1]["revision"] >= 1, good
        fleet = get_json(cp + "/v1/proxies", (d / "admin.token").read_text().strip(), 5.0, ca=ca)[1]
        assert {p["id"] for p in fleet["items"]} == {"p1"}, fleet
    finally:
        for p in procs_:
            p.send_signal(signal.SIGTERM)
        for p in procs_:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def test_expired_certificates_give_clear_errors(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    from cli.supervisor import Supervisor

    Supervisor(d).create(1, 0)  # files only: nothing runs
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired = certs.issue(d, "n1", ["127.0.0.1"], not_before=long_ago)
    # a node refuses to start on an expired certificate, naming it and the fix
    res = subprocess.run(
        [sys.executable, "-m", "cluster", "run", "--config", str(d / "nodes" / "n1" / "node.toml")],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=procs.child_env(),
    )  # fmt: skip
    assert res.returncode != 0
    assert f"{expired.cert} expired on" in res.stderr and "gwadm cert renew" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    # a proxy refuses an expired client certificate the same way
    from proxy.node import SettingsError, load_settings

    (tmp_path / "tok").write_text("t")
    with pytest.raises(SettingsError, match="expired on"):
        load_settings(cp="https://127.0.0.1:1", listen="127.0.0.1:1", status_listen="127.0.0.1:2",
                      state_dir=str(tmp_path / "p"), token_file=str(tmp_path / "tok"),
                      ca=str(d / "tls" / "ca.pem"), tls_cert=str(expired.cert), tls_key=str(expired.key))
    # a server that does present an expired certificate: the CLI says so in one line
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(expired.cert, expired.key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ConnectionError, match="certificate has expired"):
            get_json(url + "/v1/status", "t", 5.0, ca=str(d / "tls" / "ca.pem"))
        cli = gwadm("route", "list", "-e", url, "--token", "t", "--ca", str(d / "tls" / "ca.pem"))
        assert cli.returncode != 0 and "certificate has expired" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_insecure_node_warns_and_says_so_in_status(tmp_path: Path) -> None:
    with running_cluster(tmp_path, size=1) as c:  # tests/support/cluster.py: insecure = true
        node = c.nodes[0]
        st = c.status(node)
        assert st is not None and st["insecure"] is True
        assert "PLAIN HTTP (insecure)" in (node.dir / "node.log").read_text()


def test_node_without_tls_or_insecure_refuses_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    (tmp_path / "secret").write_text("s" * 40)
    cfg.write_text('node_id = "n1"\nraft_addr = "127.0.0.1:1"\nadmin_addr = "127.0.0.1:2"\ndata_dir = "d"\n'
                   'secret_file = "secret"\n')
    res = subprocess.run([sys.executable, "-m", "cluster", "run", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, env=procs.child_env())
    assert res.returncode != 0 and "plain HTTP only with insecure = true" in res.stderr, res.stderr
    assert not os.path.exists(tmp_path / "d")  # refused before anything was created


def test_a_relay_verifies_the_cluster_and_serves_its_proxies_over_tls(
    tls_cluster: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`gwadm relay run --ca ... --listen-tls-cert ...`: the relay follows a TLS control plane whose
    certificate chains to the cluster's CA, and serves a proxy (``--ca``) over wss; a relay
    without ``--ca`` refuses the cluster's certificate and has nothing to serve."""
    d, _ = tls_cluster
    info = up(d, "--proxies", "0")
    cp = info["nodes"][0]["admin_url"]
    ca = str(d / "tls" / "ca.pem")
    served = certs.issue(d, "relay", ["127.0.0.1"])
    relay = RelayProc("r1", [cp], d / "proxy.token", tmp_path / "r1", scheme="https", ca=ca,
                      extra_args=["--ca", ca, "--listen-tls-cert", str(served.cert),
                                  "--listen-tls-key", str(served.key)])  # fmt: skip
    blind = RelayProc("r2", [cp], d / "proxy.token", tmp_path / "r2")
    proxy: subprocess.Popen[bytes] | None = None
    try:
        relay.start()
        blind.start()
        token = (d / "admin.token").read_text().strip()
        put = request("PUT", cp + "/v1/upstreams/u1", token=token, ca=ca,
                      json_body={"targets": [{"host": "127.0.0.1", "port": 9, "weight": 1}]})  # fmt: skip
        assert put.status in (200, 201), put
        rev = put.json()["revision"]
        wait_for(lambda: relay.status()["mode"] == "synced" and relay.status()["revision"] >= rev, 30,
                 "the relay synced over https/wss")  # fmt: skip
        proxy, proxy_log, status_url = _start_proxy(d, tmp_path, "p-behind-relay", relay.url, "--ca", ca)

        def behind() -> bool:
            st = get_json(status_url + "/status", None, 2.0)[1]
            return bool(st and st["revision"] >= rev)

        try:
            wait_for(behind, 30, "the proxy synced through the relay over wss")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nproxy log:\n{proxy_log.read_text(errors='replace')[-3000:]}") from None
        wait_for(lambda: "certificate verify failed" in blind.log_path.read_text(errors="replace"), 30,
                 "the relay without --ca to log the refused certificate")
        assert blind.status()["revision"] == 0 and blind.status()["mode"] == "empty"
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(5)
        relay.stop()
        blind.stop()
