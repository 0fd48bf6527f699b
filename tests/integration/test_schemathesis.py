"""schemathesis against a live 3-node cluster, driven by the generated OpenAPI document.

Stateless phase: every operation, positive and negative examples (seeded: derandomized hypothesis).
Stateful phase: schemathesis's state machine chains operations (create, then read/patch/delete...).
Pass criteria, checked on every response:
  * no 5xx except a documented 503 with the JSON error shape (the cluster is healthy: none expected);
  * the response conforms to the document (status code, content type, headers, body schema), and a
    request the document calls invalid is rejected (negative_data_rejection);
  * a rejected request (4xx) leaves the config revision and hash unchanged (read with a barrier).

Excluded operations, each for a reason: /v1/tokens/rotate (would revoke the test's own token),
membership changes (would take the cluster apart), /v1/stream (a WebSocket, tested in tests/cluster).
What this found and how it was fixed is kept as regression tests in test_schemathesis_regressions.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as oas

from gateway.openapi import build_openapi
from tests.support.cluster import Cluster, running_cluster
from tests.support.http import request

pytestmark = pytest.mark.integration

EXCLUDED = ["rotate_tokens", "add_member", "remove_member", "stream"]
CHECKS = [
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_headers_conformance,
    oas.response_schema_conformance,
    oas.negative_data_rejection,
]
SEED_NOTE = "hypothesis runs derandomized (seed fixed by the test's name): reruns replay the same examples"

schema = schemathesis.openapi.from_dict(build_openapi())
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    deterministic=True,
    allow_x00=False,
)
# The coverage phase (systematic boundary values) alone sends ~4,500 requests here: too many for the
# suite's budget. Examples + fuzzing (hypothesis, max_examples per operation) keep it to a few hundred.
schema.config.phases.coverage.enabled = False
stateless = schema.exclude(operation_id=EXCLUDED)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("schemathesis")), fsync=False) as c:
        # something to refer to: upstream u1 and route r1 (routes need an existing upstream)
        leader = c.wait_leader()
        assert c.api(leader, "PUT", "/v1/upstreams/u1", {"targets": [{"host": "127.0.0.1", "port": 9}]}).status == 201
        assert c.api(leader, "PUT", "/v1/routes/r1", {"paths": ["/a"], "upstream": "u1"}).status == 201
        yield c


def fingerprint(c: Cluster) -> tuple[str, frozenset[tuple[str, str, int, str]]]:
    """The config resources, and every registration (upstream, host, port, its spec).

    Not the revision and state hash: a registration schemathesis made with a short TTL expires on
    its own later (a replicated expiry, a new revision) and must not pass for a rejected request's
    doing. ``Watch.check`` allows registrations to disappear, never to appear or change."""
    r = request("GET", c.nodes[0].url + "/v1/config", token=c.token, timeout=10.0)
    assert r.status == 200, r.body
    resources = r.json()["resources"]
    regs = set()
    for up in resources["upstreams"]:
        t = request("GET", f"{c.nodes[0].url}/v1/upstreams/{up['id']}/targets?consistency=stale", token=c.token,
                    timeout=10.0)
        assert t.status == 200, t.body
        for reg in t.json()["registered"]:
            spec = json.dumps({k: reg.get(k) for k in ("weight", "ttl", "metadata", "registered_at")}, sort_keys=True)
            regs.add((up["id"], str(reg["host"]), int(reg["port"]), spec))
    return json.dumps(resources, sort_keys=True), frozenset(regs)


def _changed(before: str, after: str) -> list[str]:
    """The resources that differ between two ``fingerprint`` texts, as ``kind/id: old -> new``."""
    a, b = json.loads(before), json.loads(after)
    out = []
    for kind in sorted(set(a) | set(b)):
        old = {r["id"]: r for r in a.get(kind, [])}
        new = {r["id"]: r for r in b.get(kind, [])}
        for rid in sorted(set(old) | set(new)):
            if old.get(rid) != new.get(rid):
                out.append(f"{kind}/{rid}: {json.dumps(old.get(rid))[:300]} -> {json.dumps(new.get(rid))[:300]}")
    return out


class Watch:
    """The config fingerprint as of the last accepted write: a rejected request must leave it so."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.last = fingerprint(c)
        self.calls: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.recent: list[str] = []  # the last calls, for the failure message

    def check(self, case: Any, response: Any, phase: str) -> None:
        status = response.status_code
        self.recent = [*self.recent[-5:], f"{case.method} {case.formatted_path} -> {status} {response.text[:150]}"]
        self.calls[phase] = self.calls.get(phase, 0) + 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            body = response.json()
            assert status == 503 and set(body["error"]) >= {"code", "message", "path"}, (
                f"server error {status} for {case.method} {case.formatted_path}: {response.text[:500]}"
            )
        case.validate_response(response, checks=CHECKS)
        if 400 <= status < 500:
            after = fingerprint(self.c)
            assert after[0] == self.last[0] and after[1] <= self.last[1], (
                f"rejected {case.method} {case.formatted_path} ({status}) changed the config: "
                f"{_changed(self.last[0], after[0])}; registrations added {sorted(after[1] - self.last[1])[:5]}; "
                f"the last calls: {self.recent}"
            )
            self.last = after  # registrations that expired meanwhile
        elif case.method.upper() != "GET":
            self.last = fingerprint(self.c)


@pytest.fixture(scope="module")
def watch(live: Cluster) -> Watch:
    return Watch(live)


