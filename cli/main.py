"""Root of the `gwadm` command line: the command groups and the error boundary.

User errors (API errors, unreachable cluster, bad options, missing files) are printed as one red
line ``error: ...`` on stderr with a non-zero exit code, never as a traceback. Set
``GWADM_DEBUG=1`` to let exceptions through with their traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from cli import commands, console
from cli.client import ApiError
from cli.connection import conn_options
from cli.demo_upstream import demo_upstream_cmd
from cli.examples import attach_examples
from cli.layout import ClusterDirError
from cli.supervisor import SupervisorError

_HINTS = {
    401: " — is the token right? (--token, --token-file, GWADM_TOKEN)",
    403: " — this token's role may not do that",
}


class UserError(click.ClickException):
    """An error meant for the user: shown as one line, exit code 1."""

    def show(self, file: Any = None) -> None:
        console.print_error(self.format_message())


def describe_api_error(exc: ApiError) -> str:
    return exc.describe() + _HINTS.get(exc.status, "")


def to_user_error(exc: BaseException) -> UserError | None:
    """The one-line message for an exception a user can cause, or None for a bug."""
    if isinstance(exc, ApiError):
        return UserError(describe_api_error(exc))
    if isinstance(exc, SupervisorError | ClusterDirError):
        return UserError(str(exc))
    if isinstance(exc, ConnectionError):
        return UserError(str(exc))
    if isinstance(exc, OSError):
        what = f"{exc.filename}: " if exc.filename else ""
        return UserError(f"{what}{exc.strerror or exc}")
    return None


class GwadmGroup(click.Group):
    """Root group: turns user errors into one-line messages (also under click's CliRunner)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            err = None if os.environ.get("GWADM_DEBUG") else to_user_error(exc)
            if err is None:
                raise
            raise err from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            console.print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            console.print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            console.print_error("aborted")
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=GwadmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@conn_options
@click.version_option(package_name="gwadm", prog_name="gwadm")
def cli() -> None:
    """gwadm: a Raft-replicated API-gateway control plane.

    \b
    Quick start:
      gwadm cluster up            3 CP nodes + 1 proxy + a demo upstream in .gwadm/
      gwadm status --watch        live view of the cluster
      gwadm route list            resources over the admin API
      gwadm cluster down
    """


for _command in commands.all_commands():
    cli.add_command(_command)
cli.add_command(demo_upstream_cmd)
attach_examples(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`gwadm = cli.main:main`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="gwadm")
