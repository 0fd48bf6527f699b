"""Secrets never leak: a full run (3 CP nodes, a proxy, an upstream) creates consumers with key-auth
keys and HS256 secrets, exercises errors around them, and then greps every log file, every
/metrics page, the audit log and the default export for every secret it created."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.support.cluster import ROOT
from tests.support.dataplane import DataPlaneEnv
from tests.support.http import request

pytestmark = pytest.mark.integration
SEED = 1207


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(tmp_path, proxies=1, upstreams=("a",)) as e:
        yield e


def _secret(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(34))


def test_no_secret_in_logs_metrics_audit_or_export(env: DataPlaneEnv, tmp_path: Path) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    keys = [_secret(rng, "KA") for _ in range(3)]
    hs = [_secret(rng, "HS") for _ in range(2)]
    secrets_made = [*keys, *hs]
    c, proxy = env.cluster, env.proxies[0]
    node = c.nodes[1]

    answers: list[str] = []

    def api(method: str, path: str, body: object = None, **kw: object) -> int:
        r = c.api(node, method, path, body, **kw)  # type: ignore[arg-type]
        answers.append(r.body.decode(errors="replace"))
        return r.status

    env.put("upstreams", "u1", env.upstream_spec("a"))
    env.put("routes", "keyed", {"paths": ["/k"], "upstream": "u1", "plugins": {"key-auth": {}}})
    env.put("routes", "signed", {"paths": ["/j"], "upstream": "u1", "plugins": {"jwt-auth": {}}})
    env.put("consumers", "alice", {"credentials": {"key-auth": [{"key": keys[0]}],
                                                   "jwt-auth": [{"key": "alice-iss", "algorithm": "HS256",
                                                                 "secret": hs[0]}]}})
    revision = env.put("consumers", "bob", {"credentials": {"key-auth": [{"key": keys[1]}]}})
    # errors around credentials: a key owned by another consumer, a malformed consumer, CAS, a txn
    assert api("PUT", "/v1/consumers/carol", {"credentials": {"key-auth": [{"key": keys[0]}]}}) == 422
    assert api("PUT", "/v1/consumers/carol", {"credentials": {"key-auth": [{"key": keys[2], "x": 1}]}}) == 422
    assert api("PUT", "/v1/consumers/carol", {"credentials": {"jwt-auth": [{"key": "c", "algorithm": "RS256",
                                                                           "secret": hs[1]}]}}) == 422
    assert api("PUT", "/v1/consumers/bob", {"credentials": {"key-auth": [{"key": keys[2]}]}},
               headers={"If-Match": "1"}) == 409
    assert api("POST", "/v1/txn", {"ops": [{"op": "put", "kind": "consumers", "id": "dave",
                                            "body": {"credentials": {"key-auth": [{"key": keys[1]}]}}}]}) == 422
    assert api("PATCH", "/v1/consumers/bob", {"credentials": {"key-auth": [{"key": keys[2]}]}}) == 200
    revision = c.api(node, "GET", "/v1/config").json()["revision"]
    # a secret in a header that is too large, and as a bearer token
    assert request("GET", node.url + "/v1/status", headers={"X-Junk": keys[0] * 2000}).status in (400, 431)
    assert request("GET", node.url + "/v1/status", token=hs[1]).status == 401
    # traffic through the proxy: right and wrong keys, good and badly signed JWTs
    proxy.wait_revision(revision)
    assert proxy.get("/k", headers={"apikey": keys[0]}).status == 200
    assert proxy.get("/k", headers={"apikey": keys[1]}).status == 401  # bob's old key: replaced
    assert proxy.get(f"/k?apikey={keys[2]}").status == 200
    good = jwt.encode({"iss": "alice-iss", "exp": int(time.time()) + 300}, hs[0], algorithm="HS256")
    bad = jwt.encode({"iss": "alice-iss", "exp": int(time.time()) + 300}, hs[1], algorithm="HS256")
    assert proxy.get("/j", headers={"authorization": f"Bearer {good}"}).status == 200
    assert proxy.get("/j", headers={"authorization": f"Bearer {bad}"}).status == 401

    # the audit log and every /metrics page
    audit = c.api(node, "GET", "/v1/audit").json()
    assert any(r["kind"] == "consumers" for r in audit["items"])
    pages = {"audit": json.dumps(audit), "error answers": "\n".join(answers[:-1])}  # the last: PATCH 200
    for n in c.nodes:
        pages[f"{n.id} metrics"] = request("GET", n.url + "/metrics", token=c.viewer_token).body.decode()
    pages["proxy metrics"] = request("GET", proxy.status_url + "/metrics").body.decode()
    pages["proxy status"] = request("GET", proxy.status_url + "/status").body.decode()

    # gwadm export hides credentials unless --show-secrets; apply of a hidden new credential is an error
    cli_env = {"GWADM_ENDPOINTS": ",".join(n.url for n in c.nodes), "GWADM_TOKEN": c.token, "PATH": "/usr/bin:/bin"}

    def gwadm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", *args], env=cli_env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    exported = gwadm("export", "--format", "json")
    assert exported.returncode == 0, exported.stderr
    pages["export"] = exported.stdout
    shown = gwadm("export", "--format", "json", "--show-secrets").stdout
    assert keys[0] in shown and hs[0] in shown  # the flag does show them
    doc = json.loads(exported.stdout)
    doc["consumers"]["erin"] = {"credentials": {"key-auth": [{"key": "<sensitive>"}]}}
    (tmp_path / "hidden.json").write_text(json.dumps(doc))
    out = gwadm("apply", "-f", str(tmp_path / "hidden.json"))
    assert out.returncode != 0 and "consumers[erin].credentials.key-auth[0].key" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert gwadm("diff", "-f", str(tmp_path / "hidden.json")).returncode == 2
    del doc["consumers"]["erin"]
    (tmp_path / "same.json").write_text(json.dumps(doc))
    same = gwadm("diff", "-f", str(tmp_path / "same.json"))
    assert same.returncode == 0 and same.stdout.startswith("no changes"), same.stdout + same.stderr
    for name, text in pages.items():
        for secret in secrets_made:
            assert secret not in text, f"a secret is in {name}"

    # every log of the run, after every process has stopped (flushed)
    env.close()
    logs = [p for p in tmp_path.rglob("*.log") if p.is_file()]
    assert len(logs) >= 5, logs  # 3 nodes, the proxy, the upstream
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets_made:
            assert secret not in text, f"a secret is in {path.relative_to(tmp_path)}"
