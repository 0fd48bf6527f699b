"""Pure tests of the apply machinery: plans, field diffs, normalization, op order, file line mapping."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from cli.commands.apply import plan_text
from cli.commands.export import dump
from cli.commands.snapshot import SnapshotError, build_snapshot, resources_sha256, verify_snapshot
from cli.docfile import Document, DocumentError, load_document, write_private
from cli.plan import (
    REDACTED,
    FieldChange,
    Specs,
    bodies_from_data,
    check_references,
    check_unique_keys,
    current_from_config,
    diff_values,
    empty_specs,
    export_shape,
    make_plan,
    normalize,
)
from gateway.errors import GatewayError, ReferenceViolation, ValidationError
from gateway.frozen import freeze
from gateway.validate import validate_spec


def specs(**kinds: dict[str, dict[str, Any]]) -> Specs:
    out = empty_specs()
    for kind, items in kinds.items():
        out[kind] = {rid: validate_spec(kind, rid, body) for rid, body in items.items()}
    return out


UP = {"targets": [{"host": "127.0.0.1", "port": 9001}]}
ROUTE = {"paths": ["/api"], "upstream": "u1"}


# -- plans ---------------------------------------------------------------------------------------
def test_create_update_delete_in_dependency_order() -> None:
    current = specs(upstreams={"u1": UP, "old-up": UP}, routes={"r1": ROUTE, "gone": {**ROUTE, "upstream": "old-up"}},
                    consumers={"c-old": {}}, plugins={"cors": {"name": "cors"}})  # fmt: skip
    desired = specs(upstreams={"u1": {**UP, "retries": 3}, "u2": UP}, routes={"r1": ROUTE, "r2": {**ROUTE, "upstream": "u2"}},
                    consumers={"c1": {}}, plugins={"cors": {"name": "cors"}})  # fmt: skip
    plan = make_plan(desired, current, 7)
    assert [(c.action, c.ref) for c in plan.changes] == [
        ("update", "upstreams/u1"),
        ("create", "upstreams/u2"),
        ("create", "consumers/c1"),
        ("create", "routes/r2"),
        ("delete", "routes/gone"),  # the route that uses old-up goes before old-up
        ("delete", "consumers/c-old"),
        ("delete", "upstreams/old-up"),
    ]
    assert plan.counts == {"create": 3, "update": 1, "delete": 3}
    assert plan.revision == 7 and not plan.empty
    ops = plan.ops()
    assert ops[0] == {"op": "put", "kind": "upstreams", "id": "u1", "body": desired["upstreams"]["u1"]}
    assert ops[-1] == {"op": "delete", "kind": "upstreams", "id": "old-up"}
    assert plan.changes[0].fields == (FieldChange("changed", "retries", 1, 3),)


def test_partial_never_deletes() -> None:
    current = specs(upstreams={"u1": UP, "u9": UP}, routes={"r1": ROUTE})
    desired = specs(routes={"r2": ROUTE})
    plan = make_plan(desired, current, 3, partial=True)
    assert [(c.action, c.ref) for c in plan.changes] == [("create", "routes/r2")]
    assert plan.partial and plan.to_json()["partial"] is True
    assert make_plan(specs(), current, 3, partial=True).empty


def test_normalization_makes_defaults_equal() -> None:
    server = specs(upstreams={"u1": {**UP, "health": {"passive": {"max_failures": 3}}, "lb": "round_robin"}},
                   routes={"r1": {"paths": ["/api"], "hosts": ["API.Example.com"], "methods": ["get"], "upstream": "u1"}})  # fmt: skip
    short = normalize(
        bodies_from_data(
            {
                "upstreams": {"u1": UP},
                "routes": {
                    "r1": {
                        "paths": ["/api"],
                        "hosts": ["api.example.com"],
                        "methods": ["GET"],
                        "upstream": "u1",
                    }
                },
            }
        )
    )
    plan = make_plan(short, server, 5)
    assert plan.empty and plan.summary() == "no changes (revision 5)"


def test_field_level_diffs_nested_and_lists() -> None:
    old = {"a": 1, "gone": True, "nested": {"x": {"y": 1, "z": 2}}, "tags": ["/a", "/b"],
           "targets": [{"host": "h1", "port": 1}], "same": [1, 2]}  # fmt: skip
    new = {"a": 2, "new": None, "nested": {"x": {"y": 1, "z": 3, "w": 4}}, "tags": ["/x", "/a", "/b"],
           "targets": [{"host": "h1", "port": 2}, {"host": "h2", "port": 1}], "same": [1, 2]}  # fmt: skip
    assert diff_values(old, new) == [
        FieldChange("changed", "a", 1, 2),
        FieldChange("added", "new", None, None),
        FieldChange("changed", "nested.x.z", 2, 3),
        FieldChange("added", "nested.x.w", None, 4),
        FieldChange("changed", "tags", ["/a", "/b"], ["/x", "/a", "/b"]),  # scalar lists: whole
        FieldChange("changed", "targets[0].port", 1, 2),
        FieldChange("added", "targets[1]", None, {"host": "h2", "port": 1}),
        FieldChange("removed", "gone", True, None),
    ]
    assert diff_values({"v": 1}, {"v": True}) == [FieldChange("changed", "v", 1, True)]
    assert diff_values({"v": 1}, {"v": 1.0}) == []


def test_plugin_config_change_is_a_nested_field_diff() -> None:
    current = specs(upstreams={"u1": UP}, routes={"r1": {**ROUTE, "plugins": {"rate-limit": {"limit": 10}}}})
    desired = specs(upstreams={"u1": UP}, routes={"r1": {**ROUTE, "plugins": {"rate-limit": {"limit": 20}}}})
    (change,) = make_plan(desired, current, 2).changes
    assert change.fields == (FieldChange("changed", "plugins.rate-limit.limit", 10, 20),)
    text = plan_text(make_plan(desired, current, 2)).plain
    assert "~ routes/r1" in text and "~ plugins.rate-limit.limit: 10 → 20" in text
    assert "0 to create, 1 to update, 0 to delete" in text
    styles = {str(span.style) for span in plan_text(make_plan(desired, current, 2)).spans}
    assert any("yellow" in s for s in styles)


def test_credentials_are_redacted_unless_asked() -> None:
    current = specs(consumers={"c1": {"credentials": {"key-auth": [{"key": "old-key-123"}]}}})
    desired = specs(consumers={"c1": {"credentials": {"key-auth": [{"key": "new-key-456"}]}},
                               "c2": {"credentials": {"jwt-auth": [{"key": "iss", "algorithm": "HS256",
                                                                   "secret": "s3cret"}]}}})  # fmt: skip
    plan = make_plan(desired, current, 1)
    dumped = json.dumps(plan.to_json())
    assert "old-key-123" not in dumped and "new-key-456" not in dumped and "s3cret" not in dumped
    assert REDACTED in dumped and '"iss"' in dumped  # a jwt key (issuer) is not a secret
    assert "new-key-456" in json.dumps(plan.to_json(show_secrets=True))
    assert "new-key-456" not in plan_text(plan).plain
    assert "old-key-123 → " not in plan_text(plan).plain
    assert '"old-key-123" → "new-key-456"' in plan_text(plan, show_secrets=True).plain


# -- input checks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ([1], None, "top level must be a mapping"),
        ({"route": {}}, "route", "did you mean routes?"),
        ({"routes": []}, "routes", "must map ids"),
        ({"routes": {"bad id": {}}}, "routes[bad id]", "invalid id"),
        ({"routes": {"r1": "x"}}, "routes[r1]", "must be a mapping of fields"),
    ],
)
def test_structure_errors_have_paths(data: Any, path: str | None, words: str) -> None:
    with pytest.raises(GatewayError) as info:
        bodies_from_data(data)
    assert info.value.path == path and words in info.value.message


def test_null_kind_is_empty_and_read_only_fields_are_dropped() -> None:
    bodies = bodies_from_data({"consumers": None, "upstreams": {"u1": {**UP, "id": "u1", "mod_revision": 4}}})
    assert bodies["consumers"] == {} and normalize(bodies)["upstreams"]["u1"] == validate_spec(
        "upstreams", "u1", UP
    )


def test_references_and_unique_keys() -> None:
    desired = specs(routes={"r1": ROUTE})
    with pytest.raises(ReferenceViolation) as info:
        check_references(desired)
    assert info.value.path == "routes[r1].upstream"
    check_references(desired, ["u1"])  # partial: the cluster keeps u1
    key = {"credentials": {"key-auth": [{"key": "same-key-1"}]}}
    with pytest.raises(ValidationError) as dup:
        check_unique_keys(specs(consumers={"a": key, "b": key}))
    assert dup.value.path == "consumers[b].credentials.key-auth[0].key"
    with pytest.raises(ValidationError):
        check_unique_keys(specs(consumers={"b": key}), specs(consumers={"a": key})["consumers"])


def test_current_from_config_strips_read_only_fields() -> None:
    config = {
        "revision": 4,
        "hash": "h",
        "resources": {
            "upstreams": [
                {**validate_spec("upstreams", "u1", UP), "id": "u1", "created_revision": 1, "mod_revision": 3}
            ]
        },
    }
    revision, current = current_from_config(config)
    assert revision == 4 and current["upstreams"]["u1"] == validate_spec("upstreams", "u1", UP)
    assert current["routes"] == {}
    assert list(export_shape(current)) == ["upstreams", "routes", "consumers", "plugins"]


# -- files and line numbers ----------------------------------------------------------------------
YAML_FILE = """\
# a comment
upstreams:
  u1:
    targets:
      - host: 127.0.0.1
        port: 9001
