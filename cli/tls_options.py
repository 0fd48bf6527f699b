"""The TLS options a proxy and a relay share: verify the control plane, present a client
certificate to it, and serve downstream over TLS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli.connection import with_options

F = TypeVar("F", bound=Callable[..., Any])


def tls_options(env_prefix: str, *, listen_help: str) -> Callable[[F], F]:
    """``--ca``, ``--tls-cert``, ``--tls-key``, ``--listen-tls-cert``, ``--listen-tls-key``, each
    also read from ``{env_prefix}_CA`` and so on."""
    options = [
        click.option("--ca", envvar=f"{env_prefix}_CA", metavar="FILE",
                     help="CA certificate the control plane's (https/wss) certificate must chain to."),
        click.option("--tls-cert", envvar=f"{env_prefix}_TLS_CERT", metavar="FILE",
                     help="Client certificate presented to the control plane (mutual TLS)."),
        click.option("--tls-key", envvar=f"{env_prefix}_TLS_KEY", metavar="FILE", help="Key of --tls-cert."),
        click.option("--listen-tls-cert", envvar=f"{env_prefix}_LISTEN_TLS_CERT", metavar="FILE", help=listen_help),
        click.option("--listen-tls-key", envvar=f"{env_prefix}_LISTEN_TLS_KEY", metavar="FILE",
                     help="Key of --listen-tls-cert."),
    ]  # fmt: skip
    return with_options(options)
