"""Fleet scale: what N subscribers cost a 3-node control plane, per sync mode, and through relays.

A real 3-node cluster (fsync on) on loopback; the fleet is ONE separate process
(bench/fleet_sim.py) of N subscribers that speak the real protocol and ack every config frame, but
build no runtimes (not full proxies). Subscribers spread over the 3 nodes (or over 2 relays,
`gwadm relay run`, for the relay row) and over 8 loopback source addresses. Per scenario
(N x mode):

* the fleet runs in ``FLEET_PROCS`` processes on uvloop; ``fleet_busy_pct`` (its CPU over the
  change loop, per process) near 100 would mean the simulator, not the CP, sets the latency, and
  ``idle_http_requests_per_s`` below N (pull) that it polls less than it should;
* connect: time until all N have the head revision;
* CP memory per subscriber: VmRSS of the 3 node processes, after the fleet connected (and 2 s of
  settling) minus before it connected, / N;
* CP CPU idle: utime+stime of the 3 nodes over ``idle`` seconds without changes, in % of one
  core (push: status frames every 3 s and ping/pong every 2 s per subscriber; hybrid adds one HTTP
  check per subscriber every 30 s; pull: one long-poll cycle per subscriber per second);
* one-route change: ``changes`` sequential ``PUT /v1/routes/bench`` on the leader; for each, from
  the moment the PUT returned (committed) to the moment the LAST subscriber had it (its own wall
  clock, same machine): p50/p99 of "all acked" over the changes, and of each subscriber's delay;
  also p99 since the PUT was *sent* (an upper bound: it adds the commit itself; "returned" can
  flatter, as the leader fans a change out in the same loop that then answers the PUT);
  bytes the fleet received per change (payload: websocket messages or HTTP bodies, idle traffic
  during the window included), and CP CPU per change;
* reconnect storm (push rows): a follower is SIGKILLed and at the same moment every subscriber's
  connection is closed; time until all N are connected again (a status frame on the new stream)
  at the head; meanwhile one admin writer PUTs every 20 ms: its p99 against the same writer
  before the storm.

This is a benchmark: it prints figures, never asserts. ``python bench/fleet.py [--quick]
[--sizes 10,100,1000] [--changes 20] [--idle 5] [--json]`` runs it alone; ``make bench`` runs it as
the ``fleet`` case (bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Figure, Section, latency_summary  # noqa: E402
from bench.procs import busy_pct, tree_cpu  # noqa: E402
from tests.support.cluster import Cluster, NodeProc  # noqa: E402
from tests.support.http import request  # noqa: E402
from tests.support.relay import RelayProc  # noqa: E402

NAME = "fleet"
TOOLS: tuple[str, ...] = ()
MODES = ("push", "hybrid", "pull")
FLEET_PROCS = 2  # simulator processes (bench/fleet_sim.py); one could not keep up with 1,000 subscribers
TARGETS = {"p99_ms": 100.0, "kb_per_sub": 50.0, "storm_s": 10.0, "pull_vs_push": 2.0}


def rss_kb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class FleetProc:
    """The simulated fleet: ``procs`` bench/fleet_sim.py children, each with a slice of the N
    subscribers, driven over stdin/stdout JSON lines; answers are merged as if from one fleet."""

    def __init__(self, cfg: dict[str, Any], log: Path, procs: int = 1) -> None:
        n = int(cfg["n"])
        procs = max(1, min(procs, n))
        self.procs: list[subprocess.Popen[str]] = []
        for k in range(procs):
            first, last = n * k // procs, n * (k + 1) // procs
            part = dict(cfg, first=first, n=last - first)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_sim", json.dumps(part)], cwd=ROOT, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, start_new_session=True,
            ))  # fmt: skip
        self.ready = [self._read(p, 60) for p in self.procs]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(tree_cpu(pid)() for pid in self.pids)

    @staticmethod
    def _read(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"fleet process did not answer within {timeout:g} s")
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet process exited ({proc.poll()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, cmd: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        for p in self.procs:  # every part gets the command before any answer is awaited
            assert p.stdin is not None
            p.stdin.write(json.dumps(cmd) + "\n")
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        answers = [self._read(p, max(0.1, deadline - time.monotonic())) for p in self.procs]
        return merge_answers(answers)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def merge_answers(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One fleet's answer from its parts': times concatenated in subscriber order, counts summed,
    the storm's settle time the slowest part's."""
    out: dict[str, Any] = {}
    for a in answers:
        for k, v in a.items():
            if k == "seconds":
                out[k] = max(out.get(k, 0.0), v)
            elif isinstance(v, list):
                out[k] = out.get(k, []) + v
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


