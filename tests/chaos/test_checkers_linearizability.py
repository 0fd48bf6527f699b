"""The linearizability checker accepts real register behaviour and rejects each kind of anomaly.

Hand-made histories pin the semantics (info = maybe, fail = never); seeded random histories from a
simulated register check that real concurrent behaviour passes and that one corrupted read fails.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from chaos.checkers import check_linearizable
from chaos.history import ops

History = list[dict[str, Any]]


def op(p: int, f: str, value: Any, t0: float, t1: float, status: str = "ok", key: str = "k0",
       result: Any = None) -> History:  # fmt: skip
    """Invoke + completion records; ``result`` is what an ok read returned."""
    done = result if f == "read" else value
    return [
        {"type": "invoke", "process": p, "f": f, "key": key, "value": value, "time": t0, "node": "n1"},
        {"type": status, "process": p, "f": f, "key": key, "value": done, "time": t1, "node": "n1"},
    ]


def build(*parts: History) -> History:
    return sorted((r for part in parts for r in part), key=lambda r: r["time"])


def read(p: int, got: Any, t0: float, t1: float, key: str = "k0") -> History:
    return op(p, "read", None, t0, t1, key=key, result=got)


def test_valid_concurrent_history_passes() -> None:
    h = build(
        read(0, None, 0.0, 0.5),
        op(1, "write", "a", 1.0, 3.0),
        op(2, "write", "b", 1.5, 2.5),
        read(0, "a", 2.0, 4.0),  # a linearized after b: fine, they overlap
        read(3, "a", 4.5, 5.0),
        op(1, "cas", ["a", "c"], 5.5, 6.5),
        op(2, "cas", ["a", "d"], 5.6, 6.0, status="fail"),
        read(0, "c", 7.0, 8.0),
    )
    result = check_linearizable(h)
    assert result.ok, result.problems
    assert (
        result.figures["ops"] == 7 and result.figures["keys"] == 1 and result.figures["max_concurrency"] == 3
    )


def test_stale_read_after_a_later_write_completed_is_rejected() -> None:
    h = build(op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 2.0, 3.0), read(2, "a", 4.0, 5.0))
    result = check_linearizable(h)
    assert not result.ok
    (problem,) = result.problems
    assert problem.startswith("key k0: not linearizable") and "read k0 -> 'a' ok [4.000, 5.000]" in problem


def test_read_of_absent_after_a_write_is_rejected() -> None:
    assert not check_linearizable(build(op(0, "write", "a", 0.0, 1.0), read(1, None, 2.0, 3.0))).ok


def test_info_write_later_seen_by_a_read_is_accepted() -> None:
    h = build(
        op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 2.0, 2.5, status="info"), read(2, "b", 9.0, 9.5)
    )
    result = check_linearizable(h)
    assert result.ok, result.problems
    assert result.figures["info_pinned"] == 1


def test_info_write_never_observed_is_accepted() -> None:
    h = build(
        op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 2.0, 2.5, status="info"), read(2, "a", 9.0, 9.5)
    )
    result = check_linearizable(h)
    assert result.ok, result.problems
    assert result.figures["info_dropped"] == 1


def test_info_write_seen_then_unseen_is_rejected() -> None:
    """Once a read saw the info write's value, the write happened: a later read cannot go back."""
    h = build(
        op(0, "write", "a", 0.0, 1.0),
        op(1, "write", "b", 2.0, 2.5, status="info"),
        read(2, "b", 3.0, 3.5),
        read(2, "a", 4.0, 4.5),
    )
    assert not check_linearizable(h).ok


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    h = build(read(2, "b", 0.0, 1.0), op(1, "write", "b", 2.0, 2.5, status="info"))
    result = check_linearizable(h)
    assert not result.ok and "before the only op writing it was invoked" in result.problems[0]


def test_open_info_cas_observed_only_by_another_info_cas_is_accepted_both_ways() -> None:
    """Left open-ended by the simplifications: the search itself must place it or leave it out."""
    base = [op(0, "write", "a", 0.0, 1.0), op(1, "cas", ["a", "b"], 2.0, 2.5, status="info"),
            op(2, "cas", ["b", "c"], 3.0, 3.5, status="info")]  # fmt: skip
    happened = build(*base, read(3, "c", 5.0, 6.0))
    not_happened = build(*base, read(3, "a", 5.0, 6.0))
    for h in (happened, not_happened):
        result = check_linearizable(h)
        assert result.ok, result.problems
    assert check_linearizable(build(*base, read(3, "a", 5.0, 6.0), read(3, "b", 7.0, 8.0))).ok
    assert not check_linearizable(build(*base, read(3, "c", 5.0, 6.0), read(3, "b", 7.0, 8.0))).ok


def test_cas_against_a_value_that_was_not_there_is_rejected() -> None:
    h = build(
        op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 2.0, 3.0), op(2, "cas", ["a", "c"], 4.0, 5.0)
    )
    result = check_linearizable(h)
    assert not result.ok and "cas k0 ['a', 'c'] ok" in result.problems[0]


def test_cas_against_a_value_never_written_is_rejected_without_search() -> None:
    result = check_linearizable(build(op(0, "write", "a", 0.0, 1.0), op(1, "cas", ["zz", "c"], 2.0, 3.0)))
    assert not result.ok and "cas succeeded against a value no operation ever wrote" in result.problems[0]


def test_failed_write_definitely_did_not_happen() -> None:
    h = build(
        op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 2.0, 3.0, status="fail"), read(2, "b", 4.0, 5.0)
    )
    result = check_linearizable(h)
    assert not result.ok and "read returned a value no operation ever wrote" in result.problems[0]


