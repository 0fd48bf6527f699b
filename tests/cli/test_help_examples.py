"""Every command's --help ends with an example, and every command answers a bad option with one
line (no traceback): walks the whole command tree, so a new command cannot forget either."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cli.main import cli


def leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(command, click.Group):
        return [leaf for name, sub in sorted(command.commands.items()) for leaf in leaves(sub, (*path, name))]
    return [path]


COMMANDS = leaves(cli)


def test_the_tree_is_walked() -> None:
    assert ("cluster", "up") in COMMANDS and ("route", "put") in COMMANDS and ("chaos", "run") in COMMANDS
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"gwadm {' '.join(path)} --help has no example"
    assert "gwadm " + path[0] in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_a_bad_option_is_one_line_without_traceback(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--no-such-option"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--no-such-option" in lines[0], result.output


def test_shell_completion_completes_commands_and_scenarios() -> None:
    import os
    import subprocess
    import sys

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(cword), "_GWADM_COMPLETE": "bash_complete"}
        done = subprocess.run([sys.executable, "-m", "cli"], env=env, capture_output=True, text=True, timeout=60)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]

    assert "cluster" in complete("gwadm clu", 1)
    assert complete("gwadm chaos run --scenario kill-", 4) == ["kill-leader", "kill-random", "kill-all"]
