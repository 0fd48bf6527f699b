"""`gwadm token create`: mint an admin, viewer or proxy token from the cluster secret.

Tokens are HS256 JWTs signed with a key derived from the secret (cluster/auth.py), so whoever can
read the secret can mint them: run this where the secret lives (a local cluster's DIR/secret, or
the file given to `gwadm node run --secret-file`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from cluster.auth import ROLES, mint_token

DURATION = re.compile(r"^(\d+)([smhdy]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """``90``, ``15m``, ``12h``, ``30d``, ``1y`` -> seconds (at least 1)."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 3600, 15m, 12h, 30d or 1y", param_hint="--ttl")
    return int(match.group(1)) * UNITS[match.group(2)]


@click.group(name="token")
def token_group() -> None:
    """Admin API tokens."""


@token_group.command("create")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="admin: read and write; viewer: read only; proxy: the config stream only.")
@click.option("--subject", default="gwadm-user", show_default=True, help="Who the token is for (the JWT sub).")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: seconds or 15m, 12h, 30d, 1y.")
@click.option("--secret-file", type=click.Path(dir_okay=False), envvar="GWADM_SECRET_FILE",
              help="The cluster secret (default: DIR/secret of the local cluster).")
@click.option("--dir", "cluster_dir", type=click.Path(file_okay=False), default=None,
              help="Local cluster directory (default $GWADM_DIR or .gwadm).")
def create(role: str, subject: str, ttl: str, secret_file: str | None, cluster_dir: str | None) -> None:
    """Print a new token for ROLE, signed with the cluster secret."""
    seconds = parse_duration(ttl)
    path = Path(secret_file) if secret_file else Path(cluster_dir or os.environ.get("GWADM_DIR") or ".gwadm") / "secret"
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read the cluster secret {path}: {exc.strerror}") from None
    if not secret:
        raise click.ClickException(f"the cluster secret {path} is empty")
    click.echo(mint_token(secret, role, subject, seconds))


COMMANDS = [token_group]
