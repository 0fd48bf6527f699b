"""gateway/ is the pure core: no sockets, threads, clocks, randomness, processes or files.

Every Raft node replays the same transactions through ``gateway`` and must reach the same state,
and proxies replay the same deltas; a clock, a random number or a file read in here would make
that nondeterministic. This test walks the AST of every module and fails on forbidden imports
and on ``open()`` (and the usual ways around the import check).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
FORBIDDEN_MODULES = {
    "socket",
    "threading",
    "asyncio",
    "os",
    "time",
    "datetime",
    "random",
    "subprocess",
    "aiohttp",
    "pysyncobj",
    "multiprocessing",
    "concurrent",
    "selectors",
    "secrets",
    "uuid",
    "shutil",
    "tempfile",
    "pathlib",
    "io",
    "importlib",
    "pickle",
}
FORBIDDEN_CALLS = {"open", "__import__", "eval", "exec", "input", "breakpoint"}
MODULES = sorted(GATEWAY.glob("*.py"))


def violations(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        line = getattr(node, "lineno", 0)
        found += [f"line {line}: import {name}" for name in names if name.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: call {name}()")
        if isinstance(node, ast.Name) and node.id == "open":
            found.append(f"line {node.lineno}: reference to open")
    return found


def test_gateway_modules_found() -> None:
    names = {path.name for path in MODULES}
    assert {"model.py", "state.py", "delta.py", "codec.py", "validate.py", "errors.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert violations(tree) == [], f"{path.name} is not pure"


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "from time import monotonic",
        "from asyncio import sleep",
        "import random as r",
        "import threading, json",
        "from datetime import datetime",
        "def f():\n    import socket",
        "data = open('x').read()",
        "import builtins\nbuiltins.open('x')",
        "m = __import__('os')",
        "import pysyncobj",
        "import aiohttp.web",
        "import subprocess",
    ],
)
def test_checker_catches(source: str) -> None:
    assert violations(ast.parse(source))


def test_checker_allows_pure_code() -> None:
    assert violations(ast.parse("import zlib, hashlib, ipaddress\nfrom .model import KINDS\nx = obj.opened()")) == []
