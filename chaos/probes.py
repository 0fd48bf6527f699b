"""Targeted fault probes: one precise sequence of faults and requests each, on real processes in the
run's private namespace, reporting what was observed (the tests in tests/chaos assert on it).

``python -m chaos.probes zombie-write|link-heal|partial-cut --out DIR`` (re-executes itself under ``unshare`` when it is
not in a private namespace yet) prints one JSON object.

zombie-write (issue 11, item 2): cut one follower off, send it PUTs of one key while it still
believes it has a leader, let them be answered with errors, acknowledge a newer value through the
majority, heal, and watch the key: an old value must never come back. The history is written in
the chaos format and judged by the ``no_zombie_writes`` and ``linearizable`` checkers too.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaos.controller import ADMIN_PORT, Controller, Member
from chaos.history import HistoryWriter, read_history
from chaos.net import Net, ProbeListeners, in_private_netns, setup_namespace, unshare_argv, verify_partition
from chaos.workload import http_call, register_spec, register_value

KEY = "zombie"


def _put(ctrl: Controller, hist: HistoryWriter, process: int, node: Member, value: str,
         timeout: float) -> dict[str, Any]:
    hist.record("invoke", process=process, f="write", key=KEY, value=value, node=node.name)
    try:
        status, body = http_call(node.addr, ADMIN_PORT, "PUT", f"/v1/consumers/{KEY}", token=ctrl.admin_token,
                                 body=register_spec(value), timeout=timeout)
    except OSError as exc:
        hist.record("info", process=process, f="write", key=KEY, value=value, node=node.name,
                    error=f"{type(exc).__name__}: {exc}")
        return {"value": value, "status": None, "error": str(exc)}
    if 200 <= status < 300:
        hist.record("ok", process=process, f="write", key=KEY, value=value, node=node.name)
        return {"value": value, "status": status}
    err = body.get("error", {}) if isinstance(body, dict) else {}
    definite = 400 <= status < 500 or err.get("code") == "no_quorum"
    hist.record("fail" if definite else "info", process=process, f="write", key=KEY, value=value,
                node=node.name, error=f"HTTP {status} {err.get('code', '')}: {err.get('message', '')}")
    return {"value": value, "status": status, "code": err.get("code")}


def _read(ctrl: Controller, hist: HistoryWriter, process: int, node: Member) -> str | None:
    hist.record("invoke", process=process, f="read", key=KEY, value=None, node=node.name)
    try:
        status, body = http_call(node.addr, ADMIN_PORT, "GET", f"/v1/consumers/{KEY}", token=ctrl.admin_token,
                                 timeout=3.0)
    except OSError as exc:
        hist.record("fail", process=process, f="read", key=KEY, value=None, node=node.name, error=str(exc))
        return None
    if status != 200:
        hist.record("fail", process=process, f="read", key=KEY, value=None, node=node.name, error=f"HTTP {status}")
        return None
    value = register_value(body)
    hist.record("ok", process=process, f="read", key=KEY, value=value, node=node.name)
    return value


def zombie_write(out: Path, cut_seconds: float = 7.0, watch_seconds: float = 12.0) -> dict[str, Any]:
    from chaos.checkers import check_linearizable, check_no_zombie_writes

    out.mkdir(parents=True, exist_ok=True)
    (out / "history.jsonl").unlink(missing_ok=True)
    ctrl = Controller(out / "members", 3, 0)
    net = Net()
    addresses = [n.addr for n in ctrl.nodes]
    listeners = ProbeListeners(addresses)
    result: dict[str, Any] = {}
    start = time.monotonic()
    try:
        net.heal()
        ctrl.start_all()
        leader = ctrl.wait_leader()
        follower = next(n for n in ctrl.nodes if n is not leader)
        others = [n for n in ctrl.nodes if n is not follower]
        with HistoryWriter(out / "history.jsonl", clock=lambda: time.monotonic() - start) as hist:
            first = _put(ctrl, hist, 0, leader, "zombie-v0", 10.0)
            if first["status"] not in (200, 201):
                raise RuntimeError(f"the first write failed: {first}")
            # Writers hammer the follower before and through the cut, so that some PUTs are in
            # flight when it happens: accepted while the follower still has a leader, forwarded
            # into the dead link. Each writer stops at its first error answer.
            answers: list[dict[str, Any]] = []
            lock = threading.Lock()

            def writer(w: int) -> None:
                for n in range(10_000):
                    answer = _put(ctrl, hist, 10 + w, follower, f"zombie-old-{w}-{n}", 15.0)
                    if answer["status"] not in (200, 201):
                        with lock:
                            answers.append(answer)
                        return

            with ThreadPoolExecutor(max_workers=8) as pool:
                for w in range(8):
                    pool.submit(writer, w)
                time.sleep(0.5)
                net.cut([(follower.addr, o.addr) for o in others])
                cut_at = time.monotonic()
            newer = _put(ctrl, hist, 1, leader, "zombie-new", 10.0)  # after every old PUT was answered
            verify_partition(net, addresses)  # after the PUTs: proving it takes time
            time.sleep(max(0.0, cut_seconds - (time.monotonic() - cut_at)))
            net.heal()
            verify_partition(net, addresses)
            healed = time.monotonic()
            seen: list[str | None] = []
            until = healed + watch_seconds
            while time.monotonic() < until:
                for node in ctrl.nodes:
                    seen.append(_read(ctrl, hist, 2, node))
                time.sleep(0.2)
        history = read_history(out / "history.jsonl")
        zombies = check_no_zombie_writes(history)
        linear = check_linearizable(history)
        result = {
            "follower": follower.name, "leader": leader.name, "old_answers": answers, "newer": newer,
            "reads_after_heal": len(seen), "values_after_heal": sorted({v for v in seen if v is not None}),
            "old_values_after_heal": sorted({v for v in seen if v is not None and v.startswith("zombie-old-")}),
            "checkers": {c.name: {"ok": c.ok, "problems": c.problems[:5], "figures": c.figures}
                         for c in (zombies, linear)},
        }  # fmt: skip
    finally:
        listeners.close()
        net.heal()
        ctrl.close()
    return result


def _links_down(ctrl: Controller) -> dict[str, list[str] | None]:
    """Each node's ``links_down`` from its /v1/status (None: the node did not answer)."""
    out: dict[str, list[str] | None] = {}
    for node in ctrl.nodes:
        st = ctrl.node_status(node, timeout=0.5)
        out[node.name] = list(st.get("links_down", [])) if st else None
    return out


