"""`gwadm openapi`: the OpenAPI 3.1 description of the admin API (gateway/openapi.py).

By default the document is generated locally from this installation's schemas: it needs no
cluster and is byte-identical to what a node of the same version serves at ``/v1/openapi.json``.
``--from-cluster`` asks a node instead (for a cluster running another version).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.connection import conn_options, make_client
from cli.docfile import write_private
from gateway.openapi import build_openapi


@click.command("openapi")
@conn_options
@click.option("--from-cluster", is_flag=True, help="Fetch the document from a node (GET /v1/openapi.json).")
@click.option("--server", "server_url", metavar="URL", default=None,
              help="Put URL into the document's servers list (default: none; with --from-cluster: the node's).")
@click.option("--output", "-o", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
def openapi_cmd(from_cluster: bool, server_url: str | None, output: str | None) -> None:
    """Print the admin API's OpenAPI 3.1 document (JSON).

    \b
    Examples:
      gwadm openapi > openapi.json
      gwadm openapi --from-cluster -o openapi.json
    """
    doc: dict[str, Any]
    if from_cluster:
        doc = make_client(timeout=10.0).request("GET", "/v1/openapi.json")
        if server_url:
            doc["servers"] = [{"url": server_url}]
    else:
        doc = build_openapi(server_url)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_private(output, text)
        click.echo(f"wrote the OpenAPI document ({len(doc['paths'])} paths) to {output}")


COMMANDS = [openapi_cmd]
