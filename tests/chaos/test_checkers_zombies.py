"""no_zombie_writes: a write answered with an error never takes effect after that answer."""

from __future__ import annotations

from typing import Any

from chaos.checkers import CHECKERS, check_no_zombie_writes

History = list[dict[str, Any]]


def op(p: int, f: str, key: str, value: Any, t0: float, t1: float, status: str = "ok",
       error: str | None = None, result: Any = None) -> History:
    base = {"process": p, "f": f, "key": key, "node": "n1"}
    done: dict[str, Any] = {"type": status, "time": t1, **base, "value": result if f == "read" else value}
    if error:
        done["error"] = error
    return [{"type": "invoke", "time": t0, **base, "value": value}, done]


def test_the_probe_is_flagged() -> None:
    """PUT x=old answered 503 at t=5; x=new acknowledged at t=7; after the heal a read returns old."""
    h = (op(0, "write", "k", "old", 0.0, 5.0, "info", "HTTP 503 unavailable: outcome unknown")
         + op(1, "write", "k", "new", 6.0, 7.0)
         + op(1, "read", "k", None, 8.0, 8.1, result="new")
         + op(1, "read", "k", None, 45.0, 45.1, result="old"))  # fmt: skip
    result = check_no_zombie_writes(h)
    assert not result.ok and result.figures["zombies"] == 1
    assert "write of 'old' answered info" in result.problems[0] and "t=45.000" in result.problems[0]


def test_cas_value_and_fail_answers_count_too() -> None:
    h = (op(0, "cas", "k", ["a", "b"], 0.0, 1.0, "fail", "HTTP 503 no_quorum: ...")
         + op(1, "read", "k", None, 2.0, 2.1, result="a")
         + op(1, "read", "k", None, 3.0, 3.1, result="b"))  # fmt: skip
    assert check_no_zombie_writes(h).figures["zombies"] == 1


def test_effect_before_the_answer_or_without_an_answer_is_allowed() -> None:
    # The errored write's value is seen, but no other value was ever established after its answer.
    h = (op(0, "write", "k", "v1", 0.0, 5.0, "info", "HTTP 503 unavailable")
         + op(1, "read", "k", None, 6.0, 6.1, result="v1"))  # fmt: skip
    assert check_no_zombie_writes(h).ok
    # A client-side timeout is not an answer: the server may still commit it later.
    h = (op(0, "write", "k", "v1", 0.0, 1.5, "info", "TimeoutError: timed out")
         + op(1, "write", "k", "v2", 2.0, 2.1)
         + op(1, "read", "k", None, 9.0, 9.1, result="v1"))  # fmt: skip
    assert check_no_zombie_writes(h).ok
    # A newer value established, and the errored value never seen again.
    h = (op(0, "write", "k", "v1", 0.0, 5.0, "info", "HTTP 503 unavailable")
         + op(1, "write", "k", "v2", 6.0, 6.1)
         + op(1, "read", "k", None, 9.0, 9.1, result="v2"))  # fmt: skip
    result = check_no_zombie_writes(h)
    assert result.ok and result.figures == {"errored_writes": 1, "zombies": 0}


def test_registered_and_broken_history_is_a_failed_check() -> None:
    assert CHECKERS["no_zombie_writes"] is check_no_zombie_writes
    bad = [{"type": "ok", "time": 1.0, "process": 3, "f": "write", "key": "k", "value": "x"}]
    result = check_no_zombie_writes(bad)
    assert not result.ok and "without an invoke" in result.problems[0]
