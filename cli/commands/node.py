"""`gwadm node run`: placeholder until the control-plane node lands (owned by cluster work)."""

import click


@click.group(name="node")
def node_group() -> None:
    """Control-plane node commands."""
