"""`gwadm cert init|issue|renew|list`: the cluster's private CA and its members' certificates.

`cluster up` does all of this for a local cluster; these commands serve renewals and deployments
on several hosts (docker-compose.yml's ``init`` service uses ``init`` and ``issue``). Files live in
``DIR/tls`` (cli/certs.py); the CA key stays there, 0600.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli import certs, console
from cli.commands.cluster import dir_option, json_option
from cli.connection import current_options, resolve_dir
from cli.layout import write_private
from cli.supervisor import Supervisor, SupervisorError
from cluster.auth import mint_token, new_secret


def _dir(dir_: str | None) -> Path:
    return Path(dir_) if dir_ is not None else resolve_dir(current_options())


@click.group(name="cert")
def cert_group() -> None:
    """The cluster's CA and the certificates of its nodes and proxies (DIR/tls)."""


@cert_group.command("init")
@dir_option
def init_cmd(dir_: str | None) -> None:
    """Create the CA in DIR/tls unless it exists (idempotent)."""
    try:
        paths = certs.create_ca(_dir(dir_))
    except OSError as exc:
        raise click.ClickException(f"cannot write the CA: {exc.strerror or exc}") from None
    click.echo(f"CA certificate: {paths.cert} (key {paths.key}, 0600)")


@cert_group.command("issue")
@dir_option
@click.argument("name")
@click.option("--san", "sans", multiple=True, required=True, metavar="ADDR",
              help="An IP address or DNS name the member is reached at (repeat).")
@click.option("--client", is_flag=True, help="Also a client certificate (proxies, for mutual TLS).")
@click.option("--days", type=click.IntRange(1, 3650), default=certs.LEAF_DAYS, show_default=True)
@click.option("--keep", is_flag=True, help="Keep an existing certificate of that name (idempotent init scripts).")
def issue_cmd(dir_: str | None, name: str, sans: tuple[str, ...], client: bool, days: int, keep: bool) -> None:
    """Issue DIR/tls/NAME.pem + NAME.key signed by the CA."""
    d = _dir(dir_)
    existing = certs.member_paths(d, name)
    if keep and existing.cert.exists() and existing.key.exists():
        click.echo(f"kept {existing.cert}")
        return
    try:
        paths = certs.issue(d, name, list(sans), server=True, client=client, days=days)
    except certs.CertError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"issued {paths.cert} (SANs {', '.join(sans)}, {days} days)")


@cert_group.command("renew")
@dir_option
@click.option("--all", "renew_all", is_flag=True,
              help=f"Re-issue every certificate (default: those expiring within {certs.RENEW_BEFORE_DAYS} days).")
@json_option
def renew_cmd(dir_: str | None, renew_all: bool, as_json: bool) -> None:
    """Re-issue the node and proxy certificates of the local cluster in DIR (same SANs, 1 year).

    Members load certificates at start: restart them afterwards (`gwadm cluster stop` + `start`,
    one at a time keeps the cluster available)."""
    sup = Supervisor(_dir(dir_))
    try:
        cluster = sup.load()
    except SupervisorError as exc:
        raise click.ClickException(str(exc)) from None
    if not cluster.get("tls"):
        raise click.ClickException(f"{sup.layout.dir} was created with --insecure: it has no certificates")
    rows: list[dict[str, Any]] = []
    for group in ("nodes", "proxies"):
        for m in cluster[group]:
            paths = certs.member_paths(sup.layout.dir, m["id"])
            left = certs.cert_info(paths.cert)["days_left"] if paths.cert.exists() else -1
            assert isinstance(left, int)
            if renew_all or left < certs.RENEW_BEFORE_DAYS:
                sans = certs.sans_of(paths.cert) if paths.cert.exists() else []
                if not sans:
                    sans = sup.default_sans(group, m)
                certs.issue(sup.layout.dir, m["id"], sans, server=True, client=group == "proxies")
                rows.append({"id": m["id"], "result": "renewed", "days_left": certs.LEAF_DAYS})
            else:
                rows.append({"id": m["id"], "result": "kept", "days_left": left})
    if as_json:
        console.print_json(rows)
        return
    for r in rows:
        click.echo(f"{r['id']}: {r['result']} ({r['days_left']} days left)")
    if any(r["result"] == "renewed" for r in rows):
        click.echo("restart the renewed members to load their new certificates (gwadm cluster stop/start NAME)")


