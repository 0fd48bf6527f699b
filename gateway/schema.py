"""A small declarative field checker shared by resource and plugin validation.

Every resource and plugin config is described as a tree of ``Field`` objects instead of hand-written
if-chains, so that all of them agree on the same rules: ``bool`` is not an ``int``, floats accept
ints and are returned as floats, NaN/infinity are rejected (not JSON), ``None`` is only accepted by
``nullable`` fields, unknown object keys are rejected, and every error carries a precise path such
as ``routes[r1].plugins.rate-limit.limit`` or ``upstreams[u1].targets[0].port``.

``check(value, path)`` returns a *normalized*, plain (mutable, JSON-compatible) copy: defaults are
filled in, strings optionally case-folded, lists optionally de-duplicated. Input is never mutated.
The one exception: an object filled from ``FILL`` (absent, all defaults) is a shared, read-only
``FrozenDict`` (``thaw`` gives a mutable copy).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ValidationError
from .frozen import freeze

__all__ = [
    "FILL",
    "INT64_MAX",
    "INT64_MIN",
    "REQUIRED",
    "Bool",
    "Custom",
    "Field",
    "Float",
    "Int",
    "List",
    "Map",
    "Obj",
    "Str",
    "item_path",
    "join_path",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1  # anything larger cannot be msgpack-encoded as a signed integer


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_IMMUTABLE = (str, int, float, bool, bytes)
REQUIRED: Any = _Sentinel("REQUIRED")
"""Default marker: the field must be present."""
FILL: Any = _Sentinel("FILL")
"""Default marker for ``Obj``: when absent, use the object built from ``{}`` (all its defaults)."""


def join_path(path: str, name: str) -> str:
    """``routes[r1]`` + ``paths`` -> ``routes[r1].paths``."""
    return f"{path}.{name}" if path else name


def item_path(path: str, index: int | str) -> str:
    """``routes[r1].paths`` + ``0`` -> ``routes[r1].paths[0]``."""
    return f"{path}[{index}]"


class Field:
    """Base of all fields: handles presence, defaults and null; subclasses implement ``convert``."""

    def __init__(self, *, default: Any = REQUIRED, nullable: bool = False) -> None:
        self.default = default
        self.nullable = nullable
        self._filled: Any = None  # FILL: the frozen value built from ``{}``, once built

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def default_value(self, path: str) -> Any:
        """The value used when the field is absent: a fresh copy, or for ``FILL`` the shared frozen
        object built from ``{}``.

        A ``FILL`` value depends on the schema alone, so it is built once (every written upstream
        fills ``health`` and ``timeouts``, on every member) and shared after, frozen: a stored spec
        is frozen anyway, so ``freeze`` then keeps it as it is instead of copying it twice per
        write. One that cannot be built raises at ``path`` every time."""
        default = self.default
        if default is FILL:
            if self._filled is None:
                self._filled = freeze(self.check({}, path))
            return self._filled
        if default is None or type(default) in _IMMUTABLE:
            return default
        if not default and type(default) in (list, dict):  # the common ``[]`` / ``{}``: no deepcopy
            return type(default)()
        return copy.deepcopy(default)

    def check(self, value: Any, path: str) -> Any:
        """Validate ``value`` and return its normalized form, or raise ``ValidationError`` at ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise ValidationError("must not be null", path)
        return self.convert(value, path)

    def convert(self, value: Any, path: str) -> Any:
        raise NotImplementedError


