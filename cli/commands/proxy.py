"""`gwadm proxy run`: placeholder until the data plane lands (owned by proxy work)."""

import click


@click.group(name="proxy")
def proxy_group() -> None:
    """Proxy (data plane) commands."""
