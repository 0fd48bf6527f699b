"""Per-key linearizability of the admin register operations (read / write / cas).

Why this algorithm: the Wing & Gong search with Lowe's memoization, as in Porcupine, is the standard
exact checker for histories of a few thousand operations with modest concurrency. Operations become
call/return entries in time order in a doubly linked list; the search repeatedly tries to linearize
a call that precedes every pending return, lifting it out of the list, and backtracks when it meets
a return whose call could not be placed. A cache of (set of linearized ops, register value) prunes
every configuration already explored, which is what makes it polynomial in practice.

Each key is an independent register (linearizability is compositional), initially ``None``.
``fail`` ops definitely did not happen and are dropped; ``info`` reads tell nothing and are dropped;
``info`` writes/cas have no return entry, so they may be linearized anywhere after their invoke or
left out. Because open-ended ops are what blows the search up, they are simplified first -- both
rules are exact when the written value is unique to one op, which the workload guarantees:

- an info op whose value nobody ever observes (no read returns it, no cas expects it) is dropped:
  any linearization containing it stays valid without it, since only a write can follow it;
- an info op whose value an ``ok`` op observed must have happened before that observer returned,
  so it becomes an ordinary op ending at the earliest such return.

The search has a budget (states per key, seconds overall); running out is reported as a failure
("unknown"), never as a pass.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.history import REGISTER_FS, History, HistoryError, Op, ops

from .result import CheckResult, Problems

__all__ = ["check_linearizable"]

NAME = "linearizable"
_READ, _WRITE, _CAS = 0, 1, 2
_KINDS = {"read": _READ, "write": _WRITE, "cas": _CAS}


def _freeze(value: Any) -> Hashable:
    """JSON values as hashable model states (lists -> tuples, dicts -> sorted item tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value  # type: ignore[no-any-return]


@dataclass(slots=True)
class _Call:
    """One op as the search sees it. ``arg``: expected value (read result / cas old); ``new``: written."""

    op: Op
    kind: int
    arg: Hashable
    new: Hashable
    start: float
    end: float | None  # None: open-ended (an info op that may or may not have happened)


_Best = tuple[int, int, Hashable, list[int], int]
"""The deepest dead end: (ops placed, op that could not be placed, register value, last placed, placed bitset)."""


@dataclass
class _Outcome:
    ok: bool | None  # None: budget exhausted
    states: int
    message: str = ""


def check_linearizable(
    history: History, *, max_states: int = 1_000_000, max_seconds: float = 60.0, simplify_info: bool = True
) -> CheckResult:
    """Check every register key; ``max_states`` is per key, ``max_seconds`` for the whole check.

    ``simplify_info=False`` skips the info-op simplifications (tests use it to cross-check them).
    """
    started = time.monotonic()
    try:
        all_ops = ops(history)
    except HistoryError as exc:
        return CheckResult(NAME, False, {}, [f"history unusable: {exc}"])
    by_key: dict[str, list[Op]] = {}
    for op in all_ops:
        if op.f in REGISTER_FS and op.status != "fail" and not (op.f == "read" and op.status == "info"):
            by_key.setdefault(op.key, []).append(op)
    problems = Problems()
    counts = {"dropped_info": 0, "pinned_info": 0, "open_info": 0}
    states = max_conc = 0
    deadline = started + max_seconds
    for key in sorted(by_key):
        calls = _prepare(key, by_key[key], problems, counts, simplify_info)
        if calls is None:
            continue
        max_conc = max(max_conc, _max_concurrency(calls))
        outcome = _search(key, calls, max_states, deadline)
        states += outcome.states
        if not outcome.ok:
            problems.add(outcome.message)
    figures: dict[str, float | int | str] = {
        "ops": sum(len(v) for v in by_key.values()), "keys": len(by_key), "max_concurrency": max_conc,
        "states": states, "info_dropped": counts["dropped_info"], "info_pinned": counts["pinned_info"],
        "info_open": counts["open_info"], "elapsed_s": round(time.monotonic() - started, 3),
    }  # fmt: skip
    return problems.result(NAME, figures)


def _prepare(
    key: str, key_ops: Sequence[Op], problems: Problems, counts: dict[str, int], simplify: bool
) -> list[_Call] | None:
    """Turn ops into search calls, applying the exact info-op simplifications; None if already refuted."""
    calls: list[_Call] = []
    for op in key_ops:
        arg: Hashable = None
        new: Hashable = None
        if op.f == "read":
            arg = _freeze(op.result)
        elif op.f == "write":
            new = _freeze(op.value)
        else:
            if not isinstance(op.value, list | tuple) or len(op.value) != 2:
                problems.add(f"key {key}: malformed cas value (want [old, new]): {op.describe()}")
                return None
            arg, new = _freeze(op.value[0]), _freeze(op.value[1])
        calls.append(_Call(op, _KINDS[op.f], arg, new, op.invoke_time, op.complete_time))

    producers: dict[Hashable, list[_Call]] = {}
    observers: dict[Hashable, list[_Call]] = {}
    for c in calls:
        if c.kind != _READ:
            producers.setdefault(c.new, []).append(c)
        if c.kind != _WRITE:
            observers.setdefault(c.arg, []).append(c)

    refuted = False
    for c in calls:
        if c.kind != _WRITE and c.end is not None and c.arg is not None and c.arg not in producers:
            what = "read returned" if c.kind == _READ else "cas succeeded against"
            problems.add(f"key {key}: {what} a value no operation ever wrote: {c.op.describe()}")
            refuted = True
    if refuted:
        return None

    kept: list[_Call] = []
    for c in calls:
        if simplify and c.end is None and c.new is not None and len(producers[c.new]) == 1:
            seen = observers.get(c.new, [])
            if not seen:
                counts["dropped_info"] += 1
                continue
            ends = [o.end for o in seen if o.end is not None]
            if ends:
                c.end = min(ends)
                counts["pinned_info"] += 1
                if c.end < c.start:
                    first = min((o for o in seen if o.end is not None), key=lambda o: o.end or 0.0)
                    problems.add(f"key {key}: {first.op.describe()} observed {c.new!r} before the only op "
                                 f"writing it was invoked: {c.op.describe()}")  # fmt: skip
                    return None
        if c.end is None:
            counts["open_info"] += 1
        kept.append(c)
    return kept


def _max_concurrency(calls: Sequence[_Call]) -> int:
    events = sorted([(c.start, 0) for c in calls] + [(c.end, 1) for c in calls if c.end is not None])
    open_ = best = 0
    for _, kind in events:
        open_ += 1 if kind == 0 else -1
        best = max(best, open_)
    return best


def _search(key: str, calls: Sequence[_Call], max_states: int, deadline: float) -> _Outcome:
    """Wing-Gong-Lowe search over the entry list; see the module docstring."""
    # Entries: node 0 is a sentinel head; nodes 1..m are call/return events in time order (a call
    # sorts before a return at equal times, which makes touching intervals concurrent: the lenient reading).
    events = sorted([(c.start, 0, i) for i, c in enumerate(calls)]
                    + [(c.end, 1, i) for i, c in enumerate(calls) if c.end is not None])  # fmt: skip
    m = len(events)
    nxt = list(range(1, m + 2))
    nxt[m] = -1
    prv = list(range(-1, m))
    op_of = [0] * (m + 1)
    is_call = [False] * (m + 1)
    match = [-1] * (m + 1)
    ret_node: dict[int, int] = {}
    for node, (_, kind, i) in enumerate(events, 1):
        op_of[node], is_call[node] = i, kind == 0
        if kind == 1:
            ret_node[i] = node
    for node in range(1, m + 1):
        if is_call[node]:
            match[node] = ret_node.get(op_of[node], -1)
    kinds = [c.kind for c in calls]
    args = [c.arg for c in calls]
    news = [c.new for c in calls]

    def lift(node: int) -> None:
        for n in (node, match[node]):
            if n != -1:
                p, q = prv[n], nxt[n]
                nxt[p] = q
                if q != -1:
                    prv[q] = p

    def unlift(node: int) -> None:
        for n in (match[node], node):
            if n != -1:
                nxt[prv[n]] = n
                if nxt[n] != -1:
                    prv[nxt[n]] = n

    state: Hashable = None
    bits = 0
    remaining = len(ret_node)
    stack: list[tuple[int, Hashable]] = []
    cache: set[tuple[int, int, Hashable]] = set()
    best: _Best = (-1, -1, None, [], 0)
    steps = 0xFFF  # the first iteration checks the clock: a key started after the deadline is unknown
    entry = nxt[0]
    while remaining:
        steps += 1
        if steps & 0xFFF == 0 and time.monotonic() > deadline:
            return _unknown(key, len(cache), "time", len(stack), len(calls))
        if is_call[entry]:
            i = op_of[entry]
            kind = kinds[i]
            if kind == _WRITE or state == args[i]:
                new_state = state if kind == _READ else news[i]
                nb = bits | (1 << i)
                low = ((nb + 1) & ~nb).bit_length() - 1  # trailing ones: keeps cache keys small
                ck = (low, nb >> low, new_state)
                if ck not in cache:
                    cache.add(ck)
                    if len(cache) > max_states:
                        return _unknown(key, len(cache), "states", len(stack), len(calls))
                    stack.append((entry, state))
                    state, bits = new_state, nb
                    lift(entry)
                    if match[entry] != -1:
                        remaining -= 1
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            if len(stack) > best[0]:
                best = (len(stack), op_of[entry], state, [op_of[n] for n, _ in stack[-6:]], bits)
            if not stack:
                break
            entry, state = stack.pop()
            bits &= ~(1 << op_of[entry])
            unlift(entry)
            if match[entry] != -1:
                remaining += 1
            entry = nxt[entry]
    else:
        return _Outcome(True, len(cache))
    return _Outcome(False, len(cache), _explain(key, calls, best))


def _unknown(key: str, states: int, which: str, depth: int, total: int) -> _Outcome:
    limit = "max_states" if which == "states" else "max_seconds"
    return _Outcome(None, states, f"key {key}: linearizability UNKNOWN -- search budget ({limit}) exhausted "
                                  f"after {states} states with {depth} of {total} ops placed; the history is "
                                  f"NOT verified (raise the budget or shorten the run)")  # fmt: skip


def _explain(key: str, calls: Sequence[_Call], best: _Best) -> str:
    """The window around the deepest point the search reached: what was placed, what could not be."""
    depth, stuck_i, state, last, placed = best
    stuck = calls[stuck_i]
    lines = [f"key {key}: not linearizable. Placed {depth} of {len(calls)} ops, then register = {state!r} "
             f"and this op cannot take effect before it returned:", f"    {stuck.op.describe()}"]  # fmt: skip
    if last:
        lines.append("  last ops placed (in linearization order):")
        lines += [f"    {calls[i].op.describe()}" for i in last]
    rivals = [c for i, c in enumerate(calls)
              if i != stuck_i and not placed >> i & 1 and stuck.end is not None and c.start <= stuck.end
              and (c.end is None or c.end >= stuck.start)]  # fmt: skip
    if rivals:
        lines.append("  concurrent ops:")
        lines += [f"    {c.op.describe()}" for c in rivals[:8]]
        if len(rivals) > 8:
            lines.append(f"    ... and {len(rivals) - 8} more")
    return "\n".join(lines)
