"""Readiness rules, the merged status view, status snapshots and proxy traffic rates: pure, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from cli.metrics_scrape import Rates, parse, quantile, rates
from cli.status import assemble, merge_cluster_views, merge_fleet, node_readiness
from cli.view_model import config_from_status, fleet_metrics_urls, metrics_url, node_uptime, seconds_since


def member(id: str, role: str, commit: int = 5, applied: int = 5, reachable: bool = True) -> dict[str, Any]:
    return {
        "id": id, "role": role, "term": 2, "commit_index": commit, "applied_index": applied, "revision": 3,
        "has_quorum": True, "reachable": reachable, "admin_url": f"http://127.0.0.1:70{id[-1]}",
        "raft_addr": f"127.0.0.1:80{id[-1]}",
    }  # fmt: skip


def view(leader: str | None, *members: dict[str, Any]) -> dict[str, Any]:
    return {"leader": leader, "members": list(members)}


IDS = ["n1", "n2", "n3"]
HEALTHY = [member("n1", "leader"), member("n2", "follower"), member("n3", "follower")]


def test_ready_when_one_leader_all_reachable_and_caught_up() -> None:
    probes = {nid: view("n1", *HEALTHY) for nid in IDS}
    assert node_readiness(IDS, probes) == {}


def test_no_leader_yet() -> None:
    probes = {nid: view(None, *HEALTHY) for nid in IDS}
    assert node_readiness(IDS, probes) == {nid: "no leader yet" for nid in IDS}


def test_unreachable_node_is_named_with_the_reason() -> None:
    probes: dict[str, Any] = {
        "n1": view("n1", *HEALTHY),
        "n2": view("n1", *HEALTHY),
        "n3": "connection refused",
    }
    assert node_readiness(IDS, probes) == {"n3": "not answering (connection refused)"}


def test_disagreeing_leaders() -> None:
    probes = {"n1": view("n1", *HEALTHY), "n2": view("n2", *HEALTHY), "n3": view("n1", *HEALTHY)}
    pending = node_readiness(IDS, probes)
    assert set(pending) == set(IDS) and "disagree" in pending["n1"]


def test_lagging_follower_and_member_unreachable_from_leader() -> None:
    lead_view = view("n1", member("n1", "leader", commit=9, applied=9), member("n2", "follower", applied=9),
                     member("n3", "follower", reachable=False))  # fmt: skip
    lagging = view("n1", member("n2", "follower", commit=7, applied=7))
    probes = {"n1": lead_view, "n2": lagging, "n3": view("n1", member("n3", "follower", applied=9))}
    assert node_readiness(IDS, probes) == {
        "n2": "applied 7 < leader commit 9",
        "n3": "not reachable from the leader n1",
    }


def test_leader_not_answering() -> None:
    probes: dict[str, Any] = {"n1": "timed out", "n2": view("n1", *HEALTHY), "n3": view("n1", *HEALTHY)}
    assert node_readiness(IDS, probes) == {"n1": "not answering (timed out)"}


def test_merge_prefers_each_nodes_own_view_and_marks_unreachable() -> None:
    n2_self = member("n2", "follower", commit=4, applied=4)
    probes: dict[str, Any] = {
        "n1": view("n1", *HEALTHY),
        "n2": view("n1", member("n1", "leader"), n2_self),
        "n3": "connection refused",
    }
    nodes = [{"id": nid, "admin_url": f"http://127.0.0.1:70{nid[-1]}", "pid": 10} for nid in IDS]
    merged = merge_cluster_views(nodes, probes)
    assert merged["leader"] == "n1"
    rows = {r["id"]: r for r in merged["nodes"]}
    assert rows["n2"]["applied_index"] == 4  # its own view, not the leader's
    assert rows["n1"]["role"] == "leader" and rows["n1"]["reachable"] is True and rows["n1"]["pid"] == 10
    assert rows["n3"]["reachable"] is False and rows["n3"]["role"] == "unreachable"
    assert rows["n3"]["error"] == "connection refused"


def test_merge_learns_members_from_views_when_none_are_known() -> None:
    merged = merge_cluster_views([], {"n1": view("n1", *HEALTHY)})
    assert [r["id"] for r in merged["nodes"]] == IDS
    assert [r["reachable"] for r in merged["nodes"]] == [True, False, False]


# ---- the live view: snapshot assembly (pure) ------------------------------------------------------

NODES = [{"id": nid, "admin_url": f"http://127.0.0.1:70{nid[-1]}"} for nid in IDS]


def own(
    id: str, role: str, commit: int = 40, applied: int = 40, revision: int = 12, **kw: Any
) -> dict[str, Any]:
    return {**member(id, role, commit, applied), "revision": revision, "leader": "n1", **kw}


def test_assemble_lag_is_leader_commit_minus_applied_and_down_nodes_have_none() -> None:
    probes: dict[str, Any] = {
        "n1": own("n1", "leader"),
        "n2": own("n2", "follower", 38, 37),
        "n3": "timed out",
    }
    snap = assemble(now=5.0, nodes=NODES, probes=probes, uptimes={"n1": (90.0, False), "n2": (4.0, True)})
    rows = {r["id"]: r for r in snap["nodes"]}
    assert (
        snap["leader"] == "n1" and snap["last_leader"] == "n1" and snap["term"] == 2 and snap["time"] == 5.0
    )
    assert (rows["n1"]["lag"], rows["n2"]["lag"], rows["n3"]["lag"]) == (0, 3, None)
    assert (
        rows["n3"]["reachable"] is False and rows["n3"]["error"] == "timed out" and rows["n3"]["role"] is None
    )
    assert (rows["n1"]["uptime"], rows["n1"]["uptime_observed"]) == (90.0, False)
    assert (rows["n2"]["uptime"], rows["n2"]["uptime_observed"]) == (4.0, True)
    assert snap["revision"] == 12


def test_assemble_leader_is_who_says_so_or_what_live_nodes_believe_but_never_a_dead_node() -> None:
    two_leaders: dict[str, Any] = {
        "n1": own("n1", "leader", term=2),
        "n2": own("n2", "leader", term=3),
        "n3": "refused",
    }
    assert assemble(now=0, nodes=NODES, probes=two_leaders)["leader"] == "n2"  # the newer term
    believers: dict[str, Any] = {
        "n1": "refused",
        "n2": own("n2", "follower", leader="n3"),
        "n3": own("n3", "follower", leader="n3"),
    }
    assert assemble(now=0, nodes=NODES, probes=believers)["leader"] == "n3"
    stale: dict[str, Any] = {
        "n1": "refused",
        "n2": own("n2", "follower", leader="n1"),
        "n3": own("n3", "candidate", leader=None),
    }
    snap = assemble(now=0, nodes=NODES, probes=stale, last_leader="n1")
    assert snap["leader"] is None and snap["last_leader"] == "n1"


def test_assemble_when_nothing_answers() -> None:
    snap = assemble(now=0, nodes=NODES, probes={nid: "connection refused" for nid in IDS})
    assert snap["leader"] is None and snap["term"] is None and snap["revision"] is None
    assert all(not r["reachable"] and r["lag"] is None for r in snap["nodes"])
    assert snap["proxies"] == [] and snap["config"] is None


def test_assemble_proxies_local_status_with_fleet_errors_lag_and_traffic() -> None:
    probes: dict[str, Any] = {"n1": own("n1", "leader", revision=12), "n2": own("n2", "follower"), "n3": "x"}
    local = [
        {"id": "p1", "status_url": "http://s1", "reachable": True, "mode": "cached", "revision": 9,
         "connected_cp": None, "seconds_since_sync": 14.2},
        {"id": "p2", "status_url": "http://s2", "reachable": False, "error": "connection refused"},
    ]  # fmt: skip
    fleet = {
        "p1": {"id": "p1", "connected": False, "revision": 9, "last_error": "revision 10: boom", "node": "n2"},
        "p9": {"id": "p9", "connected": True, "revision": 12, "mode": "synced", "node": "n1", "address": "10.0.0.9:80"},
    }  # fmt: skip
    snap = assemble(now=0, nodes=NODES, probes=probes, proxies=local, fleet=fleet,
                    traffic={"p1": Rates(12.5, 0.5, 0.0032), "p2": None})  # fmt: skip
    rows = {r["id"]: r for r in snap["proxies"]}
    assert list(rows) == ["p1", "p2", "p9"]
    p1 = rows["p1"]
    assert (p1["mode"], p1["lag"], p1["last_error"], p1["seconds_since_sync"]) == (
        "cached",
        3,
        "revision 10: boom",
        14.2,
    )
    assert (p1["req_s"], p1["err_s"], p1["p99"]) == (12.5, 0.5, 0.0032)
    assert rows["p2"]["reachable"] is False and rows["p2"]["lag"] is None and rows["p2"]["req_s"] is None
    p9 = rows["p9"]  # known from the registries only
    assert (p9["mode"], p9["reachable"], p9["node"], p9["connected_cp"], p9["lag"], p9["url"]) == (
        "synced", True, "n1", "n1", 0, "10.0.0.9:80")  # fmt: skip


def test_assemble_names_the_node_a_proxy_is_connected_to() -> None:
    probes: dict[str, Any] = {"n1": own("n1", "leader")}
    local = [
        {
            "id": "p1",
            "reachable": True,
            "mode": "synced",
            "revision": 12,
            "connected_cp": "http://127.0.0.1:701/",
        }
    ]
    assert assemble(now=0, nodes=NODES[:1], probes=probes, proxies=local)["proxies"][0]["node"] == "n1"


def test_merge_fleet_prefers_live_sessions_then_newer_revisions() -> None:
    a = [{"id": "p1", "connected": False, "revision": 9}, {"id": "p2", "connected": True, "revision": 3}]
    b: list[dict[str, Any]] = [
        {"id": "p1", "connected": True, "revision": 7},
        {"id": "p2", "connected": True, "revision": 4},
        {"x": 1},
    ]
    merged = merge_fleet([a, b])
    assert (merged["p1"]["revision"], merged["p2"]["revision"]) == (7, 4)
    assert merge_fleet([]) == {}


# ---- the live view: fields the server reports (started_at, counts, status_address, last_ack_at) ------


def test_node_uptime_prefers_started_at_then_the_process_then_what_the_view_saw() -> None:
    assert node_uptime(1000.0, now=1090.04, process=5.0, seen_since=1080.0) == (90.0, False)
    assert node_uptime(None, now=1090.0, process=33.33, seen_since=1080.0) == (33.3, False)  # older server
    assert node_uptime(None, now=1090.0, process=None, seen_since=1080.0) == (10.0, True)  # lower bound
    assert node_uptime(1100.0, now=1090.0, process=None, seen_since=0.0) == (0.0, False)  # clock skew
    assert node_uptime(True, now=5.0, process=None, seen_since=5.0) == (0.0, True)  # not a time
    assert seconds_since("12", 20.0) is None and seconds_since(None, 20.0) is None


def test_config_from_status_counts_in_kind_order_or_none_for_older_servers() -> None:
    status = {"revision": 12, "hash": "h1", "counts": {"plugins": 0, "zones": 4, "routes": 5, "upstreams": 2,
                                                       "consumers": 1, "bogus": "x"}}  # fmt: skip
    got = config_from_status(status)
    assert got == {"revision": 12, "hash": "h1",
                   "counts": {"upstreams": 2, "routes": 5, "consumers": 1, "plugins": 0, "zones": 4}}  # fmt: skip
    assert list(got["counts"]) == ["upstreams", "routes", "consumers", "plugins", "zones"]
    assert config_from_status({"revision": 12, "hash": "h1"}) is None  # no counts: an older server
    assert config_from_status({"revision": 12, "counts": {}}) is None
    assert config_from_status({"revision": 12, "counts": [1, 2]}) is None
    assert config_from_status(None) is None


def test_metrics_url_of_a_fleet_entry() -> None:
    assert metrics_url({"status_address": "127.0.0.1:9101"}) == "http://127.0.0.1:9101"
    assert metrics_url({"status_address": "0.0.0.0:9101", "address": "10.0.0.5"}) == "http://10.0.0.5:9101"
    assert metrics_url({"status_address": "[::]:9101", "address": "fd00::5"}) == "http://[fd00::5]:9101"
    assert metrics_url({"status_address": "[::1]:9101"}) == "http://[::1]:9101"
    assert metrics_url({"status_address": "0.0.0.0:9101"}) == "http://0.0.0.0:9101"  # nothing better known
    for bad in ({}, {"status_address": None}, {"status_address": ""}, {"status_address": "host:http"},
                {"status_address": 9101}):  # fmt: skip
        assert metrics_url(bad) is None, bad
    fleet: dict[str, dict[str, Any]] = {
        "p1": {"status_address": "10.0.0.1:81"},
        "p2": {"status_address": None},
        "p3": {},
    }
    assert fleet_metrics_urls(fleet) == {"p1": "http://10.0.0.1:81"}


def test_assemble_remote_proxies_since_ack_and_traffic_from_the_fleet() -> None:
    probes: dict[str, Any] = {"n1": own("n1", "leader", revision=12)}
    fleet = {
        "p1": {"id": "p1", "connected": True, "revision": 12, "mode": "synced", "node": "n1",
               "address": "10.0.0.1", "status_address": "10.0.0.1:81", "last_ack_at": 988.0},
        "p2": {"id": "p2", "connected": False, "revision": 9, "mode": "synced", "node": "n1",
               "status_address": None, "last_ack_at": None},
        "p3": {"id": "p3", "connected": True, "revision": 12, "node": "n1"},  # an older server's entry
    }  # fmt: skip
    snap = assemble(now=1000.0, nodes=NODES[:1], probes=probes, fleet=fleet,
                    traffic={"p1": Rates(3.0, 0.0, 0.002), "p2": None})  # fmt: skip
    rows = {r["id"]: r for r in snap["proxies"]}
    p1 = rows["p1"]
    assert (p1["since_ack"], p1["sync_age"], p1["last_ack_at"], p1["status_address"]) == (
        12.0, 12.0, 988.0, "10.0.0.1:81")  # fmt: skip
    assert (p1["req_s"], p1["err_s"], p1["p99"], p1["reachable"]) == (3.0, 0.0, 0.002, True)
    p2 = rows["p2"]
    assert (p2["since_ack"], p2["sync_age"], p2["req_s"]) == (None, None, None)
    assert (p2["reachable"], p2["lag"]) == (False, 3)
    assert (rows["p3"]["since_ack"], rows["p3"]["sync_age"], rows["p3"]["req_s"]) == (None, None, None)


def test_assemble_a_local_proxys_own_sync_age_wins_over_the_time_since_its_ack() -> None:
    probes: dict[str, Any] = {"n1": own("n1", "leader")}
    local = [
        {"id": "p1", "status_url": "http://s1", "reachable": True, "mode": "synced", "revision": 12,
         "seconds_since_sync": 0.4},
        {"id": "p2", "status_url": "http://s2", "reachable": False, "error": "timed out"},
    ]  # fmt: skip
    fleet = {
        pid: {"id": pid, "connected": True, "revision": 12, "last_ack_at": 970.0} for pid in ("p1", "p2")
    }
    rows = {r["id"]: r for r in assemble(now=1000.0, nodes=NODES[:1], probes=probes, proxies=local,
                                         fleet=fleet)["proxies"]}  # fmt: skip
    assert (rows["p1"]["sync_age"], rows["p1"]["since_ack"]) == (0.4, 30.0)
    assert rows["p2"]["sync_age"] == 30.0  # its /status is silent: what the control plane knows


def test_assemble_keeps_started_at_on_node_rows() -> None:
    probes: dict[str, Any] = {"n1": own("n1", "leader", started_at=900.0), "n2": own("n2", "follower")}
    rows = {r["id"]: r for r in assemble(now=1000.0, nodes=NODES[:2], probes=probes)["nodes"]}
    assert (rows["n1"]["started_at"], rows["n2"]["started_at"]) == (900.0, None)


# ---- proxy metrics: rates from two scrapes --------------------------------------------------------


def exposition(ok: int, errors: int, buckets: dict[str, int]) -> str:
    lines = ["# TYPE gwadm_proxy_requests_total counter",
             f'gwadm_proxy_requests_total{{route="r1",status="200"}} {ok}',
             f'gwadm_proxy_requests_total{{route="",status="503"}} {errors}',
             "# TYPE gwadm_proxy_request_duration_seconds histogram"]  # fmt: skip
    for route in ("r1", ""):
        for le, n in buckets.items():
            lines.append(f'gwadm_proxy_request_duration_seconds_bucket{{le="{le}",route="{route}"}} {n}')
    lines.append("# TYPE gwadm_proxy_mode gauge")
    lines.append('gwadm_proxy_mode{mode="synced"} 1.0')
    return "\n".join(lines) + "\n"


def test_parse_sums_routes_and_statuses() -> None:
    s = parse(exposition(90, 10, {"0.01": 40, "0.1": 50, "+Inf": 50}), at=3.0)
    assert (s.at, s.requests, s.errors) == (3.0, 100.0, 10.0)
    assert s.buckets == ((0.01, 80.0), (0.1, 100.0), (float("inf"), 100.0))


def test_rates_between_two_scrapes() -> None:
    a = parse(exposition(0, 0, {"0.01": 0, "0.1": 0, "+Inf": 0}), at=10.0)
    b = parse(exposition(190, 10, {"0.01": 0, "0.1": 100, "+Inf": 100}), at=12.0)
    got = rates(a, b)
    assert got is not None
    assert (got.requests_per_s, got.errors_per_s) == (100.0, 5.0)
    assert got.p99 is not None and abs(got.p99 - (0.01 + 0.09 * 0.99)) < 1e-9
    idle = rates(b, parse(exposition(190, 10, {"0.01": 0, "0.1": 100, "+Inf": 100}), at=13.0))
    assert idle is not None and (idle.requests_per_s, idle.p99) == (0.0, None)


def test_no_rates_without_a_previous_scrape_or_after_a_restart() -> None:
    b = parse(exposition(5, 0, {"0.1": 5, "+Inf": 5}), at=2.0)
    assert rates(None, b) is None
    assert rates(b, parse(exposition(1, 0, {"0.1": 1, "+Inf": 1}), at=3.0)) is None  # counters reset
    assert rates(b, b) is None  # no time passed


def test_quantile_like_prometheus() -> None:
    assert quantile(0.99, ()) is None
    assert quantile(0.99, ((0.1, 0.0), (float("inf"), 0.0))) is None
    assert quantile(0.5, ((0.1, 10.0), (0.2, 20.0), (float("inf"), 20.0))) == 0.1
    assert quantile(0.99, ((0.1, 10.0), (float("inf"), 20.0))) == 0.1  # slower than every bucket


def test_parse_rejects_what_is_not_prometheus_text() -> None:
    with pytest.raises(ValueError):
        parse('{"mode": "synced"}', at=0.0)