@cert_group.command("list")
@dir_option
@json_option
def list_cmd(dir_: str | None, as_json: bool) -> None:
    """Every certificate in DIR/tls: name, SANs, expiry."""
    d = certs.tls_dir(_dir(dir_))
    rows = [{"file": str(p), **certs.cert_info(p)} for p in sorted(d.glob("*.pem"))] if d.is_dir() else []
    if as_json:
        console.print_json(rows)
        return
    if not rows:
        click.echo(f"no certificates in {d}")
    for r in rows:
        sans = r["sans"] if isinstance(r["sans"], list) else []
        click.echo(f"{r['name']}: {', '.join(map(str, sans)) or '-'}; until {r['not_after']} ({r['days_left']} days)")


def _copy_private(src: Path, dst: Path, keep: bool = True) -> None:
    if keep and dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_private(dst, src.read_text())


@cert_group.command("bootstrap")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False), help="Where the CA (and its key) live.")
@click.option("--cp-dir", required=True, type=click.Path(file_okay=False),
              help="Files for control-plane nodes: secret, admin.token, ca.pem, NODE.pem/.key.")
@click.option("--dp-dir", required=True, type=click.Path(file_okay=False),
              help="Files for proxies: proxy.token, ca.pem, proxy.pem/.key.")
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME", help="A node's DNS name (repeat).")
@click.option("--proxy-san", "proxy_sans", multiple=True, metavar="NAME",
              help="A name or address proxies are reached at (repeat; the certificate is shared by all proxies).")
@click.option("--san", "extra_sans", multiple=True, metavar="NAME", default=("localhost", "127.0.0.1"),
              show_default=True, help="Extra SANs of every certificate (the published admin endpoint).")
def bootstrap_cmd(ca_dir: str, cp_dir: str, dp_dir: str, nodes: tuple[str, ...], proxy_sans: tuple[str, ...],
                  extra_sans: tuple[str, ...]) -> None:
    """Secret, tokens and certificates of a deployment on several hosts, split by who needs what.

    Idempotent: what exists is kept (a second run changes nothing), so docker-compose.yml's `init`
    service can run it on every `up`. The CA key stays in --ca-dir; nodes get the secret, proxies
    never do. Every secret file is 0600."""
    ca, cp, dp = Path(ca_dir), Path(cp_dir), Path(dp_dir)
    certs.create_ca(ca)
    ca_pem = certs.ca_paths(ca).cert
    if not (cp / "secret").exists():
        write_private(cp / "secret", new_secret() + "\n")
    secret = (cp / "secret").read_text().strip()
    if not (cp / "admin.token").exists():
        write_private(cp / "admin.token", mint_token(secret, "admin", "compose-admin") + "\n")
    if not (dp / "proxy.token").exists():
        write_private(dp / "proxy.token", mint_token(secret, "proxy", "compose-proxies") + "\n")
    made = []
    for name, target, client, sans in (
        *((n, cp, False, [n, *extra_sans]) for n in nodes),
        ("proxy", dp, True, [*(proxy_sans or ["proxy"]), *extra_sans]),
    ):
        issued = certs.member_paths(ca, name)
        if not (issued.cert.exists() and issued.key.exists()):
            certs.issue(ca, name, sans, server=True, client=client)
            made.append(name)
        _copy_private(issued.key, target / f"{name}.key")
        (target / f"{name}.pem").write_bytes(issued.cert.read_bytes())
    for target in (cp, dp):
        (target / "ca.pem").write_bytes(ca_pem.read_bytes())
    click.echo(f"bootstrap: CA {ca_pem}; issued {', '.join(made) or 'nothing new'}; nodes {', '.join(nodes)}")


COMMANDS = [cert_group]
