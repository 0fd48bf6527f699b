"""`gwadm proxy run`: one proxy (data plane) in the foreground (systemd, compose, Kubernetes).

Every flag can also come from a GWADM_PROXY_* environment variable. Bad flags end with one
``error: --flag: ...`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from cli.tls_options import tls_options


@click.group(name="proxy")
def proxy_group() -> None:
    """Proxy (data plane) commands."""


@proxy_group.command("run")
@click.option(
    "--cp",
    required=True,
    envvar="GWADM_PROXY_CP",
    metavar="URL[,URL...]",
    help="Admin URLs of control-plane nodes to start from, comma-separated; the proxy learns the "
    "other members from them and follows membership changes.",
)
@click.option(
    "--listen",
    required=True,
    envvar="GWADM_PROXY_LISTEN",
    metavar="HOST:PORT",
    help="Address for proxied traffic.",
)
@click.option(
    "--status-listen",
    required=True,
    envvar="GWADM_PROXY_STATUS_LISTEN",
    metavar="HOST:PORT",
    help="Address for /status, /ready, /live and /metrics.",
)
@click.option(
    "--state-dir",
    required=True,
    envvar="GWADM_PROXY_STATE_DIR",
    metavar="DIR",
    help="Directory for the last-known-good config cache (created if missing).",
)
@click.option(
    "--token-file",
    required=True,
    envvar="GWADM_PROXY_TOKEN_FILE",
    metavar="FILE",
    help="File holding a JWT with role 'proxy'.",
)
@click.option(
    "--id",
    "proxy_id",
    envvar="GWADM_PROXY_ID",
    help="Proxy id shown in the fleet registry (default: generated once, kept in the state dir).",
)
@click.option(
    "--source-address",
    envvar="GWADM_PROXY_SOURCE_ADDRESS",
    metavar="IP",
    help="Bind outgoing control-plane connections to this local address (chaos harness).",
)
@tls_options("GWADM_PROXY", listen_help="Serve proxied traffic over TLS with this certificate (no SNI needed).")
@click.option(
    "--sync",
    "sync_mode",
    default="hybrid",
    show_default=True,
    envvar="GWADM_PROXY_SYNC",
    type=click.Choice(["push", "pull", "hybrid"]),
    help="How to follow the control plane: websocket push, HTTP long-poll pull (for HTTP-only "
    "egress), or push plus periodic hash anti-entropy (docs/sync-modes.md).",
)
@click.option(
    "--poll-interval",
    default=10.0,
    show_default=True,
    envvar="GWADM_PROXY_POLL_INTERVAL",
    type=float,
    metavar="S",
    help="Pull: how long one long-poll waits for a change (0.1..30 s).",
)
@click.option(
    "--check-interval",
    default=30.0,
    show_default=True,
    envvar="GWADM_PROXY_CHECK_INTERVAL",
    type=float,
    metavar="S",
    help="Hybrid: anti-entropy hash check over HTTP at least this often, besides every status frame.",
)
@click.option(
    "--workers",
    default="1",
    show_default=True,
    envvar="GWADM_PROXY_WORKERS",
    metavar="N|auto",
    help="Worker processes serving the --listen port (SO_REUSEPORT); 'auto' = one per core. With N > 1 "
    "this process keeps the one control-plane stream and the status port and feeds the workers.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def run(
    cp: str,
    listen: str,
    status_listen: str,
    state_dir: str,
    token_file: str,
    proxy_id: str | None,
    source_address: str | None,
    sync_mode: str,
    poll_interval: float,
    check_interval: float,
    workers: str,
    ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    listen_tls_cert: str | None,
    listen_tls_key: str | None,
    log_level: str,
) -> None:
    """Run one proxy until SIGTERM/SIGINT: serve the cached config at once, then follow the CP."""
    from proxy.node import SettingsError, load_settings, parse_workers, serve
    from proxy.server import run_loop

    try:
        settings = load_settings(
            cp=cp, listen=listen, status_listen=status_listen, state_dir=state_dir,
            token_file=token_file, proxy_id=proxy_id, source_address=source_address,
            sync=sync_mode, poll_interval=poll_interval, check_interval=check_interval,
            ca=ca, tls_cert=tls_cert, tls_key=tls_key, listen_tls_cert=listen_tls_cert, listen_tls_key=listen_tls_key,
        )  # fmt: skip
        count = parse_workers(workers)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_loop(serve(settings, count, log_level.upper()))
    except SettingsError as exc:  # e.g. a port already in use
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


COMMANDS = [proxy_group]
