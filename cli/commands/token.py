"""`gwadm token create|revoke|rotate|status`: admin API tokens, their revocation and rotation.

Tokens are HS256 JWTs signed with a key derived from the cluster secret (cluster/auth.py). Every
node also enforces a replicated policy: a deny-list of token ids and a token generation that
`rotate` bumps (docs/membership-and-tokens.md). So `create` normally asks the cluster to mint
(POST /v1/tokens: the token gets the current generation); `--secret-file`/`--offline` mints from
the secret without asking anyone (bootstrap, recovery), for `--generation` (default 0).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import click

from cli import console
from cli.client import AdminClient
from cli.commands.cluster import json_option
from cli.commands.node import is_remote
from cli.connection import conn_options, current_options, make_client, resolve_dir
from cli.layout import token_path, write_private
from cli.supervisor import Supervisor
from cluster.auth import ROLES, mint_token

DURATION = re.compile(r"^(\d+)([smhdy]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """``90``, ``15m``, ``12h``, ``30d``, ``1y`` -> seconds (at least 1)."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 3600, 15m, 12h, 30d or 1y", param_hint="--ttl")
    return int(match.group(1)) * UNITS[match.group(2)]


def _when(exp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(exp)) if isinstance(exp, int) else "never pruned"


@click.group(name="token")
def token_group() -> None:
    """Admin API tokens: create, revoke, rotate."""


@token_group.command("create")
@conn_options
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="admin: read and write; viewer: read only; proxy: the config stream only; "
                   "registrar: register, heartbeat and deregister targets only (gwadm register).")
@click.option("--subject", default="gwadm-user", show_default=True, help="Who the token is for (the JWT sub).")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: seconds or 15m, 12h, 30d, 1y.")
@click.option("--secret-file", type=click.Path(dir_okay=False), envvar="GWADM_SECRET_FILE",
              help="Mint offline from this cluster secret instead of asking the cluster.")
@click.option("--offline", is_flag=True, help="Mint offline from DIR/secret instead of asking the cluster.")
@click.option("--generation", type=click.IntRange(min=0), default=None,
              help="Offline only: the cluster's token generation (`gwadm token status`; default 0).")
@json_option
def create(role: str, subject: str, ttl: str, secret_file: str | None, offline: bool,
           generation: int | None, as_json: bool) -> None:
    """Print a new token for ROLE (the cluster mints it for its current generation)."""
    seconds = parse_duration(ttl)
    if secret_file or offline:
        path = Path(secret_file) if secret_file else resolve_dir() / "secret"
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read the cluster secret {path}: {exc.strerror}") from None
        if not secret:
            raise click.ClickException(f"the cluster secret {path} is empty")
        token = mint_token(secret, role, subject, seconds, generation=generation or 0)
        if as_json:
            console.print_json({"token": token, "generation": generation or 0})
        else:
            click.echo(token)
        return
    if generation is not None:
        raise click.UsageError("--generation is for offline minting (--secret-file or --offline)")
    minted: dict[str, Any] = make_client().request(
        "POST", "/v1/tokens", {"role": role, "subject": subject, "ttl_seconds": seconds})
    if as_json:
        console.print_json(minted)
        return
    click.echo(minted["token"])
    console.print_note(f"jti {minted['jti']}, expires {_when(minted['exp'])}, generation {minted['generation']}",
                       "dim")


@token_group.command("revoke")
@conn_options
@click.argument("jti_or_token", metavar="JTI|TOKEN")
@click.option("--exp", type=int, default=None,
              help="Unix time the token expires (only for ids of tokens minted before gwadm put it in the jti).")
@json_option
def revoke(jti_or_token: str, exp: int | None, as_json: bool) -> None:
    """Reject one token on every node from now on, by its jti (or the token itself)."""
    value = jti_or_token.strip()
    body: dict[str, Any] = {"token": value} if value.count(".") == 2 else {"jti": value}
    if exp is not None:
        body["exp"] = exp
    result: dict[str, Any] = make_client().request("POST", "/v1/tokens/revoke", body)
    if as_json:
        console.print_json(result)
        return
    click.echo(f"revoked {result['revoked']} (deny-list entry kept until {_when(result['until'])}); "
               f"enforced on {', '.join(result['enforced_on'])}")
    _warn_pending(result)


def _warn_pending(result: dict[str, Any]) -> None:
    if result.get("pending"):
        console.print_warning(f"not confirmed yet by {', '.join(result['pending'])} (down or lagging): "
                              "they enforce it as soon as they catch up")


@token_group.command("rotate")
@conn_options
@click.option("--restart-proxies/--no-restart-proxies", default=True, show_default=True,
              help="Local cluster: restart the proxies one by one with the new DIR/proxy.token.")
@json_option
def rotate(restart_proxies: bool, as_json: bool) -> None:
    """Reject every token minted so far (a new token generation); print or store a new admin token."""
    client = make_client()
    result: dict[str, Any] = client.request("POST", "/v1/tokens/rotate")
    if is_remote():
        if as_json:
            console.print_json(result)
            return
        click.echo(result["token"])
        console.print_note(f"token generation {result['generation']}: every older token is rejected now, on "
                           f"{', '.join(result['enforced_on'])}. Above: a new admin token for you. Re-issue the "
                           "others, proxies included (`gwadm token create --role proxy`, then restart each "
                           "proxy with its new --token-file).", "yellow")
        _warn_pending(result)
        return
    done = _reissue_local(client, result["token"], restart_proxies)
    if as_json:
        console.print_json({**result, **done})
        return
    click.echo(f"token generation {result['generation']}: every older token is rejected now, on "
               f"{', '.join(result['enforced_on'])}")
    click.echo(f"new admin token in {done['admin_token_file']}, new proxy token in {done['proxy_token_file']}"
               + (f"; restarted {', '.join(done['restarted'])}" if done["restarted"] else ""))
    _warn_pending(result)


def _reissue_local(client: AdminClient, admin_token: str, restart_proxies: bool) -> dict[str, Any]:
    """After a rotation on a local cluster: new DIR/admin.token and DIR/proxy.token; the running
    proxies restarted one at a time (they read their token file only at start)."""
    sup = Supervisor(resolve_dir(current_options()))
    cluster = sup.load()
    admin_file = token_path(sup.layout, cluster)
    write_private(admin_file, admin_token + "\n")
    fresh = AdminClient(client.endpoints, admin_token, timeout=client.timeout, retry_for=client.retry_for)
    proxy = fresh.request("POST", "/v1/tokens", {"role": "proxy", "subject": "gwadm-proxies",
                                                 "ttl_seconds": 365 * 86400})
    write_private(sup.layout.proxy_token, proxy["token"] + "\n")
    restarted = []
    for p in cluster["proxies"] if restart_proxies else []:
        if sup.running("proxies", p):
            sup.stop([p["id"]])
            sup.start([p["id"]])
            restarted.append(p["id"])
    return {"admin_token_file": str(admin_file), "proxy_token_file": str(sup.layout.proxy_token),
            "restarted": restarted}


@token_group.command("status")
@conn_options
@json_option
def status(as_json: bool) -> None:
    """The cluster's token generation and deny-list."""
    result: dict[str, Any] = make_client().request("GET", "/v1/tokens")
    if as_json:
        console.print_json(result)
        return
    click.echo(f"token generation {result['generation']}; {len(result['revoked'])} revoked token(s)")
    for entry in result["revoked"]:
        click.echo(f"  {entry['jti']}  until {_when(entry['exp'])}")


COMMANDS = [token_group]
