"""Pre-vote (Raft thesis §9.6, etcd's ``PreVote``), mixed into ``RaftNode``: the documented override
of pysyncobj's election start.

pysyncobj starts an election as soon as a follower's election deadline passes: it bumps its term
and asks for votes. A node cut off from the others does that over and over, and when it comes back
its higher term forces the whole cluster into a new election (also a node re-added empty). With
pre-vote a node first asks "would you vote for me in term T+1?" without changing any term; only
once a majority says yes does it start the real election.

How the election start is overridden: ``_hold_election`` (a tick callback) keeps pysyncobj's
``__raftElectionDeadline`` far in the future and remembers the deadline pysyncobj wanted (it
resets it on every heartbeat from a leader, which we see as a changed value). When that wanted
deadline passes, we run a pre-vote round; a majority of grants sets pysyncobj's deadline to 0, so
its next tick starts the real election exactly as before. A leadership transfer (TimeoutNow) is
never held back. The hold is taken on every tick, also while leading (pysyncobj steps a leader down
without re-arming its deadline), and after every message (pysyncobj's tick checks the deadline
before ours runs: a message handled for longer than the timeout let it elect on its own). A refusal
from a member in a higher term moves us to that term, as in etcd. A round that can no longer win is
over at once (it must not refuse a peer's round that can), and an expired one is followed by the
next at once: the round's random length is the spacing, as etcd's pre-candidate's timeout is.

Clock: every time compared with a pysyncobj deadline is pysyncobj's (``pysyncobj.monotonic``,
CLOCK_MONOTONIC_RAW on Linux); the last leader contact, compared only with itself, stays on
``time.monotonic()`` (cluster/raft_core.py reads it too).
Comparing its deadlines with ``time.monotonic()`` (CLOCK_MONOTONIC) moved every election start by
the difference between the two clocks, which is machine-specific: 0.24 s (MONOTONIC ahead) on one
2-core VM, constant over its uptime; NTP slewing makes them drift apart further. Ahead, followers
pre-voted right after every heartbeat and, after a split vote, restarted the election at once
instead of after a random timeout (candidates in lockstep); behind, no election starts for that
long after a leader is lost.

A member grants a pre-vote iff it is not the leader itself, has not heard from a leader for an
election timeout (``min_timeout``: a live leader's followers refuse, which is also the leader
stickiness of check-quorum), and the candidate's log is at least as up to date as its own in a
term not older than its own. Check-quorum proper — a leader that has not heard from a majority
within ``leader_fallback_timeout`` steps down — is pysyncobj's ``leaderFallbackTimeout``.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

# pysyncobj's own clock: its deadlines (``__raftElectionDeadline``) are CLOCK_MONOTONIC_RAW values,
# not time.monotonic() ones (see "Clock" above).
from pysyncobj.monotonic import monotonic as _pysyncobj_monotonic

raft_clock: Callable[[], float] = _pysyncobj_monotonic

log = logging.getLogger("gwadm.raft.prevote")

PRE_VOTE, PRE_VOTE_RESPONSE = "gw_pre_vote", "gw_pre_vote_resp"
_HOLD = 3600.0


class PreVoteMixin:
    pre_vote_enabled = True

    def _prevote_init(self, min_timeout: float, max_timeout: float, enabled: bool) -> None:
        self.pre_vote_enabled = enabled
        self._pv_min, self._pv_max = min_timeout, max_timeout
        self._pv_wanted: float | None = None  # the deadline pysyncobj wanted
        self._pv_hold: float | None = None  # the value we put in its place
        self._pv_round: tuple[int, int, float] | None = None  # (round id, prospective term, ends at)
        self._pv_grants: set[Any] = set()
        self._pv_refusals: set[Any] = set()
        self._pv_nonce = 0.0  # of our current round: breaks a tie between two rounds at once
        self._pv_ids = itertools.count(1)
        # time.monotonic(), not raft_clock(): only ever compared with time.monotonic() (here and in
        # raft_core's vote refusal under leases), never with a pysyncobj deadline.
        self._pv_last_leader_contact = time.monotonic()
        self.pre_votes_started = 0
        self.pre_votes_won = 0
        self.terms_adopted = 0  # from pre-vote refusals (``_adopt_higher_term``)
        if enabled:
            self.addOnTickCallback(self._hold_election)  # type: ignore[attr-defined]

    def _election_wake(self) -> float | None:
        """When the tick must run again to start (or end) a pre-vote round: pysyncobj's idle poll
        waits up to ``autoTickPeriod`` (50 ms), which every election after a lost leader waited on
        top of its timeout (25 ms on average). Only a future time: one in the past is a round the
        last tick chose not to start (nobody connected) and must not make the tick spin."""
        if not self.pre_vote_enabled or self._SyncObj__raftState == 2:  # type: ignore[attr-defined]
            return None
        at = self._pv_round[2] if self._pv_round is not None else self._pv_wanted
        return at if at and at > raft_clock() else None

    # -- the election-start override (tick thread) ---------------------------------------------------
    def _hold_election(self) -> None:
        if self._SyncObj__selfNode is None:  # type: ignore[attr-defined]
            self._pv_wanted = self._pv_round = None
            return
        now = raft_clock()
        if self._SyncObj__raftState == 2:  # type: ignore[attr-defined]
            # Hold while leading too: pysyncobj leaves its deadline where it was when we won (a
            # long-past election start, or an old hold) and steps down without re-arming it. Past,
            # its next tick would start an election without a pre-vote; an old hold, read as "the
            # deadline pysyncobj wants", kept a deposed leader from ever campaigning (found by the
            # chaos suite, random-halves: no leader for over 30 s).
            self._pv_wanted = self._pv_round = None
            self._set_hold(now)
            return
        if self._absorb_deadline():
            return  # our own release (or a leadership transfer): pysyncobj starts the election now
        if self._pv_wanted is None:  # just stepped down: one election timeout from now, as a follower
            self._pv_wanted = self._timeout_from(now)
        if self._pv_round is not None:
            round_id, term, ends = self._pv_round
            voters = len(self._SyncObj__otherNodes) + 1  # type: ignore[attr-defined]
            if (len(self._pv_grants) + 1) * 2 > voters:
                log.debug("pre-vote round %d won for term %d", round_id, term)
                self.pre_votes_won += 1
                self._pv_round = None
                self._pv_wanted = 0
                self._pv_hold = 0
                self._SyncObj__raftElectionDeadline = 0.0  # pysyncobj's next tick starts the election
                # ...now, not after up to autoTickPeriod (50 ms) of idle poll: until our term moves,
                # a peer whose own pre-vote arrives is granted it too, and both elections split.
                notifier = getattr(self, "_SyncObj__pipeNotifier", None)
                if notifier is not None:
                    notifier.notify()
                return
            if now >= ends:
                # The next round starts now: the round's own random length already spaced it from
                # this one (etcd's pre-candidate campaigns again after one randomized timeout). Waiting
                # another timeout on top made a failover whose first round went unanswered (a voter
                # busy installing a snapshot) take two timeouts per round.
                log.debug("pre-vote round %d for term %d expired", round_id, term)
                self._pv_round = None
                self._pv_wanted = now
            elif self._round_lost():
                # Refused by enough members that it cannot win: over now, so that we grant a peer's
                # round instead of refusing it as a contender (``_contending``); the next one starts
                # when this one would have ended.
                log.debug("pre-vote round %d for term %d lost", round_id, term)
                self._pv_round = None
                self._pv_wanted = ends
        if self._pv_round is None and now >= self._pv_wanted and self._SyncObj__connectedToAnyone():  # type: ignore[attr-defined]
            self._start_pre_vote(now)
        self._set_hold(now)

    def _hold_after_message(self) -> None:
        """After every message (cluster/raft_core.py): take over a deadline pysyncobj has just armed
        before its next tick can act on it. pysyncobj arms ``deadline = now + timeout`` when the
        message arrives; if handling it takes longer than that (installing a 2.4 MB snapshot did),
        its tick, which runs before ours, found the deadline passed and started an election without a
        pre-vote, while the leader was alive."""
        if not self.pre_vote_enabled or self._SyncObj__selfNode is None:  # type: ignore[attr-defined]
            return
        if getattr(self, "_SyncObj__raftElectionDeadline") == self._pv_hold:  # noqa: B009
            return  # nothing re-armed it (a leader's acks, reads, pre-votes): no clock read, no write
        if not self._absorb_deadline():
            self._set_hold(raft_clock())

    def _absorb_deadline(self) -> bool:
        """Take a deadline pysyncobj (re)armed — a heartbeat, a granted vote, an election start — as
        the one it wants; True when it must be left alone: our own release, or a TimeoutNow."""
        if getattr(self, "_SyncObj__transferInProgress", False):
            return True  # TimeoutNow from the leader: elect now, no pre-vote
        current: float = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 - pysyncobj's private
        if current == self._pv_hold:
            return False
        if self._released():
            return True
        self._pv_wanted = current
        self._pv_round = None
        return False

    def _timeout_from(self, now: float) -> float:
        """One random election timeout after ``now`` (pysyncobj's clock)."""
        return now + random.uniform(self._pv_min, self._pv_max)

    def _released(self) -> bool:
        """Our won round set pysyncobj's deadline to 0 and its next tick has not elected yet."""
        current = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 - pysyncobj's private
        return bool(current == 0 and self._pv_round is None and self._pv_wanted == 0)

    def _set_hold(self, now: float) -> None:
        self._pv_hold = now + _HOLD
        self._SyncObj__raftElectionDeadline = self._pv_hold

    def _start_pre_vote(self, now: float) -> None:
        term = self._SyncObj__raftCurrentTerm + 1  # type: ignore[attr-defined]
        round_id = next(self._pv_ids)
        self._pv_round = (round_id, term, self._timeout_from(now))
        self._pv_grants = set()
        self._pv_refusals = set()
        self._pv_nonce = random.random()
        self.pre_votes_started += 1
        log.debug("pre-vote round %d for term %d started", round_id, term)
        message = {
            "type": PRE_VOTE, "round": round_id, "term": term, "nonce": self._pv_nonce,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),  # type: ignore[attr-defined]
            "last_log_term": self._SyncObj__getCurrentLogTerm(),  # type: ignore[attr-defined]
        }  # fmt: skip
        for node in list(self._SyncObj__otherNodes):  # type: ignore[attr-defined]
            self._SyncObj__transport.send(node, message)  # type: ignore[attr-defined]

    # -- messages (tick thread) -------------------------------------------------------------------------
    def _note_leader_contact(self, message: Any) -> None:
        if (isinstance(message, dict) and message.get("type") == "append_entries"
                and message.get("term", -1) >= self._SyncObj__raftCurrentTerm):  # type: ignore[attr-defined]
            self._pv_last_leader_contact = time.monotonic()

    def _handle_pre_vote(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PRE_VOTE:
            my_term = self._SyncObj__raftCurrentTerm  # type: ignore[attr-defined]
            my_last_term = self._SyncObj__getCurrentLogTerm()  # type: ignore[attr-defined]
            my_last_index = self._SyncObj__getCurrentLogIndex()  # type: ignore[attr-defined]
            up_to_date = (message["last_log_term"], message["last_log_index"]) >= (my_last_term, my_last_index)
            leader_alive = (self._SyncObj__raftState == 2  # type: ignore[attr-defined]
                            or time.monotonic() - self._pv_last_leader_contact < self._pv_min)
            contending = self._contending(message, my_last_term, my_last_index)
            granted = bool(message["term"] > my_term and up_to_date and not leader_alive and not contending)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("pre-vote for term %d from %s: %s (my term %d, up to date %s, leader heard %.3f s ago, "
                          "contending %s)", message["term"], node, "granted" if granted else "refused", my_term,
                          up_to_date, time.monotonic() - self._pv_last_leader_contact, contending)
            self._SyncObj__transport.send(node, {  # type: ignore[attr-defined]
                "type": PRE_VOTE_RESPONSE, "round": message["round"], "term": message["term"], "granted": granted,
                "voter_term": my_term,
            })
            if granted:
                self._step_aside()
            return True
        if kind == PRE_VOTE_RESPONSE:
            current = self._pv_round
            log.debug("pre-vote round %s answer from %s: %s", message.get("round"), node,
                      "granted" if message.get("granted") else "refused")
            ours = current is not None and message.get("round") == current[0]
            if ours and message.get("granted"):
                self._pv_grants.add(node)
            elif not message.get("granted"):
                if ours:
                    self._pv_refusals.add(node)
                self._adopt_higher_term(message.get("voter_term"))
            return True
        return False

    def _step_aside(self) -> None:
        """Having granted a pre-vote, give that candidate an election timeout before campaigning
        ourselves, and drop a round of our own: it could still win on a third member's grants and
        split the vote (three members without a leader, all in a round at once), as a Raft vote
        resets the voter's timer."""
        self._pv_round = None
        later = self._timeout_from(raft_clock())
        if self._pv_wanted is not None and self._pv_wanted != 0:
            self._pv_wanted = max(self._pv_wanted, later)

    def _round_lost(self) -> bool:
        """Our round cannot reach a majority any more: counting every connected member that has not
        answered as a grant, it still falls short. A member we are not connected to (the dead
        leader) cannot answer it."""
        others = self._SyncObj__otherNodes  # type: ignore[attr-defined]
        unanswered = (others & self._SyncObj__connectedNodes) - self._pv_grants - self._pv_refusals  # type: ignore[attr-defined]
        return (1 + len(self._pv_grants) + len(unanswered)) * 2 <= len(others) + 1

    def _contending(self, message: dict[str, Any], my_last_term: int, my_last_index: int) -> bool:
        """Whether our own pre-vote round (or the election it just won) goes before the sender's.

        Two followers whose timeouts end together — both starved of CPU and woken in the same
        scheduler slice — each granted the other's pre-vote, both started the election, and the
        votes split, twice in a row (chaos kill-leader, 3 nodes: 0.7 s without a leader). Between
        two rounds at once only one is granted: the higher term, then the longer log, then the
        higher random nonce of the round. While our won round waits for pysyncobj to start the
        election, we grant none."""
        if self._pv_round is None:
            return self._released()
        if self._round_lost():
            return False  # refused already: a round that cannot win must not block one that can
        _round_id, my_term, _ends = self._pv_round
        mine = (my_term, my_last_term, my_last_index, self._pv_nonce)
        theirs = (message["term"], message["last_log_term"], message["last_log_index"], message.get("nonce", 0.0))
        return mine >= theirs

    def _adopt_higher_term(self, voter_term: Any) -> None:
        """A refusal from a member in a higher term (etcd: any message with a higher term but a
        granted pre-vote) moves us to that term, as a follower. Our pre-votes ask for our term + 1,
        which such a member refuses whatever our log: without this, a member left behind in term T
        while the others moved to T+1 (a candidate whose election failed) could never be elected,
        even with the longest log, and no one else could be if the others' logs are behind."""
        if not isinstance(voter_term, int) or voter_term <= self._SyncObj__raftCurrentTerm:  # type: ignore[attr-defined]
            return
        self._SyncObj__setCurrentTerm(voter_term, None)  # type: ignore[attr-defined]
        if self._SyncObj__raftState != 0:  # type: ignore[attr-defined]
            self._SyncObj__setState(0)  # type: ignore[attr-defined]
        self._SyncObj__raftLeader = None
        self._pv_round = None
        self._pv_wanted = self._timeout_from(raft_clock())
        self.terms_adopted += 1
