"""Summary, ``report.json`` and ``timeline.png`` of a chaos run (DESIGN §6: every run writes a report).

Everything here works on the plain history records (dicts) and on checker results by duck typing, so
the report can be rebuilt offline from a saved ``history.jsonl`` and does not depend on how the
checkers are implemented.  matplotlib is optional: it is imported lazily, and a machine without it
still gets the JSON report and the console table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

WRITE_FS = ("write", "cas", "add")
COMPLETIONS = ("ok", "fail", "info")
PROBLEMS_SHOWN = 10  # per failed checker in the console table; report.json keeps them all

Record = Mapping[str, Any]
FaultWindow = tuple[str, float, float | None, dict[str, Any]]


class CheckResultLike(Protocol):
    """What the report needs from a checker result (chaos.checkers.CheckResult fits; read-only, so covariant)."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def figures(self) -> Mapping[str, Any]: ...
    @property
    def problems(self) -> Sequence[str]: ...


def _percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: always an observed value, so figures are exact and reproducible."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ops(history: Iterable[Record]) -> list[tuple[Record, Record | None]]:
    """Pair each invoke with the next completion of the same process (each process is sequential).

    An invoke with no completion (the run ended) is returned with ``None``: it may have happened.
    """
    pending: dict[Any, Record] = {}
    pairs: list[tuple[Record, Record | None]] = []
    for r in history:
        t = r.get("type")
        if t == "invoke":
            if r.get("process") in pending:  # malformed, but keep the earlier one counted
                pairs.append((pending.pop(r.get("process")), None))
            pending[r.get("process")] = r
        elif t in COMPLETIONS and r.get("process") in pending:
            pairs.append((pending.pop(r["process"]), r))
    pairs.extend((inv, None) for inv in pending.values())
    return pairs


def fault_windows(history: Iterable[Record]) -> list[FaultWindow]:
    """(fault, start, heal, detail) per nemesis start; heal is None if the run ended before it.

    A heal closes the oldest open window of the same fault, else the oldest open window at all (a
    nemesis may heal under a generic name).
    """
    windows: list[list[Any]] = []
    for r in history:
        if r.get("type") != "nemesis":
            continue
        if r.get("phase") == "start":
            windows.append([str(r.get("fault")), float(r["time"]), None, dict(r.get("detail") or {})])
        elif r.get("phase") == "heal":
            open_ = [w for w in windows if w[2] is None]
            same = [w for w in open_ if w[0] == r.get("fault")]
            if same or open_:
                (same or open_)[0][2] = float(r["time"])
    return [(w[0], w[1], w[2], w[3]) for w in windows]


def _convergence(history: Sequence[Record], windows: list[FaultWindow]) -> dict[str, Any]:
    """Seconds from the last heal until every node and proxy reports, reachable, one same hash.

    Computed from the status samples alone so the table has the figure even without a checker.
    """
    heals = [w[2] for w in windows if w[2] is not None]
    if not heals:
        return {"heal": None, "converged_at": None, "seconds": None}
    heal = max(heals)
    nodes: dict[str, Record] = {}
    proxies: dict[str, Record] = {}
    for r in sorted((r for r in history if r.get("type") in ("node_status", "proxy_status")),
                    key=lambda r: r["time"]):  # fmt: skip
        (nodes if r["type"] == "node_status" else proxies)[str(r.get("node", r.get("proxy")))] = r
        if r["time"] < heal or not nodes:
            continue
        seen = list(nodes.values()) + list(proxies.values())
        hashes = {s.get("hash") for s in seen}
        revisions = {s.get("revision") for s in nodes.values()}
        if (
            all(s.get("reachable") for s in seen)
            and len(hashes) == 1
            and None not in hashes
            and len(revisions) == 1
        ):
            return {"heal": heal, "converged_at": r["time"], "seconds": r["time"] - heal}
    return {"heal": heal, "converged_at": None, "seconds": None}


