"""`gwadm apply -f FILE` and `gwadm diff -f FILE`: declarative config in one CAS transaction.

The file is the WHOLE desired state (what it lacks is deleted) or, with ``--partial``, only the
resources it lists (created or replaced, nothing deleted)::

    upstreams: {u1: {targets: [{host: 10.0.0.5, port: 8080}]}}
    routes:    {r1: {paths: [/api], upstream: u1}}
    consumers: {}
    plugins:   {}

Steps, each of which can stop the run with one line and nothing applied: the file is parsed and
every spec validated locally (errors point at ``file:line``); the current config and its revision
are fetched; the plan (:mod:`cli.plan`) is printed; all its ops go out as ONE ``POST /v1/txn`` with
``expect_revision`` set to the revision the plan was made against, so a concurrent change makes the
server refuse the whole transaction (409) instead of applying a plan nobody reviewed.
``gwadm snapshot restore`` runs the same code (:func:`run`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.text import Text

from cli import console
from cli.client import AdminClient, ApiError
from cli.commands.cluster import json_option
from cli.connection import conn_options, make_client
from cli.docfile import Document, DocumentError, load_document, read_source
from cli.plan import (
    REDACTED,
    Plan,
    Specs,
    bodies_from_data,
    check_references,
    check_unique_keys,
    current_from_config,
    make_plan,
    normalize,
    redact,
)
from cli.secrets import has_redacted, restore_redacted
from gateway.errors import GatewayError

WRITE_TIMEOUT = 30.0  # a large transaction is validated twice and replicated: give it time


class FileError(click.ClickException):
    """The input file is unusable; the message starts with ``file:line:``."""


class PlanConflict(click.ClickException):
    """The config moved between planning and applying; the server applied nothing."""


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while something slow runs (terminals only; pipes stay clean)."""
    con = console.err_console()
    if not con.is_terminal:
        yield
        return
    with con.status(message):
        yield


def read_document(file: str, fmt: str | None = None) -> Document:
    """Load FILE (or stdin) with positions; any problem becomes one ``file:line:`` error."""
    try:
        text, name = read_source(file)
        return load_document(text, name, fmt)
    except DocumentError as exc:
        raise FileError(str(exc)) from None


def located(doc: Document, exc: GatewayError) -> str:
    """``gateway.yaml:12: routes[r1].paths[0]: must start with /``."""
    where = f"{exc.path}: " if exc.path else ""
    return f"{doc.where(exc.path)}: {where}{exc.message}"


def check_desired(doc: Document, desired: Specs, current: Specs | None = None) -> None:
    """Cross-resource rules on the desired state; ``current`` given = partial mode (it keeps the rest)."""
    try:
        if current is None:
            check_references(desired)
            check_unique_keys(desired)
        else:
            check_references(desired, current["upstreams"])
            kept = {
                cid: spec for cid, spec in current["consumers"].items() if cid not in desired["consumers"]
            }
            check_unique_keys(desired, kept)
    except GatewayError as exc:
        raise FileError(located(doc, exc)) from None


def desired_from(doc: Document, partial: bool, client: AdminClient | None = None) -> Specs:
    """Structure, then every spec through ``validate_spec``: no request is made for a bad file
    (except to fill in credentials the file hides as <sensitive>: cli/secrets.py)."""
    with progress(f"checking {doc.name}"):
        try:
            bodies = bodies_from_data(doc.data)
            if has_redacted(bodies.get("consumers")):
                bodies = restore_redacted(bodies, current_from_config(client.config())[1] if client else None)
            desired = normalize(bodies)
        except GatewayError as exc:
            raise FileError(located(doc, exc)) from None
        if not partial:
            check_desired(doc, desired)
    return desired


def plan_against(client: AdminClient, doc: Document, desired: Specs, partial: bool) -> Plan:
    """Fetch the config and its revision, and plan against exactly that revision."""
    with progress("fetching the current config"):
        revision, current = current_from_config(client.config())
    if partial:
        check_desired(doc, desired, current)
    return make_plan(desired, current, revision, partial=partial)


