"""Deeply read-only JSON-like values, so a stored spec can be shared between states safely.

``ConfigState.apply`` shares every untouched ``Resource`` between the old and the new state, and
``Delta`` ops share specs with the state that produced them. That is only sound if nobody can
mutate a spec after it was stored. Rather than trusting every caller, specs are *frozen* once on
the way in: dicts become ``FrozenDict`` and lists ``FrozenList``. Both are subclasses of the
builtin types, so they still compare equal to plain dicts/lists, ``json.dumps`` and msgpack
encode them unchanged, and ``isinstance(x, dict)`` holds -- but every mutating method raises
``TypeError``. ``copy.copy``/``copy.deepcopy`` and ``thaw`` give back plain, mutable values.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze", "is_frozen", "thaw"]


def _read_only(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only; use copy.deepcopy() or thaw() for a mutable copy")


class FrozenDict(dict[str, Any]):
    """A dict that refuses mutation. Build one with ``freeze`` so nested values are frozen too."""

    __slots__ = ()

    __setitem__ = _read_only
    __delitem__ = _read_only
    __ior__ = _read_only
    clear = _read_only
    pop = _read_only
    popitem = _read_only
    setdefault = _read_only
    update = _read_only

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_dict, (thaw(self),))


class FrozenList(list[Any]):
    """A list that refuses mutation. Build one with ``freeze`` so nested values are frozen too."""

    __slots__ = ()

    __setitem__ = _read_only
    __delitem__ = _read_only
    __iadd__ = _read_only
    __imul__ = _read_only
    append = _read_only
    clear = _read_only
    extend = _read_only
    insert = _read_only
    pop = _read_only
    remove = _read_only
    reverse = _read_only
    sort = _read_only

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_list, (thaw(self),))


def _rebuild_dict(value: dict[str, Any]) -> FrozenDict:
    return freeze(value)  # type: ignore[no-any-return]


def _rebuild_list(value: list[Any]) -> FrozenList:
    return freeze(value)  # type: ignore[no-any-return]


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})  # shared as they are, never copied


def freeze(value: Any) -> Any:
    """A deep, read-only copy of ``value`` (dicts, lists and tuples are copied; scalars shared).

    Already frozen containers are returned as they are: they can only have been built by this
    function, so their contents are frozen too and copying them again would only cost time.
    """
    kind = type(value)
    if kind in _SCALARS or kind is FrozenDict or kind is FrozenList:
        return value  # exact-type tests first: every member freezes every written spec
    # Tuples of types, not ``A | B``: isinstance with a union builds the union object on every
    # call, ~4x slower (here and in the other per-write paths of gateway/).
    if isinstance(value, (FrozenDict, FrozenList)):
        return value
    # Copied by the C constructor (which does not call the read-only methods), then only the
    # nested containers are replaced: most values are scalars, and a spec freezes on every member.
    if isinstance(value, dict):
        frozen = FrozenDict(value)
        for key, item in value.items():
            if type(item) not in _SCALARS:
                dict.__setitem__(frozen, key, freeze(item))
        return frozen
    if isinstance(value, (list, tuple)):
        items = FrozenList(value)
        for index, item in enumerate(value):
            if type(item) not in _SCALARS:
                list.__setitem__(items, index, freeze(item))
        return items
    return value


def thaw(value: Any) -> Any:
    """A deep, plain (mutable) copy of a frozen value; the inverse of ``freeze``."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, dict):
        return {key: item if type(item) in _SCALARS else thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [item if type(item) in _SCALARS else thaw(item) for item in value]
    return value


def is_frozen(value: Any) -> bool:
    """True if ``value`` is a scalar or a container built by ``freeze``."""
    return not isinstance(value, (dict, list, tuple)) or isinstance(value, (FrozenDict, FrozenList))
