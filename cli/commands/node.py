"""`gwadm node run`: one control-plane node in the foreground (systemd, compose, Kubernetes).

Settings come from a TOML file (`--config`), flags, or GWADM_* environment variables; flags and
environment win over the file.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from cluster.raft import RaftBindError, RaftConfigError


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
@click.option("--secret", envvar="GWADM_SECRET", help="The cluster secret (prefer --secret-file).")
@click.option("--source-address", envvar="GWADM_SOURCE_ADDRESS",
              help="Bind outgoing Raft and peer connections to this local address.")
@click.option("--fsync/--no-fsync", default=None, help="Flush the journal before acknowledging (default on).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def run(
    config_file: str | None,
    node_id: str | None,
    raft_addr: str | None,
    admin_addr: str | None,
    peers: tuple[str, ...],
    data_dir: str | None,
    secret_file: str | None,
    secret: str | None,
    source_address: str | None,
    fsync: bool | None,
    log_level: str,
) -> None:
    """Run one control-plane node in the foreground until SIGTERM/SIGINT."""
    from cluster.node import SettingsError, load_settings, parse_peer, serve

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
            "secret": secret,
            "fsync": fsync,
            "source_address": source_address,
            "peers": [parse_peer(p) for p in expanded],
        }
        settings = load_settings(config_file, overrides)
        asyncio.run(serve(settings))
    except (SettingsError, RaftConfigError, RaftBindError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


COMMANDS = [node_group]
