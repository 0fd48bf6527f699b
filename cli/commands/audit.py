"""`gwadm audit`: the replicated audit log of admin writes (GET /v1/audit, admin token).

Plain output is one line per record (time, subject, role, op kind/id, revision, client, request
id); ``--json`` prints one document, or with ``--follow`` one JSON record per line as they come.
``--follow`` polls every ``--interval`` seconds for records with a greater ``seq``.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import click

from cli import console
from cli.commands.cluster import json_option
from cli.connection import conn_options, make_client


def format_record(rec: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec["time"])) if rec.get("time") else "-"
    what = f"{rec.get('op')} {rec.get('kind')}/{rec.get('id') or '-'}"
    return (f"{when}Z  #{rec.get('seq')}  {rec.get('subject') or '-'} ({rec.get('role') or '-'})  {what}  "
            f"rev {rec.get('revision') if rec.get('revision') is not None else '-'}  "
            f"from {rec.get('client') or '-'}  req {rec.get('request_id') or '-'}")


def _query(subject: str | None, kind: str | None, since: int | None, after: int, limit: int) -> str:
    params: dict[str, Any] = {"limit": limit}
    if subject:
        params["subject"] = subject
    if kind:
        params["kind"] = kind
    if since is not None:
        params["since"] = since
    if after:
        params["after"] = after
    return "/v1/audit?" + urlencode(params)


@click.command("audit")
@conn_options
@click.option("--subject", default=None, help="Only records of this token subject.")
@click.option("--kind", default=None, help="Only records of this kind (upstreams, routes, ..., tokens).")
@click.option("--since", type=click.IntRange(min=0), default=None,
              help="Only records whose resulting revision is greater than this.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="At most this many (the newest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they are written.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between polls with --follow.")
@json_option
def audit_cmd(subject: str | None, kind: str | None, since: int | None, limit: int, follow: bool,
              interval: float, as_json: bool) -> None:
    """Show who changed what: the replicated audit log (needs an admin token).

    \b
    Examples:
      gwadm audit
      gwadm audit --kind routes --since 120
      gwadm audit --follow --json
    """
    client = make_client(timeout=10.0)
    page = client.request("GET", _query(subject, kind, since, 0, limit))
    if as_json and not follow:
        console.print_json(page)
        return
    if page.get("dropped") and not as_json:
        console.print_note(f"({page['dropped']} older records were dropped: the log keeps the newest)", "dim")
    after = 0
    while True:
        for rec in page["items"]:
            click.echo(json.dumps(rec, sort_keys=True) if as_json else format_record(rec))
            after = max(after, int(rec["seq"]))
        if not follow:
            return
        after = max(after, int(page.get("next_seq", 1)) - 1)
        time.sleep(interval)
        page = client.request("GET", _query(subject, kind, since, after, 10_000))


COMMANDS = [audit_cmd]