def link_heal(out: Path, cut_seconds: float = 10.0) -> dict[str, Any]:
    """Cut one follower off for ``cut_seconds`` (long enough for the kernel's SYN backoff to exceed
    several seconds), heal, and time until every node reports every Raft link up; then isolate the
    leader and time the first write acknowledged by the two others (issue 11, item 1: a stuck link
    had turned this into a ~25 s outage)."""
    out.mkdir(parents=True, exist_ok=True)
    ctrl = Controller(out / "members", 3, 0)
    net = Net()
    addresses = [n.addr for n in ctrl.nodes]
    listeners = ProbeListeners(addresses)
    try:
        net.heal()
        ctrl.start_all()
        leader = ctrl.wait_leader()
        follower = next(n for n in ctrl.nodes if n is not leader)
        others = [n for n in ctrl.nodes if n is not follower]
        net.cut([(follower.addr, o.addr) for o in others])
        verify_partition(net, addresses)
        time.sleep(2.0)
        during = _links_down(ctrl)
        counters = {n.name: (ctrl.node_status(n, timeout=0.5) or {}).get("link_counters") for n in ctrl.nodes}
        time.sleep(max(0.0, cut_seconds - 2.0))
        net.heal()
        healed = time.monotonic()
        links_up_after = None
        samples: list[dict[str, Any]] = []
        while time.monotonic() - healed < 20.0:
            sample = _links_down(ctrl)
            samples.append({"t": round(time.monotonic() - healed, 3), **sample})
            if all(v == [] for v in sample.values()):
                links_up_after = round(time.monotonic() - healed, 3)
                break
            time.sleep(0.1)
        verify_partition(net, addresses)
        time.sleep(1.0)  # settle: the healed follower catches up
        leader = ctrl.wait_leader()
        rest = [n for n in ctrl.nodes if n is not leader]
        net.cut([(leader.addr, o.addr) for o in rest])
        isolated = time.monotonic()
        first_write_after = None
        attempts = 0
        with HistoryWriter(out / "history.jsonl", clock=lambda: time.monotonic() - isolated) as hist:
            while time.monotonic() - isolated < 30.0:
                attempts += 1
                answer = _put(ctrl, hist, 0, rest[attempts % 2], f"linkheal-{attempts:04d}", 2.0)
                if answer["status"] in (200, 201):
                    first_write_after = round(time.monotonic() - isolated, 3)
                    break
                time.sleep(0.05)
        return {
            "cut_follower": follower.name, "links_down_during_cut": during, "counters_during_cut": counters, "links_up_after_heal_s": links_up_after,
            "samples": samples[-3:], "isolated_leader": leader.name,
            "first_write_after_isolation_s": first_write_after, "write_attempts": attempts,
        }  # fmt: skip
    finally:
        listeners.close()
        net.heal()
        ctrl.close()


