"""Plugins on the real data path: auth, rate limits, IP rules, CORS, transforms, ids."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.proxy.conftest import (
    FakeClock,
    Proxy,
    ServeFn,
    consumer,
    echo_app,
    global_plugin,
    plugins,
    route,
    snapshot,
    upstream,
)


def pem(public_key: Any) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def header_map(body: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in body["headers"]}


@pytest.fixture
async def echo_port(serve: ServeFn) -> int:
    return await serve(echo_app())


def install(proxy: Proxy, port: int, *, route_plugins: dict | None = None, consumers: dict | None = None,
            globals_: dict | None = None, revision: int = 1) -> None:
    proxy.install(snapshot(
        revision,
        upstreams={"u1": upstream(("127.0.0.1", port))},
        routes={"r1": route(paths=["/"], plugins=route_plugins or {})},
        consumers=consumers or {},
        plugins=globals_ or {},
    ))


# -- jwt-auth --------------------------------------------------------------------------------------------


async def test_jwt_hs256(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(jwt_auth={}),
            consumers={"alice": consumer(jwt_auth=[{"key": "alice-iss", "secret": "s3cret-s3cret-s3cret-s3cret-32b!"}])})
    now = int(time.time())
    good = jwt.encode({"iss": "alice-iss", "exp": now + 60}, "s3cret-s3cret-s3cret-s3cret-32b!", algorithm="HS256")
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {good}"}) as resp:
        assert resp.status == 200
    cases = {
        "missing": None,
        "wrong secret": jwt.encode({"iss": "alice-iss", "exp": now + 60}, "other-secret-other-secret-32by!!", algorithm="HS256"),
        "expired": jwt.encode({"iss": "alice-iss", "exp": now - 60}, "s3cret-s3cret-s3cret-s3cret-32b!", algorithm="HS256"),
        "no exp": jwt.encode({"iss": "alice-iss"}, "s3cret-s3cret-s3cret-s3cret-32b!", algorithm="HS256"),
        "unknown iss": jwt.encode({"iss": "bob", "exp": now + 60}, "s3cret-s3cret-s3cret-s3cret-32b!", algorithm="HS256"),
        "garbage": "not.a.token",
    }
    for name, token in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.get(proxy.url("/"), headers=headers) as resp:
            assert resp.status == 401, name
            assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="gwadm"'), name
            body = await resp.json()
            assert body["error"]["code"] == "unauthorized", name
            if token:
                assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"], name


async def test_jwt_verified_once_is_remembered_but_never_past_exp_or_a_credential_change(
    proxy: Proxy, echo_port: int, http: aiohttp.ClientSession
) -> None:
    secret_a, secret_b = "a-secret-a-secret-a-secret-32by!", "b-secret-b-secret-b-secret-32by!"
    install(proxy, echo_port, route_plugins=plugins(jwt_auth={}),
            consumers={"alice": consumer(jwt_auth=[{"key": "alice-iss", "secret": secret_a}])})
    exp = int(time.time()) + 2
    token = jwt.encode({"iss": "alice-iss", "exp": exp}, secret_a, algorithm="HS256")
    for _ in range(3):  # the second and third are answered from the verified-token cache
        async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
    plugin = proxy.dp.runtime.chains["r1"].auth[0]
    assert token in plugin._verified  # type: ignore[attr-defined]
    install(proxy, echo_port, route_plugins=plugins(jwt_auth={}), revision=2,  # the secret was rotated
            consumers={"alice": consumer(jwt_auth=[{"key": "alice-iss", "secret": secret_b}])})
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401
    install(proxy, echo_port, route_plugins=plugins(jwt_auth={}), revision=3,
            consumers={"alice": consumer(jwt_auth=[{"key": "alice-iss", "secret": secret_a}])})
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
    while time.time() <= exp + 0.05:  # the real clock: pyjwt checks exp against it
        await asyncio.sleep(0.05)
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["message"] == "token expired"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_jwt_asymmetric_by_kid(alg: str, proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        other = ec.generate_private_key(ec.SECP256R1())
    cfg = {"key_claim": "sub", "issuer": "https://idp.test", "audience": "api", "leeway": 5}
    install(proxy, echo_port, route_plugins=plugins(jwt_auth=cfg),
            consumers={"svc": consumer(jwt_auth=[{"key": "key-1", "algorithm": alg, "public_key": pem(private.public_key())}])})
    claims = {"sub": "whoever", "iss": "https://idp.test", "aud": "api", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, private, algorithm=alg, headers={"kid": "key-1"})
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
    forged = jwt.encode(claims, other, algorithm=alg, headers={"kid": "key-1"})
    wrong_aud = jwt.encode({**claims, "aud": "other"}, private, algorithm=alg, headers={"kid": "key-1"})
    wrong_iss = jwt.encode({**claims, "iss": "evil"}, private, algorithm=alg, headers={"kid": "key-1"})
    for token in (forged, wrong_aud, wrong_iss):
        async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401


async def test_jwt_alg_confusion_is_refused(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = pem(private.public_key())
    install(proxy, echo_port, route_plugins=plugins(jwt_auth={}),
            consumers={"svc": consumer(jwt_auth=[{"key": "k", "algorithm": "RS256", "public_key": public_pem}])})
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": "k", "exp": int(time.time()) + 60}).encode())
    sig = b64(hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {head}.{body}.{sig}"}) as resp:
        assert resp.status == 401


async def test_jwks_fetched_cached_and_kept_when_down(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": "rot-1", "alg": "RS256", "use": "sig"})
    fetches = []

    async def jwks(_: web.Request) -> web.Response:
        fetches.append(1)
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json"
        install(proxy, echo_port, route_plugins=plugins(jwt_auth={"jwks_url": url, "jwks_cache_ttl": 60}),
                consumers={"idp-user": consumer(jwt_auth=[{"key": "https://idp.test", "secret": "x" * 32}])})
        fake = FakeClock()
        proxy.dp.services.jwks.clock = fake
        token = jwt.encode({"iss": "https://idp.test", "exp": int(time.time()) + 600}, private,
                           algorithm="RS256", headers={"kid": "rot-1"})
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            async with http.get(proxy.url("/"), headers=auth) as resp:
                assert resp.status == 200
        assert len(fetches) == 1  # cached
    finally:
        await runner.cleanup()
    fake.advance(61)  # the TTL is over and the endpoint is gone: the last good set still serves
    async with http.get(proxy.url("/"), headers=auth) as resp:
        assert resp.status == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"iss": "https://idp.test", "exp": int(time.time()) + 600}, other,
                        algorithm="RS256", headers={"kid": "rot-1"})
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {forged}"}) as resp:
        assert resp.status == 401


async def test_jwks_never_reachable_is_503(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    from tests.proxy.conftest import free_dead_port

    dead = free_dead_port()
    try:
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/jwks"
        install(proxy, echo_port, route_plugins=plugins(jwt_auth={"jwks_url": url}))
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode({"iss": "x", "exp": int(time.time()) + 60}, private, algorithm="RS256")
        async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "jwks_unavailable"
    finally:
        dead.close()


# -- key-auth -------------------------------------------------------------------------------------------


async def test_key_auth_header_query_and_hide(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(key_auth={"hide_credentials": True}),
            consumers={"alice": consumer(key_auth=["alice-key-123"])})
    async with http.get(proxy.url("/"), headers={"apikey": "alice-key-123", "X-Other": "1"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert "apikey" not in header_map(body) and header_map(body)["x-other"] == "1"
    async with http.get(proxy.url("/p?apikey=alice-key-123&keep=1")) as resp:
        assert resp.status == 200
        assert (await resp.json())["query"] == "keep=1"
    for headers in ({}, {"apikey": "wrong-key-000"}):
        async with http.get(proxy.url("/"), headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Key realm="gwadm"'
            assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_key_auth_visible_without_hide(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(key_auth={"header": "X-API-Key", "query_param": None}),
            consumers={"alice": consumer(key_auth=["alice-key-123"])})
    async with http.get(proxy.url("/"), headers={"x-api-key": "alice-key-123"}) as resp:
        assert header_map(await resp.json())["x-api-key"] == "alice-key-123"
    async with http.get(proxy.url("/?apikey=alice-key-123")) as resp:
        assert resp.status == 401  # query parameter disabled


async def test_either_auth_plugin_may_authenticate(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    secret = "k" * 32
    install(proxy, echo_port, route_plugins=plugins(key_auth={}, jwt_auth={}),
            consumers={"a": consumer(key_auth=["key-aaaa-1111"], jwt_auth=[{"key": "a-iss", "secret": secret}])})
    token = jwt.encode({"iss": "a-iss", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    async with http.get(proxy.url("/"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
    async with http.get(proxy.url("/"), headers={"apikey": "key-aaaa-1111"}) as resp:
        assert resp.status == 200
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 401


# -- rate-limit, ip-restriction, cors ----------------------------------------------------------------------


async def test_rate_limit_429_and_headers(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(rate_limit={"limit": 2, "window": 60}))
    statuses = []
    for expected_remaining in ("1", "0"):
        async with http.get(proxy.url("/")) as resp:
            statuses.append(resp.status)
            assert resp.headers["RateLimit-Limit"] == "2"
            assert resp.headers["RateLimit-Remaining"] == expected_remaining
            assert int(resp.headers["RateLimit-Reset"]) > 0
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 30
        assert resp.headers["RateLimit-Remaining"] == "0"
        assert (await resp.json())["error"]["code"] == "rate_limited"
    assert statuses == [200, 200]


async def test_rate_limit_survives_a_config_change(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    rl = plugins(rate_limit={"limit": 1, "window": 60})
    install(proxy, echo_port, route_plugins=rl)
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 200
    install(proxy, echo_port, route_plugins=rl, consumers={"c": consumer(key_auth=["new-consumer-key"])}, revision=2)
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 429


async def test_ip_restriction(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(ip_restriction={"deny": ["127.0.0.0/8"]}))
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    install(proxy, echo_port, route_plugins=plugins(ip_restriction={"allow": ["127.0.0.1/32"]}), revision=2)
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 200
    install(proxy, echo_port, route_plugins=plugins(ip_restriction={"allow": ["10.0.0.0/8"]}), revision=3)
    async with http.get(proxy.url("/")) as resp:
        assert resp.status == 403


async def test_cors_preflight_and_actual(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(
        cors={"origins": ["https://app.test"], "credentials": True, "exposed_headers": ["X-Total"], "max_age": 600},
        key_auth={},
    ))
    pre = {"Origin": "https://app.test", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, apikey"}
    async with http.options(proxy.url("/things"), headers=pre) as resp:
        assert resp.status == 204  # answered by the proxy, before key-auth
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.test"
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type, apikey"
        assert resp.headers["Access-Control-Max-Age"] == "600"
        assert "Origin" in resp.headers["Vary"]
    async with http.options(proxy.url("/things"), headers={**pre, "Origin": "https://evil.test"}) as resp:
        assert resp.status == 204 and "Access-Control-Allow-Origin" not in resp.headers
    async with http.get(proxy.url("/"), headers={"Origin": "https://app.test"}) as resp:
        assert resp.status == 401  # CORS headers are on refusals too, so the browser can read them
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.test"
        assert resp.headers["Access-Control-Expose-Headers"] == "x-total"  # the schema lower-cases header names (the CP hands them over so)


async def test_cors_wildcard_on_global_plugin(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, globals_={"g-cors": global_plugin("cors")})
    async with http.get(proxy.url("/"), headers={"Origin": "https://any.test"}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"


# -- request-transformer, request-id, access-log, consumer plugins ----------------------------------------


async def test_request_transformer(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, route_plugins=plugins(request_transformer={
        "add_headers": {"X-Added": "yes"}, "remove_headers": ["X-Secret"], "rewrite_path": "/internal/v2",
    }))
    async with http.get(proxy.url("/public?x=1"), headers={"X-Secret": "s", "X-Keep": "k"}) as resp:
        body = await resp.json()
        h = header_map(body)
        assert h["x-added"] == "yes" and "x-secret" not in h and h["x-keep"] == "k"
        assert body["path"] == "/internal/v2" and body["query"] == "x=1"


async def test_request_id_generated_propagated_echoed(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port, globals_={"rid": global_plugin("request-id")})
    async with http.get(proxy.url("/")) as resp:
        rid = resp.headers["X-Request-Id"]
        assert len(rid) == 32
        assert header_map(await resp.json())["x-request-id"] == rid
    async with http.get(proxy.url("/"), headers={"X-Request-Id": "trace-abc"}) as resp:
        assert resp.headers["X-Request-Id"] == "trace-abc"
    proxy.install(snapshot(2, upstreams={"u1": upstream(("127.0.0.1", echo_port))},
                           routes={"r1": route(paths=["/only"])}, plugins={"rid": global_plugin("request-id")}))
    async with http.get(proxy.url("/nope")) as resp:
        assert resp.status == 404 and len(resp.headers["X-Request-Id"]) == 32


async def test_access_log_file(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession, tmp_path: Any) -> None:
    log_file = tmp_path / "access.log"
    install(proxy, echo_port,
            route_plugins=plugins(key_auth={}, access_log={"path": str(log_file)}),
            consumers={"alice": consumer(key_auth=["alice-key-123"])},
            globals_={"rid": global_plugin("request-id")})
    async with http.get(proxy.url("/a?b=c"), headers={"apikey": "alice-key-123"}) as resp:
        await resp.read()
        rid = resp.headers["X-Request-Id"]
    async with http.get(proxy.url("/x")) as resp:
        assert resp.status == 401
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["request_id"] == rid and first["status"] == 200 and first["consumer"] == "alice"
    assert first["route"] == "r1" and first["upstream"] == "u1" and first["target"] == f"127.0.0.1:{echo_port}"
    assert first["path"] == "/a" and first["method"] == "GET" and first["bytes_sent"] > 0
    assert first["latency_ms"] >= 0 and first["time"].endswith("+00:00")
    assert lines[1]["status"] == 401 and lines[1]["consumer"] is None


async def test_consumer_plugins_apply_after_auth(proxy: Proxy, echo_port: int, http: aiohttp.ClientSession) -> None:
    install(proxy, echo_port,
            route_plugins=plugins(key_auth={}, rate_limit={"limit": 100, "window": 60}),
            consumers={
                "limited": consumer(key_auth=["limited-key-1"], plugins=plugins(rate_limit={"limit": 1, "window": 60})),
                "free": consumer(key_auth=["free-key-0001"]),
            })
    for _ in range(3):
        async with http.get(proxy.url("/"), headers={"apikey": "free-key-0001"}) as resp:
            assert resp.status == 200 and resp.headers["RateLimit-Limit"] == "100"
    async with http.get(proxy.url("/"), headers={"apikey": "limited-key-1"}) as resp:
        assert resp.status == 200 and resp.headers["RateLimit-Limit"] == "1"
    async with http.get(proxy.url("/"), headers={"apikey": "limited-key-1"}) as resp:
        assert resp.status == 429
