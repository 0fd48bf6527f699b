"""The same answers over TLS (the default of `gwadm cluster up`): the OpenAPI document, the JSON
limit refusals (also from aiohttp's parser, behind the TLS site), and a short schemathesis run of
every read operation."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as oas

from cli import procs
from gateway.openapi import build_openapi
from tests.support.cluster import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CHECKS = [oas.status_code_conformance, oas.content_type_conformance, oas.response_headers_conformance,
          oas.response_schema_conformance, oas.negative_data_rejection]


def gwadm(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=procs.child_env(), cwd=ROOT)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = Path(tmp_path_factory.mktemp("tls")) / "gw"
    try:
        res = gwadm("cluster", "up", "--dir", str(d), "--nodes", "1", "--proxies", "0", "--json", "--timeout", "60")
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        url = info["nodes"][0]["admin_url"]
        assert url.startswith("https://")
        yield {"url": url, "ca": str(d / "tls" / "ca.pem"), "token": (d / "admin.token").read_text().strip(),
               "dir": d}
    finally:
        if (d / "cluster.json").exists():
            gwadm("cluster", "down", "--dir", str(d), "--timeout", "5")


def tls_raw(node: dict[str, Any], data: bytes) -> tuple[int, dict[str, Any]]:
    host, port = node["url"].removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=node["ca"])
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_openapi_and_limits_over_tls(tls_node: dict[str, Any]) -> None:
    token = tls_node["token"]
    req = f"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    status, doc = tls_raw(tls_node, req.encode())
    assert status == 200 and doc["servers"] == [{"url": tls_node["url"]}]
    assert {k: v for k, v in doc.items() if k != "servers"} == build_openapi()
    long_url = (f"GET /v1/status?{'a' * 9000} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n")
    status, body = tls_raw(tls_node, long_url.encode())
    assert (status, body["error"]["code"]) == (414, "url_too_long")
    huge = f"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 20000}\r\n\r\n"  # past the parser's own limit
    status, body = tls_raw(tls_node, huge.encode())
    assert (status, body["error"]["code"]) == (431, "headers_too_large")


reads = schemathesis.openapi.from_dict(build_openapi())
reads.config.phases.coverage.enabled = False
reads = reads.include(method="GET").exclude(operation_id=["stream", "changes"])


@reads.parametrize()
@settings(max_examples=3, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_schemathesis_reads_over_tls(case: Any, tls_node: dict[str, Any]) -> None:
    response = case.call(base_url=tls_node["url"], headers={"Authorization": f"Bearer {tls_node['token']}"},
                         verify=tls_node["ca"], timeout=15)
    assert response.status_code < 500 or response.status_code == 503, response.text[:300]
    case.validate_response(response, checks=CHECKS)