@dataclass
class Rig:
    base: Path
    log: Any
    cluster: Cluster = field(init=False)
    relays: list[RelayProc] = field(default_factory=list)
    version: int = 0

    def __post_init__(self) -> None:
        (self.base / "cp").mkdir(parents=True)
        self.cluster = Cluster(self.base / "cp")
        self.token_file = self.base / "proxy.token"
        self.token_file.write_text(self.cluster.proxy_token)
        self.cluster.start_all()
        self.cluster.wait_ready()
        self.put("upstreams", "u1", {"targets": [{"host": "127.0.0.1", "port": 9}]})
        self.change()

    def leader(self) -> NodeProc:
        """The leader, asking wait_ready (which watches it hold its term for a while) only when
        the last known one no longer says it leads."""
        known: NodeProc | None = getattr(self, "_leader", None)
        if known is None or not known.alive or self.cluster.leader() is not known:
            known = self._leader = self.cluster.wait_ready()
        return known

    def put(self, kind: str, rid: str, body: dict[str, Any], node: NodeProc | None = None) -> int:
        r = self.cluster.api(node or self.leader(), "PUT", f"/v1/{kind}/{rid}", body)
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {kind}/{rid}: {r}")
        return int(r.json()["revision"])

    def change(self) -> tuple[int, float, float]:
        """One one-route change; (revision, wall time the PUT returned, wall time it was sent)."""
        self.version += 1
        node = self.leader()
        sent = time.time()
        rev = self.put("routes", "bench", {"paths": [f"/bench/v{self.version}"], "upstream": "u1"}, node)
        return rev, time.time(), sent

    def head(self) -> int:
        st = self.cluster.status(self.leader())
        return int(st["revision"]) if st else 0

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]

    def rss(self) -> float:
        return sum(rss_kb(p) for p in self.pids())

    def cpu(self) -> float:
        return sum(tree_cpu(p)() for p in self.pids())

    def start_relays(self, count: int) -> list[str]:
        if not self.relays:
            for i in range(count):
                r = RelayProc(f"relay{i + 1}", [n.url for n in self.cluster.nodes], self.token_file,
                              self.base / f"relay{i + 1}", extra_args=["--sync", "push"])  # fmt: skip
                r.start()
                self.relays.append(r)
        return [r.url for r in self.relays]

    def stop(self) -> None:
        for r in self.relays:
            r.stop()
        self.cluster.stop_all()