routes:
  r1:
    upstream: u1
    paths:
      - /ok
      - bad
    headers:
      x-api.version: "2"
  r2:
    hosts: [example.com]
"""


def validation_line(doc: Document) -> tuple[int | None, str | None]:
    try:
        normalize(bodies_from_data(doc.data))
    except GatewayError as exc:
        return doc.line_of(exc.path), exc.path
    return None, None


def test_yaml_error_lines_are_exact() -> None:
    doc = load_document(YAML_FILE, "gateway.yaml")
    assert validation_line(doc) == (12, "routes[r1].paths[1]")
    assert doc.line_of("routes[r1].headers.x-api.version") == 14  # a dotted key
    assert doc.line_of("routes[r2].upstream") == 15  # missing field: the resource's line
    assert doc.line_of("routes[r2].hosts[0]") == 16
    assert doc.line_of("upstreams[u1].targets[0].port") == 6
    assert doc.line_of("txn.ops[0]") is None and doc.line_of(None) == 2
    assert doc.where("routes[r1].paths[1]") == "gateway.yaml:12"


def test_json_error_lines() -> None:
    text = json.dumps(load_document(YAML_FILE, "x.yaml").data, indent=2)
    doc = load_document(text, "gateway.json")
    line, path = validation_line(doc)
    assert path == "routes[r1].paths[1]" and line is not None
    assert text.splitlines()[line - 1].strip() == '"bad"'
    compact = load_document('{"routes": {"r1":\n {"paths": ["/a",\n\t"b"], "upstream": "u"}}}', "c.json")
    assert validation_line(compact)[0] == 3


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("routes:\n  r1: {paths: [/a], upstream: u1}\n  r1: {paths: [/b], upstream: u1}\n", "g.yaml",
         "g.yaml:3: duplicate key 'r1' in routes"),
        ("routes: {}\nroutes: {}\n", "g.yaml", "g.yaml:2: duplicate key 'routes'"),
        ('{"routes": {"r1": {"paths": ["/a"],\n "paths": []}}}', "g.json",
         "g.json:2: duplicate key 'paths' in routes[r1]"),
        ("a: [1\n", "g.yaml", "g.yaml:2: not valid YAML"),
        ("a: 1\n---\nb: 2\n", "g.yaml", "g.yaml:2: not valid YAML: expected a single document in the stream: but found another"),
        ('{"a": 1,}', "g.json", "g.json:1: not valid JSON"),
        ("", "g.yaml", "g.yaml: the file is empty"),
    ],
)  # fmt: skip
def test_document_errors_are_one_line(text: str, name: str, message: str) -> None:
    with pytest.raises(DocumentError) as info:
        load_document(text, name)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_export_dump_round_trips_both_formats() -> None:
    current = specs(upstreams={"u1": {**UP, "health": {"active": {"path": "/hz"}}}},
                    routes={"r1": {**ROUTE, "headers": {"X-On": "yes"}}},
                    consumers={"c1": {"username": "on", "credentials": {"key-auth": [{"key": "12345678"}]}}})  # fmt: skip
    shape = export_shape(current)
    for fmt, name in (("yaml", "e.yaml"), ("json", "e.json")):
        text = dump(shape, fmt, "header")
        desired = normalize(bodies_from_data(load_document(text, name).data))
        assert make_plan(desired, current, 1).empty, fmt
        assert dump(shape, fmt, "header") == text  # stable


# -- snapshots -----------------------------------------------------------------------------------
def test_snapshot_checksum_and_tamper_detection(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    config = {
        "revision": 3,
        "hash": "abc",
        "resources": {
            "upstreams": [
                {**validate_spec("upstreams", "u1", UP), "id": "u1", "created_revision": 1, "mod_revision": 3}
            ]
        },
    }
    snap = build_snapshot(config, None, datetime(2024, 1, 1, tzinfo=UTC))
    assert snap["format"] == "gwadm-snapshot-v1" and snap["sha256"] == resources_sha256(snap["resources"])
    path = tmp_path / "s.json"
    write_private(path, json.dumps(snap))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    good = verify_snapshot(load_document(path.read_text(), "s.json"))
    assert good.data == snap["resources"] and good.line_of("upstreams[u1]") == 1
    tampered = json.loads(path.read_text())
    tampered["resources"]["upstreams"]["u1"]["retries"] = 5
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        verify_snapshot(Document("s.json", tampered))
    with pytest.raises(SnapshotError, match="not a gwadm snapshot"):
        verify_snapshot(Document("s.json", {"format": "other"}))


def test_export_writes_read_only_values_as_plain_yaml_and_json() -> None:
    shape = {"upstreams": {"u1": freeze({"timeouts": {"connect": 2.0}, "targets": [{"port": 80}]})}}
    text = dump(shape, "yaml")
    assert "!!" not in text and yaml.safe_load(text) == shape
    assert json.loads(dump(shape, "json")) == shape
