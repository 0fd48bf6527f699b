"""The gwadm command line through click's CliRunner: one-line errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from cli.main import cli
from tests.cli.conftest import Serve, json_app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("GWADM_DIR", "GWADM_ENDPOINTS", "GWADM_TOKEN", "GWADM_TOKEN_FILE", "GWADM_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GWADM_RETRY_FOR", "0")
    monkeypatch.chdir(tmp_path)  # so the default .gwadm does not exist


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def assert_one_line_error(result: Result, *needles: str, code: int | None = None) -> str:
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_kind() -> None:
    assert_one_line_error(run("widget", "list"), "No such command 'widget'", code=2)


def test_unknown_subcommand_of_a_kind() -> None:
    assert_one_line_error(run("route", "frobnicate"), "No such command 'frobnicate'", code=2)


def test_malformed_data_json(dead_url: str) -> None:
    result = run("route", "put", "r1", "--data", '{"paths": [', "-e", dead_url, "--token", "t")
    assert_one_line_error(result, "--data", "not valid JSON", "line 1", code=2)


def test_data_must_be_an_object(dead_url: str) -> None:
    assert_one_line_error(
        run("route", "put", "r1", "-d", "[1]", "-e", dead_url, "--token", "t"), "JSON object"
    )


def test_put_needs_exactly_one_body(dead_url: str, tmp_path: Path) -> None:
    assert_one_line_error(run("route", "put", "r1", "-e", dead_url, "--token", "t"), "--file")
    (tmp_path / "b.json").write_text("{}")
    both = run("route", "put", "r1", "-f", "b.json", "-d", "{}", "-e", dead_url, "--token", "t")
    assert_one_line_error(both, "either --file or --data")
    assert_one_line_error(
        run("route", "put", "r1", "-f", "missing.json", "--token", "t"), "cannot read missing.json"
    )


def test_no_cluster_dir(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing-here")
    assert_one_line_error(run("route", "list", "--dir", missing), "does not exist", "--endpoint", code=1)
    assert_one_line_error(run("--dir", missing, "upstream", "get", "u1"), "does not exist")
    assert_one_line_error(run("status", "--dir", missing), "no cluster in", code=1)
    assert_one_line_error(run("cluster", "down", "--dir", missing), "does not exist", code=1)
    assert_one_line_error(run("cluster", "stop", "n1", "--dir", missing), "does not exist", code=1)


def test_default_dir_missing() -> None:
    assert_one_line_error(run("route", "list"), ".gwadm", "does not exist")


def test_no_token(dead_url: str) -> None:
    assert_one_line_error(run("route", "list", "-e", dead_url), "no admin token")


def test_unreachable_endpoint(dead_url: str) -> None:
    assert_one_line_error(
        run("route", "list", "-e", dead_url, "--token", "t"), "no control-plane node reachable"
    )


def test_bad_nodes_option(tmp_path: Path) -> None:
    out = assert_one_line_error(
        run("cluster", "up", "--dir", str(tmp_path / "c"), "--nodes", "2"), "--nodes", "odd"
    )
    assert "code" not in out and not (tmp_path / "c").exists()


def test_api_error_is_one_line(serve: Serve) -> None:
    def invalid(_: web.Request) -> web.Response:
        err = {"code": "invalid", "message": "must start with /", "path": "routes[r1].paths[0]"}
        return web.json_response({"error": err}, status=422)

    srv = serve(json_app(invalid))
    result = run(
        "route", "put", "r1", "-d", '{"paths": ["x"], "upstream": "u"}', "-e", srv.url, "--token", "t"
    )
    assert_one_line_error(result, "routes[r1].paths[0]: must start with / (422 invalid)", code=1)


def test_401_hints_at_the_token(serve: Serve) -> None:
    srv = serve(
        json_app(
            lambda r: web.json_response({"error": {"code": "unauthorized", "message": "bad"}}, status=401)
        )
    )
    assert_one_line_error(run("route", "list", "-e", srv.url, "--token", "t"), "401", "--token")


ROUTES = {"revision": 3, "items": [{"id": "r1", "paths": ["/a"], "upstream": "u1", "mod_revision": 2}]}


def test_list_table_and_json(serve: Serve) -> None:
    log: list[dict[str, Any]] = []
    srv = serve(json_app(lambda r: web.json_response(ROUTES), log))
    result = run("route", "list", "-e", srv.url, "--token", "t")
    assert result.exit_code == 0, result.output
    assert "routes (revision 3)" in result.output and "r1" in result.output and "/a" in result.output
    result = run("-e", srv.url, "--token", "t", "route", "list", "--json")
    assert json.loads(result.stdout) == ROUTES
    assert log[0]["headers"]["Authorization"] == "Bearer t"


def test_endpoints_and_token_from_env_and_cluster_dir(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log: list[dict[str, Any]] = []
    srv = serve(json_app(lambda r: web.json_response(ROUTES), log))
    d = tmp_path / "c"
    d.mkdir()
    (d / "admin.token").write_text("from-dir\n")
    cluster = {"nodes": [{"id": "n1", "admin_url": srv.url, "raft_addr": "x:1", "pid": None}],
               "proxies": [], "upstreams": [], "token_file": str(d / "admin.token")}  # fmt: skip
    (d / "cluster.json").write_text(json.dumps(cluster))
    assert run("route", "list", "--dir", str(d), "--json").exit_code == 0
    monkeypatch.setenv("GWADM_ENDPOINTS", f"http://127.0.0.1:9,{srv.url}")
    monkeypatch.setenv("GWADM_TOKEN", "from-env")
    result = run("route", "get", "r1", "--json")
    assert result.exit_code == 0, result.output
    assert [e["headers"]["Authorization"] for e in log] == ["Bearer from-dir", "Bearer from-env"]
    assert log[1]["path"] == "/v1/routes/r1"
    result = run("route", "get", "r1", "--token", "from-option", "-e", srv.url)
    assert result.exit_code == 0 and log[2]["headers"]["Authorization"] == "Bearer from-option"


def test_apply_file_errors(tmp_path: Path, dead_url: str) -> None:
    (tmp_path / "bad.json").write_text('{"widgets": {"a": {}}}')
    assert_one_line_error(
        run("apply", "-f", "bad.json", "-e", dead_url, "--token", "t"), "bad.json:1: widgets: unknown kind"
    )
    (tmp_path / "broken.json").write_text("{")
    assert_one_line_error(run("apply", "-f", "broken.json", "-e", dead_url, "--token", "t"), "not valid JSON")


def test_help_and_version() -> None:
    assert run("--help").exit_code == 0
    result = run("--version")
    assert result.exit_code == 0 and "gwadm" in result.output
    for group in ("cluster", "route", "upstream", "consumer", "plugin", "node", "proxy", "status", "apply"):
        assert run(group, "--help").exit_code == 0, group


def test_status_of_a_local_cluster(serve: Serve, tmp_path: Path) -> None:
    def cluster_view(request: web.Request) -> web.Response:
        assert request.path == "/v1/cluster"
        members = [
            {"id": "n1", "role": "leader", "term": 2, "commit_index": 8, "applied_index": 8, "revision": 3,
             "has_quorum": True, "reachable": True, "admin_url": node.url, "raft_addr": "127.0.0.1:1"},
        ]  # fmt: skip
        return web.json_response({"leader": "n1", "members": members})

    def proxy_status(request: web.Request) -> web.Response:
        body = {"mode": "synced", "revision": 3, "hash": "h", "connected_cp": "n1"}
        return web.json_response(body)

    node = serve(json_app(cluster_view))
    proxy = serve(json_app(proxy_status))
    d = tmp_path / "c"
    d.mkdir()
    (d / "admin.token").write_text("tok\n")
    cluster = {"nodes": [{"id": "n1", "admin_url": node.url, "raft_addr": "127.0.0.1:1", "pid": None}],
               "proxies": [{"id": "p1", "url": "http://127.0.0.1:9", "status_url": proxy.url, "pid": None}],
               "upstreams": [], "token_file": str(d / "admin.token")}  # fmt: skip
    (d / "cluster.json").write_text(json.dumps(cluster))
    result = run("status", "--dir", str(d), "--json")
    assert result.exit_code == 0, result.output
    st = json.loads(result.stdout)
    assert st["leader"] == "n1"
    assert st["nodes"][0]["role"] == "leader" and st["nodes"][0]["process"] == "stopped"
    assert st["proxies"][0]["mode"] == "synced" and st["proxies"][0]["connected_cp"] == "n1"
    table = run("cluster", "status", "--dir", str(d))
    assert table.exit_code == 0 and "control plane (leader: n1)" in table.output and "synced" in table.output


def test_token_create_mints_a_verifiable_token_of_the_role(tmp_path: Path) -> None:
    from cluster.auth import verify_token

    (tmp_path / "secret").write_text("s3cret-value\n")
    result = run("token", "create", "--role", "viewer", "--ttl", "2h", "--secret-file", str(tmp_path / "secret"))
    assert result.exit_code == 0, result.output
    claims = verify_token("s3cret-value", result.output.strip())
    assert claims["role"] == "viewer" and 7190 <= claims["exp"] - claims["iat"] <= 7200
    assert_one_line_error(run("token", "create", "--ttl", "soon", "--secret-file", str(tmp_path / "secret")),
                          "not a duration")
    assert_one_line_error(run("token", "create", "--secret-file", str(tmp_path / "missing")),
                          "cannot read the cluster secret")
