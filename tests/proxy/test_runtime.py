"""build_runtime: compiling snapshots, rejecting malformed ones, handing state over."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.model import Op, Txn
from gateway.state import ConfigState
from proxy.plugins.rate_limit import RateLimit
from proxy.runtime import build_runtime
from tests.proxy.conftest import consumer, global_plugin, plugins, route, snapshot, upstream


def build(snap: dict[str, Any]) -> Any:
    return build_runtime(snap, revision=snap["revision"], hash="h")


def test_built_from_real_config_state() -> None:
    state, _ = ConfigState.empty().apply(Txn("t1", (
        Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 9000}]}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u1", "plugins": {"rate-limit": {"limit": 5}}}),
        Op("put", "consumers", "c1", {"credentials": {"key-auth": [{"key": "abcdefgh12"}]}}),
        Op("put", "plugins", "p1", {"name": "request-id", "config": {}}),
    )))
    rt = build_runtime(state.to_snapshot(), revision=state.revision, hash=state.hash())
    assert rt.revision == 1 and rt.hash == state.hash()
    m = rt.router.match("GET", "x", "/a/b", {})
    assert m is not None and m.route.id == "r1"
    assert rt.chain_for("r1").names() == ["request-id", "rate-limit"]
    assert rt.chain_for(None).names() == ["request-id"]
    assert rt.consumers.key_auth["abcdefgh12"].id == "c1"
    assert rt.pools["u1"].targets[0].address == "127.0.0.1:9000"


def test_route_plugins_override_globals_and_disabled_globals_are_skipped() -> None:
    rt = build(snapshot(
        upstreams={"u1": upstream(("h", 1))},
        routes={"r1": route(paths=["/"], plugins=plugins(cors={"origins": ["https://r.test"]})),
                "r2": route(paths=["/2"])},
        plugins={"g1": global_plugin("cors"), "g2": global_plugin("request-id", enabled=False)},
    ))
    r1 = rt.chain_for("r1").plugins
    assert [p.name for p in r1] == ["cors"] and r1[0].config["origins"] == ["https://r.test"]
    assert rt.chain_for("r2") is rt.global_chain
    assert rt.global_chain.plugins[0].config["origins"] == ["*"]


def test_two_global_plugins_of_one_name_warn() -> None:
    rt = build(snapshot(upstreams={"u1": upstream(("h", 1))}, routes={"r": route(paths=["/"])},
                        plugins={"a": global_plugin("cors"), "b": global_plugin("cors", origins=["x"])}))
    assert rt.global_chain.plugins[0].config["origins"] == ["*"]
    assert any("plugins[b]" in w for w in rt.warnings)


@pytest.mark.parametrize(
    "snap, message",
    [
        ({"revision": 1}, "resources"),
        ({"revision": 1, "resources": {"routes": []}}, "routes"),
        ({"revision": 1, "resources": {"routes": {"r": {"nospec": 1}}}}, r"routes\[r\]"),
        (snapshot(routes={"r": route("missing", paths=["/"])}), r"routes\[r\]\.upstream"),
        (snapshot(upstreams={"u1": upstream(("h", 1))}, routes={"r": route(paths=["/"], plugins={"nope": {}})}),
         r"routes\[r\]\.plugins\.nope: unknown plugin"),
        (snapshot(upstreams={"u1": upstream(("h", 1))},
                  routes={"r": route(paths=["/"], plugins={"rate-limit": {"limit": "x"}})}),
         r"routes\[r\]\.plugins\.rate-limit: rate-limit\.limit"),
        (snapshot(upstreams={"u1": upstream(("h", 70000))}), r"upstreams\[u1\]\.targets\[0\]\.port"),
        (snapshot(plugins={"p": {"name": "bogus", "config": {}, "enabled": True}}), r"plugins\[p\]"),
        (snapshot(consumers={"a": consumer(key_auth=["same-key-1"]), "b": consumer(key_auth=["same-key-1"])}),
         "also belongs to consumer a"),
    ],
)
def test_malformed_configs_raise_value_error(snap: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(snap)


def test_revision_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="revision"):
        build_runtime(snapshot(3), revision=4, hash="h")


def pem(key: Any) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_jwt_credentials_parsed_or_disabled_with_warning() -> None:
    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    rt = build(snapshot(consumers={"c": consumer(jwt_auth=[
        {"key": "rs", "algorithm": "RS256", "public_key": pem(rsa_pub)},
        {"key": "es", "algorithm": "ES256", "public_key": pem(ec_pub)},
        {"key": "bad", "algorithm": "RS256", "public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"},
        {"key": "mismatch", "algorithm": "ES256", "public_key": pem(rsa_pub)},
        {"key": "short", "algorithm": "HS256", "secret": "tiny"},
    ])}))
    jwt = rt.consumers.jwt
    assert jwt["rs"][0].verify_key is not None and jwt["es"][0].verify_key is not None
    assert jwt["bad"][0].verify_key is None and jwt["mismatch"][0].verify_key is None
    assert jwt["short"][0].verify_key == "tiny"
    joined = "\n".join(rt.warnings)
    assert "jwt-auth[2].public_key: cannot be parsed" in joined
    assert "jwt-auth[3].public_key: not a key for ES256" in joined
    assert "jwt-auth[4].secret: shorter than 32 bytes" in joined


def test_handover_reuses_unchanged_pools_and_plugin_state() -> None:
    base = dict(upstreams={"u1": upstream(("h", 1)), "u2": upstream(("h", 2))},
                routes={"r": route(paths=["/"], plugins=plugins(rate_limit={"limit": 1}))})
    old = build(snapshot(1, **base))
    rl_old = old.chain_for("r").plugins[0]
    assert isinstance(rl_old, RateLimit)
    rl_old.take("ip:1.1.1.1", 0.0)
    changed = dict(base, upstreams={"u1": upstream(("h", 1)), "u2": upstream(("h", 3))})
    new = build(snapshot(2, **changed)).handover(old)
    assert new.pools["u1"] is old.pools["u1"]
    assert new.pools["u2"] is not old.pools["u2"]
    rl_new = new.chain_for("r").plugins[0]
    assert rl_new is not rl_old and rl_new.buckets is rl_old.buckets
    changed_rl = dict(base, routes={"r": route(paths=["/"], plugins=plugins(rate_limit={"limit": 2}))})
    fresh = build(snapshot(3, **changed_rl)).handover(new)
    assert not fresh.chain_for("r").plugins[0].buckets  # config changed: state starts over


def test_a_dropped_runtime_leaves_no_reference_cycles() -> None:
    """DataPlane freezes the heap after swaps without collecting first (proxy/server.py): that is only
    safe while a runtime is freed by reference counting alone."""
    import gc

    from tests.proxy.conftest import consumer, global_plugin, plugins

    snap = snapshot(
        upstreams={"u1": upstream(("127.0.0.1", 1), lb="consistent_hash", hash_on={"type": "ip", "name": None})},
        routes={f"r{i}": route(paths=[f"/p{i}"], plugins=plugins(rate_limit={"limit": 5}, key_auth={}, cors={}))
                for i in range(20)},
        consumers={"c": consumer(key_auth=["k-1"], plugins=plugins(rate_limit={"limit": 3}))},
        plugins={"g": global_plugin("request-id"), "l": global_plugin("access-log")},
    )  # fmt: skip
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        runtime = build_runtime(snap, revision=1, hash="h")
        assert len(runtime.router) == 20
        del runtime
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
