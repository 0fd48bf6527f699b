"""convergence and single_leader: the end state agrees with the committed one; one leader per term."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.checkers import check_convergence, check_single_leader

History = list[dict[str, Any]]


def status(node: str, t: float, rev: int | None = 5, h: str | None = "h5", role: str | None = "follower",
           term: int | None = 1, reachable: bool = True) -> dict[str, Any]:  # fmt: skip
    return {"type": "node_status", "time": t, "node": node, "reachable": reachable, "role": role, "term": term,
            "leader": None, "revision": rev, "hash": h, "has_quorum": True}  # fmt: skip


def final(nodes: Mapping[str, tuple[int | None, str | None]], rev: int = 5, h: str = "h5") -> dict[str, Any]:
    return {"type": "final", "time": 30.0, "heal_time": 10.0, "committed_revision": rev, "committed_hash": h,
            "nodes": {n: {"revision": r, "hash": x, "present": []} for n, (r, x) in nodes.items()}}  # fmt: skip


ALL_AT_5 = {"n1": (5, "h5"), "n2": (5, "h5"), "n3": (5, "h5")}


def test_converged_nodes_pass_with_convergence_time() -> None:
    h = [
        status("n1", 9.0), status("n2", 11.0, rev=3, h="h3"), status("n3", 11.5),
        status("n1", 12.0), status("n2", 12.5), status("n3", 13.0),
        final(ALL_AT_5),
    ]  # fmt: skip
    result = check_convergence(h)
    assert result.ok, result.problems
    assert result.figures == {"nodes": 3, "committed_revision": 5, "convergence_s": 2.5}


def test_convergence_time_not_observed_without_samples() -> None:
    result = check_convergence([final(ALL_AT_5)])
    assert result.ok and result.figures["convergence_s"] == "not observed"


def test_nodes_with_different_hashes_are_rejected() -> None:
    result = check_convergence([final({"n1": (5, "h5"), "n2": (5, "hX"), "n3": (5, "h5")})])
    assert not result.ok
    assert any("n2 ended at revision 5 hash hX" in p for p in result.problems)
    assert any(p.startswith("nodes disagree at the end: n1, n3 at revision 5 hash h5; n2 at revision 5 hash hX")
               for p in result.problems)  # fmt: skip
    assert any("revision 5 has two hashes" in p for p in result.problems)


def test_all_nodes_agreeing_on_something_else_than_committed_is_rejected() -> None:
    result = check_convergence([final(ALL_AT_5, rev=6, h="h6")])
    assert not result.ok and len(result.problems) == 3


def test_node_without_revision_at_the_end_is_rejected() -> None:
    result = check_convergence([final({"n1": (5, "h5"), "n2": (None, None)})])
    assert not result.ok and "node n2 reported no revision/hash" in result.problems[0]


def test_same_revision_with_two_hashes_in_samples_is_rejected() -> None:
    """Even if the end agrees: a revision seen with two hashes means replicas diverged at some point."""
    h = [status("n1", 1.0, rev=3, h="h3"), status("n2", 1.1, rev=3, h="evil"), final(ALL_AT_5)]
    result = check_convergence(h)
    assert (
        not result.ok
        and "revision 3 has two hashes: h3 on node n1 at t=1.000, evil on node n2" in result.problems[0]
    )


def test_missing_final_record_is_rejected() -> None:
    result = check_convergence([status("n1", 1.0)])
    assert not result.ok and "no final record" in result.problems[0]


def test_one_leader_per_term_passes_with_figures() -> None:
    h = [
        status("n1", 1.0, role="leader", term=1), status("n2", 1.0, term=1),
        status("n1", 5.0, role="leader", term=1),  # the old leader still believes it, term 1: fine
        status("n2", 5.5, role="leader", term=2), status("n3", 5.5, role="candidate", term=3),
        status("n3", 6.0, role="leader", term=3), status("n1", 6.0, role=None, term=None, reachable=False),
    ]  # fmt: skip
    result = check_single_leader(h)
    assert result.ok, result.problems
    assert result.figures == {"terms_seen": 3, "max_term": 3, "leaders": 3, "leader_changes": 2}


def test_split_brain_is_rejected() -> None:
    h = [status("n1", 1.0, role="leader", term=4), status("n2", 2.0, role="leader", term=4)]
    result = check_single_leader(h)
    assert not result.ok
    assert result.problems == ["split brain: term 4 has 2 leaders: n1 (from t=1.000), n2 (from t=2.000)"]


def test_no_samples_is_a_failure_not_a_vacuous_pass() -> None:
    assert not check_single_leader([final(ALL_AT_5)]).ok
