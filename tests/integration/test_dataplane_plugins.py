"""Plugins and load balancing end to end: config written to the CP, enforced by a real proxy."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.cluster import free_port
from tests.support.dataplane import DataPlaneEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneEnv]:
    with DataPlaneEnv(Path(tmp_path_factory.mktemp("dp-plugins")), proxies=1) as e:
        e.put("upstreams", "ua", e.upstream_spec("a"))
        yield e


def apply(env: DataPlaneEnv, kind: str, rid: str, body: dict[str, Any]) -> None:
    rev = env.put(kind, rid, body)
    env.proxies[0].wait_revision(rev)


def pem_public(key: Any) -> str:
    return str(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def test_jwt_auth_hs256_rs256_es256(env: DataPlaneEnv) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    hs_secret = "a-very-long-shared-secret-for-hs256-tokens!"
    apply(env, "consumers", "alice", {"credentials": {"jwt-auth": [
        {"key": "issuer-hs", "algorithm": "HS256", "secret": hs_secret},
        {"key": "issuer-rs", "algorithm": "RS256", "public_key": pem_public(rsa_key)},
        {"key": "issuer-es", "algorithm": "ES256", "public_key": pem_public(ec_key)},
    ]}})
    apply(env, "routes", "jwt", {"paths": ["/jwt"], "upstream": "ua",
                                 "plugins": {"jwt-auth": {"audience": "gw"}}})
    proxy = env.proxies[0]
    now = int(time.time())

    def claims(iss: str, **extra: Any) -> dict[str, Any]:
        return {"iss": iss, "aud": "gw", "exp": now + 60, **extra}

    for token in (
        jwt.encode(claims("issuer-hs"), hs_secret, algorithm="HS256"),
        jwt.encode(claims("issuer-rs"), rsa_key, algorithm="RS256"),
        jwt.encode(claims("issuer-es"), ec_key, algorithm="ES256"),
    ):
        r = proxy.get("/jwt", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, r
    rejected = {
        "missing": None,
        "expired": jwt.encode(claims("issuer-hs", exp=now - 120), hs_secret, algorithm="HS256"),
        "bad signature": jwt.encode(claims("issuer-hs"), "another-secret-of-enough-length!!", algorithm="HS256"),
        "unknown issuer": jwt.encode(claims("nobody"), hs_secret, algorithm="HS256"),
        "wrong audience": jwt.encode({**claims("issuer-hs"), "aud": "other"}, hs_secret, algorithm="HS256"),
        "alg confusion": jwt.encode(claims("issuer-rs"), ec_key, algorithm="ES256"),
    }
    for what, token in rejected.items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        r = proxy.get("/jwt", headers=headers)
        assert r.status == 401, (what, r)
        assert r.headers["www-authenticate"].startswith("Bearer"), (what, r.headers)
        assert r.json()["error"]["code"], what


def test_key_auth(env: DataPlaneEnv) -> None:
    apply(env, "consumers", "bob", {"credentials": {"key-auth": [{"key": "bob-key-123456"}]}})
    apply(env, "routes", "keyed", {"paths": ["/keyed"], "upstream": "ua",
                                   "plugins": {"key-auth": {"hide_credentials": True}}})
    proxy = env.proxies[0]
    ok = proxy.get("/keyed", headers={"apikey": "bob-key-123456"})
    assert ok.status == 200 and "apikey" not in {k.lower() for k in ok.json()["headers"]}, ok
    assert proxy.get("/keyed?apikey=bob-key-123456").status == 200
    assert proxy.get("/keyed").status == 401
    assert proxy.get("/keyed", headers={"apikey": "wrong-key-000000"}).status == 401


def test_rate_limit(env: DataPlaneEnv) -> None:
    apply(env, "routes", "limited", {"paths": ["/limited"], "upstream": "ua",
                                     "plugins": {"rate-limit": {"limit": 3, "window": 60, "key": "ip"}}})
    proxy = env.proxies[0]
    statuses = [proxy.get("/limited") for _ in range(4)]
    assert [r.status for r in statuses] == [200, 200, 200, 429], statuses
    limited = statuses[-1]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "3"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.json()["error"]["code"]


def test_ip_restriction(env: DataPlaneEnv) -> None:
    apply(env, "routes", "denied", {"paths": ["/denied"], "upstream": "ua",
                                    "plugins": {"ip-restriction": {"deny": ["127.0.0.0/8"]}}})
    apply(env, "routes", "allowed", {"paths": ["/allowed"], "upstream": "ua",
                                     "plugins": {"ip-restriction": {"allow": ["127.0.0.1/32"]}}})
    proxy = env.proxies[0]
    r = proxy.get("/denied")
    assert r.status == 403 and r.json()["error"]["code"], r
    assert proxy.get("/allowed").status == 200


def test_balancer_round_robin_hash_and_retry(env: DataPlaneEnv) -> None:
    proxy = env.proxies[0]
    apply(env, "upstreams", "both", env.upstream_spec("a", "b"))
    apply(env, "routes", "rr", {"paths": ["/rr"], "upstream": "both"})
    seen = Counter(proxy.get("/rr").json()["upstream"] for _ in range(10))
    assert seen == Counter({"a": 5, "b": 5}), seen

    apply(env, "upstreams", "hashed", env.upstream_spec(
        "a", "b", lb="consistent_hash", hash_on={"type": "header", "name": "x-user"}))
    apply(env, "routes", "hash", {"paths": ["/hash"], "upstream": "hashed"})
    for user in ("u1", "u2", "u3", "u4"):
        got = {proxy.get("/hash", headers={"X-User": user}).json()["upstream"] for _ in range(5)}
        assert len(got) == 1, (user, got)

    dead = free_port()
    spec = env.upstream_spec("a")
    spec["targets"].append({"host": "127.0.0.1", "port": dead, "weight": 1})
    apply(env, "upstreams", "flaky", {**spec, "retries": 2})
    apply(env, "routes", "flaky", {"paths": ["/flaky"], "upstream": "flaky"})
    results = [proxy.get("/flaky") for _ in range(10)]
    assert all(r.status == 200 and r.json()["upstream"] == "a" for r in results), results

    apply(env, "upstreams", "gone", {"targets": [{"host": "127.0.0.1", "port": dead}], "retries": 0})
    apply(env, "routes", "gone", {"paths": ["/gone"], "upstream": "gone"})
    r = proxy.get("/gone")
    assert r.status == 502 and r.json()["error"]["code"], r


def test_bad_plugin_config_is_rejected_by_the_cp(env: DataPlaneEnv) -> None:
    r = env.cluster.api(env.cluster.nodes[0], "PUT", "/v1/routes/bad", {
        "paths": ["/bad"], "upstream": "ua", "plugins": {"rate-limit": {"limit": "lots"}}})
    assert r.status == 422 and "rate-limit" in r.json()["error"]["path"], r
    r = env.cluster.api(env.cluster.nodes[0], "PUT", "/v1/routes/bad", {
        "paths": ["/bad"], "upstream": "ua", "plugins": {"no-such-plugin": {}}})
    assert r.status == 422, r
    assert env.proxies[0].get("/bad").status == 404


def test_fleet_wide_access_log_request_id_and_cors(env: DataPlaneEnv) -> None:
    log_path = env.base / "access.log"
    apply(env, "plugins", "log", {"name": "access-log", "config": {
        "path": str(log_path), "fields": ["request_id", "method", "path", "status", "route"]}})
    apply(env, "plugins", "rid", {"name": "request-id", "config": {}})
    apply(env, "routes", "web", {"paths": ["/web"], "upstream": "ua",
                                 "plugins": {"cors": {"origins": ["https://app.example"]}}})
    proxy = env.proxies[0]
    r = proxy.get("/web/page", headers={"Origin": "https://app.example"})
    assert r.status == 200, r
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    request_id = r.headers["x-request-id"]
    upstream_saw = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert upstream_saw["x-request-id"] == request_id  # propagated upstream
    pre = proxy.get("/web/page", method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "PUT"})
    assert pre.status in (200, 204) and "PUT" in pre.headers["access-control-allow-methods"], pre
    assert "access-control-allow-origin" not in proxy.get("/web/x", headers={"Origin": "https://evil.example"}).headers

    def logged() -> list[dict[str, Any]]:
        import json
        if not log_path.exists():
            return []
        return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]

    from tests.support.http import wait_for
    entry = wait_for(lambda: next((e for e in logged() if e.get("request_id") == request_id), None), 10, "log line")
    assert entry == {"request_id": request_id, "method": "GET", "path": "/web/page", "status": 200, "route": "web"}
    env.delete("plugins", "log")
    env.delete("plugins", "rid")