def partial_cut(out: Path, cut_seconds: float = 6.0, pre_vote: bool = True) -> dict[str, Any]:
    """Cut only the link between the leader and one follower (the follower still reaches the other
    follower): without pre-vote the cut follower keeps starting elections through the other one and
    deposes a healthy leader; with pre-vote the other follower, which hears from the leader, refuses
    to pre-vote and the terms stay put (issue 11, item 5)."""
    out.mkdir(parents=True, exist_ok=True)
    ctrl = Controller(out / "members", 3, 0, raft={"pre_vote": pre_vote})
    net = Net()
    addresses = [n.addr for n in ctrl.nodes]
    listeners = ProbeListeners(addresses)
    try:
        net.heal()
        ctrl.start_all()
        ctrl.wait_leader()
        time.sleep(1.0)  # past the start-up elections
        leader = ctrl.wait_leader()
        follower = next(n for n in ctrl.nodes if n is not leader)
        net.cut([(leader.addr, follower.addr)])
        verify_partition(net, addresses)
        start = time.monotonic()
        leaders: list[str] = []
        terms: set[int] = set()
        while time.monotonic() - start < cut_seconds:
            for node in ctrl.nodes:
                st = ctrl.node_status(node, timeout=0.5) or {}
                if st.get("term") is not None:
                    terms.add(int(st["term"]))
                if st.get("role") == "leader" and st.get("has_quorum") and (not leaders or leaders[-1] != node.name):
                    leaders.append(node.name)
            time.sleep(0.1)
        net.heal()
        return {"leader": leader.name, "cut_follower": follower.name, "pre_vote": pre_vote,
                "leaders_seen": leaders, "terms_seen": sorted(terms)}
    finally:
        listeners.close()
        net.heal()
        ctrl.close()


def _partial_cut_control(out: Path) -> dict[str, Any]:
    return partial_cut(out, pre_vote=False)


PROBES = {"zombie-write": zombie_write, "link-heal": link_heal, "partial-cut": partial_cut,
          "partial-cut-without-pre-vote": _partial_cut_control}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.probes")
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not in_private_netns():
        import subprocess

        return subprocess.call(unshare_argv([sys.executable, "-m", "chaos.probes", *(argv or sys.argv[1:])]))
    setup_namespace()
    print(json.dumps(PROBES[args.probe](Path(args.out)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
