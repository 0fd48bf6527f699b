"""JWKS cache: TTL, last good set kept on failure, early refetch for an unknown kid."""

from __future__ import annotations

import json

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.jwks import JwksCache, JwksUnavailable, KeySet
from tests.proxy.conftest import FakeClock, ServeFn


def jwk(kid: str) -> dict:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    data.update({"kid": kid, "alg": "ES256"})
    return data


class Idp:
    """A JWKS endpoint whose answer the test controls."""

    def __init__(self) -> None:
        self.keys = [jwk("k1")]
        self.status = 200
        self.hits = 0

    def app(self) -> web.Application:
        async def handler(_: web.Request) -> web.Response:
            self.hits += 1
            if self.status != 200:
                return web.Response(status=self.status)
            return web.json_response({"keys": self.keys})

        app = web.Application()
        app.router.add_get("/jwks", handler)
        return app


@pytest.fixture
async def setup(serve: ServeFn):
    idp = Idp()
    port = await serve(idp.app())
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session, clock=clock, retry_interval=5.0, min_refresh=10.0)
        yield idp, f"http://127.0.0.1:{port}/jwks", cache, clock


async def test_ttl_and_keep_last_good(setup) -> None:
    idp, url, cache, clock = setup
    ks = await cache.get(url, ttl=60)
    assert [k.key_id for k in ks.keys] == ["k1"] and idp.hits == 1
    await cache.get(url, ttl=60)
    assert idp.hits == 1
    clock.advance(61)
    idp.status = 500
    ks2 = await cache.get(url, ttl=60)
    assert ks2 is ks and idp.hits == 2  # failed refetch, last good set kept
    await cache.get(url, ttl=60)
    assert idp.hits == 2  # no retry before retry_interval
    clock.advance(5)
    idp.status = 200
    idp.keys = [jwk("k2")]
    ks3 = await cache.get(url, ttl=60)
    assert [k.key_id for k in ks3.keys] == ["k2"] and idp.hits == 3


async def test_unknown_kid_refetches_early_but_rate_limited(setup) -> None:
    idp, url, cache, clock = setup
    await cache.get(url, ttl=300)
    idp.keys = [jwk("k1"), jwk("new")]
    ks = await cache.get(url, ttl=300, kid="new")
    assert idp.hits == 1 and not ks.candidates("new")  # too soon after the last fetch
    clock.advance(10)
    ks = await cache.get(url, ttl=300, kid="new")
    assert idp.hits == 2 and ks.candidates("new")


async def test_never_fetched_raises(setup) -> None:
    idp, url, cache, clock = setup
    idp.status = 503
    with pytest.raises(JwksUnavailable):
        await cache.get(url, ttl=60)


def test_keyset_parse() -> None:
    ks = KeySet.parse({"keys": [jwk("a"), {"kty": "bogus", "kid": "b"}]})
    assert [k.key_id for k in ks.keys] == ["a"]
    assert ks.candidates(None) == list(ks.keys)
    with pytest.raises(ValueError):
        KeySet.parse({"keys": [{"kty": "bogus"}]})
    with pytest.raises(ValueError):
        KeySet.parse([])
