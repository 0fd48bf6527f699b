"""The pure parts of the benchmark harness (bench/common.py, bench/report.py): no benchmark runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.common import (
    Figure,
    Section,
    figure_from_runs,
    json_safe,
    median,
    parse_cpu_lines,
    parse_proc_stat,
    parse_wrk,
    percentile,
    ratio,
    spread,
)
from bench.proxy_cases import installed_times
from bench.report import markdown

WRK = """Running 2s test @ http://127.0.0.1:8080/plain
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   604.52us  120.10us   3.02ms   90.00%
  Latency Distribution
     50%  580.00us
     75%  650.00us
     90%  700.00us
     99%    1.20ms
  104816 requests in 2.00s, 16.49MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  52408.00
"""


def test_percentiles_medians_ranges_and_ratios() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0 and math.isnan(percentile([], 50))
    assert median([5.0, 1.0, 3.0]) == 3.0 and spread([2.0, 9.0, 4.0]) == (2.0, 9.0)
    assert ratio(1.0, 4.0) == 0.25 and math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))


def test_cpu_from_proc_stat_even_with_spaces_and_parens_in_the_name() -> None:
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50", "0", "0"]
    text = "1234 (python (x) y) " + " ".join(fields) + "\n"
    assert parse_proc_stat(text, 100) == 3.0  # (250 utime + 50 stime) / 100 ticks
    cores = parse_cpu_lines("cpu  9 9 9 9 9 0 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 1 1 1 1 1 1 1 1\n")
    assert cores == {0: (15, 100), 1: (6, 8)}


def test_wrk_output() -> None:
    r = parse_wrk(WRK)
    assert r["requests"] == 104816 and r["seconds"] == 2.0 and r["rps"] == 52408
    assert {k: round(v, 6) for k, v in r["latency_ms"].items()} == {
        "p50": 0.58,
        "p75": 0.65,
        "p90": 0.7,
        "p99": 1.2,
    }
    assert r["non_2xx"] == 3 and r["socket_errors"] == 3


def test_figures_ratio_and_targets() -> None:
    runs = [{"target": "a", "rps": v} for v in (10.0, 30.0, 20.0)] + [
        {"target": "ref", "rps": v} for v in (40.0, 40.0)
    ]
    f = figure_from_runs("rps", "req/s", runs, "rps", "a", "ref", target=">= 0.45")
    assert (f.value, f.reference, f.value_range) == (20.0, 40.0, (10.0, 30.0))
    assert f.ratio == 0.5 and f.met is True
    assert Figure("p99", "ms", 3.0, 1.0, target="<= 2.0").met is False
    assert Figure("apply", "ms", 4.0, 1.0, target="<= 5 ms", target_on="value").met is True
    assert Figure("x", "ms", 4.0).met is None and Figure("y", "ms", math.nan, target="<= 1").met is None


def test_report_and_json_are_well_formed() -> None:
    sec = Section("Case", "how", [Figure("rps", "req/s", 20.0, 40.0, "ref", target=">= 0.45")],
                  [{"target": "a", "rps": 20.0, "core_busy_pct": {0: 1.0}}], ["a note"])  # fmt: skip
    result = {
        "date": "d", "quick": True, "settings": {"rounds": 1}, "seconds": 3, "machine_busy_pct_before": 1.0,
        "loadavg_before": 0.1, "loadavg_after": 0.2, "missing_tools": ["etcd"], "absent_modules": [],
        "machine": {"cores": 2, "cpu_model": "cpu", "memory": "1 GiB", "kernel": "k", "python": "3", "nginx": "n",
                    "wrk": "w", "etcd": "e", "uvloop": "no", "httptools": "no"},
    }  # fmt: skip
    md = markdown(result, [sec])
    assert "| Case | rps | 20 req/s | 40 ref | 0.50x | >= 0.45 (ratio) | yes |" in md
    assert "Missing tools (cases skipped): etcd" in md and "| target | rps |" in md and "a note" in md
    text = json.dumps(json_safe({"x": math.nan, "f": sec.to_json()}), allow_nan=False)
    assert json.loads(text)["x"] is None


def test_installed_lines_prefer_the_workers(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(
        "2026-01-01 10:00:00,100 INFO gwadm.proxy.sync: installed config revision 5\n"
        "2026-01-01 10:00:00,102 INFO gwadm.proxy.worker[0]: worker 0: installed config revision 5\n"
        "2026-01-01 10:00:00,105 INFO gwadm.proxy.worker[1]: worker 1: installed config revision 5\n"
    )
    seen = installed_times(log)
    assert list(seen) == [5] and len(seen[5]) == 2 and round(seen[5][1] - seen[5][0], 3) == 0.003
    log.write_text("2026-01-01 10:00:00,100 INFO gwadm.proxy.sync: installed config revision 7\n")
    assert list(installed_times(log)) == [7]
