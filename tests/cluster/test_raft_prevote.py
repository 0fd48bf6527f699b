"""The election-start override (cluster/raft_prevote.py).

Unit level: a stand-in for the pysyncobj state the mixin reads, ticked by hand. Then three real
members in this process: a follower whose message handling outlasts the election timeout (as a
2.4 MB snapshot install did in the chaos suite) must not start an election behind pre-vote's back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.monotonic import monotonic as pysyncobj_clock

from cluster.raft import RaftNode
from cluster.raft_core import RaftCore
from cluster.raft_prevote import PreVoteMixin
from tests.support.http import wait_for
from tests.support.raft import RecordingTransport, recording_members


class _Member(PreVoteMixin):
    """The pysyncobj state the mixin reads, as a follower of a 3-member cluster whose election deadline
    pysyncobj has just armed (a heartbeat arrived)."""

    def __init__(self, timeout: float, term: int = 4) -> None:
        fields = {"raftState": 0, "selfNode": "n1", "transferInProgress": False, "otherNodes": {"n2", "n3"},
                  "raftCurrentTerm": term, "raftElectionDeadline": pysyncobj_clock() + timeout,
                  "transport": RecordingTransport(), "raftLeader": None,
                  "connectedNodes": {"n2", "n3"}}  # fmt: skip
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

    def _SyncObj__setCurrentTerm(self, term: int, voted_for: Any) -> None:  # noqa: N802
        self._SyncObj__raftCurrentTerm = term

    def _SyncObj__setState(self, state: int) -> None:  # noqa: N802
        self._SyncObj__raftState = state

    @property
    def sent(self) -> list[tuple[Any, dict[str, Any]]]:
        return self._SyncObj__transport.sent  # type: ignore[no-any-return]

    def tick_until_pre_vote(self, within: float) -> float:
        """Tick every 5 ms; the pysyncobj-clock time the first pre-vote went out."""
        until = pysyncobj_clock() + within
        while not self.sent:
            assert pysyncobj_clock() < until, f"no pre-vote within {within}s"
            self._hold_election()
            # pysyncobj's own election check runs at the start of each tick: it must never fire
            assert self._SyncObj__raftElectionDeadline > pysyncobj_clock() + 60, "pysyncobj would elect, no pre-vote"
            time.sleep(0.005)
        return pysyncobj_clock()


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
    node = _Member(timeout=0.3)
    wanted = node._SyncObj__raftElectionDeadline  # type: ignore[attr-defined]
    started = node.tick_until_pre_vote(within=2.0)
    assert started >= wanted, f"pre-vote {wanted - started:.3f}s before pysyncobj's election deadline"
    assert started < wanted + 0.5, "pre-vote long after pysyncobj's election deadline"
    assert {peer for peer, _ in node.sent} == {"n2", "n3"}
    assert all(m["type"] == "gw_pre_vote" and m["term"] == 5 for _, m in node.sent)


@pytest.mark.parametrize("skew", [3.0, -3.0], ids=["monotonic-ahead", "monotonic-behind"])
def test_the_last_leader_contact_is_on_the_clock_its_readers_use(monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    # Read with time.monotonic() here (pre-vote refusal) and in cluster/raft_core.py (a member that
    # heard from a leader refuses votes while leases are on): on another clock, that refusal
    # window would shrink or grow by the clocks' offset (lease safety).
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + skew)
    node = _Member(timeout=0.3)
    node._note_leader_contact({"type": "append_entries", "term": 4})
    assert 0.0 <= time.monotonic() - node._pv_last_leader_contact < 0.5


@pytest.mark.timeout(30)
def test_a_deposed_leader_campaigns_one_election_timeout_after_it_steps_down() -> None:
    # The chaos suite's random-halves (3 nodes) had no leader for over 30 s: the old leader, deposed
    # by a candidate with a shorter log, was the only member that could win, and never campaigned.
    node = _Member(timeout=0.3)
    node._SyncObj__raftState = 1  # a candidate: pysyncobj armed its deadline at the election start
    node._hold_election()  # our tick holds it; the votes then arrive in the same tick's poll
    node._SyncObj__raftState = 2
    for _ in range(3):
        node._hold_election()
        assert node._SyncObj__raftElectionDeadline > pysyncobj_clock() + 60, "a leader's deadline is held too"
    assert not node.sent, "a leader never pre-votes"
    # A request_vote with a higher term: pysyncobj makes us a follower and leaves the deadline as is.
    node._SyncObj__raftState, node._SyncObj__raftCurrentTerm = 0, 5
    stepped_down = pysyncobj_clock()
    started = node.tick_until_pre_vote(within=2.0)
    assert 0.15 - 0.01 <= started - stepped_down < 0.3 + 0.2, started - stepped_down
    assert all(m["term"] == 6 for _, m in node.sent)


def test_a_pre_vote_refused_from_a_higher_term_moves_us_to_that_term() -> None:
    # Our pre-vote asks for term + 1; a member already in that term refuses it whatever our log is.
    # A member left behind a term (the others moved on through a failed election) could never be
    # elected again, even holding the longest log.
    node = _Member(timeout=0.3, term=7)
    node._SyncObj__raftState = 1
    node.tick_until_pre_vote(within=2.0)
    round_id = node.sent[0][1]["round"]
    assert node.sent[0][1]["term"] == 8
    node._handle_pre_vote("n2", {"type": "gw_pre_vote_resp", "round": round_id, "term": 8, "granted": False,
                                 "voter_term": 8})  # fmt: skip
    assert node._SyncObj__raftCurrentTerm == 8 and node._SyncObj__raftState == 0
    assert node.terms_adopted == 1
    node.sent.clear()
    node.tick_until_pre_vote(within=2.0)
    assert all(m["term"] == 9 for _, m in node.sent), "the next pre-vote asks for the term after it"
    # a refusal from our own term or lower changes nothing
    node._handle_pre_vote("n3", {"type": "gw_pre_vote_resp", "round": 99, "term": 9, "granted": False,
                                 "voter_term": 8})  # fmt: skip
    assert node._SyncObj__raftCurrentTerm == 8 and node.terms_adopted == 1


def test_a_pre_vote_answer_carries_the_voters_term() -> None:
    node = _Member(timeout=0.3, term=6)
    node._handle_pre_vote("n2", {"type": "gw_pre_vote", "round": 1, "term": 6, "last_log_index": 10,
                                 "last_log_term": 4})  # fmt: skip
    (_, answer), = node.sent
    assert answer["granted"] is False and answer["voter_term"] == 6


def _deliver(to: _Member, sender: str, messages: list[tuple[Any, dict[str, Any]]], source: _Member) -> None:
    """Hand ``to`` the messages ``source`` sent it (addressed by name); replies go back to ``source``."""
    for peer, message in messages:
        if peer == to._SyncObj__selfNode:
            before = len(to.sent)
            to._handle_pre_vote(sender, message)
            for reply_peer, reply in to.sent[before:]:
                assert reply_peer == sender
                source._handle_pre_vote(to._SyncObj__selfNode, reply)


@pytest.mark.timeout(30)
def test_of_two_pre_vote_rounds_at_once_exactly_one_is_granted() -> None:
    # Chaos kill-leader (3 nodes): both surviving followers, woken in the same scheduler slice, each
    # granted the other's pre-vote; both elected themselves and the votes split, twice (0.7 s).
    for _attempt in range(20):
        a, b = _Member(timeout=0.05), _Member(timeout=0.05)
        b._SyncObj__selfNode, b._SyncObj__otherNodes = "n2", {"n1", "n3"}
        a._pv_last_leader_contact = b._pv_last_leader_contact = time.monotonic() - 1.0  # the leader died
        a.tick_until_pre_vote(within=2.0)
        b.tick_until_pre_vote(within=2.0)  # both rounds open before either hears of the other
        sent_a, sent_b = list(a.sent), list(b.sent)
        a.sent.clear()
        b.sent.clear()
        _deliver(b, "n1", sent_a, a)
        _deliver(a, "n2", sent_b, b)
        granted = [len(m._pv_grants) for m in (a, b)]
        assert sorted(granted) == [0, 1], granted


@pytest.mark.timeout(30)
def test_of_three_rounds_at_once_only_one_gathers_a_majority() -> None:
    # No leader and all three members in a round at once (a cluster starting, or a heal): the middle
    # one, granted by the lowest, would also have won had it kept its round after granting the top.
    names = ["n1", "n2", "n3"]
    for _attempt in range(20):
        members = [_Member(timeout=0.05) for _ in names]
        for member, name in zip(members, names, strict=True):
            member._SyncObj__selfNode, member._SyncObj__otherNodes = name, set(names) - {name}
            member._pv_last_leader_contact = time.monotonic() - 1.0
            member.tick_until_pre_vote(within=2.0)
        outboxes = [list(m.sent) for m in members]
        for m in members:
            m.sent.clear()
        for source, outbox, name in zip(members, outboxes, names, strict=True):
            for target in members:
                if target is not source:
                    _deliver(target, name, outbox, source)
        winners = [m for m in members if m._pv_round is not None and (len(m._pv_grants) + 1) * 2 > 3]
        assert len(winners) == 1, [(m._SyncObj__selfNode, m._pv_round, m._pv_grants) for m in members]


def test_a_member_that_won_its_pre_vote_grants_no_other_until_its_election_starts() -> None:
    node = _Member(timeout=0.3)
    node._pv_last_leader_contact = time.monotonic() - 1.0
    node.tick_until_pre_vote(within=2.0)
    round_id = node.sent[0][1]["round"]
    for peer in ("n2", "n3"):
        node._handle_pre_vote(peer, {"type": "gw_pre_vote_resp", "round": round_id, "term": 5, "granted": True,
                                     "voter_term": 4})  # fmt: skip
    node._hold_election()  # a majority granted: released, pysyncobj's next tick elects
    assert node._SyncObj__raftElectionDeadline == 0
    node.sent.clear()
    node._handle_pre_vote("n2", {"type": "gw_pre_vote", "round": 1, "term": 5, "nonce": 1.0,
                                 "last_log_index": 99, "last_log_term": 4})  # fmt: skip
    assert node.sent[0][1]["granted"] is False


def test_a_refused_round_that_cannot_win_is_over_and_does_not_block_the_voters_own_round() -> None:
    # Chaos kill-leader (3 nodes), 0.56-0.64 s without a leader: the survivor that timed out first
    # was refused (the other had heard from the leader a moment later), kept its round open until
    # it expired and, holding the higher nonce, refused the other's round as a contender; both then
    # waited out their rounds and one more timeout.
    node = _Member(timeout=0.3)
    node._SyncObj__connectedNodes = {"n2"}  # n3, the leader, was killed
    node._pv_last_leader_contact = time.monotonic() - 1.0
    node.tick_until_pre_vote(within=2.0)
    round_id = node.sent[0][1]["round"]
    node._pv_nonce = 1.0  # ours goes first in a tie between two live rounds
    node._handle_pre_vote("n2", {"type": "gw_pre_vote_resp", "round": round_id, "term": 5, "granted": False,
                                 "voter_term": 4})  # fmt: skip
    ends = node._pv_round[2]  # type: ignore[index]
    node._hold_election()
    assert node._pv_round is None, "a round refused by the only member that can answer is lost"
    assert node._pv_wanted == ends, "the next round starts when the lost one would have ended"
    node.sent.clear()
    node._handle_pre_vote("n2", {"type": "gw_pre_vote", "round": 1, "term": 5, "nonce": 0.0,
                                 "last_log_index": 10, "last_log_term": 4})  # fmt: skip
    assert node.sent[0][1]["granted"] is True, "the lost round refused the round that could win"


def test_a_refusal_that_leaves_a_majority_possible_keeps_the_round_open() -> None:
    node = _Member(timeout=0.3)  # both peers connected: n3's grant could still win the round
    node._pv_last_leader_contact = time.monotonic() - 1.0
    node.tick_until_pre_vote(within=2.0)
    round_id = node.sent[0][1]["round"]
    node._handle_pre_vote("n2", {"type": "gw_pre_vote_resp", "round": round_id, "term": 5, "granted": False,
                                 "voter_term": 4})  # fmt: skip
    node._hold_election()
    assert node._pv_round is not None and node._pv_round[0] == round_id
    node._handle_pre_vote("n3", {"type": "gw_pre_vote_resp", "round": round_id, "term": 5, "granted": True,
                                 "voter_term": 4})  # fmt: skip
    node._hold_election()
    assert node._SyncObj__raftElectionDeadline == 0, "won on n3's grant"


@pytest.mark.timeout(30)
def test_an_unanswered_round_is_followed_at_once_by_the_next() -> None:
    # A voter busy for longer than a round (installing a snapshot) answers nothing: the next round
    # must start when this one ends, not one more election timeout later.
    node = _Member(timeout=0.3)
    node.tick_until_pre_vote(within=2.0)
    first = node.sent[0][1]["round"]
    ends = node._pv_round[2]  # type: ignore[index]
    node.sent.clear()
    started = node.tick_until_pre_vote(within=2.0)
    assert node.sent[0][1]["round"] == first + 1
    assert ends <= started < ends + 0.05, started - ends


# -- real members: a slow message must not let pysyncobj start an election itself -------------------
class SlowOnceCore(RaftCore):
    """Sleeps once, right after handling an AppendEntries, when ``slow_next`` is set (a stand-in for
    a large snapshot install: pysyncobj arms its deadline first, then spends longer than it)."""

    slow_next = 0.0
    slowed = False

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        super()._SyncObj__onMessageReceived(node, message)
        if self.slow_next and message.get("type") == "append_entries":
            delay, self.slow_next = self.slow_next, 0.0
            time.sleep(delay)
            self.slowed = True


class SlowOnceNode(RaftNode):
    __slots__ = ()
    core_class = SlowOnceCore


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[SlowOnceCore]]:
    with recording_members(tmp_path, fsync=False, node_class=SlowOnceNode) as nodes:
        cores = [n._core for n, _applied in nodes]
        assert all(isinstance(c, SlowOnceCore) for c in cores)
        yield cores  # type: ignore[misc]


@pytest.mark.timeout(60)
def test_a_follower_busy_longer_than_its_election_timeout_does_not_elect_behind_pre_votes_back(
    members: list[SlowOnceCore],
) -> None:
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "a leader")
    time.sleep(1.0)  # let the start-up elections settle
    leader = wait_for(lambda: next((m for m in members if m._isLeader()), None), 10, "a leader")
    terms = [m.raftCurrentTerm for m in members]
    follower = next(m for m in members if m is not leader)
    follower.slow_next = 0.6  # twice max_timeout (0.3 s)
    wait_for(lambda: follower.slowed, 5, "the slow message")
    time.sleep(1.0)
    assert leader._isLeader(), "the healthy leader was deposed"
    assert [m.raftCurrentTerm for m in members] == terms, "an election started while the leader was alive"


@pytest.mark.timeout(60)
def test_a_follower_without_a_leader_never_polls_past_its_pre_vote_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj's idle tick polls for up to 50 ms: once the leader is gone, a follower must wake
    when its pre-vote is due (or its round ends), not up to 50 ms later (every failover paid it)."""
    with recording_members(tmp_path, fsync=False) as nodes:
        cores = [n._core for n, _applied in nodes]
        wait_for(lambda: next((c for c in cores if c._isLeader()), None), 10, "a leader")
        time.sleep(0.5)  # start-up elections settle
        leader = wait_for(lambda: next((c for c in cores if c._isLeader()), None), 10, "a leader")
        followers = [c for c in cores if c is not leader]
        inner = {id(getattr(c._poller, "inner", c._poller)): c for c in followers}  # the sockets' pollers
        poller_class = type(getattr(followers[0]._poller, "inner", followers[0]._poller))
        original = poller_class.poll
        late: list[float] = []
        near = 0

        def poll(self: Any, timeout: float) -> Any:
            nonlocal near
            core = inner.get(id(self))
            if core is not None and core._SyncObj__raftState != 2:
                now = pysyncobj_clock()
                wanted = core._pv_round[2] if core._pv_round is not None else core._pv_wanted
                if wanted and wanted > now:
                    if wanted - now < 0.05:  # pysyncobj's 50 ms idle poll would sleep past it
                        near += 1
                    if now + timeout - wanted > 0.01:  # slack: a GIL hand-off between the two clock reads
                        late.append(round((now + timeout - wanted) * 1000, 1))
            return original(self, timeout)

        monkeypatch.setattr(poller_class, "poll", poll)
        old_term = max(c.raftCurrentTerm for c in followers)
        nodes[cores.index(leader)][0].destroy_synchronous()
        wait_for(lambda: any(c._isLeader() and c.raftCurrentTerm > old_term for c in followers), 20, "a new leader")
        monkeypatch.undo()
        print("polls within 50 ms of a pre-vote deadline:", near, "late by (ms):", late)
        assert near >= 1  # the case was exercised
        assert not late
