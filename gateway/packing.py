"""The one place that touches msgpack: typed wrappers plus the canonical form used for hashing.

msgpack ships without type information, so it is imported here once (one ``type: ignore``) and
everything else in the package goes through these typed functions. The settings are the ones the
contract fixes for every byte that crosses a process boundary: ``use_bin_type=True`` when packing,
``raw=False`` when unpacking, no extension types (an ext on the wire is garbage, not an object),
and never pickle.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["array_header", "canonical", "pack", "unpack"]


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
        return {key: canonical(obj[key]) for key in sorted(obj, key=_sort_key)}
    if isinstance(obj, list | tuple):
        return [canonical(item) for item in obj]
    return obj


def _sort_key(key: Any) -> tuple[str, str]:
    # Keys are strings in every validated spec; fall back to (type, repr) so that odd keys from a
    # trusted snapshot still sort deterministically instead of raising.
    if isinstance(key, str):
        return ("", key)
    return (type(key).__name__, repr(key))