def test_keys_are_independent_and_the_bad_one_is_named() -> None:
    h = build(
        op(0, "write", "a", 0.0, 1.0, key="k0"),
        op(1, "write", "x", 0.0, 1.0, key="k1"),
        read(2, "a", 2.0, 3.0, key="k0"),
        read(3, None, 2.0, 3.0, key="k1"),
        op(4, "add", "v", 0.0, 1.0, key="w-4-1"),  # adds are not registers
    )
    result = check_linearizable(h)
    assert not result.ok and result.figures["keys"] == 2
    assert [p.split(":")[0] for p in result.problems] == ["key k1"]


def test_budget_exceeded_is_reported_as_a_failure() -> None:
    h = build(op(0, "write", "a", 0.0, 1.0), op(1, "write", "b", 0.5, 2.0), read(2, "b", 3.0, 4.0))
    assert check_linearizable(h).ok
    result = check_linearizable(h, max_states=1)
    assert not result.ok
    assert (
        "UNKNOWN" in result.problems[0]
        and "max_states" in result.problems[0]
        and "NOT verified" in result.problems[0]
    )


def test_time_budget_exceeded_is_reported_as_a_failure() -> None:
    result = check_linearizable(simulate(3, n_ops=600, procs=8), max_seconds=0.0)
    assert not result.ok and "max_seconds" in result.problems[0]


def test_unpairable_history_fails_with_the_reason() -> None:
    result = check_linearizable(
        [{"type": "ok", "process": 0, "f": "read", "key": "k0", "value": None, "time": 1.0}]
    )
    assert not result.ok and "history unusable" in result.problems[0]


def test_malformed_cas_value_is_a_problem() -> None:
    assert not check_linearizable(op(0, "cas", "a", 0.0, 1.0)).ok


# --- seeded random histories from a simulated register -------------------------------------------------


def simulate(seed: int, n_ops: int = 300, procs: int = 5, keys: int = 2, p_info: float = 0.05) -> History:
    """Processes issue ops with random overlapping intervals; each op takes effect at a random instant
    inside its interval on a real register, so the history is linearizable by construction. Info ops
    took effect or not at random; cas ops sometimes expect a stale value and fail."""
    rng = random.Random(seed)
    planned: list[tuple[float, int, str, str, float, float]] = []  # (effect time, process, f, key, t0, t1)
    for p in range(procs):
        now = rng.random()
        for _ in range(n_ops // procs):
            t0 = now + rng.expovariate(10)
            t1 = t0 + rng.expovariate(5)
            f = rng.choice(["read", "read", "write", "cas"])
            planned.append((rng.uniform(t0, t1), p, f, f"k{rng.randrange(keys)}", t0, t1))
            now = t1
    planned.sort()
    register: dict[str, Any] = {}
    history: History = []
    for n, (_, p, f, key, t0, t1) in enumerate(planned):
        current = register.get(key)
        status = "info" if rng.random() < p_info else "ok"
        takes_effect = status == "ok" or rng.random() < 0.5
        value: Any = None
        if f == "read":
            status, result = "ok", current
        elif f == "write":
            value = result = f"v{n}"
            if takes_effect:
                register[key] = value
        else:
            old = current if rng.random() < 0.7 else rng.choice([None, f"v{rng.randrange(n + 1)}"])
            value = result = [old, f"v{n}"]
            if old != current:
                status = "fail"
            elif takes_effect:
                register[key] = value[1]
        history += op(p, f, value, t0, t1, status=status, key=key, result=result)
    history.sort(key=lambda r: r["time"])
    return history


SEEDS = [1, 2, 3, 17, 42, 99, 2024, 31337]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_linearizable_histories_pass_and_raw_search_agrees(seed: int) -> None:
    print(f"seed={seed}")
    history = simulate(seed)
    for simplify in (True, False):
        result = check_linearizable(history, simplify_info=simplify)
        assert result.ok, (seed, simplify, result.problems)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_history_with_a_read_of_a_never_written_value_fails(seed: int) -> None:
    print(f"seed={seed}")
    history = simulate(seed)
    rng = random.Random(seed)
    reads = [r for r in history if r["type"] == "ok" and r["f"] == "read"]
    rng.choice(reads)["value"] = "never-written"
    result = check_linearizable(history)
    assert not result.ok and "never-written" in result.problems[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_history_with_one_stale_read_fails(seed: int) -> None:
    """A read returning w1's value after a later write w2 completed, w1 < w2 < read in real time:
    refutable only by the search (the value was written), with and without the simplifications."""
    print(f"seed={seed}")
    history = simulate(seed, keys=1)
    all_ops = ops(history)
    writes = [o for o in all_ops if o.f == "write" and o.status == "ok"]
    target = None
    for r in (o for o in all_ops if o.f == "read" and o.status == "ok"):
        assert r.complete_time is not None
        older = [w1 for w1 in writes for w2 in writes if w1.complete_time is not None and w2.complete_time is not None
                 and w1.complete_time < w2.invoke_time and w2.complete_time < r.invoke_time]  # fmt: skip
        if older:
            target = (r, older[-1].value)
            break
    assert target is not None
    r, stale = target
    for rec in history:
        if rec["type"] == "ok" and rec["process"] == r.process and rec["time"] == r.complete_time:
            rec["value"] = stale
    for simplify in (True, False):
        result = check_linearizable(history, simplify_info=simplify)
        assert not result.ok and "not linearizable" in result.problems[0], (seed, simplify)


def test_two_thousand_ops_with_concurrency_ten_within_the_budget() -> None:
    history = simulate(7, n_ops=2000, procs=10, keys=1)
    result = check_linearizable(history, max_seconds=30.0)
    assert result.ok, result.problems
    assert int(result.figures["ops"]) > 1500 and int(result.figures["max_concurrency"]) >= 10
    assert float(result.figures["elapsed_s"]) < 30.0
