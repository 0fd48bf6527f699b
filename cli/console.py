"""Console IO: print what ``cli/render.py`` builds, errors in red, JSON for ``--json``, live displays.

Consoles are made per call so that they follow the current ``sys.stdout``/``sys.stderr`` (click's
test runner swaps them). Fancy output (colour, spinners, live refresh) only on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from cli import render


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def out_console() -> Console:
    tty = _is_tty(sys.stdout)
    return Console(file=sys.stdout, width=None if tty else 160, force_terminal=None if tty else False)


def err_console() -> Console:
    tty = _is_tty(sys.stderr)
    return Console(
        file=sys.stderr, width=None if tty else 160, stderr=True, force_terminal=None if tty else False
    )


def show(renderable: RenderableType) -> None:
    out_console().print(renderable)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def print_error(message: str) -> None:
    """One line, red on a terminal: ``error: <message>``."""
    err_console().print(Text(f"error: {message}", style="bold red"), soft_wrap=True, highlight=False)


def print_warning(message: str) -> None:
    err_console().print(Text(f"warning: {message}", style="yellow"), soft_wrap=True, highlight=False)


def print_note(message: str, style: str = "") -> None:
    err_console().print(Text(message, style=style), soft_wrap=True, highlight=False)


def print_lines(lines: list[str], style: str = "dim") -> None:
    con = err_console()
    for line in lines:
        con.print(Text("  " + line, style=style), soft_wrap=True, highlight=False)


class ProgressReporter:
    """``supervisor.Reporter`` on stderr: a live spinner + pending table on a TTY, plain lines elsewhere."""

    def __init__(self, title: str = "waiting for") -> None:
        self.title = title
        self.notes: list[str] = []
        self.pending: dict[str, str] = {}
        self._live: Live | None = None
        self._last_plain: str | None = None

    def _view(self) -> RenderableType:
        return render.progress_view(self.pending, self.notes, self.title)

    def __enter__(self) -> ProgressReporter:
        con = err_console()
        if con.is_terminal:
            self._live = Live(self._view(), console=con, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self.pending = {}
            self._live.update(self._view())
            self._live.__exit__(None, None, None)
            self._live = None

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self._live is not None:
            self._live.update(self._view())
        else:
            print_note(text, "dim")

    def waiting(self, pending: Mapping[str, str]) -> None:
        self.pending = dict(pending)
        if self._live is not None:
            self._live.update(self._view())
            return
        line = ", ".join(sorted(pending))
        if pending and line != self._last_plain:
            print_note(f"{self.title}: {render.pending_line(pending)}", "dim")
        self._last_plain = line


@contextmanager
def _live_or_plain() -> Iterator[Callable[[RenderableType], None]]:
    con = out_console()
    if con.is_terminal:
        with Live(console=con, refresh_per_second=4, screen=False) as live:
            yield live.update
    else:

        def plain(r: RenderableType) -> None:
            con.print(r)
            con.print()

        yield plain


def _reader_gone() -> None:
    """The reader of stdout went away (``| head``): stop quietly, also at interpreter exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _pause(interval: float, started: float) -> None:
    """Sleep what is left of ``interval`` since ``started``: a slow poll does not stretch the period."""
    time.sleep(max(0.0, interval - (time.monotonic() - started)))


def watch(fetch: Callable[[], RenderableType], interval: float = 1.0, count: int | None = None) -> None:
    """Refresh ``fetch()`` every ``interval`` seconds until Ctrl-C (or ``count`` refreshes)."""
    done = 0
    try:
        with _live_or_plain() as update:
            while count is None or done < count:
                started = time.monotonic()
                update(fetch())
                done += 1
                if count is None or done < count:
                    _pause(interval, started)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _reader_gone()


def watch_json(fetch: Callable[[], Any], interval: float | None) -> None:
    """``--json``: one pretty document, or with ``--watch`` one compact JSON line per refresh."""
    try:
        if interval is None:
            print_json(fetch())
            return
        while True:
            started = time.monotonic()
            click.echo(json.dumps(fetch(), separators=(",", ":")))
            sys.stdout.flush()
            _pause(interval, started)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _reader_gone()
