"""`gwadm apply -f FILE`: put every resource of a file in ONE transaction (POST /v1/txn).

File shape (JSON, or YAML for files named *.yaml / *.yml)::

    {"upstreams": {"u1": {...spec}}, "routes": {"r1": {...}}, "consumers": {...}, "plugins": {...}}

Each kind maps ids to specs, or is a list of specs that carry their own ``"id"``. Kinds may be
singular (``route``). Referential integrity is checked at the end of the transaction, so a file may
hold a route and the upstream it uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from cli import console
from cli.client import KINDS, normalize_kind
from cli.commands.cluster import json_option
from cli.commands.resources import read_text
from cli.connection import conn_options, make_client

ORDER = ("upstreams", "consumers", "plugins", "routes")


class ApplyFileError(click.ClickException):
    pass


def parse_document(text: str, name: str) -> Any:
    if name.endswith((".yaml", ".yml")):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ApplyFileError(
                f"{name}: YAML needs PyYAML (pip install pyyaml); or write the file as JSON"
            ) from exc
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ApplyFileError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApplyFileError(
            f"{name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc


def ops_from_document(doc: Any, name: str) -> list[dict[str, Any]]:
    """Document -> txn put ops, upstreams first and routes last. Pure."""
    if not isinstance(doc, Mapping):
        raise ApplyFileError(f"{name}: the top level must be an object with keys among {', '.join(KINDS)}")
    by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, value in doc.items():
        try:
            kind = normalize_kind(str(key))
        except ValueError as exc:
            raise ApplyFileError(f"{name}: {exc}") from exc
        entries: list[tuple[str, dict[str, Any]]] = []
        if isinstance(value, Mapping):
            for rid, spec in value.items():
                if not isinstance(spec, Mapping):
                    raise ApplyFileError(f"{name}: {kind}[{rid}] must be an object")
                entries.append((str(rid), dict(spec)))
        elif isinstance(value, list):
            for i, spec in enumerate(value):
                if not isinstance(spec, Mapping) or not spec.get("id"):
                    raise ApplyFileError(f'{name}: {kind}[{i}] must be an object with an "id"')
                entries.append((str(spec["id"]), dict(spec)))
        else:
            raise ApplyFileError(f"{name}: {kind} must map ids to specs (or be a list of specs with ids)")
        by_kind.setdefault(kind, []).extend(entries)
    ops = [
        {"op": "put", "kind": kind, "id": rid, "body": spec}
        for kind in ORDER
        for rid, spec in by_kind.get(kind, [])
    ]
    if not ops:
        raise ApplyFileError(f"{name}: no resources to apply")
    return ops


@click.command("apply")
@conn_options
@click.option("--file", "-f", "file", required=True, metavar="FILE", help="JSON file ('-' = stdin).")
@click.option(
    "--expect-revision",
    type=int,
    default=None,
    metavar="N",
    help="Apply only if the config is still at revision N.",
)
@click.option("--dry-run", is_flag=True, help="Print the transaction instead of sending it.")
@json_option
def apply_cmd(file: str, expect_revision: int | None, dry_run: bool, as_json: bool) -> None:
    """Create or replace every resource in FILE atomically (all or nothing)."""
    name = "<stdin>" if file == "-" else file
    ops = ops_from_document(parse_document(read_text(file), name), name)
    if dry_run:
        console.print_json({"expect_revision": expect_revision, "ops": ops})
        return
    result = make_client().txn(ops, expect_revision=expect_revision)
    if as_json:
        console.print_json(result)
        return
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["kind"]] = counts.get(op["kind"], 0) + 1
    summary = ", ".join(f"{k}: {n}" for k, n in counts.items())
    click.echo(f"applied {len(ops)} resources ({summary}) at revision {result.get('revision')}")


COMMANDS = [apply_cmd]
