"""gateway.packing.iter_pack: msgpack in slices, byte for byte the same as one pack call."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.packing import LazyList, iter_pack, pack

CASES: list[Any] = [
    5, "text", b"\x00" * 70_000, [], {}, [list(range(10))] * 500,
    {"a": list(range(1000)), "b": {str(i): [i, {"x": i}] for i in range(600)}, "c": b"x" * 70_000},
    {"state": {"revision": 3, "resources": {"routes": {f"r{i}": {"spec": {"paths": ["/"]}} for i in range(500)}}}},
    [[k, {"v": k, "results": [{"id": k}]}] for k in range(3000)],
]


@pytest.mark.parametrize("obj", CASES)
def test_slices_concatenate_to_the_packed_bytes(obj: Any) -> None:
    assert b"".join(iter_pack(obj, batch=64)) == pack(obj)


def test_long_containers_are_sliced_three_levels_down() -> None:
    nested = CASES[7]
    assert len(list(iter_pack(nested, batch=64))) > 5
    assert len(list(iter_pack({"small": [1, 2, 3]}, batch=64))) == 1


def test_a_lazy_list_is_packed_as_the_list_it_makes_and_must_keep_its_promise() -> None:
    made = ([k, {"v": k}] for k in range(3000))
    assert b"".join(iter_pack({"d": LazyList(3000, made)}, batch=64)) == pack({"d": [[k, {"v": k}] for k in range(3000)]})
    with pytest.raises(ValueError, match="promised 3 items, made 2"):
        b"".join(iter_pack(LazyList(3, iter([1, 2]))))