class AdminWriter:
    """PUTs every ``interval`` s on a thread, recording latencies (ms) and failures."""

    def __init__(self, rig: Rig, nodes: list[NodeProc], interval: float = 0.02) -> None:
        self.rig, self.nodes, self.interval = rig, nodes, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c, i = self.rig.cluster, 0
        while not self._stop.is_set():
            i += 1
            node = self.nodes[i % len(self.nodes)]
            t0 = time.perf_counter()
            try:
                r = request("PUT", f"{node.url}/v1/upstreams/w{i % 10}", token=c.token, timeout=5,
                            json_body={"targets": [{"host": "127.0.0.1", "port": 10000 + i % 1000}]})  # fmt: skip
                ok = r.status in (200, 201)
            except OSError:
                ok = False
            if ok:
                self.latencies.append((time.perf_counter() - t0) * 1000)
            else:
                self.failures += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> AdminWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def scenario(rig: Rig, n: int, mode: str, s: dict[str, Any], *, relays: int = 0, storm: bool = False) -> dict[str, Any]:
    label = f"{mode} N={n}" + (f" via {relays} relays" if relays else "")
    rig.log(f"fleet: {label}")
    urls = rig.start_relays(relays) if relays else [nd.url for nd in rig.cluster.nodes]
    time.sleep(1.0)
    rss0 = rig.rss()
    cfg = {"urls": urls, "token": rig.cluster.proxy_token, "mode": mode, "n": n, "seed": 7, "poll_wait": 1.0,
           "check_interval": 30.0, "heartbeat": 2.0}  # fmt: skip
    procs = int(s.get("fleet_procs", FLEET_PROCS))
    t0 = time.monotonic()
    fleet = FleetProc(cfg, rig.base / f"fleet-{mode}-{n}-{relays}.log", procs)
    row: dict[str, Any] = {"target": label, "mode": mode, "n": n, "relays": relays, "fleet_procs": len(fleet.procs),
                           "fleet_loop": fleet.ready[0].get("loop", "asyncio")}  # fmt: skip
    try:
        got = fleet.ask({"cmd": "wait", "revision": rig.head(), "timeout": 120}, 130)
        row["connect_s"] = round(time.monotonic() - t0, 2)
        row["not_connected"] = got["missing"]
        time.sleep(2.0)
        row["cp_kb_per_sub"] = round((rig.rss() - rss0) / n, 1)
        c0, w0, r0 = rig.cpu(), time.monotonic(), fleet.ask({"cmd": "bytes"})["http_requests"]
        time.sleep(s["idle"])
        # Pull: a fleet that cannot keep up polls less than N/s and flatters the CP's cost.
        row["idle_http_requests_per_s"] = round((fleet.ask({"cmd": "bytes"})["http_requests"] - r0) / s["idle"])
        row["cp_idle_cpu_pct"] = round((rig.cpu() - c0) / (time.monotonic() - w0) * 100, 2)
        row["cp_idle_us_per_sub_s"] = round((rig.cpu() - c0) / (time.monotonic() - w0) / n * 1e6, 1)
        b0, c0, f0, w0 = fleet.ask({"cmd": "bytes"})["bytes"], rig.cpu(), fleet.cpu(), time.monotonic()
        all_acked, each, since_sent = [], [], []
        for _ in range(s["changes"]):
            rev, committed, sent = rig.change()
            res = fleet.ask({"cmd": "wait", "revision": rev, "timeout": 30}, 40)
            if res["missing"] or not res["times"]:
                row["missed_changes"] = row.get("missed_changes", 0) + 1
                continue
            all_acked.append((max(res["times"]) - committed) * 1000)
            since_sent.append((max(res["times"]) - sent) * 1000)
            each += [(t - committed) * 1000 for t in res["times"]]
        row["cp_cpu_ms_per_change"] = round((rig.cpu() - c0) / s["changes"] * 1000, 2)
        # The fleet is one Python process: its own CPU per change says how much of the latency is it.
        fleet_cpu, wall = fleet.cpu() - f0, time.monotonic() - w0
        row["fleet_cpu_ms_per_change"] = round(fleet_cpu / s["changes"] * 1000, 2)
        # Near 100 %: the simulator, not the CP, sets the pace (its acks and timestamps lag).
        row["fleet_busy_pct"] = round(fleet_cpu / wall / len(fleet.procs) * 100, 1)
        row["loadavg"] = round(os.getloadavg()[0], 1)
        row["bytes_per_change"] = round((fleet.ask({"cmd": "bytes"})["bytes"] - b0) / s["changes"])
        row["bytes_per_change_per_sub"] = round(row["bytes_per_change"] / n, 1)
        a, e = latency_summary(all_acked), latency_summary(each)
        row["all_acked_p50_ms"], row["all_acked_p99_ms"] = round(a["p50"], 1), round(a["p99"], 1)
        row["each_p50_ms"], row["each_p99_ms"] = round(e["p50"], 1), round(e["p99"], 1)
        row["all_acked_p99_ms_since_sent"] = round(latency_summary(since_sent)["p99"], 1)
        if relays:
            row["relay_kb"] = round(sum(rss_kb(r.proc.pid) for r in rig.relays if r.proc) / relays)
        if storm:
            row.update(reconnect_storm(rig, fleet))
    finally:
        fleet.stop()
    rig.log(f"fleet: {label}: {row}")
    return row


def reconnect_storm(rig: Rig, fleet: FleetProc) -> dict[str, Any]:
    leader = rig.leader()
    victim = next(nd for nd in rig.cluster.nodes if nd is not leader and nd.alive)
    survivors = [nd for nd in rig.cluster.nodes if nd is not victim]  # writes go to both, followers forward
    with AdminWriter(rig, survivors) as before:
        time.sleep(2.0)
    with AdminWriter(rig, survivors) as during:
        rig.cluster.kill(victim)
        res = fleet.ask({"cmd": "storm", "revision": rig.head(), "timeout": 60}, 70)
    rig.cluster.start(victim)
    rig.cluster.wait_ready()
    b, d = latency_summary(before.latencies), latency_summary(during.latencies)
    return {
        "storm_settle_s": round(res["seconds"], 2), "storm_not_synced": res["missing"],
        "admin_p99_ms_before": round(b["p99"], 1), "admin_p99_ms_storm": round(d["p99"], 1),
        "admin_writes_storm": len(during.latencies), "admin_failed_storm": during.failures,
    }  # fmt: skip


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sizes": [10, 100], "changes": 5, "idle": 2.0, "relay_n": 100}
    return {"sizes": [10, 100, 1000], "changes": 20, "idle": 5.0, "relay_n": 1000}


def measure(base: Path, s: dict[str, Any], log: Any, started: Any = None) -> list[dict[str, Any]]:
    nofile = raise_nofile()
    log(f"fleet: RLIMIT_NOFILE {nofile}, machine {busy_pct(1.0)} % busy before the start")
    rig = Rig(base, log)
    if started is not None:
        started.add(rig.stop)
    rows = []
    try:
        for n in s["sizes"]:
            for mode in MODES:
                rows.append(scenario(rig, n, mode, s, storm=mode == "push" and n == max(s["sizes"])))
        rows.append(scenario(rig, s["relay_n"], "push", s, relays=2))
    finally:
        rig.stop()
    return rows


