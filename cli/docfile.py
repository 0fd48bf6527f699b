"""Config documents (YAML or JSON) that remember where each value came from, and private file writes.

``gwadm apply`` validates a file before sending anything, and an error is only useful if it points
at the line to fix: ``gateway.yaml:12: routes[r1].paths[0]: must start with /``. So a document is
loaded twice over the same text: once into plain data (PyYAML's safe loader or :mod:`json`, the
exact semantics users expect) and once into a light tree of line numbers (:class:`Pos`) that
:meth:`Document.line_of` walks with a validation path. YAML positions come from the composed node
graph (exact); JSON positions from a small scanner over text ``json.loads`` has already accepted.
Both passes refuse duplicate keys, which both parsers would otherwise silently resolve to the last
value (a duplicated route id would quietly drop a route).

Pure apart from :func:`read_source` and :func:`write_private` (which exists because exports and
snapshots hold consumer credentials: they are written 0600, atomically, never half-written).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]


class DocumentError(ValueError):
    """A file that cannot be used; ``str()`` is the one-line message (``file:line: ...``)."""


@dataclass
class Pos:
    """Where a node starts (1-based line) and, for collections, where its children are."""

    line: int
    keys: dict[str, tuple[int, Pos]] | None = None  # mapping: key -> (line of the key, value)
    items: list[Pos] | None = None  # sequence


@dataclass
class Document:
    """Parsed data plus the line of every key and item; ``name`` is what messages call the file."""

    name: str
    data: Any
    root: Pos | None = field(default=None, repr=False)

    def line_of(self, path: str | None) -> int | None:
        """The line of the deepest node named by a validation path like ``routes[r1].paths[0]``.

        A path into something the file lacks (a missing required field) stops at the deepest
        existing node, which is where the field has to be added. Map keys may contain dots
        (header names), so at a mapping the longest key that fits wins. None when not even the
        first step is in the file (a server path like ``txn.ops[0]``), or positions are unknown.
        """
        if self.root is None:
            return None
        if not path:
            return self.root.line
        node, line, rest, found = self.root, self.root.line, path, False
        while rest:
            if rest.startswith("["):
                end = rest.find("]")
                if end < 0:
                    break
                token, after = rest[1:end], rest[end + 1 :]
                if node.items is not None and token.isdigit() and int(token) < len(node.items):
                    node = node.items[int(token)]
                    line = node.line
                elif node.keys is not None and token in node.keys:
                    line, node = node.keys[token]
                else:
                    break
                rest, found = after, True
                continue
            rest = rest[1:] if rest.startswith(".") else rest
            if node.keys is None:
                break
            fits = [k for k in node.keys if rest == k or rest.startswith((k + ".", k + "["))]
            if not fits:
                break
            key = max(fits, key=len)
            line, node = node.keys[key]
            rest = rest[len(key) :]
            found = True
        return line if found else None

    def where(self, path: str | None) -> str:
        """``gateway.yaml:12`` (or just the name when the line is unknown)."""
        line = self.line_of(path)
        return self.name if line is None else f"{self.name}:{line}"

    def sub(self, key: str) -> Document:
        """The document under a top-level key (a snapshot's ``resources``), lines kept."""
        data = self.data.get(key) if isinstance(self.data, dict) else None
        entry = self.root.keys.get(key) if self.root is not None and self.root.keys else None
        return Document(self.name, data, entry[1] if entry else None)


def _child_path(path: str, key: str, depth: int) -> str:
    # depth 0: kind ("routes"); depth 1: "routes[r1]"; deeper: "routes[r1].plugins"
    if depth == 0:
        return key
    if depth == 1:
        return f"{path}[{key}]"
    return f"{path}.{key}"


def _duplicate(name: str, line: int, key: str, path: str) -> DocumentError:
    inside = f" in {path}" if path else ""
    return DocumentError(f"{name}:{line}: duplicate key {key!r}{inside} (each key may appear once)")


# -- YAML ---------------------------------------------------------------------------------------
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster on big files


def _yaml_pos(node: yaml.Node, name: str, path: str = "", depth: int = 0) -> Pos:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, tuple[int, Pos]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in keys:
                raise _duplicate(name, key_line, key, path)
            keys[key] = (key_line, _yaml_pos(value_node, name, _child_path(path, key, depth), depth + 1))
        return Pos(line, keys=keys)
    if isinstance(node, yaml.SequenceNode):
        return Pos(
            line, items=[_yaml_pos(n, name, f"{path}[{i}]", depth + 1) for i, n in enumerate(node.value)]
        )
    return Pos(line)


def _load_yaml(text: str, name: str) -> Document:
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DocumentError(f"{name}: the file is empty")
        root = _yaml_pos(node, name)  # before constructing: the constructor drops duplicates
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        parts = [str(p) for p in (exc.context, exc.problem) if p] or ["syntax error"]
        problem = " ".join(": ".join(parts).split())
        raise DocumentError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return Document(name, data, root)


# -- JSON ---------------------------------------------------------------------------------------
_WS = re.compile(r"[ \t\n\r]*")
_ATOM = re.compile(r"-?(?:Infinity|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|NaN|true|false|null")


class _JsonPositions:
    """Recursive descent over text that ``json.loads`` accepted: only positions, no values."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, index: int) -> int:
        return bisect.bisect_left(self.newlines, index) + 1

    def skip(self, index: int) -> int:
        match = _WS.match(self.text, index)
        return match.end() if match else index

    def value(self, index: int, path: str, depth: int) -> tuple[Pos, int]:
        text = self.text
        index = self.skip(index)
        start = self.line(index)
        char = text[index]
        if char == "{":
            keys: dict[str, tuple[int, Pos]] = {}
            index = self.skip(index + 1)
            if text[index] == "}":
                return Pos(start, keys=keys), index + 1
            while True:
                index = self.skip(index)
                key_line = self.line(index)
                key, index = scanstring(text, index + 1)
                if key in keys:
                    raise _duplicate(self.name, key_line, key, path)
                index = self.skip(index) + 1  # the ':'
                child, index = self.value(index, _child_path(path, key, depth), depth + 1)
                keys[key] = (key_line, child)
                index = self.skip(index)
                index += 1  # ',' or '}'
                if text[index - 1] == "}":
                    return Pos(start, keys=keys), index
        if char == "[":
            items: list[Pos] = []
            index = self.skip(index + 1)
            if text[index] == "]":
                return Pos(start, items=items), index + 1
            while True:
                child, index = self.value(index, f"{path}[{len(items)}]", depth + 1)
                items.append(child)
                index = self.skip(index) + 1
                if text[index - 1] == "]":
                    return Pos(start, items=items), index
        if char == '"':
            return Pos(start), scanstring(text, index + 1)[1]
        match = _ATOM.match(text, index)
        return Pos(start), match.end() if match else index + 1


def _load_json(text: str, name: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    try:
        root, _ = _JsonPositions(text, name).value(0, "", 0)
    except DocumentError:
        raise
    except (IndexError, ValueError):
        root = None  # positions are a nicety; the data is what json.loads said
    return Document(name, data, root)


def load_document(text: str, name: str, fmt: str | None = None) -> Document:
    """Parse YAML or JSON: ``fmt`` if given, else by extension, else JSON if it looks like it."""
    if fmt is None:
        lower = name.lower()
        if lower.endswith(".json"):
            fmt = "json"
        elif lower.endswith((".yaml", ".yml")):
            fmt = "yaml"
        else:
            fmt = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    if fmt == "json":
        if not text.strip():
            raise DocumentError(f"{name}: the file is empty")
        return _load_json(text, name)
    return _load_yaml(text, name)


def read_source(file: str) -> tuple[str, str]:
    """``(text, display name)`` of a file or of stdin (``-``); OSError/UnicodeError -> DocumentError."""
    if file == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(file).expanduser().read_text(encoding="utf-8"), file
    except OSError as exc:
        raise DocumentError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DocumentError(f"{file}: not UTF-8 text") from None


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (tmp in the same dir, fsync, rename).

    A crash leaves either the old file or the new one, never a torn one, and the credentials it
    holds are never readable by others, not even for the moment between create and chmod.
    """
    target = Path(path).expanduser()
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
