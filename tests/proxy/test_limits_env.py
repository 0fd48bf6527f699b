"""The listener's limits come from GWADM_PROXY_* environment variables (workers inherit them);
a bad value is a one-line error naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.http_common import LIMIT_ENV, Limits
from proxy.server import DataPlane
from tests.proxy.conftest import ListenFn, ServeFn, echo_app, route, snapshot, upstream
from tests.support.cluster import ROOT
from tests.support.raw_http import RawConn, get


def test_from_env_defaults_and_overrides() -> None:
    assert Limits.from_env({}) == Limits()
    limits = Limits.from_env({"GWADM_PROXY_MAX_URL_BYTES": "100", "GWADM_PROXY_HEADER_TIMEOUT": "2.5",
                              "GWADM_PROXY_MAX_HEADERS": " 7 "})  # fmt: skip
    assert (limits.max_url, limits.header_timeout, limits.max_headers) == (100, 2.5, 7)
    assert set(LIMIT_ENV) == {f for f in Limits.__dataclass_fields__}


@pytest.mark.parametrize("var, raw", [
    ("GWADM_PROXY_MAX_HEADER_BYTES", "abc"), ("GWADM_PROXY_MAX_HEADER_BYTES", "0"),
    ("GWADM_PROXY_MAX_URL_BYTES", "1.5"), ("GWADM_PROXY_KEEPALIVE_TIMEOUT", "-1"),
    ("GWADM_PROXY_HEADER_TIMEOUT", "inf"), ("GWADM_PROXY_HEADER_TIMEOUT", "nan"),
])  # fmt: skip
def test_bad_values_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var):
        Limits.from_env({var: raw})


async def test_a_dataplane_takes_its_limits_from_the_environment(
    listen: ListenFn, serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GWADM_PROXY_MAX_URL_BYTES", "64")
    dp = DataPlane()
    assert dp.limits.max_url == 64
    dp.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", await serve(echo_app())))},
                        routes={"r": route(paths=["/"])}), revision=1, hash="h")  # fmt: skip
    port = await listen(dp)
    conn = await RawConn.open(port)
    try:
        await conn.send(get("/" + "x" * 100))
        assert (await conn.response()).status == 414
    finally:
        await conn.close()


def test_proxy_run_refuses_a_bad_limit_with_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 40)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "proxy", "run", "--cp", "http://127.0.0.1:1", "--listen", "127.0.0.1:0",
         "--status-listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"), "--token-file", str(token)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GWADM_PROXY_MAX_HEADER_BYTES": "lots"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "GWADM_PROXY_MAX_HEADER_BYTES: must be a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr
