"""The generated OpenAPI document: complete (every served route), valid, and faithful to the schemas
that validate (what the document rejects, validate_spec rejects too; what validate_spec returns, the
response schema accepts)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import push
from cluster.admin_api import create_admin_app
from cluster.changes_api import ChangesAPI
from cluster.discovery_api import add_discovery_routes
from gateway.errors import GatewayError
from gateway.openapi import build_openapi
from gateway.validate import validate_spec

DOC = build_openapi("http://127.0.0.1:1")
METHODS = {"get", "put", "post", "patch", "delete"}

VALID: dict[str, dict[str, Any]] = {
    "upstreams": {"targets": [{"host": "127.0.0.1", "port": 9001}], "lb": "consistent_hash",
                  "hash_on": {"type": "header", "name": "X-User"}, "health": {"active": {}}},
    "routes": {"paths": ["/api", "=/x"], "methods": ["get"], "headers": {"X-A": "1"}, "upstream": "u1",
               "plugins": {"rate-limit": {"limit": 5, "key": "header", "header_name": "X-Key"},
                           "cors": {}, "key-auth": {}, "ip-restriction": {"allow": ["10.0.0.7/8"]}}},
    "consumers": {"username": "alice", "credentials": {"key-auth": [{"key": "k" * 12}],
                  "jwt-auth": [{"key": "iss1", "algorithm": "hs256", "secret": "s3cr3t"}]}},
    "plugins": {"name": "request-id", "config": {"header": "X-Req"}},
}


def _validator(name: str) -> Any:
    root = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    return jsonschema_rs.Draft202012Validator(root)


async def _handler(request: Any) -> Any:
    raise AssertionError("never called: the app is only built to list its routes")


def _app_routes() -> set[tuple[str, str]]:
    hub = SimpleNamespace(handle_stream=_handler, handle_proxies=_handler)
    changes = SimpleNamespace(handle_changes=_handler, handle_head=_handler, handle_fleet_report=_handler,
                              handle_local_fleet=_handler)
    app = create_admin_app(
        object(), secret="s", admin_url="http://x:1", raft_addr="x:2", peers=[],  # type: ignore[arg-type]
        extra_routes=lambda a: (push.add_routes(a, hub, proxies_path="/v1/proxies/streams"),  # type: ignore[arg-type]
                                ChangesAPI.add_routes(changes, a),  # type: ignore[arg-type]
                                add_discovery_routes(a, object())),  # type: ignore[arg-type]
    )
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method.lower(), path))
    return routes


def _documented() -> set[tuple[str, str]]:
    out = set()
    for path, item in DOC["paths"].items():
        parts = path.split("/")
        generic = path
        if len(parts) in (3, 4) and parts[2] in ("upstreams", "routes", "consumers", "plugins"):
            generic = "/".join([*parts[:2], "{kind}", *parts[3:]])
        for method in item:
            if method in METHODS:
                out.add((method, generic))
    return out


def test_every_served_route_is_documented_and_nothing_else() -> None:
    served, documented = _app_routes(), _documented()
    assert served - documented == set(), "served but not in gateway/openapi.py: document them there"
    assert documented - served == set(), "documented but not served"


def test_document_is_json_and_openapi_31() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert json.loads(json.dumps(DOC)) == DOC
    assert DOC["servers"] == [{"url": "http://127.0.0.1:1"}]


def test_every_schema_is_valid_json_schema_and_refs_resolve() -> None:
    meta = jsonschema_rs.meta
    for name, schema in DOC["components"]["schemas"].items():
        meta.validate(schema)  # raises on an invalid schema
        _validator(name)  # compiles: every $ref resolves
    text = json.dumps(DOC)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        section, kind, name = ref.removeprefix("#/").split("/")
        assert name in DOC[section][kind], ref


def test_every_operation_documents_its_errors_with_the_error_shape() -> None:
    error = _validator("Error")
    assert error.is_valid({"error": {"code": "invalid", "message": "m", "path": "routes[r1].paths"}})
    assert not error.is_valid({"error": "nope"})
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            codes = set(op["responses"])
            assert {"429", "503"} <= codes, (method, path)
            if op.get("security") != []:
                assert {"401", "403"} <= codes, (method, path)
            if method in ("put", "post", "patch") and "requestBody" in op:
                assert {"413", "415", "422"} <= codes or path.startswith("/v1/tokens"), (method, path)
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    name = resp["$ref"].rsplit("/", 1)[1]
                    content = DOC["components"]["responses"][name]["content"]
                    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_bodies_pass_request_and_response_schemas(kind: str) -> None:
    body = VALID[kind]
    assert _validator(f"{kind}.spec").is_valid(body), list(_validator(f"{kind}.spec").iter_errors(body))
    normalized = validate_spec(kind, "x1", body)
    stored = {**normalized, "id": "x1", "created_revision": 1, "mod_revision": 2, "revision": 3}
    errors = [str(e) for e in _validator(kind).iter_errors(stored)]
    assert errors == []


def test_schema_follows_the_validators_not_a_copy() -> None:
    """Facts of the validating schemas, read back from the document."""
    comp = DOC["components"]["schemas"]
    target = comp["upstreams.spec"]["properties"]["targets"]["items"]
    assert target["properties"]["port"] == {"type": "integer", "minimum": 1, "maximum": 65535}
    assert target["required"] == ["host", "port"] and target["additionalProperties"] is False
    assert comp["routes.spec"]["required"] == ["upstream"]
    assert comp["routes.create"]["required"] == ["id", "upstream"]
    assert set(comp["routes.spec"]["properties"]["plugins"]["properties"]) >= {"rate-limit", "cors", "key-auth"}
    assert comp["plugin.rate-limit"]["required"] == ["limit"]
    assert comp["upstreams"]["required"][:3] == ["targets", "lb", "hash_on"]


# -- property: the document never accepts less than the server (a superset, never a subset) ----------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
                     st.text(max_size=12), st.sampled_from(["GET", "get", "poſt", "X-A", "\u212a", "/a", "*", ""]))
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=3), max_leaves=8)


def _mutations(body: Any) -> st.SearchStrategy[Any]:
    """``body`` with one value somewhere replaced, one key added or one key removed."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(body, ())

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        out = copy.deepcopy(body)
        path = draw(st.sampled_from(paths))
        new = draw(_json)
        if not path:
            return new
        parent = out
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = new
        else:
            parent[path[-1]] = new
        return out

    return mutate()


@pytest.mark.parametrize("kind", list(VALID))
@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_document_rejects_only_what_the_server_rejects(kind: str, data: st.DataObject) -> None:
    body = data.draw(_mutations(VALID[kind]))
    in_schema = _validator(f"{kind}.spec").is_valid(body)
    try:
        normalized = validate_spec(kind, "x1", body)
    except GatewayError:
        return  # the server may reject more (cross-field rules, hostnames...): allowed
    assert in_schema, f"the server accepts {body!r} but the document says it is invalid"
    stored = {**normalized, "id": "x1", "created_revision": 1, "mod_revision": 1}
    assert _validator(kind).is_valid(stored), list(_validator(kind).iter_errors(stored))


def test_gwadm_openapi_writes_the_document(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, ["openapi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == build_openapi()
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(cli, ["openapi", "--server", "https://cp.example:8443", "-o", str(out)])
    assert result.exit_code == 0 and "paths" in result.output
    assert json.loads(out.read_text())["servers"] == [{"url": "https://cp.example:8443"}]
