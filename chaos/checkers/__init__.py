"""Checkers for a chaos run's history (see :mod:`chaos.history` for the format).

Each ``check_*(history, **params) -> CheckResult`` is pure: it reads the records and never raises on
a bad history (a broken history is a failed check with a message). :func:`run_all` runs them all
with one set of keyword parameters, each checker taking the ones it declares, so the runner has a
single place to tune bounds; an unknown parameter name is an error rather than silently ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from chaos.history import History

from .availability import check_availability
from .cluster import check_convergence, check_single_leader
from .discovery import check_discovery
from .linearizability import check_linearizable
from .proxies import check_proxies, check_proxy_availability
from .result import MAX_PROBLEMS, CheckResult
from .unavailability import check_write_unavailability
from .writes import check_no_lost_writes
from .zombies import check_no_zombie_writes

__all__ = [
    "CHECKERS", "MAX_PROBLEMS", "CheckResult", "check_availability", "check_convergence", "check_discovery", "check_linearizable",
    "check_no_lost_writes", "check_no_zombie_writes", "check_proxies", "check_proxy_availability", "check_single_leader", "check_write_unavailability", "run_all",
]  # fmt: skip

Checker = Callable[..., CheckResult]

CHECKERS: dict[str, Checker] = {
    "linearizable": check_linearizable,
    "no_lost_writes": check_no_lost_writes,
    "no_zombie_writes": check_no_zombie_writes,
    "convergence": check_convergence,
    "proxies": check_proxies,
    "proxy_availability": check_proxy_availability,
    "single_leader": check_single_leader,
    "availability": check_availability,
    "write_unavailability": check_write_unavailability,
    "discovery": check_discovery,
}
"""Name -> checker, in report order. The name equals the ``CheckResult.name`` it returns."""


def _params(fn: Checker) -> set[str]:
    return {
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def run_all(history: History, **params: Any) -> list[CheckResult]:
    """Run every checker; each gets the keyword parameters it declares.

    A checker that crashes (a bug, or a record type it did not expect) becomes a failed result
    naming the exception, so one broken checker never hides the verdicts of the others.
    """
    known = set().union(*(_params(fn) for fn in CHECKERS.values()))
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(
            f"unknown checker parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    results: list[CheckResult] = []
    for name, fn in CHECKERS.items():
        mine = {k: v for k, v in params.items() if k in _params(fn)}
        try:
            results.append(fn(history, **mine))
        except Exception as exc:  # reported as a failed check, see the docstring
            results.append(CheckResult(name, False, {}, [f"checker crashed: {type(exc).__name__}: {exc}"]))
    return results
