"""`gwadm status` (also `gwadm cluster status`) and `gwadm top` (= `gwadm status --watch`).

Local mode (no --endpoint, no $GWADM_ENDPOINTS) watches the cluster of DIR/cluster.json, re-read on
every refresh so members restarted with new PIDs are followed, and reads each proxy's /status and
/metrics. Remote mode watches the given endpoints and the members they report; proxies then come
from the nodes' registries, which give each proxy's status address (traffic figures from its
/metrics) and the time of its last ack.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli import console, render, tui
from cli.client import split_endpoints
from cli.connection import ConnectionConfigError, conn_options, current_options, resolve, resolve_dir
from cli.supervisor import Supervisor, SupervisorError

F = TypeVar("F", bound=Callable[..., Any])


def _local_targets(sup: Supervisor) -> Callable[[], tui.Targets]:
    """Re-read cluster.json each refresh; keep the last good reading if it is briefly unreadable."""
    last: list[tui.Targets] = []

    def targets() -> tui.Targets:
        try:
            cluster = sup.load()
            token = sup.token(cluster)
        except SupervisorError:
            if last:
                return last[0]
            raise

        def rows(group: str) -> tuple[dict[str, Any], ...]:
            running = {True: "running", False: "stopped"}
            return tuple({**m, "process": running[sup.running(group, m)]} for m in cluster.get(group, []))

        nodes = rows("nodes")
        got = tui.Targets(
            token=token,
            endpoints=tuple(str(n["admin_url"]) for n in nodes if n.get("admin_url")),
            nodes=nodes,
            proxies=rows("proxies"),
            upstreams=rows("upstreams"),
        )
        last[:] = [got]
        return got

    return targets


def _monitor() -> tui.Monitor:
    opts = current_options()
    if opts.endpoints or os.environ.get("GWADM_ENDPOINTS"):
        endpoints, token = resolve(opts)
        fixed = tui.Targets(token=token, endpoints=tuple(split_endpoints(endpoints)))
        return tui.Monitor(lambda: fixed)
    sup = Supervisor(resolve_dir(opts))
    if not sup.layout.exists():
        raise ConnectionConfigError(
            f"no cluster in {sup.layout.dir} (run `gwadm cluster up`, or pass --dir or --endpoint)"
        )
    return tui.Monitor(_local_targets(sup))


def show_status(watch: bool, interval: float, as_json: bool, title: str) -> None:
    """One snapshot, or a refresh every ``interval`` seconds: full screen on a terminal, else text."""
    if interval < 0.2:
        raise click.BadParameter(f"must be >= 0.2 seconds (got {interval:g})", param_hint="--interval")
    monitor = _monitor()
    if as_json:  # one document, or one JSON line per refresh
        console.watch_json(monitor.poll, interval if watch else None)
        return
    if not watch:
        console.show(render.status_view(monitor.poll(), console.out_console().width))
        return
    out = console.out_console()
    if out.is_terminal:
        tui.run(monitor, out, interval, title)
        return

    def plain() -> Any:  # a pipe or a file: every refresh printed in full, events included
        snap = monitor.poll()
        return render.live_view(snap, list(monitor.events), out.width, title)

    console.watch(plain, interval)


def _common(f: F) -> F:
    f = click.option(
        "--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes."
    )(f)
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (with --watch: one line per refresh)."
    )(f)
    return conn_options(f)


@click.command("status")
@_common
@click.option(
    "--watch", "-w", is_flag=True, help="Live view, refreshed every --interval (q or Ctrl-C quits)."
)
def status_cmd(watch: bool, interval: float, as_json: bool) -> None:
    """Nodes (role, term, indexes, lag, quorum, uptime), proxies (mode, lag, traffic), config."""
    show_status(watch, interval, as_json, "gwadm status")


@click.command("top")
@_common
def top_cmd(interval: float, as_json: bool) -> None:
    """Live view of the cluster: `gwadm status --watch` (q or Ctrl-C quits)."""
    show_status(True, interval, as_json, "gwadm top")


COMMANDS = [status_cmd, top_cmd]
