"""The relay's store (proxy/relay.py): its delta log reproduces the CP's states exactly."""

from __future__ import annotations

from gateway.delta import apply_delta
from gateway.model import Op, Txn
from gateway.state import ConfigState
from proxy.relay import RelayStore, diff_states


def write(state: ConfigState, *ops: Op) -> ConfigState:
    return state.apply(Txn(f"r{state.revision}", ops))[0]


def test_diff_then_apply_gives_the_same_state() -> None:
    s0 = write(ConfigState.empty(), Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 1}]}))
    s1 = write(s0, Op("put", "routes", "a", {"paths": ["/a"], "upstream": "u1"}),
               Op("put", "routes", "b", {"paths": ["/b"], "upstream": "u1"}))  # fmt: skip
    s2 = write(s1, Op("put", "routes", "a", {"paths": ["/a2"], "upstream": "u1"}))
    s3 = write(s2, Op("delete", "routes", "b"))
    for old, new in ((s0, s1), (s1, s3), (s0, s3), (ConfigState.empty(), s3)):
        d = diff_states(old, new)
        got = apply_delta(old, d)
        assert got.revision == new.revision and got.hash() == new.hash()
    assert diff_states(s2, s3).ops == (("delete", "routes", "b", None),)


def test_store_serves_deltas_from_any_installed_revision_and_never_goes_back() -> None:
    store = RelayStore("r1")
    seen: list[int] = []
    store.subscribe(seen.append)
    s0 = write(ConfigState.empty(), Op("put", "upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 1}]}))
    s1 = write(s0, Op("put", "routes", "a", {"paths": ["/a"], "upstream": "u1"}))
    s2 = write(s1, Op("put", "routes", "c", {"paths": ["/c"], "upstream": "u1"}))
    store.install(s0)
    store.install(s2)  # a jump (coalesced delta or snapshot upstream): one delta s0 -> s2
    assert store.deltas_since(s2.revision) == []
    (d,) = store.deltas_since(s0.revision) or []
    assert (d.base, d.revision) == (s0.revision, s2.revision)
    assert store.deltas_since(s1.revision) is None  # not a base in the log: a snapshot then
    assert store.deltas_since(s2.revision + 1) is None
    store.install(s1)  # older: refused
    assert store.state is s2 and seen == [s0.revision, s2.revision]
    st = store.raft_status()
    assert st["has_quorum"] is False and st["cached"] is True and store.member_urls() == []
    store.set_healthy(True)
    assert store.raft_status()["has_quorum"] is True and store.raft_status()["cached"] is False
