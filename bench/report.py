"""bench/results/latest.md from a run's result (pure: text in, text out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.common import Figure, Section, fmt, fmt_ratio


def _range(r: tuple[float, float]) -> str:
    return "" if math.isnan(r[0]) or r[0] == r[1] else f" ({fmt(r[0])}..{fmt(r[1])})"


def _met(f: Figure) -> str:
    return {True: "yes", False: "**no**", None: ""}[f.met]


def figure_rows(sections: Sequence[Section], with_case: bool) -> list[str]:
    head = ("| case " if with_case else "") + "| figure | gwadm | reference | ratio | target | met |"
    sep = ("|---" if with_case else "") + "|---|---|---|---|---|---|"
    rows = [head, sep]
    for sec in sections:
        for f in sec.figures:
            ref = (
                ""
                if math.isnan(f.reference)
                else f"{fmt(f.reference)}{_range(f.reference_range)} {f.reference_name}"
            )
            target = f.target and (f"{f.target} (ratio)" if f.target_on == "ratio" else f"{f.target}")
            case = f"| {sec.title} " if with_case else ""
            note = f" — {f.note}" if f.note and not with_case else ""
            rows.append(
                f"{case}| {f.name}{note} | {fmt(f.value)}{_range(f.value_range)} {f.unit} | {ref} | "
                f"{fmt_ratio(f.ratio)} | {target} | {_met(f)} |"
            )
    return rows


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    cols: list[str] = []
    for r in runs:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, dict | list)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in runs:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(fmt(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any], sections: Sequence[Section], summary_only: bool = False) -> str:
    m = result["machine"]
    out = [
        f"# gwadm benchmarks ({'quick smoke run' if result['quick'] else 'make bench'})", "",
        f"{result['date']}, {result.get('seconds', '?')} s. Machine: {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory']}, Linux {m['kernel']}, Python {m['python']}; nginx {m['nginx']}, {m['wrk']}, "
        f"etcd {m['etcd'].removeprefix('etcd Version: ')}; uvloop {m['uvloop']}, httptools {m['httptools']}. "
        f"Machine busy before the start: {result['machine_busy_pct_before']} % (load average "
        f"{result['loadavg_before']:.2f}, after {result.get('loadavg_after', math.nan):.2f}).",
        "",
        "Method, for every case: each figure is the median over interleaved rounds (A, B, A, B, ... with the order "
        "rotated per round) next to a reference measured in the same run with the same method, and the ratio "
        "figure/reference; ranges (min..max over rounds or trials) in parentheses. Load generator and upstream on "
        "core 0, the process under test alone on core 1 (taskset), unless a case says otherwise; each target gets a "
        "warm-up first. CPU per request = utime+stime from /proc/<pid>/stat (all processes of the target) / "
        "requests. Targets are those of issues 9 and 11; 'met' is computed, not edited.",
        "",
        *(
            [f"**The machine was {result['machine_busy_pct_before']} % busy before the start (other jobs): the "
             "figures below are depressed and noisy; run again on a quiet machine.**", ""]
            if result["machine_busy_pct_before"] > 20 else []
        ),
        "## Summary",
        "",
        *figure_rows(sections, with_case=True),
        "",
    ]  # fmt: skip
    if result.get("missing_tools"):
        out += [f"Missing tools (cases skipped): {', '.join(result['missing_tools'])}; as root `make bench` installs "
                "them with apt-get (nginx-light, wrk, etcd-server, etcd-client).", ""]  # fmt: skip
    if result.get("absent_modules"):
        out += [f"Case modules not present: {', '.join(result['absent_modules'])}.", ""]
    for sec in sections:
        if sec.error:
            out += [f"**{sec.title} failed:** `{sec.error}`", ""]
    if summary_only:
        return "\n".join(out)
    for sec in sections:
        out += [f"## {sec.title}", "", sec.method, ""]
        if sec.error:
            out += [f"Failed: `{sec.error}`", ""]
        if sec.figures:
            out += [*figure_rows([sec], with_case=False), ""]
        out += [f"- {n}" for n in sec.notes]
        if sec.notes:
            out.append("")
        if sec.runs:
            out += ["<details><summary>runs</summary>", "", *runs_table(sec.runs), "", "</details>", ""]
    out += ["Settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()), ""]
    return "\n".join(out)
