"""The pure half of the benchmark harness: statistics, ratios, /proc parsing, wrk output, figures.

Nothing here starts a process or reads a clock, so ``tests/bench`` can test it. Conventions used
in every case module:

* a *figure* is one measured value of the system under test next to a *reference* measured in the
  same run with the same method (nginx, etcd, or our own other configuration), their ratio, and
  the target the issue sets, if any;
* runs are repeated in interleaved rounds (A, B, A, B, ...); a figure is the median of its runs and
  carries the range (min..max) of the runs;
* CPU per request is (utime + stime of the processes under test, from /proc/<pid>/stat, after
  minus before) / requests.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(min, max) of the runs; (NaN, NaN) when there are none."""
    return (min(values), max(values)) if values else (math.nan, math.nan)


def ratio(value: float, reference: float) -> float:
    """value / reference; NaN when either is missing or the reference is 0."""
    if not reference or math.isnan(value) or math.isnan(reference):
        return math.nan
    return value / reference


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else math.nan,
            "mean": statistics.fmean(ms) if ms else math.nan}  # fmt: skip


# ---- /proc ------------------------------------------------------------------------------------------


def parse_proc_stat(text: str, ticks_per_second: int) -> float:
    """utime + stime in seconds from the text of /proc/<pid>/stat (the name may hold spaces and ')')."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second  # fields 14 and 15 of proc(5)


def parse_cpu_lines(text: str) -> dict[int, tuple[int, int]]:
    """Per core (busy, total) jiffies from the text of /proc/stat (idle and iowait are not busy)."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        m = re.match(r"cpu(\d+) (.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()][:8]
            out[int(m.group(1))] = (sum(v) - v[3] - v[4], sum(v))
    return out


def cpu_us_per_request(cpu_seconds: float, requests: int) -> float:
    return cpu_seconds / requests * 1e6 if requests else math.nan


# ---- wrk --------------------------------------------------------------------------------------------


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return math.nan
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, seconds, rps, latency percentiles (ms), non-2xx and socket errors from wrk's text."""
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not m:
        raise ValueError(f"could not read wrk's output: {out[:500]!r}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    latency = {f"p{p}": _duration_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests, "seconds": seconds, "rps": requests / seconds if seconds else math.nan,
        "latency_ms": latency, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }  # fmt: skip


# ---- figures and sections ---------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured value beside its same-run reference."""

    name: str
    unit: str
    value: float
    reference: float = math.nan
    reference_name: str = ""
    value_range: tuple[float, float] = (math.nan, math.nan)
    reference_range: tuple[float, float] = (math.nan, math.nan)
    target: str = ""  # e.g. ">= 0.45" (on the ratio) or "<= 5 ms" (on the value)
    target_on: str = "ratio"  # "ratio" or "value"
    note: str = ""

    @property
    def ratio(self) -> float:
        return ratio(self.value, self.reference)

    @property
    def met(self) -> bool | None:
        """Whether the target holds; None without a target or a value."""
        m = re.fullmatch(r"\s*(<=|>=)\s*([\d.]+)\s*\S*\s*", self.target)
        if not m:
            return None
        x = self.ratio if self.target_on == "ratio" else self.value
        if math.isnan(x):
            return None
        bound = float(m.group(2))
        return x <= bound if m.group(1) == "<=" else x >= bound

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"], d["met"] = self.ratio, self.met
        return d


@dataclass
class Section:
    """One case's results: figures for the summary table, runs for the detail table, method text."""

    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "method": self.method, "figures": [f.to_json() for f in self.figures],
                "runs": self.runs, "notes": self.notes, "error": self.error}  # fmt: skip


def figure_from_runs(
    name: str,
    unit: str,
    runs: Sequence[dict[str, Any]],
    key: str,
    target_name: str,
    reference_name: str,
    **kw: Any,
) -> Figure:
    """Median and range of ``key`` over the runs of ``target_name`` vs those of ``reference_name``."""
    mine = [float(r[key]) for r in runs if r["target"] == target_name]
    ref = [float(r[key]) for r in runs if r["target"] == reference_name]
    return Figure(name, unit, median(mine), median(ref), reference_name, spread(mine), spread(ref), **kw)


def fmt(x: float) -> str:
    """A figure for a table: thousands separated, 2 significant decimals below 10, '-' for NaN."""
    if math.isnan(x):
        return "-"
    a = abs(x)
    if float(x).is_integer() and a < 1000:
        return str(int(x))
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}" if a >= 10 else f"{x:.2f}"


def fmt_ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.3f}x" if abs(x) < 0.1 else f"{x:.2f}x"


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf replaced by None and tuples by lists (strict JSON)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
