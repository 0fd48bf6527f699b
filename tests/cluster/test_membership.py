"""Pure parts of dynamic membership and token policy: safety checks, boot membership, dump codec."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pysyncobj.node import TCPNode

from cluster.auth import AuthError, check_policy, jti_expiry, mint_token_claims, verify_token
from cluster.membership_policy import Refusal, check_add, check_remove
from cluster.membership_records import (
    MEMBERSHIP_COMMAND,
    Member,
    boot_members,
    decode_cluster,
    encode_cluster,
    member_of,
)

N = {i: Member(f"n{i}", f"127.0.0.1:70{i:02d}", f"http://127.0.0.1:80{i:02d}") for i in range(1, 7)}
THREE = [N[1], N[2], N[3]]


def refusal(fn: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as info:
        fn(*args)
    return info.value


# -- safety checks --------------------------------------------------------------------------------
def test_add_is_refused_for_duplicates_and_accepted_when_a_majority_stays_up() -> None:
    check_add(THREE, N[4], {"n1", "n2", "n3"})
    for dup, what in [(Member("n2", "h:1", "http://h:2"), "id n2 is already a member"),
                      (Member("n9", N[2].raft_addr, "http://h:2"), "already used by member n2"),
                      (Member("n9", "h:1", N[3].admin_url), "admin URL http://127.0.0.1:8003 is already used")]:
        r = refusal(check_add, THREE, dup, {"n1", "n2", "n3"})
        assert (r.status, r.code) == (409, "conflict") and what in r.message


def test_add_is_refused_when_the_new_member_would_cost_the_quorum() -> None:
    r = refusal(check_add, THREE, N[4], {"n1", "n2"})  # 4 members, n3 down, n4 not caught up: 2 of 4
    assert (r.status, r.code) == (409, "unsafe_change")
    assert "would lose its quorum" in r.message and "n3" in r.message
    check_add([*THREE, N[4], N[5]], N[6], {"n1", "n2", "n3", "n4"})  # 4 of 6 up: still a majority
    r = refusal(check_add, THREE, N[4], {"n1"})
    assert "the cluster has no quorum: only n1 of n1, n2, n3" in r.message


def test_remove_is_refused_when_the_rest_could_not_form_a_quorum() -> None:
    r = refusal(check_remove, THREE, "n2", {"n1", "n2"})
    assert (r.status, r.code) == (409, "unsafe_change")
    assert "leaves n1, n3, of which only n1 is reachable" in r.message and "remove n3 instead" in r.message
    assert check_remove(THREE, "n3", {"n1", "n2"}) == N[3]  # the down one may go
    assert check_remove([N[1], N[2]], "n2", {"n1", "n2"}) == N[2]  # two to one is fine
    assert "no quorum" in refusal(check_remove, [N[1], N[2]], "n2", {"n1"}).message  # 1 of 2 is no majority
    r = refusal(check_remove, [N[1]], "n1", {"n1"})
    assert "last member" in r.message
    r = refusal(check_remove, THREE, "n9", {"n1", "n2", "n3"})
    assert (r.status, r.code) == (404, "not_found") and "members: n1, n2, n3" in r.message


def test_remove_needs_a_working_majority_now() -> None:
    r = refusal(check_remove, [*THREE, N[4], N[5]], "n5", {"n1", "n2"})
    assert "no quorum" in r.message


# -- boot membership ------------------------------------------------------------------------------
def entry(action: str, member: Member, idx: int, term: int = 1) -> tuple[bytes, int, int]:
    return bytes([MEMBERSHIP_COMMAND]) + pickle.dumps([action, member.raft_addr, member.node()]), idx, term


def other(idx: int) -> tuple[bytes, int, int]:
    return b"\x00payload", idx, 1


KNOWN = {m.raft_addr: m for m in THREE}


def test_config_peers_do_not_resurrect_a_member_removed_in_the_log() -> None:
    journal = [other(1), entry("add", N[4], 2), other(3), entry("rem", N[2], 4), other(5)]
    assert boot_members(THREE, None, journal, KNOWN) == [N[1], N[3], N[4]]


def test_a_dump_replaces_the_config_and_only_later_entries_count() -> None:
    dump = ([list(other(5)), list(other(4))], [N[1], N[3], N[4]])  # (last, prev), members at index 5
    journal = [other(4), other(5), entry("add", N[2], 6), entry("add", N[5], 7), entry("rem", N[4], 8)]
    assert boot_members(THREE, dump, journal, KNOWN) == [N[1], N[2], N[3], N[5]]
    stale = [entry("rem", N[1], 3), other(4), other(5)]  # compaction crashed before trimming: pysyncobj clears it
    assert boot_members(THREE, dump, stale, KNOWN) == [N[1], N[3], N[4]]


def test_members_carry_their_id_and_admin_url_through_nodes_and_dumps() -> None:
    assert member_of(N[4].node(), KNOWN) == N[4]
    assert member_of(TCPNode(N[2].raft_addr), KNOWN) == N[2]
    assert member_of("10.0.0.9:7000", KNOWN) == Member("10.0.0.9:7000", "10.0.0.9:7000", "")
    encoded = encode_cluster([N[4].node(), TCPNode(N[1].raft_addr)], KNOWN)
    assert decode_cluster(encoded, {}) == [N[1], N[4]]
    assert decode_cluster([N[2].raft_addr], KNOWN) == [N[2]]  # dump format 1: bare addresses


# -- token policy -----------------------------------------------------------------------------------
class Policy:
    def __init__(self, generation: int = 0, revoked: set[str] | None = None) -> None:
        self.token_generation = generation
        self.revoked = revoked or set()

    def token_revoked(self, jti: str) -> bool:
        return jti in self.revoked


def test_tokens_are_checked_against_the_generation_and_the_deny_list() -> None:
    token, claims = mint_token_claims("s", "viewer", "alice", 60, generation=2)
    assert claims["gen"] == 2 and jti_expiry(claims["jti"]) == claims["exp"]
    assert verify_token("s", token, Policy(2))["sub"] == "alice"
    assert verify_token("s", token, Policy(1))["sub"] == "alice"  # minted later than the node knows of
    with pytest.raises(AuthError, match="generation 2, the cluster is at 3"):
        verify_token("s", token, Policy(3))
    with pytest.raises(AuthError, match="token revoked"):
        verify_token("s", token, Policy(2, {claims["jti"]}))
    check_policy({"jti": "x"}, Policy(0))  # tokens minted before generations existed are generation 0
    with pytest.raises(AuthError):
        check_policy({"jti": "x"}, Policy(1))
    assert jti_expiry("0123456789abcdef") is None
