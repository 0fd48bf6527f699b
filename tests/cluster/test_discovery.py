"""cluster/discovery.py's expiry rules on a store stand-in that applies registry commands for real
(gateway/registry.py) and a raft status the test sets; the clock is the test's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.discovery import Discovery, NotLeader
from gateway import registry
from gateway.model import Op, Txn
from gateway.state import ConfigState


class FakeRaft:
    def __init__(self) -> None:
        self.role, self.term, self.has_quorum = "leader", 1, True

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "term": self.term, "has_quorum": self.has_quorum}

    def has_leader_with_quorum(self) -> bool:
        return self.has_quorum


class FakeStore:
    node_id = "n1"
    token_generation = 0

    def __init__(self) -> None:
        self.raft = FakeRaft()
        self.state, _ = ConfigState.empty().apply(
            Txn("t", (Op("put", "upstreams", "u", {"targets": [{"host": "127.0.0.1", "port": 1}]}),)))
        self.registry_epoch = 0
        self.commands: list[dict[str, Any]] = []

    # The ConfigStore surface discovery uses (it never reaches into a store's Raft node).
    def raft_status(self) -> dict[str, Any]:
        return {**self.raft.status(), "leader_id": self.node_id if self.raft.role == "leader" else None}

    def has_leader_with_quorum(self) -> bool:
        return self.raft.has_leader_with_quorum()

    def members(self) -> list[Any]:
        return []

    async def registry_command(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.commands.append(cmd)
        out = registry.apply_command(self.state, self.registry_epoch, cmd)
        self.state, self.registry_epoch = out.state, out.epoch
        return out.result


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup() -> tuple[FakeStore, Discovery, Clock]:
    store = FakeStore()
    d = Discovery(store, "secret", tick=0.2)  # type: ignore[arg-type]
    clock = Clock()
    d.clock = clock
    return store, d, clock


async def _register(store: FakeStore, port: int, ttl: float = 3.0) -> str:
    result = await store.registry_command({"type": "reg_put", "upstream": "u", "host": "10.0.0.1", "port": port,
                                           "ttl": ttl, "now": 0.0}, 1.0)
    return str(result["id"])


async def _run(d: Discovery, clock: Clock, seconds: float, beat: list[str] = ()) -> None:  # type: ignore[assignment]
    """Rounds every 0.2 s for ``seconds``, heartbeating ``beat`` every round."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.2
        for rid in beat:
            d.heartbeat(rid)
        await d.step()


async def test_grant_first_then_expire_only_the_silent(setup: tuple[FakeStore, Discovery, Clock]) -> None:
    store, d, clock = setup
    live, silent = await _register(store, 1), await _register(store, 2)
    await d.step()
    assert store.commands[-1] == {"type": "reg_grant", "epoch": 1} and d.leading
    await _run(d, clock, 2.8, beat=[live])
    assert store.state.count("registrations") == 2  # full TTL from the grant
    await _run(d, clock, 0.6, beat=[live])
    assert [r.id for r in store.state.list("registrations")] == [live]
    expire = [c for c in store.commands if c["type"] == "reg_expire"]
    assert expire and expire[0]["epoch"] == 1 and expire[0]["items"][0][0] == silent


async def test_no_quorum_never_expires_and_new_term_grants_a_fresh_ttl(setup: tuple[FakeStore, Discovery, Clock]) -> None:
    store, d, clock = setup
    rid = await _register(store, 1)
    await d.step()
    store.raft.has_quorum = False  # cut off: not leading any more
    await _run(d, clock, 10.0)
    assert store.state.count("registrations") == 1 and not d.leading
    assert not [c for c in store.commands if c["type"] == "reg_expire"]
    store.raft.has_quorum, store.raft.term = True, 5  # elected again in a later term
    await _run(d, clock, 2.5)
    assert store.registry_epoch == 5 and store.state.count("registrations") == 1
    await _run(d, clock, 1.0)
    assert store.state.get("registrations", rid) is None


async def test_follower_answers_from_local_state_and_batches(setup: tuple[FakeStore, Discovery, Clock]) -> None:
    store, d, clock = setup
    rid = await _register(store, 1)
    store.raft.role = "follower"
    await d.step()
    assert d.heartbeat(rid) == "ok" and set(d._pending) == {rid}
    assert d.heartbeat("reg-unknown") == "unknown"
    d._forward_failing_since = clock.now - 2.0  # its batches to the leader have failed for 2 s
    assert d.heartbeat(rid) == "leader_unreachable"
    store.raft.has_quorum = False
    assert d.heartbeat(rid) == "no_quorum"
    with pytest.raises(NotLeader):
        d.leader_heartbeats([rid])


