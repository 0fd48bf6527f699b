"""`gwadm relay run`: a config relay for a region without a voting control-plane node.

It follows the control plane like a proxy and serves the same push and pull protocol to the
proxies of its region, which list the relay in their ``--cp`` (docs/sync-modes.md). Bad flags end
with one ``error: --flag: ...`` line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from cli.tls_options import tls_options


@click.group(name="relay")
def relay_group() -> None:
    """Config relay commands."""


@relay_group.command("run")
@click.option("--cp", "cp", multiple=True, required=True, envvar="GWADM_RELAY_CP", metavar="URL[,URL...]",
              help="Control-plane admin URLs (or an upstream relay), comma-separated or repeated.")
@click.option("--listen", required=True, envvar="GWADM_RELAY_LISTEN", metavar="HOST:PORT",
              help="Address serving /v1/stream and /v1/changes to downstream proxies.")
@click.option("--state-dir", required=True, envvar="GWADM_RELAY_STATE_DIR", metavar="DIR",
              help="Directory for the last-known-good config cache (created if missing).")
@click.option("--token-file", required=True, envvar="GWADM_RELAY_TOKEN_FILE", metavar="FILE",
              help="File holding a JWT with role 'proxy' (downstream proxies may present it too).")
@click.option("--downstream-token-file", envvar="GWADM_RELAY_DOWNSTREAM_TOKEN_FILE", metavar="FILE",
              help="More bearer tokens downstream proxies may present, one per line.")
@click.option("--id", "relay_id", envvar="GWADM_RELAY_ID",
              help="Relay id in the fleet view (default: generated once, kept in the state dir).")
@click.option("--sync", "sync_mode", default="hybrid", show_default=True, envvar="GWADM_RELAY_SYNC",
              type=click.Choice(["push", "pull", "hybrid"]), help="How the relay follows the control plane.")
@click.option("--poll-interval", default=10.0, show_default=True, type=float, metavar="S",
              help="Pull: how long one long-poll waits (0.1..30 s).")
@click.option("--check-interval", default=30.0, show_default=True, type=float, metavar="S",
              help="Hybrid: anti-entropy check at least this often.")
@tls_options("GWADM_RELAY", listen_help="Serve downstream proxies over TLS (https/wss) with this certificate.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def run(
    cp: tuple[str, ...], listen: str, state_dir: str, token_file: str, downstream_token_file: str | None,
    relay_id: str | None, sync_mode: str, poll_interval: float, check_interval: float, ca: str | None,
    tls_cert: str | None, tls_key: str | None, listen_tls_cert: str | None, listen_tls_key: str | None,
    log_level: str,
) -> None:  # fmt: skip
    """Run one relay until SIGTERM/SIGINT."""
    from proxy.node import SettingsError, load_settings
    from proxy.relay import RelayError, RelaySettings, serve

    try:
        # The proxy's validation of the shared flags (URLs, address, token, state dir, intervals).
        base = load_settings(
            cp=",".join(cp), listen=listen, status_listen="127.0.0.1:0", state_dir=state_dir,
            token_file=token_file, proxy_id=relay_id, sync=sync_mode, poll_interval=poll_interval,
            check_interval=check_interval, ca=ca, tls_cert=tls_cert, tls_key=tls_key,
            listen_tls_cert=listen_tls_cert, listen_tls_key=listen_tls_key,
        )  # fmt: skip
        cp_ssl, listen_ssl = base.cp_ssl_context(), base.listen_ssl_context()
        extra: tuple[str, ...] = ()
        if downstream_token_file:
            try:
                lines = Path(downstream_token_file).read_text().splitlines()
            except OSError as exc:
                raise SettingsError(f"--downstream-token-file: cannot read {downstream_token_file}: "
                                    f"{exc.strerror or exc}") from None  # fmt: skip
            extra = tuple(t.strip() for t in lines if t.strip())
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    settings = RelaySettings(
        cp_urls=base.cp_urls, listen=base.listen, state_dir=base.state_dir, token=base.token,
        relay_id=base.proxy_id, sync=base.sync, poll_interval=base.poll_interval,
        check_interval=base.check_interval, downstream_tokens=extra, cp_ssl=cp_ssl, listen_ssl=listen_ssl,
    )  # fmt: skip
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except RelayError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


COMMANDS = [relay_group]