def _changes(n: int) -> str:
    return f"{n} change" if n == 1 else f"{n} changes"


def _revision_in(message: str) -> str:
    found = re.search(r"at revision (\d+)", message)
    return found.group(1) if found else "?"


def execute(
    client: AdminClient, plan: Plan, doc: Document, expect_revision: int | None = None
) -> dict[str, Any]:
    """Send the plan as one transaction guarded by the revision it was made against."""
    expected = plan.revision if expect_revision is None else expect_revision
    try:
        with progress(f"applying {_changes(len(plan.changes))}"):
            return client.txn(plan.ops(), expect_revision=expected)
    except ApiError as exc:
        if exc.status == 409 and exc.code == "conflict" and not exc.path:
            raise PlanConflict(
                f"the config changed since the plan was made (revision {expected} → {_revision_in(exc.message)}); "
                "nothing was applied, run again"
            ) from None
        if exc.path and doc.line_of(exc.path) is not None:
            raise FileError(f"{doc.where(exc.path)}: {exc.describe()}; nothing was applied") from None
        raise


# -- output ---------------------------------------------------------------------------------------
_CHANGE = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}
_FIELD = {"added": ("+", "green"), "removed": ("-", "red"), "changed": ("~", "yellow")}


def _value(value: Any) -> str:
    return value if value == REDACTED else json.dumps(value, ensure_ascii=False)


def plan_text(plan: Plan, show_secrets: bool = False) -> Text:
    """The plan for people: one line per resource, one per changed field, old → new."""
    text = Text()
    if plan.empty:
        text.append(plan.summary())
        return text
    mode = ", partial: nothing is deleted" if plan.partial else ""
    text.append(f"plan against revision {plan.revision}{mode}:\n", style="bold")
    for change in plan.changes:
        sign, style = _CHANGE[change.action]
        text.append(f"{sign} {change.ref}", style=f"bold {style}")
        text.append(f"  ({change.action})\n", style="dim")
        for f in change.fields:
            mark, fstyle = _FIELD[f.action]
            old, new = (
                (f.old, f.new)
                if show_secrets
                else (redact(change.kind, f.path, f.old), redact(change.kind, f.path, f.new))
            )
            shown = {
                "added": _value(new),
                "removed": _value(old),
                "changed": f"{_value(old)} → {_value(new)}",
            }
            text.append(f"    {mark} {f.path}: {shown[f.action]}\n", style=fstyle)
    text.append(plan.summary(), style="bold")
    return text


def show_plan(plan: Plan, show_secrets: bool) -> None:
    console.out_console().print(plan_text(plan, show_secrets), soft_wrap=True, highlight=False)


def run(
    doc: Document,
    *,
    partial: bool,
    dry_run: bool,
    as_json: bool,
    show_secrets: bool,
    expect_revision: int | None = None,
    allow_empty: bool = True,
) -> Plan:
    """Validate, plan, print, apply: the body of `apply` and `snapshot restore`."""
    client = make_client(timeout=WRITE_TIMEOUT)
    desired = desired_from(doc, partial, client)
    plan = plan_against(client, doc, desired, partial)
    deletes = plan.counts["delete"]
    if not allow_empty and not partial and deletes and not any(desired.values()):
        # An empty or truncated file (a failed export, the wrong file) would wipe the gateway.
        raise FileError(
            f"{doc.name} lists no resources: applying it would delete all {deletes} resources of the "
            "cluster; pass --allow-empty if that is what you want (nothing was applied)"
        )
    report: dict[str, Any] = {
        "plan": plan.to_json(show_secrets), "dry_run": dry_run, "applied": False, "revision": plan.revision
    }  # fmt: skip
    if not as_json:
        show_plan(plan, show_secrets)
    if not plan.empty and not dry_run:
        result = execute(client, plan, doc, expect_revision)
        report.update(applied=True, revision=result.get("revision"))
        if not as_json:
            click.echo(f"applied {_changes(len(plan.changes))} at revision {result.get('revision')}")
    elif dry_run and not plan.empty and not as_json:
        click.echo("dry run: nothing was applied")
    if as_json:
        console.print_json(report)
    return plan


