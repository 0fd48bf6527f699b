"""`gwadm export`: the whole running config as an apply file (``gwadm apply -f`` reads it back).

The output is the apply shape ``{upstreams: {id: spec}, routes: ..., consumers: ..., plugins: ...}``
with the read-only fields (``id``, revisions) removed, kinds in a fixed order, ids sorted and fields
in schema order, so exports of the same config are byte-identical and diff well in git (nothing
in the file depends on the revision or the time). Specs are
exported as stored (normalized), which is why ``export`` then ``apply -f`` plans no changes.
Exports hold consumer credentials: ``-o FILE`` writes 0600, atomically.
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml  # type: ignore[import-untyped]

from cli import console
from cli.commands.apply import progress
from cli.commands.cluster import json_option
from cli.connection import conn_options, make_client
from cli.docfile import write_private
from cli.plan import current_from_config, export_shape
from cli.secrets import redact_specs
from gateway.frozen import FrozenDict, FrozenList

HEADER = "gwadm config: `gwadm apply -f FILE` makes a cluster match it (resources not listed are deleted)"
"""Static on purpose: no revision or time in the file, so unchanged configs export byte-identical."""


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """Block lists indented under their key (``targets:`` then ``  - host:``), as people write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


# read-only values (gateway/frozen.py: stored specs, filled defaults) are written as the plain ones
_Dumper.add_representer(FrozenDict, yaml.SafeDumper.represent_dict)
_Dumper.add_representer(FrozenList, yaml.SafeDumper.represent_list)


def dump(shape: dict[str, Any], fmt: str, header: str | None = None) -> str:
    """Serialize an apply-shaped mapping; YAML gets ``header`` as a leading comment."""
    if fmt == "json":
        return json.dumps(shape, indent=2, ensure_ascii=False) + "\n"
    body: str = yaml.dump(
        shape, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
    return (f"# {header}\n" if header else "") + body


def guess_format(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output and output.lower().endswith(".json"):
        return "json"
    return "yaml"


@click.command("export")
@conn_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default=None,
    help="Output format (default: from the -o extension, else yaml).",
)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    default=None,
    help="Write to FILE (mode 0600: it holds credentials) instead of stdout.",
)
@click.option("--show-secrets", is_flag=True,
              help="Write key-auth keys and HS256 secrets (default: <sensitive>; apply keeps the cluster's).")
@json_option
def export_cmd(fmt: str | None, output: str | None, show_secrets: bool, as_json: bool) -> None:
    """Print the whole config in the shape `gwadm apply -f` reads.

    Credentials (key-auth keys, HS256 secrets) are written as <sensitive> unless
    --show-secrets; `gwadm apply -f` of such a file keeps the cluster's values.
    With --json the document is JSON (with -o: a JSON summary is printed).

    \b
    Examples:
      gwadm export > gateway.yaml
      gwadm export -o backup.json
      gwadm export -o gateway.yaml && gwadm diff -f gateway.yaml   # no changes, exit 0
    """
    fmt = guess_format(output, "json" if as_json and not output and not fmt else fmt)
    with progress("fetching the config"):
        config = make_client(timeout=30.0).config()
    revision, specs = current_from_config(config)
    shape = export_shape(specs if show_secrets else redact_specs(specs))
    text = dump(shape, fmt, HEADER)
    if output is None:
        click.echo(text, nl=False)
        return
    write_private(output, text)
    counts = {kind: len(items) for kind, items in shape.items()}
    if as_json:
        console.print_json({"file": output, "format": fmt, "revision": revision, "hash": config.get("hash"),
                            "counts": counts})  # fmt: skip
    else:
        what = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        click.echo(f"exported revision {revision} ({what}) to {output}")


COMMANDS = [export_cmd]
