"""`gwadm chaos run|list|selftest`: fault injection against a throwaway cluster (docs/architecture.md §6).

The command re-executes itself inside a fresh network namespace (``unshare -n``, or ``-r -n``
without root), so its nftables rules and its 127.0.0.x members never touch the host network and
disappear with the run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from cli import console
from cli.commands.cluster import json_option


@click.group(name="chaos")
def chaos_group() -> None:
    """Chaos suite: kill, pause and partition a throwaway cluster, then check nothing was lost."""


def _scenario_names(prefix: str) -> list[str]:
    from chaos.nemesis import NEMESES

    return [n for n in ["all", *NEMESES] if n.startswith(prefix)]


_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _reexec_in_namespace() -> int:
    from chaos.net import NetError, unshare_argv

    try:
        argv = unshare_argv([sys.executable, "-m", "cli", *sys.argv[1:]])
    except NetError as exc:
        raise click.ClickException(str(exc)) from None
    child = subprocess.Popen(argv)  # unshare and env exec: this is the run itself

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)  # the run tears itself down (see _end_on_signals) and exits

    previous = {s: signal.signal(s, forward) for s in _ENDING_SIGNALS}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the same SIGINT and tears its run down
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _end_on_signals() -> None:
    """SIGTERM and SIGHUP end a run as Ctrl-C does: through ``run_scenario``'s ``finally``, which
    kills the members and removes the rules. Python's default action for them skips every
    ``finally`` and left the cluster and proxies of the run behind, still serving."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for s in _ENDING_SIGNALS:
        signal.signal(s, leave)


@chaos_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """The scenarios (nemeses) and the smallest cluster each needs.

    \b
    Example:
      gwadm chaos list
    """
    from chaos.nemesis import NEMESES

    rows = [{"scenario": n.name, "min_nodes": n.min_nodes, "description": n.description} for n in NEMESES.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("scenario", "min nodes", "what it does")
    for r in rows:
        table.add_row(str(r["scenario"]), str(r["min_nodes"]), str(r["description"]))
    console.show(table)


@chaos_group.command("run")
@click.option("--scenario", "-s", "scenarios", multiple=True, default=["all"], show_default=True,
              shell_complete=lambda _ctx, _param, incomplete: _scenario_names(incomplete),
              help="Scenario name (see `gwadm chaos list`), repeatable, or 'all'.")
@click.option("--seed", type=int, multiple=True, default=[1], show_default=True,
              help="Seed for every random choice; repeat to run several seeds.")
@click.option("--duration", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              help="Seconds of faults per scenario (then heal and check).")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True, help="CP nodes.")
@click.option("--proxies", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--clients", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Concurrent admin API clients.")
@click.option("--out", type=click.Path(file_okay=False), default="chaos-out", show_default=True,
              help="Directory for history.jsonl, report.json and timeline.png of each run.")
@json_option
def run_cmd(scenarios: tuple[str, ...], seed: tuple[int, ...], duration: float, nodes: str, proxies: int,
            clients: int, out: str, as_json: bool) -> None:
    """Run scenarios against fresh clusters; exit code 1 if any checker fails.

    \b
    Examples:
      gwadm chaos run --scenario kill-leader --seed 7 --duration 20
      gwadm chaos run --scenario all --seed 1 --duration 60 --nodes 5 --out /tmp/chaos
    """
    from chaos.nemesis import NEMESES, applicable
    from chaos.net import in_private_netns

    n_nodes = int(nodes)
    names = applicable(n_nodes) if "all" in scenarios else list(dict.fromkeys(scenarios))
    for name in names:
        if name not in NEMESES:
            raise click.UsageError(f"unknown scenario {name!r}; one of: all, {', '.join(NEMESES)}")
        if n_nodes < NEMESES[name].min_nodes:
            raise click.UsageError(f"scenario {name} needs --nodes {NEMESES[name].min_nodes}")
    if not in_private_netns():
        sys.exit(_reexec_in_namespace())
    _end_on_signals()
    reports = _run_all(names, list(seed), duration, n_nodes, proxies, clients, Path(out), as_json)
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    sys.exit(0 if reports and all(r.get("ok") for r in reports) else 1)


def _run_all(names: list[str], seeds: list[int], duration: float, nodes: int, proxies: int, clients: int,
             out: Path, quiet: bool) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from chaos.net import NetError, setup_namespace
    from chaos.report import render_summary, write_report
    from chaos.runner import RunOptions, ScenarioError, run_scenario

    setup_namespace()
    reports: list[dict[str, Any]] = []
    stderr = console.err_console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=stderr, disable=quiet) as progress:
        for s in seeds:
            for name in names:
                task = progress.add_task(f"{name} (seed {s}, {nodes} nodes)", total=1.0)
                opts = RunOptions(scenario=name, seed=s, duration=duration, nodes=nodes, proxies=proxies,
                                  clients=clients, out=out / f"{name}-n{nodes}-s{s}")
                def advance(fraction: float, task: TaskID = task) -> None:
                    progress.update(task, completed=fraction)

                try:
                    report = run_scenario(
                        opts,
                        log=(lambda m: None) if quiet else progress.console.print,
                        progress=advance,
                    )
                except (ScenarioError, NetError, RuntimeError, OSError) as exc:
                    # The harness could not do its job (no leader, a partition not as intended, a
                    # port in use): a failed run with the reason, and on to the next scenario.
                    report = {"ok": False, "meta": {"scenario": name, "seed": s, "nodes": nodes},
                              "error": str(exc), "checkers": []}
                progress.update(task, completed=1.0,
                                description=f"{name} (seed {s}, {nodes} nodes) {'ok' if report['ok'] else 'FAILED'}")
                reports.append(report)
    write_report(out / "report.json", {"ok": all(r["ok"] for r in reports), "runs": reports})
    if not quiet:
        console.show(render_summary(reports))
    return reports


@chaos_group.command("selftest")
def selftest_cmd() -> None:
    """Prove the partition machinery in a private namespace and print the probe results as JSON.

    \b
    Example:
      gwadm chaos selftest
    """
    from chaos.net import in_private_netns

    if not in_private_netns():
        sys.exit(_reexec_in_namespace())
    from chaos.selftest import partition_selftest

    click.echo(json.dumps(partition_selftest(), indent=2))


COMMANDS = [chaos_group]