async def test_a_stall_of_the_leader_is_not_silence_of_the_instances(setup: tuple[FakeStore, Discovery, Clock]) -> None:
    store, d, clock = setup
    rid = await _register(store, 1)
    await d.step()
    await _run(d, clock, 1.0, beat=[rid])
    clock.now += 5.0  # the node's loop was starved for 5 s (heartbeats queued, unread)
    await d.step()
    assert store.state.get("registrations", rid) is not None and d.stats["stalls"] == 1
    d.heartbeat(rid)  # the queued heartbeat is read
    await _run(d, clock, 2.0, beat=[rid])
    assert store.state.get("registrations", rid) is not None


async def test_batched_heartbeats_on_the_leader(setup: tuple[FakeStore, Discovery, Clock]) -> None:
    store, d, clock = setup
    rid = await _register(store, 1)
    await d.step()
    for _ in range(20):  # 4 s, heartbeats only through a follower's batches
        clock.now += 0.2
        assert d.leader_heartbeats([rid, "reg-unknown"]) == 1
        await d.step()
    assert store.state.get("registrations", rid) is not None
    assert d.last_seen_age(rid) == 0.0


async def test_a_batch_retried_later_renews_as_of_when_the_follower_heard(
    setup: tuple[FakeStore, Discovery, Clock],
) -> None:
    """Found by the chaos discovery scenario: a follower's batch failed during a failover and got
    through 2 s later; the leader counted those heartbeats as of their arrival and kept stopped
    instances registered past ttl + 2 s. The batch carries each heartbeat's age."""
    store, d, clock = setup
    rid = await _register(store, 1)
    store.raft.role = "follower"
    await d.step()
    assert d.heartbeat(rid) == "ok"
    sent: list[tuple[list[str], list[float]]] = []

    async def forward(ids: list[str], ages: list[float]) -> None:
        sent.append((ids, ages))
        if len(sent) == 1:
            raise NotLeader("the leader moved")

    d._forward = forward  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(d._flush_loop())
    try:
        clock.now += 2.0  # the first flush fails...
        while len(sent) < 2:  # ...and the retry goes out with the next flush, 2 s after the heartbeat
            await asyncio.sleep(0.05)
            clock.now += 0.5
    finally:
        task.cancel()
    assert sent[0][0] == sent[1][0] == [rid]
    assert sent[1][1][0] >= 2.0, sent  # the retry still says when the heartbeat was heard

    leader_store = FakeStore()
    leader = Discovery(leader_store, "secret", tick=0.2)  # type: ignore[arg-type]
    leader.clock = clock
    leader_store.state = store.state
    await leader.step()  # grant: every registration seen now
    clock.now += 4.0
    assert leader.leader_heartbeats(*sent[1]) == 1
    # the stale batch renewed it only as of when the follower heard it (without ages: age 0)
    assert leader.last_seen_age(rid) == pytest.approx(min(4.0, sent[1][1][0])) and leader.last_seen_age(rid) >= 2.0
    assert leader.leader_heartbeats([rid], [0.5]) == 1
    assert leader.last_seen_age(rid) == pytest.approx(0.5)
    assert leader.leader_heartbeats([rid], [3.0]) == 1
    assert leader.last_seen_age(rid) == pytest.approx(0.5)  # never moved back by an older report


async def test_a_lagging_node_answers_404_only_after_a_linearizable_read(
    setup: tuple[FakeStore, Discovery, Clock],
) -> None:
    """A follower may not have applied a registration that another node has just acknowledged:
    its heartbeat must not be told "not registered" from that stale state."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from cluster.app_keys import SETTINGS_KEY, STORE_KEY
    from cluster.discovery_api import DISCOVERY_KEY, heartbeat_target
    from gateway.errors import NotFound

    store, d, _clock = setup
    behind = store.state
    rid = await _register(store, 7)
    caught_up, store.state = store.state, behind  # this node has not applied the registration yet
    barriers: list[float] = []

    async def barrier(timeout: float) -> Any:
        barriers.append(timeout)
        store.state = caught_up  # the read index: this node applies up to the leader's commit
        return store.state

    store.barrier = barrier  # type: ignore[attr-defined]
    store.raft.role = "follower"
    await d.step()
    app = web.Application()
    app[DISCOVERY_KEY], app[STORE_KEY] = d, store  # type: ignore[assignment]
    app[SETTINGS_KEY] = {"read_timeout": 2.0, "write_timeout": 2.0}

    def beat(port: int) -> Any:
        req = make_mocked_request("POST", f"/v1/upstreams/u/targets/10.0.0.1:{port}/heartbeat", app=app,
                                  match_info={"id": "u", "target": f"10.0.0.1:{port}"})
        return heartbeat_target(req)

    response = await beat(7)
    assert response.status == 200 and barriers == [2.0] and set(d._pending) == {rid}
    with pytest.raises(NotFound):  # truly unknown: 404 after the read
        await beat(8)
    assert len(barriers) == 2
