"""One module per command group; each exports ``COMMANDS``, the click commands it adds to the root.

The root group collects them with :func:`all_commands`, so adding a command group is adding a module
here: no edit of ``cli/main.py`` (which keeps parallel work on different commands conflict-free).
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def all_commands() -> list[click.Command]:
    """Every module's ``COMMANDS``, in module-name order (``--help`` lists them sorted anyway)."""
    found: list[click.Command] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "COMMANDS", []))
    return found