@stateless.parametrize()
@settings(max_examples=8, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
def test_stateless(case: Any, live: Cluster, watch: Watch) -> None:
    node = live.nodes[sum(map(ord, case.operation.label)) % len(live.nodes)]  # spread: followers too
    response = case.call(base_url=node.url, headers={"Authorization": f"Bearer {live.token}"}, timeout=15)
    watch.check(case, response, "stateless")


def test_stateful(live: Cluster, watch: Watch) -> None:
    print(SEED_NOTE)
    machine = stateless.as_state_machine()
    node = live.nodes[1]

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": node.url, "headers": {"Authorization": f"Bearer {live.token}"}, "timeout": 15}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            watch.check(case, response, "stateful")

    Machine.run(settings=settings(max_examples=15, stateful_step_count=8, derandomize=True, deadline=None,
                                  suppress_health_check=list(HealthCheck), database=None))
    print(f"requests: {watch.calls}, statuses: {dict(sorted(watch.statuses.items()))}")
    assert watch.calls.get("stateful", 0) >= 30, "the state machine made (almost) no calls: no links found?"


# -- what schemathesis found (and what was fixed on the way), kept as regression tests -----------------
def _error(r: Any, status: int, path: str | None) -> None:
    assert r.status == status, r
    assert r.json()["error"]["path"] == path, r


def test_regression_unknown_query_parameter_is_422(live: Cluster) -> None:
    # found: GET /v1/upstreams?<anything>=... answered 200 (a typo such as ?consistensy=stale was ignored)
    _error(live.api(live.nodes[0], "GET", "/v1/upstreams?consistensy=stale"), 422, "consistensy")
    _error(live.api(live.nodes[0], "GET", "/v1/config?consistency=bogus"), 422, "consistency")
    assert live.api(live.nodes[0], "GET", "/v1/upstreams?consistency=stale").status == 200
    assert live.api(live.nodes[0], "GET", "/v1/cluster?consistency=stale").status == 200  # gwadm status sends it


def test_regression_bad_request_id_and_preconditions_are_422(live: Cluster) -> None:
    before = fingerprint(live)
    body = {"targets": [{"host": "127.0.0.1", "port": 9}]}
    # found: an empty X-Request-Id was replaced by a generated one instead of being refused
    _error(live.api(live.nodes[0], "PUT", "/v1/upstreams/reg1", body, headers={"X-Request-Id": ""}), 422,
           "X-Request-Id")
    # found: If-None-Match other than "*" was silently ignored (the write went through unconditionally)
    _error(live.api(live.nodes[0], "PUT", "/v1/upstreams/reg1", body, headers={"If-None-Match": "AAA"}), 422,
           "If-None-Match")
    # "²".isdigit() is True but int("²") raises: this was a 500
    r = request("PUT", live.nodes[0].url + "/v1/upstreams/reg1", token=live.token, json_body=body,
                headers={"If-Match": b"\xc2\xb2"})  # type: ignore[dict-item]
    assert r.status == 422, r
    r = request("GET", live.nodes[0].url + "/v1/config?revision=%C2%B2", token=live.token)
    _error(r, 422, "revision")
    # case folding of non-ASCII: "poſt".upper() == "POST" was accepted as a method
    r = live.api(live.nodes[0], "PUT", "/v1/routes/reg1", {"paths": ["/x"], "upstream": "u1", "methods": ["poſt"]})
    _error(r, 422, "routes[reg1].methods[0]")
    assert fingerprint(live) == before


def test_regression_405_keeps_allow_header(live: Cluster) -> None:
    r = live.api(live.nodes[0], "DELETE", "/v1/config")
    assert r.status == 405 and "GET" in r.headers.get("allow", ""), r
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_openapi_served_to_viewer_not_to_anonymous_or_proxy(live: Cluster) -> None:
    node = live.nodes[2]
    r = live.api(node, "GET", "/v1/openapi.json", token=live.viewer_token)
    assert r.status == 200
    doc = r.json()
    assert doc["servers"] == [{"url": node.url}]
    assert {k: v for k, v in doc.items() if k != "servers"} == build_openapi()
    assert request("GET", node.url + "/v1/openapi.json").status == 401
    assert live.api(node, "GET", "/v1/openapi.json", token=live.proxy_token).status == 403


def test_regression_request_id_reused_for_another_request_is_409(live: Cluster) -> None:
    # found: DELETE /v1/plugins/x with the X-Request-Id of an earlier consumer write answered that
    # write's result (a consumer, "deleted") and deleted nothing
    node = live.nodes[0]
    body = {"targets": [{"host": "127.0.0.1", "port": 19}]}
    first = live.api(node, "PUT", "/v1/upstreams/reuse1", body, headers={"X-Request-Id": "reuse-1"})
    assert first.status == 201
    again = live.api(node, "PUT", "/v1/upstreams/reuse1", body, headers={"X-Request-Id": "reuse-1"})
    assert again.status in (200, 201) and again.json()["revision"] == first.json()["revision"]  # a retry
    before = fingerprint(live)
    other = live.api(node, "DELETE", "/v1/upstreams/reuse1", headers={"X-Request-Id": "reuse-1"})
    _error(other, 409, "X-Request-Id")
    assert fingerprint(live) == before
    # a retried PATCH (its CAS expectation moved with its own first attempt) is still a retry
    patch = {"retries": 3}
    p1 = live.api(node, "PATCH", "/v1/upstreams/reuse1", patch, headers={"X-Request-Id": "reuse-2"})
    p2 = live.api(node, "PATCH", "/v1/upstreams/reuse1", patch, headers={"X-Request-Id": "reuse-2"})
    assert p1.status == p2.status == 200 and p1.json()["revision"] == p2.json()["revision"]
