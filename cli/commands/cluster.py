"""`gwadm cluster up|down|status|stop|start|kill`: a local cluster on loopback (DESIGN §7).

`cluster status` is `gwadm status` (cli/commands/status.py), added to this group as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli import console, render
from cli.commands.status import status_cmd
from cli.connection import current_options, resolve_dir
from cli.supervisor import NotReady, Supervisor

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def dir_option(f: F) -> F:
    return click.option(
        "--dir", "dir_", metavar="DIR", default=None,
        help="Cluster directory (default $GWADM_DIR or .gwadm).",
    )(f)  # fmt: skip


def _dir(dir_: str | None) -> str:
    return str(resolve_dir(current_options()) if dir_ is None else dir_)


def _fail_not_ready(exc: NotReady, timeout: float, hint: str | None = None) -> None:
    if exc.exited:
        console.print_error(f"{exc.member} {exc.reason}")
    else:
        console.print_error(f"{exc.member} is not ready after {timeout:g}s: {exc.reason}")
    if exc.log_tail:
        console.print_note(f"last lines of {exc.log_path}:", "bold")
        console.print_lines(exc.log_tail)
    elif exc.log_path is not None:
        console.print_note(f"(its log {exc.log_path} is empty)", "dim")
    if hint:
        console.print_note(hint, "yellow")
    raise click.exceptions.Exit(1)


@click.group(name="cluster")
def cluster_group() -> None:
    """Run a local cluster (CP nodes, proxies, a demo upstream) as background processes."""


@cluster_group.command("up")
@dir_option
@click.option("--nodes", type=int, default=None, help="Control-plane nodes (odd, >= 1) of a new cluster [default: 3].")
@click.option("--proxies", type=int, default=None, help="Proxies (data plane) of a new cluster [default: 1].")
@click.option(
    "--base-port", type=int, default=None, help="First of a contiguous port range (default: free ports)."
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--insecure", is_flag=True,
              help="New cluster without TLS: plain HTTP admin API, stream and proxies (tokens in clear).")
@click.option("--mtls", is_flag=True, help="New cluster: nodes accept only proxies with a certificate of its CA.")
@json_option
def up_cmd(
    dir_: str | None, nodes: int | None, proxies: int | None, base_port: int | None, timeout: float,
    insecure: bool, mtls: bool, as_json: bool,
) -> None:
    """Create (or restart) the cluster in DIR and wait until every member is ready.

    A new cluster uses TLS: a CA and per-member certificates in DIR/tls (`gwadm cert renew`
    re-issues them), https admin URLs, wss streams, https proxies."""
    if nodes is not None and (nodes < 1 or nodes % 2 == 0):
        raise click.BadParameter(f"must be odd and >= 1 (got {nodes})", param_hint="--nodes")
    if proxies is not None and proxies < 0:
        raise click.BadParameter(f"must be >= 0 (got {proxies})", param_hint="--proxies")
    with console.ProgressReporter("waiting for") as reporter:
        sup = Supervisor(_dir(dir_), reporter=reporter)
        try:
            res = sup.up(nodes, proxies, base_port, timeout=timeout, tls=not insecure, mtls=mtls)
        except NotReady as exc:
            failure: NotReady | None = exc
        else:
            failure = None
    if failure is not None:
        hint = (
            f"the members that did start keep running: `gwadm cluster down --dir {sup.layout.dir}` stops them"
        )
        _fail_not_ready(failure, timeout, hint)
    if not res.cluster.get("tls"):
        res.warnings.append(f"{sup.layout.dir} runs WITHOUT TLS (created with --insecure): tokens cross in clear")
    for w in res.warnings:
        console.print_warning(w)
    if as_json:
        console.print_json({**res.cluster, "admin_token": res.token, "curl": res.curl})
        return
    console.show(render.cluster_table(res.cluster))
    click.echo(f"admin token: {res.token}")
    click.echo(f"export GWADM_DIR={sup.layout.dir}   # or pass --dir to every gwadm command")
    if res.curl:
        click.echo("try the sample route:")
        click.echo(res.curl)


def _actions(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
    if as_json:
        console.print_json(rows)
    else:
        console.show(render.actions_table(rows, title))


@cluster_group.command("down")
@dir_option
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds before SIGKILL.")
@json_option
def down_cmd(dir_: str | None, timeout: float, as_json: bool) -> None:
    """Stop every member (SIGTERM, then SIGKILL after --timeout). Data is kept."""
    _actions(Supervisor(_dir(dir_)).down(timeout), "gwadm cluster down", as_json)


@cluster_group.command("stop")
@dir_option
@click.argument("names", nargs=-1)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds before SIGKILL.")
@json_option
def stop_cmd(dir_: str | None, names: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Stop members by name (n1, p1, demo, ...; all when none): SIGTERM, then SIGKILL."""
    _actions(Supervisor(_dir(dir_)).stop(names, timeout), "stopped", as_json)


@cluster_group.command("kill")
@dir_option
@click.argument("names", nargs=-1)
@json_option
def kill_cmd(dir_: str | None, names: tuple[str, ...], as_json: bool) -> None:
    """SIGKILL members by name (all when none)."""
    _actions(Supervisor(_dir(dir_)).stop(names, kill=True), "killed", as_json)


@cluster_group.command("start")
@dir_option
@click.argument("names", nargs=-1)
@click.option(
    "--timeout", type=float, default=15.0, show_default=True, help="Seconds to wait for each to answer."
)
@json_option
def start_cmd(dir_: str | None, names: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Start stopped members by name (all when none) and wait until they answer."""
    try:
        rows = Supervisor(_dir(dir_)).start(names, timeout)
    except NotReady as exc:
        _fail_not_ready(exc, timeout)
        return
    _actions(rows, "started", as_json)


cluster_group.add_command(status_cmd)


COMMANDS = [cluster_group]  # `gwadm status` itself is registered by cli/commands/status.py
