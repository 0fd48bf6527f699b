"""`gwadm route|upstream|consumer|plugin list|get|put|patch|delete` over the admin API (contracts §5)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cli import console, render
from cli.commands.cluster import json_option
from cli.connection import conn_options, make_client, with_options

KIND_GROUPS = {"route": "routes", "upstream": "upstreams", "consumer": "consumers", "plugin": "plugins"}


def parse_json_object(text: str, source: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object or raise a one-line click error naming ``source``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", param_hint=source
        ) from exc
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object, got {type(value).__name__}", param_hint=source)
    return value


def read_text(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).expanduser().read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="--file") from exc


def load_body(file: str | None, data: str | None) -> dict[str, Any]:
    if file is not None and data is not None:
        raise click.UsageError("give either --file or --data, not both")
    if file is not None:
        return parse_json_object(read_text(file), "--file")
    if data is not None:
        return parse_json_object(data, "--data")
    raise click.UsageError("a body is needed: --file FILE (JSON, '-' for stdin) or --data '{...}'")


def _written(kind: str, id: str, result: dict[str, Any], verb: str) -> str:
    rev = result.get("revision")
    mod = result.get("mod_revision")
    extra = f" (mod_revision {mod})" if mod is not None and mod != rev else ""
    return f"{kind}/{id} {verb} at revision {rev}{extra}"


def _report(kind: str, id: str, result: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        console.print_json(result)
    else:
        click.echo(_written(kind, id, result, verb))


def make_kind_group(name: str, kind: str) -> click.Group:
    @click.group(name=name, help=f"Manage {kind} (admin API /v1/{kind}).")
    def group() -> None:
        pass

    @group.command("list")
    @conn_options
    @json_option
    def list_cmd(as_json: bool) -> None:
        """List every resource of this kind."""
        listing = make_client().list(kind)
        if as_json:
            console.print_json(listing)
        else:
            console.show(render.resource_table(kind, listing))

    @group.command("get")
    @conn_options
    @click.argument("id")
    @json_option
    def get_cmd(id: str, as_json: bool) -> None:
        """Print one resource as JSON (can be edited and PUT back); --json is accepted and implied."""
        console.print_json(make_client().get(kind, id))

    body_opts = [
        click.option("--file", "-f", "file", metavar="FILE", help="JSON body from FILE ('-' = stdin)."),
        click.option("--data", "-d", "data", metavar="JSON", help="JSON body inline."),
        click.option("--if-match", type=int, default=None, metavar="N",
                     help="Only if the resource's mod_revision is N (0 = must not exist)."),
    ]  # fmt: skip

    with_body = with_options(body_opts)

    @group.command("put")
    @conn_options
    @click.argument("id")
    @with_body
    @json_option
    def put_cmd(id: str, file: str | None, data: str | None, if_match: int | None, as_json: bool) -> None:
        """Create or replace a resource (the id comes from the argument)."""
        body = load_body(file, data)
        result = make_client().put(kind, id, body, if_match=if_match)
        _report(kind, id, result, "written", as_json)

    @group.command("patch")
    @conn_options
    @click.argument("id")
    @with_body
    @json_option
    def patch_cmd(id: str, file: str | None, data: str | None, if_match: int | None, as_json: bool) -> None:
        """Change some fields (JSON merge patch, RFC 7386)."""
        body = load_body(file, data)
        result = make_client().patch(kind, id, body, if_match=if_match)
        _report(kind, id, result, "patched", as_json)

    @group.command("delete")
    @conn_options
    @click.argument("id")
    @click.option("--if-match", type=int, default=None, metavar="N", help="Only if its mod_revision is N.")
    @json_option
    def delete_cmd(id: str, if_match: int | None, as_json: bool) -> None:
        """Delete a resource."""
        result = make_client().delete(kind, id, if_match=if_match)
        _report(kind, id, result, "deleted", as_json)

    return group


RESOURCE_GROUPS = [make_kind_group(name, kind) for name, kind in KIND_GROUPS.items()]


COMMANDS: list[click.Command] = list(RESOURCE_GROUPS)

# `gwadm upstream targets ID` (cli/commands/register.py): static and registered targets.
from cli.commands.register import targets_cmd  # noqa: E402

next(g for g in RESOURCE_GROUPS if g.name == "upstream").add_command(targets_cmd)