def figures(rows: list[dict[str, Any]]) -> list[Figure]:
    def row(mode: str, relays: int = 0) -> dict[str, Any]:
        big = max(r["n"] for r in rows if r["mode"] == mode and r["relays"] == relays)
        return next(r for r in rows if r["mode"] == mode and r["n"] == big and r["relays"] == relays)

    push, pull, relayed = row("push"), row("pull"), row("push", 2)
    n = push["n"]
    return [
        Figure(f"commit -> all {n} acked, p99 (push, direct)", "ms", push["all_acked_p99_ms"],
               target=f"<= {TARGETS['p99_ms']:g} ms", target_on="value",
               note=f"p50 {push['all_acked_p50_ms']} ms; each subscriber p99 {push['each_p99_ms']} ms; "
                    f"since the PUT was sent p99 {push.get('all_acked_p99_ms_since_sent')} ms; "
                    f"simulator {push.get('fleet_busy_pct')} % busy"),
        Figure(f"CP memory per idle subscriber (push, {n})", "KB", push["cp_kb_per_sub"],
               target=f"<= {TARGETS['kb_per_sub']:g} KB", target_on="value", note="VmRSS of 3 nodes, delta / N"),
        Figure(f"reconnect storm of {n}: all synced again", "s", push.get("storm_settle_s", float("nan")),
               target=f"<= {TARGETS['storm_s']:g} s", target_on="value",
               note=f"{push.get('storm_not_synced')} not synced; {push.get('admin_failed_storm')} admin writes failed"),
        Figure("admin write p99 during the storm", "ms", push.get("admin_p99_ms_storm", float("nan")),
               reference=push.get("admin_p99_ms_before", float("nan")), reference_name="same writer before",
               note=f"{push.get('admin_writes_storm')} writes answered during the storm"),
        Figure(f"CP CPU idle, pull (1 s long-poll) vs push, {pull['n']}", "% core", pull["cp_idle_cpu_pct"],
               reference=push["cp_idle_cpu_pct"], reference_name="push", target=f"<= {TARGETS['pull_vs_push']:g}",
               target_on="ratio"),
        Figure(f"CP CPU per change, pull vs push, {pull['n']}", "ms", pull["cp_cpu_ms_per_change"],
               reference=push["cp_cpu_ms_per_change"], reference_name="push"),
        Figure(f"commit -> all {relayed['n']} acked via 2 relays, p99", "ms", relayed["all_acked_p99_ms"],
               reference=push["all_acked_p99_ms"], reference_name="direct",
               note=f"CP memory per subscriber {relayed['cp_kb_per_sub']} KB (the CP sees 2 relays)"),
    ]  # fmt: skip


METHOD = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def run(ctx: Any) -> list[Section]:
    """The ``fleet`` case of bench/run.py."""
    s = settings(ctx.quick)
    (ctx.base / "fleet").mkdir()
    rows = measure(ctx.base / "fleet", s, ctx.log, ctx.started)
    return [Section("Fleet: sync modes, relays, reconnect storm", METHOD, figures(rows), rows)]


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["target", "connect_s", "cp_kb_per_sub", "cp_idle_cpu_pct", "cp_idle_us_per_sub_s", "all_acked_p50_ms",
            "all_acked_p99_ms", "all_acked_p99_ms_since_sent", "each_p99_ms", "bytes_per_change_per_sub", "cp_cpu_ms_per_change",
            "fleet_cpu_ms_per_change", "fleet_busy_pct", "idle_http_requests_per_s", "storm_settle_s", "admin_p99_ms_before", "admin_p99_ms_storm",
            "loadavg"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="")
    ap.add_argument("--changes", type=int, default=0)
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--fleet-procs", type=int, default=FLEET_PROCS, help="simulator processes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    s = settings(args.quick)
    if args.sizes:
        s["sizes"] = [int(x) for x in args.sizes.split(",")]
        s["relay_n"] = max(s["sizes"])
    s["changes"] = args.changes or s["changes"]
    s["idle"] = args.idle or s["idle"]
    s["fleet_procs"] = args.fleet_procs
    import tempfile

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="gwadm-fleet-") as tmp:
        rows = measure(Path(tmp), s, log)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows))
        for f in figures(rows):
            print(f"- {f.name}: {f.value} {f.unit} (ref {f.reference} {f.reference_name}) target {f.target} "
                  f"met={f.met} {f.note}")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
