"""Pre-vote (cluster/raft_prevote.py) on real processes: cut only the leader <-> one follower link.

Without pre-vote the cut follower, which still reaches the other follower, starts election after
election through it and takes the leadership back and forth with the healthy leader (measured: 19
leader changes and terms 1 -> 4 in 6 s). With pre-vote the other follower, which hears from the
leader, refuses to pre-vote, so the cut follower never leads and the leadership stays put (a
spurious election from CPU starvation may still happen on a loaded machine: allowed once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.monotonic import monotonic as pysyncobj_clock

from cluster.raft_prevote import PreVoteMixin
from tests.chaos.test_net import require_namespace


@pytest.mark.timeout(150)
def test_a_partially_cut_follower_cannot_depose_a_healthy_leader(tmp_path: Path) -> None:
    require_namespace()
    argv = [sys.executable, "-m", "chaos.probes", "partial-cut", "--out", str(tmp_path / "probe")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["pre_vote"] is True
    assert result["cut_follower"] not in result["leaders_seen"], result
    assert len(result["leaders_seen"]) <= 2 and len(result["terms_seen"]) <= 2, result


# -- the election-start override's clock (unit level: a stand-in for pysyncobj's private state) ------
class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append((node, message))
        return True


class _Follower(PreVoteMixin):
    """The pysyncobj state the mixin reads, as a follower of a 3-member cluster whose election deadline
    pysyncobj has just armed (a heartbeat arrived)."""

    def __init__(self, timeout: float) -> None:
        fields = {"raftState": 0, "selfNode": "n1", "transferInProgress": False, "otherNodes": {"n2", "n3"},
                  "raftCurrentTerm": 4, "raftElectionDeadline": pysyncobj_clock() + timeout,
                  "transport": _Transport()}  # fmt: skip
        for name, value in fields.items():
            setattr(self, f"_SyncObj__{name}", value)
        self._prevote_init(timeout / 2, timeout, enabled=True)

    def addOnTickCallback(self, callback: Any) -> None:  # noqa: N802 - pysyncobj's name
        pass

    def _SyncObj__connectedToAnyone(self) -> bool:  # noqa: N802
        return True

    def _SyncObj__getCurrentLogIndex(self) -> int:  # noqa: N802
        return 10

    def _SyncObj__getCurrentLogTerm(self) -> int:  # noqa: N802
        return 4


@pytest.mark.timeout(30)
@pytest.mark.parametrize("skew", [3.0, -3.0], ids=["monotonic-ahead", "monotonic-behind"])
def test_the_pre_vote_starts_when_pysyncobjs_deadline_passes_whatever_time_monotonic_says(
    monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    # pysyncobj's deadlines are CLOCK_MONOTONIC_RAW values; time.monotonic() (CLOCK_MONOTONIC) may
    # differ from it by a machine-specific offset (0.24 s seen). Mixing them started pre-votes right
    # after every heartbeat (ahead) or held every election back by the offset (behind).
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew)
    node = _Follower(timeout=0.3)
    wanted = node._SyncObj__raftElectionDeadline  # type: ignore[attr-defined]
    transport = node._SyncObj__transport  # type: ignore[attr-defined]
    until = pysyncobj_clock() + 2.0
    while not transport.sent and pysyncobj_clock() < until:
        node._hold_election()  # one tick
        if not transport.sent:
            assert pysyncobj_clock() < wanted + 0.5, "no pre-vote long after pysyncobj's election deadline"
            time.sleep(0.005)
    assert transport.sent, "no pre-vote within 2 s of pysyncobj's election deadline"
    started = pysyncobj_clock()
    assert started >= wanted, f"pre-vote {wanted - started:.3f}s before pysyncobj's election deadline"
    assert {node for node, _ in transport.sent} == {"n2", "n3"}
    assert all(m["type"] == "gw_pre_vote" and m["term"] == 5 for _, m in transport.sent)


@pytest.mark.parametrize("skew", [3.0, -3.0], ids=["monotonic-ahead", "monotonic-behind"])
def test_the_last_leader_contact_is_on_the_clock_its_readers_use(monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    # Read with time.monotonic() here (pre-vote refusal) and in cluster/raft_core.py (a member that
    # heard from a leader refuses votes while leases are on): on another clock, that refusal
    # window would shrink or grow by the clocks' offset (lease safety).
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew)
    node = _Follower(timeout=0.3)
    node._note_leader_contact({"type": "append_entries", "term": 4})
    assert 0.0 <= time.monotonic() - node._pv_last_leader_contact < 0.5