def summarize_ops(history: Sequence[Record]) -> dict[str, Any]:
    """Counts, write latency, worst write outage, proxy success, fault windows and convergence.

    Unavailability is the longest stretch without an ok write/cas/add completion, from the first
    write invoke to the last write completion: a run whose writes never recover shows the whole
    tail, not just the gap between the last two successes.
    """
    ops: dict[str, dict[str, int]] = defaultdict(lambda: {"invoked": 0, "ok": 0, "fail": 0, "info": 0})
    latencies: list[float] = []
    ok_times: list[float] = []
    write_times: list[float] = []
    for inv, done in _ops(history):
        f = str(inv.get("f"))
        counts = ops[f]
        counts["invoked"] += 1
        kind = done["type"] if done is not None else "info"
        counts[kind] += 1
        if f in WRITE_FS:
            write_times.append(float(inv["time"]))
            if done is not None:
                write_times.append(float(done["time"]))
            if kind == "ok" and done is not None:
                latencies.append(float(done["time"]) - float(inv["time"]))
                ok_times.append(float(done["time"]))
    latencies.sort()
    windows = fault_windows(history)

    gap: dict[str, Any] = {"seconds": None, "start": None, "end": None, "faults": []}
    if write_times:
        points = [min(write_times), *sorted(ok_times), max(write_times)]
        start, end = max(zip(points, points[1:], strict=False), key=lambda p: p[1] - p[0])
        overlapping = sorted({w[0] for w in windows if w[1] < end and (w[2] is None or w[2] > start)})
        gap = {"seconds": end - start, "start": start, "end": end, "faults": overlapping}

    per_proxy: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "ok": 0})
    for r in history:
        if r.get("type") == "proxy_request":
            p = per_proxy[str(r.get("proxy"))]
            p["requests"] += 1
            p["ok"] += bool(r.get("ok"))
    for p in per_proxy.values():
        p["success_pct"] = 100.0 * p["ok"] / p["requests"]
    requests = sum(p["requests"] for p in per_proxy.values())
    proxy_ok = sum(p["ok"] for p in per_proxy.values())

    totals = {k: sum(c[k] for c in ops.values()) for k in ("invoked", "ok", "fail", "info")}
    return {
        "ops": {f: dict(c) for f, c in sorted(ops.items())},
        "totals": totals,
        "ok_writes": sum(ops[f]["ok"] for f in WRITE_FS if f in ops),
        "write_latency": {"count": len(latencies), "p50": _percentile(latencies, 50),
                          "p99": _percentile(latencies, 99), "max": latencies[-1] if latencies else None},
        "unavailability": gap,
        "proxy": {"requests": requests, "ok": proxy_ok,
                  "success_pct": 100.0 * proxy_ok / requests if requests else None,
                  "per_proxy": {k: dict(v) for k, v in sorted(per_proxy.items())}},
        "faults": windows,
        "convergence": _convergence(history, windows),
        "duration": max((float(r["time"]) for r in history if "time" in r), default=0.0),
    }  # fmt: skip


