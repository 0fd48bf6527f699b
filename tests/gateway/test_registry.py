"""gateway/registry.py: registration commands applied to a ConfigState (pure, deterministic)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import registry
from gateway.codec import decode_delta, encode_delta
from gateway.delta import apply_delta
from gateway.errors import NotFound, ValidationError
from gateway.model import Op, Txn
from gateway.state import ConfigState


def _base() -> ConfigState:
    state, _ = ConfigState.empty().apply(Txn("t1", (
        Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 9001}]}),
        Op("put", "upstreams", "u2", {"targets": [{"host": "127.0.0.1", "port": 9002}]}),
        Op("put", "routes", "r1", {"paths": ["/a"], "upstream": "u1"}),
    )))
    return state


def _put(host: str = "10.0.0.1", port: int = 8080, upstream: str = "u1", **kw: Any) -> dict[str, Any]:
    return {"type": "reg_put", "upstream": upstream, "host": host, "port": port, "ttl": 10, "now": 1000.0, **kw}


def test_register_is_a_revision_with_a_delta_and_changes_the_hash() -> None:
    state = _base()
    out = registry.apply_command(state, 0, _put(weight=3, metadata={"zone": "a"}))
    assert out.result["ok"] and out.result["created"] and out.result["changed"]
    assert out.state.revision == state.revision + 1
    assert out.state.hash() != state.hash()
    rid = registry.registration_id("u1", "10.0.0.1", 8080)
    reg = out.state.get("registrations", rid)
    assert reg is not None and reg.spec["weight"] == 3 and reg.spec["registered_at"] == 1000.0
    assert out.delta is not None and out.delta.ops[0][1] == "registrations"
    # A proxy applying the delta (through the codec) reaches the same state and hash.
    replica = apply_delta(state, decode_delta(encode_delta(out.delta)))
    assert replica == out.state and replica.hash() == out.state.hash()
    assert ConfigState.from_snapshot(out.state.to_snapshot()) == out.state


def test_same_registration_again_is_a_renewal_without_revision() -> None:
    first = registry.apply_command(_base(), 0, _put())
    again = registry.apply_command(first.state, 0, _put(now=2000.0))
    assert again.delta is None and again.state is first.state
    assert again.result == {"ok": True, "id": first.result["id"], "changed": False, "revision": first.state.revision}
    changed = registry.apply_command(first.state, 0, _put(weight=5, now=2000.0))
    reg = changed.state.get("registrations", first.result["id"])
    assert changed.delta is not None and reg is not None
    assert reg.spec["weight"] == 5 and reg.spec["registered_at"] == 1000.0  # age kept across rewrites
    assert reg.created_revision == first.state.revision and reg.mod_revision == changed.state.revision


def test_register_needs_an_existing_upstream_and_valid_fields() -> None:
    with pytest.raises(NotFound) as err:
        registry.apply_command(_base(), 0, _put(upstream="nope"))
    assert err.value.path == "upstreams[nope]"
    for bad, field in ((_put(ttl=0), "ttl"), (_put(weight=-1), "weight"), (_put(metadata={"a": 1}), "metadata.a")):
        with pytest.raises(ValidationError) as verr:
            registry.apply_command(_base(), 0, bad)
        assert verr.value.path is not None and verr.value.path.endswith(field)
    body = _put()
    del body["ttl"]
    with pytest.raises(ValidationError, match="required"):
        registry.apply_command(_base(), 0, body)


def test_deregister_and_unknown_deregister() -> None:
    reg = registry.apply_command(_base(), 0, _put())
    out = registry.apply_command(reg.state, 0, {"type": "reg_delete", "upstream": "u1", "host": "10.0.0.1", "port": 8080})
    assert out.state.count("registrations") == 0 and out.state.revision == reg.state.revision + 1
    with pytest.raises(NotFound):
        registry.apply_command(out.state, 0, {"type": "reg_delete", "upstream": "u1", "host": "10.0.0.1", "port": 8080})


def test_expire_rechecks_epoch_and_mod_revision() -> None:
    reg = registry.apply_command(_base(), 0, _put())
    rid = reg.result["id"]
    mod = reg.state.get("registrations", rid).mod_revision  # type: ignore[union-attr]
    granted = registry.apply_command(reg.state, 0, {"type": "reg_grant", "epoch": 5})
    assert granted.epoch == 5 and granted.delta is None
    # An expiry decided in an older epoch (a deposed leader) removes nothing.
    stale = registry.apply_command(granted.state, 5, {"type": "reg_expire", "epoch": 4, "items": [[rid, mod]]})
    assert stale.result["stale_epoch"] and stale.state.count("registrations") == 1 and stale.delta is None
    # An expiry that raced a re-registration (mod_revision moved on) removes nothing.
    moved = registry.apply_command(granted.state, 5, _put(weight=2))
    raced = registry.apply_command(moved.state, 5, {"type": "reg_expire", "epoch": 5, "items": [[rid, mod]]})
    assert raced.result["expired"] == [] and raced.state.count("registrations") == 1
    ok = registry.apply_command(granted.state, 5, {"type": "reg_expire", "epoch": 5, "items": [[rid, mod]]})
    assert ok.result["expired"] == [rid] and ok.state.count("registrations") == 0 and ok.delta is not None
    # A grant from an older term applied late does not move the epoch back.
    late = registry.apply_command(ok.state, 5, {"type": "reg_grant", "epoch": 3})
    assert late.epoch == 5


def test_deleting_an_upstream_deregisters_its_targets_in_the_same_revision() -> None:
    state = _base()
    state = registry.apply_command(state, 0, _put()).state
    state = registry.apply_command(state, 0, _put(upstream="u2", port=1)).state
    new, delta = state.apply(Txn("t2", (Op("delete", "upstreams", "u2"),)))
    assert new.count("registrations") == 1
    assert ("delete", "registrations", registry.registration_id("u2", "10.0.0.1", 1), None) in delta.ops
    assert apply_delta(state, delta) == new


def test_txns_cannot_write_registrations() -> None:
    with pytest.raises(NotFound):
        _base().apply(Txn("t", (Op("put", "registrations", "x", {"upstream": "u1"}),)))


def test_parse_target_and_grouping() -> None:
    assert registry.parse_target("Example.COM:80") == ("example.com", 80)
    assert registry.parse_target("[::1]:9000") == ("::1", 9000)
    for bad in ("nohost", "h:0", ":80", "::1:80", "h:x"):
        with pytest.raises(ValidationError):
            registry.parse_target(bad)
    state = _base()
    for port in (3, 1, 2):
        state = registry.apply_command(state, 0, _put(port=port)).state
    grouped = registry.registered_targets(r.spec for r in state.list("registrations"))
    assert [t["port"] for t in grouped["u1"]] == [1, 2, 3]


def test_registration_view() -> None:
    state = registry.apply_command(_base(), 0, _put()).state
    reg = state.list("registrations")[0]
    view = registry.registration_view(reg, now=1012.5, last_seen_age=4.0)
    assert view["registered"] and view["age"] == 12.5 and view["expires_in"] == 6.0
    assert registry.registration_view(reg, now=1000.0, last_seen_age=None)["expires_in"] is None
