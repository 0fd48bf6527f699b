"""The partition machinery, proved inside a real private namespace (``gwadm chaos selftest``).

Skipped with a reason where namespaces cannot be made, except under CI=true where that is a failure
(docs/architecture.md §6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chaos.net import namespace_unavailable_reason

pytestmark = pytest.mark.timeout(120)


def require_namespace() -> None:
    reason = namespace_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"chaos tests cannot run on this CI machine: {reason}")
    pytest.skip(reason)


def test_partition_blocks_exactly_the_cut_pairs_and_the_probe_catches_wrong_rules() -> None:
    require_namespace()
    done = subprocess.run([sys.executable, "-m", "cli", "chaos", "selftest"], capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    a, b = r["cut_pair"]
    assert r["healthy_blocked"] == []
    assert r["cut_blocked"] == sorted([[a, b], [b, a]])
    # The trap: an unbound socket leaves from 127.0.0.1 and slips past the a<->b rules.
    assert r["unbound_to_cut_member_connects"] is True
    assert r["wrong_expectation_detected"] is True
    assert "not blocked" in r["wrong_expectation_message"]
    assert r["loss_rules"] == 2
    # 50% loss each way: some probes through, some not (all-or-nothing has probability < 1e-6).
    assert 0 < r["loss50_probes_ok"] < r["loss50_probes"]
    assert r["loss50_other_pair_ok"] == 20
    assert r["healed_blocked"] == []


def test_chaos_commands_refuse_to_touch_the_host_network() -> None:
    from chaos.net import NetError, setup_namespace

    env_before = os.environ.pop("GWADM_CHAOS_NETNS", None)
    try:
        with pytest.raises(NetError, match="private namespace"):
            setup_namespace()
    finally:
        if env_before is not None:
            os.environ["GWADM_CHAOS_NETNS"] = env_before
