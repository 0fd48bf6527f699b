"""`gwadm node run|add|remove`: run a control-plane node; change the cluster's membership.

`run`: one node in the foreground (systemd, compose, Kubernetes). Settings come from a TOML file
(`--config`), flags, or GWADM_* environment variables; flags and environment win over the file.

`add`/`remove` ask the leader to change the Raft membership (POST/DELETE /v1/cluster/members,
docs/membership-and-tokens.md). On a local cluster (DIR/cluster.json, no --endpoint) they also do
the process work: `add` records the node in cluster.json, writes its node.toml, starts it and waits
until it has caught up; `remove` stops the removed node and forgets it. Against a remote cluster
(--endpoint) only the API call is made, and the command prints what to do on the machines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import quote

import click

from cli import console, render
from cli.client import AdminClient
from cli.commands.cluster import _fail_not_ready, json_option
from cli.connection import conn_options, current_options, make_client, resolve_dir
from cli.procs import free_ports
from cli.supervisor import HOST, NotReady, Supervisor
from cluster.raft import RaftBindError, RaftConfigError
from gateway.model import is_valid_id


@click.group(name="node")
def node_group() -> None:
    """Control-plane node commands."""


@node_group.command("run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="GWADM_CONFIG",
              help="TOML settings file (see docs/contracts.md §6).")
@click.option("--id", "node_id", envvar="GWADM_NODE_ID", help="This node's id, e.g. n1.")
@click.option("--raft-addr", envvar="GWADM_RAFT_ADDR", help="host:port for Raft traffic.")
@click.option("--admin-addr", envvar="GWADM_ADMIN_ADDR", help="host:port for the admin API.")
@click.option("--peer", "peers", multiple=True, envvar="GWADM_PEERS",
              help="ID,RAFT_HOST:PORT,ADMIN_URL of another member (repeat; env: ';'-separated).")
@click.option("--data-dir", envvar="GWADM_DATA_DIR", help="Directory for the Raft journal and dumps.")
@click.option("--secret-file", envvar="GWADM_SECRET_FILE", help="File holding the cluster secret.")
@click.option("--source-address", envvar="GWADM_SOURCE_ADDRESS",
              help="Bind outgoing Raft and peer connections to this local address.")
@click.option("--fsync/--no-fsync", default=None, help="Flush the journal before acknowledging (default on).")
@click.option("--bind-host", envvar="GWADM_BIND_HOST",
              help="Listen on this host (e.g. 0.0.0.0) with the ports of --admin-addr/--raft-addr, which stay "
                   "the addresses peers use.")
@click.option("--tls-cert", envvar="GWADM_TLS_CERT", help="PEM certificate of the admin API and push stream (https/wss).")
@click.option("--tls-key", envvar="GWADM_TLS_KEY", help="PEM key of --tls-cert.")
@click.option("--ca", envvar="GWADM_CA", help="CA certificate: verifies peers and, with --mtls, proxies.")
@click.option("--mtls/--no-mtls", default=None, help="Proxies must present a certificate signed by --ca on /v1/stream.")
@click.option("--insecure", is_flag=True, default=None, envvar="GWADM_INSECURE",
              help="Serve plain HTTP (no TLS): tokens cross the network in clear. Tests and loopback only.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one JSON object per line, node events with their fields (cluster/events.py).")
def run(
    config_file: str | None,
    node_id: str | None,
    raft_addr: str | None,
    admin_addr: str | None,
    peers: tuple[str, ...],
    data_dir: str | None,
    secret_file: str | None,
    source_address: str | None,
    fsync: bool | None,
    bind_host: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    ca: str | None,
    mtls: bool | None,
    insecure: bool | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run one control-plane node in the foreground until SIGTERM/SIGINT."""
    from cluster.events import JsonFormatter
    from cluster.node import SettingsError, load_settings, parse_peer, serve

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    expanded: list[str] = []
    for item in peers:
        expanded.extend(p for p in item.split(";") if p.strip())
    try:
        overrides = {
            "node_id": node_id,
            "raft_addr": raft_addr,
            "admin_addr": admin_addr,
            "data_dir": data_dir,
            "secret_file": secret_file,
            # The secret itself never on a command line (it would show in ps): a file, or GWADM_SECRET.
            "secret": os.environ.get("GWADM_SECRET") or None,
            "fsync": fsync,
            "source_address": source_address,
            "bind_host": bind_host,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "ca": ca,
            "mtls": mtls,
            "insecure": insecure or None,
            "peers": [parse_peer(p) for p in expanded],
        }
        settings = load_settings(config_file, overrides)
        asyncio.run(serve(settings))
    except (SettingsError, RaftConfigError, RaftBindError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def is_remote() -> bool:
    """Endpoints given explicitly: a remote cluster, whatever DIR holds (as for `gwadm status`)."""
    return bool(current_options().endpoints or os.environ.get("GWADM_ENDPOINTS"))


def _hostport(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} must look like host:port", param_hint=param)
    return value


def _client(timeout: float) -> AdminClient:
    """Membership calls wait for the leader (up to --timeout): no failover retries beyond that."""
    client = make_client(timeout=timeout + 10)
    client.retry_for = min(client.retry_for, 3.0)
    return client


@node_group.command("add")
@conn_options
@click.argument("node_id", metavar="ID")
@click.option("--raft-addr", help="host:port of its Raft traffic (local cluster: a free port).")
@click.option("--admin-addr", help="host:port of its admin API (local cluster: a free port).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the change to commit and (local) for the node to catch up.")
@json_option
def add_cmd(node_id: str, raft_addr: str | None, admin_addr: str | None, timeout: float, as_json: bool) -> None:
    """Add node ID to the cluster (local: and start it)."""
    if not is_valid_id(node_id):
        raise click.BadParameter(f"{node_id!r}: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
                                 param_hint="ID")
    raft_addr, admin_addr = _hostport(raft_addr, "--raft-addr"), _hostport(admin_addr, "--admin-addr")
    sup = None if is_remote() else Supervisor(resolve_dir(current_options()))
    if raft_addr is None or admin_addr is None:
        if sup is None:
            raise click.UsageError("a remote cluster needs --raft-addr and --admin-addr of the new node")
        ports = free_ports(2, HOST)
        raft_addr, admin_addr = raft_addr or f"{HOST}:{ports[0]}", admin_addr or f"{HOST}:{ports[1]}"
    member = {"id": node_id, "raft_addr": raft_addr, "admin_url": f"{_scheme(sup)}://{admin_addr}"}
    if sup is not None:
        sup.check_new_node({**member, "pid": None})
    result: dict[str, Any] = _client(timeout).request(
        "POST", f"/v1/cluster/members?timeout={min(timeout, 120):g}", member)
    if sup is None:
        _report_remote_add(result, member, as_json)
        return
    try:
        cluster = sup.join_node({**member, "pid": None}, timeout)
    except NotReady as exc:
        _fail_not_ready(exc, timeout, f"{node_id} is a member now: fix it and `gwadm cluster start {node_id}`, "
                                      f"or take it out again with `gwadm node remove {node_id}`")
        return
    if as_json:
        console.print_json({**result, "cluster": cluster})
        return
    click.echo(f"{node_id} added and caught up; members: {_ids(result)} (leader {result.get('leader')})")
    console.show(render.cluster_table(cluster))


def _report_remote_add(result: dict[str, Any], member: dict[str, str], as_json: bool) -> None:
    peers = [m for m in result.get("members", []) if m["id"] != member["id"]]
    argv = ["gwadm node run", f"--id {member['id']}", f"--raft-addr {member['raft_addr']}",
            f"--admin-addr {member['admin_url'].split('://', 1)[-1]}", "--data-dir DATA_DIR",
            "--secret-file SECRET_FILE",
            *(["--tls-cert CERT", "--tls-key KEY", "--ca CA"] if member["admin_url"].startswith("https")
              else ["--insecure"]),
            *(f"--peer {p['id']},{p['raft_addr']},{p['admin_url']}" for p in peers)]
    if as_json:
        console.print_json({**result, "run": " ".join(argv)})
        return
    click.echo(f"{member['id']} is a member now; members: {_ids(result)} (leader {result.get('leader')})")
    click.echo("start it on its machine (an empty data dir, the cluster's secret):")
    click.echo("  " + " \\\n      ".join(argv))


@node_group.command("remove")
@conn_options
@click.argument("node_id", metavar="ID")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the change to commit (and, local, for the node to stop).")
@json_option
def remove_cmd(node_id: str, timeout: float, as_json: bool) -> None:
    """Remove node ID from the cluster (local: and stop it)."""
    sup = None if is_remote() else Supervisor(resolve_dir(current_options()))
    if sup is not None:
        sup.load()  # a missing DIR is an error before anything changes
    result: dict[str, Any] = _client(timeout).request(
        "DELETE", f"/v1/cluster/members/{quote(node_id, safe='')}?timeout={min(timeout, 120):g}")
    cluster = sup.retire_node(node_id, timeout) if sup is not None else None
    if as_json:
        console.print_json({**result, **({"cluster": cluster} if cluster is not None else {})})
        return
    click.echo(f"{node_id} removed; members: {_ids(result)} (leader {result.get('leader')})")
    if cluster is not None:
        console.show(render.cluster_table(cluster))
    else:
        click.echo(f"stop the process of {node_id} now (it is no longer a member), and drop it from the "
                   "[[peers]] of the other nodes' node.toml; to add it back later, start it with an "
                   "empty data dir")


def _scheme(sup: Supervisor | None) -> str:
    """https unless the cluster is plain HTTP (a local one made with --insecure, or http endpoints)."""
    if sup is not None:
        return "https" if sup.load().get("tls") else "http"
    endpoints = make_client().endpoints
    return "http" if endpoints and all(e.startswith("http://") for e in endpoints) else "https"


def _ids(result: dict[str, Any]) -> str:
    return ", ".join(m["id"] for m in result.get("members", []))


COMMANDS = [node_group]