# -- commands -------------------------------------------------------------------------------------
file_option = click.option(
    "--file", "-f", "file", required=True, metavar="FILE",
    help="YAML or JSON file ('-' = stdin); the format comes from the extension or the content.",
)  # fmt: skip
partial_option = click.option(
    "--partial", is_flag=True, help="FILE lists only some resources: create/update them, delete nothing."
)
secrets_option = click.option(
    "--show-secrets", is_flag=True, help="Show credential values (key-auth keys, jwt secrets) in the plan."
)


@click.command("apply")
@conn_options
@file_option
@partial_option
@click.option("--dry-run", is_flag=True, help="Print the plan only; change nothing.")
@click.option(
    "--expect-revision",
    type=int,
    default=None,
    metavar="N",
    help="Apply only if the config is still at revision N (e.g. the one a reviewed diff showed).",
)
@click.option("--allow-empty", is_flag=True, help="Allow a FILE without resources (deletes everything).")
@secrets_option
@json_option
def apply_cmd(
    file: str, partial: bool, dry_run: bool, expect_revision: int | None, allow_empty: bool,
    show_secrets: bool, as_json: bool,
) -> None:
    """Make the cluster's config equal to FILE, in one all-or-nothing transaction.

    FILE holds the whole desired config: resources it does not list are DELETED
    (unless --partial). The plan is printed, then applied with a revision check:
    if someone changed the config meanwhile, nothing is applied.

    \b
    Examples:
      gwadm export -o gateway.yaml            start from what runs now
      gwadm apply -f gateway.yaml --dry-run   see the plan only
      gwadm apply -f gateway.yaml
      gwadm apply -f new-route.yaml --partial
      cat gateway.json | gwadm apply -f -

    \b
    File shape (kinds map ids to specs, see docs/operators.md):
      upstreams: {u1: {targets: [{host: 10.0.0.5, port: 8080}]}}
      routes:    {r1: {paths: [/api], upstream: u1}}
    """
    run(read_document(file), partial=partial, dry_run=dry_run, as_json=as_json,
        show_secrets=show_secrets, expect_revision=expect_revision, allow_empty=allow_empty)  # fmt: skip


class DiffError(click.ClickException):
    exit_code = 2


@click.command("diff")
@conn_options
@file_option
@partial_option
@secrets_option
@json_option
@click.pass_context
def diff_cmd(ctx: click.Context, file: str, partial: bool, show_secrets: bool, as_json: bool) -> None:
    """Show what `gwadm apply -f FILE` would change, and change nothing.

    Exit status like diff(1): 0 no changes, 1 changes, 2 trouble (bad file,
    cluster unreachable, ...), so CI can gate on it.

    \b
    Examples:
      gwadm diff -f gateway.yaml
      gwadm diff -f gateway.yaml --json | jq '.summary'
      gwadm diff -f extra-routes.yaml --partial || echo "drift"
    """
    try:
        doc = read_document(file)
        client = make_client()
        plan = plan_against(client, doc, desired_from(doc, partial, client), partial)
    except click.ClickException as exc:
        raise DiffError(exc.format_message()) from None
    except Exception as exc:
        from cli.main import to_user_error  # the root's error mapping (imported late: it imports us)

        err = to_user_error(exc)
        if err is None:
            raise
        raise DiffError(err.format_message()) from exc
    if as_json:
        console.print_json(plan.to_json(show_secrets))
    else:
        show_plan(plan, show_secrets)
    ctx.exit(0 if plan.empty else 1)


COMMANDS = [apply_cmd, diff_cmd]
