"""Where the admin endpoints and the token come from, and the click options that set them.

Order, first found wins:
  endpoints: ``--endpoint/-e`` (repeatable or comma-separated), ``$GWADM_ENDPOINTS``,
             the ``admin_url`` of every node in ``DIR/cluster.json``
  token:     ``--token``, ``--token-file``, ``$GWADM_TOKEN``, ``$GWADM_TOKEN_FILE``,
             the ``token_file`` of ``DIR/cluster.json`` (DIR/admin.token)
  DIR:       ``--dir``, ``$GWADM_DIR``, ``.gwadm``
  CA:        ``--ca``, ``$GWADM_CA``, ``DIR/tls/ca.pem`` when it exists, else the system's CAs:
             every https:// endpoint's certificate must chain to it (cli/client.py ``use_ca``)

The options are accepted on the root group (``gwadm -e URL route list``) and on every command that
talks to the API (``gwadm route list -e URL``); the command's own value wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from cli import certs
from cli.client import AdminClient, split_endpoints, use_ca
from cli.layout import ClusterDirError, Layout, load_cluster, token_path

DEFAULT_DIR = ".gwadm"
F = TypeVar("F", bound=Callable[..., Any])
_META = "gwadm.conn"


class ConnectionConfigError(click.ClickException):
    """No endpoints or no token could be found; the message says where we looked."""


@dataclass
class ConnOptions:
    dir: str | None = None
    endpoints: tuple[str, ...] = ()
    token: str | None = None
    token_file: str | None = None
    ca: str | None = None


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    opts: ConnOptions = ctx.meta.setdefault(_META, ConnOptions())
    if value in (None, ()):
        return value
    if param.name == "endpoint":
        opts.endpoints = tuple(value)
    elif param.name is not None:
        setattr(opts, param.name, value)
    return value


def conn_options(f: F) -> F:
    """Add --dir, --endpoint/-e, --token, --token-file (values land in ``ctx.meta``)."""
    opts = [
        click.option("--dir", "dir", metavar="DIR", expose_value=False, callback=_store,
                     help=f"Local cluster directory (default $GWADM_DIR or {DEFAULT_DIR})."),
        click.option("--endpoint", "-e", "endpoint", multiple=True, metavar="URL", expose_value=False,
                     callback=_store, help="Admin API endpoint(s), repeatable or comma-separated."),
        click.option("--token", "token", metavar="JWT", expose_value=False, callback=_store,
                     help="Admin token (default $GWADM_TOKEN or DIR/admin.token)."),
        click.option("--token-file", "token_file", metavar="FILE", expose_value=False, callback=_store,
                     help="File holding the admin token."),
        click.option("--ca", "ca", metavar="FILE", expose_value=False, callback=_store,
                     help="CA certificate of the cluster (default $GWADM_CA or DIR/tls/ca.pem)."),
    ]  # fmt: skip
    return with_options(opts)(f)


def with_options(options: list[Callable[[Any], Any]]) -> Callable[[F], F]:
    """One decorator for several click options; ``--help`` lists them in the order given."""

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def current_options() -> ConnOptions:
    ctx = click.get_current_context()
    opts: ConnOptions = ctx.meta.setdefault(_META, ConnOptions())
    return opts


def resolve_dir(opts: ConnOptions | None = None) -> Path:
    opts = opts or current_options()
    return Path(opts.dir or os.environ.get("GWADM_DIR") or DEFAULT_DIR)


def resolve_ca(opts: ConnOptions, env: dict[str, str] | None = None) -> str | None:
    """The CA file https:// endpoints are verified against (None: the system's CAs)."""
    env = dict(os.environ) if env is None else env
    explicit = opts.ca or env.get("GWADM_CA")
    if explicit:
        if not Path(explicit).expanduser().is_file():
            raise ConnectionConfigError(f"CA certificate {explicit} does not exist")
        return str(Path(explicit).expanduser())
    local = certs.ca_paths(Layout.of(opts.dir or env.get("GWADM_DIR") or DEFAULT_DIR).dir).cert
    return str(local) if local.is_file() else None


def resolve(opts: ConnOptions, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Return ``(endpoints, token)`` or raise ConnectionConfigError naming what is missing.
    Also makes the cluster's CA (``resolve_ca``) the one every https:// call of this command uses."""
    env = dict(os.environ) if env is None else env
    use_ca(resolve_ca(opts, env))
    layout = Layout.of(opts.dir or env.get("GWADM_DIR") or DEFAULT_DIR)
    cluster: dict[str, Any] | None = None
    cluster_error: str | None = None
    try:
        cluster = load_cluster(layout)
    except ClusterDirError as exc:
        cluster_error = str(exc)

    endpoints = split_endpoints(list(opts.endpoints)) or split_endpoints(env.get("GWADM_ENDPOINTS"))
    if not endpoints and cluster is not None:
        endpoints = split_endpoints([str(n.get("admin_url")) for n in cluster["nodes"] if n.get("admin_url")])
    if not endpoints:
        raise ConnectionConfigError(
            f"no admin endpoints: {cluster_error or f'{layout.cluster_json} lists no nodes'}; "
            "pass --endpoint URL or set GWADM_ENDPOINTS"
        )

    token = opts.token or None
    token_file = opts.token_file
    if token is None and token_file is None:
        token = env.get("GWADM_TOKEN") or None
        token_file = env.get("GWADM_TOKEN_FILE") or None
    if token is None and token_file is None and cluster is not None:
        token_file = str(token_path(layout, cluster))
    if token is None and token_file is not None:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ConnectionConfigError(f"cannot read token file {token_file}: {exc.strerror}") from exc
    if not token:
        raise ConnectionConfigError(
            "no admin token: pass --token or --token-file, set GWADM_TOKEN, "
            f"or use --dir with a local cluster ({cluster_error or 'no token file'})"
        )
    return endpoints, token


def make_client(timeout: float = 5.0) -> AdminClient:
    """Client for the current command; ``$GWADM_RETRY_FOR`` (seconds, default 3) bounds failover retries."""
    endpoints, token = resolve(current_options())
    try:
        retry_for = float(os.environ.get("GWADM_RETRY_FOR", "3"))
    except ValueError as exc:
        raise ConnectionConfigError("GWADM_RETRY_FOR must be a number of seconds") from exc
    return AdminClient(endpoints, token, timeout=timeout, retry_for=retry_for)
