"""Self-test of the partition machinery, run inside the private namespace (`gwadm chaos selftest`).

It returns what it observed rather than asserting, so the test suite (tests/chaos/test_net.py)
can check each figure and show them all when one is off.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaos.net import (
    Net,
    NetError,
    ProbeListeners,
    probe,
    probe_matrix,
    setup_namespace,
    verify_partition,
)

ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.21"]


def partition_selftest() -> dict[str, Any]:
    setup_namespace()
    net = Net()
    listeners = ProbeListeners(ADDRS)
    result: dict[str, Any] = {}
    try:
        net.heal()
        result["healthy_blocked"] = sorted([x.src, x.dst] for x in probe_matrix(ADDRS))
        a, b = ADDRS[0], ADDRS[1]
        net.cut([(a, b)])
        result["cut_pair"] = [a, b]
        result["cut_blocked"] = sorted([x.src, x.dst] for x in verify_partition(net, ADDRS))
        # The trap of docs/architecture.md §6: an unbound socket leaves from 127.0.0.1, which no rule names.
        result["unbound_to_cut_member_connects"] = probe(None, b)  # unbound: the kernel picks 127.0.0.1
        # A wrong expectation must be caught: claim a cut that is not there.
        net.cut_pairs.add(frozenset((ADDRS[2], ADDRS[3])))
        try:
            verify_partition(net, ADDRS)
            result["wrong_expectation_detected"] = False
        except NetError as exc:
            result["wrong_expectation_detected"] = True
            result["wrong_expectation_message"] = str(exc)
        net.heal()
        net.loss([(a, b)], 50)
        result["loss_rules"] = net.rules_text().count("numgen random mod 100")
        # 50% loss each way: a probe needs its SYN and SYN-ACK through (about 1 in 4 within 0.3 s).
        with ThreadPoolExecutor(max_workers=16) as pool:
            result["loss50_probes_ok"] = sum(pool.map(lambda _: probe(a, b, timeout=0.3), range(60)))
            result["loss50_other_pair_ok"] = sum(pool.map(lambda _: probe(a, ADDRS[2], timeout=0.3), range(20)))
        result["loss50_probes"] = 60
        net.heal()
        result["healed_blocked"] = sorted([x.src, x.dst] for x in probe_matrix(ADDRS))
    finally:
        listeners.close()
        net.heal()
    return result
