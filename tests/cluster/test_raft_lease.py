"""Leader leases (cluster/raft_read.py): the lease arithmetic, its settings, and three real
in-process members on loopback — lease reads cost no heartbeat round, and end with the lease."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.raft import RaftConfigError, RaftNode, RaftSettings
from cluster.raft_read import ReadIndexUnavailable, lease_expiry
from tests.support.cluster import free_port
from tests.support.http import wait_for
from tests.support.raft import wait_for_leader


def test_the_lease_runs_from_the_send_time_of_the_heartbeat_that_completed_the_majority() -> None:
    # 5 voters: the leader needs 2 others. Newest acknowledged heartbeats were sent at 10.0, 9.0, 3.0.
    assert lease_expiry([10.0, 3.0, 9.0], voters=5, since=0.0, duration=0.1) == pytest.approx(9.1)
    assert lease_expiry([10.0], voters=5, since=0.0, duration=0.1) is None  # no majority: no lease
    assert lease_expiry([10.0, 9.0], voters=3, since=0.0, duration=0.1) == pytest.approx(10.1)
    # heartbeats sent before this term's leadership began do not count
    assert lease_expiry([10.0, 9.0, 3.0], voters=5, since=9.5, duration=0.1) is None
    assert lease_expiry([], voters=1, since=0.0, duration=0.1) == math.inf


def _settings(tmp_path: Path, **kw: object) -> RaftSettings:
    return RaftSettings(self_addr=f"127.0.0.1:{free_port()}", partners=[], password="x",
                        data_dir=str(tmp_path), fsync=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "message"), [
    ({"lease_duration": 0.14}, "lease_duration .* less than min_timeout minus lease_clock_drift"),
    ({"lease_duration": 0.0}, "lease_duration .* must be > 0"),
    ({"lease_clock_drift": 0.2}, "lease_clock_drift"),
])
def test_a_lease_that_could_outlive_a_vote_is_refused(tmp_path: Path, kw: dict[str, float], message: str) -> None:
    with pytest.raises(RaftConfigError, match=message):
        _settings(tmp_path, lease_reads=True, **kw).validate()
    _settings(tmp_path, **kw).validate()  # off by default: not checked, not used
    assert _settings(tmp_path, lease_reads=True).effective_lease_duration < 0.15 - 0.02


def start_members(tmp_path: Path, lease: bool) -> list[RaftNode]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = []
    for i, addr in enumerate(addrs):
        settings = RaftSettings(self_addr=addr, partners=[a for a in addrs if a != addr], password="t",
                                data_dir=str(tmp_path / f"n{i}"), fsync=False, lease_reads=lease)
        nodes.append(RaftNode(settings, apply_fn=lambda p: None, snapshot_fn=lambda: b"", restore_fn=lambda b: None))
    return nodes


@pytest.fixture(params=[True, False], ids=["leases", "no-leases"])
def members(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[bool, list[RaftNode]]]:
    nodes = start_members(tmp_path, request.param)
    try:
        yield request.param, nodes
    finally:
        for node in nodes:
            node.destroy_synchronous()


async def test_lease_reads_on_the_leader_cost_no_heartbeat_round(members: tuple[bool, list[RaftNode]]) -> None:
    lease, nodes = members
    leader = wait_for_leader(nodes, with_quorum=True)
    await leader.submit(b"w", timeout=5)
    wait_for(lambda: leader.status()["lease"]["valid_for_s"] is not None or not lease, 5, "a lease")
    rounds, served = leader.read_index_rounds, leader.status()["lease"]["reads"]
    for _ in range(20):
        assert await leader.read_index(2.0) == leader.status()["commit_index"]
        await asyncio.sleep(0.005)
    if lease:  # a re-election under load may cost a round or two, never one per read
        assert leader.read_index_rounds - rounds <= 2
        assert leader.status()["lease"]["reads"] - served >= 18
    else:
        assert leader.read_index_rounds - rounds >= 20  # the control: one round per read
        assert leader.status()["lease"] == {"enabled": False, "reads": 0, "valid_for_s": None, "votes_refused": 0}


async def test_a_cut_off_leader_stops_lease_reads_when_its_lease_ends(tmp_path: Path) -> None:
    nodes = start_members(tmp_path, lease=True)
    try:
        leader = wait_for_leader(nodes, with_quorum=True)
        await leader.submit(b"w", timeout=5)
        await leader.read_index(2.0)
        duration = leader.settings.effective_lease_duration
        for n in nodes:
            if n is not leader:
                n.destroy_synchronous()  # its heartbeats go unanswered from now on
        cut = time.monotonic()
        # it still believes it leads (leader_fallback_timeout 1 s), but once the lease is over no
        # read is answered without a majority's heartbeat answers
        await asyncio.sleep(duration + 0.05)
        served = leader.status()["lease"]["reads"]
        assert leader.is_leader() and time.monotonic() - cut < leader.settings.leader_fallback_timeout
        assert leader.status()["lease"]["valid_for_s"] in (None, 0.0)
        with pytest.raises(ReadIndexUnavailable):
            await leader.read_index(0.5)
        assert leader.status()["lease"]["reads"] == served
    finally:
        for n in nodes:
            n.destroy_synchronous()


def _on_tick(node: RaftNode, fn: object) -> None:
    import threading

    done = threading.Event()
    core = node._core

    def once() -> None:
        if not done.is_set():
            done.set()
            fn()  # type: ignore[operator]

    core.addOnTickCallback(once)
    try:
        assert done.wait(5)
    finally:
        core.removeOnTickCallback(once)


@pytest.mark.parametrize("skew", [0.0, 5.0, -5.0], ids=["same-clocks", "monotonic-ahead", "monotonic-behind"])
async def test_a_follower_that_hears_its_leader_ignores_vote_requests_but_not_a_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew: float,
) -> None:
    """Also with time.monotonic() offset from pysyncobj's clock (CLOCK_MONOTONIC_RAW): every
    lease and vote-refusal time is taken on pysyncobj's clock."""
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew)
    nodes = start_members(tmp_path, lease=True)
    try:
        leader = wait_for_leader(nodes, with_quorum=True)
        await leader.submit(b"w", timeout=5)
        follower = next(n for n in nodes if n is not leader)
        # one write commits on a majority: the other follower may not have heard the leader yet
        wait_for(lambda: follower.status()["leader"] and follower.status()["term"] == leader.status()["term"],
                 10, "the follower hears the leader")
        term = leader.status()["term"]
        vote = {"type": "request_vote", "term": term + 5, "last_log_index": 10**6, "last_log_term": term + 4}
        _on_tick(follower, lambda: follower._core._SyncObj__onMessageReceived(
            next(iter(follower._core._SyncObj__otherNodes)), dict(vote)))
        # at least ours (a loaded machine may delay heartbeats enough for a real candidate: refused too)
        assert follower.status()["term"] == term and follower.status()["lease"]["votes_refused"] >= 1
        assert leader.is_leader() and leader.status()["term"] == term
        # a leadership transfer's candidate is tagged and elected as before; the old leader's lease is gone
        await leader.transfer_leadership(5.0)
        new = wait_for_leader(nodes, with_quorum=True)
        assert new is not leader and new.status()["term"] > term
        assert leader.status()["lease"]["valid_for_s"] is None
    finally:
        for n in nodes:
            n.destroy_synchronous()
