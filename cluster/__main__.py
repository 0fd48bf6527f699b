"""`python -m cluster run ...` is `gwadm node run ...` without loading the rest of the CLI."""

from cli.commands.node import node_group

if __name__ == "__main__":
    node_group(prog_name="python -m cluster")
