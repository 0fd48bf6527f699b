"""The one place that touches msgpack: typed wrappers plus the canonical form used for hashing.

msgpack ships without type information, so it is imported here once (one ``type: ignore``) and
everything else in the package goes through these typed functions. The settings are the ones the
contract fixes for every byte that crosses a process boundary: ``use_bin_type=True`` when packing,
``raw=False`` when unpacking, no extension types (an ext on the wire is garbage, not an object),
and never pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from .frozen import FrozenDict, FrozenList

__all__ = ["LazyList", "array_header", "canonical", "iter_pack", "pack", "unpack", "unpack_frozen"]


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj``. Raises ``TypeError``/``ValueError``/``OverflowError`` on bad input."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack(data: bytes) -> Any:
    """msgpack-decode exactly one object from ``data`` (trailing bytes are an error).

    Raises whatever msgpack raises on garbage (``ValueError`` subclasses, ``TypeError``, ...);
    ``gateway.codec`` turns all of it into ``CodecError``.
    """
    return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True)


def unpack_frozen(data: bytes) -> Any:
    """``unpack``, with every map a ``FrozenDict`` and every array a ``FrozenList`` (gateway/frozen.py),
    built by msgpack itself: what is decoded to be stored read-only is not walked and copied again.
    The options are spelled out as in ``unpack`` on purpose: a shared ``**options`` dict costs ~3k
    instructions per call on every member's apply (cachegrind)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True,
                           object_hook=FrozenDict, list_hook=FrozenList)


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items.

    ``pack([a, b]) == array_header(2) + pack(a) + pack(b)``, which lets the config hash be fed
    with per-resource encodings that are computed once and cached.
    """
    return msgpack.Packer(use_bin_type=True).pack_array_header(length)  # type: ignore[no-any-return]


def canonical(obj: Any) -> Any:
    """``obj`` with every mapping's keys in sorted order, so its msgpack encoding is canonical.

    msgpack keeps insertion order, and two equal specs can have been built in different orders
    (a snapshot decoded on a proxy versus a spec normalized on a node). Sequences become lists.
    """
    if isinstance(obj, dict):
        out = {}
        for key in _sorted_keys(obj):
            value = obj[key]
            out[key] = value if type(value) in _SCALARS else canonical(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [item if type(item) in _SCALARS else canonical(item) for item in obj]
    return obj


# Leaves canonical() returns as they are: not recursed into (the config hash packs one spec per
# changed resource on every member and proxy; the call per scalar was half of canonical's cost).
_SCALARS = frozenset((str, int, float, bool, type(None), bytes))


def _sorted_keys(mapping: dict[Any, Any]) -> list[Any]:
    """The keys in ``_sort_key`` order. String keys (every validated spec) sort by plain
    comparison, which is that order for them, without a key call per key."""
    try:
        keys = sorted(mapping)
    except TypeError:  # mixed key types
        return sorted(mapping, key=_sort_key)
    if keys and not (isinstance(keys[0], str) and isinstance(keys[-1], str)):
        return sorted(mapping, key=_sort_key)  # ints, floats, ...: ordered by (type, repr)
    return keys


def _sort_key(key: Any) -> tuple[str, str]:
    # Keys are strings in every validated spec; fall back to (type, repr) so that odd keys from a
    # trusted snapshot still sort deterministically instead of raising.
    if isinstance(key, str):
        return ("", key)
    return (type(key).__name__, repr(key))


class LazyList:
    """A list known by its length whose items are made only while ``iter_pack`` encodes them: a
    10,000-entry table is then never built whole (``pack`` does not take one: use ``iter_pack``)."""

    __slots__ = ("_items", "length")

    def __init__(self, length: int, items: Iterable[Any]) -> None:
        self.length = length
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        count = 0
        for item in self._items:
            count += 1
            yield item
        if count != self.length:  # the header already promised ``length`` items
            raise ValueError(f"LazyList promised {self.length} items, made {count}")


def iter_pack(obj: Any, batch: int = 256) -> Iterator[bytes]:
    """``pack(obj)`` in slices: ``b"".join(iter_pack(obj)) == pack(obj)`` byte for byte (with any
    ``LazyList`` taken as the list it makes). Maps and lists longer than ``batch``, or with one up
    to three levels down, are opened with their header and their items packed ``batch`` at a time,
    so a caller can do other work between two slices (msgpack packs one call whole, holding the
    GIL throughout). Items of a list are sliced only when they are long themselves, and those of a
    ``LazyList`` never: they are meant to be records."""
    if isinstance(obj, LazyList) or (isinstance(obj, (list, tuple)) and _big(obj, batch, 3)):
        lazy = isinstance(obj, LazyList)
        yield array_header(obj.length if isinstance(obj, LazyList) else len(obj))
        chunk: list[bytes] = []
        for item in obj:
            if not lazy and _big(item, batch, 0):
                if chunk:
                    yield b"".join(chunk)
                    chunk = []
                yield from iter_pack(item, batch)
                continue
            chunk.append(pack(item))
            if len(chunk) >= batch:
                yield b"".join(chunk)
                chunk = []
        if chunk:
            yield b"".join(chunk)
    elif isinstance(obj, dict) and _big(obj, batch, 3):
        yield msgpack.Packer(use_bin_type=True).pack_map_header(len(obj))
        entries: list[bytes] = []
        for key, value in obj.items():
            if _big(value, batch, 2):
                yield b"".join(entries) + pack(key)
                entries = []
                yield from iter_pack(value, batch)
                continue
            entries.append(pack(key) + pack(value))
            if len(entries) >= batch:
                yield b"".join(entries)
                entries = []
        if entries:
            yield b"".join(entries)
    else:
        yield pack(obj)


def _big(obj: Any, batch: int, depth: int) -> bool:
    """A container worth slicing: a LazyList, longer than ``batch``, or holding such a container
    at most ``depth`` levels down."""
    if isinstance(obj, LazyList):
        return True
    if not isinstance(obj, (dict, list, tuple)):
        return False
    if len(obj) > batch:
        return True
    if depth == 0:
        return False
    children = obj.values() if isinstance(obj, dict) else obj
    return any(_big(child, batch, depth - 1) for child in children if isinstance(child, (dict, list, tuple, LazyList)))
