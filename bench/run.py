"""``make bench``: run every benchmark case module and write bench/results/latest.md and .json.

    python -m bench.run [--quick] [--cases proxy,cp,...] [--out DIR] [--no-install]

A case module (listed in ``CASE_MODULES``) has ``NAME``, ``TOOLS`` (external programs it needs)
and ``run(ctx) -> list[Section]`` (``bench.common.Section``); ``ctx`` gives it a temp dir
(``base``), the run's ``settings`` (``--quick`` shrinks them), ``started`` (register a stop for
everything you start; all are stopped by PID at the end, on errors and SIGTERM too), ``shared``
(objects earlier cases left for later ones) and ``log``. A module that is not there yet is
listed as missing, not an error. Missing tools are installed with apt-get when we are root
(nginx-light or nginx, wrk, etcd-server, etcd-client); otherwise the cases that need them are
skipped and named, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Section, json_safe  # noqa: E402
from bench.procs import Started, busy_pct, install_tools, machine, missing_tools  # noqa: E402
from bench.report import markdown  # noqa: E402

CASE_MODULES = ["bench.proxy_cases", "bench.cp_cases", "bench.fleet"]

FULL: dict[str, Any] = {
    "duration": 8, "warmup": 2, "rounds": 3, "connections": 32, "changes": 50,
    "cp_rounds": 5, "cp_ops": 200, "tput_rounds": 3, "tput_seconds": 5, "writers": 32, "failovers": 5,
}  # fmt: skip
QUICK: dict[str, Any] = {
    "duration": 2, "warmup": 1, "rounds": 1, "connections": 32, "changes": 10,
    "cp_rounds": 1, "cp_ops": 50, "tput_rounds": 1, "tput_seconds": 2, "writers": 32, "failovers": 1,
}  # fmt: skip


@dataclass
class Context:
    base: Path
    quick: bool
    settings: dict[str, Any]
    started: Started = field(default_factory=Started)
    shared: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one round: a smoke run of the harness")
    ap.add_argument("--cases", default="", help="comma-separated module NAMEs (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-install", action="store_true", help="never apt-get install missing tools")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every process is stopped by PID
    ctx_log = Context(Path("."), args.quick, {}).log
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    modules, absent = [], []
    for name in CASE_MODULES:
        if importlib.util.find_spec(name) is None:
            absent.append(name)
            continue
        mod = importlib.import_module(name)
        if not wanted or mod.NAME in wanted:
            modules.append(mod)
    needed = sorted({t for m in modules for t in m.TOOLS})
    missing = missing_tools(needed) if args.no_install else install_tools(needed, ctx_log)
    started_at = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": started_at.isoformat(timespec="seconds"), "quick": args.quick,
        "settings": QUICK if args.quick else FULL, "machine": machine(),
        "machine_busy_pct_before": busy_pct(1.0), "loadavg_before": os.getloadavg()[0],
        "missing_tools": missing, "absent_modules": absent, "skipped": [], "sections": [],
    }  # fmt: skip
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="gwadm-bench-") as tmp:
        os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user when started by root
        ctx = Context(Path(tmp), args.quick, dict(result["settings"]))
        try:
            for mod in modules:
                lacking = [t for t in mod.TOOLS if t in missing]
                if lacking:
                    result["skipped"].append({"module": mod.NAME, "missing": lacking})
                    ctx.log(f"skipping {mod.NAME}: missing {', '.join(lacking)}")
                    continue
                t0 = time.monotonic()
                try:
                    got = mod.run(ctx)
                except Exception as exc:  # a broken case module must not lose the others' results
                    ctx.log(f"{mod.NAME} failed: {exc!r}")
                    got = [Section(f"{mod.NAME}", "", error=repr(exc))]
                sections.extend(got)
                ctx.log(f"{mod.NAME}: done in {time.monotonic() - t0:.0f} s")
        finally:
            ctx.started.stop_all()
    result["seconds"] = round((datetime.now(UTC) - started_at).total_seconds())
    result["loadavg_after"] = os.getloadavg()[0]
    result["sections"] = [s.to_json() for s in sections]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    (out / f"{stem}.json").write_text(json.dumps(json_safe(result), indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(result, sections))
    print(markdown(result, sections, summary_only=True))
    print(f"wrote {out / stem}.md and .json", file=sys.stderr)
    return 2 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
