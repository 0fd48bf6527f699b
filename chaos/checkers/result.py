"""What every checker returns, and the small helpers they share.

A checker never raises on a bad history: it returns ``ok=False`` with problems a human can act on
(times, keys, nodes), because a chaos report that stops at the first exception hides the other
findings. Problems are capped so that a run with ten thousand identical violations stays readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_PROBLEMS", "CheckResult", "Problems", "percentile"]

MAX_PROBLEMS = 20

Figure = float | int | str


@dataclass
class CheckResult:
    """The outcome of one checker: pass/fail, figures for the report, and human-readable problems."""

    name: str
    ok: bool
    figures: dict[str, Figure] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "figures": dict(self.figures),
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        """``name: PASS|FAIL (n problems)`` -- one line for a console report."""
        verdict = "PASS" if self.ok else "FAIL"
        extra = f" ({len(self.problems)} problems)" if self.problems else ""
        return f"{self.name}: {verdict}{extra}"


class Problems:
    """Collects problem lines, keeping the first :data:`MAX_PROBLEMS` and counting the rest."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.limit = limit
        self.count = 0
        self._kept: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self._kept) < self.limit:
            self._kept.append(text)

    def __bool__(self) -> bool:
        return self.count > 0

    def lines(self) -> list[str]:
        dropped = self.count - len(self._kept)
        return self._kept + ([f"... and {dropped} more"] if dropped else [])

    def result(self, name: str, figures: dict[str, Figure], ok: bool | None = None) -> CheckResult:
        """A result that fails iff problems were added (unless ``ok`` is given explicitly)."""
        return CheckResult(name, (not self) if ok is None else ok, figures, self.lines())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending sequence; NaN-free, 0.0 if empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])