class Str(Field):
    """A string, optionally case-folded, bounded in length, restricted to choices or a pattern."""

    def __init__(
        self,
        *,
        default: Any = REQUIRED,
        nullable: bool = False,
        min_len: int = 1,
        max_len: int = 4096,
        choices: Sequence[str] | None = None,
        pattern: str | None = None,
        pattern_hint: str = "has an invalid format",
        lower: bool = False,
        upper: bool = False,
        check: Callable[[str, str], str] | None = None,
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.min_len = min_len
        self.max_len = max_len
        self.choices = tuple(choices) if choices is not None else None
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.pattern_hint = pattern_hint
        self.lower = lower
        self.upper = upper
        self.extra_check = check

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise ValidationError("must be a string", path)
        if (self.lower or self.upper) and not value.isascii():
            # case-folded fields are ASCII tokens; folding would turn "poſt" into "POST", "\u212a" into "k"
            raise ValidationError("must be ASCII", path)
        if self.lower:
            value = value.lower()
        if self.upper:
            value = value.upper()
        if self.choices is not None:
            if value not in self.choices:
                raise ValidationError(f"must be one of: {', '.join(self.choices)}", path)
            return value
        if len(value) < self.min_len:
            raise ValidationError(
                "must not be empty" if self.min_len == 1 else f"must be at least {self.min_len} characters",
                path,
            )
        if len(value) > self.max_len:
            raise ValidationError(f"must be at most {self.max_len} characters", path)
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            raise ValidationError(self.pattern_hint, path)
        if self.extra_check is not None:
            value = self.extra_check(value, path)
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Int(Field):
    """An integer (``bool`` rejected, ``3.0`` rejected) within ``[min, max]``."""

    def __init__(
        self, *, default: Any = REQUIRED, nullable: bool = False, min: int = INT64_MIN, max: int = INT64_MAX
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.min = min
        self.max = max

    def convert(self, value: Any, path: str) -> Any:
        if not _is_int(value):
            raise ValidationError("must be an integer", path)
        if value < self.min:
            raise ValidationError(f"must be >= {self.min}", path)
        if value > self.max:
            raise ValidationError(f"must be <= {self.max}", path)
        return int(value)


class Float(Field):
    """A finite number returned as ``float``; ``gt`` is an exclusive lower bound (for "> 0")."""

    def __init__(
        self,
        *,
        default: Any = REQUIRED,
        nullable: bool = False,
        min: float | None = None,
        max: float | None = None,
        gt: float | None = None,
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.min = min
        self.max = max
        self.gt = gt

    def convert(self, value: Any, path: str) -> Any:
        if not (_is_int(value) or isinstance(value, float)):
            raise ValidationError("must be a number", path)
        try:
            number = float(value)
        except OverflowError:
            raise ValidationError("is too large", path) from None
        if not math.isfinite(number):
            raise ValidationError("must be a finite number", path)
        if self.gt is not None and not number > self.gt:
            raise ValidationError(f"must be > {self.gt:g}", path)
        if self.min is not None and number < self.min:
            raise ValidationError(f"must be >= {self.min:g}", path)
        if self.max is not None and number > self.max:
            raise ValidationError(f"must be <= {self.max:g}", path)
        return number


class Bool(Field):
    """``true`` or ``false`` only (no 0/1, no "yes")."""

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false", path)
        return value


class List(Field):
    """A list of ``item`` values; ``dedupe`` drops repeats (after normalization), keeping the first."""

    def __init__(
        self,
        item: Field,
        *,
        default: Any = REQUIRED,
        nullable: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
        dedupe: bool = False,
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.item = item
        self.min_items = min_items
        self.max_items = max_items
        self.dedupe = dedupe

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise ValidationError("must be a list", path)
        if len(value) < self.min_items:
            noun = "item" if self.min_items == 1 else "items"
            raise ValidationError(f"must have at least {self.min_items} {noun}", path)
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} items", path)
        out: list[Any] = []
        seen: set[Any] = set()
        for index, element in enumerate(value):
            normalized = self.item.check(element, item_path(path, index))
            if self.dedupe:
                if isinstance(normalized, (str, int, float)):
                    if normalized in seen:
                        continue
                    seen.add(normalized)
                elif normalized in out:
                    continue
            out.append(normalized)
        return out


class Map(Field):
    """A mapping with string keys (normalized by ``key``) to ``value`` fields; paths are ``path.key``."""

    def __init__(
        self,
        value: Field,
        *,
        key: Str | None = None,
        default: Any = REQUIRED,
        nullable: bool = False,
        max_items: int | None = None,
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.value = value
        self.key = key
        self.max_items = max_items

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict) and not isinstance(value, Mapping):  # dict first: the ABC check is slow
            raise ValidationError("must be an object", path)
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} entries", path)
        out: dict[str, Any] = {}
        for raw_key, element in value.items():
            if not isinstance(raw_key, str):
                raise ValidationError("keys must be strings", path)
            sub = join_path(path, raw_key)
            key = self.key.check(raw_key, sub) if self.key is not None else raw_key
            if key in out:
                raise ValidationError(f"duplicate key {key!r} (keys are case-insensitive here)", sub)
            out[key] = self.value.check(element, sub)
        return out


class Obj(Field):
    """An object with a fixed set of fields; unknown keys are rejected.

    ``post(normalized, path)`` runs after every field checked, for cross-field rules ("header_name
    required iff key == header"); it may return a replacement dict or ``None`` to keep it.
    """

    def __init__(
        self,
        fields: Mapping[str, Field],
        *,
        default: Any = REQUIRED,
        nullable: bool = False,
        post: Callable[[dict[str, Any], str], dict[str, Any] | None] | None = None,
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.fields = dict(fields)
        self.post = post

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict) and not isinstance(value, Mapping):  # dict first: the ABC check is slow
            raise ValidationError("must be an object", path)
        for key in value:
            if not isinstance(key, str):
                raise ValidationError("keys must be strings", path)
            if key not in self.fields:
                known = ", ".join(self.fields) or "none"
                raise ValidationError(f"unknown field (known fields: {known})", join_path(path, key))
        out: dict[str, Any] = {}
        prefix = f"{path}." if path else ""
        for name, field in self.fields.items():
            if name in value:
                out[name] = field.check(value[name], prefix + name)
            elif field.default is REQUIRED:
                raise ValidationError("is required", join_path(path, name))
            else:
                out[name] = field.default_value(join_path(path, name))
        if self.post is not None:
            replaced = self.post(out, path)
            if replaced is not None:
                out = replaced
        return out


class Custom(Field):
    """Escape hatch: ``fn(value, path)`` validates and normalizes (used for plugin maps)."""

    def __init__(
        self, fn: Callable[[Any, str], Any], *, default: Any = REQUIRED, nullable: bool = False
    ) -> None:
        super().__init__(default=default, nullable=nullable)
        self.fn = fn

    def convert(self, value: Any, path: str) -> Any:
        return self.fn(value, path)