def _jsonable(value: Any) -> Any:
    """Strict JSON: tuples become lists, NaN/inf become None, unknown objects their str()."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _result_dict(r: CheckResultLike | Mapping[str, Any]) -> dict[str, Any]:
    """Accept checker objects and already-serialized dicts (re-rendering a saved report)."""
    if isinstance(r, Mapping):
        return {"name": str(r["name"]), "ok": bool(r["ok"]), "figures": dict(r.get("figures") or {}),
                "problems": list(r.get("problems") or [])}  # fmt: skip
    return {"name": r.name, "ok": bool(r.ok), "figures": dict(r.figures), "problems": list(r.problems)}


def _software() -> dict[str, str]:
    """Versions that make a failing run reproducible elsewhere."""
    from importlib import metadata

    soft = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("gwadm", "pysyncobj", "aiohttp"):
        try:
            soft[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return soft


def build_report(meta: Mapping[str, Any], history: Sequence[Record],
                 results: Iterable[CheckResultLike | Mapping[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """The JSON-able report of one run; ``ok`` only if every checker passed (and there was one)."""
    summary = summarize_ops(history)
    checks = [_result_dict(r) for r in results]
    full_meta = {"scenario": None, "seed": None, "nodes": None, "duration": summary["duration"],
                 "started_at": None, **meta}  # fmt: skip
    full_meta.setdefault("software", _software())
    report = {"meta": full_meta, "ok": bool(checks) and all(c["ok"] for c in checks),
              "checkers": checks, "summary": summary}  # fmt: skip
    return _jsonable(report)  # type: ignore[no-any-return]


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Write atomically (tmp + fsync + rename): a killed run never leaves a half report behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(report), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a report.json written by :func:`write_report` (for re-rendering the table)."""
    with open(path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def _secs(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}s"


def _run_label(meta: Mapping[str, Any]) -> str:
    nodes = meta.get("nodes")
    n = len(nodes) if isinstance(nodes, list | tuple) else nodes
    return f"{meta.get('scenario')} n={n} seed={meta.get('seed')}"


def render_summary(reports: Sequence[Mapping[str, Any]]) -> RenderableType:
    """One row per run (the failed checkers named in its result), then their problems. Pure.

    One column for all checkers rather than one each keeps the table readable at 100 columns.
    """

    def key(r: Mapping[str, Any]) -> tuple[str, str, str]:
        m = r.get("meta", {})
        return (str(m.get("scenario")), str(m.get("nodes")), str(m.get("seed")))

    reports = sorted(reports, key=key)
    names: list[str] = []
    for r in reports:
        names += [c["name"] for c in r.get("checkers", []) if c["name"] not in names]
    table = Table(title="Chaos runs", title_justify="left")
    for col in ("scenario", "nodes", "seed", "ops", "ok writes", "max unavail", "proxy ok",
                "converge", "fail/info", "checks"):  # fmt: skip
        table.add_column(col, justify="left" if col == "scenario" else "right", no_wrap=col != "scenario")
    problems = Table(title="Problems", title_justify="left", show_lines=False)
    for col in ("run", "checker", "problem"):
        problems.add_column(col, overflow="fold")

    for r in reports:
        meta, s = r.get("meta", {}), r.get("summary", {})
        by_name = {c["name"]: c for c in r.get("checkers", [])}
        gap, proxy, conv = s.get("unavailability", {}), s.get("proxy", {}), s.get("convergence", {})
        unavail = _secs(gap.get("seconds"))
        if gap.get("start") is not None:
            unavail += f" @{gap['start']:.1f}"
        pct = proxy.get("success_pct")
        converge = (
            "never"
            if conv.get("heal") is not None and conv.get("seconds") is None
            else _secs(conv.get("seconds"))
        )
        totals = s.get("totals", {})
        failed = [c for c in r.get("checkers", []) if not c["ok"]]
        passed = sum(1 for n in names if n in by_name and by_name[n]["ok"])
        result = (
            Text(f"✓ {passed}/{len(by_name)}", style="green")
            if r.get("ok")
            else Text("✗ " + (", ".join(c["name"] for c in failed) or str(r.get("error", "error"))),
                      style="bold red")
        )
        nodes = meta.get("nodes")
        table.add_row(str(meta.get("scenario")), str(len(nodes) if isinstance(nodes, list | tuple) else nodes),
                      str(meta.get("seed")), str(totals.get("invoked", 0)), str(s.get("ok_writes", 0)),
                      unavail, "—" if pct is None else f"{pct:.2f}%", converge,
                      f"{totals.get('fail', 0)}/{totals.get('info', 0)}", result)  # fmt: skip
        for c in failed:
            shown = c.get("problems", [])[:PROBLEMS_SHOWN] or ["(no problem text)"]
            for p in shown:
                problems.add_row(_run_label(meta), c["name"], str(p))
            if len(c.get("problems", [])) > PROBLEMS_SHOWN:
                problems.add_row(_run_label(meta), c["name"], f"… {len(c['problems']) - PROBLEMS_SHOWN} more")
    return Group(table, problems) if problems.row_count else table


def write_timeline(path: str | os.PathLike[str], history: Sequence[Record]) -> bool:
    """Write latency (top) and proxy success per 1 s bucket (bottom) with fault windows shaded.

    Returns False, writing nothing, when matplotlib is missing. Uses a bare Figure + Agg canvas, not
    pyplot, so no global backend state is touched (safe inside tests and threads).
    """
    try:
        import matplotlib  # noqa: F401  (import the package first so a blocked install fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False

    lat: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for inv, done in _ops(history):
        f = str(inv.get("f"))
        if f not in WRITE_FS or done is None:
            continue
        xs, ys = lat[f if done["type"] == "ok" else str(done["type"])]  # fail/info: one series each
        xs.append(float(inv["time"]))
        ys.append(float(done["time"]) - float(inv["time"]))
    buckets: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in history:
        if r.get("type") == "proxy_request":
            b = buckets[str(r.get("proxy"))][int(float(r["time"]))]
            b[0] += 1
            b[1] += bool(r.get("ok"))
    windows = fault_windows(history)
    end = max((float(r["time"]) for r in history if "time" in r), default=1.0)

    fig = Figure(figsize=(12, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    styles = {"fail": {"marker": "v", "s": 8, "color": "grey", "alpha": 0.5},
              "info": {"marker": "x", "s": 24, "color": "red", "linewidths": 1}}  # fmt: skip
    for label, (xs, ys) in sorted(lat.items(), key=lambda kv: (kv[0] in styles, kv[0])):
        top.scatter(xs, ys, label=label, **styles.get(label, {"marker": ".", "s": 8}))
    if any(y > 0 for _, ys in lat.values() for y in ys):
        top.set_yscale("log")
    top.set_ylabel("admin write latency (s)")
    counts: dict[int, int] = defaultdict(int)
    for proxy, per_s in sorted(buckets.items()):
        secs = range(min(per_s), max(per_s) + 1)  # seconds without requests stay a gap (NaN), not a line
        rates = [100.0 * per_s[s][1] / per_s[s][0] if s in per_s else math.nan for s in secs]
        bottom.plot([s + 0.5 for s in secs], rates, drawstyle="steps-mid", marker=".", markersize=3,
                    label=f"{proxy} ok %")  # fmt: skip
        for s, (n, _ok) in per_s.items():
            counts[s] += n
    bottom.set_ylabel("proxy success (% per 1 s)")
    bottom.set_ylim(-5, 105)
    bottom.set_xlabel("seconds since start")
    if counts:
        twin = bottom.twinx()
        secs = range(min(counts), max(counts) + 1)
        twin.step([s + 0.5 for s in secs], [counts.get(s, 0) for s in secs], where="mid", color="grey", alpha=0.6,
                  linestyle=":", label="requests / s")  # fmt: skip
        twin.set_ylabel("requests / s (all proxies)")
        twin.set_ylim(bottom=0)
        bottom.set_zorder(twin.get_zorder() + 1)  # success lines and fault labels above the count line
        bottom.patch.set_visible(False)
        bottom.legend(*[a + b for a, b in zip(bottom.get_legend_handles_labels(), twin.get_legend_handles_labels(),
                                              strict=True)], loc="upper left", bbox_to_anchor=(1.07, 1), fontsize=7)  # fmt: skip
    for ax in (top, bottom):
        for fault, start, heal, _detail in windows:
            ax.axvspan(start, end if heal is None else heal, color="orange", alpha=0.15)
            ax.text(start, 0.98, fault, transform=ax.get_xaxis_transform(), fontsize=7, va="top", rotation=90)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="upper left", bbox_to_anchor=(1.07, 1), fontsize=7)
    top.set_xlim(0, max(end, 1.0))

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
